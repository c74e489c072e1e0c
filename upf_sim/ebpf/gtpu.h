/* gtpu.h - GTP-U (TS 29.281) on N3: parse a G-PDU, build the outer headers.
 *
 * The simulator's tunnel is always IPv4/UDP with one PDU Session Container
 * (TS 38.415, extension 0x85) carrying the QFI: 44 bytes of struct
 * gtpu_outer in front of the user packet. The parser accepts what any GTP-U
 * peer may send: IPv4 options, the optional fields without extensions, and
 * up to SIM_MAX_GTPU_EXT extension headers.
 *
 * parse_g_pdu() returns GPDU_OK and fills struct g_pdu when the frame is an
 * IPv4 G-PDU (UDP 2152, GTPv1, message type 255) to local_addr; GPDU_NOT
 * when it is not one (ARP, echo requests, other traffic, IP fragments, which
 * the kernel reassembles); GPDU_MALFORMED when its headers are truncated or
 * inconsistent. Offsets are from the start of the frame.
 * Included by upf.c and gnb.c.
 */
#ifndef SIM_GTPU_H
#define SIM_GTPU_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>

#include "csum.h"

#define SIM_GTPU_PORT 2152
#define SIM_GTPU_G_PDU 255
#define SIM_GTPU_EXT_PDU_SESSION 0x85
#define SIM_PDU_TYPE_DL 0 /* DL PDU SESSION INFORMATION */
#define SIM_PDU_TYPE_UL 1 /* UL PDU SESSION INFORMATION */
#define SIM_MAX_GTPU_EXT 4
/* Offsets are masked with this before use as packet pointers, so the verifier
 * sees a bound; frames are shorter than a page (3.5 KiB) anyway. */
#define SIM_MAX_OFF 0x3fff
#define SIM_TTL 64

enum { GPDU_OK, GPDU_NOT, GPDU_MALFORMED };

/* Outer IPv4, UDP and G-PDU headers with one PDU Session Container: 44 bytes. */
struct gtpu_outer {
	struct iphdr ip;
	struct udphdr udp;
	__u8 flags;      /* 0x34: version 1, protocol type GTP, E (extension) set */
	__u8 type;       /* 255: G-PDU */
	__be16 length;   /* bytes after the first 8: optional fields, extension, user packet */
	__be32 teid;
	__be16 seq;      /* the optional fields exist because E is set; unused: 0 */
	__u8 npdu;
	__u8 next_ext;   /* 0x85: a PDU Session Container follows */
	__u8 ext_len;    /* 1: four bytes */
	__u8 pdu_type;   /* PDU type in the high nibble */
	__u8 qfi;        /* QFI in the low six bits (PPP, RQI: 0) */
	__u8 ext_next;   /* 0: no further extension */
} __attribute__((packed));

#define SIM_OUTER_BYTES ((__u32)sizeof(struct gtpu_outer))

struct g_pdu {
	__u32 teid;
	__u32 inner_off; /* the user packet's first byte */
	__u32 inner_len; /* the G-PDU's payload length */
};

/* Fill *o for a user packet of inner_len bytes; tos is copied from it. */
static __always_inline void fill_outer(struct gtpu_outer *o, const __u8 *src, const __u8 *dst, __u32 teid,
				       __u8 pdu_type, __u8 qfi, __u32 inner_len, __u8 tos)
{
	o->ip.version = 4;
	o->ip.ihl = 5;
	o->ip.tos = tos;
	o->ip.tot_len = bpf_htons(SIM_OUTER_BYTES + inner_len);
	o->ip.id = 0;
	o->ip.frag_off = bpf_htons(0x4000); /* DF */
	o->ip.ttl = SIM_TTL;
	o->ip.protocol = IPPROTO_UDP;
	o->ip.check = 0;
	__builtin_memcpy(&o->ip.saddr, src, 4);
	__builtin_memcpy(&o->ip.daddr, dst, 4);
	o->ip.check = sim_ipv4_header_csum(&o->ip);
	o->udp.source = bpf_htons(SIM_GTPU_PORT);
	o->udp.dest = bpf_htons(SIM_GTPU_PORT);
	o->udp.len = bpf_htons(SIM_OUTER_BYTES - sizeof(struct iphdr) + inner_len);
	o->udp.check = 0; /* allowed over IPv4 (RFC 768); GTP-U peers accept it */
	o->flags = 0x34;
	o->type = SIM_GTPU_G_PDU;
	o->length = bpf_htons(8 + inner_len);
	o->teid = bpf_htonl(teid);
	o->seq = 0;
	o->npdu = 0;
	o->next_ext = SIM_GTPU_EXT_PDU_SESSION;
	o->ext_len = 1;
	o->pdu_type = pdu_type << 4;
	o->qfi = qfi & 0x3f;
	o->ext_next = 0;
}

static __always_inline int parse_g_pdu(void *data, void *data_end, const __u8 *local_addr /* 4-byte aligned */, struct g_pdu *g)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp;
	__u32 off, end, gend, q, ext_len;
	__u8 *h, *o, *e, flags, next = 0;
	int i;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return GPDU_NOT;
	if (ip->version != 4 || ip->protocol != IPPROTO_UDP || ip->daddr != *(const __u32 *)local_addr)
		return GPDU_NOT;
	if (ip->frag_off & bpf_htons(0x3fff))
		return GPDU_NOT;
	if (ip->ihl < 5)
		return GPDU_MALFORMED;
	off = sizeof(*eth) + ip->ihl * 4;
	end = sizeof(*eth) + bpf_ntohs(ip->tot_len);
	udp = data + off;
	if ((void *)(udp + 1) > data_end)
		return GPDU_MALFORMED;
	if (udp->dest != bpf_htons(SIM_GTPU_PORT))
		return GPDU_NOT;
	h = (__u8 *)(udp + 1);
	if ((void *)(h + 8) > data_end || data + end > data_end || end < off + 16)
		return GPDU_MALFORMED;
	flags = h[0];
	if ((flags >> 5) != 1 || !(flags & 0x10) || h[1] != SIM_GTPU_G_PDU)
		return GPDU_NOT;
	g->teid = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
	gend = off + 16 + (((__u32)h[2] << 8) | h[3]);
	if (gend > end)
		return GPDU_MALFORMED;
	q = off + 16;
	if (flags & 0x07) {
		o = data + (q & SIM_MAX_OFF);
		if ((void *)(o + 4) > data_end || q + 4 > gend)
			return GPDU_MALFORMED;
		if (flags & 0x04)
			next = o[3];
		q += 4;
#pragma unroll
		for (i = 0; i < SIM_MAX_GTPU_EXT; i++) {
			if (!next)
				break;
			e = data + (q & SIM_MAX_OFF);
			if ((void *)(e + 1) > data_end || e[0] == 0)
				return GPDU_MALFORMED;
			ext_len = (__u32)e[0] * 4;
			if (q + ext_len > gend)
				return GPDU_MALFORMED;
			/* the next-extension type is the last byte of this extension */
			e = data + ((q + ext_len - 1) & SIM_MAX_OFF);
			if ((void *)(e + 1) > data_end)
				return GPDU_MALFORMED;
			next = e[0];
			q += ext_len;
		}
		if (next)
			return GPDU_MALFORMED;
	}
	g->inner_off = q;
	g->inner_len = gend - q;
	return GPDU_OK;
}

/* The user packet of a parsed G-PDU: GPDU_OK with *in set when it is a whole
 * IPv4 packet within the payload, GPDU_NOT when it is not IPv4 (the simulator's
 * UEs are IPv4), GPDU_MALFORMED when it is truncated. */
static __always_inline int inner_ipv4(void *data, void *data_end, const struct g_pdu *g, struct iphdr **in)
{
	struct iphdr *ip = data + (g->inner_off & SIM_MAX_OFF);

	if ((void *)(ip + 1) > data_end)
		return GPDU_MALFORMED;
	if (ip->version != 4)
		return GPDU_NOT;
	if (bpf_ntohs(ip->tot_len) > g->inner_len || bpf_ntohs(ip->tot_len) < sizeof(*ip))
		return GPDU_MALFORMED;
	*in = ip;
	return GPDU_OK;
}

#endif
