"""``mep doctor`` on this machine: every check OK, and nothing left behind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHECKS = ["kernel", "btf", "kernel headers", "bpffs", "bcc", "test-run", "xdp native", "xdp generic", "etcd", "sqlite"]


def _netns() -> set[str]:
    from pyroute2 import netns

    return set(netns.listnetns())


@pytest.mark.needs_root
def test_doctor_is_all_ok(tmp_path: Path) -> None:
    cfg = tmp_path / "mep.yaml"
    cfg.write_text(f"store:\n  sqlite:\n    path: {tmp_path / 'mep.db'}\nadmin:\n  socket: {tmp_path / 'admin.sock'}\n")
    before = _netns()
    proc = subprocess.run([sys.executable, "-m", "mep.cli", "doctor", "-c", str(cfg)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line[5:20].strip() for line in lines] == CHECKS
    status = {line[5:20].strip(): line[:4].strip() for line in lines}
    assert status.pop("etcd") == "n/a"  # the configured store is sqlite
    assert set(status.values()) == {"OK"}, proc.stdout
    assert _netns() == before, "doctor left a network namespace behind"
    assert not (tmp_path / "mep.db").exists(), "doctor must not create the database"


@pytest.mark.needs_root
def test_doctor_fails_with_a_fix_when_the_store_is_unreachable(tmp_path: Path) -> None:
    cfg = tmp_path / "mep.yaml"
    cfg.write_text("store:\n  backend: etcd\n  etcd:\n    endpoints: ['127.0.0.1:1']\n    timeout_s: 1\n")
    proc = subprocess.run([sys.executable, "-m", "mep.cli", "doctor", "-c", str(cfg)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    etcd = next(line for line in proc.stdout.splitlines() if line[5:20].strip() == "etcd")
    assert etcd.startswith("FAIL") and "fix: start etcd" in etcd
    assert proc.stdout.splitlines()[-1] == "1 check(s) failed"
