/* scratch.h - per-CPU working memory for one packet.
 *
 * The BPF stack is 512 bytes and every helper here is inlined into one
 * frame, so the large per-packet structs live in a one-slot per-CPU array
 * instead (no locking: one CPU runs one program invocation at a time, and
 * XDP does not nest). process() zeroes what it uses.
 * Included by the entry file after the structs it holds.
 */
#ifndef MEP_SCRATCH_H
#define MEP_SCRATCH_H

struct scratch {
	struct decision d;             /* this packet's (counters.h) */
	struct pkt p;
	struct field_values fv;
	struct flow_cache_work cache;
	struct flow_key flow_key;
	struct flow_val flow_val;
	__u8 csum_buf[512 + 4];        /* actions.h udp6_csum: MEP_CSUM_CHUNK + 4 */
	struct dns_key dns_key;        /* dns.h */
	struct dns_work dns_work;
	struct bpf_fib_lookup fib;     /* fib.h */
	__u64 fib_key[MEP_FIB_KEY_WORDS]; /* fib.h: the lookup's inputs, mep_fib_cache's key */
	/* a flow cache miss: the half classify_step() classified in, its
	 * result, and whether it has one (read and cleared by mep_xdp's second
	 * pass) */
	__u32 cls_half;
	struct flow_cache_val cls_result;
	__u8 cls_pending;
};

/* working memory; writer: the XDP program (never read outside it) */
BPF_PERCPU_ARRAY(mep_scratch, struct scratch, 1);

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;

	return mep_scratch.lookup(&zero);
}

#endif /* MEP_SCRATCH_H */
