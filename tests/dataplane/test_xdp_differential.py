"""Reference vs XDP on random rule sets and random frames: same verdict, reason, rule id and bytes.

The reference engine is the spec (DESIGN.md section 3). Each example draws
a rule set (1 to 300 rules), applies it to both engines, and runs a batch
of frames (valid, malformed, truncated; from every port) through both;
replies to steered FLOW packets are synthesised and sent back from the
port they went to, so reverse-flow state is compared too.
"""
from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP

from mep.dataplane.engine import Engine, Result
from mep.dataplane.reasons import Reason
from mep.dataplane.reference import ReferenceEngine
from mep.errors import CompileError
from tests.packets import APP1, APP2, DN, N6
from tests.rulesets import ruleset
from tests.strategies import any_frame, frame, traffic_rule

pytestmark = pytest.mark.needs_bpf

# CI runs thousands of frames; MEP_DIFFERENTIAL_EXAMPLES raises it for a soak.
EXAMPLES = int(os.environ.get("MEP_DIFFERENTIAL_EXAMPLES", "1000"))


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 30, 100, 300]))
    return [draw(traffic_rule(i)) for i in range(n)]


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


def same(ref: Result, xdp: Result, data: bytes, ingress: int) -> None:
    where = f"ingress {ingress}, frame {data.hex()}"
    assert (xdp.verdict.name, xdp.reason.name) == (ref.verdict.name, ref.reason.name), where
    assert (xdp.rule_id, xdp.reverse) == (ref.rule_id, ref.reverse), where
    assert [o.port for o in xdp.outputs] == [o.port for o in ref.outputs], where
    for x, r in zip(xdp.outputs, ref.outputs):
        assert x.frame.hex() == r.frame.hex(), where


def run_both(ref: Engine, xdp: Engine, data: bytes, ingress: int) -> Result | None:
    if len(data) < xdp.min_frame_bytes:
        return None
    r = ref.process(data, ingress)
    x = xdp.process(data, ingress)
    same(r, x, data, ingress)
    return r


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(rules=rule_sets(), frames=st.lists(st.tuples(st.one_of(frame(), any_frame),
                                                    st.sampled_from([N6, N6, N6, DN, APP1, APP2])),
                                          min_size=1, max_size=24))
def test_xdp_agrees_with_the_reference(xdp_engine, rules: list[dict[str, Any]],  # type: ignore[no-untyped-def]
                                       frames: list[tuple[bytes, int]]) -> None:
    try:
        rs = ruleset(rules)
    except CompileError:
        return  # a drawn destination the test topology cannot resolve: nothing to compare
    xdp_engine.flush_flows()
    xdp_engine.apply(rs)
    ref = ReferenceEngine()
    ref.apply(rs)
    for data, ingress in frames:
        result = run_both(ref, xdp_engine, data, ingress)
        if result is None or result.reason != Reason.REDIRECT_RULE:
            continue
        out = result.outputs[0]
        reply = reply_to(out.frame)
        if reply is not None:
            run_both(ref, xdp_engine, reply, out.port)
