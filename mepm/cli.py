"""The ``mepm`` command: the MEC platform manager. Deploys apps from AppDs to MEPs over Mm5 and keeps them there.

Exit status: 0 done, 1 not done (a MEP refused or did not answer; the desired
state is recorded and ``mepm reconcile`` keeps pushing it), 2 usage error or
bad input (an AppD error names its file, line and field).

The desired state lives in ``--store`` (or ``MEPM_STORE``): ``sqlite:///PATH``
for a single MEPM host, ``etcd://HOST:PORT[,...]/PREFIX/`` otherwise.
docs/mepm.md describes every command and the AppD format.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence, TypeVar

from mep.cli import run_command
from mep.config import LogConfig
from mep.credentials import hash_secret, new_credentials
from mep.errors import Conflict, InvalidInput, MepError, NotFound, PeerUnavailable
from mep.log import setup_logging
from mep.mm5.client import Mm5Client
from mep.mm5.rpc import pb

from .appd import appd_json, load_appd
from .certs import DEFAULT_SANS, init_certs
from .inventory import NAME_PATTERN, App, Host, HostTls, Instance, Inventory, Status, parse_host
from .reconciler import HEALTH_TIMEOUT_S, Reconciler
from .store import DEFAULT_STORE_URL, open_desired

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")
_TIMEOUT_S = 10.0

_EPILOG = f"""\
examples:
  mepm certs init /etc/mepm/pki --san edge1.example --san 198.18.50.1
  mepm host add edge1 --address 198.18.50.1:50051 --ca pki/ca.crt --cert pki/client.crt --key pki/client.key
  mepm host list
  mepm app instantiate examples/appd/video-analytics.yaml --host edge1 --host edge2
  mepm app list
  mepm app show video-analytics
  mepm app update video-analytics video-analytics-v2.yaml
  mepm rules --host edge1
  mepm stats --app video-analytics
  mepm app terminate video-analytics
  mepm reconcile --interval 5          keep every MEP as desired (run it as a service)

store: --store URL or MEPM_STORE (default {DEFAULT_STORE_URL});
       etcd://127.0.0.1:2379/mepm/ for etcd. docs/mepm.md has the rest.
"""


def _err(message: str) -> None:
    print(f"mepm: {message}", file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _store_url(args: argparse.Namespace) -> str:
    url: str = args.store or os.environ.get("MEPM_STORE") or DEFAULT_STORE_URL
    return url


def _run(args: argparse.Namespace, body: Callable[[Inventory], Awaitable[int]]) -> int:
    async def go() -> int:
        async with open_desired(_store_url(args)) as store:
            return await body(Inventory(store))

    return asyncio.run(go())


def _status_line(s: Status) -> str:
    if not s.reachable:
        return f"  {s.host:<12} UNREACHABLE   {s.detail}"
    if s.ok and not s.state:
        return f"  {s.host:<12} GONE"
    force = "in force" if s.in_force else "NOT in force"
    line = f"  {s.host:<12} {s.state or '?':<13} generation {s.config_generation}, {force}"
    return line + (f": {s.detail}" if s.detail else "")


# -- certs -----------------------------------------------------------------------------------


def cmd_certs_init(args: argparse.Namespace) -> int:
    """mepm certs init DIR."""
    paths = init_certs(Path(args.dir), sans=args.san or DEFAULT_SANS, client_name=args.client_name)
    print(f"CA           {paths.ca_cert}  (key {paths.ca_key}: keep it offline)")
    print(f"MEP server   {paths.server_cert}  {paths.server_key}  SAN {', '.join(args.san or DEFAULT_SANS)}")
    print(f"MEPM client  {paths.client_cert}  {paths.client_key}")
    print("MEP config:  mm5: {tls: {cert: server.crt, key: server.key, ca: ca.crt}}")
    return EXIT_OK


# -- hosts -----------------------------------------------------------------------------------


def cmd_host_add(args: argparse.Namespace) -> int:
    """mepm host add NAME --address HOST:PORT (--ca ... | --insecure)."""
    if args.insecure == bool(args.ca):
        raise InvalidInput("give --ca (with --cert and --key for mutual TLS) or --insecure (plaintext)", field="--ca")
    if bool(args.cert) != bool(args.key):
        raise InvalidInput("--cert and --key go together", field="--cert")
    tls = None
    if args.ca:
        tls = HostTls(
            ca=Path(args.ca).resolve(),
            cert=Path(args.cert).resolve() if args.cert else None,
            key=Path(args.key).resolve() if args.key else None,
            server_name=args.server_name,
        )
    host = parse_host(args.name, args.address, tls)

    async def body(inv: Inventory) -> int:
        await inv.add_host(host)
        print(f"{host.name}: {host.address} ({'plaintext' if tls is None else 'TLS' if tls.cert is None else 'mTLS'})")
        return EXIT_OK

    return _run(args, body)


def cmd_host_list(args: argparse.Namespace) -> int:
    """mepm host list: every host and whether its MEP answers."""

    async def probe(host: Host) -> dict[str, Any]:
        row: dict[str, Any] = {"name": host.name, "address": host.address,
                               "security": "plaintext" if host.tls is None else "mtls" if host.tls.cert else "tls"}
        async with host.client(HEALTH_TIMEOUT_S) as client:
            try:
                h = await client.health(timeout_s=HEALTH_TIMEOUT_S)
                apps = len((await client.get_state()).apps)
            except MepError as exc:
                return {**row, "reachable": False, "error": str(exc)}
        return {**row, "reachable": True, "instance": h.instance, "version": h.version, "generation": h.generation,
                "apps": apps, "engine": h.engine, "boot_id": h.boot_id, "uptime_s": round(h.uptime_s, 1)}

    async def body(inv: Inventory) -> int:
        rows = await asyncio.gather(*(probe(h) for h in await inv.hosts()))
        if args.json:
            _print_json(rows)
            return EXIT_OK
        if not rows:
            print("no hosts; add one with: mepm host add NAME --address HOST:PORT ...")
        for r in rows:
            what = (f"{r['instance']} mep {r['version']}, {r['engine']}, rule-set generation {r['generation']},"
                    f" {r['apps']} apps") if r["reachable"] else f"UNREACHABLE: {r['error']}"
            print(f"{r['name']:<12} {r['address']:<22} {r['security']:<9} {what}")
        return EXIT_OK

    return _run(args, body)


def cmd_host_remove(args: argparse.Namespace) -> int:
    """mepm host remove NAME."""

    async def body(inv: Inventory) -> int:
        await inv.remove_host(args.name)
        print(f"{args.name}: removed")
        return EXIT_OK

    return _run(args, body)


# -- apps ------------------------------------------------------------------------------------


def _app_name(args: argparse.Namespace, appd_name: str) -> str:
    name: str = args.name or appd_name
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            f"appName '{appd_name}' cannot name the app here (1-63 of a-z, 0-9, '_', '-'); give --name", field="--name"
        )
    return name


def _report(app: App, statuses: list[Status]) -> int:
    print(f"{app.name}: generation {app.generation}, desired {app.desired}")
    for s in sorted(statuses, key=lambda s: s.host):
        print(_status_line(s))
    pending = [s.host for s in statuses if not s.ok]
    if pending:
        print(f"not done on {', '.join(pending)}; the desired state is recorded and `mepm reconcile` keeps pushing it")
        return EXIT_FAIL
    return EXIT_OK


def cmd_app_instantiate(args: argparse.Namespace) -> int:
    """mepm app instantiate APPD --host H [--host H2]."""
    appd = load_appd(Path(args.appd))
    name = _app_name(args, appd.appName)
    hosts = list(dict.fromkeys(args.host))

    async def body(inv: Inventory) -> int:
        for h in hosts:
            try:
                await inv.host(h)
            except NotFound as exc:  # a usage error: nothing is stored
                raise InvalidInput(exc.detail, field="--host") from None
        try:
            app, version = await inv.app(name)
        except NotFound:
            app, version = App(name=name, appd=appd.document(), source=args.appd, generation=1), 0
        else:
            if app.desired == "TERMINATED":
                raise Conflict(f"app '{name}' is being terminated; instantiate it again once it is gone")
            if appd_json(app.descriptor) != appd_json(appd):
                raise Conflict(f"app '{name}' exists with another AppD; change it with: mepm app update {name} FILE")
        secrets: list[tuple[str, str, str]] = []
        instances = dict(app.instances)
        for h in hosts:
            if h not in instances:
                app_instance_id = f"{name}-{h}-{os.urandom(4).hex()}"
                client_id, secret = new_credentials(app_instance_id)
                instances[h] = Instance(host=h, app_instance_id=app_instance_id, client_id=client_id,
                                        client_secret_hash=hash_secret(secret))
                secrets.append((h, client_id, secret))
        app = app.model_copy(update={"instances": instances})
        await inv.put_app(app, expected=version)
        statuses = await Reconciler(inv, timeout_s=args.timeout).reconcile(apps={name}, hosts=set(hosts))
        code = _report(app, statuses)
        if secrets:
            print("Mp1 credentials, shown only now (MEPM and the MEPs keep only a hash):")
            for h, client_id, secret in secrets:
                print(f"  {h:<12} client_id={client_id} client_secret={secret}")
        return code

    return _run(args, body)


def cmd_app_update(args: argparse.Namespace) -> int:
    """mepm app update NAME APPD: the next generation, pushed to every host."""
    appd = load_appd(Path(args.appd))

    async def body(inv: Inventory) -> int:
        app, version = await inv.app(args.name)
        if app.desired == "TERMINATED":
            raise Conflict(f"app '{args.name}' is being terminated")
        if appd.appDId != app.descriptor.appDId:
            raise InvalidInput(
                f"{args.appd} is appDId {appd.appDId}, the app's is {app.descriptor.appDId}", field="appDId"
            )
        if appd_json(appd) == appd_json(app.descriptor):
            print(f"{app.name}: the AppD is unchanged; still generation {app.generation}")
        else:
            app = app.model_copy(update={"appd": appd.document(), "source": args.appd,
                                         "generation": app.generation + 1})
            await inv.put_app(app, expected=version)
        statuses = await Reconciler(inv, timeout_s=args.timeout).reconcile(apps={app.name})
        return _report(app, statuses)

    return _run(args, body)


def cmd_app_list(args: argparse.Namespace) -> int:
    """mepm app list: apps and what was last seen of each instance."""

    async def body(inv: Inventory) -> int:
        apps = await inv.apps()
        statuses = {(s.app, s.host): s for s in await inv.statuses()}
        if args.json:
            _print_json([{**a.model_dump(mode="json", exclude={"appd"}), "status": {
                h: statuses[(a.name, h)].model_dump(mode="json") for h in a.instances if (a.name, h) in statuses
            }} for a in apps])
            return EXIT_OK
        if not apps:
            print("no apps; instantiate one with: mepm app instantiate APPD --host HOST")
        for a in apps:
            seen = []
            for h in sorted(a.instances):
                s = statuses.get((a.name, h))
                seen.append(f"{h}:" + ("?" if s is None else "unreachable" if not s.reachable else
                                       f"{s.state or 'gone'}/g{s.config_generation}"))
            print(f"{a.name:<20} generation {a.generation:<3} {a.desired:<12} {' '.join(seen)}")
        return EXIT_OK

    return _run(args, body)


def cmd_app_show(args: argparse.Namespace) -> int:
    """mepm app show NAME: the AppD's content and each instance as its MEP reports it now."""

    async def body(inv: Inventory) -> int:
        app, _ = await inv.app(args.name)
        appd = app.descriptor
        live: dict[str, Any] = {}
        for h, inst in sorted(app.instances.items()):
            host = await inv.host(h)
            async with host.client(args.timeout) as client:
                try:
                    (a,) = (await client.get_state(inst.app_instance_id)).apps
                    live[h] = {"state": pb.AppState.Name(a.state), "config_generation": a.config_generation,
                               "in_force": a.in_force, "traffic_rules": {r.id: r.rule_id for r in a.traffic_rules},
                               "dns_rules": {r.id: r.rule_id for r in a.dns_rules}, "task": a.last_task_id}
                except MepError as exc:
                    live[h] = {"error": str(exc)}
        if args.json:
            _print_json({**app.model_dump(mode="json"), "live": live})
            return EXIT_OK
        print(f"{app.name}: {appd.appName} {appd.appSoftVersion} by {appd.appProvider} (appDId {appd.appDId})")
        print(f"  generation {app.generation}, desired {app.desired}, from {app.source or '?'}")
        print(f"  traffic rules: {', '.join(r.trafficRuleId for r in appd.appTrafficRule) or 'none'}")
        print(f"  DNS rules:     {', '.join(f'{r.domainName}->{r.ipAddress}' for r in appd.appDNSRule) or 'none'}")
        print(f"  requires:      {', '.join(s.serName for s in appd.required_services) or 'nothing'}")
        print(f"  produces:      {', '.join(s.serName for s in appd.appServiceProduced) or 'nothing'}")
        for h, inst in sorted(app.instances.items()):
            seen = live[h]
            if "error" in seen:
                print(f"  {h:<12} {inst.app_instance_id}: {seen['error']}")
            else:
                force = "in force" if seen["in_force"] else "NOT in force"
                print(f"  {h:<12} {inst.app_instance_id}: {seen['state']}, generation {seen['config_generation']},"
                      f" {force}, client_id {inst.client_id}")
        return EXIT_OK

    return _run(args, body)


def cmd_app_terminate(args: argparse.Namespace) -> int:
    """mepm app terminate NAME: terminate every instance, then forget the app."""

    async def body(inv: Inventory) -> int:
        app, version = await inv.app(args.name)
        if app.desired != "TERMINATED":
            app = app.model_copy(update={"desired": "TERMINATED"})
            await inv.put_app(app, expected=version)
        reconciler = Reconciler(inv, timeout_s=args.timeout)
        deadline = time.monotonic() + args.wait
        while True:
            statuses = await reconciler.reconcile(apps={app.name})
            if all(s.ok for s in statuses) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        code = _report(app, statuses)
        if code == EXIT_OK:
            print(f"{app.name}: terminated everywhere and forgotten")
        return code

    return _run(args, body)


# -- rules and stats ---------------------------------------------------------------------------


async def _managed(inv: Inventory, host_names: list[str] | None) -> tuple[list[Host], dict[str, str]]:
    hosts = [h for h in await inv.hosts() if not host_names or h.name in host_names]
    owners = {i.app_instance_id: a.name for a in await inv.apps() for i in a.instances.values()}
    return hosts, owners


async def _from_each_host(hosts: list[Host], timeout: float,
                          ask: Callable[[Mm5Client], Awaitable[T]]) -> tuple[list[tuple[Host, T]], bool]:
    """``ask`` every host in turn; one that cannot be reached is reported on stderr and makes the bool True."""
    answers: list[tuple[Host, T]] = []
    failed = False
    for host in hosts:
        async with host.client(timeout) as client:
            try:
                answers.append((host, await ask(client)))
            except PeerUnavailable as exc:
                _err(str(exc))
                failed = True
    return answers, failed


def cmd_rules(args: argparse.Namespace) -> int:
    """mepm rules: the traffic rules each MEP holds for MEPM's apps, as its store has them."""

    async def body(inv: Inventory) -> int:
        hosts, owners = await _managed(inv, args.host)
        rows: list[dict[str, Any]] = []
        states, failed = await _from_each_host(hosts, args.timeout, lambda c: c.get_state(include_config=True))
        for host, state in states:
            for a in state.apps:
                app = owners.get(a.app_instance_id)
                if app is None or (args.app and app != args.app):
                    continue
                ids = {r.id: r.rule_id for r in a.traffic_rules}
                for text in a.config.traffic_rules:
                    rule = json.loads(text)
                    rows.append({"host": host.name, "app": app, "trafficRuleId": rule["trafficRuleId"],
                                 "rule_id": ids.get(rule["trafficRuleId"], 0), "priority": rule["priority"],
                                 "action": rule["action"], "state": rule["state"],
                                 "app_state": pb.AppState.Name(a.state), "in_force": a.in_force,
                                 "filters": rule["trafficFilter"]})
        if args.json:
            _print_json(rows)
        else:
            print(f"{'HOST':<12} {'APP':<18} {'RULE':<18} {'ID':>5} {'PRIO':>4} {'ACTION':<22} ENFORCED")
            for r in rows:
                enforced = "yes" if r["app_state"] == "READY" and r["state"] == "ACTIVE" and r["in_force"] else "no"
                print(f"{r['host']:<12} {r['app']:<18} {r['trafficRuleId']:<18} {r['rule_id']:>5} "
                      f"{r['priority']:>4} {r['action']:<22} {enforced}")
        return EXIT_FAIL if failed else EXIT_OK

    return _run(args, body)


def cmd_stats(args: argparse.Namespace) -> int:
    """mepm stats: packets and bytes per rule of MEPM's apps, per host."""

    async def body(inv: Inventory) -> int:
        hosts, owners = await _managed(inv, args.host)
        rows: list[dict[str, Any]] = []
        answers, failed = await _from_each_host(hosts, args.timeout, lambda c: c.get_counters())
        for host, counters in answers:
            for c in counters.rules:
                app = owners.get(c.app_instance_id)
                if app is None or (args.app and app != args.app):
                    continue
                rows.append({"host": host.name, "app": app, "rule": c.traffic_rule_id, "rule_id": c.rule_id,
                             "packets": c.packets, "bytes": c.bytes})
        if args.json:
            _print_json(rows)
        else:
            print(f"{'HOST':<12} {'APP':<18} {'RULE':<18} {'ID':>5} {'PACKETS':>12} {'BYTES':>14}")
            for r in rows:
                print(f"{r['host']:<12} {r['app']:<18} {r['rule']:<18} {r['rule_id']:>5} {r['packets']:>12} "
                      f"{r['bytes']:>14}")
        return EXIT_FAIL if failed else EXIT_OK

    return _run(args, body)


# -- reconcile -----------------------------------------------------------------------------------


def cmd_reconcile(args: argparse.Namespace) -> int:
    """mepm reconcile: passes until SIGTERM/SIGINT (or one with --once)."""
    setup_logging(LogConfig(level="debug" if args.verbose else "info", format="text"))

    async def body(inv: Inventory) -> int:
        reconciler = Reconciler(inv, timeout_s=args.timeout, retry_s=args.retry)
        if args.once:
            statuses = await reconciler.reconcile()
            for s in statuses:
                print(f"{s.app:<20}" + _status_line(s))
            return EXIT_OK if all(s.ok for s in statuses) else EXIT_FAIL
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await reconciler.run(args.interval, stop)
        return EXIT_OK

    return _run(args, body)


# -- parser ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``mepm`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="mepm",
        description="MEC platform manager: deploys MEC apps from AppDs to MEPs over Mm5 (gRPC) and keeps them there.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--store", help=f"desired-state store URL (env MEPM_STORE; default {DEFAULT_STORE_URL})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what reconciliation does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")

    def timeout(p: argparse.ArgumentParser) -> None:
        p.add_argument("--timeout", type=float, default=_TIMEOUT_S, help="seconds per Mm5 call (default %(default)s)")

    certs = sub.add_parser("certs", help="make mTLS certificates for Mm5").add_subparsers(dest="sub", metavar="SUB")
    p = certs.add_parser("init", help="a CA plus MEP server and MEPM client certificates in DIR",
                         epilog="example: mepm certs init pki --san localhost --san 198.18.50.1")
    p.add_argument("dir")
    p.add_argument("--san", action="append", help="a DNS name or IP address of the MEPs (repeat; default "
                   + ", ".join(DEFAULT_SANS) + ")")
    p.add_argument("--client-name", default="mepm", help="common name of the client certificate")
    p.set_defaults(func=cmd_certs_init)

    hosts = sub.add_parser("host", help="the MEPs MEPM manages").add_subparsers(dest="sub", metavar="SUB")
    p = hosts.add_parser("add", help="add a MEP", epilog="example: mepm host add edge1 --address 198.18.50.1:50051 "
                         "--ca pki/ca.crt --cert pki/client.crt --key pki/client.key")
    p.add_argument("name")
    p.add_argument("--address", required=True, help="HOST:PORT of its Mm5 (mm5.listen)")
    p.add_argument("--ca", help="CA certificate that signed the MEP's server certificate")
    p.add_argument("--cert", help="MEPM's client certificate (mutual TLS)")
    p.add_argument("--key", help="MEPM's client key")
    p.add_argument("--server-name", help="the name in the MEP's certificate, if not the address's host")
    p.add_argument("--insecure", action="store_true", help="plaintext gRPC (tests, a lab)")
    p.set_defaults(func=cmd_host_add)
    p = hosts.add_parser("list", help="every MEP and whether it answers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_host_list)
    p = hosts.add_parser("remove", help="forget a MEP no app runs on")
    p.add_argument("name")
    p.set_defaults(func=cmd_host_remove)

    apps = sub.add_parser("app", help="apps: instantiate, update, list, show, terminate").add_subparsers(
        dest="sub", metavar="SUB")
    p = apps.add_parser("instantiate", help="deploy an AppD to one or more MEPs",
                        epilog="example: mepm app instantiate examples/appd/video-analytics.yaml --host edge1")
    p.add_argument("appd", help="AppD file (YAML or JSON)")
    p.add_argument("--host", action="append", required=True, help="a MEP to run it on (repeat)")
    p.add_argument("--name", help="the app's name in MEPM (default: appName)")
    timeout(p)
    p.set_defaults(func=cmd_app_instantiate)
    p = apps.add_parser("update", help="push a changed AppD as the next generation",
                        epilog="example: mepm app update video-analytics video-analytics-v2.yaml")
    p.add_argument("name")
    p.add_argument("appd")
    timeout(p)
    p.set_defaults(func=cmd_app_update)
    p = apps.add_parser("list", help="apps and their instances as last seen")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_app_list)
    p = apps.add_parser("show", help="one app: its AppD and its instances now")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    timeout(p)
    p.set_defaults(func=cmd_app_show)
    p = apps.add_parser("terminate", help="terminate every instance (graceful), then forget the app")
    p.add_argument("name")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the graceful terminations")
    timeout(p)
    p.set_defaults(func=cmd_app_terminate)

    p = sub.add_parser("rules", help="the traffic rules the MEPs hold for MEPM's apps")
    p.add_argument("--host", action="append", help="only this MEP (repeat)")
    p.add_argument("--app", help="only this app")
    p.add_argument("--json", action="store_true")
    timeout(p)
    p.set_defaults(func=cmd_rules)
    p = sub.add_parser("stats", help="packets and bytes per rule of MEPM's apps")
    p.add_argument("--host", action="append", help="only this MEP (repeat)")
    p.add_argument("--app", help="only this app")
    p.add_argument("--json", action="store_true")
    timeout(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("reconcile", help="keep every MEP as desired: re-push after restarts and partitions")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between passes (default %(default)s)")
    p.add_argument("--retry", type=float, default=30.0,
                   help="seconds before a generation a MEP refused is pushed there again (default %(default)s)")
    p.add_argument("--once", action="store_true", help="one pass, then exit (0: everything as desired)")
    timeout(p)
    p.set_defaults(func=cmd_reconcile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mepm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"mepm {version('mep')}")
        return EXIT_OK
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_OK if args.command is None else EXIT_USAGE
    if args.command != "reconcile":
        setup_logging(LogConfig(level="info" if args.verbose else "warning", format="text"))
    return run_command("mepm", func, args)


if __name__ == "__main__":
    sys.exit(main())
