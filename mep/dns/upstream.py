"""One exchange with the upstream resolver, over UDP or TCP, within ``dns.upstream_timeout_s``.

A query goes over the transport the client used: a UDP answer with TC set
is relayed as it is, and the client retries over TCP, which then goes
upstream over TCP. Each UDP exchange has its own connected socket, so its
source port is the kernel's random ephemeral port and only datagrams from
the upstream's address reach it; together with the random 16-bit ID and the
question check (``accept``) that is what an off-path spoofer has to guess.
A TCP exchange opens one connection and closes it after the answer.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Callable

from .sockets import SocketMaker
from .stats import UpstreamFailure
from .wire import MAX_MESSAGE_BYTES

__all__ = ["Upstream", "split_address"]

Accept = Callable[[bytes], bool]


def split_address(text: str) -> tuple[str, int, socket.AddressFamily]:
    """``198.18.1.2:53`` or ``[2001:db8::53]:53`` (validated by mep/config.py) -> host, port, family."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    return host, int(port), family


class _UdpExchange(asyncio.DatagramProtocol):
    """Resolves ``done`` with the first acceptable datagram, or UNREACHABLE on an ICMP error."""

    def __init__(self, accept: Accept, done: asyncio.Future[bytes | UpstreamFailure]) -> None:
        self._accept = accept
        self._done = done

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self._done.done() and self._accept(data):
            self._done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self._done.done():
            self._done.set_result(UpstreamFailure.UNREACHABLE)


class Upstream:
    """The configured upstream resolver (``dns.upstream``)."""

    def __init__(self, address: str, timeout_s: float, sockets: SocketMaker) -> None:
        self.host, self.port, self.family = split_address(address)
        self.timeout_s = timeout_s
        self._sockets = sockets

    async def exchange(self, message: bytes, accept: Accept, *, tcp: bool) -> bytes | UpstreamFailure:
        """Send ``message``; the first answer ``accept`` takes, or why there was none."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await (self._tcp(message, accept) if tcp else self._udp(message, accept))
        except TimeoutError:
            return UpstreamFailure.TIMEOUT
        except (OSError, asyncio.IncompleteReadError):
            return UpstreamFailure.UNREACHABLE

    async def _udp(self, message: bytes, accept: Accept) -> bytes | UpstreamFailure:
        loop = asyncio.get_running_loop()
        sock = await self._sockets.socket(self.family, socket.SOCK_DGRAM)
        done: asyncio.Future[bytes | UpstreamFailure] = loop.create_future()
        try:
            sock.connect((self.host, self.port))
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpExchange(accept, done), sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            transport.sendto(message)
            return await done
        finally:
            transport.close()

    async def _tcp(self, message: bytes, accept: Accept) -> bytes:
        sock = await self._sockets.socket(self.family, socket.SOCK_STREAM)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE_BYTES + 2)
        try:
            writer.write(len(message).to_bytes(2, "big") + message)
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                answer = await reader.readexactly(length)
                if accept(answer):
                    return answer
        finally:
            writer.close()
