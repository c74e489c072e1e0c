"""The same rule set as an nftables ruleset: the baseline XDP is measured against.

``emit(rs)`` writes a table with one base chain on the forward hook: each
traffic filter becomes one nft rule (a FLOW rule adds its swapped twin),
in match order, so the first matching rule decides as in the data plane.
What nftables cannot express is refused with NftUnsupported naming the rule:
GTP-U tunnel fields and QFI (nft sees the outer header), VLAN tokens (the
tag is gone by the forward hook), and the FORWARD_*/DUPLICATE_* actions
(no GTP-U decapsulation or encapsulation in nft). DROP and PASSTHROUGH,
addresses, ports, protocols, DSCP and traffic class are exact.

``emit(rs, sets=True)`` is nftables at its best for the same rule set: a
run of consecutive filters with one verdict needs no order among itself, so
each run becomes a lookup in concatenated interval sets (nft_set_pipapo),
one per family and per shape (address . address . protocol, plus source
and destination port when a filter sets ports); filters with DSCP or
traffic class stay linear rules of their run. Counters are per run, not
per rule.
"""
from __future__ import annotations

import ipaddress
import itertools
from typing import Iterable, Iterator

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


# The protocols a filter that sets ports can match (the ones with ports).
_PORT_PROTOCOLS = (6, 17, 132)


def _span(lo: object, hi: object) -> str:
    """One value or an nft range."""
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _line(match: str, verdict: str, comment: str) -> str:
    return f"{match} counter {verdict} comment \"{comment}\""


def _port_set(ranges: Iterable[PortRange]) -> str:
    return "{ " + ", ".join(_span(r.lo, r.hi) for r in ranges) + " }"


def _directed(f: CompiledFilter, reverse: bool) -> tuple[list[int], tuple[AddrRange, ...], tuple[AddrRange, ...],
                                                          tuple[PortRange, ...], tuple[PortRange, ...]]:
    """The address families filter ``f`` can match, and its (src, dst, sport, dport) in that direction."""
    src, dst = (f.dst, f.src) if reverse else (f.src, f.dst)
    sport, dport = (f.dport, f.sport) if reverse else (f.sport, f.dport)
    families = [fam for fam in (4, 6)
                if all(not lst or any(r.family == fam for r in lst) for lst in (src, dst))]
    if f.dscp is not None:
        families = [fam for fam in families if fam == 4]
    if f.tc is not None:
        families = [fam for fam in families if fam == 6]
    return families, tuple(src), tuple(dst), tuple(sport), tuple(dport)


def _filter_rules(f: CompiledFilter, reverse: bool) -> list[str]:
    """nft match expressions for one filter (one per address family it can match)."""
    families, src, dst, sport, dport = _directed(f, reverse)
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
            parts.append("meta l4proto { " + ", ".join(str(p) for p in _PORT_PROTOCOLS) + " }")
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


def _verdict(rule: CompiledRule) -> str:
    """The rule's nft verdict; NftUnsupported naming the field for what nftables cannot express."""
    where = f"rule {rule.traffic_rule_id} of app {rule.app_instance_id}"
    verdict = _VERDICT.get(rule.action)
    if verdict is None:
        raise NftUnsupported(f"{where}: {rule.action.value} needs GTP-U/MAC rewriting nftables cannot do",
                             field="action")
    for f in rule.filters:
        if f.needs_tunnel or f.qfi is not None:
            raise NftUnsupported(f"{where}: tunnel fields and qCI are not visible to nftables", field="trafficFilter")
        if f.vlans:
            raise NftUnsupported(f"{where}: the VLAN tag is gone by the forward hook", field="token")
    return verdict


def _directions(rule: CompiledRule) -> Iterator[tuple[CompiledFilter, bool]]:
    """Each filter, and for a FLOW rule each filter again with source and destination swapped."""
    for f in rule.filters:
        for reverse in (False, True) if rule.flow else (False,):
            yield f, reverse


def _rule_lines(rule: CompiledRule) -> list[str]:
    verdict = _verdict(rule)
    return [_line(match, verdict, f"rule {rule.rule_id}")
            for f, reverse in _directions(rule) for match in _filter_rules(f, reverse)]


# Concatenated-set shapes: (family, with ports) -> (element type, lookup expression).
_SHAPES = {
    (4, False): ("ipv4_addr . ipv4_addr . inet_proto", "ip saddr . ip daddr . meta l4proto"),
    (4, True): ("ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service",
                "ip saddr . ip daddr . meta l4proto . th sport . th dport"),
    (6, False): ("ipv6_addr . ipv6_addr . inet_proto", "ip6 saddr . ip6 daddr . meta l4proto"),
    (6, True): ("ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service",
                "ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport"),
}
_FULL = {4: (0, 2**32 - 1), 6: (0, 2**128 - 1), "proto": (0, 255), "port": (0, 65535)}

Box = tuple[tuple[int, int], ...]  # (lo, hi) per field of a shape


def _boxes(f: CompiledFilter, reverse: bool) -> Iterator[tuple[tuple[int, bool], Box]]:
    """(shape, box) for every combination of the filter's ranges, per family."""
    families, src, dst, sport, dport = _directed(f, reverse)
    ports = bool(sport or dport)
    protocols = [(p, p) for p in f.protocols or (_PORT_PROTOCOLS if ports else ())] or [_FULL["proto"]]
    for fam in families:
        fields = [[(r.lo, r.hi) for r in src if r.family == fam] or [_FULL[fam]],
                  [(r.lo, r.hi) for r in dst if r.family == fam] or [_FULL[fam]], protocols]
        if ports:
            fields += [[(r.lo, r.hi) for r in sport] or [_FULL["port"]],
                       [(r.lo, r.hi) for r in dport] or [_FULL["port"]]]
        for combo in itertools.product(*fields):
            yield (fam, ports), combo


def _inside(point: tuple[int, ...], box: Box) -> bool:
    return all(lo <= v <= hi for v, (lo, hi) in zip(point, box))


def _place(boxes: Iterable[Box]) -> tuple[list[Box], list[Box]]:
    """(set elements, linear rest) of one run's boxes of one shape. nft_set_pipapo refuses an element
    whose first or last corner lies inside one already in the set; largest first, a box inside an
    accepted one is dropped (same verdict), one that only overlaps one becomes a linear rule."""
    def volume(box: Box) -> int:
        v = 1
        for lo, hi in box:
            v *= hi - lo + 1
        return v

    accepted: list[Box] = []
    linear: list[Box] = []
    for box in sorted(set(boxes), key=volume, reverse=True):
        start, end = tuple(lo for lo, _ in box), tuple(hi for _, hi in box)
        hits = [a for a in accepted if _inside(start, a) or _inside(end, a)]
        if not hits:
            accepted.append(box)
        elif not any(_inside(start, a) and _inside(end, a) for a in hits):
            linear.append(box)
    return accepted, linear


def _items(box: Box, family: int) -> list[str]:
    """The box's fields as nft values (addresses in ``family``), in shape order."""
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    return [_span(make(lo), make(hi)) if k < 2 else _span(lo, hi) for k, (lo, hi) in enumerate(box)]


def _box_rule(box: Box, shape: tuple[int, bool]) -> str:
    """One box as a linear match (fields open over their whole domain left out)."""
    family, ports = shape
    ip = "ip" if family == 4 else "ip6"
    names = [f"{ip} saddr", f"{ip} daddr", "meta l4proto", "th sport", "th dport"]
    full = [_FULL[family], _FULL[family], _FULL["proto"], _FULL["port"], _FULL["port"]]
    parts = [f"{name} {item}" for name, item, rng, whole in zip(names, _items(box, family), box, full) if rng != whole]
    return " ".join(parts or [f"meta nfproto {'ipv4' if family == 4 else 'ipv6'}"])


def _set_lines(rs: CompiledRuleSet) -> tuple[list[str], list[str]]:
    """(set declarations, chain rules) of the sets form: one lookup per run of equal verdicts and shape."""
    decls: list[str] = []
    body: list[str] = []
    for run, (verdict, rules) in enumerate(itertools.groupby(rs.rules, key=_verdict)):
        boxes: dict[tuple[int, bool], list[Box]] = {shape: [] for shape in _SHAPES}
        linear = []
        for rule in rules:
            for f, reverse in _directions(rule):
                if f.dscp is not None or f.tc is not None:
                    linear += [_line(m, verdict, f"rule {rule.rule_id}") for m in _filter_rules(f, reverse)]
                    continue
                for shape, box in _boxes(f, reverse):
                    boxes[shape].append(box)
        for shape, shape_boxes in boxes.items():
            elements, rest = _place(shape_boxes)
            if elements:
                name = f"run{run}_v{shape[0]}{'_ports' if shape[1] else ''}"
                type_, lookup = _SHAPES[shape]
                decls += [f"\tset {name} {{", f"\t\ttype {type_}", "\t\tflags interval",
                          "\t\telements = { " + ", ".join(" . ".join(_items(b, shape[0])) for b in elements) + " }",
                          "\t}"]
                body.append(_line(f"{lookup} @{name}", verdict, f"run {run}"))
            linear += [_line(_box_rule(b, shape), verdict, f"run {run}") for b in rest]
        body += linear
    return decls, body


def emit(rs: CompiledRuleSet, table: str = "mep", *, sets: bool = False) -> str:
    """An ``nft -f`` script that replaces table ``inet <table>`` with ``rs``: one rule per filter in
    match order, or (``sets``) concatenated-set lookups per run of equal verdicts."""
    policy = "drop" if rs.default_verdict == Verdict.DROP else "accept"
    decls, body = _set_lines(rs) if sets else ([], [line for rule in rs.rules for line in _rule_lines(rule)])
    return "\n".join([
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        *decls,
        "\tchain steer {",
        f"\t\ttype filter hook forward priority 0; policy {policy};",
        *[f"\t\t{line}" for line in body],
        "\t}",
        "}",
        "",
    ])
