/* route.h - send an IPv4 frame on toward its next hop, from XDP.
 *
 * route_ipv4() asks the kernel's FIB (bpf_fib_lookup, in the namespace the
 * program runs in) for the egress port and next-hop MAC of the IPv4 packet
 * that follows the Ethernet header. On a hit it rewrites both MACs and
 * returns XDP_REDIRECT; otherwise (no route, no neighbour entry yet, packet
 * larger than the egress MTU, forwarding off) it returns XDP_PASS with the
 * frame still addressed to this host, and the kernel forwards it: slower,
 * never lost. The user packet's TTL is left alone (a GTP-U tunnel endpoint
 * is one hop). Included by upf.c.
 */
#ifndef SIM_ROUTE_H
#define SIM_ROUTE_H

#include <linux/if_ether.h>
#include <linux/ip.h>

#define SIM_AF_INET 2

static __always_inline int route_ipv4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct bpf_fib_lookup fib = {};

	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	fib.family = SIM_AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = ctx->ingress_ifindex;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect(fib.ifindex, 0);
}

#endif
