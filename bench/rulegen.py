"""Seeded rule-set generator with the mix of ../shared/notes/classifier-measurements.md.

Mix per rule: 50% app server (dst /32, TCP or UDP, one dst port, 30% of them
also a UE-pool source), 15% app subnet (dst /24, a UDP port range of 10, 100
or 1000), 12% UE source (a pool prefix or range, any destination), 12%
downlink (a server source /32 and source port, a UE-pool destination), 5%
DSCP, 3% source-port range, 3% IP-wildcard (protocol and a well-known port,
or DSCP only, or SCTP only). 20% of rules carry 2-3 filters. Priorities are
random 0..255. Addresses stay inside 198.18.0.0/15.
"""
from __future__ import annotations

import ipaddress
import random
from typing import Any

__all__ = ["generate_rules", "UE_POOL", "SERVER_NET", "FREE_SOURCES", "FREE_SERVERS", "WELL_KNOWN"]

# Rules draw their addresses from these halves; traffic that a filter leaves
# open draws from the other halves, which no rule names, so a benchmark can
# aim a flow at one rule or at none.
UE_POOL = ipaddress.ip_network("198.18.0.0/17")
SERVER_NET = ipaddress.ip_network("198.19.0.0/17")
FREE_SOURCES = ipaddress.ip_network("198.18.128.0/17")
FREE_SERVERS = ipaddress.ip_network("198.19.128.0/17")
WELL_KNOWN = [22, 53, 80, 123, 443, 5060, 8080]


def _server(rng: random.Random) -> str:
    return str(SERVER_NET[rng.randrange(1, SERVER_NET.num_addresses - 1)])


def _ue_prefix(rng: random.Random) -> str:
    plen = rng.choice([17, 18, 20, 22, 24])
    base = UE_POOL[rng.randrange(UE_POOL.num_addresses)]
    net = ipaddress.ip_network(f"{base}/{plen}", strict=False)
    if rng.random() < 0.07:
        lo = rng.randrange(net.num_addresses // 2)
        return f"{net[lo]}-{net[lo + rng.randrange(1, net.num_addresses // 2)]}"
    return str(net)


def _filter(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.50:
        f: dict[str, Any] = {"dstAddress": [_server(rng) + "/32"], "protocol": [rng.choice(["TCP", "UDP"])],
                             "dstPort": [str(rng.randrange(1, 65536))]}
        if rng.random() < 0.30:
            f["srcAddress"] = [_ue_prefix(rng)]
        return f
    if kind < 0.65:
        net = ipaddress.ip_network(f"{_server(rng)}/24", strict=False)
        width = rng.choice([10, 100, 1000])
        lo = rng.randrange(1024, 65536 - width)
        return {"dstAddress": [str(net)], "protocol": ["UDP"], "dstPort": [f"{lo}-{lo + width - 1}"]}
    if kind < 0.77:
        return {"srcAddress": [_ue_prefix(rng)]}
    if kind < 0.89:
        return {"srcAddress": [_server(rng)], "srcPort": [str(rng.choice(WELL_KNOWN))], "dstAddress": [_ue_prefix(rng)]}
    if kind < 0.94:
        return {"dSCP": rng.choice([10, 18, 26, 34, 46]), "dstAddress": [_server(rng)]}
    if kind < 0.97:
        lo = rng.randrange(1024, 60000)
        return {"srcPort": [f"{lo}-{lo + rng.randrange(10, 5000)}"], "protocol": ["UDP"]}
    wild = rng.random()
    if wild < 0.5:
        return {"protocol": [rng.choice(["TCP", "UDP"])], "dstPort": [str(rng.choice(WELL_KNOWN))]}
    if wild < 0.8:
        return {"dSCP": rng.choice([8, 16, 24])}
    return {"protocol": ["SCTP"]}


def generate_rules(n: int, seed: int = 1, action: str = "DROP") -> list[dict[str, Any]]:
    """``n`` rules as MEC 011 TrafficRule dicts (all ACTIVE, PACKET filters, the given action)."""
    rng = random.Random(seed)
    rules = []
    for i in range(n):
        nfilters = 1 if rng.random() < 0.8 else rng.choice([2, 3])
        rules.append({
            "trafficRuleId": f"r{i}",
            "filterType": "PACKET",
            "priority": rng.randrange(256),
            "trafficFilter": [_filter(rng) for _ in range(nfilters)],
            "action": action,
            "state": "ACTIVE",
        })
    return rules
