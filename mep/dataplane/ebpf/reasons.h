/* reasons.h - the one list of verdicts and reasons.
 *
 * Every packet leaves the data plane with exactly one verdict and one reason;
 * both are counted per CPU (counters.h). Python reads this file
 * (mep/dataplane/reasons.py), so the numbers are written here only.
 * Included by: every BPF source; parsed by reasons.py. No code, only lists.
 *
 * MEP_VERDICTS(X):     X(name, number, description)
 * MEP_REASONS(X):      X(name, number, verdict, description)
 * MEP_FIB_OUTCOMES(X): X(name, number, description)
 * A reason belongs to exactly one verdict. Drop reasons name a cause an
 * operator can act on (STYLE.md section 6).
 */
#ifndef MEP_REASONS_H
#define MEP_REASONS_H

#define MEP_VERDICTS(X)                                                                    \
	X(MEP_VERDICT_PASS,      0, "to the kernel stack unchanged (default path to the DN)") \
	X(MEP_VERDICT_DROP,      1, "dropped")                                                 \
	X(MEP_VERDICT_REDIRECT,  2, "rewritten and sent out a data-plane port")                \
	X(MEP_VERDICT_DUPLICATE, 3, "passed unchanged, with copies sent out data-plane ports") \
	X(MEP_VERDICT_TX,        4, "answered: sent back out the port it came in on")

#define MEP_REASONS(X)                                                                                     \
	X(MEP_PASS_NOT_IP,             1, MEP_VERDICT_PASS,      "not IPv4/IPv6 (ARP, LLDP, ...)")             \
	X(MEP_PASS_NO_MATCH,           2, MEP_VERDICT_PASS,      "no rule matched; default action PASSTHROUGH") \
	X(MEP_PASS_RULE,               3, MEP_VERDICT_PASS,      "PASSTHROUGH rule")                           \
	X(MEP_PASS_FLOW_REVERSE,       4, MEP_VERDICT_PASS,      "reply of a FORWARD FLOW rule without flow state") \
	X(MEP_PASS_GTPU_NOT_IP,        5, MEP_VERDICT_PASS,      "GTP-U G-PDU whose payload is not IP")        \
	X(MEP_PASS_FROM_APP,           6, MEP_VERDICT_PASS,      "from an app port, not a flow reply: not classified") \
	X(MEP_PASS_DNS_QUERY,          7, MEP_VERDICT_PASS,      "to the MEP's DNS responder, for user space to answer") \
	X(MEP_REDIRECT_RULE,          10, MEP_VERDICT_REDIRECT,  "FORWARD_* rule")                             \
	X(MEP_REDIRECT_FLOW_REPLY,    11, MEP_VERDICT_REDIRECT,  "reply of a FORWARD FLOW rule, rewrite undone") \
	X(MEP_DUPLICATE_RULE,         20, MEP_VERDICT_DUPLICATE, "DUPLICATE_* rule")                           \
	X(MEP_TX_DNS_ANSWER,          30, MEP_VERDICT_TX,        "DNS rule answered in XDP")                   \
	X(MEP_DROP_RULE,              40, MEP_VERDICT_DROP,      "DROP rule")                                  \
	X(MEP_DROP_NO_MATCH,          41, MEP_VERDICT_DROP,      "no rule matched; default action DROP")       \
	X(MEP_DROP_TRUNCATED_ETH,     42, MEP_VERDICT_DROP,      "frame shorter than an Ethernet/802.1Q header") \
	X(MEP_DROP_TRUNCATED_IPV4,    43, MEP_VERDICT_DROP,      "IPv4 header or total length beyond the frame") \
	X(MEP_DROP_MALFORMED_IPV4,    44, MEP_VERDICT_DROP,      "IPv4 IHL < 5 or total length < header length") \
	X(MEP_DROP_MALFORMED_IPV6,    51, MEP_VERDICT_DROP,      "IPv6 version field is not 6")                \
	X(MEP_DROP_TRUNCATED_IPV6,    45, MEP_VERDICT_DROP,      "IPv6 header or payload length beyond the frame") \
	X(MEP_DROP_IPV6_EXT_CHAIN,    46, MEP_VERDICT_DROP,      "IPv6 extension headers truncated or more than the limit") \
	X(MEP_DROP_TRUNCATED_L4,      47, MEP_VERDICT_DROP,      "TCP/UDP/SCTP/ICMP header beyond the IP payload") \
	X(MEP_DROP_MALFORMED_GTPU,    48, MEP_VERDICT_DROP,      "GTP-U header, length or extension chain invalid") \
	X(MEP_DROP_REWRITE_FAMILY,    49, MEP_VERDICT_DROP,      "dstIpAddress family differs from the packet's") \
	X(MEP_DROP_MTU,               50, MEP_VERDICT_DROP,      "rewritten frame exceeds the egress port MTU") \
	X(MEP_DROP_COPY_STALE,        52, MEP_VERDICT_DROP,      "DUPLICATE copy whose rule changed before the copy was made") \
	X(MEP_DROP_INTERNAL,          53, MEP_VERDICT_DROP,      "a kernel helper failed (headroom, devmap slot): report it")

/* What became of a PASS frame offered to the kernel's FIB (dataplane.fib_forward,
 * fib.h): forwarded in XDP, or to the stack and why. Counted in addition to
 * its reason; 1-8 are bpf_fib_lookup's own BPF_FIB_LKUP_RET_* codes. */
#define MEP_FIB_OUTCOMES(X)                                                                                \
	X(MEP_FIB_FORWARDED,     0, "forwarded in XDP to the next hop the kernel's FIB names (looked up)")      \
	X(MEP_FIB_BLACKHOLE,     1, "to the stack: a blackhole route")                                          \
	X(MEP_FIB_UNREACHABLE,   2, "to the stack: an unreachable route (the stack answers ICMP)")              \
	X(MEP_FIB_PROHIBIT,      3, "to the stack: a prohibit route (the stack answers ICMP)")                  \
	X(MEP_FIB_NOT_FWDED,     4, "to the stack: for this host, or no unicast route")                         \
	X(MEP_FIB_FWD_DISABLED,  5, "to the stack: forwarding is disabled on the port it came in on")           \
	X(MEP_FIB_UNSUPP_LWT,    6, "to the stack: the route encapsulates (lightweight tunnel)")                \
	X(MEP_FIB_NO_NEIGH,      7, "to the stack: the next hop's MAC is not resolved (the stack resolves it)") \
	X(MEP_FIB_FRAG_NEEDED,   8, "to the stack: larger than the egress MTU")                                 \
	X(MEP_FIB_NOT_A_PORT,   16, "to the stack: the route leaves by an interface that is not a data-plane port") \
	X(MEP_FIB_TTL,          17, "to the stack: its TTL or hop limit expires here (the stack answers ICMP)")   \
	X(MEP_FIB_VLAN,         18, "to the stack: 802.1Q-tagged (a VLAN device of the stack routes it)")       \
	X(MEP_FIB_LINK_GROUP,   19, "to the stack: to a multicast or broadcast MAC (link traffic, never forwarded)") \
	X(MEP_FIB_CACHED,       20, "forwarded in XDP to the next hop an earlier lookup named (mep_fib_cache)")

#endif /* MEP_REASONS_H */
