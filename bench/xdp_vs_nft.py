"""XDP vs nftables vs no filter: packets per second and CPU-seconds per million packets.

Method: the lab topology (upf_sim/topology.py), one CPU for the MEP. The
MEP's end of the N6 veth runs threaded NAPI, its thread pinned to CPU 1: it
runs the XDP program, or the kernel's forwarding path with nftables, for
every frame, and nothing else runs on CPU 1 but the DN's receive of the
frames the MEP forwards (an XDP counter on the DN's end, in the softirq the
MEP's thread raises: the same for every filter, in the "none" row alone for
none). The generators run on CPU 0 (a DN receive thread there lost frames
to its ring while trafgen shared the CPU). The frames: UDP, 256 flows, from
FREE_SOURCES to FREE_SERVERS (bench/rulegen.py: no rule names them). Two
mixes: "forwarded" (no rule matches: every frame crosses the MEP to the DN)
and "dropped" (the last rule in match order, a DROP, matches every frame).
Five filters on the same rule set (bench/rulegen.py's mix plus that last
rule): none (kernel forwarding only), nftables (mep/dataplane/nftables.py's
emission, forward hook, one rule per filter in match order), "nftables
sets" (the same rule set at nftables' best: each run of equal verdicts as
concatenated interval set lookups, emit(sets=True)) and XDP (the MEP
program, native mode, on every port), twice: "xdp" with
dataplane.fib_forward (the frames it passes go to the DN from XDP, as the
kernel's FIB says) and "xdp, stack forwarding" without (the kernel forwards
them; forwarded mix only, the dropped one does not differ). For none and nftables a pass-only XDP
program sits on the MEP's ports, so every filter uses veth's NAPI receive.
Two generators: trafgen (netsniff-ng; every filter) and, for XDP, live
frames (bench/_livegen.py: BPF_PROG_TEST_RUN, ~10x trafgen's rate), which
cannot feed the kernel stack. A generator offers more than a filter on one
CPU can take, and veth drops the rest, so "handled" (frames the MEP's n6
received) over the run's seconds is the filter's rate on one CPU when
mep_busy (CPU 1's busy time, /proc/stat, over the run's seconds) is near 1.
mep_cpu_s_per_mpkt is CPU 1's busy time per million frames handled: the
cost of enforcing plus forwarding, with no generator in it; cpu_s_per_mpkt
is every CPU's busy time (/proc/stat) per million frames handled, generator
included. Checked per row: "forwarded" delivers every frame handled to the
DN, "dropped" none (but with no filter); for "xdp" every frame delivered
went from XDP (the FIB counters, mep_fib_counters), for the others none.
The whole sequence runs --rounds times: this VM's speed drifts by tens of
percent over minutes, so each ratio is taken within a round (rows minutes
apart at most) and the summary gives the median round's with every round's.

Examples:
    python -m bench.xdp_vs_nft          # 1000 rules, 5 rounds: 600k trafgen frames, 2 s of live frames a row
    python -m bench.xdp_vs_nft --rules 100 --packets 500000 --seconds 1 --rounds 1
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pyroute2 import IPRoute
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from bench._harness import Report, kernel_setting, pinned_cpu, progress, threaded_napi
from bench._livegen import N6Generator
from bench.rulegen import generate_rules
from mep.config import Capacity, Config, DataplaneConfig
from mep.dataplane.compiler import compile_ruleset
from mep.dataplane.links import in_netns
from mep.dataplane.nftables import emit
from mep.dataplane.reasons import FIB_SENT, Verdict
from mep.dataplane.reference import ReferenceEngine
from mep.dataplane.resolver import netlink_resolver
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE, ProbeProgram
from mep.models import TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredTrafficRule
from upf_sim.topology import ADDR, MEP_PORTS, Topology

_COUNTER = b"""
#include <uapi/linux/bpf.h>
BPF_PERCPU_ARRAY(received, u64, 1);
int count(struct xdp_md *ctx) {
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	u32 zero = 0;
	u64 *n;
	if (p + 38 > end || p[12] != 0x08 || p[13] != 0x00 || p[23] != 17)
		return XDP_PASS;
	n = received.lookup(&zero);
	if (n)
		*n += 1;
	return XDP_DROP;
}
"""

DROP_ALL_PORT = 7777
FORWARD_PORT = 9999  # no rule names it


def dn_counter(topo: Topology) -> Callable[[], int]:
    """Route the benchmark's server network to the DN and count what arrives there; returns the counter.

    An XDP program on the DN's end of the dn veth counts and drops the UDP
    frames (they go nowhere further); it goes with the topology.
    """
    from bcc import BPF

    with in_netns(topo.ns("mep")), IPRoute() as ipr:  # FREE_SERVERS: no rule names it
        ipr.route("add", dst="198.19.128.0/17", gateway=ADDR.dn_gw)
    counter = BPF(text=_COUNTER)
    with in_netns(topo.ns("dn")):
        counter.attach_xdp(b"eth0", counter.load_func(b"count", BPF.XDP), XDP_FLAGS_DRV_MODE)
    received = counter["received"]
    return lambda: sum(received.getvalue(ctypes.c_uint32(0)))


def cpu_ticks(cpu: Optional[int] = None) -> tuple[int, int]:
    """(busy, all) clock ticks so far of CPU ``cpu`` (None: of every CPU), from /proc/stat.

    Busy is user+nice+system+irq+softirq+steal; all adds idle and iowait.
    """
    user, nice, system, idle, iowait, irq, softirq, steal = stat_ticks(cpu)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def stat_ticks(cpu: Optional[int] = None) -> list[int]:
    """The clock-tick counters of CPU ``cpu`` (None: of every CPU) in /proc/stat, in its order (user first)."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == name:
            return [int(x) for x in fields[1:]]
    raise ValueError(f"no {name} line in /proc/stat")


def busy_cpu_seconds() -> float:
    """Busy time of all CPUs so far, in seconds."""
    return cpu_ticks()[0] / os.sysconf("SC_CLK_TCK")


def flow_frames(dport: int, flows: int) -> list[bytes]:
    """One UDP frame per flow, from FREE_SOURCES to FREE_SERVERS (bench/rulegen.py: no rule names them).

    Source ports 768..1023: rulegen's source-port ranges start at 1024, so
    only a rule on ``dport`` (or none) can match these flows.
    """
    return [bytes(Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac)
                  / IP(src=f"198.18.{128 + i // 250}.{1 + i % 250}", dst="198.19.128.1")
                  / UDP(sport=768 + i, dport=dport) / Raw(b"b" * 18))
            for i in range(flows)]


def trafgen_config(frames: list[bytes]) -> str:
    return "\n".join("{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }" for frame in frames) + "\n"


def check_verdicts(ruleset: Any, frames: list[bytes], rule: Optional[str]) -> None:
    """Every frame through the reference engine: matched by the rule named ``rule``, or by none (PASS).

    Run before anything is timed, so a row never measures a path other than the one it names.
    """
    engine = ReferenceEngine()
    engine.apply(ruleset)
    names = {r.rule_id: r.traffic_rule_id for r in ruleset.rules}
    for frame in frames:
        result = engine.process(frame)
        got = names.get(result.rule_id) if result.rule_id else None
        if got != rule or (rule is None and result.verdict is not Verdict.PASS):
            raise RuntimeError(f"a benchmark frame meets rule {got!r} ({result.verdict.name}, {result.reason.name}), "
                               f"not {rule!r}: the rule set or the flows are wrong")


def rules_for(n: int) -> list[dict[str, Any]]:
    rules = generate_rules(n - 1, seed=n)
    rules.append({"trafficRuleId": "last", "filterType": "PACKET", "priority": 255, "state": "ACTIVE",
                  "trafficFilter": [{"protocol": ["UDP"], "dstPort": [str(DROP_ALL_PORT)]}], "action": "DROP"})
    return rules


def compile_for(config: Config, netns: str, rules: list[dict[str, Any]]) -> Any:
    stored = tuple(StoredTrafficRule(app_instance_id="a", rule_id=i + 1, rule=TrafficRule.model_validate(r))
                   for i, r in enumerate(rules))
    snap = Snapshot(revision=1, apps={"a": AppInstance(appInstanceId="a", state=AppState.READY)},
                    traffic_rules=stored, dns_rules=())
    return compile_ruleset(snap, config=config.dataplane, resolver=netlink_resolver(config.dataplane, netns),
                           generation=1)


def send(topo: Topology, cfg_file: str, packets: int) -> float:
    """Run trafgen for ``packets`` frames on one CPU; returns the seconds it reports.

    trafgen now and then fails at start with EAGAIN flushing its TX ring
    (about one run in five here, before it reports any frame sent): that is
    retried, up to three times, and said.
    """
    for attempt in range(1, 4):
        out = topo.run("upf", ["trafgen", "--dev", "n6", "--conf", cfg_file, "--num", str(packets), "--cpus", "1",
                               "--no-sock-mem", "--notouch-irq"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "LC_ALL": "C"})
        if out.returncode == 0 or "Resource temporarily unavailable" not in out.stderr or attempt == 3:
            break
        progress(f"  trafgen: EAGAIN flushing its TX ring (attempt {attempt}), again in 0.5 s")
        time.sleep(0.5)
    if out.returncode != 0:
        raise RuntimeError(f"trafgen failed: {out.stderr.strip()[-400:]}")
    # "   0 sec, 202418 usec on CPU0 (200000 packets)"
    m = re.search(r"(\d+) sec, (\d+) usec on CPU", out.stdout + out.stderr)
    if m is None:
        raise RuntimeError(f"no timing in trafgen's output: {out.stdout[-300:]!r}")
    return int(m.group(1)) + int(m.group(2)) / 1e6


MEP_CPU, GENERATOR_CPU = 1, 0
STRAYS = 10  # n6 also receives the kernel's own frames (neighbour discovery): handled may exceed delivered by a few


def mep_cpu_seconds() -> float:
    """Busy time of the MEP's CPU so far (its NAPI thread, and the softirqs and ksoftirqd it hands work to)."""
    return cpu_ticks(MEP_CPU)[0] / os.sysconf("SC_CLK_TCK")
# "xdp": the MEP program with dataplane.fib_forward (what it passes goes to the DN from XDP);
# "xdp, stack forwarding": the same program leaving what it passes to the kernel's forwarding.
FILTERS = ("none", "nftables", "nftables sets", "xdp, stack forwarding", "xdp")


def rx_packets(netns: str, ifname: str) -> int:
    """Frames ``ifname`` in ``netns`` has received (veth counts every frame its NAPI takes, XDP_DROP too)."""
    with in_netns(netns), IPRoute() as ipr:
        (msg,) = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])
        return int(msg.get_attr("IFLA_STATS64")["rx_packets"])


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--packets", type=int, default=600_000, help="frames a trafgen row")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of a live-frames row")
    ap.add_argument("--rounds", type=int, default=5, help="times the whole sequence runs (ratios per round)")
    args = ap.parse_args(argv)
    from mep.dataplane.xdp import XdpEngine

    report = Report("xdp_vs_nft", "What does enforcing the rule set cost per packet in XDP, in nftables, and not at all?",
                    __doc__.split("\n\n")[1].replace("\n", " "),
                    ["round", "filter", "generator", "mix", "rules", "sent", "handled", "delivered", "seconds", "kpps",
                     "mep_busy", "mep_cpu_s_per_mpkt", "cpu_s_per_mpkt"])
    pin_root = Path("/sys/fs/bpf") / f"mep-nft-{os.getpid()}"
    # trafgen's socket holds every frame in the MEP's receive ring until the other CPU takes it: the
    # default send buffer (208 KiB) is full at ~256 frames and its sends fail with EAGAIN
    with tempfile.TemporaryDirectory(prefix="mep-nft-") as tmp, Topology() as topo, pinned_cpu(GENERATOR_CPU), \
            kernel_setting("/proc/sys/net/core/wmem_default", str(8 << 20)):
        workdir = Path(tmp)
        delivered = dn_counter(topo)
        config = Config(instance="nft", dataplane=DataplaneConfig(
            ports=MEP_PORTS, pin_root=pin_root,
            capacity=Capacity(rules=args.rules + 16, filters=4 * args.rules + 64, flows=65536)))
        rules = rules_for(args.rules)
        ruleset = compile_for(config, topo.ns("mep"), rules)
        mixes = {"forwarded": (FORWARD_PORT, None), "dropped": (DROP_ALL_PORT, "last")}
        trafgen_files: dict[str, Path] = {}
        live: dict[str, N6Generator] = {}
        engine: Optional[XdpEngine] = None
        probe = ProbeProgram.load()

        def fib_forwarded() -> int:
            fib = engine.counters().fib if engine is not None else {}
            return sum(fib[o].packets for o in FIB_SENT if o in fib)

        def row(rnd: int, filt: str, generator: str, mix: str) -> None:
            progress(f"round {rnd}: {filt}, {mix}, {generator}")
            h0, d0, c0, m0 = rx_packets(topo.ns("mep"), "n6"), delivered(), busy_cpu_seconds(), mep_cpu_seconds()
            f0 = fib_forwarded()
            if generator == "trafgen":
                sent, seconds = args.packets, send(topo, str(trafgen_files[mix]), args.packets)
            else:
                sent, seconds = live[mix].run(seconds=args.seconds)
            time.sleep(0.3)
            handled, got = rx_packets(topo.ns("mep"), "n6") - h0, delivered() - d0
            cpu, mep = busy_cpu_seconds() - c0, mep_cpu_seconds() - m0
            expect = 0 if (mix == "dropped" and filt != "none") else handled
            if abs(got - expect) > STRAYS or not handled:
                report.notes.append(f"{filt}/{mix}/{generator}: handled {handled}, delivered {got}, expected {expect}")
            from_xdp = fib_forwarded() - f0  # fib_forward on: what was delivered went from XDP, none through the stack
            if from_xdp != (got if filt == "xdp" else 0):
                report.notes.append(f"{filt}/{mix}/{generator}: delivered {got}, {from_xdp} of them forwarded from XDP")
            report.add(round=rnd, filter=filt, generator=generator, mix=mix, rules=args.rules, sent=sent, handled=handled,
                       delivered=got, seconds=round(seconds, 2), kpps=round(handled / seconds / 1000, 1),
                       mep_busy=round(mep / seconds, 2), mep_cpu_s_per_mpkt=round(mep / (handled / 1e6), 3),
                       cpu_s_per_mpkt=round(cpu / (handled / 1e6), 3))
            progress(f"  {handled / seconds / 1000:.0f} kpps handled of {sent / seconds / 1000:.0f} offered, MEP CPU "
                     f"{mep / seconds:.2f} busy, {mep / (handled / 1e6):.2f} s per Mpkt; delivered {got}")

        try:
            for mix, (dport, rule) in mixes.items():
                frames = flow_frames(dport, 256)
                check_verdicts(ruleset, frames, rule)
                trafgen_files[mix] = workdir / f"{mix}.cfg"
                trafgen_files[mix].write_text(trafgen_config(frames))
                live[mix] = N6Generator(topo.ns("upf"), "n6", frames[0], flows=256, park=f"lg{mix[:3]}")
                check_verdicts(ruleset, live[mix].frames(), rule)
            with in_netns(topo.ns("mep")):
                for port in MEP_PORTS:
                    probe.attach(port["ifname"], XDP_FLAGS_DRV_MODE)
            # veth has NAPI while an XDP program is attached; replacing the program keeps it (and its thread)
            threaded_napi(topo.ns("mep"), "n6", MEP_CPU)
            for rnd, filt in ((r, f) for r in range(1, args.rounds + 1) for f in FILTERS):
                if filt.startswith("nftables"):  # each script replaces the table the one before loaded
                    script = emit(ruleset, sets=filt == "nftables sets")
                    nft = topo.run("mep", ["nft", "-f", "-"], input=script.encode(), capture_output=True)
                    assert nft.returncode == 0, nft.stderr.decode()
                if filt == "none":  # the next round's first: back to the pass-only program and no table
                    topo.run("mep", ["nft", "flush", "ruleset"], check=True)
                    if engine is not None:
                        engine.close()
                        engine = None
                        with in_netns(topo.ns("mep")):
                            for port in MEP_PORTS:
                                probe.attach(port["ifname"], XDP_FLAGS_DRV_MODE)
                if filt.startswith("xdp"):
                    topo.run("mep", ["nft", "flush", "ruleset"], check=True)
                    # replaces the program attached (the pass-only one, or the last XDP filter's, whose
                    # pinned maps it adopts): the port keeps its NAPI thread
                    previous = engine
                    engine = XdpEngine(config.model_copy(update={"dataplane": config.dataplane.model_copy(
                        update={"fib_forward": filt == "xdp"})}), netns=topo.ns("mep"))
                    if previous is not None:
                        previous.close()
                    engine.apply(ruleset)
                for mix in mixes:
                    if filt == "xdp, stack forwarding" and mix == "dropped":
                        continue  # the same path as "xdp": forwarding plays no part
                    row(rnd, filt, "trafgen", mix)
                    if filt.startswith("xdp"):
                        row(rnd, filt, "live frames", mix)
        finally:
            for generator in live.values():
                generator.close()
            probe.close()
            if engine is not None:
                report.notes.append(f"XDP modes: {engine.describe()['xdp_modes']}")
                engine.detach(unpin=True)
                engine.close()
            shutil.rmtree(pin_root, ignore_errors=True)
    plotted = summarise(report)
    report.write(plot={"x": "filter", "y": "mep_cpu_s_per_mpkt", "series": "series",
                       "title": f"MEP CPU-seconds per million packets, {args.rules} rules (median round)"},
                 plot_rows=plotted)
    print((Path(__file__).resolve().parent / "results" / "xdp_vs_nft.md").read_text())


def summarise(report: Report) -> list[dict[str, Any]]:
    """The ratios the issue asks for, per mix, each within a round, the median round's first: pps (XDP's
    best generator) and MEP CPU per packet. Returns the rows to plot: each row's median round."""
    by = {(r["round"], r["filter"], r["generator"], r["mix"]): r for r in report.rows}
    rounds = sorted({r["round"] for r in report.rows})
    for xdp, mix in (("xdp", "forwarded"), ("xdp, stack forwarding", "forwarded"), ("xdp", "dropped")):
        for form in ("nftables", "nftables sets"):
            per_round = []  # (pps ratio, CPU ratio same generator, CPU ratio at full rate, busy xdp, busy nft)
            for rnd in rounds:
                xdp_live, xdp_trafgen = by.get((rnd, xdp, "live frames", mix)), by.get((rnd, xdp, "trafgen", mix))
                nft = by.get((rnd, form, "trafgen", mix))
                if nft is None or xdp_live is None or xdp_trafgen is None:
                    continue
                per_round.append((xdp_live["kpps"] / nft["kpps"],
                                  nft["mep_cpu_s_per_mpkt"] / xdp_trafgen["mep_cpu_s_per_mpkt"],
                                  nft["mep_cpu_s_per_mpkt"] / xdp_live["mep_cpu_s_per_mpkt"],
                                  xdp_live["mep_busy"], nft["mep_busy"]))
            if not per_round:
                continue
            pps, same, full, busy_x, busy_n = sorted(per_round)[(len(per_round) - 1) // 2]
            report.notes.append(
                f"{mix}: {xdp}'s pps is {pps:.1f}x {form}'s in the median of {len(per_round)} rounds (every round: "
                f"{', '.join(f'{r[0]:.1f}x' for r in per_round)}; each on one CPU, MEP CPU busy {busy_x:.2f} and "
                f"{busy_n:.2f}); {form} uses {same:.1f}x {xdp}'s MEP CPU per packet (same generator), "
                f"{full:.1f}x at its full rate")
    plotted = []
    for key in dict.fromkeys((r["filter"], r["generator"], r["mix"]) for r in report.rows):
        rows = sorted((r for r in report.rows if (r["filter"], r["generator"], r["mix"]) == key),
                      key=lambda r: r["mep_cpu_s_per_mpkt"])
        plotted.append({**rows[(len(rows) - 1) // 2], "series": f"{key[2]}, {key[1]}"})
    return plotted


if __name__ == "__main__":
    main()
