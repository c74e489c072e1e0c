/* flow.h - reverse-flow state of FORWARD_* FLOW rules (docs/semantics.md section 6).
 *
 * remember_flow(): called for a forward match; records, keyed by the reply as
 * it will arrive, how to send that reply back toward the UE.
 * find_flow_reply(): looks a packet up; returns the valid entry, or NULL. An entry whose rule no longer exists with
 * the same version is deleted (the packet is then classified normally).
 * Spec: reference.py _remember / _flow_reply. Included by the entry file.
 */
#ifndef MEP_FLOW_H
#define MEP_FLOW_H

static __always_inline void remember_flow(struct xdp_md *ctx, const struct pkt *p, const struct rule_val *rule,
					  const struct target_val *t, const struct port_val *in,
					  struct flow_key *key_mem, struct flow_val *val_mem)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	const struct ip_info *u = &p->user;
	struct ethhdr *eth = data;  /* as it arrived: called before the frame is rewritten */
	struct flow_key *key = key_mem;
	struct flow_val *val = val_mem;

	if ((void *)(eth + 1) > data_end)
		return;  /* parsed already: cannot happen */

	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memset(val, 0, sizeof(*val));
	key->ingress = t->port;
	key->family = u->family;
	key->proto = u->proto;
	key->src = t->rewrite ? t->new_dst : u->dst;
	key->dst = u->src;
	key->sport = u->has_ports ? u->dport : 0;
	key->dport = u->has_ports ? u->sport : 0;
	val->rule_id = rule->rule_id;
	val->version = rule->version;
	val->out_port = in ? in->index : 0;
	val->out_mtu = in ? in->mtu : 0xffff;
	__builtin_memcpy(val->eth_dst, eth->h_source, 6);
	__builtin_memcpy(val->eth_src, eth->h_dest, 6);
	val->has_vlan = p->has_vlan;
	val->vlan_tci = p->vlan_tci;
	val->restore = t->rewrite;
	val->restore_src = u->dst;
	mep_flows.update(key, val);
}

/* The valid entry for this packet (a map value: valid until the program
 * returns), or NULL. `key` is working memory. */
static __always_inline struct flow_val *find_flow_reply(const struct pkt *p, __u32 half, __u32 in_index,
							struct flow_key *key, struct rule_val **rule_out)
{
	const struct ip_info *u = &p->user;
	struct rule_index_key rk = {};
	struct flow_val *e;
	struct rule_val *rule;
	__u32 *slot, idx;

	__builtin_memset(key, 0, sizeof(*key));
	key->ingress = in_index;
	key->family = u->family;
	key->proto = u->proto;
	key->src = u->src;
	key->dst = u->dst;
	key->sport = u->has_ports ? u->sport : 0;
	key->dport = u->has_ports ? u->dport : 0;
	e = mep_flows.lookup(key);
	if (!e)
		return 0;
	rk.half = half;
	rk.rule_id = e->rule_id;
	slot = mep_rule_index.lookup(&rk);
	rule = 0;
	if (slot) {
		idx = half * MEP_MAX_RULES + *slot;
		rule = mep_rules.lookup(&idx);
	}
	if (!rule || rule->version != e->version) {
		mep_flows.delete(key);
		return 0;
	}
	*rule_out = rule;
	return e;
}

#endif /* MEP_FLOW_H */
