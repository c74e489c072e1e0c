/* abi.h - every struct that crosses the kernel/user boundary.
 *
 * Python never mirrors these by hand: it takes the key and leaf types from
 * bcc's tables (Key/Leaf classes generated from these definitions), and
 * tests/dataplane/test_abi_layout.py checks the few sizes Python relies on.
 * Addresses are always 16 bytes; IPv4 uses the first 4 (network order).
 * Included by maps.h and everything that reads map values.
 */
#ifndef MEP_ABI_H
#define MEP_ABI_H

union mep_addr {
	__u8 b[16];
	__u32 w[4];
};

/* The index of a block in a half's pool (mep_vec_blocks): two bytes while they suffice. */
#if MEP_MAX_BLOCKS <= 65536
typedef __u16 mep_block_t;
#define MEP_BLOCK_INDEX_BYTES 2
#else
typedef __u32 mep_block_t;
#define MEP_BLOCK_INDEX_BYTES 4
#endif

/* One class's filter bit vector (bit i of word i/64 = filter i)
 * and its summaries, each named by the index of a block of its half's pool:
 * blk[b] holds words b * MEP_BLOCK_WORDS on; sum[0] the key summary (bit j
 * of word j/64: vector word j holds a filter keyed on the field alone in
 * this class), sum[1 + p] the summary of key pair slot p (the words holding
 * a filter keyed on that pair; mep/dataplane/tables.py). Blocks are shared:
 * a class vector differs from its field's open filters in a block or two,
 * so a half holds each distinct block once (maps/classifier.py).
 * The summaries come first, padded to whole 8-byte words (the scan copies
 * them in words: two loads and stores a field where it took ten), and a
 * vector is a whole number of words. */
#define MEP_VEC_SUM_WORDS (((1 + MEP_KEY_PAIRS) * MEP_BLOCK_INDEX_BYTES + 7) / 8)
#define MEP_VEC_BYTES ((MEP_VEC_SUM_WORDS * 8 + MEP_VEC_BLOCKS * MEP_BLOCK_INDEX_BYTES + 7) / 8 * 8)
struct vec {
	mep_block_t sum[MEP_VEC_SUM_WORDS * 8 / MEP_BLOCK_INDEX_BYTES];  /* 1 + MEP_KEY_PAIRS, then padding */
	mep_block_t blk[MEP_VEC_BLOCKS];
} __attribute__((aligned(8)));
_Static_assert(sizeof(struct vec) == MEP_VEC_BYTES, "struct vec is its block indexes, in whole words");

/* mep_vectors: a half's MEP_MAX_VECTORS vectors, one map value (as
 * mep_vec_blocks below), so that a vector is an offset from the pointer the
 * scan looked up once: an array lookup per vector stored its key on the
 * stack and loaded it back, and multiplied by an element size rounded up to
 * 8 bytes. */
struct vec_index {
	__u8 bytes[MEP_MAX_VECTORS * MEP_VEC_BYTES];  /* struct vec v[] (see vec_pool) */
};

/* mep_vec_blocks: a half's pool, MEP_MAX_BLOCKS blocks of MEP_BLOCK_WORDS
 * words (a cache line each); one map value, so that a word is a load at an
 * offset from the pointer the scan looked up once (a lookup per word was a
 * helper call per field, and the scan's registers spilled past the stack).
 * Declared as bytes, read as __u64 w[]: bcc's compile time grows with the
 * elements of a wider array (a __u32 cls[266,889] took 13 s, the bytes of
 * the same size 0.35 s). */
struct vec_pool {
	__u8 bytes[MEP_MAX_BLOCKS * MEP_BLOCK_WORDS * 8];
};

/* mep_sets: one per half of the double buffer. */
struct set_cfg {
	__u32 generation;
	__u32 nwords;                  /* vector words in use (<= MEP_FILTER_WORDS) */
	__u32 used_fields;             /* bit per field id: skip the rest */
	__u32 keyed_fields;            /* bit per field id some filter is keyed on: OR their key summaries */
	__u32 nrules;
	__u32 flow_vector;             /* vector of FLOW rules' filters, MEP_NO_VECTOR if none */
	__u32 vector_base[MEP_NFIELDS];  /* field f's class c is vector vector_base[f] + c */
	/* per address field, its IPv4 intervals in mep_addr4 (tables.ipv4_index): how many,
	 * the first one's start and the last one's end (host order), the first level's shift */
	__u32 addr4_n[4];
	__u32 addr4_start[4];          /* its first interval's row in the half's mep_addr4 value */
	__u32 addr4_lo[4];
	__u32 addr4_hi[4];
	__u8 addr4_shift[4];
	__u8 default_drop;             /* no match: DROP instead of PASS */
	__u8 flow_state;               /* some rule is FORWARD_* FLOW: look replies up in mep_flows */
	__u8 enabled;                  /* vector MEP_ENABLED_VECTOR holds the filters enabled; 0: all are
					* (a half written before it existed: vector 0, all ones) */
	__u8 npairs;                   /* key pair slots in use: the AND of the pair summaries of */
	__u8 pair_a[MEP_KEY_PAIRS];    /* fields pair_a[p] and pair_b[p] names candidate words */
	__u8 pair_b[MEP_KEY_PAIRS];
};

/* mep_addr4: one IPv4 interval of an address field, host order (lo..hi inclusive) */
struct addr4_iv {
	__u32 lo;
	__u32 hi;
	__u32 cls;
};

/* mep_addr4: a half's IPv4 index (tables.ipv4_index): per address field
 * its first level, whose entry b is the first interval that may hold the
 * addresses of bucket b (one entry more a field: the end of the last), then
 * the intervals, every address field's in turn from its
 * set_cfg.addr4_start. One map value a half, as mep_value_class and
 * mep_vec_blocks, memory-mapped by the writer: an array map rounds each
 * element up to 8 bytes, twice a u32's size, and the first level read in
 * the value looked up for the intervals saves two lookups a field. */
struct addr4_index {
	__u32 first[4 * (MEP_ADDR4_BUCKETS + 1)];
	__u8 bytes[MEP_MAX_ADDR4 * 12];  /* struct addr4_iv iv[] (see vec_pool; bcc cannot describe a sizeof here) */
};
_Static_assert(sizeof(struct addr4_iv) == 12, "mep_addr4 rows are 12 bytes");

/* mep_value_class: a half's value classes, at each value field's base
 * (ports, protocol, VLAN, DSCP, TC, QFI); 0 unless written. */
struct value_classes {
	__u8 bytes[MEP_VALUE_SPACE * 4];  /* __u32 cls[] (see vec_pool) */
};

/* mep_state[0]: which half is in force. One aligned word: a reader sees the
 * old or the new value, never a mix. */
struct state_val {
	__u32 active;
	__u32 meta_all;                /* write mep_meta for every frame (test-run, explain), not only DUPLICATE */
};

/* mep_addr_class: LPM key -> class (u32); a miss is class 0. The trie matches prefixlen bits of the bytes after
 * prefixlen: half, field and family always (24 bits), then the address. */
struct addr_class_key {
	__u32 prefixlen;
	__u8 half;
	__u8 field;
	__u8 family;
	__u8 addr[16];
	__u8 pad;
};

struct target_val {
	__u8 kind;                     /* MEP_TARGET_* */
	__u8 port;                     /* DEVMAP slot of the egress port */
	__u8 rewrite;                  /* new_dst is valid */
	__u8 family;                   /* of new_dst when rewrite, of the tunnel when encapsulating */
	__u16 mtu;                     /* egress port MTU */
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u8 pad[2];
	union mep_addr new_dst;
	union mep_addr tun_src;
	union mep_addr tun_dst;
};

struct rule_val {
	__u32 rule_id;
	__u32 version;
	__u32 counter;                 /* slot in mep_rule_counters: stable while the rule exists */
	__u8 action;                   /* MEP_ACTION_* */
	__u8 flow;                     /* filterType FLOW */
	__u8 ntargets;
	__u8 pad;
	struct target_val t[2];
};

/* mep_rule_index: (half, rule id) -> rule slot, to validate flow state and copies. */
struct rule_index_key {
	__u32 half;
	__u32 rule_id;
};

/* mep_flow_cache / mep_flow_cache4 (classify.h): program-private, user
 * space never reads them. A key holds every field a filter can test plus
 * the generation, so a hit is exactly what classification would return for
 * that rule set. Keys are whole 8-byte words (hashed and compared a word
 * at a time), 8-byte aligned. */
struct flow_cache_key {
	union mep_addr src;
	union mep_addr dst;
	union mep_addr tun_src;
	union mep_addr tun_dst;
	__u32 generation;
	__u16 sport;
	__u16 dport;
	__u16 tun_sport;
	__u16 tun_dport;
	__u16 vlan;                    /* VID + 1; 0 untagged */
	__u8 family;
	__u8 proto;
	__u8 tun_family;               /* 0 untunnelled */
	__u8 dscp_tc;
	__u8 qfi;                      /* QFI + 1; 0 none */
	__u8 has_ports;
	__u8 pad[4];
} __attribute__((aligned(8)));

/* The same for an IPv4 packet, untunnelled or in an IPv4 tunnel: 40 bytes
 * instead of 88, half the words to hash and compare. */
struct flow_cache_key4 {
	__u32 src;
	__u32 dst;
	__u32 tun_src;
	__u32 tun_dst;
	__u32 generation;
	__u16 sport;
	__u16 dport;
	__u16 tun_sport;
	__u16 tun_dport;
	__u16 vlan;                    /* VID + 1; 0 untagged */
	__u8 proto;
	__u8 dscp;
	__u8 qfi;                      /* QFI + 1; 0 none */
	__u8 has_ports;
	__u8 tunnel;
	__u8 pad[5];
} __attribute__((aligned(8)));

struct flow_cache_val {
	__u32 slot_plus1;              /* rule slot + 1; 0: no rule matched */
	__u8 reverse;
	__u8 pad[3];
};

/* One set of the 2-way caches: way 0 the newer entry. */
struct flow_cache_way {
	struct flow_cache_key key;
	struct flow_cache_val val;
};

struct flow_cache_bucket {
	struct flow_cache_way way[2];
};

struct flow_cache_way4 {
	struct flow_cache_key4 key;
	struct flow_cache_val val;
};

struct flow_cache_bucket4 {
	struct flow_cache_way4 way[2];
};

_Static_assert(sizeof(struct flow_cache_key) == 88 && sizeof(struct flow_cache_key4) == 40,
	       "flow cache keys are whole 8-byte words");
_Static_assert(sizeof(struct flow_cache_val) == 8, "a flow cache value is one word");

/* mep_flows: reverse-flow state of FORWARD_* FLOW rules (docs/semantics.md 6). */
struct flow_key {
	union mep_addr src;
	union mep_addr dst;
	__u32 ingress;                 /* port index the reply arrives on */
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 pad[2];
};

struct flow_val {
	__u32 rule_id;
	__u32 version;
	__u32 out_port;
	__u32 out_mtu;                 /* MTU of out_port */
	__u8 eth_dst[6];
	__u8 eth_src[6];
	__u16 vlan_tci;
	__u8 has_vlan;
	__u8 restore;                  /* restore_src is valid */
	union mep_addr restore_src;
};

/* mep_port_of: ingress ifindex -> port (index 0: not a data-plane port). */
struct port_val {
	__u8 index;
	__u8 role;                     /* MEP_ROLE_* */
	__u8 mirror;                   /* MEP_ROLE_MIRROR: which target of a DUPLICATE rule */
	__u8 fib_forward;              /* PASS frames arriving here may be forwarded in XDP (fib.h) */
	__u32 mtu;
};

/* mep_fib_cache (fib.h): what a bpf_fib_lookup that forwarded answered, for
 * its inputs (key: the first MEP_FIB_KEY_WORDS words of struct
 * bpf_fib_lookup but tot_len, as fib_params() builds them). An all-zero
 * entry never matches: its generation is never mep_fib_gen's (0 turns the
 * cache off). */
#define MEP_FIB_KEY_WORDS 6
struct fib_cache_entry {
	__u64 key[MEP_FIB_KEY_WORDS];
	__u64 expires;                 /* bpf_ktime_get_coarse_ns() from which it is looked up again */
	__u32 generation;              /* mep_fib_gen's when it was looked up */
	__u32 port;                    /* the egress port's index */
	__u8 dmac[6];                  /* the next hop's MAC */
	__u8 smac[6];                  /* the egress port's MAC */
	__u16 max_len;                 /* the longest tot_len it forwarded: a longer frame is looked up (the MTU) */
	__u8 pad[2];
};

_Static_assert(sizeof(struct fib_cache_entry) == 80, "a FIB cache entry is ten words");

struct counter_val {
	__u64 packets;
	__u64 bytes;
};

/* mep_dns: the answer to one (half, QTYPE, question name) (docs/dns-xdp.md). */
struct dns_key {
	__u8 half;                       /* the rule-set half (mep_state.active) */
	__u8 pad;
	__u16 qtype;                     /* network order, as in the question */
	__u8 qname[MEP_DNS_NAME_BYTES];  /* wire form through the root label, A-Z folded to a-z, rest zero */
};

struct dns_val {
	__u32 rule_id;                   /* the DNS rule answered; 0: NODATA */
	__u32 counter;                   /* slot in mep_dns_counters; 0: the NODATA slot */
	__u16 rr_bytes;                  /* bytes of rr to append: 16 (A), 28 (AAAA), 0 (NODATA) */
	__u16 pad;
	__u8 rr[MEP_DNS_RR_BYTES];       /* the answer record exactly as it goes on the wire */
};

/* mep_dns_cfg[0]: where the responder answers (dns.listen). */
struct dns_cfg {
	union mep_addr addr;             /* IPv4 in the first 4 bytes */
	__u16 port;                      /* network order */
	__u8 family;                     /* 4 or 6; 0: the XDP responder is off */
	__u8 pad;
};

/* XDP metadata in front of every frame the program passes on or redirects:
 * read by the TC program (DUPLICATE copies) and by test-run callers. */
struct mep_meta {
	__u8 verdict;
	__u8 reason;
	__u8 port;                     /* egress port of REDIRECT */
	__u8 copies;                   /* DUPLICATE: bitmask of targets to copy */
	__u32 rule_id;
	__u32 version;                 /* DUPLICATE: the rule's version, checked by the copy */
	__u32 flags;                   /* MEP_META_REVERSE */
};

#define MEP_META_REVERSE 1

/* The trailer TC appends to a DUPLICATE clone for the mirror port. */
struct copy_trailer {
	__u32 rule_id;
	__u32 version;
};

#endif /* MEP_ABI_H */
