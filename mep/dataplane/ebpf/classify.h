/* classify.h - the bit-vector classifier behind a per-CPU flow cache.
 *
 * cache_lookup() (mep_xdp) answers established flows; on a miss
 * classify_scan() finds the first matching filter (in mep_xdp) and, when
 * FLOW rules are enforced, the first in the reverse direction (in
 * mep_xdp_classify_rev, a program of its own: mep_xdp.c); then
 * classify_miss() picks the winning rule slot, or no rule, and writes it to
 * the cache. The
 * tables are built by mep/dataplane/tables.py (whose lookup() is the Python
 * model of this file) and written by maps/classifier.py:
 *   - per field, a class lookup gives a vector index: an LPM trie for the four
 *     address fields (src, dst, tunnel src, tunnel dst), one array for the nine
 *     value fields (ports, protocol, VLAN, DSCP, TC, QFI);
 *   - the OR of the classes' key summaries, and of the AND of each key pair's
 *     two pair summaries, names the words that can hold a match (a filter
 *     matches only where the classes of the fields it is keyed on hold it);
 *   - the AND of the fields' vectors (blocks of a shared pool), over those
 *     words in order, stops
 *     at the first non-zero word; its lowest bit is the first matching
 *     filter (filters are numbered in match order), mep_filter_rule gives
 *     its rule slot.
 * Cost: ~13 class lookups, then ~4-7 ns per candidate word ANDed before
 * the first hit (docs/classifier.md). The flow cache (key: every matchable
 * field + generation) makes established flows one array lookup.
 * Verifier note: bcc 0.26 cannot call bpf_loop (no BPF_PSEUDO_FUNC
 * relocation), so the scan is two bounded loops (summary words, then the
 * candidate bits of each); the field loop is unrolled so each vector
 * pointer has a constant stack slot the verifier can track.
 * Included by the entry file.
 */
#ifndef MEP_CLASSIFY_H
#define MEP_CLASSIFY_H

struct cls_result {
	__u32 slot;
	__u8 reverse;
};

/* Index of the lowest set bit of x != 0: the popcount of the bits below it,
 * branch-free (SWAR). BPF has no ctz instruction, bcc's clang crashes on
 * __builtin_ctzll for BPF, and a binary search gave the verifier 2^6 paths. */
static __always_inline __u32 ctz64(__u64 x)
{
	__u64 v = (x & -x) - 1;

	v = v - ((v >> 1) & 0x5555555555555555ULL);
	v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
	v = (v + (v >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (v * 0x0101010101010101ULL) >> 56;
}

/* Per-CPU working memory of a miss (in the scratch map). */
struct field_values {
	/* scan results, kept in map memory so that the verifier forgets which
	 * word each came from (see classify_scan) */
	__u32 fwd_bit;
	__u32 rev_bit;
	__u32 fwd_slot;
	__u32 rev_slot;
	__u8 fwd;
	__u8 rev;
	__u8 pad[2];
	__u64 candidates[MEP_SUMMARY_WORDS]; /* scan() of a wide() rule set: the words its summaries name */
	__u64 sums[MEP_NFIELDS * MEP_VEC_SUM_WORDS]; /* scan(): each field's class's struct vec sum[], for the pairs
						      * (flat: bcc mirrors a[13][2] as a[13]) */
	__u64 word;                     /* scan(): the word it ANDs */
	struct addr_class_key class_key; /* addr_class()'s LPM key: one per unrolled field on the stack overflowed it */
};

/* What the packet presents to address field `field` read in direction
 * `reverse` (docs/semantics.md section 4): its address, and its family in
 * *family (0: absent). Both arguments are constants where it is inlined, so
 * each field reads the parsed packet directly (a copy of every field's value
 * into map memory cost ~5 ns a miss). */
static __always_inline const union mep_addr *field_addr(const struct pkt *p, const int field, const int reverse,
							__u8 *family)
{
	const struct ip_info *u = &p->user, *o = &p->outer;

	switch (field) {
	case MEP_F_SRC:
		*family = u->family;
		return reverse ? &u->dst : &u->src;
	case MEP_F_DST:
		*family = u->family;
		return reverse ? &u->src : &u->dst;
	case MEP_F_TUN_SRC:
		*family = p->tunnel ? o->family : 0;
		return reverse ? &o->dst : &o->src;
	}
	*family = p->tunnel ? o->family : 0;
	return reverse ? &o->src : &o->dst;
}

/* What the packet presents to value field `field` in direction `reverse`:
 * an index into the field's range, its domain size when absent. */
static __always_inline __u32 field_value(const struct pkt *p, const int field, const int reverse)
{
	const struct ip_info *u = &p->user, *o = &p->outer;

	switch (field) {
	case MEP_F_SPORT:     return u->has_ports ? (reverse ? u->dport : u->sport) : MEP_VDOM_SPORT;
	case MEP_F_DPORT:     return u->has_ports ? (reverse ? u->sport : u->dport) : MEP_VDOM_DPORT;
	case MEP_F_TUN_SPORT: return p->tunnel ? (reverse ? o->dport : o->sport) : MEP_VDOM_TUN_SPORT;
	case MEP_F_TUN_DPORT: return p->tunnel ? (reverse ? o->sport : o->dport) : MEP_VDOM_TUN_DPORT;
	case MEP_F_PROTO:     return u->proto;
	case MEP_F_VLAN:      return p->has_vlan ? (p->vlan_tci & 0x0fff) : MEP_VDOM_VLAN;
	case MEP_F_DSCP:      return u->family == 4 ? u->dscp : MEP_VDOM_DSCP;
	case MEP_F_TC:        return u->family == 6 ? u->tc : MEP_VDOM_TC;
	}
	return p->has_qfi ? p->qfi : MEP_VDOM_QFI;
}

/* Start of each value field's range in a half's value classes (-D from tables.py). */
static __always_inline __u32 value_base(int field)
{
	switch (field) {
	case MEP_F_SPORT:     return MEP_VBASE_SPORT;
	case MEP_F_DPORT:     return MEP_VBASE_DPORT;
	case MEP_F_TUN_SPORT: return MEP_VBASE_TUN_SPORT;
	case MEP_F_TUN_DPORT: return MEP_VBASE_TUN_DPORT;
	case MEP_F_PROTO:     return MEP_VBASE_PROTO;
	case MEP_F_VLAN:      return MEP_VBASE_VLAN;
	case MEP_F_DSCP:      return MEP_VBASE_DSCP;
	case MEP_F_TC:        return MEP_VBASE_TC;
	case MEP_F_QFI:       return MEP_VBASE_QFI;
	}
	return 0;
}

/* The class of IPv4 address v (host order) in address field `field`: the
 * first level names the few intervals of v's bucket, a binary search over
 * their ends (tables.ipv4_index) finds the one that may hold v. Branch-free
 * steps (the comparison as arithmetic), at most MEP_ADDR4_STEPS of them,
 * fewer as buckets are small. The arithmetic is 64-bit: bcc compiles for
 * BPF v1, which has no 32-bit ALU, and each 32-bit step cost two shifts to
 * truncate (~2-3 ns a miss at 1,000 rules). */
static __always_inline __u32 addr4_class(const struct set_cfg *cfg, const struct addr4_index *rows, __u32 field,
				       __u32 addr)
{
	const struct addr4_iv *iv = (const struct addr4_iv *)rows->bytes;
	__u64 f = field & 3, v = addr, lo = cfg->addr4_lo[f], n = cfg->addr4_n[f], row = cfg->addr4_start[f];
	__u64 b, key, first, end, count, i;

	if (!n || v < lo || v > cfg->addr4_hi[f])
		return 0;
	b = (v - lo) >> (cfg->addr4_shift[f] & 31);
	if (b >= MEP_ADDR4_BUCKETS)
		return 0;
	key = f * (MEP_ADDR4_BUCKETS + 1) + b;
	first = rows->first[key];
	end = rows->first[key + 1];
	if (end < first)
		return 0;
	count = end - first;
	first += row;  /* from here a row of the half's intervals */
	for (i = 0; i < MEP_ADDR4_STEPS; i++) {
		__u64 step = count >> 1, at = first + step - 1;

		if (count <= 1)
			break;
		if (at >= MEP_MAX_ADDR4)
			return 0;
		/* that interval ends before v: the answer is past it */
		first += step * (((__u64)iv[at].hi - v) >> 63);
		count -= step;
	}
	if (count) {
		if (first >= MEP_MAX_ADDR4)
			return 0;
		first += ((__u64)iv[first].hi - v) >> 63;
	}
	if (first - row >= n || first >= MEP_MAX_ADDR4)
		return 0;
	return iv[first].lo <= v ? iv[first].cls : 0;
}

/* The class of an address field; class 0 (the field's open filters) when
 * absent or nothing matches. IPv4 through addr4_class(), IPv6 through the
 * LPM trie. */
static __always_inline __u32 addr_class(__u32 half, const struct set_cfg *cfg, const struct addr4_index *rows,
					const struct pkt *p, const int field, const int reverse, struct field_values *fv)
{
	struct addr_class_key *key = &fv->class_key;
	__u8 family;
	const union mep_addr *a = field_addr(p, field, reverse, &family);
	__u32 *cls;

	if (!family)
		return 0;
	if (family == 4)
		return addr4_class(cfg, rows, field, bpf_ntohl(a->w[0]));
	key->family = family;
	key->prefixlen = 24 + 128;
	key->half = half;
	key->field = field;
	key->pad = 0;
	__builtin_memcpy(key->addr, a->b, 16);
	cls = mep_addr_class.lookup(key);
	return cls ? *cls : 0;
}

/* The class of `value` in value field `field`. Read through a typed
 * pointer: with the cast inside the load, clang took the alignment of the
 * bytes the map value is declared as and loaded the class a byte at a time
 * (four loads, three shifts and ORs a field). */
static __always_inline __u32 value_class(const struct value_classes *values, int field, __u32 value)
{
	const __u32 *cls = (const __u32 *)values->bytes;
	__u64 idx = value_base(field) + (__u64)value;

	return idx < MEP_VALUE_SPACE ? cls[idx] : 0;
}

static __always_inline const struct vec *vector_at(const struct vec_index *vecs, __u64 i)
{
	if (i >= MEP_MAX_VECTORS)
		return 0;
	/* keeps clang from computing the offset before the bound is checked */
	asm volatile("" : "+r"(i));
	return (const struct vec *)(vecs->bytes + i * MEP_VEC_BYTES);
}

/* Block `index` of a half's pool: masked (a power of two), so the verifier
 * bounds the offset without a branch per field and word. */
static __always_inline const __u64 *block(const struct vec_pool *pool, mep_block_t index)
{
	return (const __u64 *)pool->bytes + (__u64)(index & (MEP_MAX_BLOCKS - 1)) * MEP_BLOCK_WORDS;
}

/* Word w of vector v, given col = word w % MEP_BLOCK_WORDS of block 0 (the
 * word's column in every block): one load more than a dense vector's (its
 * block's index), for a seventh of the memory (docs/classifier.md). */
static __always_inline __u64 vec_word(const __u64 *col, const struct vec *v, __u64 w)
{
	return col[(__u64)(v->blk[w / MEP_BLOCK_WORDS] & (MEP_MAX_BLOCKS - 1)) * MEP_BLOCK_WORDS];
}

/* Filters are numbered below MEP_MAX_FILTERS: a scan that found none leaves this. */
#define MEP_NO_FILTER 0xffffffffu

/* The vectors in use are wide: over 64 words (4,096 filters), so that the
 * candidate words take more than one summary word. Read from map memory each
 * time: a compare on a register the scan keeps split the verifier's walk of
 * the scan in two (77k -> 137k instructions at 8,192 filters). */
static __always_inline int wide(const struct set_cfg *cfg)
{
	return *(volatile __u32 *)&cfg->nwords > 64;
}

/* The first summary word of a & b, returned for the caller's register; the
 * rest ORed into fv->candidates only when the vectors in use are wide(). A
 * rule set under that then ORs one word where the program's capacity has
 * several (five at 20,480 filters: ~15 ns a classification at 1,000 rules);
 * a branch per word cost more than it saved at 10,000 rules. */
static __always_inline __u64 add_candidates(const struct set_cfg *cfg, struct field_values *fv, const __u64 *a,
					    const __u64 *b)
{
	int k;

	if (wide(cfg)) {
#pragma unroll
		for (k = 1; k < MEP_SUMMARY_WORDS; k++)
			fv->candidates[k] |= a[k] & b[k];
	}
	return a[0] & b[0];
}

/* The filters of word w that match: the AND there of every field's vector,
 * then of the filters in force. The fields no filter uses all name the
 * all-ones vector's blocks, one cache line. (With dense vectors the six
 * fields most filters set went first and the rest only for words those left
 * non-zero: -28..34 % on scans to the bottom at 10k rules; with blocks that
 * branch doubled the verifier's walk of the scan, past its 1M budget at
 * 32,768 filters.) */
static __always_inline __u64 word_matches(const struct vec_pool *pool, const struct vec *const *v,
					  const struct vec *only, __u64 w)
{
	const __u64 *col = (const __u64 *)pool->bytes + w % MEP_BLOCK_WORDS;
	__u64 acc = vec_word(col, only, w);
	int f;

#pragma unroll
	for (f = 0; f < MEP_NFIELDS; f++)
		acc &= vec_word(col, v[f], w);
	return acc;
}

/* One AND-scan: *bit (map memory, preset to MEP_NO_FILTER) becomes the first
 * filter that matches. `only` restricts the scan to its filters: forward,
 * the enabled ones (the tables may hold the filters of dormant rules,
 * maps/classifier.py); reverse, the enabled FLOW rules' ones.
 * Fields no filter uses are not looked up: they AND the half's all-ones
 * vector, looked up once (whose key summary names the words of the filters
 * that constrain no field). Every pointer in v[] is non-NULL, so the
 * verifier sees one path through the setup (a pointer that may be NULL per
 * field gave it 2^13 paths). */
static __always_inline void scan(__u32 half, const struct set_cfg *cfg, const struct vec_index *vecs,
				const struct vec_pool *pool, const struct value_classes *values,
				const struct addr4_index *rows, const struct pkt *p, const int reverse,
				struct field_values *fv, const struct vec *only, __u32 *bit)
{
	const struct vec *v[MEP_NFIELDS], *ones = vector_at(vecs, MEP_ALL_ONES_VECTOR);
	__u32 used = cfg->used_fields, keyed = cfg->keyed_fields;
	__u64 nwords = cfg->nwords, cand, acc, k, j;
	const __u64 *sa, *sb;
	int f, pair;

	if (!ones)
		return;

	/* The first candidate word gathers in a register, the others of a
	 * wide() rule set in map memory (*fv): OR-ed in the scan loop, each
	 * vector's summary address was one more pointer on the 512-byte stack. */
	if (wide(cfg)) {
#pragma unroll
		for (k = 1; k < MEP_SUMMARY_WORDS; k++)
			fv->candidates[k] = 0;
	}
	sa = block(pool, ones->sum[0]);
	cand = add_candidates(cfg, fv, sa, sa);
#pragma unroll
	for (f = 0; f < MEP_NFIELDS; f++) {
		v[f] = ones;
		if (used & (1u << f)) {
			__u32 cls = f < 4 ? addr_class(half, cfg, rows, p, f, reverse, fv)
					  : value_class(values, f, field_value(p, f, reverse));

			v[f] = vector_at(vecs, (__u64)cfg->vector_base[f] + cls);
			if (!v[f])
				return;
#pragma unroll
			for (k = 0; k < MEP_VEC_SUM_WORDS; k++)
				fv->sums[f * MEP_VEC_SUM_WORDS + k] = ((const __u64 *)v[f]->sum)[k];
			if (keyed & (1u << f)) {
				sa = block(pool, v[f]->sum[0]);
				cand |= add_candidates(cfg, fv, sa, sa);
			}
		}
	}
	/* Key pairs: their fields' pair summaries, their vectors' sum[] copied
	 * to map memory above (v[] is on the stack, where the verifier follows
	 * no variable index; looking the two vectors up again took twice the
	 * instructions). */
#pragma unroll
	for (pair = 0; pair < MEP_KEY_PAIRS; pair++) {
		__u32 a = cfg->pair_a[pair], b = cfg->pair_b[pair];

		if (pair >= cfg->npairs)
			break;
		if (a >= MEP_NFIELDS || b >= MEP_NFIELDS)
			return;
		sa = block(pool, ((const mep_block_t *)&fv->sums[a * MEP_VEC_SUM_WORDS])[1 + pair]);
		sb = block(pool, ((const mep_block_t *)&fv->sums[b * MEP_VEC_SUM_WORDS])[1 + pair]);
		cand |= add_candidates(cfg, fv, sa, sb);
	}
	if (nwords <= 64) {
		/* Up to 4,096 filters: the candidate words are the bits of one
		 * register, walked lowest first with the word in a register too
		 * (with the IPv4 search in 64-bit arithmetic, 89-91 -> 84-86 ns a
		 * miss at 1,000 rules against the walk below) */
#pragma clang loop unroll(disable)
		for (j = 0; j < 64; j++) {
			__u64 w;

			if (!cand)
				return;
			w = ctz64(cand);
			cand &= cand - 1;
			/* keeps clang from deriving w's block from the popcount's
			 * product again, past the bound the verifier checks */
			asm volatile("" : "+r"(w));
			if (w >= nwords || w >= MEP_FILTER_WORDS)
				return;
			acc = word_matches(pool, v, only, w);
			if (acc) {
				*bit = w * 64 + ctz64(acc);
				return;
			}
		}
		return;
	}
	fv->candidates[0] = cand;
	/* Indexes are 64-bit: as __u32 each was zero-extended (shift left,
	 * shift right) twice a word, and the scan to the bottom at 10,000 rules
	 * took ~25 % longer (bench/xdp_rules.py). */
#pragma clang loop unroll(disable)
	for (k = 0; k < MEP_SUMMARY_WORDS; k++) {
		__u64 s = k;

		/* Keep clang from fusing the two bounds into one down-counter the
		 * verifier cannot bound (seen here: "invalid access to map value"). */
		asm volatile("" : "+r"(s));
		if (s * 64 >= nwords || s >= MEP_SUMMARY_WORDS)
			break;
		cand = fv->candidates[s];
#pragma clang loop unroll(disable)
		for (j = 0; j < 64; j++) {
			__u64 w;

			if (!cand)
				break;
			/* through map memory: the verifier then knows w by the bounds
			 * below alone, and no longer carries s and cand as precise
			 * into every iteration's state (with w in registers, 28,672
			 * filters went past its 1M-instruction budget; through memory,
			 * 32,768 take 183k) */
			fv->word = s * 64 + ctz64(cand);
			cand &= cand - 1;
			asm volatile("" ::: "memory");
			w = fv->word;
			if (w >= nwords || w >= MEP_FILTER_WORDS)
				break;
			acc = word_matches(pool, v, only, w);
			if (acc) {
				*bit = w * 64 + ctz64(acc);
				return;
			}
		}
	}
}

static __always_inline int filter_rule(__u32 half, __u32 bit, __u32 *slot)
{
	__u32 key = half * MEP_MAX_FILTERS + bit;
	__u32 *s;

	if (bit >= MEP_MAX_FILTERS)
		return 0;
	s = mep_filter_rule.lookup(&key);
	if (!s)
		return 0;
	*slot = *s;
	return 1;
}

/* One direction's scan of a flow cache miss: forward (dir 0) over the
 * enabled filters into fv->fwd_bit, reverse (dir 1, swapped values) over the
 * enabled FLOW rules' filters into fv->rev_bit; MEP_NO_FILTER when none
 * matches. Each direction runs in a program of its own (mep_xdp.c): in one
 * program the verifier walked the reverse scan again after each ending of
 * the forward one (~4x the forward scan's instructions, past the 1M budget
 * at 28,672 filters). */
static __always_inline void classify_scan(__u32 half, const struct set_cfg *cfg, const struct pkt *p,
					  struct field_values *fv, const int dir)
{
	const struct vec_index *vecs = mep_vectors.lookup(&half);
	const struct vec_pool *pool = mep_vec_blocks.lookup(&half);
	const struct value_classes *values = mep_value_class.lookup(&half);
	const struct addr4_index *rows = mep_addr4.lookup(&half);
	__u32 *bit = dir ? &fv->rev_bit : &fv->fwd_bit;
	const struct vec *only;

	*bit = MEP_NO_FILTER;
	if (!vecs)
		return;
	if (dir)  /* the FLOW vector is already ANDed with the enabled filters */
		only = cfg->flow_vector != MEP_NO_VECTOR ? vector_at(vecs, cfg->flow_vector) : 0;
	else
		/* vector 1 or 0 (enabled is 0 or 1) without a branch: two
		 * constant offsets split the verifier's walk of the scan in two */
		only = vector_at(vecs, cfg->enabled & MEP_ENABLED_VECTOR);
	if (!pool || !values || !rows || !only)
		return;
	scan(half, cfg, vecs, pool, values, rows, p, dir, fv, only, bit);
}

/* The miss needs the reverse scan too: some FLOW rule is enforced. */
static __always_inline int classify_reverse(const struct set_cfg *cfg)
{
	return cfg->flow_vector != MEP_NO_VECTOR;
}

/* The first matching rule of the scans' results, forward or (FLOW rules)
 * reverse, the lower rule winning (forward on a tie); 0 when none. */
static __always_inline int classify_result(__u32 half, struct field_values *fv, struct cls_result *res)
{
	fv->fwd = fv->fwd_bit != MEP_NO_FILTER && filter_rule(half, fv->fwd_bit, &fv->fwd_slot);
	fv->rev = fv->rev_bit != MEP_NO_FILTER && filter_rule(half, fv->rev_bit, &fv->rev_slot);
	asm volatile("" ::: "memory");
	if (!fv->fwd && !fv->rev)
		return 0;
	if (fv->fwd && (!fv->rev || fv->fwd_slot <= fv->rev_slot)) {
		res->slot = fv->fwd_slot;
		res->reverse = 0;
	} else {
		res->slot = fv->rev_slot;
		res->reverse = 1;
	}
	return 1;
}

static __always_inline __u64 addr_word(const union mep_addr *a, int half)
{
	return (__u64)a->w[2 * half] | (__u64)a->w[2 * half + 1] << 32;
}

/* Written as its eleven 64-bit words, each computed in registers (see
 * flow_cache_key4). Little-endian layout of struct flow_cache_key. */
static __always_inline void flow_cache_key(const struct pkt *p, __u32 generation, struct flow_cache_key *k)
{
	const struct ip_info *u = &p->user, *o = &p->outer;
	__u64 *w = (__u64 *)k;
	__u64 sport = u->has_ports ? u->sport : 0, dport = u->has_ports ? u->dport : 0;
	__u64 vlan = p->has_vlan ? (p->vlan_tci & 0x0fff) + 1 : 0, qfi = p->has_qfi ? p->qfi + 1 : 0;
	__u64 dscp_tc = u->family == 4 ? u->dscp : u->tc, tun_ports = 0, tun_family = 0;

	w[0] = addr_word(&u->src, 0);
	w[1] = addr_word(&u->src, 1);
	w[2] = addr_word(&u->dst, 0);
	w[3] = addr_word(&u->dst, 1);
	if (p->tunnel) {
		w[4] = addr_word(&o->src, 0);
		w[5] = addr_word(&o->src, 1);
		w[6] = addr_word(&o->dst, 0);
		w[7] = addr_word(&o->dst, 1);
		tun_ports = (__u64)o->sport | (__u64)o->dport << 16;
		tun_family = o->family;
	} else {
		w[4] = w[5] = w[6] = w[7] = 0;
	}
	w[8] = generation | sport << 32 | dport << 48;                                 /* generation, sport, dport */
	w[9] = tun_ports | vlan << 32 | (__u64)u->family << 48 | (__u64)u->proto << 56; /* + vlan, family, proto */
	w[10] = tun_family | dscp_tc << 8 | qfi << 16 | (__u64)u->has_ports << 24;     /* + dscp_tc, qfi, has_ports */
}

/* Written as its five 64-bit words, each computed in registers: stored field
 * by field, every word the hash and the compare then read back waited for the
 * narrow stores under it to retire (no store forwarding). Little-endian
 * layout of struct flow_cache_key4. */
static __always_inline void flow_cache_key4(const struct pkt *p, __u32 generation, struct flow_cache_key4 *k)
{
	const struct ip_info *u = &p->user;
	__u64 *w = (__u64 *)k;
	__u64 sport = u->has_ports ? u->sport : 0, dport = u->has_ports ? u->dport : 0;
	__u64 vlan = p->has_vlan ? (p->vlan_tci & 0x0fff) + 1 : 0, qfi = p->has_qfi ? p->qfi + 1 : 0;
	__u64 tun = 0, tun_ports = 0;

	if (p->tunnel) {
		tun = (__u64)p->outer.src.w[0] | (__u64)p->outer.dst.w[0] << 32;
		tun_ports = (__u64)p->outer.sport | (__u64)p->outer.dport << 16;
	}
	w[0] = (__u64)u->src.w[0] | (__u64)u->dst.w[0] << 32;                  /* src, dst */
	w[1] = tun;                                                             /* tun_src, tun_dst */
	w[2] = generation | sport << 32 | dport << 48;                          /* generation, sport, dport */
	w[3] = tun_ports | vlan << 32 | (__u64)u->proto << 48 | (__u64)u->dscp << 56;
	w[4] = qfi | (__u64)u->has_ports << 8 | (__u64)(p->tunnel ? 1 : 0) << 16; /* qfi, has_ports, tunnel */
}

/* The compact IPv4 cache serves packets that are IPv4 throughout. */
static __always_inline int flow_cache_v4(const struct pkt *p)
{
	return p->user.family == 4 && (!p->tunnel || p->outer.family == 4);
}

/* The flow cache: per CPU, 2-way set-associative, indexed by a multiplicative
 * hash of the key's words. A hit is one inlined array lookup and a compare
 * of the key's words with each way; a miss prepares the set's new contents
 * (the key in way 0, the old way 0 in way 1: the older entry is dropped) and,
 * after the scan, writes them with one map update. The LRU hash it replaced
 * cost ~46 ns a hit and ~380 ns an insert into a full table
 * (docs/classifier.md). An all-zero way never matches: a key's generation is
 * never 0.
 * Verifier note: the write after the scan is a helper call in each family's
 * branch; writing the set's words inline there kept the two branches apart
 * through the rest of the program (221k -> 888k verified instructions at
 * 16k filters). */
struct flow_cache_work {
	struct flow_cache_bucket set;   /* IPv6 or mixed: the new contents of set idx */
	struct flow_cache_bucket4 set4; /* IPv4 throughout */
	__u32 idx;
	__u32 pad;
};

#define MEP_KEY_WORDS  (sizeof(struct flow_cache_key) / 8)
#define MEP_KEY4_WORDS (sizeof(struct flow_cache_key4) / 8)

/* Odd 64-bit multipliers, one per key word (golden ratio, then MurmurHash3's and xxHash's). */
static __always_inline __u64 hash_mult(const int i)
{
	switch (i) {
	case 0:  return 0x9e3779b97f4a7c15ULL;
	case 1:  return 0xc2b2ae3d27d4eb4fULL;
	case 2:  return 0x165667b19e3779f9ULL;
	case 3:  return 0xd6e8feb86659fd93ULL;
	case 4:  return 0xff51afd7ed558ccdULL;
	case 5:  return 0xc4ceb9fe1a85ec53ULL;
	case 6:  return 0x94d049bb133111ebULL;
	case 7:  return 0xbf58476d1ce4e5b9ULL;
	case 8:  return 0x87c37b91114253d5ULL;
	case 9:  return 0x4cf5ad432745937fULL;
	}
	return 0xa0761d6478bd642fULL;
}

/* The slot of a key among `slots` (a power of two; the flow cache's sets,
 * fib.h's FIB cache): the top bits of the sum of each word times its own
 * multiplier (vector multiply-shift hashing). The products are independent
 * (one multiply deep, where a chain of them was n deep), and the top bit of
 * a product depends on every bit of its word. The chained form this replaced
 * kept the index from the middle of the product, which no word's top 18 bits
 * reached: flows that differed only in destination port, or in the last two
 * octets of the destination, shared a set. */
static __always_inline __u32 hash_index(const __u64 *key, const int n, const __u32 slots)
{
	__u64 h = 0;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		h += key[i] * hash_mult(i);
	return (__u32)(((h >> 32) * slots) >> 32);  /* the top log2(slots) bits */
}

static __always_inline __u32 cache_set_index(const __u64 *key, const int n)
{
	return hash_index(key, n, MEP_FLOW_CACHE_BUCKETS);
}

/* The value of the way of `set` (ways of n key words and one value word)
 * holding `key`; on a miss NULL, and `next` (laid out the same) holds the
 * set's new contents but for way 0's value. */
static __always_inline struct flow_cache_val *cache_find(const __u64 *set, __u64 *next, const int n)
{
	int i, k;

#pragma unroll
	for (k = 0; k < 2; k++) {
		const __u64 *w = set + k * (n + 1);
		__u64 diff = 0;

#pragma unroll
		for (i = 0; i < n; i++)
			diff |= w[i] ^ next[i];
		if (!diff)
			return (struct flow_cache_val *)(w + n);
	}
#pragma unroll
	for (i = 0; i <= n; i++)
		next[n + 1 + i] = set[i];
	return 0;
}

/* The cached result for this packet, or NULL (then cw holds the set's next contents). */
static __always_inline struct flow_cache_val *cache_lookup(const struct pkt *p, __u32 generation,
							   struct flow_cache_work *cw)
{
	const __u64 *set;

#ifdef MEP_BENCH_NO_CACHE
	return 0;  /* benchmark only (bench/xdp_rules.py): the tables classify every packet */
#endif
	if (flow_cache_v4(p)) {
		flow_cache_key4(p, generation, &cw->set4.way[0].key);
		cw->idx = cache_set_index((const __u64 *)&cw->set4.way[0].key, MEP_KEY4_WORDS);
		set = (const __u64 *)mep_flow_cache4.lookup(&cw->idx);
		return set ? cache_find(set, (__u64 *)&cw->set4, MEP_KEY4_WORDS) : 0;
	}
	flow_cache_key(p, generation, &cw->set.way[0].key);
	cw->idx = cache_set_index((const __u64 *)&cw->set.way[0].key, MEP_KEY_WORDS);
	set = (const __u64 *)mep_flow_cache.lookup(&cw->idx);
	return set ? cache_find(set, (__u64 *)&cw->set, MEP_KEY_WORDS) : 0;
}

/* The generation a flow cache key carries; in the every-packet-a-new-flow
 * benchmark build, salted by a per-CPU counter bumped for every packet. */
static __always_inline __u32 cache_generation(const struct set_cfg *cfg)
{
#ifdef MEP_BENCH_NEW_FLOWS
	__u32 zero = 0, *salt = mep_bench_salt.lookup(&zero);

	if (salt)
		return cfg->generation ^ ((++*salt) << 8);
#endif
	return cfg->generation;
}

/* A flow cache miss after its scans (classify_scan()): the set
 * cache_lookup() prepared in cw is written with the result, which is also
 * left in *out (slot_plus1 0: no rule matched). */
static __always_inline void classify_miss(__u32 half, const struct pkt *p, struct flow_cache_work *cw,
					  struct field_values *fv, struct flow_cache_val *out)
{
	struct flow_cache_val val = {};
	struct cls_result res = {};

	if (classify_result(half, fv, &res)) {
		val.slot_plus1 = res.slot + 1;
		val.reverse = res.reverse;
	}
	*out = val;
#ifdef MEP_BENCH_NO_CACHE
	return;
#endif
	/* flow_cache_v4() again rather than a register kept live across the
	 * scan: that made the verifier walk the scan once per family (661k
	 * instead of 389k instructions at 16k filters) */
	if (flow_cache_v4(p)) {
		cw->set4.way[0].val = val;
		mep_flow_cache4.update(&cw->idx, &cw->set4);
	} else {
		cw->set.way[0].val = val;
		mep_flow_cache.update(&cw->idx, &cw->set);
	}
}

#endif /* MEP_CLASSIFY_H */
