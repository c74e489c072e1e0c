/* dns.h - the XDP DNS responder: one A/AAAA question over UDP, answered with XDP_TX.
 *
 * dns_for_us() tells the entry that a frame is for the responder; the entry
 * tail-calls mep_xdp_dns() (its own program: inlined into the entry it
 * overflowed the 512-byte stack), where dns_answer() returns 1 when it
 * turned the query into its answer (XDP_TX), 0 when the query must go to
 * the user-space responder (mep/dns), which then receives it unchanged. What it
 * answers and the exact answer bytes are docs/dns-xdp.md's; the executable
 * spec is mep/dns/twin.py (XdpTwin), and the DNS payload this produces is
 * tested against it and against the user-space responder.
 * Included by the entry file, after parse.h (struct pkt) and csum.h.
 */
#ifndef MEP_DNS_H
#define MEP_DNS_H

#define DNS_HEADER_BYTES 12
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define DNS_TTL 64

/* dns_answer()'s working values, in scratch: held in registers and spilled,
 * they pushed the program past the 512-byte stack. */
struct dns_work {
	__u32 dns_off;
	__u32 dns_len;
	__u32 name_len;
	__u32 rr_bytes;
	__u32 rr_off;
	__u32 counter;
	__u16 flags;
	__u16 new_flags;
	__u16 old_len;
	__u16 new_len;
	__u16 ancount;
	__u16 qtype_qclass[2];
	__u16 pad;
	__u32 pos;                       /* dns_key_name()'s cursor */
	__u32 end;
	__u8 old_w[8];
	__u8 new_w[8];
};

/* The query's question name into key->qname: labels of 1..63 bytes up to the
 * root label, filling the question up to QTYPE and QCLASS (avail bytes, at
 * most MEP_DNS_NAME_BYTES), A-Z folded to a-z; key->qname is zero beyond it.
 * Returns its length (root included), or 0 when the question is not such a
 * name. The walk keeps its cursor in w (per-CPU map memory) behind a compiler
 * barrier, so the verifier sees one state per loop head instead of one per
 * label count (578k verified instructions for this function otherwise); the
 * loops stay rolled (clang unrolled them onto the stack). */
static __always_inline __u32 dns_key_name(struct xdp_md *ctx, __u32 q, __u32 avail, struct dns_key *key,
					  struct dns_work *w)
{
	__u64 n = avail;
	int i;

	asm volatile("" : "+r"(n));
	if (n == 0 || n > MEP_DNS_NAME_BYTES)
		return 0;
	if (bpf_xdp_load_bytes(ctx, q, key->qname, n))
		return 0;
	w->pos = 0;
	w->end = 0;
#pragma clang loop unroll(disable)
	for (i = 0; i < MEP_DNS_NAME_BYTES / 2; i++) {   /* a label takes at least 2 bytes */
		__u32 pos;
		__u8 len;

		asm volatile("" ::: "memory");
		pos = w->pos;
		if (pos >= n)
			return 0;
		len = key->qname[pos & (MEP_DNS_NAME_BYTES - 1)];
		if (len == 0) {
			w->end = pos + 1;
			break;
		}
		if (len > 63)
			return 0;  /* a compression pointer or a reserved label type */
		w->pos = pos + len + 1;
	}
	asm volatile("" ::: "memory");
	if (w->end != n)
		return 0;  /* no root label, or bytes between it and QTYPE */
	/* A-Z to a-z, eight bytes a step: for each byte h below 0x80, bit 7 of
	 * h + 0x3f is h >= 'A' and bit 7 of h + 0x25 is h > 'Z' (no carry leaves
	 * a byte); where they differ, 0x20 is ORed in. Label lengths (< 64) and
	 * the zeros past the name stay as they are. */
#pragma clang loop unroll(disable)
	for (i = 0; i < MEP_DNS_NAME_BYTES / 8; i++) {
		__u64 *word = (__u64 *)&key->qname[8 * i];
		__u64 x, h;

		if ((__u32)(8 * i) >= n)
			break;
		x = *word;
		h = x & 0x7f7f7f7f7f7f7f7fULL;
		*word = x | ((((h + 0x3f3f3f3f3f3f3f3fULL) ^ (h + 0x2525252525252525ULL)) & ~x &
			      0x8080808080808080ULL) >> 2);
	}
	return n;
}

/* The one's-complement sum of `bytes` bytes of rr (even, <= MEP_DNS_RR_BYTES). */
static __always_inline __u32 rr_sum(const __u8 *rr, __u32 bytes)
{
	__u32 acc = 0;
	int i;

#pragma unroll
	for (i = 0; i < MEP_DNS_RR_BYTES / 2; i++) {
		if ((__u32)(2 * i) >= bytes)
			break;
		acc += ((__u32)rr[2 * i] << 8) | rr[2 * i + 1];
	}
	return csum_fold(acc);
}

/* Is this an untunnelled, untagged UDP datagram to the responder's address
 * and port (dns.listen)? Such a frame is for the platform, not subject to
 * traffic rules: the entry hands it to mep_xdp_dns. */
static __always_inline int dns_for_us(const struct pkt *p)
{
	const struct ip_info *u = &p->user;
	struct dns_cfg *cfg;
	__u32 zero = 0;

	if (p->has_vlan || p->tunnel || u->proto != IPPROTO_UDP || !u->has_ports)
		return 0;
	cfg = mep_dns_cfg.lookup(&zero);
	if (!cfg || cfg->family != u->family || u->dport != bpf_ntohs(cfg->port))
		return 0;
	return u->dst.w[0] == cfg->addr.w[0] && u->dst.w[1] == cfg->addr.w[1] && u->dst.w[2] == cfg->addr.w[2] &&
	       u->dst.w[3] == cfg->addr.w[3];
}

/* `key` and `w` are working memory (scratch). */
static __always_inline int dns_answer(struct xdp_md *ctx, const struct pkt *p, struct dns_key *key,
				      struct dns_work *w, __u32 half, struct decision *d)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	const struct ip_info *u = &p->user;
	struct dns_val *val;
	struct dns_cfg *cfg;
	__u32 zero = 0, l3 = p->has_vlan ? 18 : 14, hlen = u->family == 4 ? 20 : 40;
	__u8 *h, *ip, *udp;
	__u16 csum;

	if (p->has_vlan || p->tunnel || u->proto != IPPROTO_UDP || !u->has_ports || u->l4_off != u->off + hlen ||
	    u->off != l3 || (__u64)(data_end - data) != (__u64)l3 + u->len)
		return 0;
	cfg = mep_dns_cfg.lookup(&zero);
	if (!cfg || cfg->family != u->family || u->dport != bpf_ntohs(cfg->port))
		return 0;
	if (u->family == 4) {
		__u8 *ip4 = data + 14;

		if ((void *)(ip4 + 20) > data_end || (ip4[6] & 0x20) || u->dst.w[0] != cfg->addr.w[0])
			return 0;  /* more fragments follow (the first fragment has has_l4 too) */
	} else if (u->dst.w[0] != cfg->addr.w[0] || u->dst.w[1] != cfg->addr.w[1] ||
		   u->dst.w[2] != cfg->addr.w[2] || u->dst.w[3] != cfg->addr.w[3]) {
		return 0;
	}
	w->dns_off = u->l4_off + 8;
	w->dns_len = u->len - hlen - 8;
	h = data + (w->dns_off & MEP_MAX_OFF);
	if ((void *)(h + DNS_HEADER_BYTES) > data_end || w->dns_len < DNS_HEADER_BYTES + 1 + 4)
		return 0;
	w->flags = load_be16(h + 2);
	if ((w->flags & MEP_DNS_PASS_FLAGS) || load_be16(h + 4) != 1 || load_be16(h + 6) || load_be16(h + 8) ||
	    load_be16(h + 10))
		return 0;
	__builtin_memset(key, 0, sizeof(*key));
	w->name_len = dns_key_name(ctx, w->dns_off + DNS_HEADER_BYTES, w->dns_len - DNS_HEADER_BYTES - 4, key, w);
	if (!w->name_len)
		return 0;
	if (bpf_xdp_load_bytes(ctx, w->dns_off + DNS_HEADER_BYTES + w->name_len, w->qtype_qclass, 4))
		return 0;
	if (bpf_ntohs(w->qtype_qclass[1]) != DNS_CLASS_IN)
		return 0;
	if (w->qtype_qclass[0] != bpf_htons(DNS_TYPE_A) && w->qtype_qclass[0] != bpf_htons(DNS_TYPE_AAAA))
		return 0;
	key->half = half;
	key->qtype = w->qtype_qclass[0];
	val = mep_dns.lookup(key);
	if (!val)
		return 0;
	w->rr_bytes = val->rr_bytes;
	w->counter = val->counter;
	if (w->rr_bytes > MEP_DNS_RR_BYTES || (w->rr_bytes & 1))
		return 0;

	/* The answer: the query rewritten in place, plus the record. */
	if (w->rr_bytes && bpf_xdp_adjust_tail(ctx, (int)w->rr_bytes))
		return 0;  /* no tailroom: user space answers */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	ip = data + 14;
	if ((void *)(ip + hlen + 8 + DNS_HEADER_BYTES) > data_end)
		return 0;
	udp = ip + hlen;
	h = udp + 8;
	{
		/* swap the MAC addresses through registers (the stack is full) */
		__u32 d0 = *(__u32 *)data, s0 = *(__u32 *)(data + 6);
		__u16 d1 = *(__u16 *)(data + 4), s1 = *(__u16 *)(data + 10);

		*(__u32 *)data = s0;
		*(__u16 *)(data + 4) = s1;
		*(__u32 *)(data + 6) = d0;
		*(__u16 *)(data + 10) = d1;
	}
	w->old_len = load_be16(udp + 4);
	w->new_len = w->old_len + w->rr_bytes;
	w->new_flags = MEP_DNS_ANSWER_FLAGS | (w->flags & MEP_DNS_COPIED_FLAGS);
	w->ancount = w->rr_bytes ? 1 : 0;
	if (u->family == 4) {
		__u32 src = *(__u32 *)(ip + 12);

		*(__u32 *)(ip + 12) = *(__u32 *)(ip + 16);
		*(__u32 *)(ip + 16) = src;
		store_be16(ip + 2, load_be16(ip + 2) + w->rr_bytes);
		ip[8] = DNS_TTL;
		store_be16(ip + 10, 0);
		store_be16(ip + 10, ipv4_csum(ip));
	} else {
		int i;

#pragma unroll
		for (i = 0; i < 4; i++) {
			__u32 src = *(__u32 *)(ip + 8 + 4 * i);

			*(__u32 *)(ip + 8 + 4 * i) = *(__u32 *)(ip + 24 + 4 * i);
			*(__u32 *)(ip + 24 + 4 * i) = src;
		}
		store_be16(ip + 4, load_be16(ip + 4) + w->rr_bytes);
		ip[7] = DNS_TTL;
	}
	{
		__u16 sport = load_be16(udp);

		store_be16(udp, load_be16(udp + 2));
		store_be16(udp + 2, sport);
	}
	store_be16(udp + 4, w->new_len);
	store_be16(h + 2, w->new_flags);
	store_be16(h + 6, w->ancount);
	w->rr_off = w->dns_off + DNS_HEADER_BYTES + w->name_len + 4;
	if (w->rr_bytes) {
		__u8 *rr = data + (w->rr_off & MEP_MAX_OFF);

		if ((void *)(rr + MEP_DNS_RR_BYTES) <= data_end) {
			__builtin_memcpy(rr, val->rr, MEP_DNS_RR_BYTES);
		} else {
			if ((void *)(rr + 16) > data_end)
				return 0;
			__builtin_memcpy(rr, val->rr, 16);
		}
	}
	/* The UDP checksum, updated: ports and addresses only swap (the sum is
	 * the same); the length changes in the header and the pseudo-header;
	 * flags and ANCOUNT change; the record is added. An IPv4 query without
	 * a checksum gets an answer without one. */
	csum = load_be16(udp + 6);
	if (csum || u->family == 6) {

		store_be16(w->old_w, w->old_len);
		store_be16(w->old_w + 2, w->old_len);
		store_be16(w->old_w + 4, w->flags);
		store_be16(w->old_w + 6, 0);
		store_be16(w->new_w, w->new_len);
		store_be16(w->new_w + 2, w->new_len);
		store_be16(w->new_w + 4, w->new_flags);
		store_be16(w->new_w + 6, w->ancount);
		csum = csum_replace16(csum, w->old_w, w->new_w, 4);
		if (w->rr_bytes) {
			__u32 sum = rr_sum(val->rr, w->rr_bytes);
			if ((w->rr_off - w->dns_off) & 1)  /* an odd offset: bytes pair the other way round */
				sum = ((sum & 0xff) << 8) | (sum >> 8);
			csum = ~csum_fold(((~csum) & 0xffff) + sum) & 0xffff;
		}
		if (csum == 0)
			csum = 0xffff;
		store_be16(udp + 6, csum);
	}
	d->reason = MEP_TX_DNS_ANSWER;
	{
		struct counter_val *c = mep_dns_counters.lookup(&w->counter);

		if (c) {
			c->packets += 1;
			c->bytes += (__u64)(data_end - data);
		}
	}
	return 1;
}

#endif /* MEP_DNS_H */
