"""Shared pieces of the differential tests: rule-set strategy, reply synthesis, result comparison.

A differential test applies one drawn rule set to two or three engines, runs
the same frames (valid, malformed, truncated; from every port) through all
of them, and requires the same verdict, reason, rule id, reverse flag and
output bytes. Replies to steered FLOW packets are synthesised and sent back
from the port they went to, so reverse-flow state is compared too.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP

from mep.dataplane.engine import Engine, Result
from mep.dataplane.reasons import Reason
from tests.packets import APP1, APP2, DN, N6
from tests.strategies import PORTS, any_frame, frame, traffic_rule

INGRESS = st.sampled_from([N6, N6, N6, DN, APP1, APP2])


def frame_lists(max_size: int = 24) -> st.SearchStrategy[list[tuple[bytes, int]]]:
    """1 to ``max_size`` frames (valid, malformed, truncated), each with the port it arrives on."""
    return st.lists(st.tuples(st.one_of(frame(), any_frame), INGRESS), min_size=1, max_size=max_size)


@st.composite
def rule_sets(draw: st.DrawFn, max_drawn: int = 8) -> list[dict[str, Any]]:
    """1 to ``max_drawn`` random traffic rules (tests/strategies.py), in half the examples grown by 30..300.

    Hypothesis cannot draw hundreds of rules within its data budget (such
    examples overrun and are discarded), so large sets are grown from the
    drawn ones: copies, each with a new priority and, per filter, one field
    dropped or a destination port from the frames' pool. The filters still
    hit the drawn frames, and the classifier's vectors span several words.
    """
    rules = [draw(traffic_rule(i)) for i in range(draw(st.integers(1, max_drawn)))]
    extra = draw(st.sampled_from([0, 0, 0, 30, 100, 300]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    base = list(rules)
    for _ in range(extra):
        copy = dict(rng.choice(base), trafficRuleId=f"r{len(rules)}", priority=rng.randrange(9))
        filters = []
        for f in copy["trafficFilter"]:
            f = dict(f)
            if f and rng.random() < 0.5:
                del f[rng.choice(sorted(f))]
            if rng.random() < 0.3:
                f["dstPort"] = [str(rng.choice(PORTS))]
            filters.append(f)
        copy["trafficFilter"] = filters
        rules.append(copy)
    return rules


def reply_to(out: bytes) -> bytes | None:
    """The reply an app would send to a delivered frame: L2, L3 and L4 addresses swapped."""
    pkt = Ether(out)
    l3 = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if l3 is None or pkt.type not in (0x0800, 0x86DD):
        return None
    pkt.src, pkt.dst = pkt.dst, pkt.src
    l3.src, l3.dst = l3.dst, l3.src
    for layer in (TCP, UDP, SCTP):
        if pkt.haslayer(layer):
            t = pkt[layer]
            t.sport, t.dport = t.dport, t.sport
            if layer is not SCTP:
                del t.chksum
    if isinstance(l3, IP):
        del l3.chksum
    return bytes(pkt)


def same(ref: Result, other: Result, data: bytes, ingress: int, name: str) -> None:
    """``other`` (engine ``name``) returned exactly what the reference returned."""
    where = f"{name}, ingress {ingress}, frame {data.hex()}"
    assert (other.verdict.name, other.reason.name) == (ref.verdict.name, ref.reason.name), where
    assert (other.rule_id, other.reverse) == (ref.rule_id, ref.reverse), where
    assert [o.port for o in other.outputs] == [o.port for o in ref.outputs], where
    for o, r in zip(other.outputs, ref.outputs):
        assert o.frame.hex() == r.frame.hex(), where


def run_all(ref: Engine, others: Sequence[Engine], data: bytes, ingress: int) -> Result | None:
    """Run one frame through the reference and every other engine that can see it; compare."""
    if any(len(data) < e.min_frame_bytes for e in others):
        return None
    r = ref.process(data, ingress)
    for engine in others:
        same(r, engine.process(data, ingress), data, ingress, engine.name)
    return r


def run_frames(ref: Engine, others: Sequence[Engine], frames: list[tuple[bytes, int]]) -> None:
    """Every frame, then the reply to every REDIRECT_RULE output, through all engines."""
    for data, ingress in frames:
        result = run_all(ref, others, data, ingress)
        if result is None or result.reason != Reason.REDIRECT_RULE:
            continue
        out = result.outputs[0]
        reply = reply_to(out.frame)
        if reply is not None:
            run_all(ref, others, reply, out.port)
