"""The same rule set as an nftables ruleset: the baseline XDP is measured against.

``emit(rs)`` writes a table with one base chain on the forward hook: each
traffic filter becomes one nft rule (a FLOW rule adds its swapped twin),
in match order, so the first matching rule decides as in the data plane.
What nftables cannot express is refused with NftUnsupported naming the rule:
GTP-U tunnel fields and QFI (nft sees the outer header), VLAN tokens (the
tag is gone by the forward hook), and the FORWARD_*/DUPLICATE_* actions
(no GTP-U decapsulation or encapsulation in nft). DROP and PASSTHROUGH,
addresses, ports, protocols, DSCP and traffic class are exact.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from ..errors import MepError
from ..models import TrafficRuleAction as Action
from ..models.types import AddrRange, PortRange
from .reasons import Verdict
from .ruleset import CompiledFilter, CompiledRule, CompiledRuleSet

__all__ = ["NftUnsupported", "emit"]

_VERDICT = {Action.DROP: "drop", Action.PASSTHROUGH: "accept"}


class NftUnsupported(MepError):
    """A rule nftables cannot express."""


def _addr_set(ranges: Iterable[AddrRange], family: int) -> str:
    items = []
    for r in ranges:
        if r.family != family:
            continue
        lo, hi = ipaddress.ip_address(r.lo), ipaddress.ip_address(r.hi)
        if family == 6:  # ip_address() reads a small int as IPv4
            lo, hi = ipaddress.IPv6Address(r.lo), ipaddress.IPv6Address(r.hi)
        for net in ipaddress.summarize_address_range(lo, hi):
            items.append(str(net) if net.num_addresses > 1 else str(net.network_address))
    return "{ " + ", ".join(items) + " }"


def _port_set(ranges: Iterable[PortRange]) -> str:
    return "{ " + ", ".join(str(r.lo) if r.lo == r.hi else f"{r.lo}-{r.hi}" for r in ranges) + " }"


def _filter_rules(f: CompiledFilter, reverse: bool) -> list[str]:
    """nft match expressions for one filter (one per address family it can match)."""
    src, dst = (f.dst, f.src) if reverse else (f.src, f.dst)
    sport, dport = (f.dport, f.sport) if reverse else (f.sport, f.dport)
    families = [fam for fam in (4, 6)
                if all(not lst or any(r.family == fam for r in lst) for lst in (src, dst))]
    if f.dscp is not None:
        families = [fam for fam in families if fam == 4]
    if f.tc is not None:
        families = [fam for fam in families if fam == 6]
    out = []
    for fam in families:
        ip = "ip" if fam == 4 else "ip6"
        parts = [f"meta nfproto {'ipv4' if fam == 4 else 'ipv6'}"] if not (src or dst) else []
        if src:
            parts.append(f"{ip} saddr {_addr_set(src, fam)}")
        if dst:
            parts.append(f"{ip} daddr {_addr_set(dst, fam)}")
        if f.protocols:
            parts.append("meta l4proto { " + ", ".join(str(p) for p in f.protocols) + " }")
        elif sport or dport:
            parts.append("meta l4proto { tcp, udp, sctp }")
        if sport:
            parts.append(f"th sport {_port_set(sport)}")
        if dport:
            parts.append(f"th dport {_port_set(dport)}")
        if f.dscp is not None:
            parts.append(f"ip dscp {f.dscp}")
        if f.tc is not None:
            parts.append(f"@nh,4,8 {f.tc}")  # the whole traffic class byte
        out.append(" ".join(parts))
    return out


def _rule_lines(rule: CompiledRule) -> list[str]:
    where = f"rule {rule.traffic_rule_id} of app {rule.app_instance_id}"
    verdict = _VERDICT.get(rule.action)
    if verdict is None:
        raise NftUnsupported(f"{where}: {rule.action.value} needs GTP-U/MAC rewriting nftables cannot do",
                             field="action")
    lines = []
    for f in rule.filters:
        if f.needs_tunnel or f.qfi is not None:
            raise NftUnsupported(f"{where}: tunnel fields and qCI are not visible to nftables", field="trafficFilter")
        if f.vlans:
            raise NftUnsupported(f"{where}: the VLAN tag is gone by the forward hook", field="token")
        for reverse in (False, True) if rule.flow else (False,):
            for match in _filter_rules(f, reverse):
                lines.append(f"{match} counter {verdict} comment \"rule {rule.rule_id}\"")
    return lines


def emit(rs: CompiledRuleSet, table: str = "mep") -> str:
    """An ``nft -f`` script that replaces table ``inet <table>`` with ``rs``."""
    policy = "drop" if rs.default_verdict == Verdict.DROP else "accept"
    body = [line for rule in rs.rules for line in _rule_lines(rule)]
    return "\n".join([
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "\tchain steer {",
        f"\t\ttype filter hook forward priority 0; policy {policy};",
        *[f"\t\t{line}" for line in body],
        "\t}",
        "}",
        "",
    ])
