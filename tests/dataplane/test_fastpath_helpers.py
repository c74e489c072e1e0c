"""The helpers _fastpath exports to other parts (upf_sim's gNB), checked against independent code.

GTP-U against packet.py's builders and scapy; checksums against packet.py
and scapy. Also: a missing extension is a clear error naming ``make setup``.
"""
from __future__ import annotations

import ipaddress
import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

import mep.dataplane
from mep.config import Config
from mep.dataplane import _fastpath
from mep.dataplane.packet import IPPROTO_UDP, csum_replace, gtpu_header, outer_ip, udp_checksum_ipv6
from mep.dataplane.ruleset import IpAddr
from mep.errors import DataplaneError
from tests.dataplane.cases import GTP_HTTP, GTP_HTTP_NOQFI, HTTP_SYN, frame_bytes, inner_of
from tests.packets import gtpu, user
from tests.strategies import any_frame, user_packet

ADDRS = st.sampled_from([("198.18.200.1", "198.18.200.2"), ("2001:db8::1", "2001:db8:a2::20")])


def packed(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ip_addr(text: str) -> IpAddr:
    a = ipaddress.ip_address(text)
    return IpAddr(a.version, int(a))


def python_encap(inner: bytes, teid: int, qfi: int | None, src: str, dst: str) -> bytes:
    """What reference.build_target puts after the Ethernet header, composed from packet.py."""
    tsrc, tdst = ip_addr(src), ip_addr(dst)
    gtp = gtpu_header(teid, len(inner), qfi)
    udp = bytearray(struct.pack("!HHHH", 2152, 2152, 8 + len(gtp) + len(inner), 0) + gtp + inner)
    if tsrc.family == 6:
        udp[6:8] = udp_checksum_ipv6(tsrc, tdst, bytes(udp)).to_bytes(2, "big")
    version = inner[0] >> 4
    dscp = inner[1] >> 2 if version == 4 else (((inner[0] & 0x0F) << 4) | (inner[1] >> 4)) >> 2
    return outer_ip(tsrc, tdst, IPPROTO_UDP, len(udp), dscp) + bytes(udp)


@settings(max_examples=300, deadline=None)
@given(inner=user_packet(), teid=st.integers(0, 2**32 - 1), qfi=st.none() | st.integers(0, 63), addrs=ADDRS)
def test_gtpu_encap_writes_the_engines_bytes(inner, teid: int, qfi: int | None,  # type: ignore[no-untyped-def]
                                             addrs: tuple[str, str]) -> None:
    data = bytes(inner)
    src, dst = addrs
    out = _fastpath.gtpu_encap(data, teid, qfi, packed(src), packed(dst))
    assert out == python_encap(data, teid, qfi, src, dst)
    pkt = (IP if ":" not in src else IPv6)(out)
    assert pkt[GTP_U_Header].teid == teid
    assert pkt.haslayer(GTPPDUSessionContainer) == (qfi is not None)
    if qfi is not None:
        assert pkt[GTPPDUSessionContainer].QFI == qfi
    # decapsulated again, behind an Ethernet header, it is the packet we started from
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800 if ":" not in src else 0x86DD)) + out
    assert _fastpath.gtpu_decap(frame) == (teid, qfi, data)


def test_gtpu_decap_returns_teid_qfi_and_the_user_datagram() -> None:
    assert _fastpath.gtpu_decap(frame_bytes(GTP_HTTP)) == (0x1001, 9, bytes(inner_of(GTP_HTTP)))
    assert _fastpath.gtpu_decap(frame_bytes(GTP_HTTP_NOQFI)) == (0x2002, None, bytes(inner_of(GTP_HTTP_NOQFI)))
    assert _fastpath.gtpu_decap(frame_bytes(HTTP_SYN)) is None
    assert _fastpath.gtpu_decap(frame_bytes(GTP_HTTP)[:60]) is None
    assert _fastpath.gtpu_decap(b"") is None


@settings(max_examples=300, deadline=None)
@given(data=any_frame)
def test_gtpu_decap_agrees_with_the_parser(data: bytes) -> None:
    parsed = _fastpath.parse(data)
    got = _fastpath.gtpu_decap(data)
    if getattr(parsed, "tunnel", False):
        assert got == (parsed.teid, parsed.qfi, data[parsed.ip_off:parsed.ip_off + parsed.ip_len])  # type: ignore[union-attr]
    else:
        assert got is None


@settings(max_examples=300, deadline=None)
@given(csum=st.integers(0, 0xFFFF), words=st.integers(1, 8).flatmap(
    lambda n: st.tuples(st.binary(min_size=2 * n, max_size=2 * n), st.binary(min_size=2 * n, max_size=2 * n))))
def test_csum_replace_is_packet_csum_replace(csum: int, words: tuple[bytes, bytes]) -> None:
    old, new = words
    assert _fastpath.csum_replace(csum, old, new) == csum_replace(csum, old, new)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), addrs=ADDRS, ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)))
def test_udp_checksum_is_scapys(payload: bytes, addrs: tuple[str, str], ports: tuple[int, int]) -> None:
    src, dst = addrs
    l3 = IP(src=src, dst=dst) if ":" not in src else IPv6(src=src, dst=dst)
    pkt = (l3.__class__)(bytes(l3 / UDP(sport=ports[0], dport=ports[1]) / Raw(payload)))
    segment = bytearray(bytes(pkt[UDP]))
    want = struct.unpack("!H", segment[6:8])[0]
    segment[6:8] = b"\0\0"
    assert _fastpath.udp_checksum(packed(src), packed(dst), bytes(segment)) == want


# --- the extension itself ------------------------------------------------------------------------

def test_a_missing_extension_names_make_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    from mep.dataplane.fastpath import FastpathEngine

    monkeypatch.delattr(mep.dataplane, "_fastpath")
    monkeypatch.setitem(sys.modules, "mep.dataplane._fastpath", None)  # what an unbuilt tree looks like
    with pytest.raises(DataplaneError, match="make setup"):
        FastpathEngine(Config(), io=False)


def test_the_extension_carries_the_reasons_it_was_built_with() -> None:
    from mep.dataplane.reasons import REASON_VERDICT, Reason

    assert sorted(_fastpath.reason_table()) == sorted((f"MEP_{r.name}", int(r), int(REASON_VERDICT[r])) for r in Reason)
