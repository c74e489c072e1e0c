"""The ``mep`` command: run the daemon, check a configuration or the machine, inspect a daemon.

Exit status: 0 success, 1 failure (daemon not running, a check failed, start-up
failed), 2 usage or configuration error.

``status``, ``stats``, ``rules`` and ``explain`` talk to a running daemon over
its admin socket (mep/admin.py): the one named by ``--socket``, else by the
configuration given with ``-c`` (``admin.socket``, or /run/mep/<instance>.sock),
else /run/mep/mep.sock.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote, urlencode

from pydantic import ValidationError

from .admin import EXPLAIN_NOTE, AdminClient
from .config import Config, explain_errors, load_config, read_config_file
from .errors import ConfigError, InvalidInput, MepError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
examples:
  mep run -c /etc/mep/mep.yaml        run the daemon in the foreground
  mep config check examples/mep.yaml  validate a configuration file
  mep doctor                          can this machine run the XDP data plane?
  mep status                          is the daemon up; engine, generation, apps
  mep rules -v                        the rules in force, with their targets
  mep stats                           packets and bytes per verdict, reason, rule; DNS answers
  mep app add video-1 --rules rules.yaml
                                      an app instance and its Mp1 credentials (no MEPM)
  mep notifications                   what was sent to the apps' callbacks, and how it went
  mep explain --ingress 1 --scapy "Ether(src='02:00:00:00:05:01',dst='02:00:00:00:06:01')/IP(src='198.18.0.5',dst='198.18.100.1')/UDP(dport=53)"
                                      which rule a frame hits, and what happens to it

docs/configuration.md lists every configuration key; README.md has the rest.
"""


# -- helpers ------------------------------------------------------------------------


def _err(message: str) -> None:
    print(f"mep: {message}", file=sys.stderr)


def _client(args: argparse.Namespace) -> AdminClient:
    if args.socket:
        return AdminClient(Path(args.socket))
    return AdminClient(load_config(args.config).admin_socket)


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# -- subcommands --------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """mep run -c FILE."""
    config = load_config(args.config)
    import uvloop

    from .daemon import run  # imported here: the inspection commands stay fast

    if args.verbose:
        config = config.model_copy(update={"log": config.log.model_copy(update={"level": "debug"})})
    # uvloop: the loop and transports in C. A PUT over Mp1 costs ~0.1 ms less CPU than on asyncio's
    # own loop (0.80 -> 0.70 ms at 1,000 req/s); the daemon uses nothing uvloop lacks.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(config))


def cmd_config_check(args: argparse.Namespace) -> int:
    """mep config check FILE."""
    name = args.file
    try:
        data = read_config_file(Path(name))
        Config(**data)
    except ConfigError as exc:  # unreadable, not YAML, or not a mapping
        print(f"{name}: {exc.detail}")
        return EXIT_USAGE
    except ValidationError as exc:
        for line in explain_errors(exc):
            print(f"{name}: {line}")
        return EXIT_USAGE
    print(f"{name}: OK")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """mep doctor."""
    from .doctor import daemon_summary, dataplane_report, ebpf_source, format_check, run_checks

    config = load_config(args.config)
    if args.ebpf:
        flags, text = ebpf_source(config)
        print("// cflags: " + " ".join(flags))
        print(text)
        return EXIT_OK
    failed = 0
    for check in run_checks(config):
        print(format_check(check), flush=True)
        failed += check.ok is False
    summary = daemon_summary(config)
    if args.verbose:
        print(summary or f"daemon: none answers on {config.admin_socket}")
        if summary:
            print("\n".join(dataplane_report(config)))
    elif summary:
        print(summary)
    if failed:
        print(f"{failed} check(s) failed")
        return EXIT_FAIL
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """mep status."""
    st = _client(args).get("/status")
    if args.json:
        _print_json(st)
        return EXIT_OK
    eng = st["engine"]
    print(f"mep {st['instance']}: running, pid {st['pid']}, up {_duration(st['uptime_s'])}, version {st['version']}")
    gen = st["generation"] or "none applied"
    print(f"engine   {eng.get('engine')}, generation {gen}, {eng.get('rules', 0)} rules")
    print(f"store    {st['store']['backend']}, revision {st['store']['revision']} (rule set from revision {st['applied_revision']})")
    apps = ", ".join(f"{state} {n}" for state, n in st["apps"].items()) or "none"
    print(f"apps     {apps}")
    refused = st.get("refused")
    if refused:
        print(f"REFUSED  revision {refused['revision']}: {len(refused['problems'])} problem(s); "
              f"generation {refused['kept_generation']} stays in force" + ("" if args.verbose else " (-v lists them)"))
    if args.verbose:
        for problem in (refused or {}).get("problems", []):
            print(f"  {problem}")
        for key, value in sorted(eng.items()):
            if key not in ("engine", "rules", "generation"):
                print(f"engine.{key} {value}")
        print("ports")
        for p in st["ports"]:
            print(f"  {p['index']:>3} {p['name']:<12} {p['ifname']:<16} {p['role']:<4} {p['mac'] or '-'} mtu {p['mtu']}")
    return EXIT_OK


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


_TOP_RULES = 10


def cmd_stats(args: argparse.Namespace) -> int:
    """mep stats."""
    st = _client(args).get("/stats")
    if args.json:
        _print_json(st)
        return EXIT_OK
    if not st["verdicts"]:
        print("no packets counted yet")
    else:
        _table([(v, c["packets"], c["bytes"]) for v, c in st["verdicts"].items()], ("VERDICT", "PACKETS", "BYTES"))
        print()
        _table([(r, c["packets"], c["bytes"]) for r, c in st["reasons"].items()], ("REASON", "PACKETS", "BYTES"))
    if st.get("fib"):
        print()
        _table([(o, c["packets"], c["bytes"]) for o, c in st["fib"].items()], ("PASS FRAMES (FIB)", "PACKETS", "BYTES"))
    dns_ids = set(st["dns"]["rules"]) if "dns" in st else set()
    rules = sorted(((r, c) for r, c in st["rules"].items() if r not in dns_ids), key=lambda kv: -kv[1]["packets"])
    if rules:
        print()
        shown = rules if args.verbose else rules[:_TOP_RULES]
        _table([(r, c["packets"], c["bytes"]) for r, c in shown], ("RULE", "PACKETS", "BYTES"))
        if len(shown) < len(rules):
            print(f"(top {len(shown)} of {len(rules)} rules by packets; -v shows all)")
    if "dns" in st:
        _dns_stats(st["dns"], st["rules"], verbose=args.verbose)
    return EXIT_OK


def _dns_stats(dns: dict[str, Any], counted: dict[str, Any], *, verbose: bool) -> None:
    """The DNS responder's part of mep stats: totals, then answers per DNS rule (user space and XDP)."""
    print()
    outcomes = ", ".join(f"{k} {v}" for k, v in dns["outcomes"].items() if v) or "none"
    print(f"dns: {dns['queries']['udp']} UDP and {dns['queries']['tcp']} TCP queries in user space "
          f"({outcomes}); {dns['cache_entries']} cached, {dns['inflight']} in flight")
    rows = sorted(((rid, r, counted.get(rid, {}).get("packets", 0)) for rid, r in dns["rules"].items()),
                  key=lambda row: -(row[1]["answers"] + row[2]))
    if not rows:
        return
    shown = rows if verbose else rows[:_TOP_RULES]
    _table([(rid, r["app"], r["dnsRuleId"], r["name"], r["type"], r["answers"], xdp) for rid, r, xdp in shown],
           ("RULE", "APP", "DNS RULE", "NAME", "TYPE", "USER-SPACE", "XDP"))
    if len(shown) < len(rows):
        print(f"(top {len(shown)} of {len(rows)} DNS rules by answers; -v shows all)")


_FILTER_WIDTH = 60


def cmd_rules(args: argparse.Namespace) -> int:
    """mep rules."""
    data = _client(args).get("/rules")
    if args.json:
        _print_json(data)
        return EXIT_OK
    if data["generation"] is None:
        print("no rule set applied yet (mep status tells why)")
        return EXIT_OK
    print(f"generation {data['generation']} (store revision {data['store_revision']}), "
          f"{len(data['rules'])} rules, default {data['default']}")
    if not data["rules"]:
        return EXIT_OK
    rows = []
    for r in data["rules"]:
        filters = " | ".join(r["filters"])
        if not args.verbose and len(filters) > _FILTER_WIDTH:
            filters = filters[: _FILTER_WIDTH - 3] + "..."
        rows.append((r["id"], r["priority"], r["action"], f"{r['app']}/{r['trafficRuleId']}", r["filterType"], filters))
    _table(rows, ("ID", "PRIO", "ACTION", "APP/RULE", "TYPE", "FILTERS"))
    if args.verbose:
        for r in data["rules"]:
            for t in r["targets"]:
                extra = " ".join(f"{k}={t[k]}" for k in ("new_dst_ip", "tunnel_src", "tunnel_dst") if k in t)
                print(f"rule {r['id']} -> {t['kind']} port {t['port']} ({t['port_name']}) "
                      f"{t['src_mac']} -> {t['dst_mac']} {extra}".rstrip())
    return EXIT_OK


def _scapy_frame(expression: str) -> bytes:
    """Evaluate a scapy expression such as ``Ether(...)/IP(...)/UDP(...)`` into bytes.

    Only scapy's layer classes are in scope; Python builtins are not.
    """
    from scapy.contrib import gtp
    from scapy.layers import inet, inet6, l2, sctp
    from scapy.packet import Packet, Raw

    scope: dict[str, Any] = {"Raw": Raw}
    for module in (l2, inet, inet6, sctp, gtp):
        scope.update({k: v for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, Packet)})
    try:
        packet = eval(expression, {"__builtins__": {}}, scope)  # noqa: S307 - the operator's own expression
    except Exception as exc:  # a syntax or scapy error in the expression
        raise MepError(f"--scapy expression does not evaluate: {type(exc).__name__}: {exc}") from None
    if not isinstance(packet, Packet):
        raise MepError(f"--scapy expression gave a {type(packet).__name__}, not a scapy packet")
    return bytes(packet)


def _hex_frame(text: str) -> bytes:
    """``--hex``: the frame as hex digits; spaces and colons are ignored."""
    try:
        return bytes.fromhex(text.replace(":", "").replace(" ", ""))
    except ValueError:
        raise InvalidInput("--hex takes hex digits, such as 020000000601...", field="hex") from None


def cmd_explain(args: argparse.Namespace) -> int:
    """mep explain."""
    client = _client(args)
    frame = _scapy_frame(args.scapy) if args.scapy else _hex_frame(args.hex)
    ingress: int
    if args.ingress.isdigit():
        ingress = int(args.ingress)
    else:
        ports = {p["name"]: p["index"] for p in client.get("/status")["ports"]}
        if args.ingress not in ports:
            _err(f"no port named {args.ingress!r}; ports: {', '.join(ports) or 'none'}")
            return EXIT_USAGE
        ingress = ports[args.ingress]
    res = client.post("/explain", {"frame": frame.hex(), "ingress": ingress})
    if args.json:
        _print_json(res)
        return EXIT_OK
    print(f"{res['verdict']}  {res['reason']}: {res['reason_text']}")
    rule = res["rule"]
    if rule:
        direction = " (reverse direction of a FLOW rule)" if res["reverse"] else ""
        print(f"rule     {rule['id']}: {rule['app']}/{rule['trafficRuleId']} priority {rule['priority']} "
              f"{rule['action']}{direction}")
    else:
        print("rule     none")
    outs = ", ".join(f"{o['port_name']} ({len(o['frame']) // 2} bytes)" for o in res["outputs"]) or "none"
    print(f"outputs  {outs}")
    if args.verbose:
        for o in res["outputs"]:
            print(f"  port {o['port']} ({o['port_name']}): {o['frame']}")
        print(f"engine   {res['engine']}, generation {res['generation']}")
    print(f"note     {EXPLAIN_NOTE}")
    return EXIT_OK


def _rules_file(path: str) -> dict[str, Any]:
    """``--rules FILE``: YAML or JSON with ``trafficRules`` and/or ``dnsRules`` (MEC 011 TrafficRule, DnsRule lists)."""
    data = read_config_file(Path(path))
    unknown = sorted(set(data) - {"trafficRules", "dnsRules"})
    if unknown:
        raise InvalidInput(f"{path}: unknown key {unknown[0]!r} (the file holds trafficRules and dnsRules)", field="rules")
    for key in ("trafficRules", "dnsRules"):
        if not isinstance(data.get(key, []), list):
            raise InvalidInput(f"{path}: {key} must be a list", field="rules")
    return {"traffic_rules": data.get("trafficRules", []), "dns_rules": data.get("dnsRules", [])}


def _print_credentials(res: dict[str, Any]) -> None:
    print(f"client_id      {res['client_id']}")
    print(f"client_secret  {res['client_secret']}")
    print("               (shown only now: the platform keeps a hash of it)")
    endpoint = res.get("token_endpoint")
    print(f"token endpoint {endpoint or 'Mp1 is not listening (mp1.enabled is false)'}")


def cmd_app_add(args: argparse.Namespace) -> int:
    """mep app add ID."""
    body: dict[str, Any] = {"app_instance_id": args.app_instance_id, "app_name": args.name, "app_provider": args.provider}
    if args.no_confirm_ready:
        body["confirm_ready_required"] = False
    if args.graceful_timeout is not None:
        body["graceful_timeout_s"] = args.graceful_timeout
    if args.rules:
        body.update(_rules_file(args.rules))
    res = _client(args).post("/apps", body)
    if args.json:
        _print_json(res)
        return EXIT_OK
    app = res["app"]
    after = "its ACTIVE rules are enforced" if app["state"] == "READY" else "it must call confirm_ready before its rules are enforced"
    print(f"app instance {app['appInstanceId']}: {app['state']}, {app['traffic_rules']} traffic rules, "
          f"{app['dns_rules']} DNS rules; {after}")
    _print_credentials(res)
    return EXIT_OK


def cmd_app_list(args: argparse.Namespace) -> int:
    """mep app list."""
    apps = _client(args).get("/apps")["apps"]
    if args.json:
        _print_json(apps)
        return EXIT_OK
    if not apps:
        print("no app instances")
        return EXIT_OK
    rows = [(a["appInstanceId"], a["state"], a["traffic_rules"], a["dns_rules"], a["services"], a["client_id"] or "-")
            for a in apps]
    _table(rows, ("APP", "STATE", "RULES", "DNS", "SERVICES", "CLIENT ID"))
    return EXIT_OK


def cmd_app_terminate(args: argparse.Namespace) -> int:
    """mep app terminate ID."""
    client = _client(args)
    app = client.post(f"/apps/{quote(args.app_instance_id, safe='')}/terminate", {})["app"]
    print(f"app instance {app['appInstanceId']}: {app['state']} (graceful timeout {app['graceful_timeout_s']} s)")
    if not args.wait or app["state"] == "TERMINATED":
        return EXIT_OK
    deadline = time.monotonic() + app["graceful_timeout_s"] + args.wait_slack
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = next((a for a in client.get("/apps")["apps"] if a["appInstanceId"] == app["appInstanceId"]), None)
        if current is not None and current["state"] == "TERMINATED" and not (current["traffic_rules"] or current["services"]):
            print(f"app instance {app['appInstanceId']}: TERMINATED, rules and services removed")
            return EXIT_OK
    _err(f"app instance {app['appInstanceId']} is not TERMINATED yet (mep app list; the daemon log says why)")
    return EXIT_FAIL


def cmd_app_credentials(args: argparse.Namespace) -> int:
    """mep app credentials ID."""
    res = _client(args).post(f"/apps/{quote(args.app_instance_id, safe='')}/credentials", {})
    if args.json:
        _print_json(res)
        return EXIT_OK
    print(f"app instance {res['app']['appInstanceId']}: new credentials; the old ones and their tokens no longer work")
    _print_credentials(res)
    return EXIT_OK


def cmd_notifications(args: argparse.Namespace) -> int:
    """mep notifications."""
    query = {"limit": str(args.limit)}
    if args.app:
        query["app"] = args.app
    if args.status:
        query["status"] = args.status
    res = _client(args).get("/notifications?" + urlencode(query))
    if args.json:
        _print_json(res)
        return EXIT_OK
    deliveries = res["deliveries"]
    if not deliveries:
        print(f"no notifications{' matching' if args.app or args.status else ''} (log: {res['log_file']})")
        return EXIT_OK
    rows = []
    for d in deliveries:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(d["created_at"]))
        last = str(d["last_status"]) if d["last_status"] is not None else (d["last_error"] or "-")
        if args.verbose and d["last_error"] and d["last_status"] is not None:
            last = d["last_error"]
        rows.append((when, d["app_instance_id"], d["notification_type"], d["status"], d["attempts"], last,
                     d["callback"] if args.verbose else d["callback"][:48]))
    _table(rows, ("CREATED", "APP", "TYPE", "STATUS", "TRIES", "LAST", "CALLBACK"))
    print(f"{len(deliveries)} of {res['matched']} shown, {res['pending']} pending (log: {res['log_file']})")
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    """mep version."""
    print(f"mep {version('mep')}")
    if args.verbose:
        print(f"python {platform.python_version()}, kernel {platform.release()}")
    return EXIT_OK


# -- parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole ``mep`` argument parser."""
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", help="print more detail")
    conf = argparse.ArgumentParser(add_help=False)
    conf.add_argument("-c", "--config", metavar="FILE", help="configuration file (default: defaults + MEP_* environment)")
    daemon = argparse.ArgumentParser(add_help=False, parents=[verbose, conf])
    daemon.add_argument("--socket", metavar="PATH", help="admin socket of the daemon (default: from the configuration)")
    daemon.add_argument("--json", action="store_true", help="print the daemon's JSON answer as is")

    parser = argparse.ArgumentParser(
        prog="mep",
        description="MEC platform (ETSI MEC 011) whose data plane enforces traffic and DNS rules in XDP beside a 5G UPF.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str, func: Callable[[argparse.Namespace], int], parents: list[argparse.ArgumentParser],
            epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=parents, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("run", "run the platform daemon in the foreground until SIGTERM or SIGINT (-v: debug log)", cmd_run, [verbose],
            "examples:\n  mep run -c /etc/mep/mep.yaml\n  MEP_LOG__FORMAT=text mep run -c examples/mep.yaml\n\n"
            "exit status: 0 after SIGTERM/SIGINT, 1 if start-up or a rule-set apply fails, 2 for a bad configuration")
    p.add_argument("-c", "--config", metavar="FILE", required=True, help="configuration file (docs/configuration.md)")

    p = sub.add_parser("config", help="check configuration files", description="check configuration files",
                       epilog="examples:\n  mep config check examples/mep.yaml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    config_sub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    pc = config_sub.add_parser(
        "check", help="validate FILE as `mep run` would load it; one line per error with its dotted path",
        description="Validate FILE as `mep run` would load it (MEP_* environment overrides included): "
                    "print 'FILE: OK', or one line per error with its dotted path. Exit 0 if valid, 2 if not.",
        epilog="examples:\n  mep config check examples/mep.yaml\n  MEP_STORE__BACKEND=etcd mep config check /etc/mep/mep.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pc.add_argument("file", metavar="FILE")
    pc.set_defaults(func=cmd_config_check)

    p = add("doctor", "check this machine for the data plane: kernel, BTF, bcc, XDP attach, test-run, store",
            cmd_doctor, [verbose, conf],
            "examples:\n  mep doctor\n  mep doctor -c /etc/mep/mep.yaml   (checks its store too)\n"
            "  mep doctor -v                      (and the running data plane: XDP mode per port, capacity,\n"
            "                                      map memory, pinned maps, packets per reason)\n"
            "  mep doctor --ebpf > mep.c          (the exact C and cflags the XDP engine compiles)\n\n"
            "exit status: 0 if every check is OK or n/a, 1 otherwise; needs root for the BPF checks")
    p.add_argument("--ebpf", action="store_true", help="print the XDP program's C text and cflags, run no check")
    add("status", "show whether the daemon runs: engine, rule-set generation, store revision, apps", cmd_status,
        [daemon], "examples:\n  mep status\n  mep status -v --socket /run/mep/edge1.sock")
    add("stats", "show packet and byte counters per verdict, reason and rule", cmd_stats, [daemon],
        "examples:\n  mep stats\n  mep stats --json | jq .rules")
    add("rules", "list the traffic rules in force, in match order", cmd_rules, [daemon],
        "examples:\n  mep rules\n  mep rules -v   (full filters and each rule's destination)")
    p = add("explain", "run one frame through the daemon's engine: verdict, rule, reason, output", cmd_explain, [daemon],
            "examples:\n  mep explain --ingress 1 --hex 0200000006010200000005010800...\n"
            "  mep explain --ingress n6 --scapy \"Ether(src='02:00:00:00:05:01',dst='02:00:00:00:06:01')"
            "/IP(src='198.18.0.5',dst='198.18.100.1')/TCP(dport=80)\"\n\n"
            "the probe is a real packet for the engine: it is counted in mep stats")
    p.add_argument("--ingress", required=True, metavar="PORT", help="port the frame arrives on: index or name (mep status -v)")
    frame = p.add_mutually_exclusive_group(required=True)
    frame.add_argument("--hex", metavar="HEX", help="the whole Ethernet frame as hex")
    frame.add_argument("--scapy", metavar="EXPR", help="a scapy expression such as \"Ether(...)/IP(...)/UDP(...)\"")
    p = sub.add_parser("app", help="add, list and terminate app instances (single-host use, without MEPM)",
                       description="add, list and terminate app instances on this platform, through the daemon",
                       epilog="examples:\n  mep app add video-1 --rules rules.yaml\n  mep app list\n"
                              "  mep app terminate video-1 --wait",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    app_sub = p.add_subparsers(dest="app_command", metavar="SUBCOMMAND", required=True)

    def add_app_cmd(name: str, help: str, func: Callable[[argparse.Namespace], int], epilog: str) -> argparse.ArgumentParser:
        q = app_sub.add_parser(name, help=help, description=help, parents=[daemon], epilog=epilog,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        q.set_defaults(func=func)
        return q

    q = add_app_cmd(
        "add", "create and instantiate an app instance and print its Mp1 client id and secret (shown once)",
        cmd_app_add,
        "examples:\n  mep app add video-1\n  mep app add video-1 --no-confirm-ready --rules rules.yaml\n\n"
        "the rules file (YAML or JSON) holds MEC 011 rules as an AppD would:\n"
        "  trafficRules:\n  - {trafficRuleId: r1, filterType: FLOW, priority: 5, action: DROP, state: ACTIVE,\n"
        "     trafficFilter: [{dstAddress: [198.18.100.1/32], protocol: [TCP], dstPort: ['80']}]}\n"
        "  dnsRules: []\n\n"
        "the app then gets a token with: curl -u CLIENT_ID:SECRET -d grant_type=client_credentials TOKEN_ENDPOINT",
    )
    q.add_argument("app_instance_id", metavar="ID", help="app instance id: 1-128 of A-Z a-z 0-9 . _ ~ -")
    q.add_argument("--name", default="", help="appName")
    q.add_argument("--provider", default="", help="appProvider")
    q.add_argument("--no-confirm-ready", action="store_true",
                   help="enforce its rules at once, without waiting for confirm_ready (default: apps.confirm_ready_required)")
    q.add_argument("--graceful-timeout", type=int, metavar="S",
                   help="seconds it gets to confirm termination (default: apps.graceful_timeout_s)")
    q.add_argument("--rules", metavar="FILE", help="its traffic and DNS rules (YAML/JSON: trafficRules, dnsRules)")
    add_app_cmd("list", "list app instances: state, rules, services, client id", cmd_app_list,
                "examples:\n  mep app list\n  mep app list --json")
    q = add_app_cmd(
        "terminate", "terminate an app instance gracefully: notify it, wait for it, remove its rules and services",
        cmd_app_terminate,
        "examples:\n  mep app terminate video-1\n  mep app terminate video-1 --wait   (until TERMINATED)",
    )
    q.add_argument("app_instance_id", metavar="ID")
    q.add_argument("--wait", action="store_true", help="wait until it is TERMINATED and its rules are gone")
    q.set_defaults(wait_slack=5.0)
    q = add_app_cmd("credentials", "issue new Mp1 credentials for an app instance (the old ones stop working)",
                    cmd_app_credentials, "examples:\n  mep app credentials video-1")
    q.add_argument("app_instance_id", metavar="ID")
    p = add("notifications", "show the notification delivery log: callbacks, outcomes, retries", cmd_notifications,
            [daemon], "examples:\n  mep notifications\n  mep notifications --app video-1 --status failed -v\n\n"
            "statuses: pending, delivered, failed, dropped, abandoned")
    p.add_argument("--app", metavar="ID", help="only deliveries to this app instance")
    p.add_argument("--status", choices=["pending", "delivered", "failed", "dropped", "abandoned"])
    p.add_argument("-n", "--limit", type=int, default=20, metavar="N", help="newest N (default 20)")
    add("version", "print the version", cmd_version, [verbose], "examples:\n  mep version -v")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mep`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return run_command("mep", func, args)


def run_command(prog: str, func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command of ``prog`` (mep, mepm): a MepError becomes one line on stderr and the exit
    status (2: bad input or configuration, 1: anything else); Ctrl-C is 130."""
    try:
        return func(args)
    except (ConfigError, InvalidInput) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MepError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
