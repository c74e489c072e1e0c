"""N6 traffic at XDP speed for benchmarks: IPv4/UDP frames sent with BPF_PROG_TEST_RUN live frames.

``N6Generator`` runs a small XDP program with BPF_F_TEST_XDP_LIVE_FRAMES:
each test run sends ``repeat`` copies of a template frame out of one veth
(XDP_REDIRECT), and the program gives each copy the next of ``flows`` UDP
source ports, so a stream is that many flows. Two kernel details, as in
upf_sim's generator (docs/upf_sim.md): the receiver's writes come back in
the pages of the pool, so the program copies every header byte from the
template into each frame; and the program attaches itself to a parked veth
pair of its own, which spares each test run an RCU grace period.

The UDP checksum is 0 (none, allowed for IPv4), so the program changes the
source port without fixing a checksum; ``frames()`` gives the exact bytes
it sends, for checking verdicts before anything is timed.

The receiving end must run an XDP program: native XDP redirected into a
veth whose peer has none is dropped, and one whose peer passes frames to
the kernel stack stalls after 256 frames (the pool's pages do not come
back), so stack paths (nftables, no filter) need another generator (trafgen).
"""
from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Optional

from pyroute2 import netns

from mep.dataplane.links import delete_link, ensure_veth, in_netns, link
from mep.dataplane.testrun import BPF_F_TEST_XDP_LIVE_FRAMES, XDP_FLAGS_DRV_MODE, prog_test_run

HEADER_BYTES = 14 + 20 + 8  # Ethernet, IPv4 without options, UDP
SPORT_OFFSET = 14 + 20
CSUM_OFFSET = 14 + 20 + 6
_BATCH = 4096  # frames a test run when sending as fast as it can (about 0.5 ms here)

_PROGRAM = b"""
#include <uapi/linux/bpf.h>
struct gen_header { unsigned char b[GEN_HEADER_BYTES]; };
BPF_ARRAY(gen_template, struct gen_header, 1);
BPF_PERCPU_ARRAY(gen_seq, u32, 1);
int gen(struct xdp_md *ctx) {
	unsigned char *p = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	u32 zero = 0, *seq = gen_seq.lookup(&zero), port;
	struct gen_header *t = gen_template.lookup(&zero);

	if (!seq || !t || p + GEN_HEADER_BYTES > end)
		return XDP_ABORTED;
	__builtin_memcpy(p, t->b, GEN_HEADER_BYTES);
	port = GEN_FIRST_SPORT + *seq % GEN_FLOWS;
	*seq += 1;
	p[GEN_SPORT_OFFSET] = port >> 8;
	p[GEN_SPORT_OFFSET + 1] = port & 0xff;
	return bpf_redirect(GEN_IFINDEX, 0);
}
"""


def flow_frame(template: bytes, sport: int) -> bytes:
    """``template`` as the generator sends it for source port ``sport`` (UDP checksum 0)."""
    b = bytearray(template)
    b[SPORT_OFFSET:SPORT_OFFSET + 2] = sport.to_bytes(2, "big")
    b[CSUM_OFFSET:CSUM_OFFSET + 2] = b"\0\0"
    return bytes(b)


class N6Generator:
    """Sends ``template`` (an IPv4/UDP frame) as ``flows`` flows out of ``ifname`` in namespace ``netns``."""

    def __init__(self, netns: str, ifname: str, template: bytes, *, flows: int = 1, park: str = "lgen") -> None:
        from bcc import BPF

        if len(template) < HEADER_BYTES or template[12:14] != b"\x08\x00" or template[14] != 0x45 \
                or template[23] != 17:
            raise ValueError("the template must be an IPv4 (no options) UDP frame")
        first = int.from_bytes(template[SPORT_OFFSET:SPORT_OFFSET + 2], "big")
        if not 1 <= flows <= 65536 - first:
            raise ValueError(f"{flows} flows from source port {first} run past 65535")
        self.template, self.flows, self.first_sport = flow_frame(template, first), flows, first
        self._netns, self._park = netns, (park + "a", park + "b")
        with in_netns(netns):
            ifindex = link(ifname).ifindex
        self._bpf: Any = BPF(text=_PROGRAM, cflags=[f"-DGEN_IFINDEX={ifindex}", f"-DGEN_HEADER_BYTES={HEADER_BYTES}",
                                                    f"-DGEN_SPORT_OFFSET={SPORT_OFFSET}", f"-DGEN_FLOWS={flows}",
                                                    f"-DGEN_FIRST_SPORT={first}"])
        try:
            fn = self._bpf.load_func(b"gen", BPF.XDP)
            self._fd = fn.fd
            table = self._bpf["gen_template"]
            table[table.Key(0)] = table.Leaf.from_buffer_copy(self.template[:HEADER_BYTES])
            with in_netns(netns):  # parked: no RCU wait per test run
                ensure_veth(*self._park, ipv6=False)
                self._bpf.attach_xdp(self._park[0].encode(), fn, XDP_FLAGS_DRV_MODE)
        except BaseException:
            self.close()
            raise

    def frames(self) -> list[bytes]:
        """Every distinct frame the generator sends, one per flow."""
        return [flow_frame(self.template, self.first_sport + i) for i in range(self.flows)]

    def run(self, *, packets: Optional[int] = None, seconds: Optional[float] = None,
            rate: Optional[int] = None, batch: int = _BATCH) -> tuple[int, float]:
        """Send ``packets`` frames, or for ``seconds``, at ``rate`` per second or as fast as it can.

        Returns (frames sent, seconds taken). Frames the receiver cannot take
        are dropped by veth: sent is what was offered."""
        if (packets is None) == (seconds is None):
            raise ValueError("give packets or seconds")
        start = time.perf_counter()
        sent = 0
        with in_netns(self._netns):
            while True:
                now = time.perf_counter()
                if (packets is not None and sent >= packets) or (seconds is not None and now - start >= seconds):
                    break
                n = batch if packets is None else min(batch, packets - sent)
                prog_test_run(self._fd, self.template, repeat=n, flags=BPF_F_TEST_XDP_LIVE_FRAMES)
                sent += n
                if rate:
                    delay = start + sent / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
        return sent, time.perf_counter() - start

    def close(self) -> None:
        """Unload the program and remove the parked veth (with its namespace gone: nothing left)."""
        self._bpf.cleanup()
        if self._netns in netns.listnetns():
            with in_netns(self._netns):
                delete_link(self._park[0])

    def __enter__(self) -> "N6Generator":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
