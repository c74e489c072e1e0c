/* consts.h - capacities, limits and flags of the MEP data plane.
 *
 * Every number that Python also knows arrives as a -D flag from xdp.py
 * (capacities from dataplane.capacity, field ids and value-domain bases from
 * mep/dataplane/tables.py, action and target codes from maps/abi.py); this
 * file derives the rest and refuses to compile without them, so there is no
 * second copy to drift. Included first by every BPF source.
 */
#ifndef MEP_CONSTS_H
#define MEP_CONSTS_H

#if !defined(MEP_MAX_RULES) || !defined(MEP_MAX_FILTERS) || !defined(MEP_MAX_VECTORS) || \
    !defined(MEP_FLOW_CAPACITY) || !defined(MEP_FLOW_CACHE_BUCKETS) || !defined(MEP_MAX_PORTS) || !defined(MEP_VALUE_SPACE) || \
    !defined(MEP_MAX_IFINDEX) || !defined(MEP_MAX_ADDR4) || !defined(MEP_ADDR4_BUCKETS) || \
    !defined(MEP_ADDR4_STEPS) || !defined(MEP_MAX_BLOCKS) || !defined(MEP_BLOCK_WORDS)
#error "capacities come from xdp.py as -D flags (mep/dataplane/xdp.py: cflags())"
#endif

/* Words of one filter bit vector: one bit per filter, 64 filters a word. */
#define MEP_FILTER_WORDS ((MEP_MAX_FILTERS + 63) / 64)
/* Words of a vector's key summary: one bit per vector word. */
#define MEP_SUMMARY_WORDS ((MEP_FILTER_WORDS + 63) / 64)
/* Blocks of MEP_BLOCK_WORDS words (mep_vec_blocks) a vector spans; a
 * summary fits one (at most 32,768 filters). */
#define MEP_VEC_BLOCKS ((MEP_FILTER_WORDS + MEP_BLOCK_WORDS - 1) / MEP_BLOCK_WORDS)
#if MEP_SUMMARY_WORDS > MEP_BLOCK_WORDS
#error "a summary must fit one block: at most 32,768 filters"
#endif
#if MEP_MAX_BLOCKS & (MEP_MAX_BLOCKS - 1)
#error "MEP_MAX_BLOCKS is a power of two: a block index is masked, not compared"
#endif

/* Bounded walks; the same bounds as mep/dataplane/packet.py (MAX_*). */
#define MEP_MAX_IPV6_EXT 6
#define MEP_MAX_GTPU_EXT 4

/* IPv6 outer UDP checksum: the loop sums 2-byte words up to this many bytes
 * of UDP payload (a 9000-byte jumbo frame); larger frames exceed every MTU
 * the ports accept, so the MTU check refuses them first. */
#define MEP_MAX_CSUM_BYTES 9216

#define MEP_NO_VECTOR 0xffffffffu
/* Vector 0 of a half: all ones, what the fields no filter uses AND. */
#define MEP_ALL_ONES_VECTOR 0u
/* Vector 1 of a half: the filters of the rules enforced (maps/classifier.py),
 * ANDed into every forward scan when the half's set_cfg.enabled says so. */
#define MEP_ENABLED_VECTOR 1u
#define MEP_GTPU_PORT 2152
#define MEP_OUTER_TTL 64

/* Slots of mep_progs: programs the entry tail-calls, and the entry itself
 * (its second pass, which acts on a miss's result). */
#define MEP_PROG_DNS 0
#define MEP_PROG_XDP 1
#define MEP_PROG_CLASSIFY_REV 2
#define MEP_PROGS 3

/* Port roles (mep/config.py PortRole) and the mirror role of the veths that
 * carry DUPLICATE_* copies from TC back into XDP. */
#define MEP_ROLE_N6 1
#define MEP_ROLE_DN 2
#define MEP_ROLE_APP 3
#define MEP_ROLE_MIRROR 4

#endif /* MEP_CONSTS_H */
