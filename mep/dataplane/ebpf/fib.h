/* fib.h - the stack's forwarding, done in XDP: frames with a PASS verdict to their next hop.
 *
 * A PASS verdict sends a frame to the kernel stack, which routes it (the
 * default path to the data network). With dataplane.fib_forward the port
 * it arrived on has port_val.fib_forward set, and fib_forward() asks the
 * kernel's FIB (bpf_fib_lookup: routes, rules, neighbours, the egress MTU)
 * where the stack would send it. When that is a data-plane port with a
 * resolved neighbour, XDP does what ip_forward() would: the TTL or hop
 * limit less one (the IPv4 checksum updated as ip_decrease_ttl() does),
 * the next hop's and the port's MACs, and the frame out that port. Every
 * other case goes to the stack unchanged, which answers it (ICMP errors,
 * neighbour resolution, fragmentation, VLAN devices, local delivery).
 * What it bypasses: netfilter's forward and postrouting hooks, and the
 * stack's own counters (docs/xdp.md, "Forwarding in XDP").
 * The answers of lookups that forwarded are cached per flow (mep_fib_cache,
 * below) until the kernel's routing state changes.
 * Every frame offered is counted in mep_fib_counters under one outcome
 * (reasons.h MEP_FIB_OUTCOMES); the verdict and reason stay the ones the
 * rules gave (PASS), only the output port changes.
 * Included by the entry file.
 */
#ifndef MEP_FIB_H
#define MEP_FIB_H

#define MEP_FIB_OUTCOME_ENUM(name, num, desc) name = num,
enum mep_fib_outcome { MEP_FIB_OUTCOMES(MEP_FIB_OUTCOME_ENUM) };

/* The header the stack routes the frame by: the outer one of a tunnel. */
static __always_inline const struct ip_info *routed_header(const struct pkt *p)
{
	return p->tunnel ? &p->outer : &p->user;
}

/* The frame's routed header as the inputs of bpf_fib_lookup: key[] gets the
 * first MEP_FIB_KEY_WORDS words of struct bpf_fib_lookup (family, protocol,
 * ports, ingress ifindex, TOS or flow label, addresses) but tot_len, which
 * goes to *tot_len; an outcome other than MEP_FIB_FORWARDED when the stack
 * must handle the frame. Each word is computed in registers and stored
 * whole: written field by field into a struct bpf_fib_lookup and read back
 * as words for the cache, every word waited for the narrow stores under it
 * (no store forwarding), as the flow cache key did (classify.h); and a hit
 * no longer clears and fills the 64-byte request (fib_request(), on a miss
 * only). Test-run: ~2-4 ns off a cached forwarded frame. */
static __always_inline __u32 fib_params(struct xdp_md *ctx, const struct pkt *p, __u64 *key, __u16 *tot_len)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	const struct ip_info *ip = routed_header(p);
	__u32 off = ip->off & MEP_MAX_OFF;
	__u64 ports = 0;

	if (data + ETH_HLEN_BYTES > data_end)
		return MEP_FIB_NOT_FWDED;
	if (*(__u8 *)data & 1)
		return MEP_FIB_LINK_GROUP;  /* ip_forward() and ip6_forward() take PACKET_HOST frames only */
	if (p->has_vlan)
		return MEP_FIB_VLAN;
	if (ip->has_ports)
		ports = (__u64)bpf_htons(ip->sport) << 16 | (__u64)bpf_htons(ip->dport) << 32;
	if (ip->family == 4) {
		struct iphdr *iph = data + off;

		if ((void *)(iph + 1) > data_end)
			return MEP_FIB_NOT_FWDED;
		if (iph->ttl <= 1)
			return MEP_FIB_TTL;
		*tot_len = bpf_ntohs(iph->tot_len);
		key[0] = AF_INET | (__u64)ip->proto << 8 | ports;
		key[1] = ctx->ingress_ifindex | (__u64)iph->tos << 32;
		key[2] = iph->saddr;
		key[3] = 0;
		key[4] = iph->daddr;
		key[5] = 0;
		return MEP_FIB_FORWARDED;
	}
	{
		struct ipv6hdr *ip6 = data + off;
		const __u32 *src, *dst;

		if ((void *)(ip6 + 1) > data_end)
			return MEP_FIB_NOT_FWDED;
		if (ip6->hop_limit <= 1)
			return MEP_FIB_TTL;
		src = (const __u32 *)&ip6->saddr;
		dst = (const __u32 *)&ip6->daddr;
		*tot_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		key[0] = AF_INET6 | (__u64)ip->proto << 8 | ports;
		key[1] = ctx->ingress_ifindex | (__u64)(*(__be32 *)ip6 & bpf_htonl(0x0fffffff)) << 32;
		key[2] = src[0] | (__u64)src[1] << 32;
		key[3] = src[2] | (__u64)src[3] << 32;
		key[4] = dst[0] | (__u64)dst[1] << 32;
		key[5] = dst[2] | (__u64)dst[3] << 32;
	}
	return MEP_FIB_FORWARDED;
}

/* The bpf_fib_lookup request of fib_params()'s inputs. */
static __always_inline void fib_request(struct bpf_fib_lookup *f, const __u64 *key, __u16 tot_len)
{
	__u64 *w = (__u64 *)f;
	int i;

#pragma unroll
	for (i = 0; i < MEP_FIB_KEY_WORDS; i++)
		w[i] = key[i];
#pragma unroll
	for (; i < sizeof(*f) / 8; i++)
		w[i] = 0;
	f->tot_len = tot_len;
}

/* One hop less, as ip_forward() and ip6_forward() count it; fib_params()
 * checked the header's bounds and that the count is above 1. */
static __always_inline void fib_decrease_ttl(struct xdp_md *ctx, const struct pkt *p)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	const struct ip_info *ip = routed_header(p);
	__u32 off = ip->off & MEP_MAX_OFF;

	if (ip->family == 4) {
		struct iphdr *iph = data + off;
		__u32 check;

		if ((void *)(iph + 1) > data_end)
			return;
		check = (__u32)iph->check + (__u32)bpf_htons(0x0100);
		iph->check = (__u16)(check + (check >= 0xffff));
		iph->ttl--;
	} else {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return;
		ip6->hop_limit--;
	}
}

/* The frame out of port `port` to next hop `dmac` from `smac`, as ip_forward()
 * sends it: the redirect set, one hop less, the MACs rewritten; d->port names
 * the port. MEP_FIB_FORWARDED, or why not. */
static __always_inline __u32 fib_send(struct xdp_md *ctx, const struct pkt *p, __u32 port, const __u8 *dmac,
				      const __u8 *smac, struct decision *d)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;

	if (mep_ports.redirect_map(port, 0) != XDP_REDIRECT)
		return MEP_FIB_NOT_A_PORT;  /* an empty DEVMAP slot: the stack still has the route */
	if (data + ETH_HLEN_BYTES > data_end)
		return MEP_FIB_NOT_FWDED;
	fib_decrease_ttl(ctx, p);
	__builtin_memcpy(data, dmac, 6);
	__builtin_memcpy(data + 6, smac, 6);
	d->port = port;
	return MEP_FIB_FORWARDED;
}

/* The FIB cache. bpf_fib_lookup costs ~95 ns a frame here (policy rules,
 * the route trie, the neighbour table, through retpolined calls): test-run
 * times a forwarded frame at 214 ns with the lookup, 119 ns with its cached
 * answer (docs/xdp.md). mep_fib_cache keeps, per CPU and direct-mapped by a
 * multiplicative hash, the answer of each lookup that forwarded, keyed by
 * everything the lookup read (the first six words of *f: family, protocol,
 * ports, ingress ifindex, TOS or flow label, addresses; all but tot_len).
 * An entry answers while
 *   - mep_fib_gen holds the generation it was looked up in: maps/fib.py
 *     bumps it on every rtnetlink notification of the namespace that can
 *     change an answer (links, addresses, routes, rules, neighbours,
 *     forwarding settings), so a change reaches the cache within the time the
 *     control plane takes to hear of it, and it sets 0 (no cache) when it
 *     closes;
 *   - it is younger than MEP_FIB_CACHE_NS, which bounds how long an answer can
 *     outlive a change when no control plane runs (a crash);
 *   - the frame is no longer than the longest the lookup passed (the MTU
 *     check: a longer one is looked up, and counted FRAG_NEEDED if over). */
#define MEP_FIB_CACHE_NS 1000000000ULL

_Static_assert(__builtin_offsetof(struct bpf_fib_lookup, l4_protocol) == 1 &&
	       __builtin_offsetof(struct bpf_fib_lookup, sport) == 2 &&
	       __builtin_offsetof(struct bpf_fib_lookup, dport) == 4 &&
	       __builtin_offsetof(struct bpf_fib_lookup, tot_len) == 6 &&
	       __builtin_offsetof(struct bpf_fib_lookup, ifindex) == 8 &&
	       __builtin_offsetof(struct bpf_fib_lookup, flowinfo) == 12 &&
	       __builtin_offsetof(struct bpf_fib_lookup, ipv6_src) == 16 &&
	       __builtin_offsetof(struct bpf_fib_lookup, ipv6_dst) + 16 == MEP_FIB_KEY_WORDS * 8 &&
	       sizeof(struct bpf_fib_lookup) % 8 == 0,
	       "mep_fib_cache's key is the lookup's inputs but tot_len, as fib_params() builds them");

/* Where the stack would send the frame, if that is a data-plane port: the
 * outcome, and on MEP_FIB_FORWARDED or MEP_FIB_CACHED the frame rewritten for
 * its next hop and the redirect set (d->port names the port). */
static __always_inline __u32 fib_route(struct xdp_md *ctx, const struct pkt *p, struct bpf_fib_lookup *f,
				       __u64 *key, struct decision *d)
{
	struct fib_cache_entry *e = 0;
	__u32 egress, zero = 0, generation = 0, idx, *gen, outcome;
	__u64 now = 0, diff = 0;
	struct port_val *out;
	__u16 tot_len = 0;
	int i, same = 0;
	long rc;

	outcome = fib_params(ctx, p, key, &tot_len);
	if (outcome != MEP_FIB_FORWARDED)
		return outcome;
	gen = mep_fib_gen.lookup(&zero);
	if (gen && *gen) {
		generation = *gen;
		now = bpf_ktime_get_coarse_ns();
		idx = hash_index(key, MEP_FIB_KEY_WORDS, MEP_FIB_CACHE_SLOTS);
		e = mep_fib_cache.lookup(&idx);
		if (e) {
#pragma unroll
			for (i = 0; i < MEP_FIB_KEY_WORDS; i++)
				diff |= e->key[i] ^ key[i];
			same = !diff && e->generation == generation && now < e->expires;
			if (same && tot_len <= e->max_len) {
				outcome = fib_send(ctx, p, e->port, e->dmac, e->smac, d);
				return outcome == MEP_FIB_FORWARDED ? MEP_FIB_CACHED : outcome;
			}
		}
	}
	fib_request(f, key, tot_len);
	rc = bpf_fib_lookup(ctx, f, sizeof(*f), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc > 0 && rc <= MEP_FIB_FRAG_NEEDED ? rc : MEP_FIB_NOT_FWDED;
	egress = f->ifindex;
	out = mep_port_of.lookup(&egress);
	if (!out || !out->index || out->role == MEP_ROLE_MIRROR)
		return MEP_FIB_NOT_A_PORT;
	outcome = fib_send(ctx, p, out->index, f->dmac, f->smac, d);
	if (outcome == MEP_FIB_FORWARDED && e) {
		/* a longer frame of a live entry widens it; anything else starts it over */
		e->max_len = same && e->max_len > tot_len ? e->max_len : tot_len;
#pragma unroll
		for (i = 0; i < MEP_FIB_KEY_WORDS; i++)
			e->key[i] = key[i];
		e->expires = now + MEP_FIB_CACHE_NS;
		e->generation = generation;
		e->port = out->index;
		__builtin_memcpy(e->dmac, f->dmac, 6);
		__builtin_memcpy(e->smac, f->smac, 6);
	}
	return outcome;
}

/* The frame arrived on a port with dataplane.fib_forward. */
static __always_inline int fib_port(const struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct port_val *in = mep_port_of.lookup(&ifindex);

	return in && in->fib_forward;
}

/* The action for a frame process() decided: a PASS without copies, arrived
 * on a port with fib_forward, goes to its next hop here when fib_route()
 * can take it; anything else keeps `action`. */
static __always_inline int fib_forward(struct xdp_md *ctx, struct scratch *s, int action, __u64 bytes)
{
	__u32 outcome;

	if (action != XDP_PASS)
		return action;
	switch (s->d.reason) {
	case MEP_PASS_NO_MATCH:
	case MEP_PASS_RULE:
	case MEP_PASS_FLOW_REVERSE:
	case MEP_PASS_FROM_APP:
		break;
	default:
		return action;  /* not IP, not a user packet, for the DNS responder, or copies to make */
	}
	if (!fib_port(ctx))
		return action;
	outcome = fib_route(ctx, &s->p, &s->fib, s->fib_key, &s->d);
	count(mep_fib_counters.lookup(&outcome), bytes);
	return outcome == MEP_FIB_FORWARDED || outcome == MEP_FIB_CACHED ? XDP_REDIRECT : XDP_PASS;
}

#endif /* MEP_FIB_H */
