"""End to end in the lab topology (DESIGN.md section 7, upf_sim/topology.py): kdig on the UE side.

The daemon runs in this process with ``dataplane.netns`` = the mep namespace,
so its DNS sockets live there (mep/dns/sockets.py), listening on the MEP's
N6 address; unbound runs in the dn namespace on the data network's resolver
address (ADDR.dn_resolver) as the upstream. kdig runs in the upf namespace
from a UE address: the path of a UE's query after the UPF. Rule answers, NODATA, TCP, forwarding, and a
rule toggled INACTIVE and back, each taking effect from the next query.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mep.config import Config
from mep.daemon import Daemon
from mep.dataplane.reference import ReferenceEngine
from mep.dns import DnsServer
from mep.errors import MepError
from mep.models import DnsRule
from mep.state import AppInstance, LifecycleEvent
from tests.dns.dns_support import Unbound, kdig
from upf_sim.topology import ADDR, Topology

pytestmark = [pytest.mark.needs_root, pytest.mark.asyncio]
APP = "app-1"


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    with Topology(peer_xdp=False) as lab:
        upstream = Unbound(tmp_path_factory.mktemp("unbound-dn"), ADDR.dn_resolver, 53, [
            "server.example. 300 IN A 198.18.100.20",
            "video.example.com. 300 IN A 198.18.100.99",
        ])

        def probe() -> bool:
            out = lab.run("dn", ["kdig", f"@{ADDR.dn_resolver}", "probe.invalid", "+time=1", "+retry=0"],
                          capture_output=True)
            return out.returncode == 0

        upstream.start(popen=functools.partial(lab.popen, "dn"), probe=probe)
        try:
            yield lab
        finally:
            upstream.stop()


@pytest_asyncio.fixture
async def daemon(topo: Topology, tmp_path: Path) -> AsyncIterator[Daemon]:
    data: dict[str, Any] = {
        "instance": "dnslab",
        "store": {"sqlite": {"path": str(tmp_path / "state" / "mep.db")}},
        "dataplane": {**topo.mep_config(), "engine": "reference", "apply_batch_ms": 1, "netns": topo.ns("mep")},
        "mp1": {"enabled": False}, "mm5": {"enabled": False},
        "dns": {"enabled": True, "listen": f"{ADDR.mep_n6}:53", "upstream": f"{ADDR.dn_resolver}:53",
                "cache_entries": 0},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }
    config = Config(**data)
    running = Daemon(config, engine=ReferenceEngine())
    try:
        await running.start()
        store = running.store
        await store.create_app(AppInstance(appInstanceId=APP, confirm_ready_required=False))
        await store.transition_app(APP, LifecycleEvent.INSTANTIATE)
        yield running
    finally:
        await running.close()


def rule(state: str = "ACTIVE") -> DnsRule:
    return DnsRule.model_validate({"dnsRuleId": "d1", "domainName": "video.example.com", "ipAddressType": "IP_V4",
                                   "ipAddress": ADDR.app1, "ttl": 30, "state": state})


async def ue_kdig(topo: Topology, *args: str) -> str:
    """kdig from UE 1 (a UPF-side address) to the MEP's N6 address."""
    run = functools.partial(topo.run, "upf")
    return await asyncio.to_thread(kdig, ADDR.mep_n6, 53, "-b", ADDR.ue1, *args, run=run)


async def apply(daemon: Daemon, state: str) -> None:
    stored = await daemon.store.put_dns_rule(APP, rule(state))
    await daemon.settled(stored.revision)


async def test_ue_gets_rule_answers_over_udp_and_tcp(topo: Topology, daemon: Daemon) -> None:
    await apply(daemon, "ACTIVE")
    out = await ue_kdig(topo, "ViDeo.Example.Com", "A")
    assert f"\t{ADDR.app1}" in out and "qr aa rd ra" in out
    out = await ue_kdig(topo, "video.example.com", "A", "+tcp")
    assert f"\t{ADDR.app1}" in out
    out = await ue_kdig(topo, "video.example.com", "AAAA")
    assert "status: NOERROR" in out and "ANSWER: 0" in out
    server = next(s for s in daemon.services if isinstance(s, DnsServer))
    assert server.stats()["queries"] == {"udp": 2, "tcp": 1}


async def test_ue_queries_are_forwarded_to_the_upstream_in_the_dn(topo: Topology, daemon: Daemon) -> None:
    out = await ue_kdig(topo, "server.example", "A")
    assert "\t198.18.100.20" in out
    out = await ue_kdig(topo, "server.example", "A", "+tcp")
    assert "\t198.18.100.20" in out
    out = await ue_kdig(topo, "absent.example", "A")
    assert "status: NXDOMAIN" in out
    server = next(s for s in daemon.services if isinstance(s, DnsServer))
    assert server.stats()["outcomes"]["forwarded"] == 3


async def test_toggling_a_rule_takes_effect_from_the_next_query(topo: Topology, daemon: Daemon) -> None:
    await apply(daemon, "ACTIVE")
    assert f"\t{ADDR.app1}" in await ue_kdig(topo, "video.example.com", "A")
    await apply(daemon, "INACTIVE")
    assert "\t198.18.100.99" in await ue_kdig(topo, "video.example.com", "A")  # the DN's answer
    await apply(daemon, "ACTIVE")
    assert f"\t{ADDR.app1}" in await ue_kdig(topo, "video.example.com", "A", "+tcp")


async def test_a_missing_namespace_stops_the_start_with_its_name(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "instance": "dnslab2",
        "store": {"sqlite": {"path": str(tmp_path / "state" / "mep.db")}},
        "dataplane": {"engine": "reference", "netns": "mep-no-such-netns"},
        "mp1": {"enabled": False}, "mm5": {"enabled": False},
        "dns": {"enabled": True, "listen": f"{ADDR.mep_n6}:53"},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }
    config = Config(**data)
    running = Daemon(config, engine=ReferenceEngine())
    try:
        with pytest.raises(MepError, match="dns.listen: .*cannot enter network namespace mep-no-such-netns"):
            await running.start()
    finally:
        await running.close()
