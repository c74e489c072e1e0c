"""The bit-vector tables classify exactly like the reference engine's linear scan."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mep.dataplane.packet import Parsed, parse
from mep.dataplane.reference import classify
from mep.dataplane.tables import Field, build_tables, iter_value_classes, lookup, VALUE_DOMAIN
from tests.rulesets import rule, ruleset
from tests.strategies import frame, rule_list


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_list(max_rules=20), frames=st.lists(frame(), min_size=1, max_size=8))
def test_tables_agree_with_the_linear_scan(rules: list[dict], frames: list[bytes]) -> None:  # type: ignore[type-arg]
    rs = ruleset(rules)
    tables = build_tables(rs)
    for data in frames:
        p = parse(data)
        if not isinstance(p, Parsed):
            continue
        hit = classify(rs, p)
        want = None if hit is None else (rs.rules.index(hit[0]), hit[1])
        assert lookup(tables, p) == want


def test_value_runs_cover_the_domain_and_absent() -> None:
    tables = build_tables(ruleset([rule("a", filters=[{"dstPort": ["80", "90-100"]}, {"dstPort": ["95"]}])]))
    runs = list(iter_value_classes(tables.fields[Field.DPORT]))
    assert runs[0][0] == 0 and runs[-1] == (65536, 65536, 0)
    assert all(a[1] + 1 == b[0] for a, b in zip(runs, runs[1:]))
    classes = tables.fields[Field.DPORT].classes
    by_port = {lo: classes[c] for lo, _, c in runs}
    assert by_port[80] == 0b01 and by_port[95] == 0b11 and by_port[90] == 0b01 and by_port[0] == 0


def test_unused_fields_are_reported_unused() -> None:
    tables = build_tables(ruleset([rule("a", filters=[{"protocol": ["UDP"]}])]))
    assert tables.used_fields == 1 << Field.PROTO
    assert tables.nwords == 1 and VALUE_DOMAIN[Field.PROTO] == 256
