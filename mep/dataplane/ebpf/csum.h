/* csum.h - Internet checksums, in exactly the arithmetic of mep/dataplane/packet.py.
 *
 * csum_fold(): end-around-carry fold of a 32-bit sum of 16-bit words.
 * csum_replace16(): RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over the 16-bit
 *   words of an address; every engine uses it, so outputs agree byte for byte
 *   even when the incoming checksum was wrong. Checksums in and out are
 *   host-order 16-bit values.
 * ipv4_csum(): the header checksum of a 20-byte IPv4 header.
 * Included by actions.h.
 */
#ifndef MEP_CSUM_H
#define MEP_CSUM_H

static __always_inline __u32 csum_fold(__u32 acc)
{
	acc = (acc & 0xffff) + (acc >> 16);
	acc = (acc & 0xffff) + (acc >> 16);
	return acc;
}

/* Replace the `words` 16-bit words old[] by new[] under checksum `csum`. */
static __always_inline __u16 csum_replace16(__u16 csum, const __u8 *old, const __u8 *new, int words)
{
	__u32 acc = (~csum) & 0xffff;
	int i;

#pragma unroll
	for (i = 0; i < 8; i++) {
		if (i >= words)
			break;
		acc += (~(((__u32)old[2 * i] << 8) | old[2 * i + 1])) & 0xffff;
		acc += ((__u32)new[2 * i] << 8) | new[2 * i + 1];
	}
	return (~csum_fold(acc)) & 0xffff;
}

static __always_inline __u16 ipv4_csum(const __u8 *h)
{
	__u32 acc = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		acc += ((__u32)h[2 * i] << 8) | h[2 * i + 1];
	return (~csum_fold(acc)) & 0xffff;
}

#endif /* MEP_CSUM_H */
