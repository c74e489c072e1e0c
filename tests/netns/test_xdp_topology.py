"""The XDP engine on the lab topology (DESIGN.md section 7), with real packets through real veths.

Steered TCP reaches the app and its replies come back to the UE through the
FLOW state; everything else reaches the DN; DROP drops; DUPLICATE copies
reach app2 while the original reaches the DN; rule-set swaps under a steady
stream lose nothing; a restarted control plane adopts the running program
without losing a packet.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from mep.config import Capacity, Config, DataplaneConfig
from mep.dataplane.compiler import compile_ruleset
from mep.dataplane.reasons import Reason
from mep.dataplane.resolver import netlink_resolver
from mep.models import TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredTrafficRule
from tests.rulesets import rule
from upf_sim.topology import ADDR, MEP_PORTS, Topology

pytestmark = pytest.mark.needs_root
REPO = Path(__file__).resolve().parents[2]


class Lab:
    """A topology with an XdpEngine in its mep namespace, and helpers to drive it."""

    def __init__(self, topo: Topology, pin_root: Path) -> None:
        from mep.dataplane.xdp import XdpEngine

        self.topo = topo
        self.pin_root = pin_root
        self.config = Config(instance="e2e", dataplane=DataplaneConfig(
            ports=MEP_PORTS, pin_root=pin_root,  # type: ignore[arg-type]
            capacity=Capacity(rules=256, filters=512, flows=4096, dns_names=16)))
        self.engine = XdpEngine(self.config, netns=topo.ns("mep"))
        self.generation = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def restart_engine(self) -> None:
        """A control-plane restart: release this process's handles, load again, adopt."""
        from mep.dataplane.xdp import XdpEngine

        self.engine.close()
        self.engine = XdpEngine(self.config, netns=self.topo.ns("mep"))

    def apply(self, rules: list[dict[str, Any]]) -> None:
        stored = tuple(StoredTrafficRule(app_instance_id="app", rule_id=i + 1, rule=TrafficRule.model_validate(r))
                       for i, r in enumerate(rules))
        snap = Snapshot(revision=1, apps={"app": AppInstance(appInstanceId="app", state=AppState.READY)},
                        traffic_rules=stored, dns_rules=())
        self.generation += 1
        resolver = netlink_resolver(self.config.dataplane, self.topo.ns("mep"))
        self.engine.apply(compile_ruleset(snap, config=self.config.dataplane, resolver=resolver,
                                          generation=self.generation))

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        proc = self.topo.popen(role, [sys.executable, "-m", "tests.netns.peers", *args], cwd=REPO,
                               stdout=subprocess.PIPE)
        self.procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else b""
        assert json.loads(line or b"{}").get("listening"), f"{args[0]} in {role} did not start"
        return proc

    def run(self, role: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        out = self.topo.run(role, [sys.executable, "-m", "tests.netns.peers", *args], cwd=REPO,
                            capture_output=True, timeout=timeout)
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    @staticmethod
    def result(proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=timeout)
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.engine.detach(unpin=True)
        self.engine.close()
        shutil.rmtree(self.pin_root, ignore_errors=True)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    with Topology() as topo:
        lab = Lab(topo, Path("/sys/fs/bpf") / f"mep-e2e-{os.getpid()}")
        try:
            lab.start("app1", "echo-tcp", "0.0.0.0", "80", "app1")
            lab.start("dn", "echo-tcp", ADDR.server, "80", "dn")
            lab.start("dn", "echo-tcp", ADDR.server, "8080", "dn")
            yield lab
        finally:
            lab.close()


STEER_HTTP = rule("steer", "FORWARD_DECAPSULATED", 1, flow=True,
                  filters=[{"dstAddress": [ADDR.server], "dstPort": ["80"], "protocol": ["TCP"]}],
                  dst={"interfaceType": "IP", "dstIpAddress": ADDR.app1})


def test_steered_tcp_reaches_the_app_and_replies_return(lab: Lab) -> None:
    lab.apply([STEER_HTTP])
    before = lab.engine.counters().rules.get(1)
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "hello")["reply"] == "app1:hello"
    after = lab.engine.counters().rules[1]
    assert after.packets > (before.packets if before else 0)


def test_unsteered_traffic_reaches_the_dn(lab: Lab) -> None:
    lab.apply([STEER_HTTP])
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "8080", "hi")["reply"] == "dn:hi"


def test_inactive_rule_sends_traffic_back_to_the_dn(lab: Lab) -> None:
    lab.apply([])
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "x")["reply"] == "dn:x"


def test_drop_rule_drops(lab: Lab) -> None:
    lab.apply([rule("block", "DROP", 0, filters=[{"protocol": ["UDP"], "dstPort": ["9000"]}])])
    receiver = lab.start("dn", "count-udp", ADDR.server, "9000", "1")
    lab.run("upf", "send-udp", ADDR.ue1, ADDR.server, "9000", "200", "2000")
    assert lab.result(receiver)["received"] == 0


def test_duplicate_reaches_the_dn_and_a_copy_reaches_app2(lab: Lab) -> None:
    lab.apply([rule("mirror", "DUPLICATE_DECAPSULATED", 0, filters=[{"protocol": ["UDP"], "dstPort": ["9100"]}],
                    dst={"interfaceType": "MAC", "dstMacAddress": ADDR.app2_mac})])
    receiver = lab.start("dn", "count-udp", ADDR.server, "9100", "1")
    sniffer = lab.start("app2", "sniff-udp", "eth0", "9100", "1")
    lab.run("upf", "send-udp", ADDR.ue1, ADDR.server, "9100", "300", "2000")
    assert lab.result(receiver)["received"] == 300
    assert lab.result(sniffer)["frames"] == 300


def test_rule_set_swaps_under_traffic_lose_nothing(lab: Lab) -> None:
    count = 20000
    lab.apply([STEER_HTTP])
    receiver = lab.start("dn", "count-udp", ADDR.server, "9200", "2")
    sender = lab.topo.popen("upf", [sys.executable, "-m", "tests.netns.peers", "send-udp", ADDR.ue1, ADDR.server,
                                    "9200", str(count), "10000"], cwd=REPO, stdout=subprocess.PIPE)
    swaps = 0
    while sender.poll() is None and swaps < 100:
        extra = [rule(f"noise{swaps}", "DROP", 5, filters=[{"dstPort": [str(20000 + swaps)]}])] if swaps % 2 else []
        lab.apply([STEER_HTTP, *extra])
        swaps += 1
    assert Lab.result(sender)["sent"] == count
    got = lab.result(receiver)
    assert swaps >= 50, f"only {swaps} swaps happened while the stream ran"
    assert (got["received"], got["distinct"]) == (count, count)
    # The mirror veths carry copies only: the kernel sends nothing of its own there (no IPv6 on them).
    assert Reason.DROP_COPY_STALE not in lab.engine.counters().reasons


def test_restart_adopts_the_running_program_without_loss(lab: Lab) -> None:
    count = 6000
    lab.apply([STEER_HTTP])
    generation = lab.engine.generation
    receiver = lab.start("dn", "count-udp", ADDR.server, "9300", "2")
    sender = lab.topo.popen("upf", [sys.executable, "-m", "tests.netns.peers", "send-udp", ADDR.ue1, ADDR.server,
                                    "9300", str(count), "3000"], cwd=REPO, stdout=subprocess.PIPE)
    lab.restart_engine()
    assert lab.engine.generation == generation  # adopted: the running rule set's generation
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "again")["reply"] == "app1:again"
    lab.apply([STEER_HTTP])
    assert lab.engine.generation == generation + 1
    assert Lab.result(sender)["sent"] == count
    assert lab.result(receiver)["received"] == count
