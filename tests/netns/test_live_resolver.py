"""resolver.LiveResolver in a namespace of its own: the snapshot is kept while the kernel announces
nothing, and read again after a neighbour or link change (root: a network namespace)."""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest
from pyroute2 import IPRoute, netns

from mep.config import DataplaneConfig
from mep.dataplane.compiler import ip_of
from mep.dataplane.links import in_netns
from mep.dataplane.resolver import LiveResolver

pytestmark = pytest.mark.needs_root

NEIGHBOUR = "198.18.7.2"


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace); CI runs as root")
    name = f"mep-res-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    try:
        with in_netns(name), IPRoute() as ipr:
            ipr.link("add", ifname="n6", kind="veth", peer="n6peer")
            ipr.link("set", index=ipr.link_lookup(ifname="n6")[0], address="02:00:00:00:06:01", state="up")
        yield name
    finally:
        netns.remove(name)


def _neighbour(ns: str, mac: str) -> None:
    with in_netns(ns), IPRoute() as ipr:
        ipr.neigh("replace", dst=NEIGHBOUR, lladdr=mac, ifindex=ipr.link_lookup(ifname="n6")[0], state="permanent")


def test_the_snapshot_lasts_until_the_kernel_announces_a_change(namespace: str) -> None:
    live = LiveResolver(DataplaneConfig(engine="xdp", ports=[{"name": "n6", "ifname": "n6", "role": "n6"}]), namespace)
    try:
        assert live.cached() is None  # nothing read yet
        _neighbour(namespace, "02:00:00:00:00:01")
        first = live.current()
        assert first.neighbour(ip_of(NEIGHBOUR)) == (1, bytes.fromhex("020000000001"))
        assert live.cached() is first and live.current() is first  # no change since: the same object

        _neighbour(namespace, "02:00:00:00:00:02")  # a neighbour's MAC changed
        assert live.cached() is None
        second = live.current()
        assert second is not first and second.neighbour(ip_of(NEIGHBOUR)) == (1, bytes.fromhex("020000000002"))
        assert live.cached() is second

        with in_netns(namespace), IPRoute() as ipr:  # a port's MAC changed
            ipr.link("set", index=ipr.link_lookup(ifname="n6")[0], address="02:00:00:00:06:99")
        third = live.current()
        assert third is not second and third.ports()[0].mac == bytes.fromhex("020000000699")
    finally:
        live.close()
    assert live.cached() is None
