"""Rule sets keyed on pairs of fields (tables.py) classify as the reference at every match position, in every engine.

bench/rulegen.py's mix, the benchmarks' rule set, keys most of its filters on
five pairs of fields (a server and a port, a source and a server, a server
and a DSCP, a port range and a protocol). 400 of its rules make 9 vector words:
enough for the Cython engine to read summaries (it ANDs rule sets under 8
words whole) and for XDP's scan to walk candidate words. The frames are the
benchmark's own (bench/xdp_rules.flows): matched first at the top, the
middle and the bottom of the order, and matched by nothing.
"""
from __future__ import annotations

import pytest

from bench.rulegen import generate_rules
from bench.xdp_rules import POSITIONS, flows
from mep.dataplane.reference import ReferenceEngine
from mep.dataplane.tables import MAX_KEY_PAIRS, build_tables
from tests.dataplane.conftest import EngineFactory
from tests.packets import N6
from tests.rulesets import ruleset

RULES = 400


@pytest.fixture(scope="module")
def mix():  # type: ignore[no-untyped-def]
    rs = ruleset(generate_rules(RULES, seed=RULES))
    tables = build_tables(rs)
    frames = {position: flows(rs, tables, position, 48, seed=RULES) for position in POSITIONS}
    return rs, tables, frames


def test_the_mix_is_keyed_on_pairs(mix) -> None:  # type: ignore[no-untyped-def]
    _, tables, frames = mix
    assert len(tables.pairs) == MAX_KEY_PAIRS and tables.nwords >= 8
    assert all(len(f) == 48 for f in frames.values())


def test_every_engine_classifies_the_mix_as_the_reference(engine_factory: EngineFactory, mix) -> None:  # type: ignore[no-untyped-def]
    rs, tables, frames = mix
    engine, reference = engine_factory(), ReferenceEngine()
    engine.apply(rs)
    reference.apply(rs)
    for position, batch in frames.items():
        for frame, index in batch:
            want = reference.process(frame, N6)
            got = engine.process(frame, N6)
            assert (got.verdict, got.reason, got.rule_id) == (want.verdict, want.reason, want.rule_id), position
            assert want.rule_id == (rs.rules[index].rule_id if index >= 0 else 0), position
