"""Every verdict and reason in ebpf/reasons.h is exercised by at least one test.

Most reasons have a row in cases.CASES, run through every engine. A few can
only happen inside the native data plane (a DUPLICATE copy racing a rule
change, a kernel helper failing, the XDP DNS responder); NATIVE_ONLY names
the test that triggers each, and this file checks that test exists.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from mep.dataplane.reasons import REASON_VERDICT, FibOutcome, Reason, Verdict
from tests.dataplane.cases import CASES

NATIVE_ONLY = {
    "DROP_COPY_STALE": "tests.dataplane.test_xdp_engine:test_a_copy_whose_rule_changed_is_dropped_as_stale",
    "DROP_INTERNAL": "tests.dataplane.test_xdp_engine:test_a_missing_devmap_slot_is_an_internal_drop",
    # The DNS responder's verdicts: its spec is mep/dns/twin.py, not the traffic-rule reference.
    "TX_DNS_ANSWER": "tests.dataplane.test_xdp_dns:test_answers_match_the_twin",
    "PASS_DNS_QUERY": "tests.dataplane.test_xdp_dns:test_what_xdp_does_not_answer_goes_to_user_space",
}


def test_every_reason_has_a_case() -> None:
    covered = {c.reason for c in CASES} | set(NATIVE_ONLY)
    missing = sorted(r.name for r in Reason if r.name not in covered)
    assert not missing, f"reasons without a case in tests/dataplane/cases.py: {missing}"


def test_native_only_reasons_name_real_tests() -> None:
    for reason, target in NATIVE_ONLY.items():
        assert reason in Reason.__members__
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_every_verdict_has_a_reason() -> None:
    assert set(REASON_VERDICT.values()) == set(Verdict)


def test_case_reasons_belong_to_their_verdicts() -> None:
    for case in CASES:
        assert REASON_VERDICT[Reason[case.reason]].name == case.verdict, case.id


LINUX_BPF_H = Path("/usr/include/linux/bpf.h")


def test_fib_outcomes_below_16_are_the_kernels_codes() -> None:
    """fib.h counts bpf_fib_lookup's return code as the outcome: names and numbers as in the uapi header."""
    if not LINUX_BPF_H.is_file():
        pytest.skip(f"{LINUX_BPF_H} is missing (apt-get install linux-libc-dev)")
    enum = re.search(r"enum\s*\{\s*(BPF_FIB_LKUP_RET_SUCCESS.*?)\}", LINUX_BPF_H.read_text(), re.S)
    assert enum, f"no BPF_FIB_LKUP_RET_* enum in {LINUX_BPF_H}"
    kernel = {name: number for number, name in enumerate(re.findall(r"BPF_FIB_LKUP_RET_(\w+)", enum.group(1)))}
    ours = {o.name: int(o) for o in FibOutcome if o < 16}
    assert ours.pop("FORWARDED") == kernel.pop("SUCCESS")
    assert ours == {name: number for name, number in kernel.items() if name in ours}
    # the kernel's codes fib.h never sees (a flag it does not pass) are counted under NOT_FWDED
    assert set(kernel) - set(ours) <= {"NO_SRC_ADDR"}
