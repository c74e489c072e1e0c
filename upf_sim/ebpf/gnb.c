/* gnb.c - the simulated gNB's user plane on N3, for UEs with real IP stacks.
 *
 * The UEs' addresses live in the gNB's namespace; their packets leave
 * through the N3 port, where gnb_uplink() (TC egress) looks the source
 * address up and puts the UE's tunnel in front: outer IPv4 from the gNB to
 * the UPF, UDP 2152, G-PDU with the UPF's uplink TEID and an UL PDU Session
 * Container with the UE's QFI. gnb_n3() (XDP on the same port) takes
 * downlink G-PDUs to the gNB's address, checks the TEID and the inner
 * destination, removes the outer headers and passes the packet to the
 * namespace's stack, which delivers it to the UE's socket. UEs are written
 * by upf_sim/gnb.py only. Every frame leaves through finish_* (counted).
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#include "abi.h"
#include "reasons.h"
#include "gtpu.h"

struct ue_key {
	__u8 addr[4];
};

BPF_ARRAY(gnb_cfg, struct sim_cfg, 1);                                  /* local_addr: gNB, peer_addr: UPF */
BPF_HASH(gnb_ues, struct ue_key, struct gnb_ue_val, SIM_MAX_SESSIONS);  /* UE address -> uplink tunnel */
BPF_HASH(gnb_dl, __u32, struct gnb_dl_val, SIM_MAX_SESSIONS);           /* downlink TEID -> UE */
BPF_PERCPU_ARRAY(gnb_sessions, struct session_count, SIM_MAX_SESSIONS); /* per UE slot */
BPF_PERCPU_ARRAY(gnb_reasons, struct sim_count, SIM_REASONS);           /* per reasons.h value */

/* The one exit of both programs: count the reason (per CPU: no atomics) and return. */
static __always_inline int finish(int action, __u32 reason, __u32 bytes)
{
	struct sim_count *c = gnb_reasons.lookup(&reason);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
	return action;
}

int gnb_uplink(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct session_count *count;
	struct gtpu_outer o = {};
	struct gnb_ue_val *ue;
	struct sim_cfg *cfg;
	struct ue_key key;
	__u32 zero = 0, len;

	cfg = gnb_cfg.lookup(&zero);
	if (!cfg)
		return TC_ACT_OK; /* index 0 of an array always exists; the verifier wants the test */
	if ((void *)(ip + 1) > data_end) {
		/* headers may sit in a fragment of a locally built skb: make them linear */
		if (skb->len < sizeof(*eth) + sizeof(*ip) || bpf_skb_pull_data(skb, sizeof(*eth) + sizeof(*ip)))
			return finish(TC_ACT_OK, SIM_GNB_UL_NOT_UE, 0);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		eth = data;
		ip = data + sizeof(*eth);
		if ((void *)(ip + 1) > data_end)
			return finish(TC_ACT_OK, SIM_GNB_UL_NOT_UE, 0);
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4)
		return finish(TC_ACT_OK, SIM_GNB_UL_NOT_UE, 0);
	__builtin_memcpy(key.addr, &ip->saddr, sizeof(key.addr));
	ue = gnb_ues.lookup(&key);
	if (!ue)
		return finish(TC_ACT_OK, SIM_GNB_UL_NOT_UE, 0);
	len = bpf_ntohs(ip->tot_len);
	fill_outer(&o, cfg->local_addr, cfg->peer_addr, ue->teid, SIM_PDU_TYPE_UL, ue->qfi, len, ip->tos);
	if (bpf_skb_adjust_room(skb, SIM_OUTER_BYTES, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &o, sizeof(o), 0))
		return finish(TC_ACT_SHOT, SIM_GNB_DROP_ENCAP_FAILED, len); /* never untunnelled onto N3 */
	count = gnb_sessions.lookup(&ue->index);
	if (count) {
		count->ul.packets += 1;
		count->ul.bytes += len;
	}
	return finish(TC_ACT_OK, SIM_GNB_UL_ENCAPSULATED, len);
}

int gnb_n3(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct session_count *count;
	struct gnb_dl_val *ue;
	struct g_pdu g = {};
	struct iphdr *in = 0;
	struct ethhdr *eth;
	struct sim_cfg *cfg;
	__u32 zero = 0, teid, len, frame;
	__u8 macs[2 * ETH_ALEN];
	int rc;

	cfg = gnb_cfg.lookup(&zero);
	if (!cfg)
		return XDP_PASS; /* cannot happen, see gnb_uplink */
	rc = parse_g_pdu(data, data_end, cfg->local_addr, &g);
	if (rc == GPDU_NOT)
		return finish(XDP_PASS, SIM_GNB_PASS_NOT_GTPU, 0);
	if (rc)
		return finish(XDP_DROP, SIM_GNB_DROP_MALFORMED, 0);
	teid = g.teid;
	ue = gnb_dl.lookup(&teid);
	if (!ue)
		return finish(XDP_DROP, SIM_GNB_DROP_UNKNOWN_TEID, 0);
	rc = inner_ipv4(data, data_end, &g, &in);
	if (rc == GPDU_MALFORMED)
		return finish(XDP_DROP, SIM_GNB_DROP_MALFORMED, 0);
	if (rc || !in || in->daddr != *(__u32 *)ue->ue_addr)
		return finish(XDP_DROP, SIM_GNB_DROP_UE_ADDRESS, 0);
	len = bpf_ntohs(in->tot_len);
	count = gnb_sessions.lookup(&ue->index);
	if (count) {
		count->dl.packets += 1;
		count->dl.bytes += len;
	}
	__builtin_memcpy(macs, data, sizeof(macs)); /* addressed to this port: the stack takes it */
	if (bpf_xdp_adjust_head(ctx, (int)g.inner_off - ETH_HLEN))
		return finish(XDP_DROP, SIM_GNB_DROP_MALFORMED, 0);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return finish(XDP_DROP, SIM_GNB_DROP_MALFORMED, 0);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_IP);
	frame = data_end - data;
	if (frame > ETH_HLEN + len && bpf_xdp_adjust_tail(ctx, -(int)(frame - ETH_HLEN - len)))
		return finish(XDP_DROP, SIM_GNB_DROP_MALFORMED, 0);
	return finish(XDP_PASS, SIM_GNB_DL_DELIVERED, len);
}
