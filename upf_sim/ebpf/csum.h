/* csum.h - Internet checksums (RFC 1071) and incremental updates (RFC 1624).
 *
 * Contract: every 16-bit word is taken as it lies in packet memory (network
 * order); the one's-complement sum is byte-order neutral, so results are
 * stored back the same way with no swapping. A UDP checksum of 0 means
 * "none" (IPv4) and stays 0; a computed 0 is sent as 0xffff.
 * Included by gtpu.h and gen.c.
 */
#ifndef SIM_CSUM_H
#define SIM_CSUM_H

static __always_inline __u16 sim_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The header checksum of a 20-byte IPv4 header whose checksum field is 0. */
static __always_inline __u16 sim_ipv4_header_csum(const void *hdr)
{
	const __u16 *w = hdr;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		sum += w[i];
	return sim_csum_fold(sum);
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for a 16-bit field m -> m'. */
static __always_inline __u16 sim_csum_replace16(__u16 check, __u16 old, __u16 new)
{
	return sim_csum_fold((__u16)~check + (__u32)(__u16)~old + new);
}

/* The same for a 32-bit field (an IPv4 address), as two 16-bit words. */
static __always_inline __u16 sim_csum_replace32(__u16 check, __u32 old, __u32 new)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~(old & 0xffff) + (__u16)~(old >> 16);
	sum += (new & 0xffff) + (new >> 16);
	return sim_csum_fold(sum);
}

#endif
