"""How many uplink G-PDUs per second does upf_sim carry from the gNB through the UPF to N6, and what does its generator buy over a Python socket loop?

Method: the lab topology (upf_sim/topology.py) with upf_sim's UPF (XDP on
upf's n3 and n6: decapsulate, FIB lookup, redirect) and a sink on the MEP's
N6 port (an XDP program that counts IPv4 frames and drops them). Senders in
the ran namespace, the whole process pinned to CPU 1, so sender, UPF and
sink share one CPU (veth runs the receiver's XDP in the sender's softirq):
(a) the baseline, a Python loop sending each G-PDU with socket.send() from
the gNB's address to the UPF's UDP 2152 (the kernel adds the outer IPv4 and
UDP headers); (b) upf_sim's generator, BPF_PROG_TEST_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES, batches of 4096, unpaced, the program parked on
a veth in native XDP so that a test run with repeat > 1 waits for no RCU
grace period. Each run sends for a fixed time; the sink's count is what
arrived. First the method is checked: 50,000 G-PDUs at 100 kpps must all be
counted. User packets are UDP to 198.18.100.1:5004 from each --ues count of
UEs (1, 100 and 10,000 by default; one flow each), 64-byte frames or simple
IMIX (7:4:1 of 64, 570, 1518).

Examples:
    python -m bench.upf_gtpu
    python -m bench.upf_gtpu --seconds 1 --ues 1 100
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import socket
import time
from typing import Any, Optional

from bench._harness import Report, pinned_cpu, progress
from mep.dataplane.links import in_netns
from mep.dataplane.packet import gtpu_header
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE
from upf_sim.sessions import SessionTable
from upf_sim.topology import ADDR, Topology
from upf_sim.traffic import DEFAULT_DPORT, DEFAULT_FIRST_PORT, FlowMix, Generator, user_packet
from upf_sim.upf import Upf

QUICK_ARGS = ["--seconds", "1", "--ues", "1", "100"]
CHECK_PACKETS, CHECK_RATE = 50_000, 100_000

_SINK = b"""
#include <uapi/linux/bpf.h>
BPF_PERCPU_ARRAY(received, u64, 1);
/* counts IPv4 frames (the decapsulated user packets) and drops them; passes the rest (ARP, IPv6) */
int sink(struct xdp_md *ctx) {
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	u32 zero = 0;
	u64 *n;
	if (p + 14 > end || p[12] != 0x08 || p[13] != 0x00)
		return XDP_PASS;
	n = received.lookup(&zero);
	if (n)
		*n += 1;
	return XDP_DROP;
}
"""


class Sink:
    """The counting XDP program on the MEP's N6 port."""

    def __init__(self, topo: Topology) -> None:
        from bcc import BPF

        self.bpf = BPF(text=_SINK)
        with in_netns(topo.ns("mep")):
            self.bpf.attach_xdp(b"n6", self.bpf.load_func(b"sink", BPF.XDP), XDP_FLAGS_DRV_MODE)
        self.table = self.bpf[b"received"]

    def count(self) -> int:
        """Frames counted so far."""
        return int(sum(self.table.getvalue(ctypes.c_uint32(0))))

    def settled(self) -> int:
        """The count once frames still in flight have arrived (it stops changing)."""
        last = -1
        while True:
            time.sleep(0.2)
            now = self.count()
            if now == last:
                return now
            last = now

    def close(self) -> None:
        """Unload (the namespace's removal detaches it)."""
        self.bpf.cleanup()


def python_loop(topo: Topology, table: SessionTable, mix: FlowMix, seconds: float) -> int:
    """The baseline: one socket.send() per G-PDU, cycling through UEs and the mix; frames sent."""
    payloads = []
    for flow in mix.classes:
        for s in table.sessions:
            user = user_packet(flow.proto, flow.size, s.ue, ipaddress.IPv4Address(ADDR.server), DEFAULT_FIRST_PORT, DEFAULT_DPORT)
            payloads += [gtpu_header(s.teid_ul, len(user), s.qfi) + user] * flow.weight
    with in_netns(topo.ns("ran")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind((ADDR.gnb, 2152))
        sock.connect((ADDR.upf_n3, 2152))
        send, count, sent = sock.send, len(payloads), 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for i in range(sent, sent + 1024):
                send(payloads[i % count])
            sent += 1024
    return sent


def main(argv: Optional[list[str]] = None) -> None:
    """Run the benchmark; writes results/upf_gtpu.{csv,md,png}."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0, help="per run (default 3)")
    ap.add_argument("--ues", type=int, nargs="+", default=[1, 100, 10000], help="UE counts (default 1 100 10000)")
    ap.add_argument("--cpu", type=int, default=1, help="CPU to pin to (default 1)")
    args = ap.parse_args(argv)
    report = Report("upf_gtpu", __doc__.split("\n\n")[0], " ".join(__doc__.split("\n\n")[1].split()),
                    ["sender", "mix", "ues", "seconds", "sent", "received", "lost", "sent_mpps", "received_mpps"])
    mixes = {"64 B": FlowMix.parse("udp/64"), "IMIX": FlowMix.parse("udp/imix")}
    with Topology() as topo, pinned_cpu(args.cpu):
        sink = Sink(topo)
        try:
            table = SessionTable.generate(max(args.ues))
            with Upf(table, netns=topo.ns("upf")) as upf:
                modes: dict[str, Any] = dict(upf.modes)
                with Generator(SessionTable.generate(1), netns=topo.ns("ran")) as gen:
                    before = sink.count()
                    checked = gen.run(mixes["64 B"], rate=CHECK_RATE, packets=CHECK_PACKETS).packets
                    got = sink.settled() - before
                    progress(f"method check: sent {checked}, counted {got}")
                    if got != checked:
                        raise SystemExit(f"upf_gtpu: the method check failed: sent {checked}, counted {got}")
                for ues in args.ues:
                    sessions = SessionTable.generate(ues)
                    with Generator(sessions, netns=topo.ns("ran")) as gen:
                        for label, mix in mixes.items():
                            for sender in ("python socket loop", "live frames"):
                                before = sink.count()
                                start = time.perf_counter()
                                if sender == "live frames":
                                    sent = gen.run(mix, seconds=args.seconds).packets
                                else:
                                    sent = python_loop(topo, sessions, mix, args.seconds)
                                took = time.perf_counter() - start
                                got = sink.settled() - before
                                report.add(sender=sender, mix=label, ues=ues, seconds=round(took, 2), sent=sent,
                                           received=got, lost=sent - got, sent_mpps=sent / took / 1e6,
                                           received_mpps=got / took / 1e6)
                                progress(f"{sender}, {label}, {ues} UEs: sent {sent / took / 1e6:.2f} Mpps, "
                                         f"arrived {got / took / 1e6:.2f} Mpps, lost {sent - got}")
                        modes["generator (parked)"] = gen.xdp_mode
        finally:
            sink.close()
    rows = {(r["sender"], r["mix"], r["ues"]): r for r in report.rows}
    for (sender, label, ues), row in rows.items():
        if sender != "live frames":
            continue
        base = rows[("python socket loop", label, ues)]
        ratio = row["received_mpps"] / base["received_mpps"] if base["received_mpps"] else float("inf")
        report.notes.append(f"{label}, {ues} UEs: the live-frames generator delivers {ratio:.1f}x the Python "
                            f"loop's rate ({row['received_mpps']:.2f} vs {base['received_mpps']:.2f} Mpps "
                            f"through the UPF), losing {row['lost']} of {row['sent']}")
    report.notes.append(f"method check: {CHECK_PACKETS} G-PDUs at {CHECK_RATE} pps, all counted; XDP modes {modes}")
    for row in report.rows:
        row["series"] = f"{row['sender']}, {row['mix']}"
    path = report.write(plot={"x": "ues", "y": "received_mpps", "series": "series", "logx": True,
                              "title": "G-PDUs through the UPF to N6 (one CPU)", "ylabel": "Mpps arriving on N6"})
    print(path.read_text())


if __name__ == "__main__":
    main()
