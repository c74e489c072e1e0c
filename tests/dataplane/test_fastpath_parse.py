"""The Cython parser agrees with the Python spec on every frame: valid, malformed, random."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from mep.dataplane import _fastpath
from mep.dataplane.packet import inet_checksum, parse
from tests.dataplane.cases import CASES, frame_bytes
from tests.strategies import any_frame


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_frames(case) -> None:  # type: ignore[no-untyped-def]
    data = frame_bytes(case.packet)
    assert _fastpath.parse(data) == parse(data)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_frame)
def test_random_frames(data: bytes) -> None:
    assert _fastpath.parse(data) == parse(data)


@settings(max_examples=300, deadline=None)
@given(data=any_frame)
def test_checksum(data: bytes) -> None:
    assert _fastpath.inet_checksum(data) == inet_checksum(data)
