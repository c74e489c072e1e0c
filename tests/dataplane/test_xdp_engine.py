"""What only the XDP engine does: its own drop reasons, counters, capacity, describe()."""
from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import os
from typing import Any

import pytest

from bench._harness import pinned_cpu
from mep.dataplane.compiler import RuleCache, StaticResolver, compile_ruleset
from mep.dataplane.reasons import Reason, Verdict
from mep.dataplane.tables import MAX_KEY_PAIRS, enabled_filters
from mep.errors import CapacityError
from mep.models import TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredTrafficRule
from tests.dataplane.cases import (GTP_TUNNEL, HTTP, HTTP_SYN, KEY_CASES, TO_APP1_IP, TO_APP1_MAC, TO_APP2_MAC,
                                  frame_bytes)
from tests.dataplane.differential import run_all
from mep.dataplane.reference import ReferenceEngine
from tests.packets import APP1, APP2, N6, SERVER, tcp, udp
from tests.rulesets import dataplane_config, rule, ruleset

pytestmark = pytest.mark.needs_bpf


def test_a_copy_whose_rule_changed_is_dropped_as_stale(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    rs = ruleset([rule("m", "DUPLICATE_ENCAPSULATED", filters=[HTTP], dst=GTP_TUNNEL)])
    xdp_engine.apply(rs)
    frame = frame_bytes(HTTP_SYN)
    first = xdp_engine.process(frame, N6)
    assert first.verdict == Verdict.DUPLICATE and len(first.outputs) == 2
    # A copy still carrying the version of a rule that has since changed:
    stale_trailer = rs.rules[0].rule_id.to_bytes(4, "little") + (rs.rules[0].version ^ 1).to_bytes(4, "little")
    before = xdp_engine.counters().reasons.get(Reason.DROP_COPY_STALE)
    retval, _, meta = xdp_engine._run(frame + stale_trailer, xdp_engine._mirror_ifindex[0])
    assert Reason(meta[1]) == Reason.DROP_COPY_STALE
    after = xdp_engine.counters().reasons[Reason.DROP_COPY_STALE]
    assert after.packets == (before.packets if before else 0) + 1


def test_a_missing_devmap_slot_is_an_internal_drop(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    xdp_engine.apply(ruleset([rule("f", "FORWARD_DECAPSULATED", filters=[HTTP], dst=TO_APP1_MAC)]))
    xdp_engine._ports.remove_port(APP1)
    try:
        result = xdp_engine.process(frame_bytes(HTTP_SYN), N6)
    finally:
        xdp_engine._setup_port_maps()
    assert (result.verdict, result.reason) == (Verdict.DROP, Reason.DROP_INTERNAL)
    assert result.outputs == ()
    assert xdp_engine.process(frame_bytes(HTTP_SYN), N6).verdict == Verdict.REDIRECT


def test_rule_sets_that_differ_only_in_actions_reuse_the_tables_in_both_halves(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """The same filters in the same order: the classifier tables are built once and each half is written
    from them once; what changes (the rule's target, its action) still reaches every half."""
    others = [rule(f"o{i}", "DROP", 20 + i, [{"protocol": ["UDP"], "dstPort": [str(1000 + i)]}]) for i in range(40)]
    to = {"app1": rule("f", "FORWARD_DECAPSULATED", 5, [HTTP], dst=TO_APP1_MAC),
          "app2": rule("f", "FORWARD_DECAPSULATED", 5, [HTTP], dst=TO_APP2_MAC),
          "drop": rule("f", "DROP", 5, [HTTP])}
    built = []
    xdp_engine.apply(ruleset(others))  # another shape first: both halves hold something else
    for name in ("app1", "app2", "drop", "app1", "app2", "app1"):
        xdp_engine.apply(ruleset([to[name], *others]))
        built.append(xdp_engine._held.prepared.serial)
        result = xdp_engine.process(frame_bytes(HTTP_SYN), N6)
        want = {"app1": (Verdict.REDIRECT, APP1), "app2": (Verdict.REDIRECT, APP2), "drop": (Verdict.DROP, None)}[name]
        assert (result.verdict, result.outputs[0].port if result.outputs else None) == want, name
    assert len(set(built)) == 1  # built once for the six


def test_a_rule_changing_state_changes_the_enabled_filters_not_the_tables(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """INACTIVE rules stay in the tables as dormant filters: switching one on or off rewrites the ENABLED
    vector, and a dormant rule never matches, even one ahead of the rule that should."""
    others = [rule(f"o{i}", "DROP", 20 + i, [{"protocol": ["UDP"], "dstPort": [str(1000 + i)]}]) for i in range(40)]
    shadowing = rule("shadow", "DROP", 1, [HTTP], state="INACTIVE")  # matches first when enforced
    built, seen = [], []
    for state in ("INACTIVE", "ACTIVE", "INACTIVE", "ACTIVE", "ACTIVE", "INACTIVE"):
        target = rule("f", "FORWARD_DECAPSULATED", 5, [HTTP], dst=TO_APP1_MAC, state=state)
        rs = ruleset([shadowing, target, *others])
        assert len(rs.kept) - len(rs.rules) == (2 if state == "INACTIVE" else 1)  # dormant
        xdp_engine.apply(rs)
        built.append(xdp_engine._held.prepared.serial)
        result = xdp_engine.process(frame_bytes(HTTP_SYN), N6)
        seen.append(result.verdict)
        if result.verdict == Verdict.REDIRECT:
            assert result.rule_id == rs.rules[0].rule_id and result.outputs[0].port == APP1
    assert seen == [Verdict.PASS, Verdict.REDIRECT, Verdict.PASS, Verdict.REDIRECT, Verdict.REDIRECT, Verdict.PASS]
    assert len(set(built)) == 1  # the same 43 rules in the tables throughout
    # A half whose header does not set `enabled` (written before vector 1 was the enabled filters, as a
    # restarted control plane of an older version leaves it) is scanned with every filter on.
    sets, half = xdp_engine._bpf["mep_sets"], xdp_engine._rules.active()
    cfg = sets[ctypes.c_uint32(half)]
    cfg.enabled = 0
    cfg.generation += 1  # the flow cache's entries are of the previous generation
    sets[ctypes.c_uint32(half)] = cfg
    assert xdp_engine.process(frame_bytes(HTTP_SYN), N6).verdict == Verdict.DROP  # the shadowing rule


def test_state_changes_through_the_compilers_delta_are_cheap_and_exact(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """Rule sets compiled from one another (a RuleCache, as the daemon compiles) carry the compiler's delta:
    the enabled filters are then updated from the changed rules alone, equal to those computed from every
    rule, and the apply is cheap (the daemon makes it on the event loop) once the grace period is over and
    the half to write holds the tables (brought up to them after the grace period); a rule set with other
    filters is not cheap."""
    config = dataplane_config()
    resolver, cache = StaticResolver.from_config(config), RuleCache()
    multi = [{"protocol": ["UDP"], "dstPort": ["53"]}, {"protocol": ["UDP"], "dstPort": ["5353"]}]
    bodies = {f"r{i}": rule(f"r{i}", "DROP", 10 + i, multi if i % 3 == 0 else [{"dstPort": [str(2000 + i)]}])
              for i in range(12)}
    bodies["f"] = rule("f", "FORWARD_DECAPSULATED", 5, [HTTP], dst=TO_APP1_MAC)
    ids = {name: i + 1 for i, name in enumerate(bodies)}
    stored = {name: StoredTrafficRule(app_instance_id="app1", rule_id=ids[name], rule=TrafficRule.model_validate(b))
              for name, b in bodies.items()}
    apps = {"app1": AppInstance(appInstanceId="app1", state=AppState.READY)}
    steps = [{}, {"f": "INACTIVE"}, {"r0": "INACTIVE", "r3": "INACTIVE"}, {"f": "ACTIVE"}, {"r3": "ACTIVE"},
             {"r0": "ACTIVE", "f": "INACTIVE", "r6": "INACTIVE"}, {"f": "ACTIVE"}]
    for generation, change in enumerate(steps, 1):
        for name, state in change.items():
            stored[name] = StoredTrafficRule(app_instance_id="app1", rule_id=ids[name],
                                             rule=TrafficRule.model_validate({**bodies[name], "state": state}))
        snap = Snapshot(revision=generation, apps=apps, traffic_rules=tuple(stored.values()), dns_rules=())
        rs = compile_ruleset(snap, config=config, resolver=resolver, generation=generation, cache=cache)
        assert generation == 1 or rs.delta is not None and rs.delta.rule_ids == {ids[n] for n in change}
        xdp_engine._grace.wait()
        # 1: new tables. Then cheap: after each grace period the half just left was brought up to them.
        assert xdp_engine.cheap(rs) == (generation > 1)
        xdp_engine.apply(rs)
        enforced = {r.rule_id for r in rs.rules}
        held = xdp_engine._held
        full = enabled_filters(held.prepared.tables, [r.rule_id in enforced for r in held.rules])
        assert xdp_engine._enabled[2] == full, change
        result = xdp_engine.process(frame_bytes(HTTP_SYN), N6)
        assert result.verdict == (Verdict.REDIRECT if ids["f"] in enforced else Verdict.PASS), change
    xdp_engine._grace.wait()
    assert not xdp_engine.cheap(ruleset([bodies["f"]]))  # other filters: tables to build


@pytest.mark.parametrize("name,matching,other,filter_", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_every_classification_input_is_part_of_the_flow_cache_key(xdp_engine, name: str, matching: Any,  # type: ignore[no-untyped-def]
                                                                   other: Any, filter_: dict[str, Any]) -> None:
    """The per-CPU flow cache never answers a frame with the result of a frame that differs from it in one
    input only: each pair, run one after the other on one CPU (so the second round hits), gets the
    reference's verdicts."""
    rs = ruleset([rule("key", "DROP", 5, [filter_])])
    ref = ReferenceEngine()
    ref.apply(rs)
    xdp_engine.apply(rs)
    a, b = frame_bytes(matching), frame_bytes(other)
    with pinned_cpu():
        seen = [run_all(ref, [xdp_engine], frame, N6) for frame in (a, b, a, b)]
    assert [r.reason.name if r else None for r in seen] == ["DROP_RULE", "PASS_NO_MATCH"] * 2, name


@pytest.mark.parametrize("vary", ["dport", "dst"])
def test_flows_that_differ_in_one_field_are_cached_side_by_side(xdp_engine, vary: str) -> None:  # type: ignore[no-untyped-def]
    """The flow cache's set index takes every bit of the key: 64 flows that differ only in the destination
    port, or only in the last octet of the destination address, are all cached at once, not crowded into
    one 2-way set (the cache's first hash never saw the top bits of a key word, and did that)."""
    xdp_engine.apply(ruleset([rule("web", "DROP", 5, [HTTP])]))
    sport = 4321  # no other test's flows

    def as_key(address: str) -> int:  # an IPv4 address as the key holds it (network order, loaded little-endian)
        return int.from_bytes(ipaddress.IPv4Address(address).packed, "little")

    flows = ({(as_key(SERVER), 20000 + i): tcp(sport=sport, dport=20000 + i) for i in range(64)} if vary == "dport"
             else {(as_key(f"198.19.7.{i + 1}"), 80): tcp(sport=sport, dst=f"198.19.7.{i + 1}") for i in range(64)})
    with pinned_cpu():
        for packet in flows.values():
            xdp_engine.process(frame_bytes(packet), N6)
    cached = {(way.key.dst, way.key.dport) for per_cpu in xdp_engine._bpf["mep_flow_cache4"].values()
              for bucket in per_cpu for way in bucket.way if way.key.sport == sport}
    # 64 flows in >= 512 sets of 2 ways: a few may still share a set three at a time
    assert len(cached & flows.keys()) >= 60


def test_dormant_rules_beyond_the_capacity_are_left_out_of_the_tables(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    capacity = xdp_engine._sizes.rules
    rs = ruleset([rule("f", "DROP", 1, [HTTP])]
                 + [rule(f"d{i}", "DROP", 2, [{"protocol": ["UDP"]}], state="INACTIVE") for i in range(capacity)])
    xdp_engine.apply(rs)  # the enforced rule alone fits: the tables hold it alone
    assert len(rs.kept) == capacity + 1 and xdp_engine._rules.half_state(xdp_engine._rules.active()).nrules == 1
    assert xdp_engine.process(frame_bytes(HTTP_SYN), N6).verdict == Verdict.DROP


def test_rule_counters_survive_an_update_and_removal(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    keep = rule("keep", "DROP", 1, [HTTP])
    xdp_engine.apply(ruleset([keep, rule("gone", "DROP", 0, [{"protocol": ["UDP"]}])]))
    rs1 = xdp_engine.ruleset
    keep_id = next(r.rule_id for r in rs1.rules if r.traffic_rule_id == "keep")
    base = xdp_engine.counters().rules.get(keep_id)
    for _ in range(3):
        xdp_engine.process(frame_bytes(HTTP_SYN), N6)
    xdp_engine.apply(ruleset([keep]))  # "keep" keeps its id (first_id=1): same rule, new generation
    xdp_engine.process(frame_bytes(HTTP_SYN), N6)
    got = xdp_engine.counters().rules[keep_id]
    assert got.packets == (base.packets if base else 0) + 4


def test_full_and_small_rule_sets_alternating_never_run_out_of_counter_slots(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """A removed rule's slot is held for two generations: the array has room for that (maps/counters.py)."""
    from mep.config import Capacity

    capacity = xdp_engine.describe()["capacity"]["rules"]
    full = [rule(f"r{i}", "DROP", filters=[{"dstPort": [str(1000 + i)]}]) for i in range(capacity)]
    for generation in range(1, 7):
        rules = full if generation % 2 else full[:8]
        xdp_engine.apply(ruleset(rules, generation=generation, capacity=Capacity(rules=capacity, filters=capacity)))
        assert len(xdp_engine.ruleset.rules) == len(rules)
    assert xdp_engine.process(frame_bytes(HTTP_SYN), N6).verdict == Verdict.PASS


def test_a_rule_set_beyond_the_loaded_capacity_is_refused(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    generation = xdp_engine.generation
    too_many = [rule(f"r{i}", "DROP", filters=[{"dstPort": [str(i)]}]) for i in range(1100)]
    with pytest.raises(CapacityError, match="traffic filters exceed"):
        xdp_engine.apply(ruleset_unchecked(too_many))
    assert xdp_engine.generation == generation  # nothing applied


def test_more_ipv4_intervals_than_the_address_fields_hold_are_refused(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """The address fields of a half share 2 x (2 x filters + 1,024) IPv4 intervals (mep_addr4): 1,000 filters
    of seven addresses each, none adjacent, make 7,000 destination intervals for the fixture's 6,144."""
    import ipaddress

    base = int(ipaddress.ip_address("198.18.0.0"))
    rules = [rule(f"r{i}", "DROP", filters=[{"dstAddress": [str(ipaddress.ip_address(base + 2 * (7 * i + k)))
                                                           for k in range(7)]}]) for i in range(1000)]
    generation = xdp_engine.generation
    with pytest.raises(CapacityError, match=r"7000 IPv4 address intervals \(7000 of field DST\) exceed the "
                                            r"loaded program's 6144"):
        xdp_engine.apply(ruleset_unchecked(rules))
    assert xdp_engine.generation == generation  # nothing applied


def test_vector_blocks_beyond_the_pool_are_refused(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """prepare() counts the distinct blocks of the vectors and summaries against a half's pool
    (mep_vec_blocks), with room for the two vectors write() replaces: a pool of 64 blocks (the fixture's
    holds 8,192) cannot take 300 rules of the benchmarks' mix, and the error says how many it needs."""
    from bench.rulegen import generate_rules
    from mep.dataplane.maps.classifier import ClassifierMaps
    from mep.dataplane.tables import tables_of

    rs = ruleset(generate_rules(300, seed=300))
    small = ClassifierMaps(xdp_engine._bpf, dataclasses.replace(xdp_engine._sizes, blocks=64), contents_known=True)
    try:
        with pytest.raises(CapacityError, match=r"\d+ classifier vector blocks exceed the loaded program's 64"):
            small.prepare(tables_of(rs.rules, rs.generation))
        prepared = xdp_engine._classifier.prepare(tables_of(rs.rules, rs.generation))  # the loaded pool: fits
        slots = [b for encoded in prepared.vectors.values() for b in encoded]
        assert 64 < len(set(slots)) < len(slots) // 4  # the vectors share most of their blocks
    finally:
        small.close()


def test_the_pool_holds_every_block_its_vectors_name_and_frees_the_rest(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """Rule sets applied one after another (each half rewritten from the last tables it held): after each,
    both halves' pools name exactly the blocks of their vectors, every other index is free, and the
    frames classify as the reference engine says."""
    from bench.rulegen import generate_rules
    from bench.xdp_rules import flows
    from mep.dataplane.tables import build_tables

    capacity = xdp_engine._sizes.blocks
    for n, seed in ((120, 1), (200, 2), (120, 1), (60, 3)):
        rs = ruleset(generate_rules(n, seed=seed), generation=xdp_engine.generation + 1)
        xdp_engine.apply(rs)
        xdp_engine._grace.wait()  # the half left behind is brought up to date after the grace period
        for half in xdp_engine._classifier._halves:
            assert half is not None
            named = {b for encoded in half.vectors.values() for b in encoded}
            assert set(half.blocks.ids) == named
            assert sorted([*half.blocks.ids.values(), *half.blocks.free]) == list(range(capacity))
        reference = ReferenceEngine()
        reference.apply(rs)
        frames = [f for position in ("top", "bottom", "none") for f, _ in flows(rs, build_tables(rs), position, 16,
                                                                                seed=n)]
        assert [(r.verdict, r.rule_id) for r in (xdp_engine.process(f, N6) for f in frames)] == \
            [(r.verdict, r.rule_id) for r in (reference.process(f, N6) for f in frames)]


def ruleset_unchecked(rules):  # type: ignore[no-untyped-def]
    from mep.config import Capacity

    return ruleset(rules, capacity=Capacity(rules=2000, filters=4000))


def test_describe_reports_mode_capacity_and_cflags(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    d = xdp_engine.describe()
    assert d["engine"] == "xdp"
    assert set(d["xdp_modes"].values()) <= {"native", "generic"}
    assert d["xdp_modes"]["n6"] in ("native", "generic")
    assert d["capacity"]["filters"] == 1024
    sets = d["capacity"]["flow_cache_sets_per_cpu"]
    assert sets >= 512 and sets & (sets - 1) == 0
    assert any(f.startswith("-DMEP_MAX_FILTERS=") for f in d["cflags"])
    # 1,024 filters: 2,560 vectors and 8,192 blocks of 64 bytes a half, two halves
    assert d["capacity"]["vector_blocks"] == 8192
    mib = d["map_mib"]
    assert 2 * 8192 * 64 / 2**20 < mib["classifier"] < mib["all"] and 0 < mib["flow_cache"] < mib["all"]


def test_more_flows_than_cache_ways_still_classify_exactly(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """The flow cache (2 ways a set, 1024 sets a CPU at this capacity) under 3x its ways:
    evictions, hits in either way and refills must all give the classifier's answer."""
    rules = [rule("low", "DROP", priority=5, filters=[{"dstPort": ["1000-1999"]}]),
             rule("tcp", "PASSTHROUGH", priority=6, filters=[{"protocol": ["TCP"], "srcPort": ["30000-34999"]}]),
             rule("high", "DROP", priority=7, filters=[{"dstPort": ["2000-2999"], "protocol": ["TCP"]}])]
    rs = ruleset(rules)
    xdp_engine.apply(rs)
    reference = ReferenceEngine()
    reference.apply(rs)
    ways = 2 * xdp_engine.describe()["capacity"]["flow_cache_sets_per_cpu"]
    frames = [frame_bytes(tcp(sport=30000 + i % 9000, dport=500 + (i * 7) % 3000)) for i in range(3 * ways)]
    want = [(r.verdict, r.rule_id) for r in (reference.process(f, N6) for f in frames)]
    assert {w[1] for w in want} >= {r.rule_id for r in rs.rules} | {0}  # every rule and no rule
    for order in (frames, frames, frames[::-1]):  # fill, then hits and evictions in both directions
        got = {f: xdp_engine.process(f, N6) for f in order}
        assert [(got[f].verdict, got[f].rule_id) for f in frames] == want


@pytest.mark.parametrize("ports", [4400, 4095], ids=["69 words", "64 words"])
def test_matches_past_the_first_key_summary_word_are_found(ports: int) -> None:  # type: ignore[no-untyped-def]
    """One key summary word names 64 vector words (4,096 filters): a match in a later word, one of a filter
    keyed on no field at the very end, and no match, each as the reference engine says; past one summary
    word (the walk through scratch) and at exactly 64 words (the walk of one register's bits, to its top
    bit)."""
    import shutil
    from pathlib import Path

    from mep.config import Capacity, Config, DataplaneConfig
    from mep.dataplane.tables import build_tables
    from mep.dataplane.xdp import XdpEngine
    from tests.fixtures.netns import make_ports_netns, remove_netns
    from tests.packets import PORTS

    capacity = Capacity(rules=5000, filters=8192, flows=4096, dns_names=64)
    rules = [rule(f"p{i}", "DROP", 10, [{"protocol": ["UDP"], "dstPort": [str(10_000 + i)]}]) for i in range(ports)]
    rules.append(rule("catch-all", "PASSTHROUGH", 200, [{}]))  # keyed on nothing: the last filter
    rs = ruleset(rules, capacity=capacity)
    assert build_tables(rs).nwords == -(-(ports + 1) // 64)
    reference = ReferenceEngine()
    reference.apply(rs)
    late = 10_000 + ports - 100
    frames = [frame_bytes(p) for p in (udp(dport=10_005), udp(dport=late), udp(dport=10_000 + ports - 1),
                                       udp(dport=9_999), tcp(dport=late))]
    want = [(r.verdict, r.rule_id) for r in (reference.process(f, N6) for f in frames)]
    assert [w[1] for w in want] == [rs.rules[5].rule_id, rs.rules[ports - 100].rule_id, rs.rules[ports - 1].rule_id,
                                    rs.rules[ports].rule_id, rs.rules[ports].rule_id]
    netns_name = make_ports_netns(f"mep-test-keys-{os.getpid()}")
    pin_root = Path("/sys/fs/bpf") / f"mep-test-keys-{os.getpid()}"
    engine = None
    try:
        engine = XdpEngine(Config(instance="keys", dataplane=DataplaneConfig(
            ports=PORTS, capacity=capacity, pin_root=pin_root)), netns=netns_name)
        engine.apply(rs)
        assert [(r.verdict, r.rule_id) for r in (engine.process(f, N6) for f in frames)] == want
    finally:
        if engine is not None:
            engine.detach(unpin=True)
            engine.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        remove_netns(netns_name)


def test_maps_pinned_with_another_capacity_are_refused_with_the_fix() -> None:  # type: ignore[no-untyped-def]
    """bcc opens a pinned map as it is: a build of another layout or capacity must not adopt it."""
    import shutil
    from pathlib import Path

    from mep.config import Capacity, Config, DataplaneConfig
    from mep.dataplane.maps.abi import PROGS_PIN_PREFIX, Sizes
    from mep.dataplane.xdp import XdpEngine
    from mep.errors import LoadError
    from tests.fixtures.netns import make_ports_netns, remove_netns
    from tests.packets import PORTS

    def config(filters: int) -> Config:
        return Config(instance="pinned", dataplane=DataplaneConfig(
            ports=PORTS, capacity=Capacity(rules=512, filters=filters, flows=4096, dns_names=64), pin_root=pin_root))

    netns_name = make_ports_netns(f"mep-test-pins-{os.getpid()}")
    pin_root = Path("/sys/fs/bpf") / f"mep-test-pins-{os.getpid()}"
    try:
        first = XdpEngine(config(1024), netns=netns_name)
        first.close()  # leaves its maps pinned and its program attached
        assert first.describe()["map_mib"] == {} and first.describe()["capacity"]["filters"] == 1024  # no maps to read
        pinned = sorted(p.name for p in (pin_root / "pinned").iterdir())
        with pytest.raises(LoadError) as err:
            XdpEngine(config(2048), netns=netns_name)
        assert f"the maps pinned under {pin_root / 'pinned'} were made by a build with another" in str(err.value)
        # 1,024 filters: a half's vectors, each the two-byte indexes of a block for the key summary and one
        # for each key pair slot's (padded to 16 bytes), then of its 16 words of filter bits in two blocks,
        # rounded up to 8 bytes
        vectors = Sizes.from_capacity(config(1024).dataplane.capacity).vectors
        assert 2 * (1 + MAX_KEY_PAIRS) <= 16
        assert f"mep_vectors: pinned with 4-byte keys, {vectors * 24}-byte values" in str(err.value)
        assert "ip link set dev IFNAME xdp off" in str(err.value)
        # nothing of the refused load is left pinned: the next start adopts the maps it found
        assert sorted(p.name for p in (pin_root / "pinned").iterdir()) == pinned
        assert sum(name.startswith(PROGS_PIN_PREFIX) for name in pinned) == 1
        XdpEngine(config(1024), netns=netns_name).close()
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
        remove_netns(netns_name)


def test_the_program_verifies_at_the_largest_capacity_the_config_accepts() -> None:  # type: ignore[no-untyped-def]
    """The scan is verified once per 64 filters: at the most filters `dataplane.capacity.filters` allows the
    program must still fit the verifier's budget (a flow-cache key change once pushed it over at 32,768
    while every smaller test capacity loaded)."""
    import shutil
    from pathlib import Path

    from bcc import BPF
    from pydantic import ValidationError

    from mep.config import Capacity
    from mep.dataplane.maps.abi import Sizes, cflags
    from mep.dataplane.xdp import program_text

    largest = 32_768
    with pytest.raises(ValidationError):
        Capacity(filters=largest + 1)
    sizes = Sizes.from_capacity(Capacity(rules=20_000, filters=largest))
    pin_dir = Path("/sys/fs/bpf") / f"mep-test-largest-{os.getpid()}"
    pin_dir.mkdir(parents=True)
    bpf = None
    try:
        bpf = BPF(text=program_text().encode(), cflags=cflags(sizes, pin_dir))
        for name in (b"mep_xdp", b"mep_xdp_classify_rev"):  # the forward scan is in the first, the reverse in the second
            assert bpf.load_func(name, BPF.XDP).fd >= 0
    finally:
        if bpf is not None:
            bpf.cleanup()
        shutil.rmtree(pin_dir, ignore_errors=True)


def test_every_map_s_python_mirror_is_the_size_the_kernel_made(xdp_engine) -> None:  # type: ignore[no-untyped-def]
    """The owners in maps/ write bcc's ctypes mirrors of the C types: one of another size would write
    past its buffer (bcc mirrors a[3][2] as a[3]; abi.h keeps arrays flat)."""
    from mep.dataplane.testrun import map_shape
    from mep.dataplane.xdp import declared_maps

    names = declared_maps()
    assert len(names) > 15
    for name in names:
        table = xdp_engine._bpf[name.encode()]
        have = map_shape(table.map_fd)
        leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU tables: Leaf is sLeaf x CPUs
        assert (ctypes.sizeof(table.Key), ctypes.sizeof(leaf)) == (have.key_size, have.value_size), name
