"""How does the XDP classifier's per-packet cost grow with the number of rules?

Method: BPF_PROG_TEST_RUN of the loaded MEP program, repeat mode (R runs per
flow, rcu_expedited for the run), process pinned to CPU 1. For each rule
count N (1, 10, 100, 1k, 10k; bench/rulegen.py's mix, all DROP), 4096
distinct flows whose first matching rule lies in the top 1%, the middle 1%
or the bottom 1% of the match order, or that match nothing. Each flow's
verdict and rule are checked against the reference classifier before it is
timed. Three cache modes: "warm" (the flow cache hits after the first run
of a flow), "no cache" (the program built with -DMEP_BENCH_NO_CACHE: the
tables classify every packet and nothing is cached: the classifier alone,
inside the whole program) and "new flow" (built with -DMEP_BENCH_NEW_FLOWS:
every packet misses and writes its set of the full flow cache, evicting:
a new-flow flood). Reported: mean over flows of
ns/pkt, minus the floor (a program that only returns XDP_DROP, measured on
the same flows in the same run). Each point is measured in --rounds rounds
(5; each the floor, then the program), taken one round of every point at a
time, so that a point's rounds lie minutes apart; the round with the median net cost
is reported, min_net_ns is the least net cost of a round (the round least
disturbed: noise only adds), and spread_ns is the range of the rounds' net
costs: this VM has noisy minutes.

Examples:
    python -m bench.xdp_rules                 # full run (about 7 minutes)
    python -m bench.xdp_rules --flows 512 --repeat 100 --counts 1 100 10000
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import random
import shutil
import statistics
import uuid
from pathlib import Path
from typing import Any, Optional

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from bench._harness import Report, pinned_cpu, progress, rcu_expedited
from bench.rulegen import FREE_SERVERS, FREE_SOURCES, WELL_KNOWN, generate_rules
from mep.config import Capacity, Config, DataplaneConfig
from mep.dataplane.packet import Parsed, parse
from mep.dataplane.ruleset import CompiledFilter, CompiledRuleSet
from mep.dataplane.tables import ClassifierTables, build_tables, lookup
from mep.dataplane.testrun import prog_test_run

POSITIONS = ("top", "middle", "bottom", "none")

_FLOOR_SOURCE = b"int floor(struct xdp_md *ctx) { return XDP_DROP; }"


def _pick(rng: random.Random, ranges: tuple[Any, ...], default: int) -> int:
    if not ranges:
        return default
    r = rng.choice(ranges)
    return rng.randint(r.lo, r.hi)


def flow_for(f: Optional[CompiledFilter], rng: random.Random) -> bytes:
    """A frame that filter ``f`` matches; with no filter, a random UE-to-server frame."""
    f = f or CompiledFilter()
    src = _pick(rng, f.src, int(FREE_SOURCES[rng.randrange(FREE_SOURCES.num_addresses)]))
    dst = _pick(rng, f.dst, int(FREE_SERVERS[rng.randrange(FREE_SERVERS.num_addresses)]))
    proto = rng.choice(f.protocols) if f.protocols else rng.choice([6, 17])
    sport = _pick(rng, f.sport, rng.randrange(1024, 65536))
    dport = _pick(rng, f.dport, rng.choice([p for p in range(1024, 1100) if p not in WELL_KNOWN]))
    tos = (f.dscp or 0) << 2
    l3 = IP(src=str(ipaddress.IPv4Address(src)), dst=str(ipaddress.IPv4Address(dst)), tos=tos)
    l4 = {6: TCP(sport=sport, dport=dport), 17: UDP(sport=sport, dport=dport),
          132: SCTP(sport=sport, dport=dport)}.get(proto, Raw(b""))
    if proto not in (6, 17, 132):
        l3.proto = proto
    return bytes(Ether(src="02:00:00:00:05:01", dst="02:00:00:00:06:01") / l3 / l4 / Raw(b"x" * 18))


def flows(rs: CompiledRuleSet, tables: ClassifierTables, position: str, count: int, seed: int) -> list[tuple[bytes, int]]:
    """``count`` distinct frames whose first match lies in ``position`` (and its rule index, -1 for none)."""
    rng = random.Random(seed)
    n = len(rs.rules)
    band = {"top": (0.0, 0.01), "middle": (0.495, 0.505), "bottom": (0.99, 1.0)}.get(position)
    out: dict[bytes, int] = {}
    tries = 0
    while len(out) < count and tries < count * 50:
        tries += 1
        if band is None:
            frame = flow_for(None, rng)
        else:
            lo, hi = int(band[0] * n), max(int(band[0] * n) + 1, int(band[1] * n))
            frame = flow_for(rng.choice(rs.rules[rng.randrange(lo, min(hi, n))].filters), rng)
        p = parse(frame)
        assert isinstance(p, Parsed)
        hit = lookup(tables, p)
        index = -1 if hit is None else hit[0]
        if band is None:
            if index == -1:
                out[frame] = -1
        elif int(band[0] * n) <= index < max(int(band[0] * n) + 1, int(band[1] * n)):
            out[frame] = index
    return list(out.items())


def median_net(runs: list[tuple[float, float]]) -> float:
    """The median of (program - floor) over measurement rounds of one point."""
    return statistics.median(t - f for f, t in runs)


def measure(fd: int, frames: list[tuple[bytes, int]], ifindex: int, repeat: int) -> float:
    """Mean over flows of the kernel's per-run nanoseconds."""
    return statistics.fmean(prog_test_run(fd, f, ingress_ifindex=ifindex, repeat=repeat).duration_ns
                            for f, _ in frames)


MODES = (("warm", ()), ("no cache", ("-DMEP_BENCH_NO_CACHE=1",)), ("new flow", ("-DMEP_BENCH_NEW_FLOWS=1",)))
# (mode, rule count or None for every count, ns above the floor): the targets
TARGETS = (("warm", None, 35), ("no cache", 1000, 60), ("no cache", 10000, 150), ("new flow", 10000, 300))


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    ap.add_argument("--flows", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--cpu", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5,
                    help="floor and program measured this many times per point; the median round is reported")
    args = ap.parse_args(argv)

    from bcc import BPF

    from mep.dataplane.links import in_netns
    from mep.dataplane.xdp import XdpEngine
    from tests.fixtures.netns import make_ports_netns, remove_netns
    from tests.rulesets import ruleset

    report = Report(
        "xdp_rules",
        "How does the XDP classifier's per-packet cost grow from 1 to 10,000 rules?",
        __doc__.split("\n\n")[1].replace("\n", " "),
        ["cache", "rules", "filters", "position", "flows", "ns_per_pkt", "floor_ns", "net_ns", "min_net_ns",
         "spread_ns"],
    )
    namespaces: list[str] = []
    pin_root = Path("/sys/fs/bpf") / f"mep-bench-{os.getpid()}"
    # The generator's mix has 1.3 filters a rule (12,991 at 10,000 rules).
    capacity = Capacity(rules=max(args.counts) + 16, filters=min(32768, max(64, 2 * max(args.counts) // 64 * 64)),
                        flows=65536)
    engines: dict[str, XdpEngine] = {}
    try:
        floor_bpf = BPF(text=b"#include <uapi/linux/bpf.h>\n" + _FLOOR_SOURCE)
        floor_fd = floor_bpf.load_func(b"floor", BPF.XDP).fd
        for mode, extra in MODES:
            progress(f"loading the XDP program ({mode})")
            config = Config(instance=mode.replace(" ", "-"), dataplane=DataplaneConfig(
                ports=[{"name": "n6", "ifname": "n6", "role": "n6", "mac": "02:00:00:00:06:01"}],
                capacity=capacity, pin_root=pin_root))
            namespaces.append(make_ports_netns(f"mep-bench-{uuid.uuid4().hex[:6]}"))
            engines[mode] = XdpEngine(config, netns=namespaces[-1], extra_cflags=extra)
        with rcu_expedited(), pinned_cpu(args.cpu):
            sets = []  # (rule count, rule set, filters, {position: its flows})
            for n in args.counts:
                rs = ruleset(generate_rules(n, seed=n), capacity=capacity)
                tables = build_tables(rs)
                positions = {position: flows(rs, tables, position, args.flows, seed=n)
                             for position in (POSITIONS if n > 1 else ("top", "none"))}
                sets.append((n, rs, tables.nfilters, {p: f for p, f in positions.items() if f}))
            runs: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
            # Round by round over every point, not a point's rounds back to back: this VM's slow spells last
            # minutes, and a point's rounds spread over the whole run rarely all fall into one.
            for rnd in range(1, args.rounds + 1):
                progress(f"round {rnd} of {args.rounds}")
                for n, rs, _, positions in sets:
                    for (mode, engine), ns in zip(engines.items(), namespaces):
                        engine.apply(rs)
                        ifindex = engine._port_ifindex[1]
                        for position, frames in positions.items():
                            if rnd == 1:
                                progress(f"{mode}: {n} rules, {position}: checking {len(frames)} flows")
                                for frame, index in frames[:256]:
                                    r = engine.process(frame, 1)
                                    want = 0 if index < 0 else rs.rules[index].rule_id
                                    assert r.rule_id == want and r.verdict.name in ("DROP", "PASS"), (n, position, r)
                                engine.apply(rs)  # a fresh generation: the checks leave nothing cached, no metadata
                            with in_netns(ns):
                                if mode == "new flow":  # fill the flow cache's sets so that every insert evicts
                                    for frame, _ in frames[:64]:
                                        prog_test_run(engine._xdp_fn.fd, frame, ingress_ifindex=ifindex, repeat=1100)
                                runs.setdefault((mode, n, position), []).append(
                                    (measure(floor_fd, frames, ifindex, args.repeat),
                                     measure(engine._xdp_fn.fd, frames, ifindex, args.repeat)))
                            floor, took = runs[(mode, n, position)][-1]
                            progress(f"  {mode}, {n} rules, {position}: {took - floor:.0f} ns above the floor "
                                     f"({floor:.0f} ns)")
            for n, _, filters, positions in sets:
                for mode in engines:
                    for position, frames in positions.items():
                        point = runs[(mode, n, position)]
                        floor, took = min(point, key=lambda r: abs(r[1] - r[0] - median_net(point)))
                        report.add(cache=mode, rules=n, filters=filters, position=position, flows=len(frames),
                                   ns_per_pkt=round(took, 1), floor_ns=round(floor, 1),
                                   net_ns=round(took - floor, 1), min_net_ns=round(min(t - f for f, t in point), 1),
                                   spread_ns=round(max(t - f for f, t in point) - min(t - f for f, t in point), 1))
    finally:
        for engine in engines.values():
            engine.detach(unpin=True)
            engine.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        for ns in namespaces:
            remove_netns(ns)
    rows = report.rows
    for mode in engines:
        flat = [r["net_ns"] for r in rows if r["cache"] == mode]
        if flat:
            report.notes.append(f"{mode}: {min(flat):.0f}..{max(flat):.0f} ns/pkt above the floor over all N and positions")
    for mode, n, limit in TARGETS:
        got = [r for r in rows if r["cache"] == mode and (n is None or r["rules"] == n)]
        if got:
            worst, least = max(r["net_ns"] for r in got), max(r["min_net_ns"] for r in got)
            report.notes.append(f"target {mode}{'' if n is None else f' at {n} rules'}, any position: <= {limit} ns; "
                                f"worst {worst:.0f} ns: {'met' if worst <= limit else 'NOT met'} (worst of the "
                                f"least-disturbed rounds {least:.0f} ns: {'met' if least <= limit else 'NOT met'})")
    for row in rows:
        row["series"] = f"{row['cache']}, {row['position']}"
    report.write(plot={"x": "rules", "y": "net_ns", "series": "series", "title": "XDP classify ns/pkt above the floor",
                       "logx": True, "ylabel": "ns/pkt above XDP_DROP floor"})
    print((Path("bench/results") / "xdp_rules.md").read_text())


if __name__ == "__main__":
    main()
