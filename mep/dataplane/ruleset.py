"""CompiledRuleSet: the immutable, versioned input of every engine.

The compiler (compiler.py) builds it from a store snapshot; engines only read
it. Everything an engine needs is resolved here: addresses and ports are
integer ranges, ``ANY`` is an empty tuple, destination interfaces are egress
port indexes with concrete MAC addresses. docs/semantics.md gives the meaning
of every field; reference.py is its executable form.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Optional

from ..config import PortRole
from ..models import AddrRange, PortRange, TrafficRuleAction
from .reasons import Verdict

__all__ = [
    "PORT_STACK",
    "Port",
    "IpAddr",
    "TargetKind",
    "Target",
    "CompiledFilter",
    "CompiledRule",
    "CompiledDnsRule",
    "RuleSetDelta",
    "CompiledRuleSet",
    "rule_version",
]

# Output "port" 0 is the kernel stack (XDP_PASS): the default path to the DN.
# Data-plane ports are numbered from 1; the number is also the DEVMAP slot.
PORT_STACK = 0


@dataclass(frozen=True, slots=True)
class Port:
    index: int  # >= 1
    name: str
    ifname: str
    role: PortRole
    mac: bytes  # 6 bytes, the port's own address (source MAC of what it sends)
    mtu: int = 1500


@dataclass(frozen=True, slots=True)
class IpAddr:
    family: int  # 4 or 6
    value: int

    def packed(self) -> bytes:
        return self.value.to_bytes(4 if self.family == 4 else 16, "big")


class TargetKind(IntEnum):
    DELIVER = 1  # the user packet, GTP-U removed, with a new Ethernet header
    ENCAP_GTPU = 2  # the user packet inside new outer IP/UDP/GTP-U headers
    ENCAP_GRE = 3  # the user packet inside new outer IP/GRE headers


@dataclass(frozen=True, slots=True)
class Target:
    """One resolved destination interface of a FORWARD_* or DUPLICATE_* rule."""

    kind: TargetKind
    port: int  # egress Port.index
    src_mac: bytes
    dst_mac: bytes
    new_dst_ip: Optional[IpAddr] = None  # interfaceType IP: rewrite the user packet's destination
    tunnel_src: Optional[IpAddr] = None  # ENCAP_*: outer source and destination
    tunnel_dst: Optional[IpAddr] = None


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A TrafficFilter with every list resolved; an empty tuple is a wildcard."""

    src: tuple[AddrRange, ...] = ()
    dst: tuple[AddrRange, ...] = ()
    sport: tuple[PortRange, ...] = ()
    dport: tuple[PortRange, ...] = ()
    protocols: tuple[int, ...] = ()
    vlans: tuple[int, ...] = ()
    tun_src: tuple[AddrRange, ...] = ()
    tun_dst: tuple[AddrRange, ...] = ()
    tun_sport: tuple[PortRange, ...] = ()
    tun_dport: tuple[PortRange, ...] = ()
    qfi: Optional[int] = None
    dscp: Optional[int] = None
    tc: Optional[int] = None

    @property
    def needs_ports(self) -> bool:
        return bool(self.sport or self.dport)

    @property
    def needs_tunnel(self) -> bool:
        return bool(self.tun_src or self.tun_dst or self.tun_sport or self.tun_dport)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule_id: int  # platform-wide id from the store; also the tie-break
    app_instance_id: str
    traffic_rule_id: str
    priority: int  # 0 (highest) .. 255
    flow: bool  # filterType FLOW: also match the reverse direction
    action: TrafficRuleAction
    filters: tuple[CompiledFilter, ...]
    targets: tuple[Target, ...]  # FORWARD_*: exactly one; DUPLICATE_*: one or two
    version: int = 0  # rule_version(): flow state made under another version is ignored

    @property
    def order_key(self) -> tuple[int, int]:
        return (self.priority, self.rule_id)


def rule_version(
    flow: bool, action: TrafficRuleAction, filters: tuple[CompiledFilter, ...], targets: tuple[Target, ...]
) -> int:
    """A 32-bit content hash of what a rule does; non-zero."""
    digest = hashlib.blake2s(repr((flow, action.value, filters, targets)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") or 1


@dataclass(frozen=True, slots=True)
class CompiledDnsRule:
    rule_id: int
    app_instance_id: str
    dns_rule_id: str
    name: str  # lower case, no trailing dot
    qtype: int  # 1 (A) or 28 (AAAA)
    address: bytes  # 4 or 16 bytes
    ttl: int


@dataclass(frozen=True)
class RuleSetDelta:
    """What a rule set changed from the rule set it was compiled from (the compiler's own record).

    ``base`` is that rule set's ``rules`` (the very tuple: an engine holding it recognises it by
    identity); ``rule_ids`` holds every rule whose compiled form or enforcement may differ from
    there. Every other rule is the same and enforced or dormant as it was."""

    base: tuple[CompiledRule, ...]
    rule_ids: frozenset[int]


@dataclass(frozen=True)
class CompiledRuleSet:
    generation: int  # increases with every rule set the daemon applies
    store_revision: int  # the store revision it was compiled from
    default_verdict: Verdict  # PASS or DROP when no rule matches
    ports: tuple[Port, ...]
    rules: tuple[CompiledRule, ...]  # in match order: (priority, rule_id)
    dns_rules: tuple[CompiledDnsRule, ...] = ()
    # Every stored rule that compiles, in match order: ``rules`` and the dormant ones (INACTIVE, or their
    # app not READY), which are not part of the rule set's behaviour; an engine may keep them ready to
    # enforce (docs/xdp.md). Empty: not given (``rules`` alone).
    kept: tuple[CompiledRule, ...] = ()
    # How it differs from the rule set it was compiled from; None: not known (compiled from nothing).
    delta: Optional[RuleSetDelta] = field(default=None, repr=False, compare=False)
    # ``rules`` by rule id. The compiler passes the index it keeps up to date (and
    # never changes once passed); otherwise it is built here, O(rules).
    _by_id: Mapping[int, CompiledRule] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self._by_id) != len(self.rules):
            object.__setattr__(self, "_by_id", {r.rule_id: r for r in self.rules})

    def rule(self, rule_id: int) -> CompiledRule | None:
        return self._by_id.get(rule_id)

    def port(self, index: int) -> Port | None:
        for p in self.ports:
            if p.index == index:
                return p
        return None

    @property
    def filter_count(self) -> int:
        return sum(len(r.filters) for r in self.rules)
