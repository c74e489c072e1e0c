"""Reference vs XDP on random rule sets and random frames: same verdict, reason, rule id and bytes.

The reference engine is the spec (DESIGN.md section 3). Each example draws
a rule set (1 to 300 rules), applies it to both engines, and runs a batch
of frames (valid, malformed, truncated; from every port) through both;
replies to steered FLOW packets are synthesised and sent back from the
port they went to, so reverse-flow state is compared too
(tests/dataplane/differential.py).
"""
from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from mep.dataplane.reference import ReferenceEngine
from mep.errors import CompileError
from tests.dataplane.differential import frame_lists, rule_sets, run_frames
from tests.rulesets import ruleset

pytestmark = pytest.mark.needs_bpf

# CI runs thousands of frames; MEP_DIFFERENTIAL_EXAMPLES raises it for a soak.
EXAMPLES = int(os.environ.get("MEP_DIFFERENTIAL_EXAMPLES", "1000"))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(rules=rule_sets(), frames=frame_lists())
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
    run_frames(ref, [xdp_engine], frames)
