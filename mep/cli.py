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
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Sequence

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
  mep stats                           packets and bytes per verdict, reason, rule
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
    from .daemon import run  # imported here: the inspection commands stay fast

    if args.verbose:
        config = config.model_copy(update={"log": config.log.model_copy(update={"level": "debug"})})
    return asyncio.run(run(config))


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
    from .doctor import daemon_summary, format_check, run_checks

    config = load_config(args.config)
    failed = 0
    for check in run_checks(config):
        print(format_check(check), flush=True)
        failed += check.ok is False
    summary = daemon_summary(config)
    if args.verbose:
        print(summary or f"daemon: none answers on {config.admin_socket}")
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
        return EXIT_OK
    _table([(v, c["packets"], c["bytes"]) for v, c in st["verdicts"].items()], ("VERDICT", "PACKETS", "BYTES"))
    print()
    _table([(r, c["packets"], c["bytes"]) for r, c in st["reasons"].items()], ("REASON", "PACKETS", "BYTES"))
    rules = sorted(st["rules"].items(), key=lambda kv: -kv[1]["packets"])
    if rules:
        print()
        shown = rules if args.verbose else rules[:_TOP_RULES]
        _table([(r, c["packets"], c["bytes"]) for r, c in shown], ("RULE", "PACKETS", "BYTES"))
        if len(shown) < len(rules):
            print(f"(top {len(shown)} of {len(rules)} rules by packets; -v shows all)")
    return EXIT_OK


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

    add("doctor", "check this machine for the data plane: kernel, BTF, bcc, XDP attach, test-run, store", cmd_doctor,
        [verbose, conf], "examples:\n  mep doctor\n  mep doctor -c /etc/mep/mep.yaml   (checks its store too)\n\n"
        "exit status: 0 if every check is OK or n/a, 1 otherwise; needs root for the BPF checks")
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
    add("version", "print the version", cmd_version, [verbose], "examples:\n  mep version -v")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mep`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ConfigError, InvalidInput) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except MepError as exc:
        _err(str(exc))
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
