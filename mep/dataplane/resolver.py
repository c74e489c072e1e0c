"""Resolve destinations from the live system: ports' MAC and MTU, neighbour tables.

``netlink_resolver(config)`` reads every configured port's interface (MAC
and MTU unless pinned in the configuration) and its neighbour entries, adds
the configured static neighbours, and returns a StaticResolver snapshot for
one compilation. Call it again for the next compilation to see changes.
"""
from __future__ import annotations

from typing import Optional

from ..config import DataplaneConfig
from .compiler import StaticResolver, ip_of, mac_bytes
from .links import in_netns, links_and_neighbours
from .ruleset import IpAddr, Port

__all__ = ["netlink_resolver"]


def netlink_resolver(config: DataplaneConfig, netns: Optional[str] = None) -> StaticResolver:
    ports: list[Port] = []
    table: dict[IpAddr, tuple[int, bytes]] = {}
    with in_netns(netns):
        live_links, neighbour_tables = links_and_neighbours([pc.ifname for pc in config.ports])
    for index, (pc, live) in enumerate(zip(config.ports, live_links), start=1):
        mac = mac_bytes(pc.mac) if pc.mac else live.mac
        mtu = pc.mtu if "mtu" in pc.model_fields_set else live.mtu
        ports.append(Port(index, pc.name, pc.ifname, pc.role, mac, mtu))
        for ip, neigh_mac in neighbour_tables.get(live.ifindex, {}).items():
            table[ip_of(ip)] = (index, neigh_mac)
        for ip, mac_text in pc.neighbours.items():
            table[ip_of(ip)] = (index, mac_bytes(mac_text))
    return StaticResolver(ports, table)
