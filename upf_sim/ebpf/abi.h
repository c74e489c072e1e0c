/* abi.h - every struct that crosses the kernel/user boundary of the simulator.
 *
 * Python never mirrors these: it takes the key and value types from bcc's
 * table classes (upf_sim/bpf.py), so this file is the one definition.
 * Addresses are in network byte order as 4 raw bytes; TEIDs and indexes are
 * host-order integers. Sizes come from -D flags set by upf_sim/bpf.py:
 * SIM_MAX_SESSIONS (the session table's length: every session map's size).
 * Included by upf.c, gnb.c, gen.c.
 */
#ifndef SIM_ABI_H
#define SIM_ABI_H

/* Packets and bytes of one counter; bytes are the user (inner) IP packet's. */
struct sim_count {
	__u64 packets;
	__u64 bytes;
};

/* Per session: both directions, as the program counting them saw them. */
struct session_count {
	struct sim_count ul;
	struct sim_count dl;
};

/* UPF uplink: key the N3 TEID the UPF allocated (host order). */
struct upf_ul_val {
	__u32 index;      /* the session's counter slot */
	__u8 ue_addr[4];  /* the only inner source address accepted */
};

/* UPF downlink: key the UE's IPv4 address (4 raw bytes). */
struct upf_dl_val {
	__u32 index;
	__u32 teid;       /* the gNB's downlink TEID */
	__u8 gnb_addr[4]; /* outer destination */
	__u8 qfi;         /* QFI written into the DL PDU Session Container */
	__u8 pad[3];
};

/* gNB uplink (and the generator, by index): the UE's tunnel toward the UPF. */
struct gnb_ue_val {
	__u32 index;
	__u32 teid;       /* the UPF's uplink TEID */
	__u8 ue_addr[4];
	__u8 qfi;         /* QFI written into the UL PDU Session Container */
	__u8 pad[3];
};

/* gNB downlink: key the gNB's downlink TEID (host order). */
struct gnb_dl_val {
	__u32 index;
	__u8 ue_addr[4];  /* the only inner destination accepted */
};

/* One per program: its own N3 address, and the peer's for the gNB. */
struct sim_cfg {
	__u8 local_addr[4]; /* the UPF's or the gNB's N3 address */
	__u8 peer_addr[4];  /* gNB: the UPF's N3 address (uplink destination) */
	__u32 out_ifindex;  /* generator: where generated frames go (the gNB's N3 port) */
	__u32 ues;          /* generator: sessions cycled through, indexes 0..ues-1 */
	__u32 flows;        /* generator: source ports (ICMP ids) per UE */
	__u16 first_port;   /* generator: the first source port (ICMP id) */
	__u16 pad;
};

#endif
