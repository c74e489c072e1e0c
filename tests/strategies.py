"""Hypothesis strategies for rules and frames, shared by the property and differential tests.

Addresses are drawn from small pools inside 198.18.0.0/15 and 2001:db8::/32
so that random filters and random packets hit each other often; frames are
built with scapy with explicit MACs.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Optional

from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

from tests.dataplane.cases import GRE_TUNNEL, GTP_TUNNEL, GTP_TUNNEL6, TO_APP1_IP, TO_APP1_IP6, TO_APP1_MAC, TO_APP2_MAC
from tests.packets import eth, gtpu
from tests.rulesets import rule

V4_NET = ipaddress.ip_network("198.18.0.0/26")
V6_NET = ipaddress.ip_network("2001:db8::/122")
TUN_V4 = ["198.18.200.1", "198.18.200.2", "198.18.200.3"]
PORTS = [53, 80, 443, 2152, 5000, 40000]


def v4() -> st.SearchStrategy[str]:
    return st.integers(0, V4_NET.num_addresses - 1).map(lambda i: str(V4_NET[i]))


def v6() -> st.SearchStrategy[str]:
    return st.integers(0, V6_NET.num_addresses - 1).map(lambda i: str(V6_NET[i]))


@st.composite
def address_spec(draw: st.DrawFn, family: Optional[int] = None) -> str:
    fam = family or draw(st.sampled_from([4, 4, 6]))
    net = V4_NET if fam == 4 else V6_NET
    kind = draw(st.sampled_from(["single", "prefix", "range"]))
    a = draw(st.integers(0, net.num_addresses - 1))
    if kind == "single":
        return str(net[a])
    if kind == "prefix":
        plen = draw(st.integers(net.prefixlen, net.max_prefixlen))
        return str(ipaddress.ip_network(f"{net[a]}/{plen}", strict=False))
    b = draw(st.integers(a, net.num_addresses - 1))
    return f"{net[a]}-{net[b]}"


@st.composite
def port_spec(draw: st.DrawFn) -> str:
    lo = draw(st.sampled_from(PORTS) | st.integers(0, 65535))
    if draw(st.booleans()):
        return str(lo)
    return f"{lo}-{draw(st.integers(lo, min(65535, lo + 2000)))}"


@st.composite
def traffic_filter(draw: st.DrawFn) -> dict[str, Any]:
    f: dict[str, Any] = {}
    opt = st.booleans()
    if draw(opt):
        f["srcAddress"] = draw(st.lists(address_spec(), min_size=1, max_size=3))
    if draw(opt):
        f["dstAddress"] = draw(st.lists(address_spec(), min_size=1, max_size=3))
    if draw(opt):
        f["srcPort"] = draw(st.lists(port_spec(), min_size=1, max_size=2))
    if draw(opt):
        f["dstPort"] = draw(st.lists(port_spec(), min_size=1, max_size=2))
    if draw(opt):
        f["protocol"] = draw(st.lists(st.sampled_from(["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "ANY", "17", "6"]),
                                      min_size=1, max_size=2))
    if draw(st.integers(0, 7)) == 0:
        f["token"] = [str(draw(st.sampled_from([0, 7, 100])))]
    if draw(st.integers(0, 7)) == 0:
        f["srcTunnelAddress"] = [draw(st.sampled_from(TUN_V4 + ["198.18.200.0/30"]))]
    if draw(st.integers(0, 9)) == 0:
        f["tgtTunnelAddress"] = [draw(st.sampled_from(TUN_V4))]
    if draw(st.integers(0, 9)) == 0:
        f["dstTunnelPort"] = [draw(st.sampled_from(["2152", "1-100"]))]
    if draw(st.integers(0, 7)) == 0:
        f["qCI"] = draw(st.sampled_from([1, 9, 63]))
    if draw(st.integers(0, 7)) == 0:
        f["dSCP"] = draw(st.sampled_from([0, 10, 46]))
    if draw(st.integers(0, 9)) == 0:
        f["tC"] = draw(st.sampled_from([0, 0xB8]))
    return f


DESTINATIONS = {
    "DROP": [None],
    "PASSTHROUGH": [None],
    "FORWARD_DECAPSULATED": [TO_APP1_IP, TO_APP1_IP6, TO_APP1_MAC, TO_APP2_MAC],
    "FORWARD_ENCAPSULATED": [GTP_TUNNEL, GTP_TUNNEL6, GRE_TUNNEL],
    "DUPLICATE_DECAPSULATED": [TO_APP1_MAC, [TO_APP1_IP, TO_APP2_MAC]],
    "DUPLICATE_ENCAPSULATED": [GTP_TUNNEL, [GRE_TUNNEL, GTP_TUNNEL6]],
}


@st.composite
def traffic_rule(draw: st.DrawFn, index: int) -> dict[str, Any]:
    action = draw(st.sampled_from(sorted(DESTINATIONS)))
    return rule(
        f"r{index}",
        action,
        priority=draw(st.integers(0, 8)),
        filters=draw(st.lists(traffic_filter(), min_size=1, max_size=3)),
        flow=draw(st.booleans()),
        dst=draw(st.sampled_from(DESTINATIONS[action])),
        # INACTIVE rules are stored and compiled, not enforced: engines that keep them (XDP) must ignore them.
        state=draw(st.sampled_from(["ACTIVE", "ACTIVE", "ACTIVE", "INACTIVE"])),
    )


@st.composite
def rule_list(draw: st.DrawFn, max_rules: int = 12) -> list[dict[str, Any]]:
    n = draw(st.integers(0, max_rules))
    return [draw(traffic_rule(i)) for i in range(n)]


@st.composite
def user_packet(draw: st.DrawFn) -> Packet:
    """An IP packet (no Ethernet) of a random family, protocol and shape."""
    fam = draw(st.sampled_from([4, 4, 6]))
    addr = v4() if fam == 4 else v6()
    src, dst = draw(addr), draw(addr)
    proto = draw(st.sampled_from(["tcp", "udp", "udp0", "icmp", "sctp", "frag", "other"]))
    if fam == 4:
        l3: Packet = IP(src=src, dst=dst, tos=draw(st.sampled_from([0, 10 << 2, 46 << 2, 1])))
    else:
        l3 = IPv6(src=src, dst=dst, tc=draw(st.sampled_from([0, 0xB8, 3])))
    sport, dport = draw(st.sampled_from(PORTS) | st.integers(0, 65535)), draw(st.sampled_from(PORTS))
    payload = Raw(draw(st.binary(min_size=0, max_size=64)))
    if proto == "tcp":
        return l3 / TCP(sport=sport, dport=dport) / payload
    if proto in ("udp", "udp0"):
        return l3 / UDP(sport=sport, dport=dport, chksum=0 if proto == "udp0" and fam == 4 else None) / payload
    if proto == "icmp":
        return l3 / (ICMP() if fam == 4 else ICMPv6EchoRequest()) / payload
    if proto == "sctp":
        return l3 / SCTP(sport=sport, dport=dport)  # no chunks: scapy would treat random bytes as padding
    if proto == "frag":
        if fam == 4:
            udp_header = bytes(UDP(sport=sport, dport=dport, len=16, chksum=0))
            return IP(src=src, dst=dst, proto=17, frag=draw(st.integers(0, 3))) / Raw(udp_header + bytes(8))
        return l3 / IPv6ExtHdrFragment(offset=draw(st.integers(0, 3)), m=1) / UDP(sport=sport, dport=dport) / payload
    return (IP(src=src, dst=dst, proto=99) if fam == 4 else IPv6(src=src, dst=dst, nh=99)) / payload


@st.composite
def frame(draw: st.DrawFn) -> bytes:
    """A valid frame: plain or GTP-U tunnelled, optionally VLAN-tagged."""
    inner = draw(user_packet())
    vlan = draw(st.sampled_from([None, None, 0, 7, 100]))
    if draw(st.integers(0, 3)) == 0:
        return bytes(gtpu(inner, teid=draw(st.integers(0, 2**32 - 1)), qfi=draw(st.sampled_from([None, 1, 9, 63])),
                          outer_src=draw(st.sampled_from(TUN_V4)), outer_dst=draw(st.sampled_from(TUN_V4)),
                          vlan=vlan))
    return bytes(eth(vlan=vlan) / inner)


@st.composite
def mangled_frame(draw: st.DrawFn) -> bytes:
    """A valid frame truncated, extended or with bytes overwritten, or plain random bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "random", "extend"]))
    if kind == "random":
        return draw(st.binary(max_size=128))
    data = bytearray(draw(frame()))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=16))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


any_frame = st.one_of(frame(), mangled_frame())
