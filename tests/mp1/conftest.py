"""Fixtures of the Mp1 suite: a real daemon (SQLite in tmp_path, ReferenceEngine) with Mp1 on a free port.

``platform`` starts ``Daemon`` in the test's event loop with the real store,
compiler, engine, app-support layer and Mp1 server, and hands out an aiohttp
test client on that server's application. Apps are added the way an
operator adds them (the admin API's POST /apps), and get their tokens from
the real token endpoint. ``callbacks`` is a real HTTP server on loopback
that records what the platform POSTs to it.
"""
from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mep.admin import AdminClient
from mep.config import Config
from mep.daemon import Daemon
from mep.dataplane.reference import ReferenceEngine
from mep.state import StoreEvent
from mep.mp1 import AppSupport, Mp1Server
from mep.mp1.server import RUNNER_OPTIONS
from tests.packets import APP1_IP, PORTS, SERVER

APP = "app-1"
OTHER = "app-2"
AS = "/mec_app_support/v1"
SM = "/mec_service_mgmt/v1"


def config_data(tmp_path: Path, **mp1: Any) -> dict[str, Any]:
    """A daemon configuration under tmp_path: reference engine, the test ports, Mp1 on a free port;
    ``dns=`` is the dns section (off by default), the other keys are mp1.* keys."""
    dns = mp1.pop("dns", {"enabled": False})
    notifications = {"timeout_s": 2.0, "max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05,
                     **mp1.pop("notifications", {})}
    return {
        "instance": "mp1test",
        "log": {"level": "info", "format": "text"},
        "store": {"sqlite": {"path": str(tmp_path / "state" / "mep.db")}},
        "dataplane": {"engine": "reference", "apply_batch_ms": 1, "ports": PORTS},
        "mp1": {"listen": "127.0.0.1:0", "notifications": notifications, **mp1},
        "mm5": {"enabled": False},
        "dns": dns,
        "apps": {"graceful_timeout_s": 5},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }


def traffic_rule(rule_id: str = "r1", *, state: str = "ACTIVE", priority: int = 5, dport: str = "80",
                 action: str = "FORWARD_DECAPSULATED", **extra: Any) -> dict[str, Any]:
    """A TrafficRule (wire form) steering TCP to SERVER:dport to app1's address."""
    rule: dict[str, Any] = {
        "trafficRuleId": rule_id,
        "filterType": "FLOW",
        "priority": priority,
        "trafficFilter": [{"dstAddress": [f"{SERVER}/32"], "protocol": ["TCP"], "dstPort": [dport]}],
        "action": action,
        "dstInterface": {"interfaceType": "IP", "dstIpAddress": APP1_IP},
        "state": state,
    }
    rule.update(extra)
    return rule


def dns_rule(rule_id: str = "d1", name: str = "cache.example", *, state: str = "ACTIVE", ip: str = APP1_IP) -> dict[str, Any]:
    """A DnsRule (wire form)."""
    return {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V6" if ":" in ip else "IP_V4",
            "ipAddress": ip, "ttl": 30, "state": state}


def service_info(name: str = "video", *, state: str = "ACTIVE", category: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ServiceInfo (wire form) as a producing app registers it."""
    body: dict[str, Any] = {
        "serName": name,
        "version": "1.0",
        "state": state,
        "serializer": "JSON",
        "transportInfo": {
            "id": "t1", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP", "version": "1.1",
            "endpoint": {"uris": [f"http://{APP1_IP}:8080/{name}"]}, "security": {},
        },
    }
    if category is not None:
        body["serCategory"] = {"href": f"/cat/{category}", "id": category, "name": category, "version": "1"}
    body.update(extra)
    return body


@dataclass
class Platform:
    """A running daemon and a test client on its Mp1 application."""

    daemon: Daemon
    mp1: Mp1Server
    client: TestClient[web.Request, web.Application]
    events: asyncio.Queue[StoreEvent]  # every store event since the platform started
    dataplane_revision: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # app instance id -> bearer token
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)  # app instance id -> (client id, secret)

    @property
    def apps(self) -> AppSupport:
        """The daemon's app-support service (notifier, terminator)."""
        return next(s for s in self.daemon.services if isinstance(s, AppSupport))

    @property
    def admin(self) -> AdminClient:
        """A client of the daemon's admin socket (blocking: call it through asyncio.to_thread)."""
        return AdminClient(self.daemon.config.admin_socket)

    async def add_app(self, app_id: str = APP, **body: Any) -> dict[str, Any]:
        """POST /apps on the admin API, then fetch a token for the app; the admin answer."""
        res = await asyncio.to_thread(self.admin.post, "/apps", {"app_instance_id": app_id, **body})
        self.secrets[app_id] = (res["client_id"], res["client_secret"])
        self.tokens[app_id] = await self.token(res["client_id"], res["client_secret"])
        return res

    async def token(self, client_id: str, secret: str) -> str:
        """An access token from the token endpoint (HTTP Basic client authentication)."""
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        resp = await self.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                      headers={"Authorization": f"Basic {basic}"})
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token

    def auth(self, app_id: str = APP) -> dict[str, str]:
        """The Authorization header of the app's token."""
        return {"Authorization": f"Bearer {self.tokens[app_id]}"}

    async def settled(self) -> None:
        """Wait until the newest store write that can change the data plane has been compiled and applied."""
        while not self.events.empty():
            event = self.events.get_nowait()
            if event.affects_dataplane:
                self.dataplane_revision = max(self.dataplane_revision, event.revision)
        await self.daemon.settled(self.dataplane_revision)


async def start_platform(tmp_path: Path, **mp1: Any) -> tuple[Daemon, Mp1Server]:
    """A started daemon with Mp1; the caller closes it."""
    daemon = Daemon(Config(**config_data(tmp_path, **mp1)), engine=ReferenceEngine())
    try:
        await daemon.start()
    except BaseException:
        await daemon.close()
        raise
    server = next(s for s in daemon.services if isinstance(s, Mp1Server))
    return daemon, server


@pytest_asyncio.fixture
async def platform(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Platform]:
    """The running platform; ``@pytest.mark.mp1_config(key=value)`` sets mp1.* keys."""
    marker = request.node.get_closest_marker("mp1_config")
    daemon, server = await start_platform(tmp_path, **(marker.kwargs if marker else {}))
    test_server = TestServer(server.app())
    await test_server.start_server(**RUNNER_OPTIONS)  # the options the daemon's listener runs with
    client = TestClient(test_server)
    await client.start_server()
    try:
        yield Platform(daemon, server, client, daemon.store.subscribe())
    finally:
        await client.close()
        await daemon.close()


@dataclass
class Callbacks:
    """A loopback HTTP server recording the JSON POSTed to it; ``status`` answers can be scripted."""

    url: str
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (path, body)
    statuses: list[int] = field(default_factory=list)  # answers to give, in order; then 204
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        """Wait until ``count`` bodies arrived (TimeoutError otherwise); all of them."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


@pytest_asyncio.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    """A callback receiver on 127.0.0.1."""
    recorder: list[Callbacks] = []

    async def receive(request: web.Request) -> web.Response:
        cb = recorder[0]
        cb.received.append((request.path, await request.json()))
        cb.arrived.set()
        return web.Response(status=cb.statuses.pop(0) if cb.statuses else 204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recorder.append(Callbacks(url=f"http://{host}:{port}"))
    try:
        yield recorder[0]
    finally:
        await runner.cleanup()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` every 5 ms until it holds (TimeoutError after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)
