/* upf.c - the simulated UPF's user plane: N3 GTP-U <-> N6 IPv4, in XDP.
 *
 * upf_n3() runs on the N3 port: an uplink G-PDU to the UPF's N3 address is
 * looked up by TEID, its user packet checked against the session's UE
 * address, the outer headers removed and the packet routed on (to N6).
 * upf_n6() runs on the N6 port: an IPv4 packet to a UE with a session gets
 * the outer headers (TEID, gNB address and QFI of the session) and is routed
 * to the gNB. Everything else goes to the kernel unchanged (ARP, GTP echo,
 * the UPF host's own traffic). Sessions are written by upf_sim/upf.py only.
 * Every frame leaves through finish(), which counts its reason.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#include "abi.h"
#include "reasons.h"
#include "gtpu.h"
#include "route.h"

struct ue_key {
	__u8 addr[4];
};

BPF_ARRAY(upf_cfg, struct sim_cfg, 1);                                  /* local_addr: the UPF's N3 address */
BPF_HASH(upf_ul, __u32, struct upf_ul_val, SIM_MAX_SESSIONS);           /* N3 TEID -> session */
BPF_HASH(upf_dl, struct ue_key, struct upf_dl_val, SIM_MAX_SESSIONS);   /* UE address -> session */
BPF_PERCPU_ARRAY(upf_sessions, struct session_count, SIM_MAX_SESSIONS); /* per session slot */
BPF_PERCPU_ARRAY(upf_reasons, struct sim_count, SIM_REASONS);           /* per reasons.h value */

/* The one exit: count the reason (per CPU: no atomics needed) and return the action. */
static __always_inline int finish(int action, __u32 reason, __u32 bytes)
{
	struct sim_count *c = upf_reasons.lookup(&reason);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
	return action;
}

int upf_n3(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct session_count *count;
	struct upf_ul_val *s;
	struct g_pdu g = {};
	struct iphdr *in = 0;
	struct ethhdr *eth;
	struct sim_cfg *cfg;
	__u32 zero = 0, teid, len, frame;
	__u8 macs[2 * ETH_ALEN];
	int rc, action;

	cfg = upf_cfg.lookup(&zero);
	if (!cfg)
		return XDP_PASS; /* index 0 of an array always exists; the verifier wants the test */
	rc = parse_g_pdu(data, data_end, cfg->local_addr, &g);
	if (rc == GPDU_NOT)
		return finish(XDP_PASS, SIM_UPF_PASS_NOT_GTPU, 0);
	if (rc)
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	teid = g.teid;
	s = upf_ul.lookup(&teid);
	if (!s)
		return finish(XDP_DROP, SIM_UPF_DROP_UNKNOWN_TEID, 0);
	rc = inner_ipv4(data, data_end, &g, &in);
	if (rc == GPDU_MALFORMED)
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	if (rc || !in || in->saddr != *(__u32 *)s->ue_addr)
		return finish(XDP_DROP, SIM_UPF_DROP_UE_ADDRESS, 0);
	len = bpf_ntohs(in->tot_len);
	count = upf_sessions.lookup(&s->index);
	if (count) {
		count->ul.packets += 1;
		count->ul.bytes += len;
	}
	__builtin_memcpy(macs, data, sizeof(macs)); /* still addressed to us, should the kernel forward it */
	if (bpf_xdp_adjust_head(ctx, (int)g.inner_off - ETH_HLEN))
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_IP);
	frame = data_end - data;
	if (frame > ETH_HLEN + len && bpf_xdp_adjust_tail(ctx, -(int)(frame - ETH_HLEN - len)))
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	action = route_ipv4(ctx);
	return finish(action, action == XDP_REDIRECT ? SIM_UPF_UL_FORWARDED : SIM_UPF_UL_TO_STACK, len);
}

int upf_n6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct session_count *count;
	struct gtpu_outer *o;
	struct upf_dl_val *s;
	struct sim_cfg *cfg;
	struct ue_key key;
	__u32 zero = 0, len;
	__u8 macs[2 * ETH_ALEN], tos;
	int action;

	cfg = upf_cfg.lookup(&zero);
	if (!cfg)
		return XDP_PASS; /* cannot happen, see upf_n3 */
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4)
		return finish(XDP_PASS, SIM_UPF_PASS_NO_SESSION, 0);
	__builtin_memcpy(key.addr, &ip->daddr, sizeof(key.addr));
	s = upf_dl.lookup(&key);
	if (!s)
		return finish(XDP_PASS, SIM_UPF_PASS_NO_SESSION, 0);
	len = bpf_ntohs(ip->tot_len);
	if (len < sizeof(*ip) || data + ETH_HLEN + len > data_end)
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	tos = ip->tos;
	__builtin_memcpy(macs, data, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, -(int)SIM_OUTER_BYTES))
		return finish(XDP_DROP, SIM_UPF_DROP_NO_ROOM, 0);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	o = data + sizeof(*eth);
	if ((void *)(o + 1) > data_end)
		return finish(XDP_DROP, SIM_UPF_DROP_MALFORMED, 0);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_IP);
	fill_outer(o, cfg->local_addr, s->gnb_addr, s->teid, SIM_PDU_TYPE_DL, s->qfi, len, tos);
	count = upf_sessions.lookup(&s->index);
	if (count) {
		count->dl.packets += 1;
		count->dl.bytes += len;
	}
	action = route_ipv4(ctx);
	return finish(action, action == XDP_REDIRECT ? SIM_UPF_DL_FORWARDED : SIM_UPF_DL_TO_STACK, len);
}
