/* mep_tc.c - the TC ingress entry: DUPLICATE_* copies, which XDP cannot make.
 *
 * XDP cannot clone a frame. For a DUPLICATE_* rule the XDP program passes
 * the original to the stack with struct mep_meta (verdict DUPLICATE, rule
 * id and version, a bitmask of feasible targets). This program, attached at
 * clsact ingress of the same port, clones the skb once per target to mirror
 * port k (a veth pair owned by the engine) with a struct copy_trailer
 * appended; mep_xdp() on the mirror's far end builds target k's frame and
 * redirects it (mep_xdp.c make_copy). The original continues unchanged.
 * Compiled together with mep_xdp.c by mep.c.
 */

static __always_inline void clone_to_mirror(struct __sk_buff *skb, __u8 copies, __u32 k)
{
	__u32 *ifindex;

	if (!(copies & (1 << k)))
		return;
	ifindex = mep_mirrors.lookup(&k);
	if (ifindex && *ifindex)
		bpf_clone_redirect(skb, *ifindex, 0);
}

int mep_tc_duplicate(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *meta_end = data;
	struct mep_meta *meta = (void *)(long)skb->data_meta;
	struct copy_trailer tr;
	__u32 len = skb->len;
	__u8 copies;

	if ((void *)(meta + 1) > meta_end || meta->verdict != MEP_VERDICT_DUPLICATE)
		return TC_ACT_OK;
	copies = meta->copies;
	tr.rule_id = meta->rule_id;
	tr.version = meta->version;
	if (!copies || bpf_skb_change_tail(skb, len + sizeof(tr), 0))
		return TC_ACT_OK;
	if (!bpf_skb_store_bytes(skb, len, &tr, sizeof(tr), 0)) {
		clone_to_mirror(skb, copies, 0);
		clone_to_mirror(skb, copies, 1);
	}
	bpf_skb_change_tail(skb, len, 0);
	return TC_ACT_OK;
}
