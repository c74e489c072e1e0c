"""Markers whose skips print the reason, and the shared fixture plugins.

Tiers (STYLE.md section 7): tests/unit needs nothing; tests marked needs_root
or needs_bpf run in CI (root) and skip elsewhere with the reason shown by -ra.
"""
from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.etcd",
    "tests.fixtures.mep_daemon",
    "tests.fixtures.netns",
]


def _root_reason() -> str | None:
    return None if os.geteuid() == 0 else "needs root (network namespaces, BPF); CI runs as root"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _root_reason()
    if reason is None:
        return
    for item in items:
        if "needs_root" in item.keywords or "needs_bpf" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
