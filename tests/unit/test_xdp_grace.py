"""The XDP engine's grace thread (mep/dataplane/xdp.py _Grace): membarrier, then the flip's follow-up work."""
from __future__ import annotations

import pytest

from mep.dataplane.xdp import _Grace
from mep.errors import DataplaneError


def test_the_grace_thread_runs_what_follows_a_flip_and_reports_its_failure_without_dying() -> None:
    grace = _Grace()
    try:
        seen: list[int] = []
        grace.start(after=lambda: seen.append(1))
        grace.wait()
        assert seen == [1] and not grace.busy
        grace.start(after=lambda: seen.append(1 // 0))
        with pytest.raises(DataplaneError, match="ZeroDivisionError"):
            grace.wait()
        grace.start()  # the thread still serves the next flip
        grace.wait()
        assert not grace.busy and seen == [1]
    finally:
        grace.close()
