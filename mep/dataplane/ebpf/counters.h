/* counters.h - the one record-and-return exit of every packet.
 *
 * struct decision collects what process() decided; finish() counts it
 * (per-CPU packets and bytes per reason and per rule: per-CPU slots need
 * no atomics, the owner module maps/counters.py sums them), writes struct
 * mep_meta in front of the frame for the TC program and test-run callers,
 * and returns the XDP action. Verdict numbers come from reasons.h.
 * Included by the entry file.
 */
#ifndef MEP_COUNTERS_H
#define MEP_COUNTERS_H

#define MEP_VERDICT_ENUM(name, num, desc) name = num,
enum mep_verdict { MEP_VERDICTS(MEP_VERDICT_ENUM) };
#define MEP_REASON_ENUM(name, num, verdict, desc) name = num,
enum mep_reason { MEP_REASONS(MEP_REASON_ENUM) };

/* Kept in the per-CPU scratch (scratch.h), not on the stack: as locals its
 * fields were live on every early exit of the parse and the classifier, and
 * clang set all of them again before each of those branches (~6 instructions
 * and 3 stack stores a check, ~10 checks a packet). In map memory a field is
 * stored where it is decided and read once, here. */
struct decision {
	__u32 rule_id;
	__u32 version;
	__u32 counter;                 /* rule counter slot; valid when has_rule */
	__u8 reason;
	__u8 port;
	__u8 copies;
	__u8 has_rule;
	__u8 reverse;
	__u8 uncounted;                /* a DUPLICATE copy made on a mirror port: counted at the original */
	__u8 meta;                     /* write mep_meta even when not DUPLICATE (mep_state.meta_all) */
	__u8 pad[5];
} __attribute__((aligned(8)));     /* zeroed as three words */

static __always_inline __u8 reason_verdict(__u8 reason)
{
	switch (reason) {
#define MEP_REASON_CASE(name, num, verdict, desc) case num: return verdict;
	MEP_REASONS(MEP_REASON_CASE)
#undef MEP_REASON_CASE
	}
	return MEP_VERDICT_DROP;
}

static __always_inline void count(void *map_lookup_result, __u64 bytes)
{
	struct counter_val *c = map_lookup_result;

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int finish(struct xdp_md *ctx, const struct decision *d, __u64 bytes, int action)
{
	struct mep_meta *meta;
	__u32 reason = d->reason;
	void *data;

	if (!d->uncounted) {
		count(mep_reason_counters.lookup(&reason), bytes);
		if (d->has_rule) {
			__u32 slot = d->counter;
			count(mep_rule_counters.lookup(&slot), bytes);
		}
	}
	/* The TC program needs the metadata of a DUPLICATE; test-run and `mep
	 * explain` read every frame's (dropped ones too) while meta_all is set.
	 * Not writing it otherwise saves ~18 ns a packet. */
	if (!d->meta && d->reason != MEP_DUPLICATE_RULE)
		return action;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return action;  /* no room for metadata: the frame still goes on */
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(meta + 1) > data)
		return action;
	meta->verdict = reason_verdict(d->reason);
	meta->reason = d->reason;
	meta->port = d->port;
	meta->copies = d->copies;
	meta->rule_id = d->rule_id;
	meta->version = d->version;
	meta->flags = d->reverse ? MEP_META_REVERSE : 0;
	return action;
}

#endif /* MEP_COUNTERS_H */
