"""maps/fib.py: mep_fib_gen follows the routing state of its namespace, and only of it.

A real rtnetlink socket in real namespaces and a real BPF array (the map the
XDP program reads); what the program does with the word is tested on the lab
topology (tests/netns/test_steering_topology.py, "xdp, fib_forward").
"""
from __future__ import annotations

import ctypes as ct
import os
import subprocess
import time
import uuid
from typing import Any, Iterator

import pytest

from mep.dataplane.maps.fib import FibGeneration
from tests.fixtures.netns import make_ports_netns, remove_netns

pytestmark = pytest.mark.needs_root


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    watched = make_ports_netns(f"mep-fibw-{uuid.uuid4().hex[:8]}")
    try:
        other = make_ports_netns(f"mep-fibo-{uuid.uuid4().hex[:8]}")
        try:
            yield watched, other
        finally:
            remove_netns(other)
    finally:
        remove_netns(watched)


@pytest.fixture(scope="module")
def table() -> Iterator[Any]:
    from bcc import BPF

    program = BPF(text=b"BPF_ARRAY(mep_fib_gen, u32, 1);")
    try:
        yield program["mep_fib_gen"]
    finally:
        program.cleanup()


def word(table: Any) -> int:
    return int(table[ct.c_uint32(0)].value)


def ip(netns: str, *argv: str) -> None:
    subprocess.run(["ip", "-n", netns, *argv], check=True)


def test_the_generation_moves_with_its_namespace_and_is_zero_once_closed(namespaces: tuple[str, str],
                                                                         table: Any) -> None:
    watched, other = namespaces
    gen = FibGeneration(table, watched)
    try:
        assert word(table) == gen.value == 1
        ip(other, "route", "add", "198.18.150.0/24", "dev", "dn")
        time.sleep(0.2)
        assert word(table) == gen.value == 1  # another namespace's change is not this one's
        for change in (["route", "add", "198.18.150.0/24", "dev", "dn"],
                       ["neigh", "add", "198.18.150.7", "lladdr", "02:00:00:00:15:07", "dev", "dn"],
                       ["link", "set", "dev", "dn", "mtu", "1400"],
                       ["addr", "add", "198.18.151.1/24", "dev", "app1"],
                       ["rule", "add", "from", "198.18.150.0/24", "table", "100"]):
            # the listener bumps by itself (the median within 0.1 ms here), without bump()
            before, started = gen.value, time.monotonic()
            ip(watched, *change)
            while word(table) == before and time.monotonic() - started < 2.0:
                time.sleep(0.001)
            assert word(table) == gen.value > before, change
        time.sleep(0.2)  # a change may come as more than one batch of notifications
        last = gen.value
        assert gen.bump() == word(table) == last + 1  # a new generation on demand
    finally:
        gen.close()
    assert word(table) == gen.value == 0  # the cache is off for the program left attached
