/* mep_xdp.c - the XDP entry of the MEP data plane: top-level flow and the single exit.
 *
 * mep_xdp() runs on every data-plane port (N6, DN, app ports) and on the
 * mirror ports that carry DUPLICATE_* copies. Order (docs/semantics.md):
 * parse -> flow reply -> (app ports stop here) -> classify -> act, and
 * every path leaves through finish() (counters.h), which counts the
 * decision and writes struct mep_meta in front of the frame.
 * Classification is a flow cache lookup; on a miss mep_xdp scans the tables
 * (classify_step()), writes the cache entry and ends a DROP or PASS there;
 * for the actions that build or copy frames it leaves the result in the
 * per-CPU scratch and tail-calls itself: that second pass acts on the
 * result, on the frame the first pass parsed. So act(), which the verifier
 * would otherwise walk again for every word the scan can stop at
 * (docs/classifier.md), is verified once. While FLOW rules are enforced the
 * reverse scan runs in mep_xdp_classify_rev(), tail-called after the
 * forward one. mep_xdp_dns() is the tail-call target for queries to the
 * DNS responder.
 * Compiled together with mep_tc.c by mep.c.
 */

static __always_inline int redirect(struct decision *d, __u8 port)
{
	int action;

	d->port = port;
	if (port == 0)
		return XDP_PASS;  /* output port 0 is the stack */
	action = mep_ports.redirect_map(port, XDP_DROP);
	if (action != XDP_REDIRECT)
		d->reason = MEP_DROP_INTERNAL;
	return action;
}

static __always_inline int drop(struct decision *d, __u8 reason)
{
	d->reason = reason;
	return XDP_DROP;
}

static __always_inline int pass(struct decision *d, __u8 reason)
{
	d->reason = reason;
	return XDP_PASS;
}

static __always_inline void decide_rule(struct decision *d, const struct rule_val *rule, __u8 reverse)
{
	d->has_rule = 1;
	d->rule_id = rule->rule_id;
	d->version = rule->version;
	d->counter = rule->counter;
	d->reverse = reverse;
}

static __always_inline struct rule_val *rule_at(__u32 half, __u32 slot)
{
	__u32 idx = half * MEP_MAX_RULES + slot;

	if (slot >= MEP_MAX_RULES)
		return 0;
	return mep_rules.lookup(&idx);
}

/* A DUPLICATE_* copy arriving on mirror port k: the original frame plus the
 * trailer TC appended; build target k of that rule as it is now, if unchanged. */
static __always_inline int make_copy(struct xdp_md *ctx, const struct port_val *in, struct scratch *s,
				     struct decision *d)
{
	struct pkt *p = &s->p;
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct copy_trailer tr;
	struct rule_index_key rk = {};
	struct rule_val *rule;
	__u32 *slot, k = in->mirror & 1, len = data_end - data;
	__u8 *t;
	int rc, action;

	if (len < sizeof(tr) + ETH_HLEN_BYTES)
		return drop(d, MEP_DROP_COPY_STALE);
	t = data + ((len - sizeof(tr)) & MEP_MAX_OFF);
	if ((void *)(t + sizeof(tr)) > data_end)
		return drop(d, MEP_DROP_COPY_STALE);
	__builtin_memcpy(&tr, t, sizeof(tr));
	if (bpf_xdp_adjust_tail(ctx, -(int)sizeof(tr)))
		return drop(d, MEP_DROP_INTERNAL);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (parse_frame(data, data_end, p))
		return drop(d, MEP_DROP_COPY_STALE);
	{
		__u32 zero = 0;
		struct state_val *st = mep_state.lookup(&zero);

		if (!st)
			return drop(d, MEP_DROP_INTERNAL);
		rk.half = st->active & 1;
	}
	rk.rule_id = tr.rule_id;
	slot = mep_rule_index.lookup(&rk);
	rule = slot ? rule_at(rk.half, *slot) : 0;
	if (!rule || rule->version != tr.version || rule->action != MEP_ACTION_DUPLICATE || k >= rule->ntargets)
		return drop(d, MEP_DROP_COPY_STALE);
	decide_rule(d, rule, 0);
	d->reason = MEP_DUPLICATE_RULE;
	rc = target_feasible(&rule->t[k], p);
	if (!rc)
		rc = build_target(ctx, p, &rule->t[k], rule->rule_id, s->csum_buf);
	if (rc)
		return drop(d, rc == MEP_DROP_INTERNAL ? MEP_DROP_INTERNAL : MEP_DROP_COPY_STALE);
	action = redirect(d, rule->t[k].port);
	/* the original was counted as DUPLICATE_RULE; a copy sent is not a new packet */
	d->uncounted = action == XDP_REDIRECT;
	return action;
}

/* What a classification decides (result: a flow cache value) without
 * touching the frame: no rule (the set's default), DROP, PASSTHROUGH; -1,
 * with *rule, for the actions that build or copy frames (act()). Shared by
 * the flow cache hit and the miss (classify_step()). */
static __always_inline int decide(const struct set_cfg *cfg, __u32 half, const struct flow_cache_val *result,
				  struct decision *d, struct rule_val **rule)
{
	struct rule_val *r;

	if (!result->slot_plus1)
		return cfg->default_drop ? drop(d, MEP_DROP_NO_MATCH) : pass(d, MEP_PASS_NO_MATCH);
	r = rule_at(half, result->slot_plus1 - 1);
	if (!r)
		return drop(d, MEP_DROP_INTERNAL);
	decide_rule(d, r, result->reverse);
	switch (r->action) {
	case MEP_ACTION_DROP:
		return drop(d, MEP_DROP_RULE);
	case MEP_ACTION_PASSTHROUGH:
		return pass(d, MEP_PASS_RULE);
	}
	*rule = r;
	return -1;
}

/* The actions decide() leaves: DUPLICATE_* and FORWARD_*. */
static __always_inline int act(struct xdp_md *ctx, struct scratch *s, struct rule_val *rule, __u8 reverse,
			       const struct port_val *in, struct decision *d)
{
	struct pkt *p = &s->p;
	const struct target_val *t;
	int rc, k;

	if (rule->action == MEP_ACTION_DUPLICATE) {
#pragma unroll
		for (k = 0; k < 2; k++) {
			if (k < rule->ntargets && !target_feasible(&rule->t[k], p))
				d->copies |= 1 << k;
		}
		return pass(d, MEP_DUPLICATE_RULE);
	}
	/* FORWARD_*: a reply matched without flow state goes the default way back. */
	if (reverse)
		return pass(d, MEP_PASS_FLOW_REVERSE);
	t = &rule->t[0];
	rc = target_feasible(t, p);
	if (rc)
		return drop(d, rc);
	if (rule->flow)
		remember_flow(ctx, p, rule, t, in, &s->flow_key, &s->flow_val);
	rc = build_target(ctx, p, t, rule->rule_id, s->csum_buf);
	if (rc)
		return drop(d, rc);
	d->reason = MEP_REDIRECT_RULE;
	return redirect(d, t->port);
}

/* process()'s answer for a flow cache miss in s->cls_half, which mep_xdp
 * classifies (not an XDP action). Scanning after process() returns, not
 * inside it, kept the hit's code apart from the scan's: with the scan
 * inside, a miss cost ~3-4 ns more (docs/classifier.md). */
#define MEP_CLASSIFY -2

/* mep_xdp runs again on this frame, to act on the result of its miss in
 * s->cls_half (s->cls_result): the second pass skips the parse and the
 * lookup. Both passes run in one XDP invocation, so inside one RCU read
 * section. */
static __always_inline int act_next_pass(struct xdp_md *ctx, struct scratch *s, struct decision *d)
{
	s->cls_pending = 1;
	mep_progs.call(ctx, MEP_PROG_XDP);
	s->cls_pending = 0;  /* reached only when mep_progs holds no mep_xdp */
	d->has_rule = 0;
	return drop(d, MEP_DROP_INTERNAL);
}

/* One scan of a flow cache miss in `half` (s->cls_half; classify_scan():
 * dir 0 forward, in mep_xdp; 1 the reverse of FLOW rules, in
 * mep_xdp_classify_rev), then, unless the reverse scan is still to come
 * (tail-called; it continues from here), the cache learns the result and
 * decide() gives the verdict, or -1 for the actions that build or copy
 * frames (act(), in mep_xdp's second pass: verified once, not again for
 * every word the scan can stop at). */
static __always_inline int classify_step(struct xdp_md *ctx, struct scratch *s, const struct set_cfg *cfg,
					 __u32 half, struct decision *d, const int dir)
{
	struct rule_val *rule;

	classify_scan(half, cfg, &s->p, &s->fv, dir);
	if (!dir) {
		s->fv.rev_bit = MEP_NO_FILTER;
		if (classify_reverse(cfg)) {
			mep_progs.call(ctx, MEP_PROG_CLASSIFY_REV);
			return drop(d, MEP_DROP_INTERNAL);  /* returns only when it is not loaded */
		}
	}
	classify_miss(half, &s->p, &s->cache, &s->fv, &s->cls_result);
	return decide(cfg, half, &s->cls_result, d, &rule);
}

static __always_inline int process(struct xdp_md *ctx, struct scratch *s, struct decision *d)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 ifindex = ctx->ingress_ifindex, zero = 0, half, in_index;
	struct port_val *in = mep_port_of.lookup(&ifindex);  /* index 0: not a port */
	struct rule_val *rule = 0;
	struct flow_cache_val result, *hit;
	struct flow_val *reply;
	struct state_val *st;
	struct set_cfg *cfg;
	struct pkt *p;
	int rc, second_pass;

	st = mep_state.lookup(&zero);
	if (!st)
		return drop(d, MEP_DROP_INTERNAL);
	second_pass = s->cls_pending;
	s->cls_pending = 0;
	d->meta = st->meta_all;
	p = &s->p;
	if (in && in->role == MEP_ROLE_MIRROR)
		return make_copy(ctx, in, s, d);
	if (in && !in->index)
		in = 0;
	if (second_pass) {
		/* a miss's result (classify_step(): the first pass, or
		 * mep_xdp_classify_rev) for the frame the first pass parsed into
		 * s->p, in the half it classified in (also if a swap came between) */
		half = s->cls_half & 1;
		cfg = mep_sets.lookup(&half);
		if (!cfg)
			return drop(d, MEP_DROP_INTERNAL);
		result = s->cls_result;
	} else {
		rc = parse_frame(data, data_end, p);
		if (rc)
			return reason_verdict(rc) == MEP_VERDICT_PASS ? pass(d, rc) : drop(d, rc);
		half = st->active & 1;
		cfg = mep_sets.lookup(&half);
		if (!cfg || !cfg->generation)
			return pass(d, MEP_PASS_NO_MATCH);  /* no rule set applied yet */
		in_index = in ? in->index : 0;
		if (in && in->role == MEP_ROLE_N6 && dns_for_us(p))
			mep_progs.call(ctx, MEP_PROG_DNS);  /* returns only when mep_xdp_dns is not loaded */

		reply = cfg->flow_state ? find_flow_reply(p, half, in_index, &s->flow_key, &rule) : 0;
		if (reply && rule) {
			decide_rule(d, rule, 1);
			if (p->user.len > reply->out_mtu)
				return drop(d, MEP_DROP_MTU);
			rc = build_flow_reply(ctx, p, reply, s->csum_buf);
			if (rc)
				return drop(d, rc);
			d->reason = MEP_REDIRECT_FLOW_REPLY;
			return redirect(d, reply->out_port);
		}
		if (in && in->role == MEP_ROLE_APP)
			return pass(d, MEP_PASS_FROM_APP);
		hit = cache_lookup(p, cache_generation(cfg), &s->cache);
		if (!hit) {
			s->cls_half = half;
			return MEP_CLASSIFY;
		}
		result = *hit;
	}
	rc = decide(cfg, half, &result, d, &rule);
	if (rc >= 0)
		return rc;
	return act(ctx, s, rule, result.reverse, in, d);
}

int mep_xdp(struct xdp_md *ctx)
{
	__u64 bytes = ctx->data_end - ctx->data;
	struct scratch *s = get_scratch();
	struct set_cfg *cfg;
	struct decision *d;
	__u32 half;
	int rc;

	if (!s) {
		struct decision internal = {.reason = MEP_DROP_INTERNAL};

		return finish(ctx, &internal, bytes, XDP_DROP);
	}
	d = &s->d;
	__builtin_memset(d, 0, sizeof(*d));
	rc = process(ctx, s, d);
	if (rc == MEP_CLASSIFY) {
		half = s->cls_half & 1;
		cfg = mep_sets.lookup(&half);
		rc = cfg ? classify_step(ctx, s, cfg, half, d, 0) : drop(d, MEP_DROP_INTERNAL);
		if (rc < 0)
			rc = act_next_pass(ctx, s, d);
	}
	return finish(ctx, d, bytes, fib_forward(ctx, s, rc, bytes));
}

/* The reverse scan of a miss while FLOW rules are enforced (tail-called by
 * mep_xdp after its forward scan). A PASS on a port that forwards through
 * the FIB goes to mep_xdp's second pass like the actions: fib_forward() is
 * there. */
int mep_xdp_classify_rev(struct xdp_md *ctx)
{
	struct decision d = {};
	__u64 bytes = ctx->data_end - ctx->data;
	struct scratch *s = get_scratch();
	__u32 zero = 0, half;
	struct state_val *st = mep_state.lookup(&zero);
	struct set_cfg *cfg;
	int action;

	d.reason = MEP_DROP_INTERNAL;
	if (!s || !st)
		return finish(ctx, &d, bytes, XDP_DROP);
	d.meta = st->meta_all;
	half = s->cls_half & 1;
	cfg = mep_sets.lookup(&half);
	if (!cfg)
		return finish(ctx, &d, bytes, XDP_DROP);
	action = classify_step(ctx, s, cfg, half, &d, 1);
	if (action == XDP_DROP || (action == XDP_PASS && !fib_port(ctx)))
		return finish(ctx, &d, bytes, action);
	return finish(ctx, &d, bytes, act_next_pass(ctx, s, &d));
}

/* Queries to the DNS responder (tail-called by mep_xdp, which parsed the
 * frame into the per-CPU scratch): answered here, or passed to user space. */
int mep_xdp_dns(struct xdp_md *ctx)
{
	struct decision d = {};
	__u64 bytes = ctx->data_end - ctx->data;
	struct scratch *s = get_scratch();
	__u32 zero = 0;
	struct state_val *st = mep_state.lookup(&zero);

	if (!s || !st)
		return finish(ctx, &d, bytes, XDP_PASS);
	d.meta = st->meta_all;
	if (dns_answer(ctx, &s->p, &s->dns_key, &s->dns_work, st->active & 1, &d))
		return finish(ctx, &d, bytes, XDP_TX);
	d.reason = MEP_PASS_DNS_QUERY;
	return finish(ctx, &d, bytes, XDP_PASS);
}
