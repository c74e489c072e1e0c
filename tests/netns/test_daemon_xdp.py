"""The daemon with the XDP engine on the lab topology: store changes steer real packets.

The daemon runs in this process (its data plane in the topology's mep
namespace, dataplane.netns); the test writes the store the way Mp1 and Mm5
do and checks what real packets do after each change.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from mep.config import Config
from mep.daemon import Daemon
from mep.models import TrafficRule
from mep.state.lifecycle import LifecycleEvent
from mep.state.records import AppInstance
from tests.netns.lab import STEER_HTTP, ask, echo_servers, settle
from tests.rulesets import rule
from tests.unit.test_daemon import mep
from upf_sim.topology import MEP_PORTS, Topology

pytestmark = pytest.mark.needs_root

@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    with Topology() as t, echo_servers(t):
        yield t


def test_store_changes_steer_real_packets(topo: Topology, tmp_path: Path) -> None:
    pin_root = Path("/sys/fs/bpf") / f"mep-daemon-{os.getpid()}"
    config = Config.model_validate({
        "instance": "d1",
        "store": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "mep.db")}},
        "dataplane": {"engine": "xdp", "netns": topo.ns("mep"), "ports": MEP_PORTS, "pin_root": str(pin_root),
                      "fib_forward": True,
                      "capacity": {"rules": 128, "filters": 256, "flows": 4096, "dns_names": 16}},
        "admin": {"socket": str(tmp_path / "admin.sock")},
        "mp1": {"enabled": False}, "mm5": {"enabled": False},
    })

    async def scenario() -> None:
        daemon = Daemon(config)
        await daemon.start()
        try:
            store = daemon.store
            await store.create_app(AppInstance(appInstanceId="cache"))
            await store.put_traffic_rule("cache", TrafficRule.model_validate(STEER_HTTP))
            await store.transition_app("cache", LifecycleEvent.INSTANTIATE)
            await settle(daemon)
            assert await asyncio.to_thread(ask, topo) == "dn:q"  # not READY: not enforced
            await store.transition_app("cache", LifecycleEvent.CONFIRM_READY)
            await settle(daemon)
            assert await asyncio.to_thread(ask, topo) == "app1:q"
            described = daemon.engine.describe()
            assert described["engine"] == "xdp" and described["xdp_modes"]["n6"] in ("native", "generic")
            assert described["fib_forward"] is True
            # what went to the DN went from XDP (the lab's neighbours are static), and mep stats says so;
            # the link's own multicast (the UPF's MLD reports, at times the kernel picks) goes to the stack
            out = await asyncio.to_thread(mep, "stats", "--socket", str(config.admin_socket))
            assert out.returncode == 0, out.stderr
            table = out.stdout.split("PASS FRAMES (FIB)")[1].split("\n\n")[0].splitlines()[1:]
            fib = {name: int(packets) for name, packets, _ in map(str.split, table)}
            assert fib.get("FORWARDED", 0) + fib.get("CACHED", 0) > 0, out.stdout
            assert set(fib) <= {"FORWARDED", "CACHED", "LINK_GROUP"}, out.stdout
            # mep doctor -v's report of the running data plane: map memory, the classifier's tables first
            from mep.doctor import dataplane_report

            report = await asyncio.to_thread(dataplane_report, config)
            memory = next(line for line in report if line.startswith("  map memory (MiB) classifier "))
            assert float(memory.split()[4].rstrip(",")) > 0, report
            await store.put_traffic_rule("cache", TrafficRule.model_validate({**STEER_HTTP, "state": "INACTIVE"}))
            await settle(daemon)
            assert await asyncio.to_thread(ask, topo) == "dn:q"
        finally:
            await daemon.close()
            from mep.dataplane.xdp import XdpEngine

            engine = daemon.engine
            assert isinstance(engine, XdpEngine)
            await asyncio.to_thread(engine.detach, unpin=True)
            shutil.rmtree(pin_root, ignore_errors=True)

    asyncio.run(scenario())
