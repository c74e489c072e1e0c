"""bench/_livegen.py's N6Generator on a real veth pair: it sends as many frames as asked, spread evenly over
its flows, each with the template's headers but for the source port and a zero UDP checksum, and paces them
to a rate when given one. Needs root and BPF (CI runs as root)."""
from __future__ import annotations

import ctypes
import os
import time
import uuid
from typing import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from bench._harness import pinned_cpu
from bench._livegen import CSUM_OFFSET, SPORT_OFFSET, N6Generator
from mep.dataplane.links import in_netns
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE
from tests.fixtures.netns import make_ports_netns, remove_netns
from tests.packets import PORTS, SERVER, UE1

pytestmark = pytest.mark.needs_bpf

FIRST_SPORT, FLOWS = 1000, 4
# What arrives on n6: frames per flow whose headers are the template's (but for the source port), and the rest.
_COUNTER = b"""
#include <uapi/linux/bpf.h>
BPF_ARRAY(per_flow, u64, FLOWS);
BPF_ARRAY(other, u64, 1);
int count(struct xdp_md *ctx) {
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	u32 zero = 0, i;
	u64 *n;

	if (p + 42 > end || p[12] != 0x08 || p[13] != 0x00 || p[23] != 17 || p[36] != 0 || p[37] != 7 ||
	    p[40] != 0 || p[41] != 0)
		goto other;
	i = ((p[34] << 8) | p[35]) - FIRST;
	if (i >= FLOWS)
		goto other;
	n = per_flow.lookup(&i);
	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_DROP;
other:
	n = other.lookup(&zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_DROP;
}
"""


@pytest.fixture
def ports_netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    name = make_ports_netns(f"mep-test-lg-{uuid.uuid4().hex[:6]}")
    try:
        yield name
    finally:
        remove_netns(name)


def test_sends_the_frames_it_names_evenly_over_its_flows_and_at_a_rate(ports_netns: str) -> None:
    from bcc import BPF

    n6 = next(p for p in PORTS if p["ifname"] == "n6")
    template = bytes(Ether(src="02:00:00:00:99:01", dst=n6["mac"]) / IP(src=UE1, dst=SERVER)
                     / UDP(sport=FIRST_SPORT, dport=7) / Raw(b"x" * 18))
    counter = BPF(text=_COUNTER, cflags=[f"-DFIRST={FIRST_SPORT}", f"-DFLOWS={FLOWS}"])
    try:
        with in_netns(ports_netns):
            counter.attach_xdp(b"n6", counter.load_func(b"count", BPF.XDP), XDP_FLAGS_DRV_MODE)
        # one CPU: the program's per-CPU flow counter runs in one sequence
        with pinned_cpu(), \
                N6Generator(ports_netns, "n6p", template, flows=FLOWS, park="tlg") as gen:
            frames = gen.frames()
            sent, _ = gen.run(packets=1000, batch=64)
            paced, took = gen.run(packets=2000, rate=20_000, batch=100)
        per_flow = [counter["per_flow"][ctypes.c_uint32(i)].value for i in range(FLOWS)]
        assert (sent, paced) == (1000, 2000)
        assert per_flow == [3000 // FLOWS] * FLOWS
        assert counter["other"][ctypes.c_uint32(0)].value == 0
        assert took >= 0.09  # 2,000 frames at 20 kpps: 0.1 s
        for i, frame in enumerate(frames):
            assert int.from_bytes(frame[SPORT_OFFSET:SPORT_OFFSET + 2], "big") == FIRST_SPORT + i
            assert frame[CSUM_OFFSET:CSUM_OFFSET + 2] == b"\0\0"
            assert frame[:SPORT_OFFSET] + frame[SPORT_OFFSET + 2:CSUM_OFFSET] + frame[CSUM_OFFSET + 2:] == \
                template[:SPORT_OFFSET] + template[SPORT_OFFSET + 2:CSUM_OFFSET] + template[CSUM_OFFSET + 2:]
    finally:
        counter.cleanup()
