# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The Cython engine: parse, classify and act on frames in nogil C, plus packet helpers.

Sections, in file order (each states its contract at its top):

1. parsing: ``parse_frame``, the twin of ``packet.parse``;
2. checksums: RFC 1071 sums and the RFC 1624 update of ``packet.csum_replace``;
3. output builders: the exact bytes of ``reference.build_target`` and flow replies;
4. classifier: ``RuleTables`` flattens ``tables.build_tables()`` (the tables the XDP
   engine loads) into C arrays; ``classify`` ANDs class vectors word by word;
5. reverse-flow table: reference.py's LRU dict as a hash table with an LRU list;
6. the pipeline: ``process_frame`` (reference.ReferenceEngine._process) and
   ``run_batch``, a loop over frames held in one buffer at given offsets;
7. ``Core``: the state an I/O thread and ``process()`` share, behind one mutex;
8. I/O: AF_XDP or TPACKET_V3 receive, batched sends (AF_XDP, or sendmmsg()), the receive loop;
9. helpers for other parts: GTP-U encapsulation and decapsulation, checksums.

Verdict and reason numbers come from ebpf/reasons.h (written once, there).
Every frame ends in ``record``: one reason, one verdict, at most one rule,
counted in packets and input bytes. ``mep/dataplane/fastpath.py`` is the
engine around this module; docs/fastpath.md the design.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memmove, memset

import os
import time

cdef extern from *:
    """
    #include "reasons.h"
    #define MEP_VERDICT_ENUM(name, num, desc) name = num,
    enum mep_verdict { MEP_VERDICTS(MEP_VERDICT_ENUM) };
    #define MEP_REASON_ENUM(name, num, verdict, desc) name = num,
    enum mep_reason { MEP_REASONS(MEP_REASON_ENUM) };
    #define MEP_REASON_VERDICT(name, num, verdict, desc) [num] = verdict,
    static const unsigned char fp_reason_verdict[256] = { MEP_REASONS(MEP_REASON_VERDICT) };
    struct fp_reason_row { const char *name; int number; int verdict; };
    #define MEP_REASON_ROW(name, num, verdict, desc) { #name, num, verdict },
    static const struct fp_reason_row fp_reason_rows[] = { MEP_REASONS(MEP_REASON_ROW) };
    static const int fp_reason_count = sizeof(fp_reason_rows) / sizeof(fp_reason_rows[0]);
    """
    struct fp_reason_row:
        const char* name
        int number
        int verdict
    const fp_reason_row fp_reason_rows[]
    const int fp_reason_count
    enum mep_verdict:
        MEP_VERDICT_PASS
        MEP_VERDICT_DROP
        MEP_VERDICT_REDIRECT
        MEP_VERDICT_DUPLICATE
    enum mep_reason:
        MEP_PASS_NOT_IP
        MEP_PASS_NO_MATCH
        MEP_PASS_RULE
        MEP_PASS_FLOW_REVERSE
        MEP_PASS_GTPU_NOT_IP
        MEP_PASS_FROM_APP
        MEP_REDIRECT_RULE
        MEP_REDIRECT_FLOW_REPLY
        MEP_DUPLICATE_RULE
        MEP_DROP_RULE
        MEP_DROP_NO_MATCH
        MEP_DROP_TRUNCATED_ETH
        MEP_DROP_TRUNCATED_IPV4
        MEP_DROP_MALFORMED_IPV4
        MEP_DROP_MALFORMED_IPV6
        MEP_DROP_TRUNCATED_IPV6
        MEP_DROP_IPV6_EXT_CHAIN
        MEP_DROP_TRUNCATED_L4
        MEP_DROP_MALFORMED_GTPU
        MEP_DROP_REWRITE_FAMILY
        MEP_DROP_MTU
    const unsigned char fp_reason_verdict[256]

def reason_table():
    """[(name, number, verdict number)] of every reason as compiled in (from ebpf/reasons.h at build time)."""
    return [(fp_reason_rows[i].name.decode(), fp_reason_rows[i].number, fp_reason_rows[i].verdict)
            for i in range(fp_reason_count)]


cdef extern from *:
    """
    static inline uint32_t fp_load_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void fp_store_release(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline uint64_t fp_load_be64(const uint8_t *p) {
        uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v);
    }
    static inline uint64_t fp_load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    /* The first index of sorted a[0..n) whose value is >= v (n when none): a binary search whose step
     * is a conditional move, not a branch (a branch mispredicts about every other step on addresses). */
    static inline uint32_t fp_lower_bound32(const uint32_t *a, uint32_t n, uint32_t v) {
        const uint32_t *base = a;
        if (n == 0)
            return 0;
        while (n > 1) {
            uint32_t half = n >> 1;
            base = base[half - 1] < v ? base + half : base;
            n -= half;
        }
        return (uint32_t)(base - a) + (*base < v);
    }
    static inline uint64_t fp_now_ns(void) {
        struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    }
    """
    uint32_t fp_load_acquire(const uint32_t* p) nogil
    void fp_store_release(uint32_t* p, uint32_t v) nogil
    uint64_t fp_load_be64(const uint8_t* p) nogil
    uint64_t fp_load64(const uint8_t* p) nogil
    uint32_t fp_lower_bound32(const uint32_t* a, uint32_t n, uint32_t v) nogil
    uint64_t fp_now_ns() nogil

cdef enum:
    MAX_IPV6_EXT = 6
    MAX_GTPU_EXT = 4
    GTPU_PORT = 2152
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_GRE = 47
    IPPROTO_ICMPV6 = 58
    OUTER_TTL = 64
    # what a rule does (engine-internal numbering; RuleTables maps TrafficRuleAction onto it)
    FP_ACT_DROP = 1
    FP_ACT_PASS = 2
    FP_ACT_FORWARD = 3
    FP_ACT_DUPLICATE = 4
    # what a target builds (RuleTables maps ruleset.TargetKind onto it)
    FP_DELIVER = 1
    FP_ENCAP_GTPU = 2
    FP_ENCAP_GRE = 3
    CACHE_MIN_WORDS = 3         # smaller rule sets scan about as fast as a cache hit (bench/fastpath_rules.py)
    CLS_PORTS = 1
    CLS_VLAN = 2
    CLS_QFI = 4
    BATCH = 256                 # frames per run_batch call in the I/O loop
    OUT_BUFFER = 4 << 20        # bytes of built outputs per batch (run_batch stops early when full)


# =====================================================================================
# 1. Parsing. Contract: parse_frame(b, end, p) returns 0 and fills ``p`` exactly as
#    packet.parse fills Parsed, or returns the PASS_*/DROP_* reason packet.parse
#    returns. Reads never go past ``end``. Multi-byte fields are big-endian.
# =====================================================================================

cdef inline int u16(const uint8_t* b, int off) noexcept nogil:
    return (b[off] << 8) | b[off + 1]


cdef inline void put16(uint8_t* b, int off, uint32_t v) noexcept nogil:
    b[off] = (v >> 8) & 0xFF
    b[off + 1] = v & 0xFF


cdef inline void put32(uint8_t* b, int off, uint32_t v) noexcept nogil:
    b[off] = v >> 24
    b[off + 1] = (v >> 16) & 0xFF
    b[off + 2] = (v >> 8) & 0xFF
    b[off + 3] = v & 0xFF


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


# =====================================================================================
# 2. Checksums. sum16 adds big-endian 16-bit words (an odd last byte is the high
#    byte of a zero-padded word); fold16 folds with end-around carry. csum_replace
#    is RFC 1624 eqn. 3 over 16-bit words, bit for bit packet.csum_replace, so a
#    wrong incoming checksum stays consistently wrong in every engine.
# =====================================================================================

cdef inline uint64_t sum16(const uint8_t* d, uint32_t n, uint64_t acc) noexcept nogil:
    cdef uint32_t i = 0
    while i + 1 < n:
        acc += (<uint32_t>d[i] << 8) | d[i + 1]
        i += 2
    if n & 1:
        acc += <uint32_t>d[n - 1] << 8
    return acc


cdef inline uint32_t fold16(uint64_t acc) noexcept nogil:
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return <uint32_t>acc


cdef inline uint32_t csum_replace_c(uint32_t csum, const uint8_t* old, const uint8_t* new, int n) noexcept nogil:
    cdef uint64_t acc = (~csum) & 0xFFFF
    cdef int i
    for i in range(0, n, 2):
        acc += (~((<uint32_t>old[i] << 8) | old[i + 1])) & 0xFFFF
    for i in range(0, n, 2):
        acc += (<uint32_t>new[i] << 8) | new[i + 1]
    return (~fold16(acc)) & 0xFFFF


cdef inline void patch_csum(uint8_t* d, int at, const uint8_t* old, const uint8_t* new, int n, bint udp) noexcept nogil:
    cdef uint32_t csum = u16(d, at)
    if udp and csum == 0:
        return  # UDP without a checksum stays without one
    csum = csum_replace_c(csum, old, new, n)
    if udp and csum == 0:
        csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    put16(d, at, csum)


cdef void rewrite_address(uint8_t* dgram, const parsed_t* p, const uint8_t* new, bint source) noexcept nogil:
    """packet.rewrite_address: replace the user packet's destination (or source) in ``dgram``."""
    cdef int family = p.user.family
    cdef int at = (12 if source else 16) if family == 4 else (8 if source else 24)
    cdef int size = 4 if family == 4 else 16
    cdef uint8_t old[16]
    cdef int l4
    memcpy(old, dgram + at, size)
    memcpy(dgram + at, new, size)
    if family == 4:
        patch_csum(dgram, 10, old, new, size, False)
    if p.user.l4_off < 0:
        return
    l4 = p.user.l4_off - p.user.off
    if p.user.proto == IPPROTO_TCP:
        patch_csum(dgram, l4 + 16, old, new, size, False)
    elif p.user.proto == IPPROTO_UDP:
        patch_csum(dgram, l4 + 6, old, new, size, True)
    elif p.user.proto == IPPROTO_ICMPV6 and family == 6:
        patch_csum(dgram, l4 + 2, old, new, size, False)


# =====================================================================================
# 3. Output builders. Each writes one output frame at ``out`` and returns its length,
#    or a negative drop reason. The bytes are reference.build_target's (targets) and
#    reference._flow_reply's (replies); docs/semantics.md section 5 states them.
#    ``out`` has room for the user datagram plus ENCAP_ROOM bytes.
# =====================================================================================

cdef inline void put_ethernet(uint8_t* out, const uint8_t* dst, const uint8_t* src, int family) noexcept nogil:
    memcpy(out, dst, 6)
    memcpy(out + 6, src, 6)
    put16(out, 12, 0x0800 if family == 4 else 0x86DD)


cdef inline int encap_bytes(int kind, int tun_family, int qfi) noexcept nogil:
    """Outer header bytes (without Ethernet) an encapsulation puts before the user datagram."""
    cdef int ip = 20 if tun_family == 4 else 40
    if kind == FP_ENCAP_GRE:
        return ip + 4
    return ip + 8 + (16 if qfi >= 0 else 8)


cdef int write_encap(uint8_t* out, int kind, int tun_family, const uint8_t* tsrc, const uint8_t* tdst,
                     uint32_t teid, int qfi, int dscp, int user_family, uint32_t dgram_len) noexcept nogil:
    """Write the outer IP + UDP/GTP-U (or GRE) headers at ``out``; the user datagram follows them.

    Returns the header length, or -MEP_DROP_MTU when a length field cannot hold
    the result (more than 65,535 bytes: no port MTU allows that output).
    """
    cdef int hlen = encap_bytes(kind, tun_family, qfi)
    cdef int ip = 20 if tun_family == 4 else 40
    cdef uint32_t payload = hlen - ip + dgram_len
    cdef uint32_t gtp_len, tc
    cdef uint8_t* l4 = out + ip
    cdef uint64_t acc
    if payload + (ip if tun_family == 4 else 0) > 0xFFFF:
        return -MEP_DROP_MTU
    if tun_family == 4:
        memset(out, 0, 20)
        out[0] = 0x45
        out[1] = (dscp << 2) & 0xFC
        put16(out, 2, 20 + payload)
        put16(out, 6, 0x4000)
        out[8] = OUTER_TTL
        out[9] = IPPROTO_GRE if kind == FP_ENCAP_GRE else IPPROTO_UDP
        memcpy(out + 12, tsrc, 4)
        memcpy(out + 16, tdst, 4)
        put16(out, 10, (~fold16(sum16(out, 20, 0))) & 0xFFFF)
    else:
        tc = (dscp << 2) & 0xFC
        out[0] = 0x60 | (tc >> 4)
        out[1] = (tc & 0x0F) << 4
        out[2] = 0
        out[3] = 0
        put16(out, 4, payload)
        out[6] = IPPROTO_GRE if kind == FP_ENCAP_GRE else IPPROTO_UDP
        out[7] = OUTER_TTL
        memcpy(out + 8, tsrc, 16)
        memcpy(out + 24, tdst, 16)
    if kind == FP_ENCAP_GRE:
        l4[0] = 0
        l4[1] = 0
        put16(l4, 2, 0x0800 if user_family == 4 else 0x86DD)
        return hlen
    gtp_len = dgram_len + (8 if qfi >= 0 else 0)
    put16(l4, 0, GTPU_PORT)
    put16(l4, 2, GTPU_PORT)
    put16(l4, 4, payload)
    put16(l4, 6, 0)
    l4[8] = 0x34 if qfi >= 0 else 0x30
    l4[9] = 255
    put16(l4, 10, gtp_len)
    put32(l4, 12, teid)
    if qfi >= 0:
        l4[16] = 0
        l4[17] = 0
        l4[18] = 0
        l4[19] = 0x85
        l4[20] = 0x01
        l4[21] = 0x10
        l4[22] = qfi & 0x3F
        l4[23] = 0
    if tun_family == 6:
        # The full UDP checksum over the IPv6 pseudo-header (RFC 8200 8.1: never 0).
        acc = sum16(tsrc, 16, 0)
        acc = sum16(tdst, 16, acc)
        acc += payload + IPPROTO_UDP
        acc = sum16(l4, payload, acc)
        acc = (~fold16(acc)) & 0xFFFF
        put16(l4, 6, acc if acc else 0xFFFF)
    return hlen


cdef inline int user_dscp(const parsed_t* p) noexcept nogil:
    return p.user.dscp if p.user.family == 4 else p.user.tc >> 2


cdef int build_target(const fp_target* tg, uint32_t rule_id, const parsed_t* p, const uint8_t* frame,
                      uint8_t* out) noexcept nogil:
    """The frame target ``tg`` sends for this packet (reference.build_target), or -reason."""
    cdef uint32_t n = p.user.length
    cdef int hlen, rc
    if tg.new_dst_family and tg.new_dst_family != p.user.family:
        return -MEP_DROP_REWRITE_FAMILY
    if tg.kind == FP_DELIVER:
        memcpy(out + 14, frame + p.user.off, n)
        if tg.new_dst_family:
            rewrite_address(out + 14, p, tg.new_dst, False)
        put_ethernet(out, tg.dst_mac, tg.src_mac, p.user.family)
        return 14 + n
    hlen = encap_bytes(tg.kind, tg.tun_family, p.qfi if p.tunnel else -1)
    memcpy(out + 14 + hlen, frame + p.user.off, n)
    if tg.new_dst_family:
        rewrite_address(out + 14 + hlen, p, tg.new_dst, False)
    # The packet's own TEID and QFI when it came in GTP-U; otherwise the rule id as TEID.
    rc = write_encap(out + 14, tg.kind, tg.tun_family, tg.tun_src, tg.tun_dst,
                     p.teid if p.tunnel else rule_id, p.qfi if p.tunnel else -1,
                     user_dscp(p), p.user.family, n)
    if rc < 0:
        return rc
    put_ethernet(out, tg.dst_mac, tg.src_mac, tg.tun_family)
    return 14 + hlen + n


cdef int build_flow_reply(const fp_flow* e, const parsed_t* p, const uint8_t* frame, uint8_t* out) noexcept nogil:
    """A reply sent back toward the UE: the forward packet's MACs swapped, its tag, the rewrite undone."""
    cdef uint32_t n = p.user.length
    cdef int l2 = 18 if e.has_vlan else 14
    memcpy(out, e.eth_dst, 6)
    memcpy(out + 6, e.eth_src, 6)
    if e.has_vlan:
        put16(out, 12, 0x8100)
        put16(out, 14, e.vlan_tci)
    put16(out, l2 - 2, 0x0800 if p.user.family == 4 else 0x86DD)
    memcpy(out + l2, frame + p.user.off, n)
    if e.has_restore:
        rewrite_address(out + l2, p, e.restore_src, True)
    return l2 + n


cdef inline bint over_mtu(const fp_tables* t, uint8_t port, const uint8_t* out, uint32_t length) noexcept nogil:
    """An output larger than the egress port's MTU (its Ethernet header, 14 or 18 bytes, not counted)."""
    cdef uint32_t l2
    if not t.ports[port].known:
        return False
    l2 = 18 if out[12] == 0x81 and out[13] == 0x00 else 14
    return length - l2 > t.ports[port].mtu


# =====================================================================================
# 4. Classifier. RuleTables holds tables.build_tables(ruleset) as C arrays: per
#    field the class of every value (value fields: a direct array over the domain
#    and the absent value; address fields: sorted intervals per family, binary
#    search, class 0 when none covers the value) and each class's filter vector.
#    classify() ANDs the vectors of the fields some filter uses, most selective
#    first, word by word; a word is abandoned at its first zero AND, and only words
#    that the classes' key summaries name (tables.py) and every vector's summary (one
#    bit per non-zero word) marks are read. The lowest set bit is the first matching
#    filter, its rule the match. The candidate words also take each key pair's
#    two pair summaries ANDed (key_pair_words). FLOW rules: a second scan
#    with the swapped values, masked by the FLOW filters, only over the words before
#    the forward match; the lower rule wins, forward on a tie (tables.lookup).
# =====================================================================================

cdef enum:
    F_SRC = 0
    F_DST = 1
    F_TUN_SRC = 2
    F_TUN_DST = 3
    F_SPORT = 4
    F_DPORT = 5
    F_TUN_SPORT = 6
    F_TUN_DPORT = 7
    F_PROTO = 8
    F_VLAN = 9
    F_DSCP = 10
    F_TC = 11
    F_QFI = 12

cdef uint32_t VALUE_DOMAIN_C[13]
VALUE_DOMAIN_C[:] = [0, 0, 0, 0, 65536, 65536, 65536, 65536, 256, 4096, 64, 256, 64]


cdef uint32_t addr_class(const fp_addr_table* a, int family, const uint8_t* addr) noexcept nogil:
    cdef uint32_t lo = 0, hi, mid
    cdef uint32_t v4
    cdef uint64_t vh, vl
    if family == 4:
        v4 = (<uint32_t>addr[0] << 24) | (<uint32_t>addr[1] << 16) | (<uint32_t>addr[2] << 8) | addr[3]
        if a.n4 == 0 or v4 < a.lo4[0] or v4 > a.hi4[a.n4 - 1]:
            return 0
        mid = (v4 - a.lo4[0]) >> a.shift4  # the bucket: its intervals are a few of the n4
        lo = a.idx4[mid]
        lo += fp_lower_bound32(a.hi4 + lo, a.idx4[mid + 1] - lo, v4)
        if lo < a.n4 and a.lo4[lo] <= v4:
            return a.cls4[lo]
        return 0
    vh = fp_load_be64(addr)
    vl = fp_load_be64(addr + 8)
    hi = a.n6
    while lo < hi:
        mid = (lo + hi) >> 1
        if a.hi6[2 * mid] < vh or (a.hi6[2 * mid] == vh and a.hi6[2 * mid + 1] < vl):
            lo = mid + 1
        else:
            hi = mid
    if lo < a.n6 and (a.lo6[2 * lo] < vh or (a.lo6[2 * lo] == vh and a.lo6[2 * lo + 1] <= vl)):
        return a.cls6[lo]
    return 0


cdef uint32_t field_class(const fp_tables* t, int f, const parsed_t* p, bint reverse) noexcept nogil:
    """The class the packet's value of field ``f`` falls in (tables.packet_values/class_of)."""
    cdef int g = f
    cdef int v
    if reverse:  # the FLOW lookup: sources and destinations swapped
        if f == F_SRC or f == F_TUN_SRC or f == F_SPORT or f == F_TUN_SPORT:
            g = f + 1
        elif f == F_DST or f == F_TUN_DST or f == F_DPORT or f == F_TUN_DPORT:
            g = f - 1
    if f < NADDR_FIELDS:
        if g == F_SRC:
            return addr_class(&t.addr[f], p.user.family, p.user.src)
        if g == F_DST:
            return addr_class(&t.addr[f], p.user.family, p.user.dst)
        if not p.tunnel:
            return 0
        if g == F_TUN_SRC:
            return addr_class(&t.addr[f], p.outer.family, p.outer.src)
        return addr_class(&t.addr[f], p.outer.family, p.outer.dst)
    if g == F_SPORT:
        v = p.user.sport
    elif g == F_DPORT:
        v = p.user.dport
    elif g == F_TUN_SPORT:
        v = p.outer.sport if p.tunnel else -1
    elif g == F_TUN_DPORT:
        v = p.outer.dport if p.tunnel else -1
    elif g == F_PROTO:
        v = p.user.proto
    elif g == F_VLAN:
        v = p.vlan_tci & 0x0FFF if p.vlan_tci >= 0 else -1
    elif g == F_DSCP:
        v = p.user.dscp if p.user.family == 4 else -1
    elif g == F_TC:
        v = p.user.tc if p.user.family == 6 else -1
    else:
        v = p.qfi if p.tunnel else -1
    return t.value_class[f][VALUE_DOMAIN_C[f] if v < 0 else v]


cdef void summarize(const uint64_t* vec, uint32_t nwords, uint64_t* summary) noexcept nogil:
    """Set bit w of ``summary`` for every word w of ``vec`` that is not zero (``summary`` starts zeroed)."""
    cdef uint32_t w
    for w in range(nwords):
        if vec[w]:
            summary[w >> 6] |= (<uint64_t>1) << (w & 63)


cdef extern from *:
    """
    /* The first filter set in the AND of nvec vectors within `words` words (one up to FP_CHUNK - 1
     * words beyond may be returned too); -1: none.
     * The candidate words, 64 at a time, are those the vectors' key summaries (sums[k] + nsum) or
     * `unkeyed` name (tables.py: a match can be in no other word) that every vector's summary
     * marks non-zero:
     * only chunks of FP_CHUNK words holding a candidate are read, so a scan costs the words that
     * can match, not all of them. A chunk is ANDed with no branch between the vectors: a loop the compiler
     * unrolls and vectorizes (SSE2 here), where a word-by-word AND stopping at the first zero
     * mispredicted its way through rule sets whose broad filters leave most words non-zero in most
     * vectors (a new flow at 1k rules, match at the bottom: 148 -> 116 ns). Vectors are padded with
     * zero words to a multiple of FP_CHUNK, so a chunk never reads past its vector and the padding
     * never matches. */
    #define FP_CHUNK 8
    static int fp_scan(const uint64_t *const *vecs, const uint64_t *const *sums, int nvec,
                       const uint64_t *unkeyed, uint32_t nsum, uint32_t words)
    {
        uint32_t s, w, i;
        int k;

        if (words < FP_CHUNK) {  /* less than a chunk: each word ANDed across the vectors, no summaries */
            for (w = 0; w < words; w++) {
                uint64_t acc = vecs[0][w];

                for (k = 1; k < nvec; k++)
                    acc &= vecs[k][w];
                if (acc)
                    return (int)(w * 64) + __builtin_ctzll(acc);
            }
            return -1;
        }
        for (s = 0; (s << 6) < words; s++) {
            uint64_t cand = ~(uint64_t)0, key = unkeyed[s];
            for (k = 0; k < nvec; k++) {
                cand &= sums[k][s];
                key |= sums[k][nsum + s];
            }
            cand &= key;
            while (cand) {
                uint64_t acc[FP_CHUNK];

                w = (s << 6) + ((uint32_t)__builtin_ctzll(cand) & ~(uint32_t)(FP_CHUNK - 1));
                if (w >= words)
                    return -1;
                memcpy(acc, vecs[0] + w, sizeof(acc));
                for (k = 1; k < nvec; k++) {
                    const uint64_t *v = vecs[k] + w;
                    for (i = 0; i < FP_CHUNK; i++)
                        acc[i] &= v[i];
                }
                for (i = 0; i < FP_CHUNK; i++)
                    if (acc[i])
                        return (int)((w + i) * 64) + __builtin_ctzll(acc[i]);
                cand &= ~((((uint64_t)1 << FP_CHUNK) - 1) << (w & 63));
            }
        }
        return -1;
    }
    """
    enum:
        FP_CHUNK
    int fp_scan(const uint64_t** vecs, const uint64_t** sums, int nvec, const uint64_t* unkeyed, uint32_t nsum,
                uint32_t words) nogil


cdef inline void key_pair_words(const fp_tables* t, const uint64_t** by_field, uint64_t* out) noexcept nogil:
    """``out``: the words of the filters that constrain no field, and of each key pair's two pair summaries
    ANDed (``by_field``: each used field's class summaries), which fp_scan ORs with the key summaries."""
    cdef uint32_t p, s, off
    cdef const uint64_t* a
    cdef const uint64_t* b
    memcpy(out, t.unkeyed, 8 * t.nsum)
    for p in range(t.npairs):
        off = (2 + p) * t.nsum
        a = by_field[t.pair_a[p]] + off
        b = by_field[t.pair_b[p]] + off
        for s in range(t.nsum):
            out[s] |= a[s] & b[s]


cdef int classify(const fp_tables* t, const parsed_t* p, bint* reverse) noexcept nogil:
    """Index of the first matching rule (``reverse`` set for a FLOW reverse match), -1: none."""
    cdef const uint64_t* vecs[NFIELDS + 1]
    cdef const uint64_t* sums[NFIELDS + 1]
    cdef const uint64_t* by_field[NFIELDS]
    cdef uint64_t keyed[MAX_NSUM]
    cdef uint32_t k, cls
    cdef int f, fwd = -1, rev
    reverse[0] = False
    if t.nfilters == 0:
        return -1
    if t.nused == 0:
        fwd = 0  # no filter constrains any field: every filter matches, the first one wins
    else:
        for k in range(t.nused):
            f = t.used[k]
            cls = field_class(t, f, p, False)
            vecs[k] = t.vectors[f] + <size_t>cls * t.stride
            sums[k] = by_field[f] = t.summaries[f] + <size_t>cls * t.sumstride
        if t.nwords >= FP_CHUNK:  # fp_scan reads no summary below a chunk
            key_pair_words(t, by_field, keyed)
        fwd = fp_scan(vecs, sums, t.nused, keyed, t.nsum, t.nwords)
    if t.flow_mask == NULL:
        return t.filter_rule[fwd] if fwd >= 0 else -1
    vecs[0] = t.flow_mask
    sums[0] = t.flow_summary
    for k in range(t.nused):
        f = t.used[k]
        cls = field_class(t, f, p, True)
        vecs[k + 1] = t.vectors[f] + <size_t>cls * t.stride
        sums[k + 1] = by_field[f] = t.summaries[f] + <size_t>cls * t.sumstride
    if t.nwords >= FP_CHUNK:
        key_pair_words(t, by_field, keyed)
    rev = fp_scan(vecs, sums, t.nused + 1, keyed, t.nsum, t.nwords if fwd < 0 else <uint32_t>(fwd // 64) + 1)
    if rev >= 0 and (fwd < 0 or t.filter_rule[rev] < t.filter_rule[fwd]):
        reverse[0] = True
        return t.filter_rule[rev]
    return t.filter_rule[fwd] if fwd >= 0 else -1


cdef int rule_by_id(const fp_tables* t, uint32_t rule_id) noexcept nogil:
    cdef uint32_t lo = 0, hi = t.nrules, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if t.ids[mid] < rule_id:
            lo = mid + 1
        else:
            hi = mid
    if lo < t.nrules and t.ids[lo] == rule_id:
        return t.id_index[lo]
    return -1


cdef inline uint32_t hash_bytes(const uint8_t* b, size_t n) noexcept nogil:
    """A 64-bit multiply-xorshift mix over ``n`` bytes (a multiple of 8), folded to 32 bits."""
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL
    cdef size_t i
    for i in range(0, n, 8):
        h ^= fp_load64(b + i)
        h *= 0xFF51AFD7ED558CCDULL
        h ^= h >> 32
    return <uint32_t>(h ^ (h >> 29))


cdef inline uint64_t mix64(uint64_t h, uint64_t v) noexcept nogil:
    h ^= v
    h *= 0xFF51AFD7ED558CCDULL
    return h ^ (h >> 32)


cdef inline uint64_t addr_words(int family, const uint8_t* addr, uint64_t* out) noexcept nogil:
    """Write an address as the key's two words (IPv4: its 4 bytes then zeros) and return what the hash
    mixes of it: the IPv4 address, or the IPv6 address's words folded."""
    cdef uint32_t a4
    if family == 4:
        memcpy(&a4, addr, 4)  # a 4-byte load: parsing stored 4 bytes there
        out[0] = a4
        out[1] = 0
        return a4
    out[0] = fp_load64(addr)
    out[1] = fp_load64(addr + 8)
    return mix64(out[0], out[1])


if sizeof(fp_cls_key) != 80:
    raise ImportError("fp_cls_key is not ten 64-bit words, as cls_key() writes it")


cdef uint32_t cls_key(fp_cls_key* k, const parsed_t* p) noexcept nogil:
    """Fill ``k`` with the classification inputs of ``p`` (field_class reads nothing else); its hash.

    The key is written as ten 64-bit words computed in registers and hashed from those registers:
    written field by field into a zeroed key and read back as words for the hash, every word read
    waited for the byte stores under it to retire (no store forwarding), about a quarter of a new
    flow's cost outside the scan at 1k rules (perf annotate)."""
    cdef uint64_t* kw = <uint64_t*>k
    cdef uint64_t present = 0, sport = 0, dport = 0, vlan = 0, qfi = 0, tun_sport = 0, tun_dport = 0
    cdef uint64_t tun_family = 0, dscp_tc, h
    if p.user.sport >= 0:
        present |= CLS_PORTS
        sport = <uint16_t>p.user.sport
        dport = <uint16_t>p.user.dport
    if p.vlan_tci >= 0:
        present |= CLS_VLAN
        vlan = p.vlan_tci & 0x0FFF
    if p.tunnel:
        tun_family = <uint8_t>p.outer.family
        tun_sport = <uint16_t>p.outer.sport
        tun_dport = <uint16_t>p.outer.dport
        if p.qfi >= 0:
            present |= CLS_QFI
            qfi = <uint8_t>p.qfi
    dscp_tc = <uint8_t>(p.user.dscp if p.user.family == 4 else p.user.tc)
    # fp_cls_key's layout, little-endian: family, tun_family, proto, present, sport, dport | tun_sport,
    # tun_dport, vlan, dscp_tc, qfi | src | dst | tun_src | tun_dst
    kw[0] = (<uint64_t><uint8_t>p.user.family | tun_family << 8 | <uint64_t><uint8_t>p.user.proto << 16
             | present << 24 | sport << 32 | dport << 48)
    kw[1] = tun_sport | tun_dport << 16 | vlan << 32 | dscp_tc << 48 | qfi << 56
    h = mix64(mix64(0x9E3779B97F4A7C15ULL, kw[0]), kw[1])
    h = mix64(h, addr_words(p.user.family, p.user.src, kw + 2) << 32 ^ addr_words(p.user.family, p.user.dst, kw + 4))
    if p.tunnel:
        h = mix64(h, addr_words(p.outer.family, p.outer.src, kw + 6) << 32
                  ^ addr_words(p.outer.family, p.outer.dst, kw + 8))
    else:
        kw[6] = kw[7] = kw[8] = kw[9] = 0
    return <uint32_t>(h ^ (h >> 29))


cdef int classify_cached(fp_core* c, const fp_tables* t, const parsed_t* p, bint* reverse) noexcept nogil:
    """classify() behind a cache of its results, for rule sets of CACHE_MIN_WORDS words or more.

    A 4-way set-associative table: an entry holds one packet's classification
    inputs (fp_cls_key) and the result under the tables of one epoch;
    Core.swap starts a new epoch, so a new rule set never sees an old result.
    What it returns is always what classify() returns for the packet.
    """
    cdef fp_cls_key k
    cdef fp_cls_bucket* b
    cdef uint32_t h
    cdef int i, w, ri
    if t.nwords < CACHE_MIN_WORDS:
        return classify(t, p, reverse)
    h = cls_key(&k, p)
    b = &c.cache[h & c.cache_mask]
    for i in range(4):
        if b.hash[i] == h and b.epoch[i] == c.epoch and memcmp(&b.key[i], &k, sizeof(fp_cls_key)) == 0:
            c.cache_hits += 1
            reverse[0] = b.reverse[i]
            return b.rule[i]
    c.cache_misses += 1
    ri = classify(t, p, reverse)
    i = b.victim
    for w in range(4):
        if b.epoch[w] != c.epoch:
            i = w
            break
    else:
        b.victim = (b.victim + 1) & 3
    b.hash[i] = h
    b.epoch[i] = c.epoch
    b.rule[i] = ri
    b.reverse[i] = reverse[0]
    memcpy(&b.key[i], &k, sizeof(fp_cls_key))
    return ri


@cython.no_gc_clear  # __dealloc__ frees what _blocks lists: the collector must not empty it first
cdef class RuleTables:
    """A CompiledRuleSet and its classifier tables as C arrays, ready for ``Core.swap``.

    ``RuleTables(tables, ruleset, slots)``: ``tables`` is ``build_tables(ruleset)``
    (the tables the XDP engine writes into its maps), ``slots`` maps every rule
    id to its counter slot. Immutable once built; the Core that runs it keeps a
    reference until the next swap.
    """

    cdef fp_tables t
    cdef list _blocks   # malloc'd arrays, freed with the object
    cdef readonly int generation

    def __cinit__(self) -> None:
        memset(&self.t, 0, sizeof(fp_tables))
        self._blocks = []

    def __dealloc__(self) -> None:
        cdef size_t addr
        for addr in self._blocks:
            free(<void*>addr)

    cdef void* _alloc(self, size_t nbytes) except NULL:
        cdef void* mem = calloc(1, nbytes if nbytes else 1)
        if mem == NULL:
            raise MemoryError(f"{nbytes} bytes for the classifier tables")
        self._blocks.append(<size_t>mem)
        return mem

    def __init__(self, tables, ruleset, slots) -> None:
        from ..models import TrafficRuleAction as Action
        from .ruleset import TargetKind
        from .tables import ADDRESS_FIELDS, VALUE_DOMAIN, VALUE_FIELDS, Field, ipv4_index, iter_value_classes

        if [int(f) for f in ADDRESS_FIELDS] != list(range(NADDR_FIELDS)) or len(Field) != NFIELDS:
            raise RuntimeError("tables.Field changed: _fastpath expects the four address fields first, 13 in all")
        for f in VALUE_FIELDS:
            if VALUE_DOMAIN[f] != VALUE_DOMAIN_C[int(f)]:
                raise RuntimeError(f"tables.VALUE_DOMAIN[{f.name}] changed: _fastpath expects {VALUE_DOMAIN_C[int(f)]}")
        actions = {Action.DROP: FP_ACT_DROP, Action.PASSTHROUGH: FP_ACT_PASS,
                   Action.FORWARD_DECAPSULATED: FP_ACT_FORWARD, Action.FORWARD_ENCAPSULATED: FP_ACT_FORWARD,
                   Action.DUPLICATE_DECAPSULATED: FP_ACT_DUPLICATE, Action.DUPLICATE_ENCAPSULATED: FP_ACT_DUPLICATE}
        kinds = {TargetKind.DELIVER: FP_DELIVER, TargetKind.ENCAP_GTPU: FP_ENCAP_GTPU,
                 TargetKind.ENCAP_GRE: FP_ENCAP_GRE}
        cdef fp_tables* t = &self.t
        cdef uint32_t nwords = tables.nwords
        cdef uint32_t stride = (nwords + FP_CHUNK - 1) // FP_CHUNK * FP_CHUNK
        cdef uint32_t i, v, lo, hi, cls
        cdef fp_rule* r
        cdef fp_target* tg
        cdef uint64_t* vec
        cdef uint64_t* summary
        cdef uint32_t* values
        cdef fp_addr_table* a
        cdef bytes raw
        self.generation = ruleset.generation
        t.nfilters = tables.nfilters
        t.nwords = nwords
        t.stride = stride
        t.nsum = (stride + 63) // 64 if stride else 1
        if t.nsum > MAX_NSUM:
            raise ValueError(f"{tables.nfilters} filters: the fast path classifies at most {MAX_NSUM * 4096}")
        if len(tables.pairs) > MAX_KEY_PAIRS:
            raise RuntimeError(f"tables.MAX_KEY_PAIRS changed: _fastpath holds {MAX_KEY_PAIRS} key pairs")
        t.npairs = len(tables.pairs)
        for i, (a_field, b_field) in enumerate(tables.pairs):
            t.pair_a[i], t.pair_b[i] = int(a_field), int(b_field)
        t.sumstride = (2 + t.npairs) * t.nsum
        t.unkeyed = <uint64_t*>self._alloc(8 * t.nsum)
        raw = tables.unkeyed.to_bytes(8 * t.nsum, "little")
        memcpy(t.unkeyed, PyBytes_AS_STRING(raw), 8 * t.nsum)
        t.nrules = len(ruleset.rules)
        t.default_drop = ruleset.default_verdict.name == "DROP"
        t.filter_rule = <uint32_t*>self._alloc(4 * max(1, t.nfilters))
        for i, v in enumerate(tables.filter_rule):
            t.filter_rule[i] = v
        if tables.flow_mask:
            t.flow_mask = <uint64_t*>self._alloc(8 * stride)
            raw = tables.flow_mask.to_bytes(8 * stride, "little")
            memcpy(t.flow_mask, PyBytes_AS_STRING(raw), 8 * stride)
            t.flow_summary = <uint64_t*>self._alloc(16 * t.nsum)
            summarize(t.flow_mask, stride, t.flow_summary)
        # rules, and their ids in ascending order for the flow-state check
        t.rules = <fp_rule*>self._alloc(sizeof(fp_rule) * max(1, t.nrules))
        t.ids = <uint32_t*>self._alloc(4 * max(1, t.nrules))
        t.id_index = <uint32_t*>self._alloc(4 * max(1, t.nrules))
        for i, rule in enumerate(ruleset.rules):
            r = &t.rules[i]
            r.rule_id = rule.rule_id
            r.version = rule.version
            r.slot = slots[rule.rule_id]
            r.action = actions[rule.action]
            r.flow = rule.flow
            r.ntargets = len(rule.targets)
            if r.ntargets > MAX_TARGETS:
                raise ValueError(f"rule {rule.rule_id} has {r.ntargets} destinations; at most {MAX_TARGETS}")
            for k, target in enumerate(rule.targets):
                tg = &r.targets[k]
                tg.kind = kinds[target.kind]
                tg.port = target.port
                memcpy(tg.src_mac, <const char*>target.src_mac, 6)
                memcpy(tg.dst_mac, <const char*>target.dst_mac, 6)
                if target.new_dst_ip is not None:
                    tg.new_dst_family = target.new_dst_ip.family
                    raw = target.new_dst_ip.packed()
                    memcpy(tg.new_dst, PyBytes_AS_STRING(raw), len(raw))
                if target.tunnel_src is not None:
                    tg.tun_family = target.tunnel_src.family
                    raw = target.tunnel_src.packed()
                    memcpy(tg.tun_src, PyBytes_AS_STRING(raw), len(raw))
                    raw = target.tunnel_dst.packed()
                    memcpy(tg.tun_dst, PyBytes_AS_STRING(raw), len(raw))
        for i, (rule_id, index) in enumerate(sorted((rule.rule_id, n) for n, rule in enumerate(ruleset.rules))):
            t.ids[i] = rule_id
            t.id_index[i] = index
        for port in ruleset.ports:
            if not 0 < port.index <= MAX_PORT:
                raise ValueError(f"port index {port.index} is outside 1..{MAX_PORT}")
            t.ports[port.index].known = 1
            t.ports[port.index].app = port.role.value == "app"
            t.ports[port.index].mtu = port.mtu
            memcpy(t.ports[port.index].mac, <const char*>port.mac, 6)
        # fields: the used ones, fewest filters open on them (most selective) first
        used = sorted((f for f, table in tables.fields.items() if table.used),
                      key=lambda f: (tables.fields[f].classes[0].bit_count(), int(f)))
        t.nused = len(used)
        for i, f in enumerate(used):
            t.used[i] = int(f)
            table = tables.fields[f]
            vec = <uint64_t*>self._alloc(8 * stride * len(table.classes))
            summary = <uint64_t*>self._alloc(8 * t.sumstride * len(table.classes))
            for cls, mask in enumerate(table.classes):
                raw = mask.to_bytes(8 * stride, "little")
                memcpy(vec + <size_t>cls * stride, PyBytes_AS_STRING(raw), 8 * stride)
                summarize(vec + <size_t>cls * stride, stride, summary + <size_t>cls * t.sumstride)
                raw = b"".join(s.to_bytes(8 * t.nsum, "little") for s in
                               (table.key_summaries[cls], *(pair[cls] for pair in table.pair_summaries)))
                memcpy(summary + <size_t>cls * t.sumstride + t.nsum, PyBytes_AS_STRING(raw), len(raw))
            t.vectors[int(f)] = vec
            t.summaries[int(f)] = summary
            if f in ADDRESS_FIELDS:
                a = &t.addr[int(f)]
                v4 = ipv4_index(table)
                v6 = [iv for iv in table.intervals if iv.family == 6]
                a.n4, a.n6 = len(v4.lo), len(v6)
                a.lo4 = <uint32_t*>self._alloc(4 * max(1, a.n4))
                a.hi4 = <uint32_t*>self._alloc(4 * max(1, a.n4))
                a.cls4 = <uint32_t*>self._alloc(4 * max(1, a.n4))
                for i4 in range(a.n4):
                    a.lo4[i4], a.hi4[i4], a.cls4[i4] = v4.lo[i4], v4.hi[i4], v4.cls[i4]
                a.shift4 = v4.shift
                a.nb4 = len(v4.starts) - 1
                a.idx4 = <uint32_t*>self._alloc(4 * (a.nb4 + 1))
                for b in range(a.nb4 + 1):
                    a.idx4[b] = v4.starts[b]
                a.lo6 = <uint64_t*>self._alloc(16 * max(1, a.n6))
                a.hi6 = <uint64_t*>self._alloc(16 * max(1, a.n6))
                a.cls6 = <uint32_t*>self._alloc(4 * max(1, a.n6))
                for i6, iv in enumerate(v6):
                    a.lo6[2 * i6], a.lo6[2 * i6 + 1] = iv.lo >> 64, iv.lo & 0xFFFF_FFFF_FFFF_FFFF
                    a.hi6[2 * i6], a.hi6[2 * i6 + 1] = iv.hi >> 64, iv.hi & 0xFFFF_FFFF_FFFF_FFFF
                    a.cls6[i6] = iv.cls
            else:
                values = <uint32_t*>self._alloc(4 * (VALUE_DOMAIN[f] + 1))
                for lo, hi, cls in iter_value_classes(table):
                    if cls:
                        for v in range(lo, hi + 1):
                            values[v] = cls
                t.value_class[int(f)] = values

    @property
    def nfilters(self) -> int:
        """Traffic filters (vector bits) of the rule set."""
        return self.t.nfilters

    @property
    def nwords(self) -> int:
        """64-bit words per filter vector."""
        return self.t.nwords

    @property
    def field_order(self) -> list:
        """The fields some filter constrains, in the order a scan ANDs them (tables.Field numbers)."""
        return [self.t.used[i] for i in range(self.t.nused)]


# =====================================================================================
# 5. Reverse-flow table: reference.ReferenceEngine._flows (an LRU OrderedDict of
#    at most ``capacity`` entries) as a chained hash table over a fixed entry
#    array, with a doubly linked list from the least to the most recently used.
#    Keys are zero-padded structs compared with memcmp. Not thread-safe: callers
#    hold Core.lock.
# =====================================================================================

cdef inline uint32_t flow_hash(const fp_flow_key* k) noexcept nogil:
    return hash_bytes(<const uint8_t*>k, sizeof(fp_flow_key))


cdef int flows_init(fp_flows* ft, uint32_t capacity) noexcept nogil:
    cdef uint32_t nb = 1, i
    while nb < 2 * capacity:
        nb <<= 1
    ft.capacity = capacity
    ft.count = 0
    ft.mask = nb - 1
    ft.buckets = <int32_t*>malloc(4 * nb)
    ft.entries = <fp_flow*>calloc(capacity, sizeof(fp_flow))
    if ft.buckets == NULL or ft.entries == NULL:
        return -1
    flows_clear(ft)
    return 0


cdef void flows_clear(fp_flows* ft) noexcept nogil:
    cdef uint32_t i
    for i in range(ft.mask + 1):
        ft.buckets[i] = -1
    for i in range(ft.capacity):
        ft.entries[i].chain = <int32_t>i + 1 if i + 1 < ft.capacity else -1
    ft.free_head = 0
    ft.oldest = -1
    ft.newest = -1
    ft.count = 0


cdef void flows_free(fp_flows* ft) noexcept nogil:
    free(ft.buckets)
    free(ft.entries)
    ft.buckets = NULL
    ft.entries = NULL


cdef inline void lru_unlink(fp_flows* ft, int32_t i) noexcept nogil:
    cdef fp_flow* e = &ft.entries[i]
    if e.older >= 0:
        ft.entries[e.older].newer = e.newer
    else:
        ft.oldest = e.newer
    if e.newer >= 0:
        ft.entries[e.newer].older = e.older
    else:
        ft.newest = e.older


cdef inline void lru_append(fp_flows* ft, int32_t i) noexcept nogil:
    cdef fp_flow* e = &ft.entries[i]
    e.newer = -1
    e.older = ft.newest
    if ft.newest >= 0:
        ft.entries[ft.newest].newer = i
    else:
        ft.oldest = i
    ft.newest = i


cdef int32_t flows_find(fp_flows* ft, const fp_flow_key* k) noexcept nogil:
    cdef int32_t i = ft.buckets[flow_hash(k) & ft.mask]
    while i >= 0:
        if memcmp(&ft.entries[i].key, k, sizeof(fp_flow_key)) == 0:
            return i
        i = ft.entries[i].chain
    return -1


cdef void flows_remove(fp_flows* ft, int32_t i) noexcept nogil:
    cdef uint32_t b = flow_hash(&ft.entries[i].key) & ft.mask
    cdef int32_t* link = &ft.buckets[b]
    while link[0] != i:
        link = &ft.entries[link[0]].chain
    link[0] = ft.entries[i].chain
    lru_unlink(ft, i)
    ft.entries[i].chain = ft.free_head
    ft.free_head = i
    ft.count -= 1


cdef fp_flow* flows_put(fp_flows* ft, const fp_flow_key* k) noexcept nogil:
    """The entry for ``k``, made the most recent; a new one evicts the oldest when full."""
    cdef int32_t i = flows_find(ft, k)
    cdef uint32_t b
    if i >= 0:
        lru_unlink(ft, i)
        lru_append(ft, i)
        return &ft.entries[i]
    if ft.count == ft.capacity:
        flows_remove(ft, ft.oldest)
    i = ft.free_head
    ft.free_head = ft.entries[i].chain
    memcpy(&ft.entries[i].key, k, sizeof(fp_flow_key))
    b = flow_hash(k) & ft.mask
    ft.entries[i].chain = ft.buckets[b]
    ft.buckets[b] = i
    lru_append(ft, i)
    ft.count += 1
    return &ft.entries[i]


cdef inline void flow_key(fp_flow_key* k, uint8_t port, const parsed_t* p, const uint8_t* src, int sport,
                          const uint8_t* dst, int dport) noexcept nogil:
    """reference.FlowKey: (port, family, protocol, src, src port, dst, dst port); absent ports are 0."""
    memset(k, 0, sizeof(fp_flow_key))
    k.port = port
    k.family = p.user.family
    k.proto = p.user.proto
    k.sport = sport if sport >= 0 else 0
    k.dport = dport if dport >= 0 else 0
    memcpy(k.src, src, 4 if p.user.family == 4 else 16)
    memcpy(k.dst, dst, 4 if p.user.family == 4 else 16)


# =====================================================================================
# 6. The pipeline. process_frame is reference.ReferenceEngine._process + record:
#    parse; no rule set: PASS; a flow reply; from an app port: PASS; classify; act.
#    Outputs that are the input unchanged (the stack) are not copied: they point
#    at the input (from_input). Built outputs go to ``obuf``; the caller guarantees
#    2 x (frame length + ENCAP_ROOM) bytes of room there.
# =====================================================================================

cdef inline void record(fp_core* c, const fp_tables* t, fp_result* r, int rule_index, uint32_t length) noexcept nogil:
    """The single exit: count the frame for its reason (hence verdict) and rule."""
    r.verdict = fp_reason_verdict[r.reason]
    c.reason_packets[r.reason] += 1
    c.reason_bytes[r.reason] += length
    if rule_index >= 0:
        r.rule_id = t.rules[rule_index].rule_id
        c.slot_packets[t.rules[rule_index].slot] += 1
        c.slot_bytes[t.rules[rule_index].slot] += length
    else:
        r.rule_id = 0


cdef inline void out_input(fp_result* r, fp_output* outs, uint32_t length) noexcept nogil:
    cdef fp_output* o = &outs[r.noutputs]
    o.port = 0
    o.from_input = 1
    o.offset = 0
    o.length = length
    r.noutputs += 1


cdef inline void out_built(fp_result* r, fp_output* outs, uint8_t port, uint32_t offset, uint32_t length) noexcept nogil:
    cdef fp_output* o = &outs[r.noutputs]
    o.port = port
    o.from_input = 0
    o.offset = offset
    o.length = length
    r.noutputs += 1


cdef bint flow_reply(fp_core* c, const fp_tables* t, const parsed_t* p, const uint8_t* frame, uint32_t length,
                     uint8_t ingress, fp_result* r, fp_output* outs, uint8_t* obuf, uint32_t* oused) noexcept nogil:
    """reference._flow_reply: True when the frame was a reply of a live flow (``r`` filled)."""
    cdef fp_flow_key k
    cdef int32_t i
    cdef fp_flow* e
    cdef int ri, n
    flow_key(&k, ingress, p, p.user.src, p.user.sport, p.user.dst, p.user.dport)
    i = flows_find(&c.flows, &k)
    if i < 0:
        return False
    e = &c.flows.entries[i]
    ri = rule_by_id(t, e.rule_id)
    if ri < 0 or t.rules[ri].version != e.version:
        flows_remove(&c.flows, i)  # made by a rule that no longer exists as it was
        return False
    lru_unlink(&c.flows, i)
    lru_append(&c.flows, i)
    r.reverse = 1
    n = build_flow_reply(e, p, frame, obuf + oused[0])
    if over_mtu(t, e.out_port, obuf + oused[0], n):
        r.reason = MEP_DROP_MTU
    else:
        r.reason = MEP_REDIRECT_FLOW_REPLY
        out_built(r, outs, e.out_port, oused[0], n)
        oused[0] += n
    record(c, t, r, ri, length)
    return True


cdef void remember(fp_core* c, const fp_rule* rule, const fp_target* tg, const parsed_t* p, const uint8_t* frame,
                   uint8_t ingress) noexcept nogil:
    """reference._remember: the flow state that sends replies to a FORWARD FLOW packet back."""
    cdef fp_flow_key k
    cdef fp_flow* e
    cdef bint rewritten = tg.new_dst_family != 0
    cdef const uint8_t* reply_src = &tg.new_dst[0]
    if not rewritten:
        reply_src = &p.user.dst[0]
    flow_key(&k, tg.port, p, reply_src, p.user.dport, p.user.src, p.user.sport)
    e = flows_put(&c.flows, &k)
    e.rule_id = rule.rule_id
    e.version = rule.version
    e.out_port = ingress
    memcpy(e.eth_dst, frame + 6, 6)
    memcpy(e.eth_src, frame, 6)
    e.has_vlan = p.vlan_tci >= 0
    e.vlan_tci = p.vlan_tci if p.vlan_tci >= 0 else 0
    e.has_restore = rewritten
    memset(e.restore_src, 0, 16)
    if rewritten:
        memcpy(e.restore_src, p.user.dst, 4 if p.user.family == 4 else 16)


cdef void act(fp_core* c, const fp_tables* t, int ri, bint reverse, const parsed_t* p, const uint8_t* frame,
              uint32_t length, uint8_t ingress, fp_result* r, fp_output* outs, uint8_t* obuf,
              uint32_t* oused) noexcept nogil:
    """reference._act: the matched rule's action."""
    cdef const fp_rule* rule = &t.rules[ri]
    cdef int k, n
    r.reverse = reverse
    if rule.action == FP_ACT_DROP:
        r.reason = MEP_DROP_RULE
    elif rule.action == FP_ACT_PASS:
        r.reason = MEP_PASS_RULE
        out_input(r, outs, length)
    elif rule.action == FP_ACT_DUPLICATE:
        r.reason = MEP_DUPLICATE_RULE
        out_input(r, outs, length)
        for k in range(rule.ntargets):
            n = build_target(&rule.targets[k], rule.rule_id, p, frame, obuf + oused[0])
            if n > 0 and not over_mtu(t, rule.targets[k].port, obuf + oused[0], n):
                out_built(r, outs, rule.targets[k].port, oused[0], n)
                oused[0] += n
    elif reverse:  # FORWARD_*: a reply matched statelessly goes the default way back
        r.reason = MEP_PASS_FLOW_REVERSE
        out_input(r, outs, length)
    else:
        n = build_target(&rule.targets[0], rule.rule_id, p, frame, obuf + oused[0])
        if n < 0:
            r.reason = -n
        elif over_mtu(t, rule.targets[0].port, obuf + oused[0], n):
            r.reason = MEP_DROP_MTU
        else:
            if rule.flow:
                remember(c, rule, &rule.targets[0], p, frame, ingress)
            r.reason = MEP_REDIRECT_RULE
            out_built(r, outs, rule.targets[0].port, oused[0], n)
            oused[0] += n
    record(c, t, r, ri, length)


cdef void process_frame(fp_core* c, const uint8_t* frame, uint32_t length, uint8_t ingress, fp_result* r,
                        fp_output* outs, uint8_t* obuf, uint32_t* oused) noexcept nogil:
    """One frame that arrived on port ``ingress``: fills ``r`` and its outputs at ``outs``."""
    cdef const fp_tables* t = c.tables
    cdef parsed_t p
    cdef int rc, ri
    cdef bint reverse
    r.noutputs = 0
    r.reverse = 0
    rc = parse_frame(frame, <int>length, &p)
    if rc:
        r.reason = rc
        if fp_reason_verdict[rc] == MEP_VERDICT_PASS:
            out_input(r, outs, length)
        record(c, t, r, -1, length)
        return
    if t == NULL:
        r.reason = MEP_PASS_NO_MATCH
        out_input(r, outs, length)
        record(c, t, r, -1, length)
        return
    if c.flows.count and flow_reply(c, t, &p, frame, length, ingress, r, outs, obuf, oused):
        return
    if t.ports[ingress].known and t.ports[ingress].app:
        r.reason = MEP_PASS_FROM_APP
        out_input(r, outs, length)
        record(c, t, r, -1, length)
        return
    ri = classify_cached(c, t, &p, &reverse)
    if ri < 0:
        if t.default_drop:
            r.reason = MEP_DROP_NO_MATCH
        else:
            r.reason = MEP_PASS_NO_MATCH
            out_input(r, outs, length)
        record(c, t, r, -1, length)
        return
    act(c, t, ri, reverse, &p, frame, length, ingress, r, outs, obuf, oused)


cdef int run_batch(fp_core* c, const uint8_t* buf, const uint32_t* offsets, const uint32_t* lengths,
                   const uint8_t* ingress, int n, fp_result* results, fp_output* outs, uint8_t* obuf,
                   uint32_t obuf_bytes) noexcept nogil:
    """Run frames buf[offsets[i]:offsets[i]+lengths[i]] (arrived on ingress[i]) through the pipeline.

    ``results[i]`` names outputs ``outs[results[i].first_output ...]``; ``outs``
    holds MAX_OUTPUTS per frame. Returns how many frames were processed: fewer
    than ``n`` when ``obuf`` might not hold the next frame's outputs (call again
    for the rest once they are sent). The caller holds ``c.lock``.
    """
    cdef int i
    cdef uint32_t oused = 0, nout = 0
    for i in range(n):
        if oused + 2 * (lengths[i] + ENCAP_ROOM) > obuf_bytes:
            return i
        results[i].first_output = nout
        process_frame(c, buf + offsets[i], lengths[i], ingress[i], &results[i], outs + nout, obuf, &oused)
        nout += results[i].noutputs
    return n


# =====================================================================================
# 7. Core: the engine state (rule set in force, flow table, counters) shared by the
#    I/O thread and process(). Everything that touches it holds ``lock``: the I/O
#    loop for one batch, process() for one frame, swap() for one pointer store. A
#    new rule set therefore starts between two batches, never inside one.
# =====================================================================================

cdef class Core:
    """Engine state behind one mutex; see the section comment. ``Core(flow_capacity, slots)``."""

    cdef fp_core c
    cdef RuleTables _tables
    cdef uint8_t* _obuf
    cdef fp_result _res[1]
    cdef fp_output _outs[MAX_OUTPUTS]

    def __cinit__(self, uint32_t flow_capacity, uint32_t slots) -> None:
        cdef uint32_t buckets = 1
        memset(&self.c, 0, sizeof(fp_core))
        pthread_mutex_init(&self.c.lock, NULL)
        self.c.nslots = slots
        self.c.slot_packets = <uint64_t*>calloc(max(1, slots), 8)
        self.c.slot_bytes = <uint64_t*>calloc(max(1, slots), 8)
        self._obuf = <uint8_t*>malloc(2 * (0x10000 + ENCAP_ROOM))
        while 4 * buckets < flow_capacity:  # the classification cache holds as many entries as the flow table
            buckets <<= 1
        self.c.cache = <fp_cls_bucket*>calloc(buckets, sizeof(fp_cls_bucket))
        self.c.cache_mask = buckets - 1
        self.c.epoch = 1  # calloc'd entries (epoch 0) are empty
        if (flows_init(&self.c.flows, max(1, flow_capacity)) or self.c.slot_packets == NULL
                or self.c.slot_bytes == NULL or self._obuf == NULL or self.c.cache == NULL):
            raise MemoryError("fast path engine state")

    def __dealloc__(self) -> None:
        flows_free(&self.c.flows)
        free(self.c.slot_packets)
        free(self.c.slot_bytes)
        free(self.c.cache)
        free(self._obuf)
        pthread_mutex_destroy(&self.c.lock)

    cdef fp_core* state(self):
        return &self.c

    def swap(self, RuleTables tables) -> None:
        """Put ``tables`` in force (None: no rule set) between two batches."""
        cdef fp_tables* t = &tables.t if tables is not None else NULL
        with nogil:
            pthread_mutex_lock(&self.c.lock)
            self.c.tables = t
            self.c.epoch += 1  # every cached classification belongs to the old tables
            pthread_mutex_unlock(&self.c.lock)
        self._tables = tables  # the old tables are released after the store above

    def process(self, frame, int ingress):
        """(verdict, reason, rule id, reverse, [(port, bytes), ...]) of one frame; counted like traffic."""
        cdef const uint8_t[:] view = frame
        cdef uint32_t n = view.shape[0]
        cdef const uint8_t* b = &view[0] if n else <const uint8_t*>b""
        cdef uint32_t offset = 0
        cdef uint8_t port
        cdef int i
        cdef fp_result* r = &self._res[0]
        cdef fp_output* o
        if not 0 <= ingress <= MAX_PORT:
            raise ValueError(f"ingress port {ingress} is outside 0..{MAX_PORT}")
        if n > 0xFFFF:
            raise ValueError(f"a {n}-byte frame is longer than any port receives (65,535)")
        port = ingress
        with nogil:
            pthread_mutex_lock(&self.c.lock)
            run_batch(&self.c, b, &offset, &n, &port, 1, r, self._outs, self._obuf, 2 * (0x10000 + ENCAP_ROOM))
        try:  # the result buffers are shared by every process() call: read them under the lock
            data = bytes(frame)
            outputs = []
            for i in range(r.noutputs):
                o = &self._outs[i]
                if o.from_input:
                    outputs.append((o.port, data))
                else:
                    outputs.append((o.port, PyBytes_FromStringAndSize(<const char*>self._obuf + o.offset, o.length)))
            return r.verdict, r.reason, r.rule_id, bool(r.reverse), outputs
        finally:
            pthread_mutex_unlock(&self.c.lock)

    def batch(self, const uint8_t[:] buf, const uint32_t[:] offsets, const uint32_t[:] lengths,
              const uint8_t[:] ingress, int repeat=1):
        """Run the frames through ``run_batch`` ``repeat`` times (counted); returns (ns, {verdict: frames}).

        For benchmarks: the same loop the I/O thread runs, on frames in one
        buffer. The returned counts are of the last pass.
        """
        cdef int n = offsets.shape[0], done, i, k, j
        cdef uint64_t t0, t1
        cdef fp_result* res = <fp_result*>malloc(sizeof(fp_result) * max(1, n))
        cdef fp_output* outs = <fp_output*>malloc(sizeof(fp_output) * MAX_OUTPUTS * max(1, n))
        cdef uint8_t* obuf = <uint8_t*>malloc(OUT_BUFFER)
        cdef uint64_t counts[256]
        if lengths.shape[0] != n or ingress.shape[0] != n:
            raise ValueError("offsets, lengths and ingress differ in length")
        for i in range(n):
            if offsets[i] + <uint64_t>lengths[i] > <uint64_t>buf.shape[0]:
                raise ValueError(f"frame {i} lies outside the buffer")
        if res == NULL or outs == NULL or obuf == NULL:
            free(res); free(outs); free(obuf)
            raise MemoryError("batch buffers")
        memset(counts, 0, sizeof(counts))
        with nogil:
            pthread_mutex_lock(&self.c.lock)
            t0 = fp_now_ns()
            for k in range(repeat):
                i = 0
                while i < n:
                    done = run_batch(&self.c, &buf[0], &offsets[i], &lengths[i], &ingress[i], min(BATCH, n - i),
                                     res, outs, obuf, OUT_BUFFER)
                    if k == repeat - 1:
                        for j in range(done):
                            counts[res[j].verdict] += 1
                    i += done
            t1 = fp_now_ns()
            pthread_mutex_unlock(&self.c.lock)
        free(res)
        free(outs)
        free(obuf)
        return t1 - t0, {v: counts[v] for v in range(256) if counts[v]}

    def reason_totals(self):
        """[(reason, packets, bytes)] for every reason counted so far."""
        cdef int i
        with nogil:
            pthread_mutex_lock(&self.c.lock)
        try:
            return [(i, self.c.reason_packets[i], self.c.reason_bytes[i])
                    for i in range(FP_REASONS) if self.c.reason_packets[i]]
        finally:
            pthread_mutex_unlock(&self.c.lock)

    def slot_totals(self, slots):
        """[(packets, bytes)] of the given counter slots, in order."""
        cdef uint32_t s
        out = []
        with nogil:
            pthread_mutex_lock(&self.c.lock)
        try:
            for s in slots:
                if s >= self.c.nslots:
                    raise IndexError(f"counter slot {s} >= {self.c.nslots}")
                out.append((self.c.slot_packets[s], self.c.slot_bytes[s]))
            return out
        finally:
            pthread_mutex_unlock(&self.c.lock)

    def zero_slot(self, uint32_t slot) -> None:
        """Reset a counter slot before a new rule uses it."""
        if slot >= self.c.nslots:
            raise IndexError(f"counter slot {slot} >= {self.c.nslots}")
        with nogil:
            pthread_mutex_lock(&self.c.lock)
            self.c.slot_packets[slot] = 0
            self.c.slot_bytes[slot] = 0
            pthread_mutex_unlock(&self.c.lock)

    def flush_flows(self) -> None:
        """Forget every reverse flow."""
        with nogil:
            pthread_mutex_lock(&self.c.lock)
            flows_clear(&self.c.flows)
            pthread_mutex_unlock(&self.c.lock)

    @property
    def flow_count(self) -> int:
        """Reverse-flow entries in the table."""
        return self.c.flows.count

    @property
    def flow_capacity(self) -> int:
        """Most reverse-flow entries the table holds (the least recent is evicted beyond)."""
        return self.c.flows.capacity

    @property
    def cache_stats(self) -> tuple:
        """(hits, misses, entries) of the classification cache since start."""
        return self.c.cache_hits, self.c.cache_misses, 4 * (self.c.cache_mask + 1)


def touch(const uint8_t[:] buf, const uint32_t[:] offsets, const uint32_t[:] lengths, int repeat=1):
    """The benchmark floor: read each frame's first and last byte; returns (ns, checksum)."""
    cdef int n = offsets.shape[0], i, k
    cdef uint64_t acc = 0, t0, t1
    if lengths.shape[0] != n:
        raise ValueError("offsets and lengths differ in length")
    for i in range(n):
        if offsets[i] + <uint64_t>lengths[i] > <uint64_t>buf.shape[0]:
            raise ValueError(f"frame {i} lies outside the buffer")
    with nogil:
        t0 = fp_now_ns()
        for k in range(repeat):
            for i in range(n):
                if lengths[i]:
                    acc += buf[offsets[i]] + buf[offsets[i] + lengths[i] - 1]
        t1 = fp_now_ns()
    return t1 - t0, acc


# =====================================================================================
# 8. I/O. Per data-plane port: a TPACKET_V3 receive ring (ETH_P_ALL, PACKET_RESERVE
#    leaves room to put back an 802.1Q tag the kernel moved into metadata, a classic
#    BPF socket filter skips frames this engine sent) and three send-only sockets:
#    an AF_XDP socket in copy mode for frames redirected out of the port (no XDP
#    program needed to send: the kernel builds one skb per descriptor and hands it
#    to the driver, qdisc bypassed), an AF_PACKET socket that takes its place where
#    AF_XDP cannot open (older kernel, queue taken, no locked memory) or for a frame
#    larger than a UMEM chunk, and an AF_PACKET socket whose frames carry ``mark``,
#    for frames passed to the kernel stack: steering.py makes the kernel turn those
#    around into the port's own ingress (it needs the egress tc hook AF_XDP skips).
#    Where xsk.py's XDP program can attach, the AF_XDP socket also receives: the
#    kernel copies each frame into a chunk we gave it on the fill ring (receive
#    chunks follow the send chunks in the UMEM) and posts it on the RX ring.
#    Io.run() is the loop: drain every receive ring a block (or RX ring a batch) at
#    a time, in batches of BATCH frames under the Core lock; send each batch's
#    outputs, one socket at a time, before the block or the chunks go back to the
#    kernel (outputs may point into them); after a pass that found a few frames,
#    sleep RX_COALESCE_US so the next finds a batch (woken for every frame, the
#    AF_XDP loop spent ~1.8 us a frame at 530 kpps, mostly in wakeups);
#    sleep in poll() when nothing is ready. Sends copy: into UMEM chunks (AF_XDP) or
#    by sendmmsg(). AF_XDP was measured cheaper per frame than sendmmsg (no msghdr
#    and iovec copies, no flow-dissector probe of each frame: docs/fastpath.md); a
#    TPACKET transmit ring was measured slower (its frames are user pages the kernel
#    must copy anyway when mirred clones them, page by page). A send socket whose
#    buffer is full holds the loop (backpressure: the receive ring absorbs it or the
#    kernel counts rx_dropped). An AF_XDP send error other than a full buffer (the
#    port went down) closes that socket; the port sends with AF_PACKET and the
#    socket is reopened at most once a second. Only the I/O thread touches the
#    sockets after open_port(); stats are read without a lock (aligned 64-bit words,
#    monitoring only).
# =====================================================================================

cdef extern from "<sys/socket.h>" nogil:
    """
    #include <sys/uio.h>
    """
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        iovec* msg_iov
        size_t msg_iovlen
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int fd, mmsghdr* msgs, unsigned int count, int flags)
    int socket(int domain, int type, int protocol)
    int setsockopt(int fd, int level, int name, const void* value, unsigned int length)
    int getsockopt(int fd, int level, int name, void* value, unsigned int* length)
    enum:
        AF_PACKET
        SOCK_RAW
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_MARK
        SO_ATTACH_FILTER
        SO_SNDBUF
        SO_SNDBUFFORCE

cdef extern from "<linux/if_packet.h>" nogil:
    """
    #include <linux/filter.h>
    #include <linux/if_ether.h>
    #include <arpa/inet.h>
    #include <sys/socket.h>
    static inline int fp_bind_ll(int fd, const struct sockaddr_ll *a) {
        return bind(fd, (const struct sockaddr *)a, sizeof(*a));
    }
    """
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr
    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci
        uint16_t tp_vlan_tpid
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        tpacket_hdr_variant1 hv1
    struct tpacket_stats_v3:
        unsigned int tp_packets
        unsigned int tp_drops
    struct sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    struct sock_fprog:
        unsigned short len
        sock_filter* filter
    enum:
        SOL_PACKET
        PACKET_VERSION
        PACKET_RX_RING
        PACKET_RESERVE
        PACKET_QDISC_BYPASS
        PACKET_STATISTICS
        TPACKET_V3
        TP_STATUS_KERNEL
        TP_STATUS_USER
        TP_STATUS_VLAN_VALID
        TP_STATUS_VLAN_TPID_VALID
        PACKET_OUTGOING
        ETH_P_ALL
        SKF_AD_OFF
        SKF_AD_PKTTYPE
        SKF_AD_MARK
        BPF_LD
        BPF_W
        BPF_ABS
        BPF_JMP
        BPF_JEQ
        BPF_K
        BPF_RET
    int fp_bind_ll(int fd, const sockaddr_ll* a)
    uint16_t htons(uint16_t v)

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)
    enum:
        PROT_READ
        PROT_WRITE
        MAP_SHARED
        MAP_PRIVATE
        MAP_ANONYMOUS
        MAP_POPULATE
    void* MAP_FAILED

cdef extern from "<linux/if_xdp.h>" nogil:
    """
    #ifndef AF_XDP
    #define AF_XDP 44
    #endif
    #ifndef SOL_XDP
    #define SOL_XDP 283
    #endif
    static inline int fp_bind_xdp(int fd, const struct sockaddr_xdp *a) {
        return bind(fd, (const struct sockaddr *)a, sizeof(*a));
    }
    static inline int fp_kick(int fd) { return (int)sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0); }
    """
    struct sockaddr_xdp:
        uint16_t sxdp_family
        uint16_t sxdp_flags
        uint32_t sxdp_ifindex
        uint32_t sxdp_queue_id
    struct xdp_umem_reg:
        uint64_t addr
        uint64_t len
        uint32_t chunk_size
        uint32_t headroom
    struct xdp_ring_offset:
        uint64_t producer
        uint64_t consumer
        uint64_t desc
    struct xdp_mmap_offsets:
        xdp_ring_offset rx
        xdp_ring_offset tx
        xdp_ring_offset fr
        xdp_ring_offset cr
    struct xdp_statistics:
        uint64_t rx_dropped
        uint64_t rx_ring_full
    struct xdp_desc:
        uint64_t addr
        uint32_t len
        uint32_t options
    int fp_bind_xdp(int fd, const sockaddr_xdp* a)
    int fp_kick(int fd)
    enum:
        AF_XDP
        SOL_XDP
        XDP_COPY
        XDP_UMEM_REG
        XDP_UMEM_FILL_RING
        XDP_UMEM_COMPLETION_RING
        XDP_RX_RING
        XDP_TX_RING
        XDP_MMAP_OFFSETS
        XDP_STATISTICS
    unsigned long long XDP_PGOFF_RX_RING
    unsigned long long XDP_PGOFF_TX_RING
    unsigned long long XDP_UMEM_PGOFF_FILL_RING
    unsigned long long XDP_UMEM_PGOFF_COMPLETION_RING

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    enum:
        POLLIN
        POLLERR

cdef extern from "<errno.h>" nogil:
    enum:
        EINTR
        EAGAIN
        EBUSY
        ENOMEM
        ETIMEDOUT

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    enum:
        EFD_NONBLOCK
        EFD_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t write(int fd, const void* buf, size_t count)
    int usleep(unsigned int usec)

cdef enum:
    RX_RESERVE = 4                  # headroom to put an 802.1Q tag back in front of the EtherType
    RX_BLOCK_TOV_MS = 1             # a partly filled receive block is handed over after this (rounded up to a jiffy)
    RX_COALESCE_FRAMES = 32         # a pass over the ports that found fewer frames (but some) ...
    RX_COALESCE_US = 50             # ... sleeps this long before the next: a batch builds up (as a NIC's rx-usecs)
    TX_SNDBUF_BYTES = 4 << 20       # frames a send socket may have in flight before sendmmsg() waits
    XSK_CHUNK = 2048                # bytes of a UMEM chunk: the largest frame sent through AF_XDP
    XSK_CHUNKS = 1024               # chunks (and TX / completion ring entries) per port: 2 MiB of UMEM
    XSK_FILL = 64                   # fill ring entries of a send-only socket (the bind needs one)
    XSK_HEADROOM = 256              # XDP_PACKET_HEADROOM: where the kernel copies a received frame in its chunk
    XSK_RETRY_NS = 1000000000       # after a send error, reopen the AF_XDP socket at most this often
    XSK_STALL_KICKS = 100000        # kicks in a row that send nothing before a socket counts as stalled


XSK_RX_MAX_FRAME = XSK_CHUNK - XSK_HEADROOM  # the largest frame an AF_XDP receive chunk holds (copy mode)
XSK_BUSY_WAIT_S = 1.0  # Io.open_port: how long an AF_XDP bind answered EBUSY is tried again (a queue's last socket closing)


cdef inline void cbpf(sock_filter* insn, uint16_t code, uint8_t jt, uint8_t jf, uint32_t k) noexcept nogil:
    """One classic-BPF instruction (linux/filter.h)."""
    insn.code = code
    insn.jt = jt
    insn.jf = jf
    insn.k = k


cdef int open_rx(fp_rx_ring* rx, int ifindex, uint32_t block_bytes, uint32_t nblocks, uint32_t mark) noexcept nogil:
    """A TPACKET_V3 ring on ``ifindex``; 0 or -errno. Bound last, so no frame waits outside the ring."""
    cdef int v = TPACKET_V3, reserve = RX_RESERVE
    cdef tpacket_req3 req
    cdef sockaddr_ll sll
    cdef sock_filter code[6]
    cdef sock_fprog prog
    rx.fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0)  # protocol 0: receives nothing until bound
    if rx.fd < 0:
        return -errno
    # Skip what this engine sent: outgoing frames, and frames passed to the stack (``mark``)
    # when the kernel turns them around into this port's ingress.
    cbpf(&code[0], BPF_LD | BPF_W | BPF_ABS, 0, 0, <uint32_t>(SKF_AD_OFF + SKF_AD_PKTTYPE))
    cbpf(&code[1], BPF_JMP | BPF_JEQ | BPF_K, 3, 0, PACKET_OUTGOING)          # outgoing: skip
    cbpf(&code[2], BPF_LD | BPF_W | BPF_ABS, 0, 0, <uint32_t>(SKF_AD_OFF + SKF_AD_MARK))
    cbpf(&code[3], BPF_JMP | BPF_JEQ | BPF_K, 1, 0, mark)                     # marked: skip
    cbpf(&code[4], BPF_RET | BPF_K, 0, 0, 0xFFFFFFFF)                        # take the whole frame
    cbpf(&code[5], BPF_RET | BPF_K, 0, 0, 0)
    prog.len = 6
    prog.filter = code
    memset(&req, 0, sizeof(req))
    req.tp_block_size = block_bytes
    req.tp_block_nr = nblocks
    req.tp_frame_size = 2048
    req.tp_frame_nr = block_bytes // 2048 * nblocks
    req.tp_retire_blk_tov = RX_BLOCK_TOV_MS
    if (setsockopt(rx.fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0
            or setsockopt(rx.fd, SOL_PACKET, PACKET_RESERVE, &reserve, sizeof(reserve)) < 0
            or setsockopt(rx.fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0
            or setsockopt(rx.fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0):
        return -errno
    rx.map_bytes = <size_t>block_bytes * nblocks
    rx.map = <uint8_t*>mmap(NULL, rx.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rx.fd, 0)
    if <void*>rx.map == MAP_FAILED:
        rx.map = NULL
        return -errno
    rx.block_bytes = block_bytes
    rx.nblocks = nblocks
    rx.cur = 0
    memset(&sll, 0, sizeof(sll))
    sll.sll_family = AF_PACKET
    sll.sll_protocol = htons(ETH_P_ALL)
    sll.sll_ifindex = ifindex
    if fp_bind_ll(rx.fd, &sll) < 0:
        return -errno
    return 0


cdef int open_tx(int* fd, int ifindex, uint32_t mark) noexcept nogil:
    """A send-only AF_PACKET socket on ``ifindex``; ``mark`` 0: bypass the qdisc, else mark every frame."""
    cdef int one = 1, sndbuf = TX_SNDBUF_BYTES
    cdef sockaddr_ll sll
    fd[0] = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0)  # protocol 0: never receives
    if fd[0] < 0:
        return -errno
    if mark:
        if setsockopt(fd[0], SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0:
            return -errno
    elif setsockopt(fd[0], SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0:
        return -errno
    if setsockopt(fd[0], SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0:
        setsockopt(fd[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))  # capped by wmem_max, still works
    memset(&sll, 0, sizeof(sll))
    sll.sll_family = AF_PACKET
    sll.sll_protocol = 0
    sll.sll_ifindex = ifindex
    if fp_bind_ll(fd[0], &sll) < 0:
        return -errno
    return 0


cdef int map_xsk_ring(fp_xsk_ring* r, int fd, const xdp_ring_offset* off, size_t entry_bytes,
                      unsigned long long pgoff, uint32_t entries) noexcept nogil:
    r.map_bytes = off.desc + entries * entry_bytes
    r.map = mmap(NULL, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, <long>pgoff)
    if r.map == MAP_FAILED:
        r.map = NULL
        return -errno
    r.producer = <uint32_t*>(<uint8_t*>r.map + off.producer)
    r.consumer = <uint32_t*>(<uint8_t*>r.map + off.consumer)
    r.entries = <uint8_t*>r.map + off.desc
    r.mask = entries - 1
    return 0


cdef int open_xsk(fp_xsk* x, int ifindex, uint32_t rx_chunks) noexcept nogil:
    """An AF_XDP socket (copy mode, queue 0) on ``ifindex`` with its UMEM; 0 or -errno.

    ``rx_chunks`` 0: send-only. Else (a power of two) it also receives into
    that many chunks, all given to the kernel on the fill ring before the bind.
    """
    cdef xdp_umem_reg reg
    cdef xdp_mmap_offsets off
    cdef sockaddr_xdp sxdp
    cdef unsigned int n = sizeof(off)
    cdef int size = XSK_CHUNKS, fill = rx_chunks if rx_chunks else XSK_FILL, nrx = rx_chunks
    cdef int sndbuf = TX_SNDBUF_BYTES, rc
    cdef uint32_t i
    x.ifindex = ifindex
    x.rx_chunks = rx_chunks
    x.tx_off = 0
    x.fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)
    if x.fd < 0:
        return -errno
    x.umem_bytes = <size_t>(XSK_CHUNKS + rx_chunks) * XSK_CHUNK
    x.umem = <uint8_t*>mmap(NULL, x.umem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                            -1, 0)
    if <void*>x.umem == MAP_FAILED:
        x.umem = NULL
        return -errno
    x.free = <uint64_t*>malloc(sizeof(uint64_t) * XSK_CHUNKS)
    if x.free == NULL:
        return -ENOMEM
    for i in range(<uint32_t>XSK_CHUNKS):
        x.free[i] = <uint64_t>i * XSK_CHUNK
    x.nfree = XSK_CHUNKS
    memset(&reg, 0, sizeof(reg))
    reg.addr = <uint64_t>x.umem
    reg.len = x.umem_bytes
    reg.chunk_size = XSK_CHUNK
    memset(&off, 0, sizeof(off))
    if (setsockopt(x.fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg)) < 0
            or setsockopt(x.fd, SOL_XDP, XDP_UMEM_FILL_RING, &fill, sizeof(fill)) < 0
            or setsockopt(x.fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &size, sizeof(size)) < 0
            or setsockopt(x.fd, SOL_XDP, XDP_TX_RING, &size, sizeof(size)) < 0
            or (rx_chunks and setsockopt(x.fd, SOL_XDP, XDP_RX_RING, &nrx, sizeof(nrx)) < 0)
            or getsockopt(x.fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &n) < 0):
        return -errno
    if setsockopt(x.fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0:
        setsockopt(x.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))
    rc = map_xsk_ring(&x.tx, x.fd, &off.tx, sizeof(xdp_desc), XDP_PGOFF_TX_RING, XSK_CHUNKS)
    if rc == 0:
        rc = map_xsk_ring(&x.cq, x.fd, &off.cr, sizeof(uint64_t), XDP_UMEM_PGOFF_COMPLETION_RING, XSK_CHUNKS)
    if rc == 0 and rx_chunks:
        rc = map_xsk_ring(&x.rx, x.fd, &off.rx, sizeof(xdp_desc), XDP_PGOFF_RX_RING, rx_chunks)
        if rc == 0:
            rc = map_xsk_ring(&x.fq, x.fd, &off.fr, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING, rx_chunks)
    if rc < 0:
        return rc
    if rx_chunks:
        for i in range(rx_chunks):
            (<uint64_t*>x.fq.entries)[i] = <uint64_t>(XSK_CHUNKS + i) * XSK_CHUNK
        x.fq_prod = fp_load_acquire(x.fq.producer) + rx_chunks
        fp_store_release(x.fq.producer, x.fq_prod)
    memset(&sxdp, 0, sizeof(sxdp))
    sxdp.sxdp_family = AF_XDP
    sxdp.sxdp_flags = XDP_COPY
    sxdp.sxdp_ifindex = ifindex
    sxdp.sxdp_queue_id = 0
    if fp_bind_xdp(x.fd, &sxdp) < 0:
        return -errno
    x.tx_prod = fp_load_acquire(x.tx.producer)
    x.cq_cons = fp_load_acquire(x.cq.consumer)
    if rx_chunks:
        x.rx_cons = fp_load_acquire(x.rx.consumer)
    return 0


cdef void unmap_xsk_ring(fp_xsk_ring* r) noexcept nogil:
    if r.map != NULL:
        munmap(r.map, r.map_bytes)
        r.map = NULL


cdef void close_xsk(fp_xsk* x) noexcept nogil:
    if x.fd >= 0:
        close(x.fd)
        x.fd = -1
    unmap_xsk_ring(&x.tx)
    unmap_xsk_ring(&x.cq)
    unmap_xsk_ring(&x.rx)
    unmap_xsk_ring(&x.fq)
    if x.umem != NULL:
        munmap(x.umem, x.umem_bytes)
        x.umem = NULL
    free(x.free)
    x.free = NULL
    x.nfree = 0


cdef void xsk_give_up(fp_xsk* x, int err) noexcept nogil:
    """Stop sending through the socket for ``err``: the port sends with AF_PACKET until ``xsk_ready``.

    A send-only socket is closed (its ring may hold stale frames) and reopened
    later. A receiving one stays open (frames of the batch in progress live in
    its UMEM, and its receive is unaffected); only its sends stop, and resume
    on the same rings.
    """
    if x.rx_chunks:
        x.tx_off = 1
    else:
        close_xsk(x)
    x.error = err
    x.retry_ns = fp_now_ns() + XSK_RETRY_NS


cdef inline bint xsk_sends(const fp_xsk* x) noexcept nogil:
    return x.fd >= 0 and not x.tx_off


cdef inline void xsk_reap(fp_xsk* x) noexcept nogil:
    """Take back the chunks of every frame the kernel has completed (sent or dropped)."""
    cdef uint32_t prod = fp_load_acquire(x.cq.producer)
    cdef const uint64_t* addrs = <const uint64_t*>x.cq.entries
    if prod == x.cq_cons:
        return
    while x.cq_cons != prod:
        x.free[x.nfree] = addrs[x.cq_cons & x.cq.mask]
        x.nfree += 1
        x.cq_cons += 1
    fp_store_release(x.cq.consumer, x.cq_cons)


cdef int xsk_flush(fp_xsk* x) noexcept nogil:
    """Publish the posted descriptors and kick until the kernel consumed them all; returns frames it dropped.

    The kernel sends a bounded number of frames per call, or stops when the
    socket's send buffer is full (EAGAIN: call again), and answers EBUSY for
    a frame the driver dropped (consumed). Any other error (the port went
    down or away), or XSK_STALL_KICKS kicks in a row that send nothing,
    leave the rest unsent: what was not consumed counts as dropped, the
    socket is closed (its ring may hold stale frames) and the port sends
    with its AF_PACKET socket until ``xsk_ready`` reopens it.
    """
    cdef int dropped = 0, idle = 0
    cdef uint32_t seen, now
    fp_store_release(x.tx.producer, x.tx_prod)
    seen = fp_load_acquire(x.tx.consumer)
    while seen != x.tx_prod:
        if fp_kick(x.fd) < 0:
            if errno == EBUSY:
                dropped += 1
            elif errno != EAGAIN:
                dropped += <int>(x.tx_prod - fp_load_acquire(x.tx.consumer))
                xsk_give_up(x, errno)
                return dropped
        xsk_reap(x)
        now = fp_load_acquire(x.tx.consumer)
        if now == seen:
            idle += 1
            if idle > 16:
                sched_yield()  # the kernel is out of socket buffer: let the receiver run
            if idle > XSK_STALL_KICKS:  # the driver takes nothing: give up on this socket
                dropped += <int>(x.tx_prod - now)
                xsk_give_up(x, ETIMEDOUT)
                return dropped
        else:
            idle = 0
        seen = now
    return dropped


cdef bint xsk_ready(fp_xsk* x) noexcept nogil:
    """Whether outputs to this port go through AF_XDP; a socket closed by an error is reopened once a second."""
    cdef int rc
    if xsk_sends(x):
        return True
    if x.retry_ns == 0 or fp_now_ns() < x.retry_ns:
        return False  # never opened (no AF_XDP on this host), or failed less than a second ago
    if x.tx_off:
        x.tx_off = 0
        x.retry_ns = 0
        x.error = 0
        return True
    rc = open_xsk(x, x.ifindex, 0)
    if rc == 0:
        x.retry_ns = 0
        x.error = 0
        return True
    xsk_give_up(x, -rc)
    return False


cdef int xsk_send_group(fp_xsk* x, const fp_send* sends, int n, int first, uint8_t* done) noexcept nogil:
    """Send every not yet sent output of sends[first]'s AF_XDP socket; returns how many were dropped."""
    cdef int fd = sends[first].fd, i, dropped = 0
    cdef xdp_desc* d
    cdef uint64_t addr
    for i in range(first, n):
        if done[i] or sends[i].fd != fd:
            continue
        done[i] = 1
        if xsk_sends(x) and x.nfree == 0:  # every chunk in flight: post what is ready, wait for completions
            dropped += xsk_flush(x)
            while xsk_sends(x) and x.nfree == 0:
                xsk_reap(x)
                if x.nfree == 0:
                    sched_yield()
        if not xsk_sends(x):  # stopped by a send error in this group
            dropped += 1
            continue
        x.nfree -= 1
        addr = x.free[x.nfree]
        memcpy(x.umem + addr, sends[i].data, sends[i].length)
        d = &(<xdp_desc*>x.tx.entries)[x.tx_prod & x.tx.mask]
        d.addr = addr
        d.len = sends[i].length
        d.options = 0
        x.tx_prod += 1
    if xsk_sends(x):
        dropped += xsk_flush(x)
    return dropped


cdef void close_rx(fp_rx_ring* rx) noexcept nogil:
    if rx.map != NULL:
        munmap(rx.map, rx.map_bytes)
        rx.map = NULL
    if rx.fd >= 0:
        close(rx.fd)
        rx.fd = -1


cdef void close_fd(int* fd) noexcept nogil:
    if fd[0] >= 0:
        close(fd[0])
        fd[0] = -1


cdef int send_group(const fp_send* sends, int n, int first, uint8_t* done, mmsghdr* msgs, iovec* iov) noexcept nogil:
    """sendmmsg() every not yet sent output with the fd of sends[first]; returns how many the kernel refused."""
    cdef int fd = sends[first].fd, count = 0, i, at = 0, rc
    for i in range(first, n):
        if done[i] or sends[i].fd != fd:
            continue
        done[i] = 1
        iov[count].iov_base = <void*>sends[i].data
        iov[count].iov_len = sends[i].length
        memset(&msgs[count], 0, sizeof(mmsghdr))
        msgs[count].msg_hdr.msg_iov = &iov[count]
        msgs[count].msg_hdr.msg_iovlen = 1
        count += 1
    while at < count:
        rc = sendmmsg(fd, msgs + at, count - at, 0)
        if rc < 0:
            if errno == EINTR:
                continue
            return count - at
        at += rc
    return 0


cdef class Io:
    """The AF_PACKET rings of the data-plane ports and the loop that serves them (section 8).

    ``Io(mark)``: ``mark`` tags frames passed to the kernel stack (steering.py
    redirects marked frames into the port's ingress and clears the mark).
    ``open_port()`` in the ports' network namespace, then ``run(core)`` in a
    thread of its own until ``stop()``; ``close()`` after ``run`` returned.
    """

    cdef fp_io_port ports[MAX_PORT + 1]
    cdef int wake_fd
    cdef uint32_t stopping
    cdef readonly uint32_t mark

    def __cinit__(self, uint32_t mark) -> None:
        cdef int i
        memset(self.ports, 0, sizeof(self.ports))
        for i in range(MAX_PORT + 1):
            self.ports[i].rx.fd = -1
            self.ports[i].tx_fd = -1
            self.ports[i].xsk.fd = -1
            self.ports[i].stack_fd = -1
        self.mark = mark
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0:
            raise OSError(errno, f"eventfd: {os.strerror(errno)}")

    def __dealloc__(self) -> None:
        self._close()

    def open_port(self, int index, int ifindex, uint32_t rx_block_bytes, uint32_t rx_blocks,
                  uint32_t xsk_rx_chunks=0) -> None:
        """Open port ``index``'s ring and sockets on interface ``ifindex`` (in the calling thread's namespace).

        The receive ring has ``rx_blocks`` blocks of ``rx_block_bytes`` (a power
        of two pages, larger than any frame). Raises OSError naming what failed;
        an AF_XDP socket that cannot open is not an error (``stats`` says why).
        ``xsk_rx_chunks`` (a power of two): the AF_XDP socket also receives,
        into that many chunks; where it cannot, it opens send-only and
        ``xsk(index)`` says why. ``run`` must be called in the same namespace
        (it may reopen that socket).
        """
        cdef fp_io_port* port
        cdef int rc
        if not 0 < index <= MAX_PORT:
            raise ValueError(f"port index {index} is outside 1..{MAX_PORT}")
        port = &self.ports[index]
        if port.active:
            raise ValueError(f"port {index} is open already")
        for what in ("receive ring", "send socket", "stack socket"):
            if what == "receive ring":
                rc = open_rx(&port.rx, ifindex, rx_block_bytes, rx_blocks, self.mark)
            elif what == "send socket":
                rc = open_tx(&port.tx_fd, ifindex, 0)
            else:
                rc = open_tx(&port.stack_fd, ifindex, self.mark)
            if rc < 0:
                self._close_port(port)
                raise OSError(-rc, f"{what} on ifindex {ifindex}: {os.strerror(-rc)}")
        if xsk_rx_chunks & (xsk_rx_chunks - 1):
            self._close_port(port)
            raise ValueError(f"xsk_rx_chunks {xsk_rx_chunks} is not a power of two")
        rc = open_xsk(&port.xsk, ifindex, xsk_rx_chunks)
        # EBUSY: another socket holds the queue. One closed just before (the engine before this one, a
        # restart) holds it until a kernel work item releases its buffer pool, after the XSKMAP that
        # referred to it is freed, itself deferred: a bind within those few ms fails. Wait that out,
        # bounded; a socket still open elsewhere keeps the queue, and this port falls back below.
        deadline = time.monotonic() + XSK_BUSY_WAIT_S
        while rc == -EBUSY and time.monotonic() < deadline:
            close_xsk(&port.xsk)
            time.sleep(0.01)
            rc = open_xsk(&port.xsk, ifindex, xsk_rx_chunks)
        if rc < 0 and xsk_rx_chunks:  # cannot receive: try to send at least
            close_xsk(&port.xsk)
            port.xsk.rx_error = -rc
            rc = open_xsk(&port.xsk, ifindex, 0)
        if rc < 0:  # no AF_XDP here (kernel, rights, locked-memory limit): the AF_PACKET socket sends
            close_xsk(&port.xsk)
            port.xsk.error = -rc
        port.active = 1

    def xsk(self, int index) -> tuple:
        """Port ``index``'s AF_XDP socket: (fd or -1, whether it receives, why it does not receive or '')."""
        cdef fp_io_port* port = &self.ports[index]
        cdef fp_xsk* x = &port.xsk
        if not port.active:
            raise ValueError(f"port {index} is not open")
        why = ""
        if x.rx_chunks == 0:
            why = os.strerror(x.rx_error) if x.rx_error else ("AF_XDP: " + os.strerror(x.error) if x.fd < 0
                                                              else "opened send-only")
        return x.fd, x.rx_chunks != 0 and x.fd >= 0, why

    cdef void _close_port(self, fp_io_port* port) noexcept:
        close_rx(&port.rx)
        close_xsk(&port.xsk)
        close_fd(&port.tx_fd)
        close_fd(&port.stack_fd)
        port.active = 0

    cdef void _close(self) noexcept:
        cdef int i
        for i in range(MAX_PORT + 1):
            self._close_port(&self.ports[i])
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1

    def close(self) -> None:
        """Unmap the rings and close the sockets (after ``run`` returned)."""
        self._close()

    def stop(self) -> None:
        """Make ``run`` return after the batch in progress (from any thread)."""
        cdef uint64_t one = 1
        fp_store_release(&self.stopping, 1)
        write(self.wake_fd, &one, 8)

    def stats(self, int index) -> dict:
        """Port ``index``: how redirected frames leave (``transmit``) and its frame counts (see fp_port_stats).

        Reads and adds the kernel's ring drops.
        """
        cdef fp_io_port* port = &self.ports[index]
        cdef tpacket_stats_v3 st
        cdef xdp_statistics xst
        cdef unsigned int n = sizeof(st)
        if not port.active:
            raise ValueError(f"port {index} is not open")
        if getsockopt(port.rx.fd, SOL_PACKET, PACKET_STATISTICS, &st, &n) == 0:
            port.stats.rx_dropped += st.tp_drops  # read and reset
        s = port.stats
        n = sizeof(xst)
        if port.xsk.rx_chunks and getsockopt(port.xsk.fd, SOL_XDP, XDP_STATISTICS, &xst, &n) == 0:
            s.rx_dropped += xst.rx_dropped + xst.rx_ring_full  # totals of the socket's life (it stays open)
        if xsk_sends(&port.xsk):
            transmit = "af_xdp"
        else:
            transmit = f"af_packet (AF_XDP: {os.strerror(port.xsk.error)})"
        return {"transmit": transmit, "rx_frames": s.rx_frames, "rx_af_xdp": s.rx_af_xdp, "rx_bytes": s.rx_bytes,
                "rx_truncated": s.rx_truncated,
                "rx_dropped": s.rx_dropped, "tx_frames": s.tx_frames, "tx_bytes": s.tx_bytes,
                "stack_frames": s.stack_frames, "stack_bytes": s.stack_bytes, "tx_dropped": s.tx_dropped}

    def run(self, Core core) -> None:
        """Serve every open port until ``stop()``: the loop of the section comment. Releases the GIL."""
        cdef fp_core* c = core.state()
        cdef fp_result* res = <fp_result*>malloc(sizeof(fp_result) * BATCH)
        cdef fp_output* outs = <fp_output*>malloc(sizeof(fp_output) * BATCH * MAX_OUTPUTS)
        cdef uint8_t* obuf = <uint8_t*>malloc(OUT_BUFFER)
        cdef fp_send* sends = <fp_send*>malloc(sizeof(fp_send) * BATCH * MAX_OUTPUTS)
        cdef pollfd pfds[2 * MAX_PORT + 1]
        cdef int npfd = 0, i, work
        if res == NULL or outs == NULL or obuf == NULL or sends == NULL:
            free(res); free(outs); free(obuf); free(sends)
            raise MemoryError("I/O batch buffers")
        for i in range(1, MAX_PORT + 1):
            if self.ports[i].active:
                pfds[npfd].fd = self.ports[i].rx.fd
                pfds[npfd].events = POLLIN | POLLERR
                npfd += 1
                if self.ports[i].xsk.rx_chunks:  # a receiving socket stays open while run() runs
                    pfds[npfd].fd = self.ports[i].xsk.fd
                    pfds[npfd].events = POLLIN | POLLERR
                    npfd += 1
        pfds[npfd].fd = self.wake_fd
        pfds[npfd].events = POLLIN
        with nogil:
            while not fp_load_acquire(&self.stopping):
                work = 0
                for i in range(1, MAX_PORT + 1):
                    if self.ports[i].active:
                        work += self._drain(c, <uint8_t>i, res, outs, obuf, sends)
                        if self.ports[i].xsk.rx_chunks:
                            work += self._drain_xsk(c, <uint8_t>i, res, outs, obuf, sends)
                if not work:
                    poll(pfds, npfd + 1, -1)
                elif work < RX_COALESCE_FRAMES:
                    usleep(RX_COALESCE_US)
        free(res)
        free(outs)
        free(obuf)
        free(sends)

    cdef int _drain(self, fp_core* c, uint8_t index, fp_result* res, fp_output* outs, uint8_t* obuf,
                    fp_send* sends) noexcept nogil:
        """Process every block the kernel has handed over on port ``index``; returns the frames seen."""
        cdef fp_io_port* port = &self.ports[index]
        cdef fp_rx_ring* rx = &port.rx
        cdef tpacket_block_desc* bd
        cdef tpacket3_hdr* h
        cdef uint8_t* frame
        cdef uint32_t offsets[BATCH]
        cdef uint32_t lengths[BATCH]
        cdef uint8_t ingress[BATCH]
        cdef uint32_t num, j, length
        cdef int nb, seen = 0
        memset(ingress, index, BATCH)
        while True:
            bd = <tpacket_block_desc*>(rx.map + <size_t>rx.cur * rx.block_bytes)
            if not (fp_load_acquire(&bd.hdr.bh1.block_status) & TP_STATUS_USER):
                return seen
            num = bd.hdr.bh1.num_pkts
            h = <tpacket3_hdr*>((<uint8_t*>bd) + bd.hdr.bh1.offset_to_first_pkt)
            nb = 0
            for j in range(num):
                frame = (<uint8_t*>h) + h.tp_mac
                length = h.tp_snaplen
                if h.tp_snaplen < h.tp_len:
                    port.stats.rx_truncated += 1
                else:
                    if h.tp_status & TP_STATUS_VLAN_VALID:
                        # The kernel moved the 802.1Q tag into metadata; put it back (RX_RESERVE headroom).
                        frame -= 4
                        memmove(frame, frame + 4, 12)
                        put16(frame, 12, h.hv1.tp_vlan_tpid if h.tp_status & TP_STATUS_VLAN_TPID_VALID else 0x8100)
                        put16(frame, 14, h.hv1.tp_vlan_tci)
                        length += 4
                    offsets[nb] = <uint32_t>(frame - rx.map)
                    lengths[nb] = length
                    port.stats.rx_frames += 1
                    port.stats.rx_bytes += length
                    nb += 1
                if nb == BATCH or j + 1 == num:
                    self._handle(c, index, rx.map, offsets, lengths, ingress, nb, res, outs, obuf, sends)
                    nb = 0
                h = <tpacket3_hdr*>((<uint8_t*>h) + h.tp_next_offset)
            seen += num
            fp_store_release(&bd.hdr.bh1.block_status, TP_STATUS_KERNEL)
            rx.cur = rx.cur + 1 if rx.cur + 1 < rx.nblocks else 0

    cdef int _drain_xsk(self, fp_core* c, uint8_t index, fp_result* res, fp_output* outs, uint8_t* obuf,
                        fp_send* sends) noexcept nogil:
        """Process every frame on port ``index``'s AF_XDP receive ring; returns the frames seen.

        A batch's chunks go back on the fill ring after its outputs are sent
        (outputs may point into them). The fill ring has a slot for every
        receive chunk, so it never refuses one.
        """
        cdef fp_io_port* port = &self.ports[index]
        cdef fp_xsk* x = &port.xsk
        cdef const xdp_desc* descs = <const xdp_desc*>x.rx.entries
        cdef uint64_t* fill = <uint64_t*>x.fq.entries
        cdef uint32_t offsets[BATCH]
        cdef uint32_t lengths[BATCH]
        cdef uint8_t ingress[BATCH]
        cdef uint32_t prod, j, nb
        cdef int seen = 0
        memset(ingress, index, BATCH)
        prod = fp_load_acquire(x.rx.producer)
        while x.rx_cons != prod:
            nb = 0
            while nb < BATCH and x.rx_cons + nb != prod:
                offsets[nb] = <uint32_t>descs[(x.rx_cons + nb) & x.rx.mask].addr
                lengths[nb] = descs[(x.rx_cons + nb) & x.rx.mask].len
                port.stats.rx_bytes += lengths[nb]
                nb += 1
            port.stats.rx_frames += nb
            port.stats.rx_af_xdp += nb
            self._handle(c, index, x.umem, offsets, lengths, ingress, nb, res, outs, obuf, sends)
            for j in range(nb):
                fill[(x.fq_prod + j) & x.fq.mask] = offsets[j] & ~(<uint32_t>XSK_CHUNK - 1)
            x.fq_prod += nb
            x.rx_cons += nb
            fp_store_release(x.rx.consumer, x.rx_cons)
            fp_store_release(x.fq.producer, x.fq_prod)
            seen += nb
            if x.rx_cons == prod:
                prod = fp_load_acquire(x.rx.producer)
        return seen

    cdef void _handle(self, fp_core* c, uint8_t index, const uint8_t* base, const uint32_t* offsets,
                      const uint32_t* lengths, const uint8_t* ingress, int nb, fp_result* res, fp_output* outs,
                      uint8_t* obuf, fp_send* sends) noexcept nogil:
        """Run ``nb`` received frames base[offsets[i]:+lengths[i]] through the pipeline and send their outputs."""
        cdef fp_io_port* port = &self.ports[index]
        cdef fp_io_port* dest
        cdef fp_output* o
        cdef fp_send* snd
        cdef mmsghdr msgs[BATCH * MAX_OUTPUTS]
        cdef iovec iov[BATCH * MAX_OUTPUTS]
        cdef uint8_t sent[BATCH * MAX_OUTPUTS]
        cdef int done = 0, k, i, j, n
        while done < nb:
            pthread_mutex_lock(&c.lock)
            k = run_batch(c, base, offsets + done, lengths + done, ingress + done, nb - done, res, outs, obuf,
                          OUT_BUFFER)
            pthread_mutex_unlock(&c.lock)
            n = 0
            for i in range(k):
                for j in range(res[i].noutputs):
                    o = &outs[res[i].first_output + j]
                    snd = &sends[n]
                    snd.data = base + offsets[done + i] if o.from_input else obuf + o.offset
                    snd.length = o.length
                    snd.stack = o.port == 0
                    snd.port = index if o.port == 0 else o.port
                    dest = &self.ports[snd.port]
                    snd.xsk = o.port != 0 and o.length <= XSK_CHUNK and xsk_ready(&dest.xsk)
                    if snd.xsk:
                        snd.fd = dest.xsk.fd
                    else:
                        snd.fd = port.stack_fd if o.port == 0 else (dest.tx_fd if dest.active else -1)
                    if snd.fd < 0:
                        port.stats.tx_dropped += 1  # a destination port this engine has not opened
                        continue
                    if snd.stack:
                        port.stats.stack_frames += 1
                        port.stats.stack_bytes += o.length
                    else:
                        dest.stats.tx_frames += 1
                        dest.stats.tx_bytes += o.length
                    n += 1
            memset(sent, 0, n)
            for i in range(n):
                if sent[i]:
                    continue
                if sends[i].xsk:
                    port.stats.tx_dropped += xsk_send_group(&self.ports[sends[i].port].xsk, sends, n, i, sent)
                else:
                    port.stats.tx_dropped += send_group(sends, n, i, sent, msgs, iov)
            done += k


# =====================================================================================
# 9. Helpers for other parts of the platform, on the same C code as the engine.
#    Addresses are packed network-order bytes (4 for IPv4, 16 for IPv6).
#    - parse / inet_checksum / csum_replace / udp_checksum: packet.py's twins;
#    - gtpu_encap / gtpu_decap: GTP-U (upf_sim's gNB writes its G-PDUs with gtpu_encap).
# =====================================================================================

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
    cdef Py_ssize_t n = data.shape[0]
    with nogil:
        if n:
            acc = sum16(&data[0], n, acc)
        acc = fold16(acc)
    return (~acc) & 0xFFFF


def csum_replace(unsigned int csum, const unsigned char[:] old, const unsigned char[:] new):
    """RFC 1624 eqn. 3 (packet.csum_replace): ``csum`` after ``old`` became ``new`` (equal, even lengths)."""
    if old.shape[0] != new.shape[0] or old.shape[0] & 1 or csum > 0xFFFF:
        raise ValueError("old and new must be of one even length, csum 16 bits")
    if not old.shape[0]:
        return csum
    return csum_replace_c(csum, &old[0], &new[0], old.shape[0])


def udp_checksum(const unsigned char[:] src, const unsigned char[:] dst, const unsigned char[:] segment):
    """The UDP checksum of ``segment`` (header with checksum 0, then payload) from ``src`` to ``dst``.

    IPv4 or IPv6 by the address length; a computed 0 is returned as 0xFFFF
    (RFC 768, RFC 8200 8.1).
    """
    cdef uint64_t acc
    cdef Py_ssize_t n = segment.shape[0]
    if src.shape[0] not in (4, 16) or dst.shape[0] != src.shape[0]:
        raise ValueError("addresses are 4 (IPv4) or 16 (IPv6) bytes, both of one family")
    if n > 0xFFFF:
        raise ValueError(f"a {n}-byte UDP segment does not fit a UDP length field")
    acc = sum16(&src[0], src.shape[0], 0)
    acc = sum16(&dst[0], dst.shape[0], acc)
    acc += n + IPPROTO_UDP
    if n:
        acc = sum16(&segment[0], n, acc)
    acc = (~fold16(acc)) & 0xFFFF
    return acc if acc else 0xFFFF


def gtpu_encap(const unsigned char[:] inner, uint32_t teid, qfi, const unsigned char[:] src,
               const unsigned char[:] dst):
    """``inner`` (an IP packet) in GTP-U: outer IPv4/IPv6 + UDP 2152->2152 + G-PDU header, no Ethernet.

    The bytes the engine's FORWARD_ENCAPSULATED writes (docs/semantics.md
    section 5): outer TOS/traffic class from the inner DSCP, DF, TTL 64; with
    ``qfi``, a UL PDU Session Container. IPv4 or IPv6 outer by the address length.
    """
    cdef int family, hlen, rc, dscp = 0, q = -1 if qfi is None else qfi
    cdef Py_ssize_t n = inner.shape[0]
    cdef bytearray out
    cdef uint8_t* o
    if src.shape[0] not in (4, 16) or dst.shape[0] != src.shape[0]:
        raise ValueError("tunnel addresses are 4 (IPv4) or 16 (IPv6) bytes, both of one family")
    if not -1 <= q <= 63:
        raise ValueError(f"QFI {q} is outside 0..63")
    family = 4 if src.shape[0] == 4 else 6
    if n >= 2 and inner[0] >> 4 == 4:
        dscp = inner[1] >> 2
    elif n >= 2 and inner[0] >> 4 == 6:
        dscp = (((inner[0] & 0x0F) << 4) | (inner[1] >> 4)) >> 2
    hlen = encap_bytes(FP_ENCAP_GTPU, family, q)
    out = bytearray(hlen + n)
    o = out
    if n:
        memcpy(o + hlen, &inner[0], n)
    rc = write_encap(o, FP_ENCAP_GTPU, family, &src[0], &dst[0], teid, q, dscp, 0, n)
    if rc < 0:
        raise ValueError(f"a {n}-byte inner packet does not fit one GTP-U datagram")
    return bytes(out)


def gtpu_decap(frame):
    """(TEID, QFI or None, user IP datagram) of an Ethernet frame carrying a GTP-U G-PDU, else None.

    The engine's parser decides: None for untunnelled, signalling (echo, end
    marker), malformed or non-IP frames (``parse(frame)`` tells which).
    """
    cdef const uint8_t[:] view = frame
    cdef parsed_t p
    cdef int n = view.shape[0]
    if n == 0 or parse_frame(&view[0], n, &p) or not p.tunnel:
        return None
    return p.teid, _opt(p.qfi), bytes(view[p.user.off:p.user.off + p.user.length])
