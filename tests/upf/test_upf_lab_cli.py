"""``upf-sim lab`` end to end (root): builds the topology, runs UPF, gNB and generator, tears down.

The generator's count and the UPF's must agree ("send N, count N"), and
nothing the command made may be left behind.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from pyroute2 import netns

from tests.fixtures.mep_daemon import ROOT

pytestmark = pytest.mark.needs_root


def test_upf_sim_lab_sends_and_counts_every_g_pdu() -> None:
    out = subprocess.run([sys.executable, "-m", "upf_sim.cli", "lab", "--ues", "8", "--flows", "2",
                          "--mix", "udp/64:4,tcp/64:1,icmp/570:1", "--rate", "50000", "--packets", "30000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the UPF decapsulated 30,000 of 30,000 G-PDUs sent, none lost" in out.stdout
    assert re.search(r"UPF_UL_FORWARDED\s+30,000", out.stdout), out.stdout
    assert "DROP" not in out.stdout
    tag = re.search(r"^lab (\w+):", out.stdout, re.M)
    assert tag is not None, out.stdout
    assert [n for n in netns.listnetns() if n.endswith(f"-{tag.group(1)}")] == []  # the lab is gone
