"""One owner per BPF map: the only modules that know a map's layout and write it.

Each map in ebpf/maps.h belongs to exactly one module here; the engine
(xdp.py) calls these modules and nothing else touches the maps. Modules are
grouped by concern rather than one per map, because the classifier's seven
maps and the rule set's four maps are only meaningful written together
(a departure from STYLE.md section 3's one-module-per-map, for that reason):

=====================  ==========================================================
module                 maps
=====================  ==========================================================
abi.py                 (none: the shared numbers and the cflags)
classifier.py          mep_addr4, mep_addr_class, mep_value_class, mep_vectors,
                       mep_vec_blocks, mep_filter_rule
ruleset.py             mep_rules, mep_rule_index, mep_sets, mep_state
counters.py            mep_rule_counters, mep_reason_counters
ports.py               mep_ports, mep_port_of, mep_mirrors
fib.py                 mep_fib_gen (kept in step with the kernel's routing state); mep_fib_cache is the program's alone
flows.py               mep_flows (written by the program; cleared here); the flow caches are the program's alone
dns.py                 mep_dns, mep_dns_counters, mep_dns_cfg (the XDP DNS responder; docs/dns-xdp.md)
=====================  ==========================================================

Key and value types come from bcc's generated Key/Leaf classes of each
table, so Python never restates a struct of ebpf/abi.h.
"""
