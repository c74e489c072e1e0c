/* maps.h - every map of the MEP data plane, each with its contents, key and writer.
 *
 * Rule-set maps are double-buffered: keys carry a half (0/1) and mep_state
 * says which half is in force; the control plane writes the other half, then
 * flips mep_state (mep/dataplane/xdp.py apply()). Pinned maps live under
 * MEP_PIN_DIR (/sys/fs/bpf/mep/<instance>) and survive a control-plane
 * restart; the per-load maps (ports) are refilled at every load.
 * Each map's owner module in mep/dataplane/maps/ is its only writer.
 * Included by the entry files only.
 */
#ifndef MEP_MAPS_H
#define MEP_MAPS_H

#define MEP_PIN(name) MEP_PIN_DIR "/" #name

/* active half; writer: maps/ruleset.py (flip) */
BPF_TABLE_PINNED("array", u32, struct state_val, mep_state, 1, MEP_PIN(mep_state));
/* per-half rule-set header; writer: maps/ruleset.py */
BPF_TABLE_PINNED("array", u32, struct set_cfg, mep_sets, 2, MEP_PIN(mep_sets));
/* half -> its IPv4 index: the address fields' first levels, then their intervals and classes; memory-mapped
 * by its writer; writer: maps/classifier.py */
BPF_TABLE_PINNED7("array", u32, struct addr4_index, mep_addr4, 2, MEP_PIN(mep_addr4), BPF_F_MMAPABLE);
/* (half, field, family, prefix) -> class of src/dst/tunnel IPv6 addresses; writer: maps/classifier.py */
BPF_TABLE_PINNED7("lpm_trie", struct addr_class_key, u32, mep_addr_class, MEP_MAX_PREFIXES,
		  MEP_PIN(mep_addr_class), BPF_F_NO_PREALLOC);
/* half -> the classes of the value fields' values (ports, protocol, VLAN, DSCP, TC, QFI); memory-mapped by
 * its writer; writer: maps/classifier.py */
BPF_TABLE_PINNED7("array", u32, struct value_classes, mep_value_class, 2, MEP_PIN(mep_value_class),
		  BPF_F_MMAPABLE);
/* half -> its vectors: the blocks of each filter bit vector and of its summaries; memory-mapped by its
 * writer; writer: maps/classifier.py */
BPF_TABLE_PINNED7("array", u32, struct vec_index, mep_vectors, 2, MEP_PIN(mep_vectors), BPF_F_MMAPABLE);
/* half -> its pool of blocks of vector and summary words; memory-mapped by its writer, which stores
 * only the blocks that change (BPF_F_MMAPABLE); writer: maps/classifier.py */
BPF_TABLE_PINNED7("array", u32, struct vec_pool, mep_vec_blocks, 2, MEP_PIN(mep_vec_blocks), BPF_F_MMAPABLE);
/* half * MEP_MAX_FILTERS + filter bit -> rule slot; writer: maps/classifier.py */
BPF_TABLE_PINNED("array", u32, u32, mep_filter_rule, 2 * MEP_MAX_FILTERS, MEP_PIN(mep_filter_rule));
/* half * MEP_MAX_RULES + rule slot -> action, targets, counter slot; writer: maps/ruleset.py */
BPF_TABLE_PINNED("array", u32, struct rule_val, mep_rules, 2 * MEP_MAX_RULES, MEP_PIN(mep_rules));
/* (half, rule id) -> rule slot; writer: maps/ruleset.py */
BPF_TABLE_PINNED("hash", struct rule_index_key, u32, mep_rule_index, 2 * MEP_MAX_RULES, MEP_PIN(mep_rule_index));
/* hash of packet fields + generation -> the 2-way set caching their classification (IPv6 or mixed
 * families); per CPU, not pinned: a cache a new load may start empty; writer: the XDP program */
BPF_PERCPU_ARRAY(mep_flow_cache, struct flow_cache_bucket, MEP_FLOW_CACHE_BUCKETS);
/* the same for IPv4 packets (untunnelled or in IPv4 GTP-U), a smaller key; writer: the XDP program */
BPF_PERCPU_ARRAY(mep_flow_cache4, struct flow_cache_bucket4, MEP_FLOW_CACHE_BUCKETS);
/* expected reply -> how to send it back; writer: the XDP program (FORWARD_* FLOW rules) */
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow_val, mep_flows, MEP_FLOW_CAPACITY, MEP_PIN(mep_flows));
/* counter slot -> per-CPU packets/bytes of one rule; writer: the XDP program, zeroed by maps/counters.py on reuse */
BPF_TABLE_PINNED("percpu_array", u32, struct counter_val, mep_rule_counters, MEP_RULE_COUNTER_SLOTS,
		 MEP_PIN(mep_rule_counters));
/* reason -> per-CPU packets/bytes; writer: the XDP and TC programs */
BPF_TABLE_PINNED("percpu_array", u32, struct counter_val, mep_reason_counters, MEP_NREASONS,
		 MEP_PIN(mep_reason_counters));
/* fib.h outcome -> per-CPU packets/bytes of PASS frames offered to the FIB (dataplane.fib_forward);
 * writer: the XDP program */
BPF_TABLE_PINNED("percpu_array", u32, struct counter_val, mep_fib_counters, MEP_NFIB_OUTCOMES,
		 MEP_PIN(mep_fib_counters));
/* [0]: the generation of the kernel's routing state that mep_fib_cache entries must carry to be used; 0
 * turns the cache off. Per load; writer: maps/fib.py (bumped on every rtnetlink notification that can
 * change a lookup's answer, 0 when the engine closes) */
BPF_ARRAY(mep_fib_gen, __u32, 1);
/* hash of a FIB lookup's inputs -> what it answered (direct-mapped, per CPU; fib.h); per load, not pinned;
 * writer: the XDP program */
BPF_PERCPU_ARRAY(mep_fib_cache, struct fib_cache_entry, MEP_FIB_CACHE_SLOTS);
/* port index -> ifindex (bpf_redirect_map); writer: maps/ports.py at load */
BPF_DEVMAP(mep_ports, MEP_MAX_PORTS);
/* ingress ifindex -> port index and role (an array: one load, where a hash
 * lookup cost ~10 ns a packet); writer: maps/ports.py at load */
BPF_ARRAY(mep_port_of, struct port_val, MEP_MAX_IFINDEX);
/* target k of a DUPLICATE rule -> ifindex of mirror k's sending end (TC); writer: maps/ports.py */
BPF_ARRAY(mep_mirrors, u32, 2);
/* (half, qtype, qname) -> the answer record; writer: maps/dns.py */
BPF_TABLE_PINNED("hash", struct dns_key, struct dns_val, mep_dns, MEP_DNS_ENTRIES, MEP_PIN(mep_dns));
/* counter slot -> per-CPU answered queries and their bytes (slot 0: NODATA answers);
 * writer: the XDP program, zeroed by maps/dns.py on reuse */
BPF_TABLE_PINNED("percpu_array", u32, struct counter_val, mep_dns_counters, MEP_DNS_COUNTER_SLOTS,
		 MEP_PIN(mep_dns_counters));
/* [0]: the responder's address and port (dns.listen); writer: maps/dns.py at load */
BPF_ARRAY(mep_dns_cfg, struct dns_cfg, 1);
/* tail-call targets: [MEP_PROG_DNS] = mep_xdp_dns, [MEP_PROG_XDP] =
 * mep_xdp, [MEP_PROG_CLASSIFY_REV] = mep_xdp_classify_rev; writer: xdp.py
 * at load.
 * Pinned under a name of its own per load (MEP_PIN_PROGS): the kernel
 * empties a program array once no file or pin refers to it, and the
 * program still attached after its control plane exited needs its table
 * until the next load replaces it (which then removes this pin). */
BPF_TABLE_PINNED("prog", u32, u32, mep_progs, MEP_PROGS, MEP_PIN_PROGS);

#ifdef MEP_BENCH_NEW_FLOWS
/* benchmark only (bench/xdp_rules.py): a per-CPU counter that salts every flow
 * cache key, so every packet misses and writes a set of the flow cache; writer: the program */
BPF_PERCPU_ARRAY(mep_bench_salt, __u32, 1);
#endif

#endif /* MEP_MAPS_H */
