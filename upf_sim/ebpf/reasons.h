/* reasons.h - the one list of what the simulator's programs did with a frame.
 *
 * Each value indexes the per-CPU counter array of the program that counts it
 * (upf_reasons in upf.c, gnb_reasons in gnb.c). Python reads this file
 * (upf_sim/reasons.py parses every "#define SIM_<NAME> <n> / * text * /" line),
 * so a reason is written once. UPF_* are counted by the UPF, GNB_* by the gNB.
 * Included by upf.c and gnb.c.
 */
#ifndef SIM_REASONS_H
#define SIM_REASONS_H

#define SIM_UPF_UL_FORWARDED     0  /* uplink G-PDU decapsulated and redirected to N6 */
#define SIM_UPF_UL_TO_STACK      1  /* uplink G-PDU decapsulated, the kernel forwards it (no FIB/neighbour answer in XDP) */
#define SIM_UPF_DL_FORWARDED     2  /* downlink packet encapsulated and redirected to N3 */
#define SIM_UPF_DL_TO_STACK      3  /* downlink packet encapsulated, the kernel forwards it */
#define SIM_UPF_PASS_NOT_GTPU    4  /* on N3 but not a G-PDU to the UPF's N3 address (ARP, echo, fragments): to the stack */
#define SIM_UPF_PASS_NO_SESSION  5  /* on N6 but not IPv4 to a UE with a session: to the stack */
#define SIM_UPF_DROP_UNKNOWN_TEID 6 /* G-PDU whose TEID has no session */
#define SIM_UPF_DROP_UE_ADDRESS  7  /* inner packet not IPv4 from the session's UE address */
#define SIM_UPF_DROP_MALFORMED   8  /* truncated or inconsistent GTP-U or IP headers */
#define SIM_UPF_DROP_NO_ROOM     9  /* no headroom to encapsulate (bpf_xdp_adjust_head failed) */
#define SIM_GNB_UL_ENCAPSULATED 10  /* a UE's packet encapsulated toward the UPF (TC egress) */
#define SIM_GNB_UL_NOT_UE       11  /* not IPv4 from a UE (ARP, the gNB's own traffic): sent as it is */
#define SIM_GNB_DROP_ENCAP_FAILED 12 /* bpf_skb_adjust_room or the header store failed */
#define SIM_GNB_DL_DELIVERED    13  /* downlink G-PDU decapsulated and passed to the UE's stack */
#define SIM_GNB_PASS_NOT_GTPU   14  /* on N3 but not a G-PDU to the gNB's address: to the stack */
#define SIM_GNB_DROP_UNKNOWN_TEID 15 /* downlink G-PDU whose TEID has no UE */
#define SIM_GNB_DROP_UE_ADDRESS 16  /* inner packet not IPv4 to the TEID's UE address */
#define SIM_GNB_DROP_MALFORMED  17  /* truncated or inconsistent GTP-U or IP headers */
#define SIM_REASONS             18  /* the number of reasons: sizes the counter arrays */

#endif
