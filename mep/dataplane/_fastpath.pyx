# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native twin of mep.dataplane.packet: frame parsing and checksum helpers.

``parse_frame`` is a nogil C function with exactly the rules of
``packet.parse`` (docs/semantics.md); tests/dataplane/test_fastpath_parse.py
proves they agree on valid, malformed and random frames. The batch engine of
issue 5 builds on it. Verdict and reason numbers come from ebpf/reasons.h.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #include "reasons.h"
    #define MEP_REASON_ENUM(name, num, verdict, desc) name = num,
    enum mep_reason { MEP_REASONS(MEP_REASON_ENUM) };
    """
    enum mep_reason:
        MEP_PASS_NOT_IP
        MEP_PASS_GTPU_NOT_IP
        MEP_DROP_TRUNCATED_ETH
        MEP_DROP_TRUNCATED_IPV4
        MEP_DROP_MALFORMED_IPV4
        MEP_DROP_MALFORMED_IPV6
        MEP_DROP_TRUNCATED_IPV6
        MEP_DROP_IPV6_EXT_CHAIN
        MEP_DROP_TRUNCATED_L4
        MEP_DROP_MALFORMED_GTPU

DEF MAX_IPV6_EXT = 6
DEF MAX_GTPU_EXT = 4
DEF GTPU_PORT = 2152

cdef struct ip_t:
    int family
    int off
    int length
    uint8_t src[16]
    uint8_t dst[16]
    int proto
    int dscp          # -1: not IPv4
    int tc            # -1: not IPv6
    int l4_off        # -1: no transport header
    int sport         # -1: no ports
    int dport

cdef struct parsed_t:
    int vlan_tci      # -1: untagged
    ip_t user
    int tunnel
    ip_t outer        # valid when tunnel
    uint32_t teid
    int qfi           # -1: no PDU session container


cdef inline int u16(const uint8_t* b, int off) noexcept nogil:
    return (b[off] << 8) | b[off + 1]


cdef int parse_l4(const uint8_t* b, ip_t* ip) noexcept nogil:
    cdef int need
    if ip.proto == 6:
        need = 20
    elif ip.proto == 17:
        need = 8
    elif ip.proto == 132:
        need = 12
    elif ip.proto == 1 or ip.proto == 58:
        need = 4
    else:
        ip.l4_off = -1
        return 0
    if ip.l4_off < 0:
        return 0
    if ip.l4_off + need > ip.off + ip.length:
        return MEP_DROP_TRUNCATED_L4
    if ip.proto == 6 or ip.proto == 17 or ip.proto == 132:
        ip.sport = u16(b, ip.l4_off)
        ip.dport = u16(b, ip.l4_off + 2)
    return 0


cdef int parse_ipv4(const uint8_t* b, int off, int end, ip_t* ip) noexcept nogil:
    cdef int vihl, hlen, total
    if end - off < 20:
        return MEP_DROP_TRUNCATED_IPV4
    vihl = b[off]
    if (vihl >> 4) != 4 or (vihl & 0x0F) < 5:
        return MEP_DROP_MALFORMED_IPV4
    hlen = (vihl & 0x0F) * 4
    if hlen > end - off:
        return MEP_DROP_TRUNCATED_IPV4
    total = u16(b, off + 2)
    if total < hlen:
        return MEP_DROP_MALFORMED_IPV4
    if total > end - off:
        return MEP_DROP_TRUNCATED_IPV4
    ip.family = 4
    ip.off = off
    ip.length = total
    memset(ip.src, 0, 16)
    memset(ip.dst, 0, 16)
    memcpy(ip.src, b + off + 12, 4)
    memcpy(ip.dst, b + off + 16, 4)
    ip.proto = b[off + 9]
    ip.dscp = b[off + 1] >> 2
    ip.tc = -1
    ip.l4_off = off + hlen if (u16(b, off + 6) & 0x1FFF) == 0 else -1
    ip.sport = -1
    ip.dport = -1
    return parse_l4(b, ip)


cdef inline bint is_ext(int nh) noexcept nogil:
    return nh == 0 or nh == 43 or nh == 60 or nh == 51


cdef int parse_ipv6(const uint8_t* b, int off, int end, ip_t* ip) noexcept nogil:
    cdef int ip_end, nh, cur, i, hdr_len
    cdef bint fragment = False
    if end - off < 40:
        return MEP_DROP_TRUNCATED_IPV6
    if (b[off] >> 4) != 6:
        return MEP_DROP_MALFORMED_IPV6
    ip_end = off + 40 + u16(b, off + 4)
    if ip_end > end:
        return MEP_DROP_TRUNCATED_IPV6
    nh = b[off + 6]
    cur = off + 40
    for i in range(MAX_IPV6_EXT):
        if is_ext(nh):
            if cur + 2 > ip_end:
                return MEP_DROP_IPV6_EXT_CHAIN
            hdr_len = (b[cur + 1] + 2) * 4 if nh == 51 else (b[cur + 1] + 1) * 8
            nh = b[cur]
            cur += hdr_len
            if cur > ip_end:
                return MEP_DROP_IPV6_EXT_CHAIN
        elif nh == 44:
            if cur + 8 > ip_end:
                return MEP_DROP_IPV6_EXT_CHAIN
            fragment = (u16(b, cur + 2) >> 3) != 0
            nh = b[cur]
            cur += 8
            if fragment:
                break
        else:
            break
    if not fragment and (is_ext(nh) or nh == 44):
        return MEP_DROP_IPV6_EXT_CHAIN
    ip.family = 6
    ip.off = off
    ip.length = ip_end - off
    memcpy(ip.src, b + off + 8, 16)
    memcpy(ip.dst, b + off + 24, 16)
    ip.proto = nh
    ip.dscp = -1
    ip.tc = ((b[off] & 0x0F) << 4) | (b[off + 1] >> 4)
    ip.l4_off = -1 if fragment else cur
    ip.sport = -1
    ip.dport = -1
    return parse_l4(b, ip)


cdef int parse_ip(const uint8_t* b, int off, int end, int family, ip_t* ip) noexcept nogil:
    if family == 4:
        return parse_ipv4(b, off, end, ip)
    return parse_ipv6(b, off, end, ip)


cdef int parse_gtpu(const uint8_t* b, int g, int end, parsed_t* p, int* inner_off, int* inner_end) noexcept nogil:
    """0 and inner_off >= 0: a G-PDU; 0 and inner_off < 0: not GTP-U; > 0: a drop reason."""
    cdef int flags, gend, q, next_ext, ext_len, i
    inner_off[0] = -1
    if g + 8 > end:
        return MEP_DROP_MALFORMED_GTPU
    flags = b[g]
    if (flags >> 5) != 1 or not (flags & 0x10) or b[g + 1] != 255:
        return 0
    gend = g + 8 + u16(b, g + 2)
    if gend > end:
        return MEP_DROP_MALFORMED_GTPU
    p.teid = (<uint32_t>b[g + 4] << 24) | (<uint32_t>b[g + 5] << 16) | (<uint32_t>b[g + 6] << 8) | b[g + 7]
    p.qfi = -1
    q = g + 8
    if flags & 0x07:
        if q + 4 > gend:
            return MEP_DROP_MALFORMED_GTPU
        next_ext = b[q + 3] if flags & 0x04 else 0
        q += 4
        for i in range(MAX_GTPU_EXT):
            if next_ext == 0:
                break
            if q + 1 > gend or b[q] == 0:
                return MEP_DROP_MALFORMED_GTPU
            ext_len = b[q] * 4
            if q + ext_len > gend:
                return MEP_DROP_MALFORMED_GTPU
            if next_ext == 0x85 and p.qfi < 0 and ext_len >= 4:
                p.qfi = b[q + 2] & 0x3F
            next_ext = b[q + ext_len - 1]
            q += ext_len
        if next_ext != 0:
            return MEP_DROP_MALFORMED_GTPU
    inner_off[0] = q
    inner_end[0] = gend
    return 0


cdef int parse_frame(const uint8_t* b, int end, parsed_t* p) noexcept nogil:
    """0: ``p`` holds the frame; otherwise the reason (a PASS_* or DROP_* code)."""
    cdef int ethertype, l3, rc, inner_off = -1, inner_end = 0, version
    if end < 14:
        return MEP_DROP_TRUNCATED_ETH
    ethertype = u16(b, 12)
    l3 = 14
    p.vlan_tci = -1
    p.tunnel = 0
    p.teid = 0
    p.qfi = -1
    if ethertype == 0x8100:
        if end < 18:
            return MEP_DROP_TRUNCATED_ETH
        p.vlan_tci = u16(b, 14)
        ethertype = u16(b, 16)
        l3 = 18
    if ethertype == 0x0800:
        rc = parse_ipv4(b, l3, end, &p.user)
    elif ethertype == 0x86DD:
        rc = parse_ipv6(b, l3, end, &p.user)
    else:
        return MEP_PASS_NOT_IP
    if rc:
        return rc
    if p.user.proto == 17 and p.user.dport == GTPU_PORT and p.user.l4_off >= 0:
        rc = parse_gtpu(b, p.user.l4_off + 8, p.user.off + p.user.length, p, &inner_off, &inner_end)
        if rc:
            return rc
        if inner_off >= 0:
            if inner_off == inner_end:
                return MEP_PASS_GTPU_NOT_IP
            version = b[inner_off] >> 4
            if version != 4 and version != 6:
                return MEP_PASS_GTPU_NOT_IP
            p.outer = p.user
            rc = parse_ip(b, inner_off, inner_end, version, &p.user)
            if rc:
                return rc
            p.tunnel = 1
    if not p.tunnel:
        p.teid = 0
        p.qfi = -1
    return 0


cdef object _addr(const uint8_t* a, int family):
    return int.from_bytes(a[:4] if family == 4 else a[:16], "big")


cdef object _opt(int v):
    return None if v < 0 else v


def parse(frame):
    """Parse ``frame`` natively; returns what ``mep.dataplane.packet.parse`` returns."""
    from .packet import Parsed
    from .reasons import Reason

    cdef const uint8_t[:] view = frame
    cdef parsed_t p
    cdef int rc
    cdef int n = view.shape[0]
    cdef const uint8_t* b = &view[0] if n else <const uint8_t*>b""
    with nogil:
        rc = parse_frame(b, n, &p)
    if rc:
        return Reason(rc)
    data = bytes(frame)
    out = Parsed(
        eth_dst=data[0:6],
        eth_src=data[6:12],
        vlan_tci=_opt(p.vlan_tci),
        family=p.user.family,
        ip_off=p.user.off,
        ip_len=p.user.length,
        src=_addr(p.user.src, p.user.family),
        dst=_addr(p.user.dst, p.user.family),
        proto=p.user.proto,
        dscp=_opt(p.user.dscp),
        tc=_opt(p.user.tc),
        l4_off=_opt(p.user.l4_off),
        sport=_opt(p.user.sport),
        dport=_opt(p.user.dport),
    )
    if p.tunnel:
        out.tunnel = True
        out.tun_family = p.outer.family
        out.tun_src = _addr(p.outer.src, p.outer.family)
        out.tun_dst = _addr(p.outer.dst, p.outer.family)
        out.tun_sport = p.outer.sport if p.outer.sport >= 0 else 0
        out.tun_dport = p.outer.dport if p.outer.dport >= 0 else 0
        out.teid = p.teid
        out.qfi = _opt(p.qfi)
    return out


def inet_checksum(const unsigned char[:] data, unsigned int initial=0):
    """RFC 1071 checksum of ``data`` (odd length zero-padded); as packet.inet_checksum."""
    cdef unsigned long long acc = initial
    cdef Py_ssize_t i, n = data.shape[0]
    with nogil:
        for i in range(0, n - 1, 2):
            acc += (data[i] << 8) | data[i + 1]
        if n & 1:
            acc += data[n - 1] << 8
        while acc >> 16:
            acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF
