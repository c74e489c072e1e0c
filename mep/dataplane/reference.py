"""The reference engine: DESIGN.md section 4 as plain Python. It *is* the spec.

The XDP and Cython engines must return, for any rule set and any frame, the
same verdict, reason, rule id and output bytes as ``ReferenceEngine.process``;
tests/dataplane drives all three with hypothesis to prove it. Clarity wins
over speed here: this engine never sits on a hot path.

Processing one frame that arrived on port ``ingress``:

1. ``parse`` it (packet.py). A frame that cannot be classified leaves with
   the parser's reason (drops for malformed headers, PASS for non-IP).
2. Flow replies first: if the user packet's 5-tuple and ingress port match a
   reverse-flow entry whose rule still exists with the same version, the
   reply is sent back toward the UE with any rewrite undone.
3. Packets from app ports are not classified (an app's own traffic must never
   be steered back to an app): PASS_FROM_APP.
4. Classification: the first rule in (priority, rule id) order one of whose
   filters matches the packet, or for FLOW rules the packet with source and
   destination swapped. No match: the default verdict.
5. The rule's action builds the outputs; FORWARD_* of a FLOW rule in the
   forward direction records the reverse-flow entry.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from ..config import PortRole
from ..models import TrafficRuleAction as Action
from .engine import Counters, Engine, Output, Result
from .packet import (
    IPPROTO_GRE,
    IPPROTO_UDP,
    GTPU_PORT,
    Parsed,
    ethernet,
    gre_header,
    gtpu_header,
    outer_ip,
    parse,
    rewrite_address,
    udp_checksum_ipv6,
    vlan_ethernet,
)
from .reasons import REASON_VERDICT, Reason, Verdict
from .ruleset import PORT_STACK, CompiledFilter, CompiledRule, CompiledRuleSet, IpAddr, Target, TargetKind

__all__ = ["ReferenceEngine", "match_filter", "classify", "FlowKey", "FlowEntry", "DEFAULT_FLOW_CAPACITY"]

DEFAULT_FLOW_CAPACITY = 65_536

# (ingress port, family, protocol, src, src port, dst, dst port); ports 0 when absent.
FlowKey = tuple[int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class FlowEntry:
    """How to send a reply back toward the UE: recorded by the forward packet."""

    rule_id: int
    version: int
    out_port: int  # the port the forward packet came in on
    eth_dst: bytes  # the forward packet's source MAC
    eth_src: bytes  # the forward packet's destination MAC
    vlan_tci: Optional[int]  # the forward packet's 802.1Q tag, restored on the reply
    restore_src: Optional[IpAddr]  # the original destination, when the rule rewrote it


def _any_addr(ranges: tuple, family: int, value: int) -> bool:  # type: ignore[type-arg]
    return not ranges or any(r.contains(family, value) for r in ranges)


def _any_port(ranges: tuple, port: int) -> bool:  # type: ignore[type-arg]
    return not ranges or any(r.contains(port) for r in ranges)


def match_filter(f: CompiledFilter, p: Parsed, reverse: bool = False) -> bool:
    """Does every field ``f`` sets match ``p`` (with src/dst swapped when ``reverse``)?"""
    src, dst = (p.dst, p.src) if reverse else (p.src, p.dst)
    if not (_any_addr(f.src, p.family, src) and _any_addr(f.dst, p.family, dst)):
        return False
    if f.protocols and p.proto not in f.protocols:
        return False
    if f.needs_ports:
        if p.sport is None or p.dport is None:
            return False
        sport, dport = (p.dport, p.sport) if reverse else (p.sport, p.dport)
        if not (_any_port(f.sport, sport) and _any_port(f.dport, dport)):
            return False
    if f.vlans and (p.vlan is None or p.vlan not in f.vlans):
        return False
    if f.needs_tunnel:
        if not p.tunnel:
            return False
        tsrc, tdst = (p.tun_dst, p.tun_src) if reverse else (p.tun_src, p.tun_dst)
        tsport, tdport = (p.tun_dport, p.tun_sport) if reverse else (p.tun_sport, p.tun_dport)
        if not (
            _any_addr(f.tun_src, p.tun_family, tsrc)
            and _any_addr(f.tun_dst, p.tun_family, tdst)
            and _any_port(f.tun_sport, tsport)
            and _any_port(f.tun_dport, tdport)
        ):
            return False
    if f.qfi is not None and p.qfi != f.qfi:
        return False
    if f.dscp is not None and (p.family != 4 or p.dscp != f.dscp):
        return False
    if f.tc is not None and (p.family != 6 or p.tc != f.tc):
        return False
    return True


def classify(ruleset: CompiledRuleSet, p: Parsed) -> tuple[CompiledRule, bool] | None:
    """The first matching rule in match order and whether it matched in reverse."""
    for rule in ruleset.rules:
        if any(match_filter(f, p) for f in rule.filters):
            return rule, False
        if rule.flow and any(match_filter(f, p, reverse=True) for f in rule.filters):
            return rule, True
    return None


def _user_dscp(p: Parsed) -> int:
    return p.dscp if p.family == 4 and p.dscp is not None else (p.tc or 0) >> 2


def _l2_len(frame: bytes) -> int:
    return 18 if frame[12:14] == b"\x81\x00" else 14


def build_target(target: Target, rule_id: int, p: Parsed, frame: bytes) -> bytes | Reason:
    """The frame a FORWARD_*/DUPLICATE_* target sends, or why it cannot be built."""
    dgram = bytearray(frame[p.ip_off : p.ip_off + p.ip_len])
    if target.new_dst_ip is not None:
        if target.new_dst_ip.family != p.family:
            return Reason.DROP_REWRITE_FAMILY
        rewrite_address(dgram, p, target.new_dst_ip, source=False)
    if target.kind is TargetKind.DELIVER:
        return ethernet(target.dst_mac, target.src_mac, p.family) + dgram
    assert target.tunnel_src is not None and target.tunnel_dst is not None
    tsrc, tdst = target.tunnel_src, target.tunnel_dst
    if target.kind is TargetKind.ENCAP_GTPU:
        # The packet's own TEID and QFI when it came in GTP-U; otherwise the
        # rule id as TEID, so the tunnel endpoint can tell the rules apart.
        gtp = gtpu_header(p.teid if p.tunnel else rule_id, len(dgram), p.qfi)
        udp = bytearray(GTPU_PORT.to_bytes(2, "big") * 2 + (8 + len(gtp) + len(dgram)).to_bytes(2, "big") + b"\0\0")
        udp += gtp + dgram
        if tsrc.family == 6:
            udp[6:8] = udp_checksum_ipv6(tsrc, tdst, bytes(udp)).to_bytes(2, "big")
        inner = bytes(udp)
        proto = IPPROTO_UDP
    else:
        inner = gre_header(p.family) + dgram
        proto = IPPROTO_GRE
    return ethernet(target.dst_mac, target.src_mac, tsrc.family) + outer_ip(tsrc, tdst, proto, len(inner), _user_dscp(p)) + inner


class ReferenceEngine(Engine):
    """The executable specification; see the module docstring."""

    name = "reference"

    def __init__(self, flow_capacity: int = DEFAULT_FLOW_CAPACITY) -> None:
        self._ruleset: CompiledRuleSet | None = None
        self._counters = Counters()
        self._flows: OrderedDict[FlowKey, FlowEntry] = OrderedDict()
        self._flow_capacity = flow_capacity

    # -- Engine -------------------------------------------------------------------
    def apply(self, ruleset: CompiledRuleSet) -> None:
        self._ruleset = ruleset

    def cheap(self, ruleset: CompiledRuleSet) -> bool:
        return True  # keeps a reference: O(1), whatever the size

    @property
    def ruleset(self) -> CompiledRuleSet | None:
        return self._ruleset

    def counters(self) -> Counters:
        return self._counters

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "flows": len(self._flows), "flow_capacity": self._flow_capacity}

    def process(self, frame: bytes, ingress: int = PORT_STACK) -> Result:
        result = self._process(bytes(frame), ingress)
        self._counters.record(result, len(frame))
        return result

    @property
    def flows(self) -> dict[FlowKey, FlowEntry]:
        """The reverse-flow table (a copy), for tests and `mep explain`."""
        return dict(self._flows)

    # -- the pipeline ---------------------------------------------------------------
    def _process(self, frame: bytes, ingress: int) -> Result:
        rs = self._ruleset
        p = parse(frame)
        if isinstance(p, Reason):
            return Result(REASON_VERDICT[p], p, outputs=self._outputs_for(p, frame))
        if rs is None:
            return Result(Verdict.PASS, Reason.PASS_NO_MATCH, outputs=(Output(PORT_STACK, frame),))

        reply = self._flow_reply(rs, p, frame, ingress)
        if reply is not None:
            return reply

        port = rs.port(ingress)
        if port is not None and port.role is PortRole.APP:
            return Result(Verdict.PASS, Reason.PASS_FROM_APP, outputs=(Output(PORT_STACK, frame),))

        hit = classify(rs, p)
        if hit is None:
            if rs.default_verdict == Verdict.DROP:
                return Result(Verdict.DROP, Reason.DROP_NO_MATCH)
            return Result(Verdict.PASS, Reason.PASS_NO_MATCH, outputs=(Output(PORT_STACK, frame),))
        rule, reverse = hit
        return self._act(rs, rule, reverse, p, frame, ingress)

    @staticmethod
    def _outputs_for(reason: Reason, frame: bytes) -> tuple[Output, ...]:
        return (Output(PORT_STACK, frame),) if REASON_VERDICT[reason] == Verdict.PASS else ()

    def _act(
        self, rs: CompiledRuleSet, rule: CompiledRule, reverse: bool, p: Parsed, frame: bytes, ingress: int
    ) -> Result:
        rid = rule.rule_id
        action = rule.action
        if action is Action.DROP:
            return Result(Verdict.DROP, Reason.DROP_RULE, rid, reverse=reverse)
        if action is Action.PASSTHROUGH:
            return Result(Verdict.PASS, Reason.PASS_RULE, rid, (Output(PORT_STACK, frame),), reverse)
        if action in (Action.DUPLICATE_DECAPSULATED, Action.DUPLICATE_ENCAPSULATED):
            outputs = [Output(PORT_STACK, frame)]
            for target in rule.targets:
                copy = self._checked(rs, target, rid, p, frame)
                if not isinstance(copy, Reason):
                    outputs.append(Output(target.port, copy))
            return Result(Verdict.DUPLICATE, Reason.DUPLICATE_RULE, rid, tuple(outputs), reverse)
        # FORWARD_*: a reply matched statelessly goes the default way back.
        if reverse:
            return Result(Verdict.PASS, Reason.PASS_FLOW_REVERSE, rid, (Output(PORT_STACK, frame),), True)
        target = rule.targets[0]
        out = self._checked(rs, target, rid, p, frame)
        if isinstance(out, Reason):
            return Result(Verdict.DROP, out, rid)
        if rule.flow:
            self._remember(rule, target, p, ingress)
        return Result(Verdict.REDIRECT, Reason.REDIRECT_RULE, rid, (Output(target.port, out),))

    def _checked(self, rs: CompiledRuleSet, target: Target, rule_id: int, p: Parsed, frame: bytes) -> bytes | Reason:
        out = build_target(target, rule_id, p, frame)
        if isinstance(out, Reason):
            return out
        return self._mtu_checked(rs, target.port, out)

    @staticmethod
    def _mtu_checked(rs: CompiledRuleSet, port_index: int, out: bytes) -> bytes | Reason:
        port = rs.port(port_index)
        if port is not None and len(out) - _l2_len(out) > port.mtu:
            return Reason.DROP_MTU
        return out

    # -- reverse flows --------------------------------------------------------------
    def _remember(self, rule: CompiledRule, target: Target, p: Parsed, ingress: int) -> None:
        new_dst = target.new_dst_ip
        key: FlowKey = (
            target.port,
            p.family,
            p.proto,
            new_dst.value if new_dst is not None else p.dst,
            p.dport or 0,
            p.src,
            p.sport or 0,
        )
        entry = FlowEntry(
            rule_id=rule.rule_id,
            version=rule.version,
            out_port=ingress,
            eth_dst=p.eth_src,
            eth_src=p.eth_dst,
            vlan_tci=p.vlan_tci,
            restore_src=IpAddr(p.family, p.dst) if new_dst is not None else None,
        )
        self._flows[key] = entry
        self._flows.move_to_end(key)
        while len(self._flows) > self._flow_capacity:
            self._flows.popitem(last=False)

    def _flow_reply(self, rs: CompiledRuleSet, p: Parsed, frame: bytes, ingress: int) -> Result | None:
        key: FlowKey = (ingress, p.family, p.proto, p.src, p.sport or 0, p.dst, p.dport or 0)
        entry = self._flows.get(key)
        if entry is None:
            return None
        rule = rs.rule(entry.rule_id)
        if rule is None or rule.version != entry.version:
            del self._flows[key]  # made by a rule that no longer exists as it was
            return None
        self._flows.move_to_end(key)
        dgram = bytearray(frame[p.ip_off : p.ip_off + p.ip_len])
        if entry.restore_src is not None:
            rewrite_address(dgram, p, entry.restore_src, source=True)
        if entry.vlan_tci is None:
            l2 = ethernet(entry.eth_dst, entry.eth_src, p.family)
        else:
            l2 = vlan_ethernet(entry.eth_dst, entry.eth_src, entry.vlan_tci, p.family)
        out = self._mtu_checked(rs, entry.out_port, l2 + dgram)
        if isinstance(out, Reason):
            return Result(Verdict.DROP, out, entry.rule_id, reverse=True)
        return Result(
            Verdict.REDIRECT, Reason.REDIRECT_FLOW_REPLY, entry.rule_id, (Output(entry.out_port, out),), True
        )
