"""Rule counters through every engine: a rule's totals live as long as the engine, across rule sets."""
from __future__ import annotations

from tests.dataplane.cases import HTTP, HTTP_SYN, frame_bytes
from tests.dataplane.conftest import EngineFactory
from tests.packets import N6
from tests.rulesets import rule, ruleset


def test_a_rule_removed_and_added_again_continues_its_totals(engine_factory: EngineFactory) -> None:
    engine = engine_factory()
    counted = rule("counted", "DROP", 1, [HTTP])
    other = rule("other", "DROP", 2, [{"protocol": ["UDP"]}])
    engine.apply(ruleset([counted, other]))
    before = engine.counters().rules.get(1)
    frame = frame_bytes(HTTP_SYN)
    for _ in range(2):
        assert engine.process(frame, N6).rule_id == 1
    engine.apply(ruleset([other], generation=2, first_id=2))  # "counted" (id 1) removed
    assert engine.process(frame, N6).rule_id == 0
    engine.apply(ruleset([counted, other], generation=3))  # and back, with its id
    assert engine.process(frame, N6).rule_id == 1
    got = engine.counters().rules[1]
    assert got.packets == (before.packets if before else 0) + 3
    assert got.bytes == (before.bytes if before else 0) + 3 * len(frame)
