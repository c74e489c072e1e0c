"""Incremental compilation: a rule change costs its own rules, and gives exactly what compiling from scratch gives.

A real StateView takes random writes (traffic and DNS rules put and deleted,
apps created, moved through their lifecycle and deleted, whole
configurations replaced). Its snapshots, derived from the previous ones,
must equal snapshots built from scratch, and compiling them with one
RuleCache (as the daemon does, through the store's check path or not) must
give exactly the CompiledRuleSet, or the CompileError, that compiling the
scratch snapshot without a cache gives: same rules in the same order, same
DNS rules, same problems.
"""
from __future__ import annotations

from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mep.config import Capacity
from mep.dataplane.compiler import RuleCache, StaticResolver, compile_few, compile_ruleset
from mep.dataplane.ruleset import CompiledRuleSet
from mep.errors import CompileError, Conflict, NotFound, PreconditionFailed
from mep.models import DnsRule, TrafficRule
from mep.sorted_tuples import edited
from mep.state import AppConfig, AppInstance, EventKind, LifecycleEvent, Snapshot
from mep.state.view import Plan, StateView
from tests.dataplane.cases import TO_APP1_MAC, TO_APP2_MAC
from tests.rulesets import dataplane_config, rule

APPS = st.sampled_from(("a", "a", "a", "b", "c"))  # mostly the READY app (set up in the test)
KEYS = ("r0", "r1", "r2", "r3", "r4")
NAMES = ("one.test", "two.test")
# Small enough that some rule sets exceed it: the capacity check runs on the kept counts.
CONFIG = dataplane_config(capacity=Capacity(rules=4, filters=7, dns_names=1))
RESOLVER = StaticResolver.from_config(CONFIG)
# The same ports without neighbours: rules delivering to app MACs stop resolving (a new fingerprint).
NO_NEIGHBOURS = StaticResolver(RESOLVER.ports(), {})

traffic_rules = st.builds(
    lambda key, priority, action, filters, state: TrafficRule.model_validate(
        rule(key, action="DROP" if action is None else "FORWARD_DECAPSULATED", priority=priority,
             filters=[{"protocol": ["UDP"], "dstPort": [str(1000 + i)]} for i in range(filters)],
             dst=action, state=state)
    ),
    st.sampled_from(KEYS),
    st.integers(0, 3),  # few priorities: ties are broken by rule id
    st.sampled_from([None, None, TO_APP1_MAC, TO_APP2_MAC, TO_APP1_MAC,
                     {"interfaceType": "MAC", "dstMacAddress": "02:00:00:00:99:99"}]),  # the last one never resolves
    st.integers(1, 3),
    st.sampled_from(["ACTIVE", "ACTIVE", "INACTIVE"]),
)
dns_rules = st.builds(
    lambda key, name, state: DnsRule.model_validate(
        {"dnsRuleId": key, "domainName": name, "ipAddressType": "IP_V4", "ipAddress": "198.19.1.10",
         "state": state}
    ),
    st.sampled_from(KEYS),
    st.sampled_from(NAMES),
    st.sampled_from(["ACTIVE", "INACTIVE"]),
)
Write = Callable[[StateView], Plan[Any]]
put_traffic_rule = st.builds(lambda app, r: lambda v: v.plan_put_traffic_rule(app, r, expected_revision=None),
                             APPS, traffic_rules)
other_writes: st.SearchStrategy[Write] = st.one_of(
    st.builds(lambda app, key: lambda v: v.plan_delete_child(app, EventKind.TRAFFIC_RULE, key),
              APPS, st.sampled_from(KEYS)),
    st.builds(lambda app, r: lambda v: v.plan_put_dns_rule(app, r, expected_revision=None),
              APPS, dns_rules),
    st.builds(lambda app, key: lambda v: v.plan_delete_child(app, EventKind.DNS_RULE, key),
              APPS, st.sampled_from(KEYS)),
    st.builds(lambda app, event: lambda v: v.plan_transition_app(app, event, expected_revision=None, now=0.0),
              APPS, st.sampled_from(list(LifecycleEvent))),
    st.builds(lambda app, ready: lambda v: v.plan_create_app(
        AppInstance(appInstanceId=app, confirm_ready_required=ready), now=0.0), APPS, st.booleans()),
    st.builds(lambda app: lambda v: v.plan_delete_app(app), APPS),
    st.builds(lambda app, rules, generation: lambda v: v.plan_replace_app_config(
        app, AppConfig(traffic_rules=tuple({r.trafficRuleId: r for r in rules}.values())), generation=generation,
        now=0.0), APPS, st.lists(traffic_rules, max_size=4), st.integers(1, 1000)),
)
# Mostly traffic-rule PUTs: what the question is about (one_of would flatten and weigh every write alike).
writes = st.integers(0, 9).flatmap(lambda n: put_traffic_rule if n < 6 else other_writes)
# How the compiler meets the write: through the store's check (the previewed snapshot, kept on commit),
# the compile loop after it (the view's snapshot), or not at all yet (several writes become one compilation).
paths = st.sampled_from(["check", "loop", "later"])


def from_scratch(view: StateView) -> Snapshot:
    """The view's state as a Snapshot built directly: apps by id, rules sorted by rule id."""
    apps = sorted(view.apps.items())
    return Snapshot(
        revision=view.revision,
        apps={app_id: a.app for app_id, a in apps},
        traffic_rules=tuple(sorted((r for _, a in apps for r in a.traffic_rules.values()), key=lambda r: r.rule_id)),
        dns_rules=tuple(sorted((r for _, a in apps for r in a.dns_rules.values()), key=lambda r: r.rule_id)),
    )


def outcome(snapshot: Snapshot, resolver: StaticResolver, cache: RuleCache | None, limit: int | None = None) -> Any:
    """The CompiledRuleSet, or the refusal's type and problems; with ``limit``, compile_few first (as the daemon)."""
    try:
        if cache is not None and limit is not None:
            few = compile_few(snapshot, config=CONFIG, resolver=resolver, generation=1, cache=cache, limit=limit)
            if few is not None:
                return few
        return compile_ruleset(snapshot, config=CONFIG, resolver=resolver, generation=1, cache=cache)
    except CompileError as exc:  # CapacityError included
        return type(exc), exc.problems


def check_compiled(
    snapshot: Snapshot, view: StateView, resolver: StaticResolver, cache: RuleCache, limit: int | None = None
) -> None:
    scratch = from_scratch(view)
    assert snapshot.model_dump() == scratch.model_dump()
    got, want = outcome(snapshot, resolver, cache, limit), outcome(scratch, resolver, None)
    assert got == want
    if isinstance(got, CompiledRuleSet):
        found = {rule_id for rule_id in range(1, view.next_rule_id) if got.rule(rule_id) is not None}
        assert found == {r.rule_id for r in got.rules}
        assert all(got.rule(r.rule_id) is r for r in got.rules)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(writes, paths, st.integers(0, 9)), min_size=5, max_size=60))
def test_incremental_compilation_equals_compiling_from_scratch(steps: list[tuple[Write, str, int]]) -> None:
    view, cache = StateView(), RuleCache()
    # Apps a (READY), b (INSTANTIATED: waits for confirm_ready) and c (NOT_INSTANTIATED).
    for app_id, ready in (("a", False), ("b", True), ("c", True)):
        change, _ = view.plan_create_app(AppInstance(appInstanceId=app_id, confirm_ready_required=ready), now=0.0)
        assert change is not None and view.apply(change)
    for app_id in ("a", "b"):
        change, _ = view.plan_transition_app(app_id, LifecycleEvent.INSTANTIATE, expected_revision=None, now=0.0)
        assert change is not None and view.apply(change)
    for write, path, dice in steps:
        # Now and then the resolver's answers change, or a snapshot arrives that the store did not derive.
        resolver = NO_NEIGHBOURS if dice == 0 else RESOLVER
        try:
            change, _ = write(view)
        except (Conflict, NotFound, PreconditionFailed):  # the store refused the write: nothing changes
            continue
        if change is None:
            continue
        if path == "check":
            preview = view.preview(change)
            assert view.apply(change)
            view.keep_snapshot(preview)
            check_compiled(preview, view, resolver, cache, limit=dice % 4)  # compile_few, then (maybe) in full
            assert view.snapshot() is preview
        else:
            assert view.apply(change)
        if path == "loop":
            check_compiled(view.snapshot(), view, resolver, cache)
        if dice == 9:
            scratch = from_scratch(view)
            assert outcome(scratch, resolver, cache) == outcome(scratch, resolver, None)
    check_compiled(view.snapshot(), view, RESOLVER, cache)


@given(st.lists(st.integers(0, 50), unique=True), st.lists(st.integers(0, 60)), st.lists(st.integers(0, 60)))
def test_edited_equals_sorting_again(items: list[int], drop: list[int], add: list[int]) -> None:
    start = tuple(sorted(items))
    added = list(dict.fromkeys(add))
    want = tuple(sorted(({*start} - {*drop} - {*added}) | {*added}))
    assert edited(start, lambda x: x, drop, added) == want


def test_compile_few_compiles_a_few_changed_rules_at_once_and_otherwise_answers_none() -> None:
    view, cache = StateView(), RuleCache()
    for write in (lambda v: v.plan_create_app(AppInstance(appInstanceId="a", confirm_ready_required=False), now=0.0),
                  lambda v: v.plan_transition_app("a", LifecycleEvent.INSTANTIATE, expected_revision=None, now=0.0)):
        change, _ = write(view)
        assert change is not None and view.apply(change)

    def put(key: str, priority: int) -> Snapshot:
        change, _ = view.plan_put_traffic_rule("a", TrafficRule.model_validate(rule(key, priority=priority)),
                                               expected_revision=None)
        assert change is not None and view.apply(change)
        return view.snapshot()

    def few(snapshot: Snapshot, limit: int) -> CompiledRuleSet | None:
        return compile_few(snapshot, config=CONFIG, resolver=RESOLVER, generation=1, cache=cache, limit=limit)

    assert few(put("r0", 1), limit=0) is None  # nothing kept yet: every rule would be compiled
    for key in ("r1", "r2"):
        put(key, 1)
    assert few(view.snapshot(), limit=2) is None  # three rules, none compiled before
    first = few(view.snapshot(), limit=3)
    assert first is not None and [r.traffic_rule_id for r in first.rules] == ["r0", "r1", "r2"]
    changed = put("r1", 0)
    assert few(changed, limit=0) is None
    cache._lock.acquire()  # another thread compiling: compile_few does not wait
    try:
        assert few(changed, limit=1) is None
    finally:
        cache._lock.release()
    again = few(changed, limit=1)
    assert again is not None and [r.traffic_rule_id for r in again.rules] == ["r1", "r0", "r2"]
    assert again == compile_ruleset(changed, config=CONFIG, resolver=RESOLVER, generation=1)
