# The C-level types of _fastpath.pyx: a parsed frame, a rule set flattened
# into classifier arrays, the reverse-flow table, counters, and one frame's
# result and outputs. Included by _fastpath.pyx only; docs/fastpath.md draws
# how they fit together. Sizes: ports are numbered 0..MAX_PORT (0 is the
# kernel stack, as in ruleset.PORT_STACK); reasons 0..255 (ebpf/reasons.h).
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* mutex, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* mutex)
    int pthread_mutex_lock(pthread_mutex_t* mutex)
    int pthread_mutex_unlock(pthread_mutex_t* mutex)


cdef enum:
    MAX_PORT = 255          # port indexes are one byte (config allows 64 ports)
    NFIELDS = 13            # tables.Field
    NADDR_FIELDS = 4        # SRC, DST, TUN_SRC, TUN_DST come first in tables.Field
    MAX_KEY_PAIRS = 5       # tables.MAX_KEY_PAIRS
    MAX_NSUM = 64           # summary words: vectors of up to 262,144 filters
    MAX_TARGETS = 2         # DUPLICATE_* has one or two destinations
    MAX_OUTPUTS = 3         # a DUPLICATE_*: the input to the stack, then two copies
    ENCAP_ROOM = 80         # bytes an output may add: Ethernet 14 + IPv6 40 + UDP 8 + GTP-U 16 (+2 spare)
    FP_REASONS = 256


# --- a parsed frame (the twin of packet.Parsed) -----------------------------------
cdef struct ip_t:
    int family
    int off
    int length
    uint8_t src[16]
    uint8_t dst[16]
    int proto
    int dscp          # -1: not IPv4
    int tc            # -1: not IPv6
    int l4_off        # -1: no transport header
    int sport         # -1: no ports
    int dport

cdef struct parsed_t:
    int vlan_tci      # -1: untagged
    ip_t user
    int tunnel
    ip_t outer        # valid when tunnel
    uint32_t teid
    int qfi           # -1: no PDU session container


# --- a CompiledRuleSet, flattened (RuleTables owns the memory) ----------------------
cdef struct fp_target:
    uint8_t kind            # ruleset.TargetKind: 1 DELIVER, 2 ENCAP_GTPU, 3 ENCAP_GRE
    uint8_t port
    uint8_t new_dst_family  # 0: no destination rewrite
    uint8_t tun_family      # ENCAP_*: 4 or 6
    uint8_t src_mac[6]
    uint8_t dst_mac[6]
    uint8_t new_dst[16]
    uint8_t tun_src[16]
    uint8_t tun_dst[16]

cdef struct fp_rule:
    uint32_t rule_id
    uint32_t version
    uint32_t slot           # counter slot (FastpathEngine assigns; stable across rule sets)
    uint8_t action          # FP_ACT_*
    uint8_t flow            # filterType FLOW
    uint8_t ntargets
    fp_target targets[MAX_TARGETS]

cdef struct fp_port:
    uint8_t known           # in CompiledRuleSet.ports
    uint8_t app             # role app: never classified
    uint32_t mtu
    uint8_t mac[6]

cdef struct fp_addr_table:
    # One address field's intervals per family, sorted and disjoint (tables.FieldTable).
    uint32_t n4
    uint32_t* lo4
    uint32_t* hi4
    uint32_t* cls4
    # IPv4 first level (tables.ipv4_index): [lo4[0], hi4[n4 - 1]] cut into buckets of 2^shift4
    # addresses; bucket b's intervals are [idx4[b], idx4[b + 1]]
    uint32_t shift4
    uint32_t nb4
    uint32_t* idx4
    uint32_t n6
    uint64_t* lo6           # two words per interval: high, low (network order halves)
    uint64_t* hi6
    uint32_t* cls6

cdef struct fp_tables:
    uint32_t nfilters
    uint32_t nwords         # 64-bit words per vector holding filters
    uint32_t stride         # words each vector takes: nwords rounded up to FP_CHUNK (the rest zero)
    uint32_t nrules
    uint8_t default_drop
    uint32_t* filter_rule   # filter bit -> rule index
    uint64_t* flow_mask     # NULL: no FLOW rule
    uint64_t* flow_summary  # flow_mask's summaries (see summaries; no key summary: zero)
    uint32_t nsum           # 64-bit words of a summary: bit w for vector word w
    fp_rule* rules
    uint32_t* ids           # rule ids, ascending, and the rule index of each
    uint32_t* id_index
    fp_port ports[MAX_PORT + 1]
    uint32_t nused          # fields some filter constrains, most selective first
    uint8_t used[NFIELDS]
    uint64_t* vectors[NFIELDS]      # per field: nclasses x stride
    # per field: nclasses x sumstride, each class's summaries side by side (in separate arrays, the
    # key summaries cost a cache miss a field: +10 ns a new flow at 1,000 rules): its vector's (bit w
    # set when word w is not all zero), its key summary (tables.FieldTable.key_summaries), then one
    # pair summary per key pair slot (tables.FieldTable.pair_summaries; zero unless in that pair)
    uint64_t* summaries[NFIELDS]
    uint32_t sumstride              # (2 + npairs) x nsum
    uint32_t npairs                 # key pair slots (tables.ClassifierTables.pairs): their fields
    uint8_t pair_a[MAX_KEY_PAIRS]
    uint8_t pair_b[MAX_KEY_PAIRS]
    uint64_t* unkeyed               # nsum words: the words of filters that constrain no field
    fp_addr_table addr[NADDR_FIELDS]
    uint32_t* value_class[NFIELDS]  # value fields: class of every value, domain + absent


# --- reverse-flow state (reference.FlowKey / FlowEntry) -------------------------------
cdef struct fp_flow_key:
    uint8_t port
    uint8_t family
    uint8_t proto
    uint8_t pad
    uint16_t sport
    uint16_t dport
    uint8_t src[16]
    uint8_t dst[16]

cdef struct fp_flow:
    fp_flow_key key
    uint32_t rule_id
    uint32_t version
    uint8_t out_port
    uint8_t has_vlan
    uint8_t has_restore
    uint16_t vlan_tci
    uint8_t eth_dst[6]
    uint8_t eth_src[6]
    uint8_t restore_src[16]
    int32_t chain           # next entry in the hash bucket, -1 ends
    int32_t older           # LRU neighbours, -1 ends
    int32_t newer

cdef struct fp_flows:
    uint32_t capacity
    uint32_t count
    uint32_t mask           # buckets - 1
    int32_t* buckets
    fp_flow* entries
    int32_t free_head       # unused entries, linked through .chain
    int32_t oldest
    int32_t newest


# --- classification cache (the XDP engine's flow cache, docs/classifier.md) ---------------
cdef struct fp_cls_key:
    # Every packet value classify() reads; absent values are flags, so equal keys classify alike.
    uint8_t family
    uint8_t tun_family      # 0: not tunnelled
    uint8_t proto
    uint8_t present         # CLS_PORTS | CLS_VLAN | CLS_QFI
    uint16_t sport
    uint16_t dport
    uint16_t tun_sport
    uint16_t tun_dport
    uint16_t vlan           # the VID, not the whole TCI
    uint8_t dscp_tc         # DSCP (IPv4) or traffic class (IPv6)
    uint8_t qfi
    uint8_t src[16]
    uint8_t dst[16]
    uint8_t tun_src[16]
    uint8_t tun_dst[16]

cdef struct fp_cls_bucket:
    # CACHE_WAYS entries; what a lookup compares first shares one cache line.
    uint32_t hash[4]
    uint32_t epoch[4]       # valid while equal to fp_core.epoch (a swap starts a new one)
    int32_t rule[4]         # rule index, -1: no match
    uint8_t reverse[4]
    uint8_t victim          # the entry a miss replaces next (round robin)
    fp_cls_key key[4]


# --- one frame's outcome --------------------------------------------------------------
cdef struct fp_output:
    uint8_t port            # 0: the kernel stack
    uint8_t from_input      # 1: the input frame unchanged; 0: bytes in the output buffer
    uint32_t offset         # into the output buffer (from_input == 0)
    uint32_t length

cdef struct fp_result:
    uint8_t verdict
    uint8_t reason
    uint8_t reverse
    uint8_t noutputs
    uint32_t rule_id
    uint32_t first_output   # index into the batch's output array


# --- the engine state one I/O thread and process() share -------------------------------
cdef struct fp_core:
    pthread_mutex_t lock    # held for a batch, a process() call, a swap, a counter read
    fp_tables* tables       # NULL: no rule set yet
    fp_flows flows
    uint32_t nslots
    uint64_t reason_packets[FP_REASONS]
    uint64_t reason_bytes[FP_REASONS]
    uint64_t* slot_packets
    uint64_t* slot_bytes
    fp_cls_bucket* cache    # cache_mask + 1 buckets
    uint32_t cache_mask
    uint32_t epoch
    uint64_t cache_hits
    uint64_t cache_misses


# --- AF_PACKET I/O of the data-plane ports (Io owns it; docs/fastpath.md) ----------------
cdef struct fp_send:
    # One output of a batch, waiting for its sendmmsg().
    int fd
    uint8_t xsk             # fd is the AF_XDP socket of ``port``
    uint8_t port            # whose counters it goes to
    uint8_t stack           # passed to the stack (counted as stack_frames of ``port``)
    uint32_t length
    const uint8_t* data

cdef struct fp_rx_ring:
    # TPACKET_V3: blocks of variable-size frames, handed over a block at a time.
    int fd
    uint8_t* map
    size_t map_bytes
    uint32_t block_bytes
    uint32_t nblocks
    uint32_t cur

cdef struct fp_port_stats:
    uint64_t rx_frames
    uint64_t rx_bytes
    uint64_t rx_truncated       # captured shorter than the frame (GRO super-frames): not processed
    uint64_t rx_dropped         # the kernel found the receive ring full (PACKET_STATISTICS; AF_XDP's added on read)
    uint64_t rx_af_xdp          # of rx_frames, received through the AF_XDP socket
    uint64_t tx_frames          # redirected out of this port
    uint64_t tx_bytes
    uint64_t stack_frames       # handed to the kernel stack as if received on this port
    uint64_t stack_bytes
    uint64_t tx_dropped         # an output the kernel refused (sendmmsg error), or to a port not open

cdef struct fp_xsk_ring:
    # One AF_XDP ring shared with the kernel: we produce on TX and fill, the kernel on completion and RX.
    uint32_t* producer
    uint32_t* consumer
    void* entries               # struct xdp_desc (TX, RX) or uint64_t chunk addresses (completion, fill)
    uint32_t mask
    void* map
    size_t map_bytes

cdef struct fp_xsk:
    # An AF_XDP socket in copy mode on queue 0. Sending: frames are copied into UMEM chunks,
    # posted on the TX ring and handed to the driver by the kernel (no per-frame msghdr, no
    # header probe). Receiving (rx_chunks > 0, xsk.py's program redirects queue 0 to it): the
    # kernel copies frames into the chunks we gave it on the fill ring and posts them on RX.
    int fd                      # -1: not open (the port sends with tx_fd)
    uint8_t* umem               # XSK_CHUNKS send chunks, then rx_chunks receive chunks
    size_t umem_bytes
    fp_xsk_ring tx
    fp_xsk_ring cq
    fp_xsk_ring rx
    fp_xsk_ring fq
    uint32_t tx_prod            # our copy of the TX producer index
    uint32_t cq_cons            # our copy of the completion consumer index
    uint32_t rx_cons            # our copy of the RX consumer index
    uint32_t fq_prod            # our copy of the fill producer index
    uint32_t rx_chunks          # 0: send-only
    uint8_t tx_off              # a receiving socket's sends failed: the port sends with tx_fd until retry_ns
    uint64_t* free              # send chunk addresses not in flight (a stack)
    uint32_t nfree
    int error                   # errno that closed it (or, receiving, stopped its sends) or kept it from opening
    int rx_error                # errno that kept it from opening to receive (it opened send-only)
    int ifindex
    uint64_t retry_ns           # a send error: reopen (or resume sends) at this CLOCK_MONOTONIC time (0: never)

cdef struct fp_io_port:
    uint8_t active
    fp_rx_ring rx
    fp_xsk xsk                  # outputs redirected out of the port, when AF_XDP opened; and frames received
    int tx_fd                   # outputs redirected out of the port (qdisc bypassed)
    int stack_fd                # PASS: marked frames the kernel turns around into the port's ingress
    fp_port_stats stats
