"""What the lab-topology tests share: an engine in the mep namespace, peers in the others, daemon helpers.

``EngineLab`` drives one engine (XDP or fastpath) on a ``Topology``: it
compiles rule dicts into the engine and runs ``tests.netns.peers`` commands
in any namespace. ``ask`` and ``settle`` serve the tests that run the whole
daemon. Every process a lab starts is killed by ``close()``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from mep.config import Capacity, Config, DataplaneConfig
from mep.daemon import Daemon
from mep.dataplane.compiler import compile_ruleset
from mep.dataplane.engine import Engine
from mep.dataplane.resolver import netlink_resolver
from mep.models import TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredTrafficRule
from tests.rulesets import rule
from upf_sim.topology import ADDR, MEP_PORTS, Topology

if TYPE_CHECKING:
    from mep.dataplane.xdp import XdpEngine

REPO = Path(__file__).resolve().parents[2]
CAPACITY = Capacity(rules=256, filters=512, flows=4096, dns_names=16)
# UE -> server:80 over TCP goes to app1 instead, and its replies back (FLOW).
STEER_HTTP = rule("steer", "FORWARD_DECAPSULATED", 1, flow=True,
                  filters=[{"dstAddress": [ADDR.server], "dstPort": ["80"], "protocol": ["TCP"]}],
                  dst={"interfaceType": "IP", "dstIpAddress": ADDR.app1})


class EngineLab:
    """A topology with an engine in its mep namespace, and helpers to drive it."""

    def __init__(self, topo: Topology, config: Config, engine: Engine) -> None:
        self.topo = topo
        self.config = config
        self.engine = engine
        self.generation = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def apply(self, rules: list[dict[str, Any]]) -> None:
        """Make ``rules`` (TrafficRule dicts of one READY app) the engine's rule set."""
        stored = tuple(StoredTrafficRule(app_instance_id="app", rule_id=i + 1, rule=TrafficRule.model_validate(r))
                       for i, r in enumerate(rules))
        snap = Snapshot(revision=1, apps={"app": AppInstance(appInstanceId="app", state=AppState.READY)},
                        traffic_rules=stored, dns_rules=())
        self.generation += 1
        resolver = netlink_resolver(self.config.dataplane, self.topo.ns("mep"))
        self.engine.apply(compile_ruleset(snap, config=self.config.dataplane, resolver=resolver,
                                          generation=self.generation))

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """A long-running peer in ``role``'s namespace, once it says it is listening."""
        proc = self.topo.popen(role, [sys.executable, "-m", "tests.netns.peers", *args], cwd=REPO,
                               stdout=subprocess.PIPE)
        self.procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else b""
        assert json.loads(line or b"{}").get("listening"), f"{args[0]} in {role} did not start"
        return proc

    def start_servers(self) -> None:
        """The echo servers every steering scenario talks to: app1:80, the DN's server on 80 and 8080."""
        self.start("app1", "echo-tcp", "0.0.0.0", "80", "app1")
        self.start("dn", "echo-tcp", ADDR.server, "80", "dn")
        self.start("dn", "echo-tcp", ADDR.server, "8080", "dn")

    def run(self, role: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        """A peer command in ``role``'s namespace; its last JSON line."""
        out = self.topo.run(role, [sys.executable, "-m", "tests.netns.peers", *args], cwd=REPO,
                            capture_output=True, timeout=timeout)
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    @staticmethod
    def result(proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
        """The last JSON line of a peer started with ``start``, once it exits."""
        out, _ = proc.communicate(timeout=timeout)
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]

    def close(self) -> None:
        """Kill the peers, then close the engine (subclasses release what else they hold)."""
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.engine.close()


class XdpLab(EngineLab):
    """The lab with an XdpEngine whose maps are pinned under ``pin_root``; it can restart the control plane.
    ``fib_forward``: dataplane.fib_forward (PASS frames forwarded in XDP)."""

    engine: XdpEngine

    def __init__(self, topo: Topology, pin_root: Path, *, fib_forward: bool = False) -> None:
        from mep.dataplane.xdp import XdpEngine

        self.pin_root = pin_root
        config = Config(instance="e2e", dataplane=DataplaneConfig(ports=MEP_PORTS, pin_root=pin_root,
                                                                  capacity=CAPACITY, fib_forward=fib_forward))
        super().__init__(topo, config, XdpEngine(config, netns=topo.ns("mep")))

    def restart_engine(self) -> None:
        """A control-plane restart: release this process's handles, load again, adopt."""
        from mep.dataplane.xdp import XdpEngine

        self.engine.close()
        self.engine = XdpEngine(self.config, netns=self.topo.ns("mep"))

    def close(self) -> None:
        self.engine.detach(unpin=True)
        super().close()
        shutil.rmtree(self.pin_root, ignore_errors=True)


def fastpath_lab(topo: Topology, receive: str = "auto") -> EngineLab:
    """The lab with a FastpathEngine receiving as ``receive`` says (dataplane.fastpath_receive)."""
    from mep.dataplane.fastpath import FastpathEngine

    config = Config(instance="e2e-fastpath", dataplane=DataplaneConfig(engine="fastpath", ports=MEP_PORTS,
                                                                       capacity=CAPACITY, fastpath_receive=receive))
    return EngineLab(topo, config, FastpathEngine(config, netns=topo.ns("mep")))


@contextlib.contextmanager
def echo_servers(topo: Topology, servers: Iterable[tuple[str, str, int]] = (("app1", "0.0.0.0", 80),
                                                                           ("dn", ADDR.server, 80))) -> Iterator[None]:
    """``tests.netns.peers echo-tcp`` servers, (namespace role, address, port) each, listening until the block ends.

    Each answers "<role>:<question>", so a reply names where the connection went."""
    procs = [topo.popen(role, [sys.executable, "-m", "tests.netns.peers", "echo-tcp", host, str(port), role],
                        cwd=REPO, stdout=subprocess.PIPE) for role, host, port in servers]
    try:
        for proc in procs:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["listening"]
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def ask(topo: Topology, port: int = 80) -> str:
    """What the DN or the app answers UE1's TCP question "q" to the server's ``port``."""
    out = topo.run("upf", [sys.executable, "-m", "tests.netns.peers", "tcp-ask", ADDR.ue1, ADDR.server, str(port), "q"],
                   cwd=REPO, capture_output=True)
    return json.loads(out.stdout.decode().splitlines()[-1])["reply"]  # type: ignore[no-any-return]


async def settle(daemon: Daemon) -> None:
    """Wait until the daemon has compiled everything the store holds."""
    for _ in range(500):
        if daemon.compiled_revision >= daemon.store.revision:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the daemon did not apply the store's changes")
