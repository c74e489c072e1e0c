"""Frame parsing and packet building, in pure Python: the spec the native twins follow.

``parse(frame)`` returns a ``Parsed`` (every field a traffic filter can match,
and the offsets the actions need) or a drop/pass ``Reason`` for a frame it
cannot classify. ebpf/parse.h and ebpf/gtpu.h (XDP) and _fastpath.pyx
(Cython) implement the same function; docs/semantics.md states the rules in
prose. Byte order: every multi-byte field is read big-endian (network order);
addresses are Python ints.

The builders below produce the exact bytes every engine must output:
checksum helpers (full and RFC 1624 incremental), the IP destination/source
rewrite, and the GTP-U and GRE encapsulations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .reasons import Reason
from .ruleset import IpAddr

__all__ = [
    "ETH_P_IP",
    "ETH_P_IPV6",
    "ETH_P_8021Q",
    "GTPU_PORT",
    "MAX_IPV6_EXT",
    "MAX_GTPU_EXT",
    "Parsed",
    "parse",
    "fold",
    "inet_checksum",
    "csum_replace",
    "rewrite_address",
    "ethernet",
    "vlan_ethernet",
    "outer_ip",
    "gtpu_header",
    "gre_header",
]

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
GTPU_PORT = 2152
GTPU_G_PDU = 255
GTPU_EXT_PDU_SESSION = 0x85

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
IPPROTO_GRE, IPPROTO_ESP, IPPROTO_AH = 47, 50, 51
IPPROTO_ICMPV6, IPPROTO_SCTP = 58, 132
IPV6_HOPOPTS, IPV6_ROUTING, IPV6_FRAGMENT, IPV6_DSTOPTS = 0, 43, 44, 60
# Extension headers skipped by their length field (the fragment header is handled apart).
IPV6_EXT_HEADERS = frozenset({IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS, IPPROTO_AH})

# Bounded walks (XDP needs a compile-time bound; the others use the same one
# so that a longer chain is the same defined drop everywhere).
MAX_IPV6_EXT = 6
MAX_GTPU_EXT = 4

# Minimum header bytes a transport protocol needs before its ports (and, for
# rewrites, its checksum) can be read; other protocols have no transport header.
L4_MIN_BYTES = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_SCTP: 12, IPPROTO_ICMP: 4, IPPROTO_ICMPV6: 4}
HAS_PORTS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP})


@dataclass(slots=True)
class Parsed:
    """What a frame holds, for matching and for building outputs."""

    eth_dst: bytes
    eth_src: bytes
    vlan_tci: Optional[int]  # the 802.1Q TCI when tagged (VID = tci & 0xfff)
    # The user packet: the inner one when the frame is a GTP-U G-PDU.
    family: int
    ip_off: int
    ip_len: int  # declared IP datagram length (header + payload)
    src: int
    dst: int
    proto: int  # upper-layer protocol after IPv6 extension headers
    dscp: Optional[int]  # IPv4 only
    tc: Optional[int]  # IPv6 only
    l4_off: Optional[int]  # None: no transport header parsed (fragment, other protocol)
    sport: Optional[int]
    dport: Optional[int]
    # The GTP-U tunnel, when tunnelled.
    tunnel: bool = False
    tun_family: int = 0
    tun_src: int = 0
    tun_dst: int = 0
    tun_sport: int = 0
    tun_dport: int = 0
    teid: int = 0
    qfi: Optional[int] = None

    @property
    def vlan(self) -> Optional[int]:
        return None if self.vlan_tci is None else self.vlan_tci & 0x0FFF


def _u16(b: bytes | bytearray, off: int) -> int:
    return (b[off] << 8) | b[off + 1]


@dataclass(slots=True)
class _Ip:
    family: int
    off: int
    length: int
    src: int
    dst: int
    proto: int
    dscp: Optional[int]
    tc: Optional[int]
    l4_off: Optional[int]
    sport: Optional[int]
    dport: Optional[int]


def _parse_ipv4(b: bytes, off: int, end: int) -> _Ip | Reason:
    if end - off < 20:
        return Reason.DROP_TRUNCATED_IPV4
    vihl = b[off]
    if vihl >> 4 != 4 or vihl & 0x0F < 5:
        return Reason.DROP_MALFORMED_IPV4
    hlen = (vihl & 0x0F) * 4
    if hlen > end - off:
        return Reason.DROP_TRUNCATED_IPV4
    total = _u16(b, off + 2)
    if total < hlen:
        return Reason.DROP_MALFORMED_IPV4
    if total > end - off:
        return Reason.DROP_TRUNCATED_IPV4
    first_fragment = _u16(b, off + 6) & 0x1FFF == 0
    return _parse_l4(
        _Ip(
            family=4,
            off=off,
            length=total,
            src=int.from_bytes(b[off + 12 : off + 16], "big"),
            dst=int.from_bytes(b[off + 16 : off + 20], "big"),
            proto=b[off + 9],
            dscp=b[off + 1] >> 2,
            tc=None,
            l4_off=off + hlen if first_fragment else None,
            sport=None,
            dport=None,
        ),
        b,
    )


def _parse_ipv6(b: bytes, off: int, end: int) -> _Ip | Reason:
    if end - off < 40:
        return Reason.DROP_TRUNCATED_IPV6
    if b[off] >> 4 != 6:
        return Reason.DROP_MALFORMED_IPV6
    ip_end = off + 40 + _u16(b, off + 4)
    if ip_end > end:
        return Reason.DROP_TRUNCATED_IPV6
    nh = b[off + 6]
    cur = off + 40
    fragment = False
    for _ in range(MAX_IPV6_EXT):
        if nh in IPV6_EXT_HEADERS:
            if cur + 2 > ip_end:
                return Reason.DROP_IPV6_EXT_CHAIN
            hdr_len = (b[cur + 1] + 2) * 4 if nh == IPPROTO_AH else (b[cur + 1] + 1) * 8
            nh = b[cur]
            cur += hdr_len
            if cur > ip_end:
                return Reason.DROP_IPV6_EXT_CHAIN
        elif nh == IPV6_FRAGMENT:
            if cur + 8 > ip_end:
                return Reason.DROP_IPV6_EXT_CHAIN
            fragment = _u16(b, cur + 2) >> 3 != 0
            nh = b[cur]
            cur += 8
            if fragment:
                break  # a non-first fragment: no transport header follows
        else:
            break
    if not fragment and (nh in IPV6_EXT_HEADERS or nh == IPV6_FRAGMENT):
        return Reason.DROP_IPV6_EXT_CHAIN  # still an extension header after the limit
    l4_off = None if fragment else cur
    return _parse_l4(
        _Ip(
            family=6,
            off=off,
            length=ip_end - off,
            src=int.from_bytes(b[off + 8 : off + 24], "big"),
            dst=int.from_bytes(b[off + 24 : off + 40], "big"),
            proto=nh,
            dscp=None,
            tc=((b[off] & 0x0F) << 4) | (b[off + 1] >> 4),
            l4_off=l4_off,
            sport=None,
            dport=None,
        ),
        b,
    )


def _parse_l4(ip: _Ip, b: bytes) -> _Ip | Reason:
    need = L4_MIN_BYTES.get(ip.proto)
    if ip.l4_off is None or need is None:
        ip.l4_off = None
        return ip
    if ip.l4_off + need > ip.off + ip.length:
        return Reason.DROP_TRUNCATED_L4
    if ip.proto in HAS_PORTS:
        ip.sport = _u16(b, ip.l4_off)
        ip.dport = _u16(b, ip.l4_off + 2)
    return ip


def _parse_ip(b: bytes, off: int, end: int, family: int) -> _Ip | Reason:
    return _parse_ipv4(b, off, end) if family == 4 else _parse_ipv6(b, off, end)


def parse(frame: bytes) -> Parsed | Reason:
    """Parse one Ethernet frame; see the module docstring and docs/semantics.md."""
    b = frame
    end = len(b)
    if end < 14:
        return Reason.DROP_TRUNCATED_ETH
    ethertype = _u16(b, 12)
    l3 = 14
    tci: Optional[int] = None
    if ethertype == ETH_P_8021Q:
        if end < 18:
            return Reason.DROP_TRUNCATED_ETH
        tci = _u16(b, 14)
        ethertype = _u16(b, 16)
        l3 = 18
    if ethertype == ETH_P_IP:
        outer = _parse_ip(b, l3, end, 4)
    elif ethertype == ETH_P_IPV6:
        outer = _parse_ip(b, l3, end, 6)
    else:
        return Reason.PASS_NOT_IP
    if isinstance(outer, Reason):
        return outer

    user, tunnel = outer, None
    if outer.proto == IPPROTO_UDP and outer.dport == GTPU_PORT and outer.l4_off is not None:
        gtp = _parse_gtpu(b, outer.l4_off + 8, outer.off + outer.length)
        if isinstance(gtp, Reason):
            return gtp
        if gtp is not None:
            inner_off, inner_end, teid, qfi = gtp
            if inner_off == inner_end or b[inner_off] >> 4 not in (4, 6):
                return Reason.PASS_GTPU_NOT_IP
            inner = _parse_ip(b, inner_off, inner_end, b[inner_off] >> 4)
            if isinstance(inner, Reason):
                return inner
            user, tunnel = inner, (teid, qfi)

    parsed = Parsed(
        eth_dst=b[0:6],
        eth_src=b[6:12],
        vlan_tci=tci,
        family=user.family,
        ip_off=user.off,
        ip_len=user.length,
        src=user.src,
        dst=user.dst,
        proto=user.proto,
        dscp=user.dscp,
        tc=user.tc,
        l4_off=user.l4_off,
        sport=user.sport,
        dport=user.dport,
    )
    if tunnel is not None:
        parsed.tunnel = True
        parsed.tun_family = outer.family
        parsed.tun_src, parsed.tun_dst = outer.src, outer.dst
        parsed.tun_sport, parsed.tun_dport = outer.sport or 0, outer.dport or 0
        parsed.teid, parsed.qfi = tunnel
    return parsed


def _parse_gtpu(b: bytes, g: int, end: int) -> tuple[int, int, int, Optional[int]] | Reason | None:
    """A G-PDU's (inner start, inner end, TEID, QFI), None if not a GTPv1-U G-PDU."""
    if g + 8 > end:
        return Reason.DROP_MALFORMED_GTPU
    flags = b[g]
    if flags >> 5 != 1 or not flags & 0x10 or b[g + 1] != GTPU_G_PDU:
        return None  # GTP' or signalling (echo, end marker, ...): an ordinary UDP packet
    gend = g + 8 + _u16(b, g + 2)
    if gend > end:
        return Reason.DROP_MALFORMED_GTPU
    teid = int.from_bytes(b[g + 4 : g + 8], "big")
    p = g + 8
    qfi: Optional[int] = None
    if flags & 0x07:
        if p + 4 > gend:
            return Reason.DROP_MALFORMED_GTPU
        next_ext = b[p + 3] if flags & 0x04 else 0
        p += 4
        for _ in range(MAX_GTPU_EXT):
            if next_ext == 0:
                break
            if p + 1 > gend or b[p] == 0:
                return Reason.DROP_MALFORMED_GTPU
            ext_len = b[p] * 4
            if p + ext_len > gend:
                return Reason.DROP_MALFORMED_GTPU
            if next_ext == GTPU_EXT_PDU_SESSION and qfi is None and ext_len >= 4:
                qfi = b[p + 2] & 0x3F
            next_ext = b[p + ext_len - 1]
            p += ext_len
        else:
            if next_ext != 0:
                return Reason.DROP_MALFORMED_GTPU
    return p, gend, teid, qfi


# --- checksums ------------------------------------------------------------------


def fold(acc: int) -> int:
    """Fold a sum of 16-bit words to 16 bits with end-around carry."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


def inet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071: the complement of the one's-complement sum of ``data`` (odd length zero-padded)."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    acc = initial + sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    return ~fold(acc) & 0xFFFF


def csum_replace(csum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), over 16-bit words of ``old``/``new``.

    Every engine updates checksums with exactly this arithmetic so that the
    output bytes agree even when the incoming checksum was wrong.
    """
    acc = ~csum & 0xFFFF
    for i in range(0, len(old), 2):
        acc += ~int.from_bytes(old[i : i + 2], "big") & 0xFFFF
    for i in range(0, len(new), 2):
        acc += int.from_bytes(new[i : i + 2], "big")
    return ~fold(acc) & 0xFFFF


def _patch_csum(buf: bytearray, at: int, old: bytes, new: bytes, *, udp: bool) -> None:
    csum = _u16(buf, at)
    if udp and csum == 0:
        return  # UDP without a checksum stays without one
    csum = csum_replace(csum, old, new)
    if udp and csum == 0:
        csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    buf[at : at + 2] = csum.to_bytes(2, "big")


def rewrite_address(dgram: bytearray, p: Parsed, new: IpAddr, *, source: bool) -> None:
    """Replace the user packet's destination (or source) address in ``dgram`` in place.

    ``dgram`` is the user IP datagram (starting at its IP header, offsets as in
    ``p`` minus ``p.ip_off``). The IPv4 header checksum and the TCP, UDP or
    ICMPv6 checksum (whose pseudo-header covers the address) are updated with
    ``csum_replace``; a fragment without a transport header only gets the
    IPv4 header checksum.
    """
    at = (12 if source else 16) if p.family == 4 else (8 if source else 24)
    size = 4 if p.family == 4 else 16
    old = bytes(dgram[at : at + size])
    new_bytes = new.packed()
    dgram[at : at + size] = new_bytes
    if p.family == 4:
        _patch_csum(dgram, 10, old, new_bytes, udp=False)
    if p.l4_off is None:
        return
    l4 = p.l4_off - p.ip_off
    if p.proto == IPPROTO_TCP:
        _patch_csum(dgram, l4 + 16, old, new_bytes, udp=False)
    elif p.proto == IPPROTO_UDP:
        _patch_csum(dgram, l4 + 6, old, new_bytes, udp=True)
    elif p.proto == IPPROTO_ICMPV6 and p.family == 6:
        _patch_csum(dgram, l4 + 2, old, new_bytes, udp=False)


# --- builders -------------------------------------------------------------------


def ethernet(dst: bytes, src: bytes, family: int) -> bytes:
    return dst + src + (ETH_P_IP if family == 4 else ETH_P_IPV6).to_bytes(2, "big")


def vlan_ethernet(dst: bytes, src: bytes, tci: int, family: int) -> bytes:
    return (
        dst
        + src
        + ETH_P_8021Q.to_bytes(2, "big")
        + tci.to_bytes(2, "big")
        + (ETH_P_IP if family == 4 else ETH_P_IPV6).to_bytes(2, "big")
    )


OUTER_TTL = 64


def outer_ip(src: IpAddr, dst: IpAddr, proto: int, payload_len: int, dscp: int) -> bytes:
    """The outer IPv4 (DF, ID 0, TTL 64) or IPv6 (hop limit 64) header of a tunnel.

    ``dscp`` (the user packet's DSCP, or the top six bits of its traffic
    class) is copied to the outer header with ECN 0.
    """
    if src.family == 4:
        hdr = bytearray(20)
        hdr[0] = 0x45
        hdr[1] = (dscp << 2) & 0xFC
        hdr[2:4] = (20 + payload_len).to_bytes(2, "big")
        hdr[6:8] = (0x4000).to_bytes(2, "big")
        hdr[8] = OUTER_TTL
        hdr[9] = proto
        hdr[12:16] = src.packed()
        hdr[16:20] = dst.packed()
        hdr[10:12] = inet_checksum(bytes(hdr)).to_bytes(2, "big")
        return bytes(hdr)
    hdr = bytearray(40)
    tc = (dscp << 2) & 0xFC
    hdr[0] = 0x60 | (tc >> 4)
    hdr[1] = (tc & 0x0F) << 4
    hdr[4:6] = payload_len.to_bytes(2, "big")
    hdr[6] = proto
    hdr[7] = OUTER_TTL
    hdr[8:24] = src.packed()
    hdr[24:40] = dst.packed()
    return bytes(hdr)


def udp_checksum_ipv6(src: IpAddr, dst: IpAddr, udp: bytes) -> int:
    """The full UDP checksum over an IPv6 pseudo-header (never 0: RFC 8200 section 8.1)."""
    pseudo = src.packed() + dst.packed() + len(udp).to_bytes(4, "big") + bytes(3) + bytes([IPPROTO_UDP])
    csum = inet_checksum(pseudo + udp)
    return csum or 0xFFFF


def gtpu_header(teid: int, payload_len: int, qfi: Optional[int]) -> bytes:
    """A GTPv1-U G-PDU header; with ``qfi``, an UL PDU Session Container (TS 38.415)."""
    if qfi is None:
        return bytes([0x30, GTPU_G_PDU]) + payload_len.to_bytes(2, "big") + teid.to_bytes(4, "big")
    ext = bytes([0x00, 0x00, 0x00, GTPU_EXT_PDU_SESSION, 0x01, 0x10, qfi & 0x3F, 0x00])
    return bytes([0x34, GTPU_G_PDU]) + (len(ext) + payload_len).to_bytes(2, "big") + teid.to_bytes(4, "big") + ext


def gre_header(family: int) -> bytes:
    """A basic GRE header (RFC 2784): no checksum, key or sequence number."""
    return b"\x00\x00" + (ETH_P_IP if family == 4 else ETH_P_IPV6).to_bytes(2, "big")
