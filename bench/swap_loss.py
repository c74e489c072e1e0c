"""Does a rule-set swap lose packets? 100 swaps under a fixed-rate load, sent vs received.

The lab topology (upf_sim/topology.py) with the XDP engine on the
MEP. bench/_livegen.py's live-frames generator in the upf namespace sends
one UDP flow out of upf's N6 veth in batches paced to the target rate. The
MEP steers the stream with a FORWARD_DECAPSULATED rule to app1, whose end
of the veth runs an XDP program that counts the stream's frames. While the stream runs,
the control plane applies 100 rule sets (each keeps the stream's rule and
adds or removes another), and the generator's sent count is compared with
the counter. The baseline is the same stream with no swaps, in the same run.

Examples:
    python -m bench.swap_loss                  # 100 swaps at 200 kpps
    python -m bench.swap_loss --rate 50000 --swaps 20
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from bench._harness import Report, progress
from bench._livegen import N6Generator
from mep.config import Capacity, Config, DataplaneConfig
from mep.dataplane.compiler import compile_ruleset
from mep.dataplane.links import in_netns
from mep.dataplane.resolver import netlink_resolver
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE
from mep.models import TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredTrafficRule
from upf_sim.topology import ADDR, MEP_PORTS, Topology

QUICK_ARGS = ["--rate", "50000", "--swaps", "20", "--seconds", "2"]

_COUNTER = b"""
#include <uapi/linux/bpf.h>
BPF_PERCPU_ARRAY(received, u64, 1);
/* counts the stream's frames (IPv4 UDP to port 7000, no options), passes the rest */
int count(struct xdp_md *ctx) {
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	u32 zero = 0;
	u64 *n;
	if (p + 38 > end || p[12] != 0x08 || p[13] != 0x00 || p[14] != 0x45 || p[23] != 17 ||
	    p[36] != (7000 >> 8) || p[37] != (7000 & 0xff))
		return XDP_PASS;
	n = received.lookup(&zero);
	if (n)
		*n += 1;
	return XDP_DROP;
}
"""

STREAM_RULE = {
    "trafficRuleId": "stream", "filterType": "PACKET", "priority": 1, "state": "ACTIVE",
    "trafficFilter": [{"dstAddress": [ADDR.server], "protocol": ["UDP"], "dstPort": ["7000"]}],
    "action": "FORWARD_DECAPSULATED", "dstInterface": {"interfaceType": "MAC", "dstMacAddress": ADDR.app1_mac},
}


def ruleset_for(config: Config, netns: str, generation: int, extra: int) -> Any:
    rules = [STREAM_RULE] + [
        {"trafficRuleId": f"other{i}", "filterType": "PACKET", "priority": 5, "state": "ACTIVE",
         "trafficFilter": [{"protocol": ["TCP"], "dstPort": [str(10000 + i)]}], "action": "DROP"}
        for i in range(extra)
    ]
    stored = tuple(StoredTrafficRule(app_instance_id="a", rule_id=i + 1, rule=TrafficRule.model_validate(r))
                   for i, r in enumerate(rules))
    snap = Snapshot(revision=generation, apps={"a": AppInstance(appInstanceId="a", state=AppState.READY)},
                    traffic_rules=stored, dns_rules=())
    return compile_ruleset(snap, config=config.dataplane, resolver=netlink_resolver(config.dataplane, netns),
                           generation=generation)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rate", type=int, default=200_000, help="packets per second (default 200000)")
    ap.add_argument("--swaps", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5.0, help="stream length with swaps")
    args = ap.parse_args(argv)
    from bcc import BPF

    from mep.dataplane.xdp import XdpEngine

    report = Report("swap_loss", "Does a rule-set swap lose packets under load?",
                    __doc__.split("\n\n")[1].replace("\n", " "),
                    ["run", "swaps", "rate_pps", "sent", "received", "lost", "seconds"])
    pin_root = Path("/sys/fs/bpf") / f"mep-swap-{os.getpid()}"
    frame = bytes(Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac) / IP(src=ADDR.ue1, dst=ADDR.server)
                  / UDP(sport=40000, dport=7000) / Raw(b"s" * 22))
    with Topology() as topo:
        config = Config(instance="swap", dataplane=DataplaneConfig(
            ports=MEP_PORTS, pin_root=pin_root,
            capacity=Capacity(rules=256, filters=512, flows=4096)))
        engine = XdpEngine(config, netns=topo.ns("mep"))
        counter = BPF(text=_COUNTER)
        gen: Optional[N6Generator] = None
        try:
            with in_netns(topo.ns("app1")):
                counter.attach_xdp(b"eth0", counter.load_func(b"count", BPF.XDP), XDP_FLAGS_DRV_MODE)
            gen = N6Generator(topo.ns("upf"), "n6", frame, park="swpgen")
            received = counter["received"]

            def count() -> int:
                return sum(received.getvalue(ctypes.c_uint32(0)))

            generation = 1
            engine.apply(ruleset_for(config, topo.ns("mep"), generation, 0))
            packets = int(args.rate * args.seconds)
            for run, swaps in (("baseline, no swaps", 0), (f"{args.swaps} swaps", args.swaps)):
                before = count()
                done = threading.Event()

                def swapper(swaps: int = swaps) -> None:
                    nonlocal generation
                    for i in range(swaps):
                        generation += 1
                        engine.apply(ruleset_for(config, topo.ns("mep"), generation, i % 5))
                        time.sleep(max(0.0, args.seconds / max(swaps, 1) - 0.02))
                    done.set()

                progress(f"{run}: {packets} packets at {args.rate} pps")
                t = threading.Thread(target=swapper)
                t.start()
                _, took = gen.run(packets=packets, rate=args.rate, batch=max(64, args.rate // 1000))
                t.join()
                time.sleep(0.2)
                got = count() - before
                report.add(run=run, swaps=swaps, rate_pps=round(packets / took), sent=packets, received=got,
                           lost=packets - got, seconds=round(took, 2))
                progress(f"  sent {packets}, received {got}, lost {packets - got}")
        finally:
            if gen is not None:
                gen.close()
            engine.detach(unpin=True)
            engine.close()
            shutil.rmtree(pin_root, ignore_errors=True)
    lost = sum(r["lost"] for r in report.rows)
    report.notes.append(f"{lost} packets lost over both runs; XDP mode on the MEP ports: {engine.describe()['xdp_modes']}")
    print(report.write().read_text())


if __name__ == "__main__":
    main()
