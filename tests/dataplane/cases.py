"""The case table: one row per behaviour, run through every engine.

A case is a rule set, an input frame built with scapy (raw bytes only for
frames scapy cannot express), the port it arrives on, and the expected
verdict, reason, rule and output frames. Expected frames are built with
scapy independently of the engines (scapy computes every checksum and
length from scratch), so a case checks the engines' byte-level output
against a second implementation. ``setup`` frames run first (flow state).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from tests.packets import (
    APP1,
    APP1_IP,
    APP1_IP6,
    APP1_MAC,
    APP1_PORT_MAC,
    APP2,
    APP2_MAC,
    APP2_PORT_MAC,
    DN,
    GNB,
    MEP_TUN,
    MEP_TUN6,
    N6,
    N6_MAC,
    SERVER,
    SERVER6,
    TUN_PEER,
    TUN_PEER6,
    TUN_PEER_MAC,
    UE1,
    UE2,
    UE6,
    UPF_MAC,
    UPF_N3,
    eth,
    gtpu,
    icmp,
    sctp,
    tcp,
    udp,
    user,
)
from tests.rulesets import rule

Frame = Union[Packet, bytes]

TO_APP1_IP = {"interfaceType": "IP", "dstIpAddress": APP1_IP}
TO_APP1_IP6 = {"interfaceType": "IP", "dstIpAddress": APP1_IP6}
TO_APP1_MAC = {"interfaceType": "MAC", "dstMacAddress": APP1_MAC.replace(":", "-")}
TO_APP2_MAC = {"interfaceType": "MAC", "dstMacAddress": APP2_MAC}
GTP_TUNNEL = {"interfaceType": "TUNNEL",
              "tunnelInfo": {"tunnelType": "GTP_U", "tunnelSrcAddress": MEP_TUN, "tunnelDstAddress": TUN_PEER}}
GTP_TUNNEL6 = {"interfaceType": "TUNNEL",
               "tunnelInfo": {"tunnelType": "GTP_U", "tunnelSrcAddress": MEP_TUN6, "tunnelDstAddress": TUN_PEER6}}
GRE_TUNNEL = {"interfaceType": "TUNNEL",
              "tunnelInfo": {"tunnelType": "GRE", "tunnelSrcAddress": MEP_TUN, "tunnelDstAddress": TUN_PEER}}

HTTP = {"dstAddress": [SERVER], "dstPort": ["80"], "protocol": ["TCP"]}


@dataclass(frozen=True)
class Case:
    id: str
    rules: list[dict[str, Any]]
    packet: Frame
    verdict: str
    reason: str
    rule: Optional[str] = None  # trafficRuleId of the rule reported
    outputs: list[tuple[int, Frame]] = field(default_factory=list)
    ingress: int = N6
    default_action: str = "PASSTHROUGH"
    setup: list[tuple[Frame, int]] = field(default_factory=list)
    reverse: bool = False


def frame_bytes(f: Frame) -> bytes:
    return f if isinstance(f, bytes) else bytes(f)


def passed(f: Frame) -> list[tuple[int, Frame]]:
    return [(0, f)]


def rewritten(packet: Packet, src_mac: str, dst_mac: str, *, new_dst: Optional[str] = None,
              new_src: Optional[str] = None, vlan: Optional[int] = None) -> Packet:
    """The user packet of ``packet`` behind a new Ethernet header, addresses replaced, checksums recomputed."""
    inner = user(packet).copy()
    if new_dst is not None:
        inner.dst = new_dst
    if new_src is not None:
        inner.src = new_src
    if inner.haslayer(IP):
        del inner[IP].chksum
    if inner.haslayer(TCP):
        del inner[TCP].chksum
    if inner.haslayer(UDP) and inner[UDP].chksum != 0:
        del inner[UDP].chksum
    l2 = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        l2 = l2 / Dot1Q(vlan=vlan)
    return Ether(bytes(l2 / inner))


def inner_of(gtp_frame: Packet) -> Packet:
    """The user IP packet inside a GTP-U frame built by tests.packets.gtpu."""
    return gtp_frame[GTP_U_Header].payload.payload if gtp_frame.haslayer(GTPPDUSessionContainer) \
        else gtp_frame[GTP_U_Header].payload


def gtp_encapsulated(inner: Packet, teid: int, qfi: Optional[int], *, outer_src: str = MEP_TUN,
                     outer_dst: str = TUN_PEER, tos: int = 0) -> Packet:
    header = GTP_U_Header(teid=teid, gtp_type=255, next_ex=0x85 if qfi is not None else 0)
    if qfi is not None:
        header = header / GTPPDUSessionContainer(type=1, QFI=qfi)
    if ":" in outer_src:
        outer = IPv6(src=outer_src, dst=outer_dst, tc=tos, hlim=64) / UDP(sport=2152, dport=2152)
    else:
        outer = IP(src=outer_src, dst=outer_dst, tos=tos, ttl=64, id=0, flags="DF") / UDP(sport=2152, dport=2152, chksum=0)
    return Ether(bytes(Ether(src=APP2_PORT_MAC, dst=TUN_PEER_MAC) / outer / header / inner))


def gre_encapsulated(inner: Packet) -> Packet:
    outer = IP(src=MEP_TUN, dst=TUN_PEER, ttl=64, id=0, flags="DF", proto=47)
    return Ether(bytes(Ether(src=APP2_PORT_MAC, dst=TUN_PEER_MAC) / outer / GRE(proto=0x0800) / inner))


# --- frames used by several cases ---------------------------------------------------
HTTP_SYN = tcp(UE1, SERVER, 40000, 80)
HTTP_REPLY_FROM_APP = tcp(APP1_IP, UE1, 80, 40000, l2=eth(APP1_MAC, APP1_PORT_MAC))
HTTP_REPLY_FROM_DN = tcp(SERVER, UE1, 80, 40000, l2=eth("02:00:00:00:0d:02", "02:00:00:00:0d:01"))
BIG_UDP = udp(UE1, SERVER, 40000, 9999, payload=b"x" * 1400)
GTP_HTTP = gtpu(user(tcp(UE1, SERVER, 40000, 80)), teid=0x1001, qfi=9)
GTP_HTTP_NOQFI = gtpu(user(tcp(UE1, SERVER, 40000, 80)), teid=0x2002, qfi=None)


def _ipv4_raw(ihl: int = 5, total: Optional[int] = None, cut: Optional[int] = None) -> bytes:
    pkt = bytearray(bytes(udp()))
    pkt[14] = 0x40 | ihl
    if total is not None:
        pkt[16:18] = total.to_bytes(2, "big")
    return bytes(pkt[:cut] if cut else pkt)


def _ipv6_chain(n: int) -> Packet:
    layers = IPv6(src=UE6, dst=SERVER6)
    for _ in range(n):
        layers = layers / IPv6ExtHdrDestOpt()
    return eth() / layers / UDP(sport=1, dport=2) / Raw(b"z")


def _gtp_bad_length() -> bytes:
    pkt = bytearray(bytes(GTP_HTTP_NOQFI))
    g = 14 + 20 + 8
    pkt[g + 2 : g + 4] = (0xFFF0).to_bytes(2, "big")
    return bytes(pkt)


def _gtp_not_ip() -> Packet:
    return eth() / IP(src=GNB, dst=UPF_N3) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=9, gtp_type=255) / Raw(b"\x00" * 20)


CASES: list[Case] = [
    # --- parse outcomes ------------------------------------------------------------------
    Case("arp-passes", [rule("d", "DROP")], eth() / ARP(psrc=UE1, pdst=SERVER), "PASS", "PASS_NOT_IP",
         outputs=passed(eth() / ARP(psrc=UE1, pdst=SERVER))),
    Case("truncated-ethernet", [], b"\x02\x00\x00\x00\x06\x01\x02\x00", "DROP", "DROP_TRUNCATED_ETH"),
    Case("truncated-vlan-tag", [], bytes(eth())[:12] + b"\x81\x00\x00", "DROP", "DROP_TRUNCATED_ETH"),
    Case("ipv4-header-cut", [], _ipv4_raw(cut=14 + 12), "DROP", "DROP_TRUNCATED_IPV4"),
    Case("ipv4-total-length-beyond-frame", [], _ipv4_raw(total=1500), "DROP", "DROP_TRUNCATED_IPV4"),
    Case("ipv4-ihl-below-5", [], _ipv4_raw(ihl=4), "DROP", "DROP_MALFORMED_IPV4"),
    Case("ipv4-total-below-header", [], _ipv4_raw(total=12), "DROP", "DROP_MALFORMED_IPV4"),
    Case("ipv6-version-wrong", [], Ether(src=UPF_MAC, dst=N6_MAC, type=0x86DD) / Raw(b"\x40" + bytes(39)),
         "DROP", "DROP_MALFORMED_IPV6"),
    Case("ipv6-header-cut", [], bytes(udp(UE6, SERVER6))[:14 + 30], "DROP", "DROP_TRUNCATED_IPV6"),
    Case("ipv6-too-many-ext-headers", [], _ipv6_chain(7), "DROP", "DROP_IPV6_EXT_CHAIN"),
    Case("ipv6-ext-headers-within-limit", [rule("u", "DROP", filters=[{"protocol": ["UDP"], "dstPort": ["2"]}])],
         _ipv6_chain(6), "DROP", "DROP_RULE", "u"),
    Case("tcp-header-cut", [], bytes(tcp())[: 14 + 20 + 10], "DROP", "DROP_TRUNCATED_IPV4"),
    Case("tcp-header-beyond-ip-payload", [],
         bytes(eth() / IP(src=UE1, dst=SERVER, proto=6) / Raw(b"\x00" * 10)), "DROP", "DROP_TRUNCATED_L4"),
    Case("gtpu-length-beyond-packet", [], _gtp_bad_length(), "DROP", "DROP_MALFORMED_GTPU"),
    Case("gtpu-payload-not-ip", [rule("d", "DROP")], _gtp_not_ip(), "PASS", "PASS_GTPU_NOT_IP",
         outputs=passed(_gtp_not_ip())),
    # --- classification ----------------------------------------------------------------------
    Case("no-rules-passes", [], HTTP_SYN, "PASS", "PASS_NO_MATCH", outputs=passed(HTTP_SYN)),
    Case("default-drop", [rule("other", "PASSTHROUGH", filters=[{"protocol": ["UDP"]}])], HTTP_SYN,
         "DROP", "DROP_NO_MATCH", default_action="DROP"),
    Case("drop-rule", [rule("d", "DROP", filters=[HTTP])], HTTP_SYN, "DROP", "DROP_RULE", "d"),
    Case("passthrough-rule", [rule("p", "PASSTHROUGH", filters=[HTTP])], HTTP_SYN, "PASS", "PASS_RULE", "p",
         outputs=passed(HTTP_SYN)),
    Case("priority-0-wins", [rule("low", "PASSTHROUGH", 5, [HTTP]), rule("high", "DROP", 0, [HTTP])], HTTP_SYN,
         "DROP", "DROP_RULE", "high"),
    Case("tie-broken-by-install-order", [rule("first", "DROP", 3, [HTTP]), rule("second", "PASSTHROUGH", 3, [HTTP])],
         HTTP_SYN, "DROP", "DROP_RULE", "first"),
    Case("any-filter-matches", [rule("d", "DROP", filters=[{"protocol": ["UDP"]}, {"dstPort": ["80"]}])], HTTP_SYN,
         "DROP", "DROP_RULE", "d"),
    Case("address-range", [rule("d", "DROP", filters=[{"srcAddress": ["198.18.0.1-198.18.0.9"]}])], HTTP_SYN,
         "DROP", "DROP_RULE", "d"),
    Case("port-range-miss", [rule("d", "DROP", filters=[{"dstPort": ["81-90"]}])], HTTP_SYN,
         "PASS", "PASS_NO_MATCH", outputs=passed(HTTP_SYN)),
    Case("protocol-number", [rule("d", "DROP", filters=[{"protocol": ["132"]}])], sctp(), "DROP", "DROP_RULE", "d"),
    Case("icmp-never-matches-ports", [rule("d", "DROP", filters=[{"dstPort": ["0-65535"]}])], icmp(),
         "PASS", "PASS_NO_MATCH", outputs=passed(icmp())),
    Case("non-first-fragment-has-no-ports", [rule("d", "DROP", filters=[{"dstPort": ["0-65535"]}])],
         eth() / IP(src=UE1, dst=SERVER, proto=17, frag=100) / Raw(b"y" * 16), "PASS", "PASS_NO_MATCH",
         outputs=passed(eth() / IP(src=UE1, dst=SERVER, proto=17, frag=100) / Raw(b"y" * 16))),
    Case("ipv6-fragment-first-has-ports", [rule("d", "DROP", filters=[{"dstPort": ["53"]}])],
         eth() / IPv6(src=UE6, dst=SERVER6) / IPv6ExtHdrFragment(m=1, offset=0) / UDP(sport=5, dport=53) / Raw(b"q"),
         "DROP", "DROP_RULE", "d"),
    Case("vlan-token", [rule("d", "DROP", filters=[{"token": ["100"]}])], tcp(vlan=100), "DROP", "DROP_RULE", "d"),
    Case("vlan-token-untagged-misses", [rule("d", "DROP", filters=[{"token": ["100"]}])], HTTP_SYN,
         "PASS", "PASS_NO_MATCH", outputs=passed(HTTP_SYN)),
    Case("dscp", [rule("d", "DROP", filters=[{"dSCP": 46}])], udp(tos=46 << 2), "DROP", "DROP_RULE", "d"),
    Case("dscp-never-matches-ipv6", [rule("d", "DROP", filters=[{"dSCP": 0}])], udp(UE6, SERVER6),
         "PASS", "PASS_NO_MATCH", outputs=passed(udp(UE6, SERVER6))),
    Case("traffic-class", [rule("d", "DROP", filters=[{"tC": 0xB8}])], udp(UE6, SERVER6, tc=0xB8),
         "DROP", "DROP_RULE", "d"),
    Case("qfi-of-pdu-session-container", [rule("d", "DROP", filters=[{"qCI": 9}])], GTP_HTTP, "DROP", "DROP_RULE", "d"),
    Case("qfi-absent-misses", [rule("d", "DROP", filters=[{"qCI": 9}])], GTP_HTTP_NOQFI,
         "PASS", "PASS_NO_MATCH", outputs=passed(GTP_HTTP_NOQFI)),
    Case("inner-addresses-match-tunnelled", [rule("d", "DROP", filters=[HTTP])], GTP_HTTP, "DROP", "DROP_RULE", "d"),
    Case("tunnel-source", [rule("d", "DROP", filters=[{"srcTunnelAddress": [GNB], "dstTunnelPort": ["2152"]}])],
         GTP_HTTP, "DROP", "DROP_RULE", "d"),
    Case("tunnel-filter-misses-untunnelled", [rule("d", "DROP", filters=[{"srcTunnelAddress": ["0.0.0.0/0"]}])],
         HTTP_SYN, "PASS", "PASS_NO_MATCH", outputs=passed(HTTP_SYN)),
    Case("flow-drop-matches-reverse", [rule("d", "DROP", filters=[HTTP], flow=True)], HTTP_REPLY_FROM_DN,
         "DROP", "DROP_RULE", "d", ingress=DN, reverse=True),
    Case("packet-rule-ignores-reverse", [rule("d", "DROP", filters=[HTTP])], HTTP_REPLY_FROM_DN,
         "PASS", "PASS_NO_MATCH", ingress=DN, outputs=passed(HTTP_REPLY_FROM_DN)),
    Case("from-app-port-not-classified", [rule("d", "DROP")], HTTP_REPLY_FROM_APP, "PASS", "PASS_FROM_APP",
         ingress=APP1, outputs=passed(HTTP_REPLY_FROM_APP)),
    # --- actions ---------------------------------------------------------------------------------
    Case("forward-decap-ip-rewrite", [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], dst=TO_APP1_IP)],
         HTTP_SYN, "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP1, rewritten(HTTP_SYN, APP1_PORT_MAC, APP1_MAC, new_dst=APP1_IP))]),
    Case("forward-decap-ip-rewrite-udp-v6",
         [rule("f", "FORWARD_DECAPSULATED", filters=[{"dstAddress": [SERVER6]}], dst=TO_APP1_IP6)],
         udp(UE6, SERVER6, 5000, 5001), "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP1, rewritten(udp(UE6, SERVER6, 5000, 5001), APP1_PORT_MAC, APP1_MAC, new_dst=APP1_IP6))]),
    Case("forward-decap-udp-zero-checksum-kept",
         [rule("f", "FORWARD_DECAPSULATED", filters=[{"protocol": ["UDP"]}], dst=TO_APP1_IP)],
         eth() / IP(src=UE1, dst=SERVER) / UDP(sport=1, dport=2, chksum=0) / Raw(b"n"), "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP1, Ether(src=APP1_PORT_MAC, dst=APP1_MAC) / IP(src=UE1, dst=APP1_IP) / UDP(sport=1, dport=2, chksum=0)
                   / Raw(b"n"))]),
    Case("forward-decap-mac-strips-vlan", [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], dst=TO_APP1_MAC)],
         tcp(vlan=7), "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP1, rewritten(tcp(vlan=7), APP1_PORT_MAC, APP1_MAC))]),
    Case("forward-decap-strips-gtpu", [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], dst=TO_APP1_IP)],
         GTP_HTTP, "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP1, rewritten(Ether() / inner_of(GTP_HTTP),
                                   APP1_PORT_MAC, APP1_MAC, new_dst=APP1_IP))]),
    Case("forward-decap-family-mismatch", [rule("f", "FORWARD_DECAPSULATED", dst=TO_APP1_IP)], udp(UE6, SERVER6),
         "DROP", "DROP_REWRITE_FAMILY", "f"),
    Case("forward-over-mtu", [rule("f", "FORWARD_DECAPSULATED", dst=TO_APP2_MAC)], BIG_UDP,
         "DROP", "DROP_MTU", "f"),
    Case("forward-encap-gtpu", [rule("f", "FORWARD_ENCAPSULATED", filters=[HTTP], dst=GTP_TUNNEL)], HTTP_SYN,
         "REDIRECT", "REDIRECT_RULE", "f", outputs=[(APP2, gtp_encapsulated(user(HTTP_SYN), teid=1, qfi=None))]),
    Case("forward-encap-keeps-teid-and-qfi", [rule("f", "FORWARD_ENCAPSULATED", filters=[HTTP], dst=GTP_TUNNEL)],
         GTP_HTTP, "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP2, gtp_encapsulated(inner_of(GTP_HTTP), teid=0x1001, qfi=9))]),
    Case("forward-encap-gtpu-ipv6-outer", [rule("f", "FORWARD_ENCAPSULATED", filters=[HTTP], dst=GTP_TUNNEL6)],
         tcp(tos=0x2E << 2), "REDIRECT", "REDIRECT_RULE", "f",
         outputs=[(APP2, gtp_encapsulated(user(tcp(tos=0x2E << 2)), teid=1, qfi=None, outer_src=MEP_TUN6,
                                          outer_dst=TUN_PEER6, tos=0x2E << 2))]),
    Case("forward-encap-gre", [rule("f", "FORWARD_ENCAPSULATED", filters=[HTTP], dst=GRE_TUNNEL)], HTTP_SYN,
         "REDIRECT", "REDIRECT_RULE", "f", outputs=[(APP2, gre_encapsulated(user(HTTP_SYN)))]),
    Case("duplicate-decap-two-copies",
         [rule("m", "DUPLICATE_DECAPSULATED", filters=[HTTP], dst=[TO_APP1_MAC, TO_APP2_MAC])], HTTP_SYN,
         "DUPLICATE", "DUPLICATE_RULE", "m",
         outputs=[(0, HTTP_SYN), (APP1, rewritten(HTTP_SYN, APP1_PORT_MAC, APP1_MAC)),
                  (APP2, rewritten(HTTP_SYN, APP2_PORT_MAC, APP2_MAC))]),
    Case("duplicate-encap", [rule("m", "DUPLICATE_ENCAPSULATED", filters=[HTTP], dst=GTP_TUNNEL)], GTP_HTTP,
         "DUPLICATE", "DUPLICATE_RULE", "m",
         outputs=[(0, GTP_HTTP), (APP2, gtp_encapsulated(inner_of(GTP_HTTP), 0x1001, 9))]),
    Case("duplicate-copy-over-mtu-omitted", [rule("m", "DUPLICATE_DECAPSULATED", dst=TO_APP2_MAC)], BIG_UDP,
         "DUPLICATE", "DUPLICATE_RULE", "m", outputs=[(0, BIG_UDP)]),
    # --- FLOW replies ---------------------------------------------------------------------------
    Case("flow-reply-rewrite-undone",
         [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], flow=True, dst=TO_APP1_IP)],
         HTTP_REPLY_FROM_APP, "REDIRECT", "REDIRECT_FLOW_REPLY", "f", ingress=APP1, reverse=True,
         setup=[(HTTP_SYN, N6)],
         outputs=[(N6, rewritten(HTTP_REPLY_FROM_APP, N6_MAC, UPF_MAC, new_src=SERVER))]),
    Case("flow-reply-restores-vlan",
         [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], flow=True, dst=TO_APP1_IP)],
         HTTP_REPLY_FROM_APP, "REDIRECT", "REDIRECT_FLOW_REPLY", "f", ingress=APP1, reverse=True,
         setup=[(tcp(vlan=42), N6)],
         outputs=[(N6, rewritten(HTTP_REPLY_FROM_APP, N6_MAC, UPF_MAC, new_src=SERVER, vlan=42))]),
    Case("flow-reply-without-state-passes",
         [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], flow=True, dst=TO_APP1_IP)],
         HTTP_REPLY_FROM_DN, "PASS", "PASS_FLOW_REVERSE", "f", ingress=DN, reverse=True,
         outputs=passed(HTTP_REPLY_FROM_DN)),
    Case("flow-state-needs-same-tuple",
         [rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], flow=True, dst=TO_APP1_IP)],
         tcp(APP1_IP, UE2, 80, 40000, l2=eth(APP1_MAC, APP1_PORT_MAC)), "PASS", "PASS_FROM_APP", ingress=APP1,
         setup=[(HTTP_SYN, N6)], outputs=passed(tcp(APP1_IP, UE2, 80, 40000, l2=eth(APP1_MAC, APP1_PORT_MAC)))),
]


# Pairs of frames that differ in one classification input, and a filter that matches the first alone: every
# engine's classification cache must tell each pair apart (its key holds every input).
GTP_UDP = user(udp(UE1, SERVER, 40000, 53))
KEY_CASES = [
    ("src", udp(UE1, SERVER), udp(UE2, SERVER), {"srcAddress": [f"{UE1}/32"]}),
    ("dst", udp(UE1, SERVER), udp(UE1, "198.18.100.2"), {"dstAddress": [f"{SERVER}/32"]}),
    ("proto", tcp(sport=40000, dport=53), udp(sport=40000, dport=53), {"protocol": ["TCP"], "dstPort": ["53"]}),
    ("sport", udp(sport=1000), udp(sport=1001), {"srcPort": ["1000"]}),
    ("dport", udp(dport=53), udp(dport=54), {"dstPort": ["53"]}),
    ("family", udp(UE6, SERVER6), udp(UE1, SERVER), {"dstAddress": [f"{SERVER6}/128"]}),
    ("dscp", udp(tos=46 << 2), udp(tos=10 << 2), {"dSCP": 46}),
    ("traffic class", udp(UE6, SERVER6, tc=0xB8), udp(UE6, SERVER6, tc=0x28), {"tC": 0xB8}),
    ("vlan", udp(vlan=100), udp(vlan=101), {"token": ["100"]}),
    ("vlan present", udp(vlan=0), udp(), {"token": ["0"]}),
    ("qfi", gtpu(GTP_UDP, qfi=9), gtpu(GTP_UDP, qfi=10), {"qCI": 9}),
    ("qfi present", gtpu(GTP_UDP, qfi=0), gtpu(GTP_UDP, qfi=None), {"qCI": 0}),
    ("tunnel", gtpu(GTP_UDP), udp(UE1, SERVER, 40000, 53), {"srcTunnelAddress": ["0.0.0.0/0"]}),
    ("tunnel src", gtpu(GTP_UDP), gtpu(GTP_UDP, outer_src="198.18.200.9"), {"srcTunnelAddress": [GNB]}),
    ("tunnel dst", gtpu(GTP_UDP), gtpu(GTP_UDP, outer_dst="198.18.200.9"), {"tgtTunnelAddress": [UPF_N3]}),
    ("tunnel sport", gtpu(GTP_UDP), gtpu(GTP_UDP, sport=2153), {"srcTunnelPort": ["2152"]}),
]
