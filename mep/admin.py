"""The daemon's admin API on a unix socket, and the client the CLI uses.

Served by ``mep run`` on ``config.admin_socket`` (default
/run/mep/<instance>.sock, mode 0660: whoever may open the socket may use
the API). JSON in and out; errors are RFC 7807 ProblemDetails.

========  ==========  ===================================================
method    path        answer
========  ==========  ===================================================
GET       /status     engine.describe(), store backend and revision,
                      rule-set generation, last refusal, apps by state,
                      ports, uptime
GET       /stats      engine counters: per verdict, reason and rule; with
                      ``dns.enabled``, ``dns``: the DNS responder's counters
GET       /rules      the rules in force, in match order, filters summarised
POST      /explain    ``{"frame": "<hex>", "ingress": <port index>}``: run the
                      frame through the engine; the probe itself is counted
GET       /apps       every app instance: state, rules, services, client id
POST      /apps       ``{"app_instance_id": ..., "confirm_ready_required": ...,
                      "traffic_rules": [...], ...}``: create and instantiate an
                      app and issue its Mp1 credentials (single-host use);
                      the answer holds the client secret, shown once
POST      /apps/ID/terminate    begin graceful termination: 202, the app TERMINATING
POST      /apps/ID/credentials  new Mp1 credentials; the old ones and their tokens stop working
GET       /notifications        the notification delivery log, newest first
                                (``?app=ID&status=failed&limit=50``)
========  ==========  ===================================================

``AdminClient`` speaks to it with the standard library only, so the CLI
starts fast and needs no event loop.
"""
from __future__ import annotations

import asyncio

import http.client
import ipaddress
import json
import os
import socket
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from .dataplane.engine import PacketBytes
from .dataplane.reasons import DESCRIPTION
from .dataplane.ruleset import CompiledFilter, CompiledRule, Port, Target
from .dns import DnsServer
from .errors import InvalidInput, MepError
from .models import DnsRule, TrafficRule
from .models.types import PROTOCOL_NUMBERS
from .mp1 import AppSupport, Mp1Server, NewApp
from .mp1.auth import TOKEN_PATH
from .mp1.http import parse_model
from .mp1.notify import DeliveryStatus
from .state.records import AppInstance

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = [
    "AdminApi",
    "AdminClient",
    "DaemonNotRunning",
    "NewAppRequest",
    "app_summary",
    "rule_summary",
    "filter_summary",
    "EXPLAIN_NOTE",
]

EXPLAIN_NOTE = "the probe itself was counted: it adds one packet to the verdict, reason and rule counters"

# An explain frame is one Ethernet frame: a jumbo frame at most.
_MAX_FRAME_BYTES = 9018
_PROTOCOL_NAMES = {n: name for name, n in PROTOCOL_NUMBERS.items()}


class DaemonNotRunning(MepError):
    """No daemon answers on the admin socket."""

    http_status = 503
    title = "Daemon not running"


# -- summaries shared by the API and the CLI ----------------------------------


def filter_summary(f: CompiledFilter) -> str:
    """One filter as ``key=value`` pairs (src, dst, proto, ports, ...); ``any`` when it matches everything."""

    def join(items: tuple[Any, ...]) -> str:
        return ",".join(str(i) for i in items)

    protocols = tuple(_PROTOCOL_NAMES.get(p, str(p)) for p in f.protocols)
    pairs: list[tuple[str, tuple[Any, ...]]] = [
        ("src", f.src), ("dst", f.dst), ("proto", protocols), ("sport", f.sport), ("dport", f.dport),
        ("vlan", f.vlans), ("tun_src", f.tun_src), ("tun_dst", f.tun_dst), ("tun_sport", f.tun_sport),
        ("tun_dport", f.tun_dport),
    ]
    parts = [f"{key}={join(items)}" for key, items in pairs if items]
    parts += [f"{key}={value}" for key, value in (("qfi", f.qfi), ("dscp", f.dscp), ("tc", f.tc)) if value is not None]
    return " ".join(parts) or "any"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _target(t: Target, ports: dict[int, Port]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": t.kind.name,
        "port": t.port,
        "port_name": ports[t.port].name if t.port in ports else None,
        "src_mac": _mac(t.src_mac),
        "dst_mac": _mac(t.dst_mac),
    }
    for key, addr in (("new_dst_ip", t.new_dst_ip), ("tunnel_src", t.tunnel_src), ("tunnel_dst", t.tunnel_dst)):
        if addr is not None:
            out[key] = str(ipaddress.ip_address(addr.packed()))
    return out


def rule_summary(rule: CompiledRule, ports: dict[int, Port]) -> dict[str, Any]:
    """A compiled rule as plain data: id, app, trafficRuleId, priority, action, filters, targets."""
    return {
        "id": rule.rule_id,
        "app": rule.app_instance_id,
        "trafficRuleId": rule.traffic_rule_id,
        "priority": rule.priority,
        "action": rule.action.value,
        "filterType": "FLOW" if rule.flow else "PACKET",
        "filters": [filter_summary(f) for f in rule.filters],
        "targets": [_target(t, ports) for t in rule.targets],
    }


def _pb(c: PacketBytes) -> dict[str, int]:
    return {"packets": c.packets, "bytes": c.bytes}


# -- server ---------------------------------------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(status: int, title: str, detail: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field:
        body["field"] = field
    return web.json_response(body, status=status, content_type="application/problem+json")


@web.middleware
async def _problems(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MepError as exc:
        return _problem(exc.http_status, exc.title, exc.detail, exc.field)


# An app instance id the admin API creates: URL-safe (it is a path segment of Mp1) and bounded.
_APP_ID = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$"
# Rules given with POST /apps: at most one app's configuration at capacity (dataplane.capacity.rules).
_MAX_ADD_RULES = 65_536
_MAX_NOTIFICATIONS = 10_000


class NewAppRequest(BaseModel):
    """The body of POST /apps; unset options take ``apps.*`` from the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app_instance_id: str = Field(pattern=_APP_ID)
    app_name: str = Field(default="", max_length=256)
    app_provider: str = Field(default="", max_length=256)
    confirm_ready_required: StrictBool | None = None
    graceful_timeout_s: int | None = Field(default=None, ge=0, le=3600)
    traffic_rules: list[TrafficRule] = Field(default_factory=list, max_length=_MAX_ADD_RULES)
    dns_rules: list[DnsRule] = Field(default_factory=list, max_length=_MAX_ADD_RULES)


def app_summary(app: AppInstance, apps: AppSupport) -> dict[str, Any]:
    """An app instance as the admin API and ``mep app list`` show it (never the secret hash)."""
    store = apps.store
    return {
        "appInstanceId": app.appInstanceId,
        "appName": app.appName,
        "state": app.state.value,
        "confirm_ready_required": app.confirm_ready_required,
        "graceful_timeout_s": app.graceful_timeout_s,
        "client_id": app.client_id or None,
        "traffic_rules": len(store.list_traffic_rules(app.appInstanceId)),
        "dns_rules": len(store.list_dns_rules(app.appInstanceId)),
        "services": len(store.list_services(app.appInstanceId)),
        "revision": app.revision,
        "updated_at": app.updated_at,
    }


class AdminApi:
    """The admin API as a daemon service: ``start()`` binds the socket, ``stop()`` removes it."""

    name = "admin"

    def __init__(self, daemon: "Daemon", path: Path, apps: AppSupport) -> None:
        self.daemon = daemon
        self.path = path
        self.apps = apps
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        """The aiohttp application (also usable with aiohttp's test client)."""
        # POST /apps may carry a whole configuration of rules.
        app = web.Application(middlewares=[_problems], client_max_size=self.daemon.config.mp1.max_body_bytes * 16)
        app.router.add_get("/status", self.status)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/rules", self.rules)
        app.router.add_post("/explain", self.explain)
        app.router.add_get("/apps", self.list_apps)
        app.router.add_post("/apps", self.add_app)
        app.router.add_post("/apps/{app}/terminate", self.terminate_app)
        app.router.add_post("/apps/{app}/credentials", self.rotate_credentials)
        app.router.add_get("/notifications", self.notifications)
        return app

    async def start(self) -> None:
        """Listen on ``self.path``; MepError if another daemon already does."""
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _remove_stale_socket(self.path)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        await web.UnixSite(runner, str(self.path)).start()
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        """Close the listener and remove the socket file."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.path.unlink(missing_ok=True)

    # -- handlers ---------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        """GET /status."""
        d = self.daemon
        rs = d.engine.ruleset
        store = d.store
        apps = Counter(app.state.value for app in store.list_apps())
        body = {
            "instance": d.config.instance,
            "version": version("mep"),
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - d.started_monotonic, 3),
            "engine": d.engine.describe(),
            "store": {"backend": d.config.store.backend, "revision": store.revision},
            "generation": d.generation,
            "applied_revision": d.applied_revision,
            "refused": d.last_refusal,
            "apps": dict(sorted(apps.items())),
            "ports": [
                {"index": p.index, "name": p.name, "ifname": p.ifname, "role": p.role.value, "mac": _mac(p.mac), "mtu": p.mtu}
                for p in (rs.ports if rs else ())
            ],
        }
        return web.json_response(body)

    async def stats(self, request: web.Request) -> web.Response:
        """GET /stats."""
        c = self.daemon.engine.counters()
        body: dict[str, Any] = {
            "verdicts": {v.name: _pb(pb) for v, pb in sorted(c.verdicts.items()) if pb.packets},
            "reasons": {r.name: _pb(pb) for r, pb in sorted(c.reasons.items()) if pb.packets},
            "rules": {str(rid): _pb(pb) for rid, pb in sorted(c.rules.items()) if pb.packets},
        }
        if c.fib:  # dataplane.fib_forward: what became of the PASS frames XDP offered to the FIB
            body["fib"] = {o.name: _pb(pb) for o, pb in sorted(c.fib.items()) if pb.packets}
        for service in self.daemon.services:
            if isinstance(service, DnsServer):
                body["dns"] = service.stats()  # the user-space responder (docs/dns.md)
        return web.json_response(body)

    async def rules(self, request: web.Request) -> web.Response:
        """GET /rules."""
        rs = self.daemon.engine.ruleset
        if rs is None:
            return web.json_response({"generation": None, "default": None, "rules": []})
        ports = {p.index: p for p in rs.ports}
        return web.json_response(
            {
                "generation": rs.generation,
                "store_revision": rs.store_revision,
                "default": rs.default_verdict.name,
                "rules": [rule_summary(r, ports) for r in rs.rules],
            }
        )

    async def explain(self, request: web.Request) -> web.Response:
        """POST /explain."""
        try:
            body = await request.json()
        except ValueError:
            raise InvalidInput("body must be JSON: {\"frame\": \"<hex>\", \"ingress\": <port index>}") from None
        if not isinstance(body, dict):
            raise InvalidInput("body must be a JSON object")
        text, ingress = body.get("frame"), body.get("ingress")
        if not isinstance(text, str):
            raise InvalidInput("a hex string is required", field="frame")
        try:
            frame = bytes.fromhex(text)
        except ValueError:
            raise InvalidInput("not a hex string", field="frame") from None
        if not 0 < len(frame) <= _MAX_FRAME_BYTES:
            raise InvalidInput(f"a frame is 1..{_MAX_FRAME_BYTES} bytes, got {len(frame)}", field="frame")
        async with self.daemon.engine_lock:
            # Under the lock: the rule set that describes the verdict is the one in force while the frame ran
            # (read before, an apply finishing meanwhile would leave it a generation behind).
            rs = self.daemon.engine.ruleset
            if rs is None:
                raise MepError("no rule set is applied yet (see GET /status)")
            if not isinstance(ingress, int) or isinstance(ingress, bool) or rs.port(ingress) is None:
                known = ", ".join(f"{p.index} ({p.name})" for p in rs.ports) or "none configured"
                raise InvalidInput(f"must be a data-plane port index: {known}", field="ingress")
            result = await asyncio.to_thread(self.daemon.engine.process, frame, ingress)
        ports = {p.index: p for p in rs.ports}
        rule = rs.rule(result.rule_id) if result.rule_id else None
        return web.json_response(
            {
                "verdict": result.verdict.name,
                "reason": result.reason.name,
                "reason_text": DESCRIPTION[result.reason],
                "rule_id": result.rule_id,
                "rule": rule_summary(rule, ports) if rule else None,
                "reverse": result.reverse,
                "outputs": [
                    {"port": o.port, "port_name": ports[o.port].name if o.port in ports else "stack", "frame": o.frame.hex()}
                    for o in result.outputs
                ],
                "generation": rs.generation,
                "engine": self.daemon.engine.name,
                "counted": True,
                "note": EXPLAIN_NOTE,
            }
        )


    # -- apps and notifications (mep app, mep notifications) ----------------------
    def _token_endpoint(self) -> str | None:
        for service in self.daemon.services:
            if isinstance(service, Mp1Server) and service.url is not None:
                return service.url + TOKEN_PATH
        return None

    async def list_apps(self, request: web.Request) -> web.Response:
        """GET /apps."""
        return web.json_response({"apps": [app_summary(a, self.apps) for a in self.apps.store.list_apps()]})

    async def add_app(self, request: web.Request) -> web.Response:
        """POST /apps: 201 with the app and its credentials (the secret appears here only)."""
        try:
            body = await request.json()
        except ValueError:
            raise InvalidInput("body must be JSON: {\"app_instance_id\": ...}", field="body") from None
        new = parse_model(NewAppRequest, body)
        defaults = self.daemon.config.apps
        issued = await self.apps.add_app(
            NewApp(
                app_instance_id=new.app_instance_id,
                app_name=new.app_name,
                app_provider=new.app_provider,
                confirm_ready_required=(
                    defaults.confirm_ready_required if new.confirm_ready_required is None else new.confirm_ready_required
                ),
                graceful_timeout_s=defaults.graceful_timeout_s if new.graceful_timeout_s is None else new.graceful_timeout_s,
                traffic_rules=tuple(new.traffic_rules),
                dns_rules=tuple(new.dns_rules),
            )
        )
        body = {
            "app": app_summary(issued.app, self.apps),
            "client_id": issued.client_id,
            "client_secret": issued.client_secret,
            "token_endpoint": self._token_endpoint(),
        }
        return web.json_response(body, status=201)

    async def terminate_app(self, request: web.Request) -> web.Response:
        """POST /apps/{app}/terminate: 202; the sequence goes on in the daemon (mep/mp1/termination.py)."""
        app = await self.apps.terminate(request.match_info["app"])
        return web.json_response({"app": app_summary(app, self.apps)}, status=202)

    async def rotate_credentials(self, request: web.Request) -> web.Response:
        """POST /apps/{app}/credentials: new client id and secret (shown once)."""
        issued = await self.apps.issue_credentials(request.match_info["app"])
        return web.json_response(
            {"app": app_summary(issued.app, self.apps), "client_id": issued.client_id,
             "client_secret": issued.client_secret, "token_endpoint": self._token_endpoint()}
        )

    async def notifications(self, request: web.Request) -> web.Response:
        """GET /notifications: pending deliveries, then the delivery log, newest first."""
        query = request.query
        app_id, status = query.get("app"), query.get("status")
        if status is not None and status not in DeliveryStatus.__members__.values():
            raise InvalidInput(f"status is one of {', '.join(s.value for s in DeliveryStatus)}", field="status")
        limit_text = query.get("limit", "50")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= _MAX_NOTIFICATIONS:
            raise InvalidInput(f"limit is 1..{_MAX_NOTIFICATIONS}", field="limit")
        notifier = self.apps.notifier
        selected = [
            d for d in notifier.deliveries()
            if (app_id is None or d["app_instance_id"] == app_id) and (status is None or d["status"] == status)
        ]
        return web.json_response(
            {"deliveries": selected[: int(limit_text)], "matched": len(selected), "pending": notifier.pending,
             "log_file": str(notifier.log.path)}
        )


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a daemon that died; refuse if one still listens."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink()
        return
    except OSError as exc:
        raise MepError(f"admin socket {path} exists and cannot be checked: {exc.strerror}", field="admin.socket") from None
    finally:
        probe.close()
    raise MepError(f"another daemon already listens on {path} (stop it, or set admin.socket)", field="admin.socket")


# -- client ---------------------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AdminClient:
    """Blocking client of the admin API; every call returns the decoded JSON body."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout

    def get(self, route: str) -> dict[str, Any]:
        """GET ``route``."""
        return self._request("GET", route, None)

    def post(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``route``."""
        return self._request("POST", route, body)

    def _request(self, method: str, route: str, body: dict[str, Any] | None) -> dict[str, Any]:
        conn = _UnixConnection(str(self.path), self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            try:
                conn.request(method, route, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (FileNotFoundError, ConnectionRefusedError):
                raise DaemonNotRunning(
                    f"no daemon is running on {self.path} (start one with: mep run -c FILE; "
                    "or point at its socket with -c FILE or --socket PATH)"
                ) from None
            except PermissionError:
                raise MepError(f"no permission to open {self.path} (run as root or a member of its group)") from None
            except OSError as exc:
                raise MepError(f"admin API on {self.path}: {exc.strerror or exc}") from None
        finally:
            conn.close()
        try:
            decoded = json.loads(data)
        except ValueError:
            raise MepError(f"admin API on {self.path} answered {resp.status} with a body that is not JSON") from None
        if resp.status >= 400:
            detail = decoded.get("detail", "") if isinstance(decoded, dict) else ""
            field = decoded.get("field") if isinstance(decoded, dict) else None
            err = InvalidInput(detail, field=field) if resp.status == 400 else MepError(detail or f"HTTP {resp.status}")
            raise err
        if not isinstance(decoded, dict):
            raise MepError(f"admin API on {self.path} answered something other than a JSON object")
        return decoded
