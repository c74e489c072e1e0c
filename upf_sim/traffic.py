"""Uplink traffic from many UEs at a set rate: flow mixes, template G-PDUs and the live-frames generator.

Method (docs/upf_sim.md): for each class of the mix, one template G-PDU is
built here (the first session's, from mep/dataplane/packet.py's GTP-U and
checksum helpers). ``Generator.run`` hands it to ebpf/gen.c with
BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES, ``repeat`` = a batch: the
kernel runs the program on each copy, the program moves it to the next UE
and flow (TEID, QFI, address, source port, checksums), and every frame is
transmitted on the gNB's N3 port. Batches of the classes alternate in the
mix's proportions and are paced to the rate (or sent back to back).

A flow mix is ``PROTO[/SIZE][:WEIGHT],...``: PROTO udp, tcp or icmp; SIZE an
Ethernet frame size on N6 in bytes *including* the 4-byte FCS, 64 to 1518
(the RFC 2544 convention: the user IP packet is SIZE - 18 bytes, the N3
frame SIZE - 4 + 44 bytes of GTP-U), or ``imix`` (64:7, 570:4, 1518:1);
WEIGHT an integer share (default 1). Examples: ``udp/64``, ``udp/imix``, ``udp/imix:8,tcp/64:1,icmp/64:1``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from types import TracebackType
from typing import Callable, Optional

from mep.dataplane.links import delete_link, ensure_veth, in_netns, links_and_neighbours
from pyroute2 import netns

from mep.dataplane.fastpath import extension
from mep.dataplane.packet import ethernet, inet_checksum, outer_ip
from mep.dataplane.ruleset import IpAddr
from mep.dataplane.testrun import BPF_F_TEST_XDP_LIVE_FRAMES, prog_test_run
from mep.errors import DataplaneError, InvalidInput, MapWriteError

from .bpf import Program
from .sessions import Session, SessionTable
from .topology import ADDR
from .upf import addr_field

__all__ = ["FlowClass", "FlowMix", "ClassResult", "SendResult", "Generator", "user_packet", "g_pdu",
           "DEFAULT_DPORT", "DEFAULT_FIRST_PORT", "IMIX"]

PROTOCOLS = {"udp": 17, "tcp": 6, "icmp": 1}
IMIX = ((64, 7), (570, 4), (1518, 1))  # simple IMIX: frame size (with FCS), share
MIN_FRAME, MAX_FRAME = 64, 1518
FCS_BYTES, ETH_BYTES = 4, 14
GTPU_OVERHEAD = 20 + 8 + 16  # outer IPv4, UDP, G-PDU header with a PDU Session Container
DEFAULT_DPORT = 5004  # RTP: a UE's video upload
DEFAULT_FIRST_PORT = 40000
MAX_CLASSES = 64  # classes in one mix: sizes the generator's template map (-DGEN_CLASSES)
# The header bytes gen.c copies from a class's template into every frame (GEN_HEADER_BYTES).
_HEADER_BYTES = ETH_BYTES + GTPU_OVERHEAD + 20 + 20
# Frames per test run when no rate is set (about 0.5 ms of work on the project's machine).
_UNPACED_BATCH = 4096
# With a rate, each round of batches carries about this much time's worth of frames.
_ROUND_S = 0.002


@dataclass(frozen=True)
class FlowClass:
    """One class of a mix: protocol, N6 frame size with FCS, integer share."""

    proto: str
    size: int
    weight: int

    @property
    def label(self) -> str:
        return f"{self.proto}/{self.size}"

    @property
    def ip_bytes(self) -> int:
        """The user IP packet's length."""
        return self.size - FCS_BYTES - ETH_BYTES

    @property
    def n3_bytes(self) -> int:
        """The G-PDU frame's length on N3, without FCS."""
        return self.size - FCS_BYTES + GTPU_OVERHEAD


@dataclass(frozen=True)
class FlowMix:
    """The classes of a mix; ``FlowMix.parse("udp/imix:8,tcp/64:1")``."""

    classes: tuple[FlowClass, ...]

    @classmethod
    def parse(cls, text: str) -> "FlowMix":
        """Parse the module docstring's syntax; InvalidInput naming the bad item."""
        classes: list[FlowClass] = []
        for item in (part.strip() for part in text.split(",")):
            spec, _, weight_text = item.partition(":")
            proto, _, size_text = spec.partition("/")
            try:
                weight = int(weight_text) if weight_text else 1
                if proto not in PROTOCOLS or weight < 1:
                    raise ValueError
                if size_text in ("", "imix"):
                    sizes = IMIX if size_text == "imix" else ((MIN_FRAME, 1),)
                else:
                    sizes = ((int(size_text), 1),)
            except ValueError:
                raise InvalidInput(f"'{item}' is not PROTO[/SIZE][:WEIGHT] (udp|tcp|icmp, 64..1518 or imix, "
                                   "a weight >= 1)", field="--mix") from None
            for size, share in sizes:
                if not MIN_FRAME <= size <= MAX_FRAME:
                    raise InvalidInput(f"'{item}': frame size {size} is outside {MIN_FRAME}..{MAX_FRAME}",
                                       field="--mix")
                classes.append(FlowClass(proto, size, weight * share))
        if len(classes) > MAX_CLASSES:
            raise InvalidInput(f"{len(classes)} classes; at most {MAX_CLASSES}", field="--mix")
        return cls(tuple(classes))

    def __str__(self) -> str:
        return ",".join(f"{c.label}:{c.weight}" for c in self.classes)


def user_packet(proto: str, size: int, src: IPv4Address, dst: IPv4Address, sport: int, dport: int) -> bytes:
    """The user IPv4 packet of a ``size``-byte N6 frame (FCS included), checksums complete.

    UDP and TCP go from ``sport`` to ``dport`` (TCP: an ACK|PSH segment);
    ICMP is an echo request with id ``sport``. The payload is a byte pattern.
    """
    number = PROTOCOLS[proto]
    total = size - FCS_BYTES - ETH_BYTES
    l4_header = {"udp": 8, "tcp": 20, "icmp": 8}[proto]
    payload = bytes(i & 0xFF for i in range(total - 20 - l4_header))
    if proto == "udp":
        l4 = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big")
                       + b"\0\0" + payload)
    elif proto == "tcp":
        l4 = bytearray(sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (1).to_bytes(4, "big")
                       + (1).to_bytes(4, "big") + bytes([0x50, 0x18]) + (65535).to_bytes(2, "big") + b"\0\0\0\0"
                       + payload)
    else:
        l4 = bytearray(bytes([8, 0]) + b"\0\0" + sport.to_bytes(2, "big") + (1).to_bytes(2, "big") + payload)
    at = {"udp": 6, "tcp": 16, "icmp": 2}[proto]
    if proto == "icmp":
        check = inet_checksum(bytes(l4))
    else:
        pseudo = src.packed + dst.packed + bytes([0, number]) + len(l4).to_bytes(2, "big")
        check = inet_checksum(pseudo + bytes(l4))
        if proto == "udp" and check == 0:
            check = 0xFFFF
    l4[at:at + 2] = check.to_bytes(2, "big")
    ip = bytearray(outer_ip(IpAddr(4, int(src)), IpAddr(4, int(dst)), number, len(l4), 0))
    return bytes(ip) + bytes(l4)


def g_pdu(table: SessionTable, session: Session, user: bytes, *, gnb_mac: bytes, upf_mac: bytes) -> bytes:
    """The N3 frame the gNB sends for ``user`` of ``session``: outer IPv4/UDP 2152/G-PDU with the QFI.

    The outer headers are the engines' own (``_fastpath.gtpu_encap``, the bytes
    FORWARD_ENCAPSULATED writes), so the UPF and the MEP read what they write.
    """
    gtpu: bytes = extension().gtpu_encap(user, session.teid_ul, session.qfi, table.gnb.packed, table.upf.packed)
    return ethernet(upf_mac, gnb_mac, 4) + gtpu


@dataclass
class ClassResult:
    """Frames of one class sent in a run, and their bytes (user IP packets, N3 frames)."""

    flow: FlowClass
    packets: int = 0

    @property
    def user_bytes(self) -> int:
        return self.packets * self.flow.ip_bytes

    @property
    def n3_bytes(self) -> int:
        return self.packets * self.flow.n3_bytes


@dataclass
class SendResult:
    """A run: per class, and the time it took."""

    classes: list[ClassResult]
    seconds: float = 0.0
    rate: Optional[int] = None
    ues: int = 0
    flows: int = 0

    @property
    def packets(self) -> int:
        return sum(c.packets for c in self.classes)

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0

    @property
    def user_mbps(self) -> float:
        return sum(c.user_bytes for c in self.classes) * 8 / self.seconds / 1e6 if self.seconds else 0.0

    def lines(self) -> list[str]:
        """A summary for a terminal."""
        paced = f"paced to {self.rate:,} pps" if self.rate else "unpaced"
        out = [f"sent {self.packets:,} G-PDUs in {self.seconds:.2f} s: {self.pps:,.0f} pps, "
               f"{self.user_mbps:,.1f} Mbit/s of user packets ({paced}; {self.ues} UEs x {self.flows} flows)"]
        for c in self.classes:
            out.append(f"  {c.flow.label:<10} share {c.flow.weight:>3}  {c.packets:>12,} frames  "
                       f"{c.flow.n3_bytes:>5} B on N3")
        return out


class Generator:
    """The live-frames generator of ``table``'s UEs in ``netns``, sending out of ``n3``.

    ``dst``/``dport``: where the UEs' packets go; UE ``i`` uses source ports
    (ICMP ids) ``first_port`` .. ``first_port + flows - 1``. The UPF's N3
    MAC comes from ``n3``'s neighbour table (the topology makes it static).
    ``close()`` unloads it and removes its parked veth.
    """

    def __init__(self, table: SessionTable, *, netns: Optional[str] = None, n3: str = "n3",
                 dst: str = ADDR.server, dport: int = DEFAULT_DPORT, flows: int = 1,
                 first_port: int = DEFAULT_FIRST_PORT) -> None:
        if not 1 <= flows <= 65535 - first_port + 1:
            raise InvalidInput(f"{flows} flows from port {first_port} do not fit in 16 bits", field="--flows")
        self.table = table
        self.netns = netns
        self.dst = IPv4Address(dst)
        self.dport = dport
        self.flows = flows
        self.first_port = first_port
        self._parked = f"gen{os.getpid()}"
        self.program = Program.compile("gen", netns, sessions=len(table),
                                       defines={"GEN_CLASSES": MAX_CLASSES, "GEN_HEADER_BYTES": _HEADER_BYTES})
        try:
            with in_netns(netns):
                (out,), neighbour_tables = links_and_neighbours([n3])
                upf_mac = neighbour_tables.get(out.ifindex, {}).get(str(table.upf))
                if upf_mac is None:
                    raise DataplaneError(f"no neighbour entry for the UPF's N3 address {table.upf} on {n3}: "
                                         "add a static one (the lab topology has it)")
                ensure_veth(f"{self._parked}a", f"{self._parked}b", ipv6=False)
            self.gnb_mac, self.upf_mac = out.mac, upf_mac
            self._write(out.ifindex)
            fn = self.program.xdp("gen")
            self.fd: int = fn.fd
            self.xdp_mode = self.program.attach_xdp(fn, f"{self._parked}a", "native")
        except BaseException:
            self.close()
            raise

    def _write(self, ifindex: int) -> None:
        cfg, ues = self.program.table("gen_cfg"), self.program.table("gen_ues")
        try:
            cfg[cfg.Key(0)] = cfg.Leaf(out_ifindex=ifindex, ues=len(self.table), flows=self.flows,
                                       first_port=self.first_port)
            for s in self.table.sessions:
                ues[ues.Key(s.index)] = ues.Leaf(index=s.index, teid=s.teid_ul, qfi=s.qfi,
                                                 ue_addr=addr_field(ues.Leaf, "ue_addr", s.ue.packed))
        except Exception as exc:  # bcc raises bare Exception on a failed update
            raise MapWriteError(f"writing the generator's UEs failed: {exc}") from None

    def frame(self, flow: FlowClass) -> bytes:
        """The template N3 frame of ``flow`` (the first session, the first flow)."""
        first = self.table.sessions[0]
        user = user_packet(flow.proto, flow.size, first.ue, self.dst, self.first_port, self.dport)
        return g_pdu(self.table, first, user, gnb_mac=self.gnb_mac, upf_mac=self.upf_mac)

    def run(self, mix: FlowMix, *, rate: Optional[int] = None, seconds: Optional[float] = None,
            packets: Optional[int] = None, tick: Optional[Callable[[SendResult], None]] = None) -> SendResult:
        """Send ``mix`` until ``seconds`` pass or ``packets`` are sent (whichever first).

        ``rate`` in packets per second paces the batches (None: back to
        back). ``tick`` is called with the running result about every 0.5 s.
        """
        if seconds is None and packets is None:
            raise InvalidInput("give seconds or packets", field="--seconds")
        frames = [self.frame(c) for c in mix.classes]
        templates, current = self.program.table("gen_templates"), self.program.table("gen_class")
        for k, frame in enumerate(frames):
            templates[templates.Key(k)] = templates.Leaf.from_buffer_copy(frame[:_HEADER_BYTES])
        shares = [c.weight for c in mix.classes]
        per_round = (rate * _ROUND_S) if rate else _UNPACED_BATCH
        multiplier = max(1, round(per_round / sum(shares)))
        result = SendResult([ClassResult(c) for c in mix.classes], rate=rate, ues=len(self.table),
                            flows=self.flows)
        limit = packets if packets is not None else float("inf")
        deadline = time.perf_counter() + seconds if seconds is not None else float("inf")
        sent, start = 0, time.perf_counter()
        next_tick = start + 0.5
        with in_netns(self.netns):
            while sent < limit and time.perf_counter() < deadline:
                for k, frame in enumerate(frames):
                    n = int(min(shares[k] * multiplier, limit - sent))
                    if n <= 0:
                        break
                    current[current.Key(0)] = current.Leaf(k)
                    prog_test_run(self.fd, frame, repeat=n, flags=BPF_F_TEST_XDP_LIVE_FRAMES)
                    result.classes[k].packets += n
                    sent += n
                now = time.perf_counter()
                if rate:
                    ahead = start + sent / rate - now
                    if ahead > 0:
                        time.sleep(min(ahead, max(0.0, deadline - now)))
                if tick is not None and now >= next_tick:
                    result.seconds = now - start
                    tick(result)
                    next_tick = now + 0.5
        result.seconds = time.perf_counter() - start
        return result

    def close(self) -> None:
        """Unload the program and remove the parked veth (with its namespace gone: nothing left)."""
        self.program.close()
        if self.netns is None or self.netns in netns.listnetns():
            with in_netns(self.netns):
                delete_link(f"{self._parked}a")

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

