"""Every row of cases.CASES through every engine: verdict, reason, rule, output bytes, counters."""
from __future__ import annotations

import pytest
from scapy.layers.l2 import Ether

from mep.dataplane.ruleset import CompiledRuleSet
from tests.dataplane.cases import CASES, Case, frame_bytes
from tests.dataplane.conftest import EngineFactory
from tests.rulesets import ruleset


def rule_id_of(rs: CompiledRuleSet, traffic_rule_id: str | None) -> int:
    if traffic_rule_id is None:
        return 0
    return next(r.rule_id for r in rs.rules if r.traffic_rule_id == traffic_rule_id)


def describe(frame: bytes) -> str:
    return Ether(frame).show2(dump=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(engine_factory: EngineFactory, case: Case) -> None:
    rs = ruleset(case.rules, default_action=case.default_action)
    engine = engine_factory()
    if len(frame_bytes(case.packet)) < engine.min_frame_bytes:
        pytest.skip(f"{engine.name} never sees frames shorter than {engine.min_frame_bytes} bytes")
    engine.apply(rs)
    for frame, port in case.setup:
        engine.process(frame_bytes(frame), port)
    before = engine.counters().as_dict()
    data = frame_bytes(case.packet)

    result = engine.process(data, case.ingress)

    assert (result.verdict.name, result.reason.name) == (case.verdict, case.reason)
    assert result.rule_id == rule_id_of(rs, case.rule)
    assert result.reverse == case.reverse
    got = [(o.port, o.frame) for o in result.outputs]
    want = [(port, frame_bytes(f)) for port, f in case.outputs]
    assert [p for p, _ in got] == [p for p, _ in want]
    for (port, g), (_, w) in zip(got, want):
        assert g == w, f"output to port {port} differs:\n--- got\n{describe(g)}\n--- want\n{describe(w)}"

    after = engine.counters().as_dict()
    for table, key in (("verdicts", case.verdict), ("reasons", case.reason), ("rules", result.rule_id or None)):
        if key is None:
            continue
        packets0, bytes0 = before[table].get(key, (0, 0))
        assert after[table][key] == (packets0 + 1, bytes0 + len(data)), f"{table}[{key}]"
