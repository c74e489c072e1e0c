"""The ``upf-sim`` command: the simulated gNB/UEs and UPF of the test topology, and its traffic generator.

Subcommands (docs/upf_sim.md has the details):

- ``lab``: build the DESIGN.md section 7 topology, run the UPF and gNB in
  it, send a flow mix from the UEs, print what each side counted, tear down;
- ``upf`` / ``gnb``: run the UPF (or gNB) on existing interfaces of a
  namespace until Ctrl-C, printing counters;
- ``send``: generate uplink G-PDUs from a namespace's N3 port;
- ``sessions``: validate and print a session table;
- ``frame``: print the template G-PDU of each class of a mix (hex), for
  tshark or scapy;
- ``version``.

Exit status: 0 done; 1 a run failed or lost packets it should not have;
2 usage error or bad input (a session table error names its field).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from importlib.metadata import version
from ipaddress import IPv4Address
from typing import Callable, Optional, Sequence

from mep.cli import run_command
from mep.errors import InvalidInput

from .sessions import DEFAULT_QFI, FIRST_TEID_DL, FIRST_TEID_UL, MAX_SESSIONS, SessionTable
from .topology import ADDR
from .traffic import DEFAULT_DPORT, DEFAULT_FIRST_PORT, FlowMix, SendResult

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

_EPILOG = f"""\
examples:
  upf-sim lab --ues 100 --mix udp/imix --rate 200000 --seconds 5
  upf-sim lab --ues 16 --mix udp/64:8,tcp/64:1,icmp/64:1 --packets 1000000
  upf-sim sessions --ues 4 --yaml > sessions.yaml
  upf-sim sessions --sessions sessions.yaml
  upf-sim upf --netns mep-upf-1a2b3c --sessions sessions.yaml
  upf-sim gnb --netns mep-ran-1a2b3c --sessions sessions.yaml
  upf-sim send --netns mep-ran-1a2b3c --sessions sessions.yaml --rate 100000 --seconds 10
  upf-sim frame --ues 1 --mix udp/64,icmp/64 | cut -c1-60

a session table is --sessions FILE (YAML, docs/upf_sim.md) or --ues N
(N sessions from {ADDR.sim_first_ue}, TEIDs from {FIRST_TEID_UL:#x} up, {FIRST_TEID_DL:#x} down);
a mix is PROTO[/SIZE][:WEIGHT],... with PROTO udp|tcp|icmp, SIZE 64..1518
(Ethernet frame with FCS, on N6) or imix (64:7,570:4,1518:1).
"""


def _sessions_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sessions", metavar="FILE", help="session table (YAML)")
    g.add_argument("--ues", type=int, metavar="N", help=f"N generated sessions (1..{MAX_SESSIONS}; default 4)")
    p.add_argument("--first-ue", default=ADDR.sim_first_ue, help="with --ues: the first UE address")
    p.add_argument("--qfi", type=int, default=DEFAULT_QFI, help="with --ues: the QFI (default %(default)s)")


def _table(args: argparse.Namespace) -> SessionTable:
    if args.sessions:
        return SessionTable.load(args.sessions)
    ues = args.ues if args.ues is not None else 4
    if not 1 <= ues <= MAX_SESSIONS:
        raise InvalidInput(f"--ues is 1..{MAX_SESSIONS}", field="--ues")
    return SessionTable.generate(ues, first_ue=args.first_ue, qfi=args.qfi)


def _traffic_args(p: argparse.ArgumentParser, *, seconds: float) -> None:
    p.add_argument("--mix", default="udp/64", help="flow mix (default %(default)s)")
    p.add_argument("--rate", type=int, help="packets per second (default: as fast as it goes)")
    p.add_argument("--seconds", type=float, default=seconds, help="how long (default %(default)s)")
    p.add_argument("--packets", type=int, help="stop after this many (before --seconds if sooner)")
    p.add_argument("--flows", type=int, default=1, help="flows (source ports) per UE (default 1)")
    p.add_argument("--dst", default=ADDR.server, help="where the UEs send (default %(default)s)")
    p.add_argument("--dport", type=int, default=DEFAULT_DPORT, help="UDP/TCP destination port (default %(default)s)")


def _print(lines: Sequence[str]) -> None:
    print("\n".join(lines), flush=True)


def _progress(result: SendResult) -> None:
    print(f"  ... {result.packets:,} sent, {result.pps:,.0f} pps", file=sys.stderr, flush=True)


# -- commands ---------------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    """upf-sim sessions: validate a table and print it."""
    table = _table(args)
    if args.yaml:
        import yaml

        print(yaml.safe_dump(table.to_dict(), sort_keys=False), end="")
        return EXIT_OK
    print(f"{len(table)} sessions; gNB {table.gnb}, UPF {table.upf} (N3)")
    print(f"  {'#':>5} {'UE':<15} {'TEID UL':>10} {'TEID DL':>10} {'QFI':>3}")
    for s in table.sessions if args.verbose else table.sessions[:16]:
        print(f"  {s.index:>5} {str(s.ue):<15} {s.teid_ul:>#10x} {s.teid_dl:>#10x} {s.qfi:>3}")
    if not args.verbose and len(table) > 16:
        print(f"  ... {len(table) - 16} more (-v shows all)")
    return EXIT_OK


def cmd_frame(args: argparse.Namespace) -> int:
    """upf-sim frame: the template G-PDU of each class, one hex line each."""
    from .traffic import g_pdu, user_packet

    table, mix = _table(args), FlowMix.parse(args.mix)
    first = table.sessions[0]
    for flow in mix.classes:
        user = user_packet(flow.proto, flow.size, first.ue, _ip(args.dst), DEFAULT_FIRST_PORT, args.dport)
        frame = g_pdu(table, first, user, gnb_mac=bytes.fromhex(ADDR.gnb_mac.replace(":", "")),
                      upf_mac=bytes.fromhex(ADDR.upf_n3_mac.replace(":", "")))
        print(f"{flow.label} {frame.hex()}" if args.verbose else frame.hex())
    return EXIT_OK


def _ip(text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except ValueError:
        raise InvalidInput(f"'{text}' is not an IPv4 address", field="--dst") from None


def _until_interrupted(interval: float, report: Callable[[], None]) -> None:
    """Call ``report`` every ``interval`` seconds until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(interval):
        report()


def cmd_upf(args: argparse.Namespace) -> int:
    """upf-sim upf: the UPF on existing ports until Ctrl-C."""
    from .counters import format_counters
    from .upf import Upf

    table = _table(args)
    with Upf(table, netns=args.netns, n3=args.n3, n6=args.n6, xdp_mode=args.xdp_mode) as upf:
        print(f"UPF in {args.netns or 'this namespace'}: N3 {args.n3} ({upf.modes[args.n3]} XDP, {table.upf}), "
              f"N6 {args.n6} ({upf.modes[args.n6]} XDP), {len(table)} sessions; Ctrl-C stops", flush=True)
        _until_interrupted(args.interval, lambda: _print(format_counters("UPF", upf.counters(), table, sessions=0)))
        _print(format_counters("UPF", upf.counters(), table, sessions=-1 if args.verbose else 8,
                               verbose=args.verbose))
    return EXIT_OK


def cmd_gnb(args: argparse.Namespace) -> int:
    """upf-sim gnb: the gNB (and its UEs' addresses) on an existing N3 port until Ctrl-C."""
    from .counters import format_counters
    from .gnb import Gnb

    table = _table(args)
    with Gnb(table, netns=args.netns, n3=args.n3, ue_stack=not args.no_ue_stack, xdp_mode=args.xdp_mode) as gnb:
        print(f"gNB in {args.netns or 'this namespace'}: N3 {args.n3} ({gnb.mode} XDP + TC egress, {table.gnb}), "
              f"{len(table)} UEs{'' if args.no_ue_stack else ' with addresses on lo'}; Ctrl-C stops", flush=True)
        _until_interrupted(args.interval, lambda: _print(format_counters("gNB", gnb.counters(), table, sessions=0)))
        _print(format_counters("gNB", gnb.counters(), table, sessions=-1 if args.verbose else 8,
                               verbose=args.verbose))
    return EXIT_OK


def cmd_send(args: argparse.Namespace) -> int:
    """upf-sim send: generated uplink G-PDUs out of an N3 port."""
    from .traffic import Generator

    table, mix = _table(args), FlowMix.parse(args.mix)
    with Generator(table, netns=args.netns, n3=args.n3, dst=str(_ip(args.dst)), dport=args.dport,
                   flows=args.flows) as gen:
        print(f"sending {mix} from {len(table)} UEs x {args.flows} flows to {args.dst}:{args.dport} "
              f"(live frames; generator parked in {gen.xdp_mode} XDP)", flush=True)
        result = gen.run(mix, rate=args.rate, seconds=args.seconds, packets=args.packets,
                         tick=_progress if args.verbose else None)
    _print(result.lines())
    return EXIT_OK


def cmd_lab(args: argparse.Namespace) -> int:
    """upf-sim lab: topology, UPF, gNB, a traffic run, counters, teardown."""
    from mep.dataplane.links import in_netns
    from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE, ProbeProgram

    from .counters import format_counters
    from .gnb import Gnb
    from .topology import Topology
    from .traffic import Generator
    from .upf import Upf

    table, mix = _table(args), FlowMix.parse(args.mix)
    started = time.monotonic()
    with Topology() as topo:
        # No MEP here: its N6 end passes frames to the kernel, which routes them to the DN.
        probe = ProbeProgram.load()
        try:
            with in_netns(topo.ns("mep")):
                probe.attach("n6", XDP_FLAGS_DRV_MODE)
            with Upf(table, netns=topo.ns("upf")) as upf, \
                    Gnb(table, netns=topo.ns("ran"), ue_stack=False) as gnb, \
                    Generator(table, netns=topo.ns("ran"), dst=str(_ip(args.dst)), dport=args.dport,
                              flows=args.flows) as gen:
                print(f"lab {topo.tag}: UPF {upf.modes} XDP in {topo.ns('upf')}, gNB {gnb.mode} XDP in "
                      f"{topo.ns('ran')}; {len(table)} sessions; set up in {time.monotonic() - started:.1f} s",
                      flush=True)
                result = gen.run(mix, rate=args.rate, seconds=args.seconds, packets=args.packets,
                                 tick=_progress if args.verbose else None)
                time.sleep(0.2)  # frames still in flight reach the counters
                _print(result.lines())
                upf_counts = upf.counters()
                _print(format_counters("UPF", upf_counts, table, sessions=-1 if args.verbose else 4,
                                       verbose=args.verbose))
                _print(format_counters("gNB", gnb.counters(), table, sessions=0, verbose=args.verbose))
        finally:
            probe.close()
    received = upf_counts.total("ul").packets
    lost = result.packets - received
    print(f"the UPF decapsulated {received:,} of {result.packets:,} G-PDUs sent"
          + (f": {lost:,} lost" if lost else ", none lost"))
    return EXIT_OK if lost == 0 or args.allow_loss else EXIT_FAIL


# -- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``upf-sim`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="upf-sim",
        description="Simulated 5G gNB/UEs and UPF (GTP-U N3 <-> N6, in XDP) and an uplink traffic generator.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="every session, progress lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="every session, progress lines")
        _sessions_args(p)

    p = sub.add_parser("lab", help="topology + UPF + gNB + a traffic run, then teardown",
                       epilog="example: upf-sim lab --ues 100 --mix udp/imix --rate 200000 --seconds 5",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    _traffic_args(p, seconds=3.0)
    p.add_argument("--allow-loss", action="store_true", help="exit 0 even if the UPF counted fewer than were sent")
    p.set_defaults(func=cmd_lab)

    for name, func, what in (("upf", cmd_upf, "the UPF on existing N3 and N6 ports until Ctrl-C"),
                             ("gnb", cmd_gnb, "the gNB and its UEs on an existing N3 port until Ctrl-C")):
        p = sub.add_parser(name, help=what, epilog=f"example: upf-sim {name} --netns mep-{name}-1a2b3c --ues 4")
        common(p)
        p.add_argument("--netns", help="network namespace of the ports (default: this one)")
        p.add_argument("--n3", default="n3", help="the N3 port (default %(default)s)")
        if name == "upf":
            p.add_argument("--n6", default="n6", help="the N6 port (default %(default)s)")
        else:
            p.add_argument("--no-ue-stack", action="store_true", help="do not give the namespace the UE addresses")
        p.add_argument("--xdp-mode", choices=("auto", "native", "generic"), default="auto")
        p.add_argument("--interval", type=float, default=5.0, help="seconds between counter lines (default 5)")
        p.set_defaults(func=func)

    p = sub.add_parser("send", help="send generated uplink G-PDUs out of an N3 port",
                       epilog="example: upf-sim send --netns mep-ran-1a2b3c --ues 100 --rate 100000 --seconds 10")
    common(p)
    p.add_argument("--netns", help="network namespace of the N3 port (default: this one)")
    p.add_argument("--n3", default="n3", help="the N3 port (default %(default)s)")
    _traffic_args(p, seconds=5.0)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("sessions", help="validate a session table and print it",
                       epilog="example: upf-sim sessions --ues 1000 --yaml > sessions.yaml")
    common(p)
    p.add_argument("--yaml", action="store_true", help="print it as YAML, one entry per session")
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("frame", help="print each class's template G-PDU as hex",
                       epilog="example: upf-sim frame --mix udp/64 | xxd -r -p | od -Ax -tx1 | head")
    common(p)
    p.add_argument("--mix", default="udp/64", help="flow mix (default %(default)s)")
    p.add_argument("--dst", default=ADDR.server)
    p.add_argument("--dport", type=int, default=DEFAULT_DPORT)
    p.set_defaults(func=cmd_frame)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``upf-sim`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"upf-sim {version('mep')}")
        return EXIT_OK
    func: Optional[Callable[[argparse.Namespace], int]] = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_OK if args.command is None else EXIT_USAGE
    return run_command("upf-sim", func, args)


if __name__ == "__main__":
    sys.exit(main())
