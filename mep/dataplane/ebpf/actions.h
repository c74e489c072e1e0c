/* actions.h - build the output frame of a target or a flow reply, in place.
 *
 * Every builder takes the parsed packet (struct pkt, offsets into the frame
 * as received) and reshapes the frame into [new headers][user datagram]
 * with bpf_xdp_adjust_head/adjust_tail, then writes the headers. Return
 * convention: 0 on success, else a MEP_DROP_* reason; after a successful
 * return every earlier packet pointer is stale (re-read ctx->data).
 * The bytes are those of docs/semantics.md section 5; the spec is
 * mep/dataplane/packet.py (builders) and reference.py (build_target).
 * Included by the entry file.
 */
#ifndef MEP_ACTIONS_H
#define MEP_ACTIONS_H

#define ETH_HLEN_BYTES 14
#define VLAN_HLEN_BYTES 4

static __always_inline void store_be16(__u8 *b, __u16 v)
{
	b[0] = v >> 8;
	b[1] = v & 0xff;
}

/* Make the frame exactly [head bytes][the user datagram]. */
static __always_inline int reshape(struct xdp_md *ctx, __u32 user_off, __u32 user_len, __u32 head)
{
	void *data, *data_end;
	__u64 len;

	if (bpf_xdp_adjust_head(ctx, (int)user_off - (int)head))
		return MEP_DROP_INTERNAL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	len = data_end - data;
	/* keep clang from rewriting this into pointer - scalar (rejected) */
	asm volatile("" : "+r"(len));
	if (len > head + user_len && bpf_xdp_adjust_tail(ctx, -(int)(len - head - user_len)))
		return MEP_DROP_INTERNAL;
	return 0;
}

static __always_inline int write_eth(void *data, void *data_end, const __u8 *dst, const __u8 *src,
				     int has_vlan, __u16 tci, __u8 family)
{
	__u8 *h = data;
	__u16 type = family == 4 ? ETH_P_IP : ETH_P_IPV6;

	if ((void *)(h + ETH_HLEN_BYTES + VLAN_HLEN_BYTES) > data_end)
		return MEP_DROP_INTERNAL;
	__builtin_memcpy(h, dst, 6);
	__builtin_memcpy(h + 6, src, 6);
	if (has_vlan) {
		store_be16(h + 12, ETH_P_8021Q);
		store_be16(h + 14, tci);
		store_be16(h + 16, type);
	} else {
		store_be16(h + 12, type);
	}
	return 0;
}

static __always_inline int patch_csum(void *data_end, __u8 *at, const __u8 *old, const __u8 *new, int words,
				      int udp)
{
	__u16 csum;

	if ((void *)(at + 2) > data_end)
		return MEP_DROP_INTERNAL;
	csum = load_be16(at);
	if (udp && csum == 0)
		return 0;  /* UDP without a checksum stays without one */
	csum = csum_replace16(csum, old, new, words);
	if (udp && csum == 0)
		csum = 0xffff;
	store_be16(at, csum);
	return 0;
}

/* Replace the destination (or source) address of the user datagram at ip_off.
 * `old` is 16 bytes of working memory (scratch: the stack is full). */
static __always_inline int rewrite_addr(void *data, void *data_end, __u32 ip_off, const struct ip_info *u,
					const union mep_addr *addr, int source, __u8 *old)
{
	__u8 *ip = data + (ip_off & MEP_MAX_OFF), *l4;
	__u32 at, words, l4_rel;
	int rc;

	if (u->family == 4) {
		at = source ? 12 : 16;
		words = 2;
		if ((void *)(ip + 20) > data_end)
			return MEP_DROP_INTERNAL;
		__builtin_memcpy(old, ip + at, 4);
		__builtin_memcpy(ip + at, addr->b, 4);
		rc = patch_csum(data_end, ip + 10, old, addr->b, 2, 0);
		if (rc)
			return rc;
	} else {
		at = source ? 8 : 24;
		words = 8;
		if ((void *)(ip + 40) > data_end)
			return MEP_DROP_INTERNAL;
		__builtin_memcpy(old, ip + at, 16);
		__builtin_memcpy(ip + at, addr->b, 16);
	}
	if (!u->has_l4)
		return 0;
	l4_rel = (u->l4_off - u->off) & MEP_MAX_OFF;
	l4 = data + ((ip_off + l4_rel) & MEP_MAX_OFF);
	if (u->proto == IPPROTO_TCP)
		return patch_csum(data_end, l4 + 16, old, addr->b, words, 0);
	if (u->proto == IPPROTO_UDP)
		return patch_csum(data_end, l4 + 6, old, addr->b, words, 1);
	if (u->proto == IPPROTO_ICMPV6 && u->family == 6)
		return patch_csum(data_end, l4 + 2, old, addr->b, words, 0);
	return 0;
}

/* The full UDP checksum over an IPv6 pseudo-header, the UDP header and its
 * payload, written into the UDP header at ip_off + 40.
 * The payload is copied in 512-byte chunks into `buf` (bpf_xdp_load_bytes)
 * and summed with bpf_csum_diff: a loop of direct packet reads at constant
 * offsets gave the verifier one state per offset ("The sequence of 8193
 * jumps is too complex"); through the buffer, iterations look alike and prune.
 * csum_partial sums native (little-endian) words, so the folded result is
 * stored natively. `buf` holds MEP_CSUM_CHUNK + 4 bytes. */
#define MEP_CSUM_CHUNK 512

static __always_inline int udp6_csum(struct xdp_md *ctx, __u8 *buf, __u32 ip_off, __u32 udp_len)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 *pseudo = (__u32 *)buf;  /* summed before buf holds the payload */
	/* 64-bit on purpose: with __u32 clang passed a register whose upper half
	 * the verifier could not bound ("R4 min value is negative"). */
	__u64 off = ip_off + 40, left = udp_len, n, padded;
	__u8 *ip6 = data + ip_off, *udp;
	__u64 acc;
	__u16 csum;
	int i;

	if ((void *)(ip6 + 48) > data_end)
		return MEP_DROP_INTERNAL;
	__builtin_memcpy(pseudo, ip6 + 8, 32);
	pseudo[8] = bpf_htonl(udp_len);
	pseudo[9] = bpf_htonl(IPPROTO_UDP);
	acc = (__u32)bpf_csum_diff(0, 0, (__be32 *)pseudo, 40, 0);
	for (i = 0; i < MEP_MAX_CSUM_BYTES / MEP_CSUM_CHUNK + 1; i++) {
		if (!left)
			break;
		n = left < MEP_CSUM_CHUNK ? left : MEP_CSUM_CHUNK;
		/* clang would fold the check below into the min() above and the
		 * verifier then sees a signed range; hide n from the optimizer. */
		asm volatile("" : "+r"(n));
		if (n == 0 || n > MEP_CSUM_CHUNK)
			return MEP_DROP_INTERNAL;
		if (bpf_xdp_load_bytes(ctx, off, buf, n))
			return MEP_DROP_INTERNAL;
		/* zero the bytes that round n up to whole 32-bit words */
		if (n + 2 < MEP_CSUM_CHUNK + 4) {
			buf[n] = 0;
			buf[n + 1] = 0;
			buf[n + 2] = 0;
		}
		padded = (n + 3) & ~3ull;
		if (padded > MEP_CSUM_CHUNK)
			padded = MEP_CSUM_CHUNK;
		acc += (__u32)bpf_csum_diff(0, 0, (__be32 *)buf, padded, 0);
		off += n;
		left -= n;
	}
	acc = (acc & 0xffffffff) + (acc >> 32);
	acc = (acc & 0xffffffff) + (acc >> 32);
	csum = ~csum_fold((__u32)acc) & 0xffff;
	if (csum == 0)
		csum = 0xffff;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	udp = data + ip_off + 40;
	if ((void *)(udp + 8) > data_end)
		return MEP_DROP_INTERNAL;
	*(__u16 *)(udp + 6) = csum;
	return 0;
}

static __always_inline __u32 outer_ip_len(__u8 family)
{
	return family == 4 ? 20 : 40;
}

static __always_inline __u32 tunnel_header_len(const struct target_val *t, const struct pkt *p)
{
	return t->kind == MEP_TARGET_ENCAP_GTPU ? 8 + gtpu_header_len(p->tunnel && p->has_qfi) : 4;
}

/* Bytes above L2 that the target's frame will carry. */
static __always_inline __u32 target_l3_len(const struct target_val *t, const struct pkt *p)
{
	if (t->kind == MEP_TARGET_DELIVER)
		return p->user.len;
	return outer_ip_len(t->family) + tunnel_header_len(t, p) + p->user.len;
}

/* 0 when the target's frame can be built and sent, else the reason it cannot. */
static __always_inline int target_feasible(const struct target_val *t, const struct pkt *p)
{
	if (t->kind == MEP_TARGET_DELIVER && t->rewrite && t->family != p->user.family)
		return MEP_DROP_REWRITE_FAMILY;
	if (target_l3_len(t, p) > t->mtu)
		return MEP_DROP_MTU;
	return 0;
}

static __always_inline int write_outer_ip(__u8 *ip, void *data_end, const struct target_val *t, __u8 proto,
					  __u32 payload_len, __u8 dscp)
{
	if (t->family == 4) {
		__u16 csum;

		if ((void *)(ip + 20) > data_end)
			return MEP_DROP_INTERNAL;
		ip[0] = 0x45;
		ip[1] = (dscp << 2) & 0xfc;
		store_be16(ip + 2, 20 + payload_len);
		store_be16(ip + 4, 0);
		store_be16(ip + 6, 0x4000);
		ip[8] = MEP_OUTER_TTL;
		ip[9] = proto;
		store_be16(ip + 10, 0);
		__builtin_memcpy(ip + 12, t->tun_src.b, 4);
		__builtin_memcpy(ip + 16, t->tun_dst.b, 4);
		csum = ipv4_csum(ip);
		store_be16(ip + 10, csum);
		return 0;
	}
	if ((void *)(ip + 40) > data_end)
		return MEP_DROP_INTERNAL;
	ip[0] = 0x60 | (((dscp << 2) & 0xfc) >> 4);
	ip[1] = (((dscp << 2) & 0xfc) & 0x0f) << 4;
	ip[2] = 0;
	ip[3] = 0;
	store_be16(ip + 4, payload_len);
	ip[6] = proto;
	ip[7] = MEP_OUTER_TTL;
	__builtin_memcpy(ip + 8, t->tun_src.b, 16);
	__builtin_memcpy(ip + 24, t->tun_dst.b, 16);
	return 0;
}

/* FORWARD_* or a DUPLICATE_* copy: the target's frame (docs/semantics.md 5). */
static __always_inline int build_target(struct xdp_md *ctx, const struct pkt *p, const struct target_val *t,
					__u32 rule_id, __u8 *csum_buf)
{
	void *data, *data_end;
	__u32 ip_len, hdr_len, head;
	__u8 dscp = p->user.family == 4 ? p->user.dscp : p->user.tc >> 2;
	int has_qfi = p->tunnel && p->has_qfi, rc;
	__u8 *h;

	if (t->kind == MEP_TARGET_DELIVER) {
		rc = reshape(ctx, p->user.off, p->user.len, ETH_HLEN_BYTES);
		if (rc)
			return rc;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		rc = write_eth(data, data_end, t->dst_mac, t->src_mac, 0, 0, p->user.family);
		if (rc || !t->rewrite)
			return rc;
		return rewrite_addr(data, data_end, ETH_HLEN_BYTES, &p->user, &t->new_dst, 0, csum_buf);
	}
	ip_len = outer_ip_len(t->family);
	hdr_len = tunnel_header_len(t, p);
	head = ETH_HLEN_BYTES + ip_len + hdr_len;
	rc = reshape(ctx, p->user.off, p->user.len, head);
	if (rc)
		return rc;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	rc = write_eth(data, data_end, t->dst_mac, t->src_mac, 0, 0, t->family);
	if (rc)
		return rc;
	rc = write_outer_ip(data + ETH_HLEN_BYTES, data_end, t,
			   t->kind == MEP_TARGET_ENCAP_GTPU ? IPPROTO_UDP : IPPROTO_GRE, hdr_len + p->user.len, dscp);
	if (rc)
		return rc;
	h = data + ETH_HLEN_BYTES + (ip_len & 0x3f);
	if (t->kind == MEP_TARGET_ENCAP_GRE) {
		if ((void *)(h + 4) > data_end)
			return MEP_DROP_INTERNAL;
		store_be16(h, 0);
		store_be16(h + 2, p->user.family == 4 ? ETH_P_IP : ETH_P_IPV6);
		return 0;
	}
	if ((void *)(h + 24) > data_end)
		return MEP_DROP_INTERNAL;
	store_be16(h, MEP_GTPU_PORT);
	store_be16(h + 2, MEP_GTPU_PORT);
	store_be16(h + 4, hdr_len + p->user.len);
	store_be16(h + 6, 0);
	build_gtpu(h + 8, p->tunnel ? p->teid : rule_id, p->user.len, has_qfi, p->qfi);
	if (t->family == 6)
		return udp6_csum(ctx, csum_buf, ETH_HLEN_BYTES, hdr_len + p->user.len);
	return 0;
}

/* A reply through flow state: back out the forward packet's port, rewrite undone. */
static __always_inline int build_flow_reply(struct xdp_md *ctx, const struct pkt *p, const struct flow_val *e,
					    __u8 *tmp)
{
	void *data, *data_end;
	__u32 head = ETH_HLEN_BYTES + (e->has_vlan ? VLAN_HLEN_BYTES : 0);
	int rc;

	rc = reshape(ctx, p->user.off, p->user.len, head);
	if (rc)
		return rc;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	rc = write_eth(data, data_end, e->eth_dst, e->eth_src, e->has_vlan, e->vlan_tci, p->user.family);
	if (rc || !e->restore)
		return rc;
	return rewrite_addr(data, data_end, head, &p->user, &e->restore_src, 1, tmp);
}

#endif /* MEP_ACTIONS_H */
