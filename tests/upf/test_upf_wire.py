"""upf_sim's frames on real veths, decoded with scapy and tshark.

One topology for the module; each test puts the programs it needs on the
ports and captures where the frames arrive:

- the generator's G-PDUs as the UPF's N3 port receives them;
- the gNB's TC encapsulation of a real UE socket's datagram;
- the UPF's downlink encapsulation, as the gNB's N3 port receives it;
- the UPF's uplink decapsulation, as the MEP's N6 port receives it.
"""
from __future__ import annotations

import collections
import os
import socket
from typing import Iterator

import pytest
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from mep.dataplane.links import in_netns
from mep.dataplane.packet import inet_checksum
from tests.upf.wire import capture, checksums_valid, is_gtpu, pass_peer, tshark_fields
from upf_sim.gnb import Gnb
from upf_sim.sessions import SessionTable
from upf_sim.topology import ADDR, Topology
from upf_sim.traffic import DEFAULT_FIRST_PORT, FlowMix, Generator
from upf_sim.upf import Upf

pytestmark = pytest.mark.needs_root

TABLE = SessionTable.generate(3, qfi=7)
TSHARK_FIELDS = ["gtp.teid", "gtp.ext_hdr.pdu_ses_con.qos_flow_id", "gtp.ext_hdr.pdu_ses_con.pdu_type",
                 "ip.checksum.status", "udp.checksum.status", "tcp.checksum.status", "icmp.checksum.status",
                 "_ws.expert.message"]


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    with Topology() as t:
        yield t


def _assert_tshark_good(frames: list[bytes]) -> None:
    rows = tshark_fields(frames, TSHARK_FIELDS)
    if rows is None:
        return  # tshark is optional; scapy has checked the same frames
    assert len(rows) == len(frames)
    for r in rows:
        assert r["_ws.expert.message"] == "", r
        statuses = ",".join(r[f] for f in TSHARK_FIELDS if f.endswith("checksum.status") and r[f]).split(",")
        assert set(statuses) <= {"1", "3"}, r  # 1 good, 3 not present (the outer UDP's)


def _from_ue(frame: bytes) -> bool:
    return len(frame) >= 34 and frame[12:14] == b"\x08\x00" and frame[26:28] == bytes([198, 18]) \
        and frame[28] in range(64, 128)


def test_generator_g_pdus_decode(topo: Topology) -> None:
    mix = FlowMix.parse("udp/64,tcp/570,icmp/64")
    with pass_peer(topo, "upf", "n3"), Generator(TABLE, netns=topo.ns("ran"), flows=2) as gen:
        with capture(topo.ns("upf"), "n3", want=60, keep=is_gtpu) as seen:
            result = gen.run(mix, rate=3000, packets=60)
    assert result.packets == 60 and [c.packets for c in result.classes] == [20, 20, 20]
    assert len(seen.frames) == 60
    by_teid = {s.teid_ul: s for s in TABLE}
    pairs: collections.Counter[tuple[str, int]] = collections.Counter()
    for frame in seen.frames:
        pkt = Ether(frame)
        assert (pkt[IP].src, pkt[IP].dst, pkt[UDP].dport) == (ADDR.gnb, ADDR.upf_n3, 2152)
        session = by_teid[pkt[GTP_U_Header].teid]
        assert (pkt[GTPPDUSessionContainer].type, pkt[GTPPDUSessionContainer].QFI) == (1, 7)
        inner = pkt[GTPPDUSessionContainer].payload
        assert isinstance(inner, IP) and (inner.src, inner.dst) == (str(session.ue), ADDR.server)
        assert checksums_valid(bytes(inner))
        port = inner[ICMP].id if inner.haslayer(ICMP) else inner.sport
        pairs[(inner.src, port)] += 1
    ports = (DEFAULT_FIRST_PORT, DEFAULT_FIRST_PORT + 1)
    assert set(pairs) == {(str(s.ue), p) for s in TABLE for p in ports}  # every UE, every flow
    assert sum(pairs.values()) == 60
    _assert_tshark_good(seen.frames)


def test_gnb_tunnels_a_ue_socket(topo: Topology) -> None:
    ue = TABLE.sessions[1]
    with pass_peer(topo, "upf", "n3"), Gnb(TABLE, netns=topo.ns("ran")) as gnb:
        with capture(topo.ns("upf"), "n3", want=1, keep=is_gtpu) as seen:
            with in_netns(topo.ns("ran")):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with s:
                s.bind((str(ue.ue), 41000))
                s.sendto(b"uplink from a UE", (ADDR.server, 9))
        counted = gnb.counters()
    pkt = Ether(seen.frames[0])
    assert (pkt[IP].src, pkt[IP].dst) == (ADDR.gnb, ADDR.upf_n3)
    assert pkt[GTP_U_Header].teid == ue.teid_ul
    assert (pkt[GTPPDUSessionContainer].type, pkt[GTPPDUSessionContainer].QFI) == (1, 7)
    inner = pkt[GTPPDUSessionContainer].payload
    assert (inner.src, inner.dst, inner.sport, inner.dport, bytes(inner[UDP].payload)) == (
        str(ue.ue), ADDR.server, 41000, 9, b"uplink from a UE")
    assert checksums_valid(bytes(inner))
    assert counted.reasons["GNB_UL_ENCAPSULATED"].packets == 1
    assert counted.sessions[1].ul.packets == 1 and counted.dropped().packets == 0
    _assert_tshark_good(seen.frames[:1])


def test_upf_encapsulates_downlink(topo: Topology) -> None:
    ue = TABLE.sessions[2]
    with Upf(TABLE, netns=topo.ns("upf")) as upf, pass_peer(topo, "ran", "n3"):
        with capture(topo.ns("ran"), "n3", want=1, keep=is_gtpu) as seen:
            with in_netns(topo.ns("mep")):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with s:
                s.bind((ADDR.mep_n6, 5300))
                s.sendto(b"downlink to a UE", (str(ue.ue), 5301))
        counted = upf.counters()
    pkt = Ether(seen.frames[0])
    assert (pkt.src, pkt.dst) == (ADDR.upf_n3_mac, ADDR.gnb_mac)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].flags.DF) == (ADDR.upf_n3, ADDR.gnb, True)
    assert pkt[GTP_U_Header].teid == ue.teid_dl
    assert (pkt[GTPPDUSessionContainer].type, pkt[GTPPDUSessionContainer].QFI) == (0, 7)  # DL PDU SESSION INFO
    inner = pkt[GTPPDUSessionContainer].payload
    assert (inner.src, inner.dst, inner.dport, bytes(inner[UDP].payload)) == (
        ADDR.mep_n6, str(ue.ue), 5301, b"downlink to a UE")
    assert pkt[IP].len == 44 + inner.len and inet_checksum(bytes(pkt[IP])[:20]) == 0  # a valid header sums to 0
    assert checksums_valid(bytes(inner))
    assert counted.reasons["UPF_DL_FORWARDED"].packets == 1 and counted.sessions[2].dl.packets == 1
    _assert_tshark_good(seen.frames[:1])


def test_upf_decapsulates_uplink_exactly(topo: Topology) -> None:
    mix = FlowMix.parse("udp/64,tcp/64,icmp/1518")
    with Upf(TABLE, netns=topo.ns("upf")) as upf, pass_peer(topo, "mep", "n6"), \
            Generator(TABLE, netns=topo.ns("ran"), flows=1) as gen:
        with capture(topo.ns("mep"), "n6", want=30, keep=_from_ue) as seen:
            gen.run(mix, rate=3000, packets=30)
        counted = upf.counters()
        templates = {c.size: gen.frame(c) for c in mix.classes}
    assert len(seen.frames) == 30
    for frame in seen.frames:
        pkt = Ether(frame)
        assert (pkt.src, pkt.dst) == (ADDR.upf_n6_mac, ADDR.mep_n6_mac)
        assert pkt[IP].src in {str(s.ue) for s in TABLE} and pkt[IP].dst == ADDR.server
        assert checksums_valid(bytes(pkt[IP])) and len(frame) == 14 + pkt[IP].len
        assert len(frame) + 4 in templates and not pkt.haslayer(GTP_U_Header)
        assert pkt.haslayer(UDP) or pkt.haslayer(TCP) or pkt.haslayer(ICMP)
    assert counted.reasons["UPF_UL_FORWARDED"].packets == 30
    assert sum(s.ul.packets for s in counted.sessions) == 30 and counted.dropped().packets == 0
