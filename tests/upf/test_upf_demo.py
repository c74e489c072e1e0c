"""``make demo ARGS=--once``, as CI runs it (root, no terminal): every expectation holds, nothing is left behind."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyroute2 import netns

from tests.fixtures.mep_daemon import ROOT

pytestmark = pytest.mark.needs_root


def test_demo_runs_once_and_its_checks_pass() -> None:
    out = subprocess.run([sys.executable, "-m", "mep.demo", "--once", "--seconds", "3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "every expectation held" in out.stdout
    assert "FAIL" not in out.stdout
    for step in ("MEPM instantiates two apps", "traffic with both apps READY",
                 "MEPM terminates video-analytics", "tearing down"):
        assert step in out.stdout
    assert "ok   teardown left no namespace and no pinned map" in out.stdout
    tag = re.search(r"namespaces: mep-ran-(\w+),", out.stdout)
    assert tag is not None and [n for n in netns.listnetns() if n.endswith(f"-{tag.group(1)}")] == []
    workdir = out.stdout.split("work directory ", 1)[1].split()[0]
    assert not Path(workdir).exists()  # removed unless --keep
