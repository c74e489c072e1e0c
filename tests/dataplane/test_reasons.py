"""Every verdict and reason in ebpf/reasons.h is exercised by at least one case."""
from __future__ import annotations

from mep.dataplane.reasons import REASON_VERDICT, Reason, Verdict
from tests.dataplane.cases import CASES


def test_every_reason_has_a_case() -> None:
    covered = {c.reason for c in CASES}
    missing = sorted(r.name for r in Reason if r.name not in covered)
    assert not missing, f"reasons without a case in tests/dataplane/cases.py: {missing}"


def test_every_verdict_has_a_reason() -> None:
    assert set(REASON_VERDICT.values()) == set(Verdict)


def test_case_reasons_belong_to_their_verdicts() -> None:
    for case in CASES:
        assert REASON_VERDICT[Reason[case.reason]].name == case.verdict, case.id
