/* gtpu.h - GTP-U (TS 29.281) G-PDU parsing and header building.
 *
 * parse_gtpu(): given the UDP payload of a datagram to port 2152, returns 0
 * with *inner_off = -1 when it is not a GTPv1-U G-PDU (an ordinary UDP
 * packet), 0 with the inner IP's bounds when it is, or MEP_DROP_MALFORMED_GTPU.
 * The first PDU Session Container (TS 38.415, extension type 0x85) gives the
 * QFI. Spec: mep/dataplane/packet.py _parse_gtpu.
 * Included by parse.h (parsing) and actions.h (building).
 */
#ifndef MEP_GTPU_H
#define MEP_GTPU_H

#define MEP_GTPU_G_PDU 255
#define MEP_GTPU_EXT_PDU_SESSION 0x85

static __always_inline int parse_gtpu(void *data, void *data_end, __u32 g, __u32 end, struct pkt *p,
				      int *inner_off, __u32 *inner_end)
{
	__u8 *h = data + (g & MEP_MAX_OFF);
	__u32 gend, q;
	__u8 flags, next_ext = 0;
	int i;

	*inner_off = -1;
	if (g + 8 > end || (void *)(h + 8) > data_end)
		return MEP_DROP_MALFORMED_GTPU;
	flags = h[0];
	if ((flags >> 5) != 1 || !(flags & 0x10) || h[1] != MEP_GTPU_G_PDU)
		return 0;
	gend = g + 8 + load_be16(h + 2);
	if (gend > end)
		return MEP_DROP_MALFORMED_GTPU;
	p->teid = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
	p->has_qfi = 0;
	q = g + 8;
	if (flags & 0x07) {
		__u8 *o = data + (q & MEP_MAX_OFF);

		if (q + 4 > gend || (void *)(o + 4) > data_end)
			return MEP_DROP_MALFORMED_GTPU;
		if (flags & 0x04)
			next_ext = o[3];
		q += 4;
		for (i = 0; i < MEP_MAX_GTPU_EXT; i++) {
			__u8 *e = data + (q & MEP_MAX_OFF);
			__u32 ext_len;

			if (!next_ext)
				break;
			if (q + 1 > gend || (void *)(e + 1) > data_end || e[0] == 0)
				return MEP_DROP_MALFORMED_GTPU;
			ext_len = (__u32)e[0] * 4;
			if (q + ext_len > gend)
				return MEP_DROP_MALFORMED_GTPU;
			if ((void *)(e + 4) > data_end)
				return MEP_DROP_MALFORMED_GTPU;
			if (next_ext == MEP_GTPU_EXT_PDU_SESSION && !p->has_qfi) {
				p->qfi = e[2] & 0x3f;
				p->has_qfi = 1;
			}
			/* the next-extension byte is the last of this header */
			e = data + ((q + ext_len - 1) & MEP_MAX_OFF);
			if ((void *)(e + 1) > data_end)
				return MEP_DROP_MALFORMED_GTPU;
			next_ext = e[0];
			q += ext_len;
		}
		if (next_ext)
			return MEP_DROP_MALFORMED_GTPU;
	}
	*inner_off = q;
	*inner_end = gend;
	return 0;
}

/* The 8- or 16-byte G-PDU header of docs/semantics.md section 5; returns its length. */
static __always_inline __u32 gtpu_header_len(int has_qfi)
{
	return has_qfi ? 16 : 8;
}

static __always_inline void build_gtpu(__u8 *h, __u32 teid, __u32 payload_len, int has_qfi, __u8 qfi)
{
	__u32 len = payload_len + (has_qfi ? 8 : 0);

	h[0] = has_qfi ? 0x34 : 0x30;
	h[1] = MEP_GTPU_G_PDU;
	h[2] = len >> 8;
	h[3] = len & 0xff;
	h[4] = teid >> 24;
	h[5] = (teid >> 16) & 0xff;
	h[6] = (teid >> 8) & 0xff;
	h[7] = teid & 0xff;
	if (has_qfi) {
		h[8] = 0;
		h[9] = 0;
		h[10] = 0;
		h[11] = MEP_GTPU_EXT_PDU_SESSION;
		h[12] = 0x01;
		h[13] = 0x10;              /* PDU type 1: UL PDU SESSION INFORMATION */
		h[14] = qfi & 0x3f;
		h[15] = 0;
	}
}

#endif /* MEP_GTPU_H */
