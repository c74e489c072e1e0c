"""Scapy frame builders and the test topology's addresses, shared by tests and bench/.

Every frame gets explicit MAC addresses (scapy would otherwise ARP on the
host network) and addresses from 198.18.0.0/15 and 2001:db8::/32 only.
"""
from __future__ import annotations

from typing import Any, Optional

from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

# Ports of the test data plane (index = position in PORTS, from 1).
UPF_MAC = "02:00:00:00:05:01"  # the UPF's N6 side
N6_MAC = "02:00:00:00:06:01"  # the MEP's N6 port
DN_MAC = "02:00:00:00:0d:01"
DN_GW_MAC = "02:00:00:00:0d:02"
APP1_PORT_MAC = "02:00:00:00:a1:01"
APP1_MAC = "02:00:00:00:a1:02"
APP2_PORT_MAC = "02:00:00:00:a2:01"
APP2_MAC = "02:00:00:00:a2:02"
TUN_PEER_MAC = "02:00:00:00:a2:03"

N6, DN, APP1, APP2 = 1, 2, 3, 4

UE1, UE2 = "198.18.0.5", "198.18.0.6"
UE6 = "2001:db8:ee::5"
SERVER = "198.18.100.1"
SERVER6 = "2001:db8:100::1"
APP1_IP, APP1_IP6 = "198.19.1.10", "2001:db8:a1::10"
APP2_IP = "198.19.2.10"
TUN_PEER = "198.19.2.20"
TUN_PEER6 = "2001:db8:a2::20"
MEP_TUN = "198.19.2.1"
MEP_TUN6 = "2001:db8:a2::1"
GNB, UPF_N3 = "198.18.200.1", "198.18.200.2"

PORTS: list[dict[str, Any]] = [
    {"name": "n6", "ifname": "n6", "role": "n6", "mac": N6_MAC},
    {"name": "dn", "ifname": "dn", "role": "dn", "mac": DN_MAC},
    {
        "name": "app1",
        "ifname": "app1",
        "role": "app",
        "mac": APP1_PORT_MAC,
        "neighbours": {APP1_IP: APP1_MAC, APP1_IP6: APP1_MAC},
    },
    {
        "name": "app2",
        "ifname": "app2",
        "role": "app",
        "mac": APP2_PORT_MAC,
        "mtu": 1400,
        "neighbours": {APP2_IP: APP2_MAC, TUN_PEER: TUN_PEER_MAC, TUN_PEER6: TUN_PEER_MAC},
    },
]


def eth(src: str = UPF_MAC, dst: str = N6_MAC, vlan: Optional[int] = None) -> Packet:
    frame = Ether(src=src, dst=dst)
    return frame / Dot1Q(vlan=vlan) if vlan is not None else frame


def ip(src: str = UE1, dst: str = SERVER, **kw: Any) -> Packet:
    return IPv6(src=src, dst=dst, **kw) if ":" in src else IP(src=src, dst=dst, **kw)


def tcp(src: str = UE1, dst: str = SERVER, sport: int = 40000, dport: int = 80, payload: bytes = b"hello",
        vlan: Optional[int] = None, l2: Optional[Packet] = None, **ipkw: Any) -> Packet:
    return (l2 or eth(vlan=vlan)) / ip(src, dst, **ipkw) / TCP(sport=sport, dport=dport, flags="S") / Raw(payload)


def udp(src: str = UE1, dst: str = SERVER, sport: int = 40000, dport: int = 53, payload: bytes = b"q",
        vlan: Optional[int] = None, l2: Optional[Packet] = None, **ipkw: Any) -> Packet:
    return (l2 or eth(vlan=vlan)) / ip(src, dst, **ipkw) / UDP(sport=sport, dport=dport) / Raw(payload)


def sctp(src: str = UE1, dst: str = SERVER, sport: int = 3868, dport: int = 3868) -> Packet:
    return eth() / ip(src, dst) / SCTP(sport=sport, dport=dport)


def icmp(src: str = UE1, dst: str = SERVER) -> Packet:
    return eth() / ip(src, dst) / ICMP(id=7, seq=1) / Raw(b"ping")


def gtpu(inner: Packet, teid: int = 0x1001, qfi: Optional[int] = 9, outer_src: str = GNB, outer_dst: str = UPF_N3,
         sport: int = 2152, vlan: Optional[int] = None) -> Packet:
    """``inner`` (an IP packet, no Ethernet) inside GTP-U, with a UL PDU session container when ``qfi`` is set."""
    header = GTP_U_Header(teid=teid, next_ex=0x85 if qfi is not None else 0)
    if qfi is not None:
        header = header / GTPPDUSessionContainer(type=1, QFI=qfi)
    return eth(vlan=vlan) / ip(outer_src, outer_dst) / UDP(sport=sport, dport=2152) / header / inner


def user(packet: Packet) -> Packet:
    """The IP layer of a frame built above (drops Ethernet and VLAN)."""
    layer = packet[Ether].payload
    return layer.payload if isinstance(layer, Dot1Q) else layer
