"""Mp1 drives real packets: PUT a traffic rule ACTIVE over HTTP and the XDP engine steers, INACTIVE and it does not.

The daemon (store, compiler, XDP engine in the lab topology's mep namespace,
Mp1 with auth) runs in this process; the app gets its token from the real
token endpoint and PUTs its rule through the real Mp1 application; a UE in
the upf namespace opens TCP connections and sees who answers.
"""
from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from mep.config import Config
from mep.daemon import Daemon
from mep.mp1 import Mp1Server
from mep.mp1.server import RUNNER_OPTIONS
from tests.mp1.conftest import AS, Platform, config_data, traffic_rule
from tests.netns.lab import ask, echo_servers
from upf_sim.topology import ADDR, MEP_PORTS, Topology

pytestmark = pytest.mark.needs_root


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    with Topology() as t, echo_servers(t):
        yield t


def test_put_active_steers_and_inactive_does_not(topo: Topology, tmp_path: Path) -> None:
    pin_root = Path("/sys/fs/bpf") / f"mep-mp1-{os.getpid()}"
    data = config_data(tmp_path)
    data["dataplane"] = {"engine": "xdp", "netns": topo.ns("mep"), "ports": MEP_PORTS, "pin_root": str(pin_root),
                         "apply_batch_ms": 1, "capacity": {"rules": 128, "filters": 256, "flows": 4096}}
    rule = traffic_rule("steer", state="INACTIVE")
    rule["trafficFilter"][0]["dstAddress"] = [f"{ADDR.server}/32"]
    rule["dstInterface"]["dstIpAddress"] = ADDR.app1

    async def scenario() -> None:
        daemon = Daemon(Config(**data))
        await daemon.start()
        server = next(s for s in daemon.services if isinstance(s, Mp1Server))
        test_server = TestServer(server.app())
        await test_server.start_server(**RUNNER_OPTIONS)
        client = TestClient(test_server)
        await client.start_server()
        try:
            platform = Platform(daemon, server, client, daemon.store.subscribe())
            await platform.add_app("cache", confirm_ready_required=False, traffic_rules=[rule])
            await platform.settled()
            assert await asyncio.to_thread(ask, topo) == "dn:q"

            url = f"{AS}/applications/cache/traffic_rules/steer"
            resp = await client.get(url, headers=platform.auth("cache"))
            etag = resp.headers["ETag"]
            resp = await client.put(url, json={**rule, "state": "ACTIVE"},
                                    headers={**platform.auth("cache"), "If-Match": etag})
            assert resp.status == 200, await resp.text()
            await platform.settled()
            assert await asyncio.to_thread(ask, topo) == "app1:q"

            resp = await client.put(url, json={**rule, "state": "INACTIVE"},
                                    headers={**platform.auth("cache"), "If-Match": resp.headers["ETag"]})
            assert resp.status == 200, await resp.text()
            await platform.settled()
            assert await asyncio.to_thread(ask, topo) == "dn:q"
        finally:
            await client.close()
            await daemon.close()
            from mep.dataplane.xdp import XdpEngine

            engine = daemon.engine
            assert isinstance(engine, XdpEngine)
            await asyncio.to_thread(engine.detach, unpin=True)
            shutil.rmtree(pin_root, ignore_errors=True)

    asyncio.run(scenario())
