/* gen.c - the gNB's traffic generator: many UEs and flows from one template frame.
 *
 * Run with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES (upf_sim/traffic.py):
 * the kernel hands gen() a G-PDU of the current class (built by traffic.py:
 * struct gtpu_outer, then an IPv4 user packet with UDP, TCP or ICMP)
 * `repeat` times, and every frame the program redirects is transmitted for
 * real on the gNB's N3 port. Packet n of the CPU's sequence goes to UE
 * n % ues with source port (ICMP id) first_port + (n / ues) % flows.
 *
 * The frame's first GEN_HEADER_BYTES are copied from the class's template
 * (gen_templates[gen_class]) every time: a live-frames page goes back to
 * the generator's pool after the receiver is done with it, and veth hands
 * the receiver the same page, so the page holds whatever the UPF (or the
 * MEP behind it) wrote there: decapsulated headers. The payload after the
 * headers is left as it is. The program then writes the UE's TEID, QFI and
 * address and the flow's port, fixing the checksums incrementally against
 * the template's values.
 *
 * The program is also attached (native XDP) to a parked veth that carries no
 * traffic: a program attached somewhere stays in the kernel's XDP
 * dispatcher, which spares every test run with repeat > 1 the dispatcher
 * update and its RCU wait (~27 ms a call otherwise). Frames arriving there
 * (none are expected) pass.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <linux/icmp.h>

#include "abi.h"
#include "gtpu.h"

/* A test run without a context reports the namespace's loopback as ingress. */
#define SIM_LOOPBACK_IFINDEX 1

/* GEN_HEADER_BYTES (-D, from traffic.py): Ethernet, outer headers, inner
 * IPv4 and 20 bytes of transport header. A literal because bcc describes map
 * types to Python with array sizes as written. */
_Static_assert(GEN_HEADER_BYTES == ETH_HLEN + sizeof(struct gtpu_outer) + sizeof(struct iphdr) + 20,
	       "GEN_HEADER_BYTES must cover every header gen() writes");

struct gen_template {
	__u8 bytes[GEN_HEADER_BYTES];
};

BPF_ARRAY(gen_cfg, struct sim_cfg, 1);                     /* out_ifindex, ues, flows, first_port */
BPF_ARRAY(gen_class, __u32, 1);                            /* the class the next test run sends */
BPF_ARRAY(gen_templates, struct gen_template, GEN_CLASSES); /* per class: its first header bytes */
BPF_ARRAY(gen_ues, struct gnb_ue_val, SIM_MAX_SESSIONS);   /* index -> UE (teid, address, qfi) */
BPF_PERCPU_ARRAY(gen_seq, __u64, 1);                       /* frames generated on this CPU */

int gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct gtpu_outer *o = data + ETH_HLEN;
	struct iphdr *ip = (struct iphdr *)(o + 1);
	void *l4 = ip + 1;
	struct gen_template *t;
	struct gnb_ue_val *ue;
	struct sim_cfg *cfg;
	__u32 zero = 0, i, flow, old_addr, new_addr, *k;
	__u16 port, *field, *check;
	__u64 *seq, n;

	if (ctx->ingress_ifindex != SIM_LOOPBACK_IFINDEX)
		return XDP_PASS; /* the parked port */
	cfg = gen_cfg.lookup(&zero);
	seq = gen_seq.lookup(&zero);
	k = gen_class.lookup(&zero);
	t = k ? gen_templates.lookup(k) : 0;
	if (!cfg || !seq || !t || !cfg->ues || !cfg->flows || data + GEN_HEADER_BYTES > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, t->bytes, GEN_HEADER_BYTES);
	n = (*seq)++;
	i = n % cfg->ues;
	flow = (n / cfg->ues) % cfg->flows;
	ue = gen_ues.lookup(&i);
	if (!ue)
		return XDP_ABORTED;
	o->teid = bpf_htonl(ue->teid);
	o->qfi = ue->qfi & 0x3f;
	old_addr = ip->saddr;
	new_addr = *(__u32 *)ue->ue_addr;
	ip->check = sim_csum_replace32(ip->check, old_addr, new_addr);
	ip->saddr = new_addr;
	port = bpf_htons(cfg->first_port + flow);
	if (ip->protocol == IPPROTO_UDP) {
		field = &((struct udphdr *)l4)->source;
		check = &((struct udphdr *)l4)->check;
	} else if (ip->protocol == IPPROTO_TCP) {
		field = &((struct tcphdr *)l4)->source;
		check = &((struct tcphdr *)l4)->check;
	} else {
		field = &((struct icmphdr *)l4)->un.echo.id;
		check = &((struct icmphdr *)l4)->checksum;
	}
	/* UDP and TCP checksums cover the source address (pseudo header); ICMP's does not */
	if (ip->protocol != IPPROTO_ICMP && *check)
		*check = sim_csum_replace32(*check, old_addr, new_addr);
	if (ip->protocol != IPPROTO_UDP || *check) {
		*check = sim_csum_replace16(*check, *field, port);
		if (ip->protocol == IPPROTO_UDP && !*check)
			*check = 0xffff; /* 0 would mean "no checksum" */
	}
	*field = port;
	return bpf_redirect(cfg->out_ifindex, 0);
}
