"""How does the Cython engine's per-packet cost grow with the number of rules, against XDP and the reference?

Method: for each rule count N (1, 10, 100, 1k, 10k; bench/rulegen.py's mix,
all DROP) 4096 distinct flows whose first matching rule lies in the top 1%,
the middle 1% or the bottom 1% of the match order, or that match nothing
(bench/xdp_rules.flows), their frames in one buffer. Every flow's verdict
and rule are checked against the classifier model (tables.lookup), and the
first 64 against the reference engine, verdict, rule and output bytes,
before anything is timed. fastpath: Core.batch, the I/O loop's run_batch
(parse, flow-state check, classification, action, counters) in batches of
256, R passes over the buffer, process pinned to CPU 1; ns/pkt above the
floor, a loop that only touches each frame's first and last byte, timed the
same way in the same run. Two cache modes, as for XDP: "warm" (the
classification cache holds every flow after the first pass) and "new flow"
(the cache holds 1024 entries, so 4096 flows in a cycle always miss: every
packet is classified and inserted). Rule sets of under 3 vector words (N = 1,
10) never use the cache. xdp: the MEP XDP program (warm, and built with
-DMEP_BENCH_NEW_FLOWS), BPF_PROG_TEST_RUN repeat mode on the same frames,
ns/pkt above an XDP_DROP program, as in bench/xdp_rules.py, in the same run.
reference: ReferenceEngine.process on as many of the flows as fit 2 s, one
pass (it is the spec, never tuned). hit_pct: the timed passes' cache hits
("-": the rule set classifies without the cache). Each fastpath and XDP
point is the median of --rounds measurements (3; with one, this VM's noisy
seconds put single points at 2-3x their neighbours).

Examples:
    python -m bench.fastpath_rules                     # full run (about 5 minutes)
    python -m bench.fastpath_rules --no-xdp --flows 1024 --counts 1 100 10000
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import time
import uuid
from array import array
from pathlib import Path
from typing import Any, Optional

from bench._harness import RESULTS, Report, pinned_cpu, progress, rcu_expedited
from bench.rulegen import generate_rules
from bench.xdp_rules import flows
from mep.config import Capacity, Config, DataplaneConfig
from mep.dataplane import _fastpath
from mep.dataplane.engine import Output
from mep.dataplane.fastpath import FastpathEngine
from mep.dataplane.reasons import Verdict
from mep.dataplane.reference import ReferenceEngine
from mep.dataplane.ruleset import CompiledRuleSet
from mep.dataplane.tables import build_tables

QUICK_ARGS = ["--counts", "1", "100", "10000", "--flows", "2048", "--repeat", "20", "--xdp-repeat", "50", "--rounds", "1"]
POSITIONS = ("top", "middle", "bottom", "none")
N6_PORT = [{"name": "n6", "ifname": "n6", "role": "n6", "mac": "02:00:00:00:06:01"}]


class Frames:
    """Flows' frames in one buffer, with the offsets, lengths and ingress arrays Core.batch takes."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.buf = b"".join(frames)
        self.offsets = array("I")
        at = 0
        for f in frames:
            self.offsets.append(at)
            at += len(f)
        self.lengths = array("I", [len(f) for f in frames])
        self.ingress = array("B", [1] * len(frames))


def fastpath_engine(capacity: Capacity, flows_capacity: int) -> FastpathEngine:
    cap = Capacity(rules=capacity.rules, filters=capacity.filters, flows=flows_capacity)
    return FastpathEngine(Config(dataplane=DataplaneConfig(ports=N6_PORT, capacity=cap)), io=False)


def check(rs: CompiledRuleSet, engine: FastpathEngine, frames: list[tuple[bytes, int]]) -> None:
    """Verdict and rule of every flow against the model; the first 64 against the reference, bytes included."""
    ref = ReferenceEngine()
    ref.apply(rs)
    for i, (frame, index) in enumerate(frames):
        got = engine.process(frame, 1)
        want_rule = 0 if index < 0 else rs.rules[index].rule_id
        want_verdict = Verdict.PASS if index < 0 else Verdict.DROP
        assert (got.verdict, got.rule_id) == (want_verdict, want_rule), (i, got)
        if i < 64:
            r = ref.process(frame, 1)
            assert (r.verdict, r.reason, r.rule_id, r.outputs) == (got.verdict, got.reason, got.rule_id, got.outputs)
            assert got.outputs == ((Output(0, frame),) if index < 0 else ())


def time_fastpath(engine: FastpathEngine, f: Frames, repeat: int, want: dict[int, int]) -> float:
    engine._core.batch(f.buf, f.offsets, f.lengths, f.ingress, 1)  # warm: caches filled, pages touched
    ns, counts = engine._core.batch(f.buf, f.offsets, f.lengths, f.ingress, repeat)
    assert counts == want, (counts, want)
    return float(ns) / repeat / len(f.frames)


def time_floor(f: Frames, repeat: int) -> float:
    ns, _ = _fastpath.touch(f.buf, f.offsets, f.lengths, repeat)
    return ns / repeat / len(f.frames)


def time_reference(rs: CompiledRuleSet, frames: list[bytes], budget_s: float = 2.0) -> tuple[float, int]:
    ref = ReferenceEngine()
    ref.apply(rs)
    done, start = 0, time.perf_counter()
    while done < len(frames) and (done < 16 or time.perf_counter() - start < budget_s):
        ref.process(frames[done], 1)
        done += 1
    return (time.perf_counter() - start) * 1e9 / done, done


class Xdp:
    """The MEP XDP program in both cache modes, and the XDP_DROP floor, measured with test-run."""

    def __init__(self, capacity: Capacity) -> None:
        from bcc import BPF

        from mep.dataplane.xdp import XdpEngine
        from tests.fixtures.netns import make_ports_netns

        self.pin_root = Path("/sys/fs/bpf") / f"mep-fpbench-{os.getpid()}"
        self.namespaces: list[str] = []
        self.engines: dict[str, Any] = {}
        floor = BPF(text=b"#include <uapi/linux/bpf.h>\nint floor(struct xdp_md *ctx) { return XDP_DROP; }")
        self.floor_fd = floor.load_func(b"floor", BPF.XDP).fd
        self._floor = floor
        for mode, extra in (("warm", ()), ("new flow", ("-DMEP_BENCH_NEW_FLOWS=1",))):
            progress(f"loading the XDP program ({mode})")
            config = Config(instance="fp-" + mode.replace(" ", "-"), dataplane=DataplaneConfig(
                ports=N6_PORT, capacity=capacity, pin_root=self.pin_root))
            self.namespaces.append(make_ports_netns(f"mep-fpb-{uuid.uuid4().hex[:6]}"))
            self.engines[mode] = XdpEngine(config, netns=self.namespaces[-1], extra_cflags=extra)

    def measure(self, mode: str, rs: CompiledRuleSet, frames: list[tuple[bytes, int]], repeat: int) -> float:
        from bench.xdp_rules import measure
        from mep.dataplane.links import in_netns
        from mep.dataplane.testrun import prog_test_run

        engine = self.engines[mode]
        ns = self.namespaces[list(self.engines).index(mode)]
        engine.apply(rs)
        for frame, index in frames[:32]:
            got = engine.process(frame, 1)
            assert got.rule_id == (0 if index < 0 else rs.rules[index].rule_id), got
        engine.apply(rs)  # a fresh generation: nothing cached from the checks, no metadata
        ifindex = engine._port_ifindex[1]
        with in_netns(ns):
            if mode == "new flow":  # fill the LRU so that every insert evicts
                for frame, _ in frames[:64]:
                    prog_test_run(engine._xdp_fn.fd, frame, ingress_ifindex=ifindex, repeat=1100)
            floor = measure(self.floor_fd, frames, ifindex, repeat)
            took = measure(engine._xdp_fn.fd, frames, ifindex, repeat)
        return took - floor

    def close(self) -> None:
        from tests.fixtures.netns import remove_netns

        for engine in self.engines.values():
            engine.detach(unpin=True)
            engine.close()
        self._floor.cleanup()
        shutil.rmtree(self.pin_root, ignore_errors=True)
        for ns in self.namespaces:
            remove_netns(ns)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100, 1000, 10000])
    ap.add_argument("--flows", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=100, help="passes over the flows (fastpath, floor)")
    ap.add_argument("--xdp-repeat", type=int, default=200, help="test-run repeats per flow (XDP)")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per point, fastpath and XDP: the median")
    ap.add_argument("--no-xdp", action="store_true", help="leave out the XDP comparison")
    ap.add_argument("--cpu", type=int, default=1)
    args = ap.parse_args(argv)
    if args.flows < 2048:
        ap.error("--flows must be at least 2048: fewer fit the new-flow mode's 1024-entry cache")
    from tests.rulesets import ruleset

    report = Report(
        "fastpath_rules",
        "How does the Cython engine's per-packet cost grow from 1 to 10,000 rules, against XDP and the reference?",
        __doc__.split("\n\n")[1].replace("\n", " "),
        ["cache", "rules", "filters", "position", "flows", "hit_pct", "floor_ns", "fastpath_ns", "xdp_ns",
         "reference_ns", "x_reference", "vs_xdp"],
    )
    capacity = Capacity(rules=max(args.counts) + 16, filters=min(32768, max(64, 2 * max(args.counts) // 64 * 64)),
                        flows=65536)
    xdp: Optional[Xdp] = None
    plot_rows: list[dict[str, Any]] = []
    try:
        if not args.no_xdp:
            xdp = Xdp(capacity)
        with rcu_expedited() if xdp else contextlib.nullcontext(), pinned_cpu(args.cpu):
            for n in args.counts:
                rs = ruleset(generate_rules(n, seed=n), capacity=capacity)
                tables = build_tables(rs)
                reference_ns: dict[str, tuple[float, int]] = {}
                for mode, cache_entries in (("warm", 65536), ("new flow", 1024)):
                    engine = fastpath_engine(capacity, cache_entries)
                    engine.apply(rs)
                    for position in POSITIONS if n > 1 else ("top", "none"):
                        picked = flows(rs, tables, position, args.flows, seed=n)
                        if not picked:
                            continue
                        progress(f"{n} rules, {position}, {mode}: checking {len(picked)} flows")
                        check(rs, engine, picked)
                        f = Frames([frame for frame, _ in picked])
                        want = {int(Verdict.PASS if position == "none" else Verdict.DROP): len(picked)}
                        hits0, misses0, _ = engine._core.cache_stats
                        floors, tooks = [], []
                        for _ in range(args.rounds):
                            floors.append(time_floor(f, args.repeat))
                            tooks.append(time_fastpath(engine, f, args.repeat, want) - floors[-1])
                        floor, took = statistics.median(floors), statistics.median(tooks)
                        hits, misses, _ = engine._core.cache_stats
                        hits, misses = hits - hits0, misses - misses0
                        if position not in reference_ns:
                            reference_ns[position] = time_reference(rs, f.frames)
                        ref_ns, ref_frames = reference_ns[position]
                        xdp_ns = (statistics.median(xdp.measure(mode, rs, picked, args.xdp_repeat)
                                                    for _ in range(args.rounds)) if xdp else None)
                        row = dict(cache=mode, rules=n, filters=tables.nfilters, position=position, flows=len(picked),
                                   hit_pct="-" if not hits + misses else round(100 * hits / (hits + misses), 1),
                                   floor_ns=round(floor, 1), fastpath_ns=round(took, 1),
                                   xdp_ns="" if xdp_ns is None else round(xdp_ns, 1),
                                   reference_ns=round(ref_ns), x_reference=round(ref_ns / took),
                                   vs_xdp="" if xdp_ns is None else round(took / xdp_ns, 2))
                        report.add(**row)
                        plot_rows += [dict(rules=n, ns=took, series=f"fastpath, {mode}")]
                        if xdp_ns is not None:
                            plot_rows.append(dict(rules=n, ns=xdp_ns, series=f"xdp, {mode}"))
                        if mode == "warm":
                            plot_rows.append(dict(rules=n, ns=ref_ns, series="reference"))
                        progress(f"  fastpath {took:.0f} ns above the floor ({floor:.1f}); cache hits {hits}, "
                                 f"misses {misses}; xdp {xdp_ns if xdp_ns is None else round(xdp_ns)}; reference "
                                 f"{ref_ns:,.0f} ns ({ref_frames} frames)")
    finally:
        if xdp is not None:
            xdp.close()
    summarise(report, args.counts)
    means: dict[tuple[str, int], list[float]] = {}
    for r in plot_rows:
        means.setdefault((r["series"], r["rules"]), []).append(r["ns"])
    report.write(plot={"x": "rules", "y": "ns", "series": "series", "logx": True, "logy": True,
                       "title": "ns/pkt (mean over match positions): fastpath and XDP above their floors",
                       "ylabel": "ns per packet"},
                 plot_rows=[dict(series=s, rules=n, ns=statistics.fmean(v)) for (s, n), v in means.items()])
    print((RESULTS / "fastpath_rules.md").read_text())


def summarise(report: Report, counts: list[int]) -> None:
    """The issue's targets, stated against what was measured."""
    rows = report.rows
    for mode in ("warm", "new flow"):
        mine = [r for r in rows if r["cache"] == mode]
        if not mine:
            continue
        worst_1k = max((r["fastpath_ns"] for r in mine if r["rules"] == 1000), default=None)
        if worst_1k is not None:
            report.notes.append(f"{mode}: at 1,000 rules {worst_1k:.0f} ns/pkt at worst over positions "
                                f"(target <= 100: {'met' if worst_1k <= 100 else 'NOT met'})")
        ratios = [r["vs_xdp"] for r in mine if r["vs_xdp"] != ""]
        if ratios:
            report.notes.append(f"{mode}: fastpath / XDP from {min(ratios):.2f}x to {max(ratios):.2f}x over all N "
                                f"and positions (target <= 2x: {'met' if max(ratios) <= 2 else 'NOT met'})")
        speedup = [r["x_reference"] for r in mine]
        report.notes.append(f"{mode}: {min(speedup):,}x to {max(speedup):,}x the reference engine "
                            f"(target >= 50x: {'met' if min(speedup) >= 50 else 'NOT met'})")


if __name__ == "__main__":
    main()
