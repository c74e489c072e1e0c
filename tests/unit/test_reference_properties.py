"""Hypothesis properties of the reference engine: the spec must be self-consistent.

Each property restates one sentence of DESIGN.md section 4 independently of
reference.py (using the ipaddress module and scapy rather than the engine's
own helpers) and checks the engine against it.
"""
from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP

from mep.dataplane.packet import Parsed, parse
from mep.dataplane.reasons import REASON_VERDICT, Reason, Verdict
from mep.dataplane.reference import ReferenceEngine, match_filter
from mep.dataplane.compiler import compile_filter
from mep.dataplane.ruleset import PORT_STACK
from mep.models import TrafficFilter
from tests.packets import APP1, DN, N6, eth, gtpu
from tests.rulesets import rule, ruleset
from tests.strategies import address_spec, any_frame, frame, port_spec, rule_list, traffic_filter, user_packet

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def engine_with(rules: list[dict], default_action: str = "PASSTHROUGH") -> ReferenceEngine:  # type: ignore[type-arg]
    e = ReferenceEngine()
    e.apply(ruleset(rules, default_action=default_action))
    return e


@FAST
@given(rules=rule_list(), data=any_frame, ingress=st.sampled_from([0, N6, DN, APP1]))
def test_any_bytes_get_a_defined_result(rules: list[dict], data: bytes, ingress: int) -> None:  # type: ignore[type-arg]
    result = engine_with(rules).process(data, ingress)
    assert REASON_VERDICT[result.reason] == result.verdict
    if result.verdict == Verdict.DROP:
        assert result.outputs == ()
    if result.verdict == Verdict.PASS:
        assert result.outputs == ((PORT_STACK, data),) or [(o.port, o.frame) for o in result.outputs] == [(0, data)]
    if result.verdict == Verdict.DUPLICATE:
        assert result.outputs[0].port == PORT_STACK and result.outputs[0].frame == data


CHECKSUMMED = (IP, TCP, UDP, ICMPv6EchoRequest)


def with_checksums_recomputed(data: bytes) -> bytes:
    """``data`` as scapy rebuilds it with every IP/TCP/UDP/ICMPv6 checksum computed afresh."""
    pkt = Ether(data)
    layer = pkt
    while layer:
        name = "cksum" if isinstance(layer, ICMPv6EchoRequest) else "chksum"
        if isinstance(layer, CHECKSUMMED) and not (isinstance(layer, UDP) and layer.chksum == 0):
            delattr(layer, name)
        layer = layer.payload
    return bytes(pkt)


@FAST
@given(rules=rule_list(), data=frame())
def test_outputs_carry_valid_checksums(rules: list[dict], data: bytes) -> None:  # type: ignore[type-arg]
    result = engine_with(rules).process(data, N6)
    for out in result.outputs:
        if out.frame != data:  # a rewritten frame, not the input passed on
            assert with_checksums_recomputed(out.frame) == out.frame


@FAST
@given(prios=st.lists(st.integers(0, 4), min_size=1, max_size=8), data=frame())
def test_priority_then_install_order(prios: list[int], data: bytes) -> None:
    """Among matching rules, the lowest priority value wins; ties go to the first installed."""
    assume(not isinstance(parse(data), Reason))
    rules = [rule(f"r{i}", "DROP", p, [{}]) for i, p in enumerate(prios)]
    result = engine_with(rules).process(data, N6)
    best = min(range(len(prios)), key=lambda i: (prios[i], i))
    assert result.rule_id == best + 1


@FAST
@given(data=frame())
def test_empty_filter_matches_every_ip_packet(data: bytes) -> None:
    p = parse(data)
    assume(isinstance(p, Parsed))
    assert match_filter(compile_filter(TrafficFilter()), p)


def _packet(src: str, dst: str, sport: int, dport: int) -> Parsed:
    l3 = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    p = parse(bytes(eth() / l3 / TCP(sport=sport, dport=dport)))
    assert isinstance(p, Parsed)
    return p


def _in(spec: str, addr: str) -> bool:
    a = ipaddress.ip_address(addr)
    if "-" in spec:
        lo, hi = (ipaddress.ip_network(x.strip(), strict=False) for x in spec.split("-"))
        return lo.version == a.version and lo.network_address <= a <= hi.broadcast_address
    net = ipaddress.ip_network(spec, strict=False)
    return net.version == a.version and a in net


@FAST
@given(spec=address_spec(), fam=st.sampled_from([4, 6]), data=st.data())
def test_address_ranges(spec: str, fam: int, data: st.DataObject) -> None:
    from tests.strategies import v4, v6

    addr = data.draw(v4() if fam == 4 else v6())
    other = "198.18.1.1" if fam == 4 else "2001:db8:1::1"
    f = compile_filter(TrafficFilter.model_validate({"srcAddress": [spec]}))
    assert match_filter(f, _packet(addr, other, 1, 2)) == _in(spec, addr)


@FAST
@given(spec=port_spec(), port=st.integers(0, 65535))
def test_port_ranges(spec: str, port: int) -> None:
    lo, _, hi = spec.partition("-")
    f = compile_filter(TrafficFilter.model_validate({"dstPort": [spec]}))
    assert match_filter(f, _packet("198.18.0.1", "198.18.0.2", 9, port)) == (int(lo) <= port <= int(hi or lo))


@FAST
@given(f=traffic_filter(), inner=user_packet(), tunnelled=st.booleans())
def test_flow_matches_the_swapped_packet(f: dict, inner: object, tunnelled: bool) -> None:  # type: ignore[type-arg]
    """FLOW's reverse match of a packet equals the forward match of that packet with src/dst swapped."""
    from scapy.packet import Packet

    assert isinstance(inner, Packet)
    inner = inner.__class__(bytes(inner))  # dissect hand-built transport headers into layers
    swapped = inner.copy()
    swapped.src, swapped.dst = inner.dst, inner.src
    for layer in (TCP, UDP, SCTP):
        if swapped.haslayer(layer):
            swapped[layer].sport, swapped[layer].dport = inner[layer].dport, inner[layer].sport

    def build(pkt: Packet, reverse_outer: bool) -> bytes:
        if not tunnelled:
            return bytes(eth() / pkt)
        src, dst = ("198.18.200.2", "198.18.200.1") if reverse_outer else ("198.18.200.1", "198.18.200.2")
        return bytes(gtpu(pkt, outer_src=src, outer_dst=dst))

    p, q = parse(build(inner, False)), parse(build(swapped, True))
    assume(isinstance(p, Parsed) and isinstance(q, Parsed))
    assert isinstance(p, Parsed) and isinstance(q, Parsed)
    cf = compile_filter(TrafficFilter.model_validate(f))
    if not cf.needs_tunnel:  # the outer UDP ports are not swapped by build(); skip tunnel-port filters
        assert match_filter(cf, p, reverse=True) == match_filter(cf, q)


@FAST
@given(data=frame(), tun=st.sampled_from(["198.18.200.1", "198.18.200.0/30", "198.18.201.0/24"]))
def test_tunnel_filters_match_only_tunnelled_packets(data: bytes, tun: str) -> None:
    p = parse(data)
    assume(isinstance(p, Parsed))
    assert isinstance(p, Parsed)
    f = compile_filter(TrafficFilter.model_validate({"srcTunnelAddress": [tun]}))
    expected = p.tunnel and _in(tun, str(ipaddress.ip_address(p.tun_src)))
    assert match_filter(f, p) == expected


@FAST
@given(rules=rule_list(), data=frame())
def test_inactive_rules_are_not_enforced(rules: list[dict], data: bytes) -> None:  # type: ignore[type-arg]
    inactive = [{**r, "state": "INACTIVE"} for r in rules]
    result = engine_with(inactive).process(data, N6)
    assert result.rule_id == 0
