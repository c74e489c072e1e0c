"""Reference vs the Cython engine (and vs XDP where it loads) on random rule sets and frames.

Same verdict, reason, rule id, reverse flag and output bytes for every
frame (tests/dataplane/differential.py), and the same counters after every
example. The Cython engine runs without I/O here: ``process()`` is the C
pipeline the I/O loop runs in batches (the batch test below checks that the
batch entry point gives the same results as one frame at a time). Every
frame list runs twice: rule sets of three or more vector words classify
through the classification cache, whose hits must change nothing.
"""
from __future__ import annotations

import ipaddress
import os
from array import array
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mep.config import Capacity, Config, DataplaneConfig
from mep.dataplane.fastpath import FastpathEngine
from mep.dataplane.reasons import Verdict
from mep.dataplane.reference import ReferenceEngine
from mep.errors import CompileError
from tests.dataplane.cases import GTP_TUNNEL, HTTP, KEY_CASES, TO_APP1_IP, TO_APP1_MAC, TO_APP2_MAC, frame_bytes
from tests.dataplane.conftest import fastpath_offline
from tests.dataplane.differential import frame_lists, reply_to, rule_sets, run_all, run_frames
from tests.packets import APP1, N6, PORTS, SERVER, UE1, tcp, udp
from tests.rulesets import rule, ruleset
from tests.strategies import any_frame

# CI runs 2,000 examples of each property (the file takes about two minutes); MEP_DIFFERENTIAL_EXAMPLES
# raises it for a soak. Rule sets and frame lists are smaller than the XDP differential's: drawing them
# dominates the time, and more, smaller examples find more.
EXAMPLES = int(os.environ.get("MEP_DIFFERENTIAL_EXAMPLES", "2000"))
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]

EVERY_ACTION = [
    rule("drop", "DROP", 1, [{"protocol": ["UDP"], "dstPort": ["9"]}]),
    rule("steer", "FORWARD_DECAPSULATED", 2, [HTTP], flow=True, dst=TO_APP1_IP),
    rule("tunnel", "FORWARD_ENCAPSULATED", 3, [{"protocol": ["SCTP"]}], dst=GTP_TUNNEL),
    rule("mirror", "DUPLICATE_DECAPSULATED", 4, [{"protocol": ["UDP"]}], dst=[TO_APP1_MAC, TO_APP2_MAC]),
    rule("pass", "PASSTHROUGH", 5, [{"protocol": ["ICMP"]}]),
]


def both(rules: list[dict[str, Any]], flows: int = 4096) -> tuple[ReferenceEngine, FastpathEngine] | None:
    try:
        rs = ruleset(rules)
    except CompileError:
        return None  # a drawn destination the test topology cannot resolve: nothing to compare
    ref = ReferenceEngine(flow_capacity=flows)
    fast = FastpathEngine(Config(dataplane=DataplaneConfig(
        ports=PORTS, capacity=Capacity(flows=flows))), io=False)
    ref.apply(rs)
    fast.apply(rs)
    return ref, fast


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(rules=rule_sets(max_drawn=5), frames=frame_lists(16))
def test_fastpath_agrees_with_the_reference(rules: list[dict[str, Any]], frames: list[tuple[bytes, int]]) -> None:
    engines = both(rules)
    if engines is None:
        return
    ref, fast = engines
    run_frames(ref, [fast], frames * 2)  # the second time round, large rule sets answer from the cache
    assert fast.counters().as_dict() == ref.counters().as_dict()


@pytest.mark.needs_bpf
@settings(max_examples=max(1, EXAMPLES // 10), deadline=None, suppress_health_check=HEALTH)
@given(rules=rule_sets(), frames=frame_lists())
def test_fastpath_and_xdp_agree_with_the_reference(xdp_engine, rules: list[dict[str, Any]],  # type: ignore[no-untyped-def]
                                                   frames: list[tuple[bytes, int]]) -> None:
    engines = both(rules)
    if engines is None:
        return
    ref, fast = engines
    xdp_engine.flush_flows()
    xdp_engine.apply(ref.ruleset)
    run_frames(ref, [fast, xdp_engine], frames)


@pytest.fixture(scope="module")
def every_action() -> tuple[ReferenceEngine, FastpathEngine]:
    """Both engines with one rule per action; they see the same frames, so their state stays equal."""
    engines = both(EVERY_ACTION)
    assert engines is not None
    return engines


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=HEALTH)
@given(data=st.one_of(st.binary(max_size=2048), any_frame), ingress=st.integers(0, 255))
def test_any_bytes_from_any_port_get_the_reference_result(every_action: tuple[ReferenceEngine, FastpathEngine],
                                                          data: bytes, ingress: int) -> None:
    ref, fast = every_action
    run_all(ref, [fast], data, ingress)
    assert fast.counters().as_dict() == ref.counters().as_dict()


def test_a_batch_gives_what_one_frame_at_a_time_gives() -> None:
    """Core.batch (the I/O loop's entry point) over one buffer == process() frame by frame, flows included."""
    frames = [frame_bytes(tcp(f"198.18.0.{i}", SERVER, 40000 + i, 80)) for i in range(1, 200)]
    frames += [frame_bytes(tcp(UE1, SERVER, 1, 9)), b"\x00" * 9]
    one = fastpath_offline()
    batched = fastpath_offline()
    rs = ruleset(EVERY_ACTION)
    one.apply(rs)
    batched.apply(rs)
    verdicts: dict[int, int] = {}
    for data in frames:
        verdict = one.process(data, N6).verdict
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
    buf = b"".join(frames)
    offsets = array("I", [sum(len(f) for f in frames[:i]) for i in range(len(frames))])
    lengths = array("I", [len(f) for f in frames])
    _, counts = batched._core.batch(buf, offsets, lengths, array("B", [N6] * len(frames)))
    assert counts == verdicts
    assert batched.counters().as_dict() == one.counters().as_dict()
    assert batched._core.flow_count == one._core.flow_count == 199
    assert counts[Verdict.REDIRECT] == 199


def test_the_flow_table_evicts_the_least_recent_like_the_reference() -> None:
    """1,500 steered flows into 1,024 entries, one refreshed: replies find exactly the reference's survivors."""
    engines = both([rule("steer", "FORWARD_DECAPSULATED", 1, [HTTP], flow=True, dst=TO_APP1_IP)], flows=1024)
    assert engines is not None
    ref, fast = engines
    forwards = [frame_bytes(tcp(f"198.18.{i // 200}.{i % 200 + 1}", SERVER, 1024 + i, 80)) for i in range(1500)]
    replies = []
    for i, data in enumerate(forwards):
        result = run_all(ref, [fast], data, N6)
        assert result is not None
        replies.append(reply_to(result.outputs[0].frame))
        if i == 1200:
            run_all(ref, [fast], forwards[3], N6)  # refreshed: survives the evictions that follow
    assert fast._core.flow_count == len(ref.flows) == 1024
    for reply in replies:
        assert reply is not None
        run_all(ref, [fast], reply, APP1)


def test_flow_state_of_a_changed_rule_is_dropped_on_lookup() -> None:
    """A reply after its rule changed (new version) is classified anew, and its entry deleted, as in the reference."""
    steer = rule("steer", "FORWARD_DECAPSULATED", 1, [HTTP], flow=True, dst=TO_APP1_IP)
    engines = both([steer])
    assert engines is not None
    ref, fast = engines
    result = run_all(ref, [fast], frame_bytes(tcp(UE1, SERVER, 40000, 80)), N6)
    assert result is not None
    reply = reply_to(result.outputs[0].frame)
    assert reply is not None
    changed = ruleset([rule("steer", "FORWARD_DECAPSULATED", 1, [HTTP], flow=True, dst=TO_APP1_MAC)], generation=2)
    for engine in (ref, fast):
        engine.apply(changed)
    got = run_all(ref, [fast], reply, APP1)
    assert got is not None and got.reason.name == "PASS_FROM_APP"
    assert fast._core.flow_count == len(ref.flows) == 0
    assert fast.counters().as_dict() == ref.counters().as_dict()


def test_the_classification_cache_answers_repeats_and_forgets_on_swap() -> None:
    """200 rules (4 vector words) classify through the cache; a swap must not leave an old answer behind."""
    filler = [rule(f"f{i}", "DROP", 9, [{"protocol": ["UDP"], "dstPort": [str(10000 + i)]}]) for i in range(200)]
    engines = both([*filler, rule("web", "DROP", 5, [HTTP])])
    assert engines is not None
    ref, fast = engines
    syn = frame_bytes(tcp(UE1, SERVER, 40000, 80))
    for _ in range(3):
        run_all(ref, [fast], syn, N6)
    hits, misses, _ = fast._core.cache_stats
    assert (hits, misses) == (2, 1)
    changed = ruleset([*filler, rule("web", "PASSTHROUGH", 5, [HTTP])], generation=2)
    for engine in (ref, fast):
        engine.apply(changed)
    result = run_all(ref, [fast], syn, N6)
    assert result is not None and result.reason.name == "PASS_RULE"
    assert fast._core.cache_stats[:2] == (2, 2)


@pytest.mark.parametrize("name,matching,other,filter_", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_every_classification_input_is_part_of_the_cache_key(name: str, matching: Any, other: Any,
                                                            filter_: dict[str, Any]) -> None:
    """The classification cache (200+ rules) never answers a frame with the result of a frame that differs
    from it in one input only: each pair, cached one after the other, gets the reference's verdicts."""
    filler = [rule(f"f{i}", "DROP", 9, [{"protocol": ["UDP"], "dstPort": [str(10000 + i)]}]) for i in range(200)]
    engines = both([*filler, rule("key", "DROP", 5, [filter_])])
    assert engines is not None
    ref, fast = engines
    a, b = frame_bytes(matching), frame_bytes(other)
    seen = [run_all(ref, [fast], frame, N6) for frame in (a, b, a, b)]
    assert [r.reason.name if r else None for r in seen] == ["DROP_RULE", "PASS_NO_MATCH"] * 2, name
    assert fast._core.cache_stats[:2] == (2, 2)  # the second round answered from the cache


_NET = ipaddress.ip_network("198.18.0.0/15")


@settings(max_examples=max(1, EXAMPLES // 20), deadline=None, suppress_health_check=HEALTH)
@given(blocks=st.lists(st.tuples(st.integers(0, _NET.num_addresses - 1), st.integers(0, 24), st.booleans()),
                       min_size=1, max_size=150),
       probes=st.lists(st.integers(-2, 2), min_size=1, max_size=8), data=st.data())
def test_address_classes_agree_at_every_interval_edge(blocks: list[tuple[int, int, bool]], probes: list[int],
                                                      data: st.DataObject) -> None:
    """IPv4 address fields are classified through a first level of buckets over the span of their intervals
    (_fastpath.addr_class): destinations at, next to and outside the edges of up to 150 prefixes and ranges
    get the reference's verdict and rule."""
    rules, edges = [], []
    for i, (offset, size_bits, as_range) in enumerate(blocks):
        lo = _NET[offset]
        if as_range:
            hi = _NET[min(_NET.num_addresses - 1, offset + (1 << size_bits) - 1)]
            spec = f"{lo}-{hi}"
        else:
            net = ipaddress.ip_network(f"{lo}/{32 - size_bits}", strict=False)
            lo, hi, spec = net[0], net[-1], str(net)
        rules.append(rule(f"d{i}", "DROP", 10 + i % 50, [{"dstAddress": [spec]}]))
        edges += [int(lo), int(hi)]
    engines = both(rules)
    assert engines is not None
    ref, fast = engines
    for edge in data.draw(st.lists(st.sampled_from(edges), min_size=1, max_size=8)):
        for delta in probes:
            dst = ipaddress.IPv4Address(max(0, min(2**32 - 1, edge + delta)))
            run_all(ref, [fast], frame_bytes(udp(UE1, str(dst))), N6)


def test_rule_counters_survive_updates_removal_and_return() -> None:
    """Per-rule counts follow the rule id across rule sets, as in the reference (slots are reused)."""
    keep = rule("keep", "DROP", 1, [HTTP])
    gone = rule("gone", "DROP", 0, [{"protocol": ["UDP"]}])
    engines = both([keep, gone])
    assert engines is not None
    ref, fast = engines
    syn, dgram = frame_bytes(tcp(UE1, SERVER, 40000, 80)), frame_bytes(udp(UE1, SERVER, 1, 2))
    for rules, generation in (([keep, gone], 1), ([keep], 2), ([rule("new", "DROP", 0, [{"protocol": ["UDP"]}]), keep], 3),
                              ([keep, gone], 4)):
        rs = ruleset(rules, generation=generation)
        for engine in (ref, fast):
            engine.apply(rs)
        for data in (syn, dgram, dgram):
            run_all(ref, [fast], data, N6)
        assert fast.counters().as_dict() == ref.counters().as_dict()


def test_rule_sets_beyond_64_vector_words_classify_as_the_reference() -> None:
    """4,200 filters: 66 vector words, so the word summaries span two 64-bit words (nsum 2); the last
    filter, keyed on no field, is a candidate through the second word of ``unkeyed``."""
    n = 4200
    rules = [rule(f"p{i}", "DROP", 5, [{"protocol": ["UDP"], "dstPort": [str(1000 + i)]}]) for i in range(n)]
    rules.append(rule("flow", "FORWARD_DECAPSULATED", 9, [{"protocol": ["TCP"], "dstPort": ["80"]}],
                      dst=TO_APP1_MAC, flow=True))
    rules.append(rule("catch-all", "PASSTHROUGH", 200, [{}]))
    capacity = Capacity(rules=n + 2, filters=n + 2)
    rs = ruleset(rules, capacity=capacity)
    ref = ReferenceEngine()
    fast = FastpathEngine(Config(dataplane=DataplaneConfig(ports=PORTS, capacity=capacity)), io=False)
    ref.apply(rs)
    fast.apply(rs)
    frames = [udp(UE1, SERVER, 40000, 1000 + i) for i in (0, 63 * 64, 64 * 64 + 5, n - 1)]
    frames += [udp(UE1, SERVER, 40000, 999), tcp(UE1, SERVER, 40000, 80)]
    for f in frames:
        run_all(ref, [fast], frame_bytes(f), N6)
    assert fast.process(frame_bytes(udp(UE1, SERVER, 40000, 1000 + n - 1)), N6).rule_id == n
    assert fast.process(frame_bytes(udp(UE1, SERVER, 40000, 999)), N6).rule_id == n + 2
