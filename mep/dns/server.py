"""DnsServer: the user-space DNS responder as a daemon service, on UDP and TCP at ``dns.listen``.

Both transports share one port and one Responder (responder.py decides every
answer). The sockets are created in ``dataplane.netns`` when it is set
(sockets.py): the responder serves the N6 side.

- UDP: one datagram, one answer, sent from the listening socket.
- TCP (RFC 7766): two-byte length-prefixed messages; a client may pipeline,
  and answers may come back out of order. At most ``dns.tcp_connections``
  connections are open (one more is closed at accept); one closes when a
  whole message has not arrived within ``dns.tcp_idle_timeout_s``; each has at
  most 64 forwarded queries outstanding (it is not read further meanwhile).
- Forwarding runs as tasks; at most ``dns.max_inflight`` wait for the
  upstream at once, and a query beyond that is answered SERVFAIL at once.

``update(ruleset)`` switches to a rule set's DNS rules; the daemon calls it
right after each rule set is applied (Daemon.add_ruleset_listener), so a
query that arrives after that is answered from the new rules.
"""
from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any, Callable, Optional, cast

from ..config import DnsConfig
from ..dataplane.ruleset import CompiledRuleSet
from ..errors import MepError
from ..log import get_logger
from .responder import Responder
from .sockets import SocketMaker
from .stats import UpstreamFailure
from .upstream import Upstream, split_address
from .wire import MAX_MESSAGE_BYTES, Query, is_answer_to

__all__ = ["DnsServer", "TCP_PIPELINE"]

log = get_logger(__name__)

TCP_PIPELINE = 64  # forwarded queries outstanding on one TCP connection before it is read further
_BIND_TRIES = 8  # port 0: free UDP ports tried until TCP is free on the same one
_Reply = Callable[[bytes], None]


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, server: "DnsServer") -> None:
        self._server = server
        self._responder = server.responder
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = self._responder.respond(data, tcp=False)
        transport = self.transport
        if transport is None or answer is None:
            return
        if isinstance(answer, bytes):
            transport.sendto(answer, addr)
        else:
            self._server.forward(answer, data, lambda out: transport.sendto(out, addr), tcp=False)


class DnsServer:
    """The DNS responder service (``name = "dns"``); see the module docstring."""

    name = "dns"

    def __init__(self, config: DnsConfig, *, netns: Optional[str] = None) -> None:
        self.config = config
        self.responder = Responder(config)
        self._sockets = SocketMaker(netns)
        self._upstream = (
            Upstream(config.upstream, config.upstream_timeout_s, self._sockets) if config.upstream else None
        )
        self.address: Optional[tuple[str, int]] = None  # (host, port) once listening
        self._udp: Optional[asyncio.DatagramTransport] = None
        self._tcp: Optional[asyncio.Server] = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.inflight = 0  # forwarded queries waiting for the upstream

    def update(self, ruleset: CompiledRuleSet) -> None:
        """Answer from ``ruleset.dns_rules`` from the next query on."""
        self.responder.update(ruleset.dns_rules)

    def stats(self) -> dict[str, Any]:
        """The responder's counters and every DNS rule in force with its answers (admin API /stats)."""
        return self.responder.stats.as_dict(
            self.responder.table.rules, cache_entries=len(self.responder.cache), inflight=self.inflight
        )

    # -- service ------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen on ``dns.listen`` (UDP and TCP, one port); MepError naming the key if it cannot."""
        host, port, family = split_address(self.config.listen)
        try:
            udp_sock, tcp_sock = await self._bind(host, port, family)
        except OSError as exc:
            self._sockets.close()
            raise MepError(f"cannot listen on {self.config.listen}: {exc.strerror or exc}", field="dns.listen") from None
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpServer(self), sock=udp_sock)
        self._udp = transport
        self._tcp = await asyncio.start_server(self._tcp_client, sock=tcp_sock, limit=MAX_MESSAGE_BYTES + 2)
        bound = udp_sock.getsockname()
        self.address = (bound[0], bound[1])
        log.info("dns_listening", address=bound[0], port=bound[1], upstream=self.config.upstream,
                 netns=self._sockets.netns, rules=len(self.responder.table.rules))

    async def _bind(self, host: str, port: int, family: socket.AddressFamily) -> tuple[socket.socket, socket.socket]:
        for _ in range(_BIND_TRIES if port == 0 else 1):
            udp = await self._sockets.socket(family, socket.SOCK_DGRAM)
            tcp = await self._sockets.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((host, port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, udp.getsockname()[1]))
                tcp.listen(socket.SOMAXCONN)
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
                if port != 0:
                    raise
        raise OSError(f"no port free for both UDP and TCP after {_BIND_TRIES} tries")

    async def stop(self) -> None:
        """Stop listening, close TCP connections, abandon forwarded queries."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sockets.close()
        self.address = None

    # -- forwarding ---------------------------------------------------------------------
    def forward(self, query: Query, msg: bytes, reply: _Reply, *, tcp: bool) -> asyncio.Task[None] | None:
        """Forward ``query`` (``msg`` as received) and ``reply`` with the answer; the task, or None when
        ``dns.max_inflight`` are already waiting (then SERVFAIL is replied at once)."""
        if self.inflight >= self.config.max_inflight:
            reply(self.responder.relay(query, UpstreamFailure.OVERLOAD, tcp=tcp))
            return None
        self.inflight += 1
        task = asyncio.get_running_loop().create_task(self._forward(query, msg, reply, tcp))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _forward(self, query: Query, msg: bytes, reply: _Reply, tcp: bool) -> None:
        assert self._upstream is not None  # the responder forwards only with an upstream configured
        try:
            upstream_id = secrets.randbits(16)
            outgoing = self.responder.upstream_message(query, msg, upstream_id)
            result = await self._upstream.exchange(
                outgoing, lambda answer: is_answer_to(answer, upstream_id, query), tcp=tcp
            )
        finally:
            self.inflight -= 1
        reply(self.responder.relay(query, result, tcp=tcp))

    # -- TCP ----------------------------------------------------------------------------
    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tcp_writers) >= self.config.tcp_connections:
            self.responder.stats.tcp_refused += 1
            writer.close()
            return
        self._tcp_writers.add(writer)
        pending: set[asyncio.Task[None]] = set()

        def send(answer: bytes) -> None:
            if not writer.is_closing():
                writer.write(len(answer).to_bytes(2, "big") + answer)

        try:
            while True:
                if len(pending) >= TCP_PIPELINE:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                async with asyncio.timeout(self.config.tcp_idle_timeout_s):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    msg = await reader.readexactly(length)
                answer = self.responder.respond(msg, tcp=True)
                if isinstance(answer, bytes):
                    send(answer)
                    await writer.drain()
                elif answer is not None:
                    task = self.forward(answer, msg, send, tcp=True)
                    if task is not None:
                        pending.add(task)
                        task.add_done_callback(pending.discard)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # idle, closed by the client, or reset: the connection ends
        finally:
            self._tcp_writers.discard(writer)
            if pending:
                await asyncio.wait(pending)
            writer.close()
