"""The demo's servers, each run in its own namespace: two MEC apps and the data network (``python -m mep.demo_apps``).

- ``video-analytics`` (ns app1, examples/appd/video-analytics.yaml): the
  edge copy of a video service. Answers ``DESCRIBE ...`` lines on TCP 554
  and 8554 with ``edge video-analytics: ...``, counts RTP datagrams on UDP
  5004, serves its stats at ``http://ADDRESS:8080/video-analytics/v1/stats``.
- ``flow-monitor`` (ns app2, examples/appd/flow-monitor.yaml): counts the
  copies of the UEs' web packets the MEP mirrors to it (AF_PACKET on its
  port: the copies are addressed to its MAC, not its IP), per UE; stats at
  ``http://ADDRESS:8080/flow-monitor/v1/stats``.
- ``dn`` (ns dn): the remote data network. The cloud copy of the video
  service (``cloud video-analytics: ...`` and an RTP counter), a web server
  on TCP 80, a DNS resolver that answers the video service's name with the
  cloud address, stats at ``http://ADDRESS:8080/stats``.

The two apps talk Mp1 as a MEC app does: an OAuth2 token with their client
credentials, an AppTerminationNotificationSubscription whose callback is
their own HTTP server, then ``confirm_ready``. When the notification comes
they answer it, ``confirm_termination`` and exit. Every process prints one
JSON line when it serves (``{"ready": ...}``) and one when it ends.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import socket
import sys
from collections import Counter
from typing import Any, Optional, Sequence, cast

import aiohttp
from aiohttp import web

__all__ = ["main", "VIDEO_PORTS", "RTP_PORT", "WEB_PORT", "STATS_PORT", "VIDEO_NAME"]

VIDEO_PORTS = (554, 8554)
RTP_PORT = 5004
WEB_PORT = 80
STATS_PORT = 8080
VIDEO_NAME = "video.edge.example"
_SO_RCVBUFFORCE = 33  # asm-generic/socket.h: a receive buffer beyond rmem_max (root)
_ETH_P_ALL = 0x0003


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class _Rtp(asyncio.DatagramProtocol):
    """Counts RTP datagrams (any datagram on the port)."""

    def __init__(self) -> None:
        self.packets = 0
        self.sources: Counter[str] = Counter()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets += 1
        self.sources[addr[0]] += 1


async def _rtp_counter(address: str) -> _Rtp:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)  # no loss to a busy event loop
    sock.bind((address, RTP_PORT))
    _, proto = await asyncio.get_running_loop().create_datagram_endpoint(_Rtp, sock=sock)
    return proto


async def _video_server(address: str, tag: str, served: Counter[str]) -> list[asyncio.Server]:
    """TCP 554/8554: one line in, ``<tag> video-analytics: <line>`` out."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode(errors="replace").strip()
            served[writer.get_extra_info("peername")[0]] += 1
            writer.write(f"{tag} video-analytics: {line}\n".encode())
            await writer.drain()
        finally:
            writer.close()

    return [await asyncio.start_server(handle, address, port) for port in VIDEO_PORTS]


class Mp1App:
    """A MEC app's side of Mp1: token, termination subscription, confirm_ready, confirm_termination."""

    def __init__(self, base: str, app_instance_id: str, client_id: str, client_secret: str) -> None:
        self.base = base.rstrip("/")
        self.app_instance_id = app_instance_id
        credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.basic = {"Authorization": f"Basic {credentials}"}
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.token = ""

    def _url(self, what: str) -> str:
        return f"{self.base}/mec_app_support/v1/applications/{self.app_instance_id}/{what}"

    async def _post(self, url: str, body: Optional[dict[str, Any]], expect: int) -> None:
        async with self.session.post(url, json=body, headers={"Authorization": f"Bearer {self.token}"}) as resp:
            if resp.status != expect:
                raise RuntimeError(f"POST {url}: {resp.status} {await resp.text()}")

    async def start(self, callback: str) -> None:
        """Get a token, subscribe to termination notifications at ``callback``, confirm ready."""
        async with self.session.post(f"{self.base}/oauth2/token", data={"grant_type": "client_credentials"},
                                     headers=self.basic) as resp:
            if resp.status != 200:
                raise RuntimeError(f"token: {resp.status} {await resp.text()}")
            self.token = (await resp.json())["access_token"]
        await self._post(self._url("subscriptions"), {
            "subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": callback,
            "appInstanceId": self.app_instance_id}, 201)
        await self._post(self._url("confirm_ready"), {"indication": "READY"}, 204)

    async def confirm_termination(self) -> None:
        """Tell the MEP we are done (the rules are removed then, not at the graceful timeout)."""
        await self._post(self._url("confirm_termination"), {"operationAction": "TERMINATING"}, 204)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.session.close()


async def _stats_site(address: str, routes: list[web.RouteDef]) -> web.AppRunner:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, address, STATS_PORT).start()
    return runner


async def _run_app(args: argparse.Namespace, stats: Any, prefix: str) -> None:
    """Serve ``stats()`` and the notification callback, go READY over Mp1, wait for termination.

    A termination notification is answered and confirmed; SIGTERM or SIGINT
    (the demo tearing down) just ends the process.
    """
    done, notified_event = asyncio.Event(), asyncio.Event()
    mp1 = Mp1App(args.mp1, args.app_instance_id, args.client_id, args.client_secret)

    async def notified(request: web.Request) -> web.Response:
        body = await request.json()
        _say(notification=body.get("notificationType"), operation=body.get("operationAction"))
        notified_event.set()
        done.set()
        return web.Response(status=204)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats())

    runner = await _stats_site(args.address, [web.get(f"/{prefix}/v1/stats", get_stats),
                                              web.post(f"/{prefix}/v1/notifications", notified)])
    _stop_on_signals(done)
    try:
        await mp1.start(f"http://{args.address}:{STATS_PORT}/{prefix}/v1/notifications")
        _say(ready=prefix, app_instance_id=args.app_instance_id)
        await done.wait()
        if notified_event.is_set():
            await mp1.confirm_termination()
        _say(terminated=prefix, stats=stats())
    finally:
        await mp1.close()
        await runner.cleanup()


def _stop_on_signals(event: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)


async def video_analytics(args: argparse.Namespace) -> None:
    """The edge video service (see the module docstring)."""
    served: Counter[str] = Counter()
    rtp = await _rtp_counter(args.address)
    servers = await _video_server(args.address, "edge", served)
    try:
        await _run_app(args, lambda: {"requests": sum(served.values()), "rtp_packets": rtp.packets,
                                      "rtp_sources": len(rtp.sources)}, "video-analytics")
    finally:
        for s in servers:
            s.close()


def _mirrored(frame: bytes, own_mac: bytes, own_ip: bytes) -> Optional[bytes]:
    """The UE address of a mirrored web packet (IPv4 TCP to 80/443 for someone else), else None."""
    if len(frame) < 38 or frame[:6] != own_mac or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    if frame[30:34] == own_ip:
        return None
    ihl = (frame[14] & 0x0F) * 4
    dport = int.from_bytes(frame[14 + ihl + 2:14 + ihl + 4], "big")
    return frame[26:30] if dport in (80, 443) else None


async def flow_monitor(args: argparse.Namespace) -> None:
    """Counts the mirrored web packets per UE (see the module docstring)."""
    sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
    sniffer.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 16 << 20)
    sniffer.bind((args.iface, 0))
    sniffer.setblocking(False)
    own_mac = sniffer.getsockname()[4]  # the port's MAC (sysfs would show another namespace's)
    own_ip = socket.inet_aton(args.address)
    per_ue: Counter[str] = Counter()

    def readable() -> None:
        while True:
            try:
                frame, addr = sniffer.recvfrom(65535)
            except BlockingIOError:
                return
            ue = _mirrored(frame, own_mac, own_ip) if addr[2] != socket.PACKET_OUTGOING else None
            if ue is not None:
                per_ue[socket.inet_ntoa(ue)] += 1

    asyncio.get_running_loop().add_reader(sniffer.fileno(), readable)
    try:
        await _run_app(args, lambda: {"mirrored_packets": sum(per_ue.values()), "ues": len(per_ue)}, "flow-monitor")
    finally:
        asyncio.get_running_loop().remove_reader(sniffer.fileno())
        sniffer.close()


class _Resolver(asyncio.DatagramProtocol):
    """The data network's resolver: the video service's name is the cloud address; others NXDOMAIN."""

    def __init__(self, cloud: str) -> None:
        self.cloud = cloud
        self.queries = 0
        self.transport: Optional[asyncio.DatagramTransport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from dnslib import QTYPE, RCODE, RR, A, DNSRecord

        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError and others on garbage: not a query, no answer
            return
        self.queries += 1
        reply = query.reply()
        q = query.q
        if str(q.qname).rstrip(".").lower() == VIDEO_NAME and q.qtype == QTYPE.A:
            reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(self.cloud), ttl=5))
        elif str(q.qname).rstrip(".").lower() != VIDEO_NAME:
            reply.header.rcode = RCODE.NXDOMAIN
        if self.transport is not None:
            self.transport.sendto(reply.pack(), addr)


async def data_network(args: argparse.Namespace) -> None:
    """The remote side (see the module docstring)."""
    served: Counter[str] = Counter()
    web_requests = 0
    rtp = await _rtp_counter(args.address)
    servers = await _video_server(args.address, "cloud", served)
    loop = asyncio.get_running_loop()
    _, resolver = await loop.create_datagram_endpoint(lambda: _Resolver(args.address), local_addr=(args.resolver, 53))

    async def page(request: web.Request) -> web.Response:
        nonlocal web_requests
        web_requests += 1
        return web.Response(text="cloud web\n")

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response({"video_requests": sum(served.values()), "rtp_packets": rtp.packets,
                                  "web_requests": web_requests, "dns_queries": resolver.queries})

    web_app = web.Application()
    web_app.add_routes([web.get("/", page)])
    web_runner = web.AppRunner(web_app, access_log=None, handle_signals=False)
    await web_runner.setup()
    await web.TCPSite(web_runner, args.address, WEB_PORT).start()
    stats_runner = await _stats_site(args.address, [web.get("/stats", get_stats)])
    done = asyncio.Event()
    _stop_on_signals(done)
    _say(ready="dn")
    try:
        await done.wait()
    finally:
        for s in servers:
            s.close()
        await web_runner.cleanup()
        await stats_runner.cleanup()
    _say(stopped="dn")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mep.demo_apps ROLE ...``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m mep.demo_apps", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("video-analytics", "flow-monitor"):
        p = sub.add_parser(role)
        p.add_argument("--address", required=True, help="the app's IPv4 address")
        p.add_argument("--mp1", required=True, help="Mp1 base URL, e.g. http://198.19.0.1:8081")
        p.add_argument("--app-instance-id", required=True)
        p.add_argument("--client-id", required=True)
        p.add_argument("--client-secret", required=True)
        if role == "flow-monitor":
            p.add_argument("--iface", default="eth0", help="the port the mirrored copies arrive on")
    p = sub.add_parser("dn")
    p.add_argument("--address", required=True, help="the cloud servers' address")
    p.add_argument("--resolver", required=True, help="the resolver's address (UDP 53)")
    args = parser.parse_args(argv)
    run = {"video-analytics": video_analytics, "flow-monitor": flow_monitor, "dn": data_network}[args.role]
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
