"""The nftables emission loads into nft, forwards and drops what the reference engine does, and
refuses what nftables cannot express."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from pyroute2 import netns

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from bench.rulegen import generate_rules
from mep.config import Capacity
from mep.dataplane.nftables import NftUnsupported, emit
from mep.dataplane.reasons import Verdict
from mep.dataplane.reference import ReferenceEngine
from tests.dataplane.cases import GTP_TUNNEL, TO_APP1_MAC
from tests.packets import N6, eth
from tests.rulesets import rule, ruleset

pytestmark = pytest.mark.needs_root


@pytest.mark.parametrize("sets", [False, True], ids=["linear", "sets"])
def test_a_generated_rule_set_loads_into_nft(sets: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    rs = ruleset(generate_rules(300, seed=7) + [rule("flow", "PASSTHROUGH", flow=True,
                                                      filters=[{"dstAddress": ["2001:db8::/64"], "tC": 184}])],
                 capacity=Capacity(rules=400, filters=1024))
    text = emit(rs, sets=sets)
    name = f"mep-nft-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    try:
        load = subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=text, text=True,
                              capture_output=True)
        assert load.returncode == 0, load.stderr
        listed = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "chain", "inet", "mep", "steer"],
                                text=True, capture_output=True).stdout
    finally:
        netns.remove(name)
    assert "@nh,4,8 184" in listed or "ip6 dscp" in listed or "@nh,4,8" in listed
    filters = sum(len(r.filters) for r in rs.rules)
    if sets:
        assert "@run0_v4_ports" in listed and listed.count("comment") < filters / 4
    else:
        assert listed.count("comment") >= filters  # one line per filter, FLOW rules twice


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def router() -> Iterator[tuple[str, str, str]]:
    """Namespaces a (198.18.10.1) -> r (forwards) -> b, routes 198.18.20.0/24 to b."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    tag = uuid.uuid4().hex[:6]
    a, r, b = (f"mep-nft{x}-{tag}" for x in "arb")
    for ns in (a, r, b):
        netns.create(ns)
    try:
        _sh("ip", "link", "add", "a0", "netns", a, "type", "veth", "peer", "r0", "netns", r)
        _sh("ip", "link", "add", "r1", "netns", r, "type", "veth", "peer", "b0", "netns", b)
        for ns, dev, addr in ((a, "a0", "198.18.10.1/24"), (r, "r0", "198.18.10.254/24"),
                              (r, "r1", "198.18.21.254/24"), (b, "b0", "198.18.21.1/24")):
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", a, "route", "add", "default", "via", "198.18.10.254")
        _sh("ip", "-n", r, "route", "add", "198.18.20.0/24", "via", "198.18.21.1")
        _sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield a, r, b
    finally:
        for ns in (a, r, b):
            netns.remove(ns)


def _random_rules(rng: random.Random, n: int) -> list[dict]:  # type: ignore[type-arg]
    def span(lo: int, hi: int) -> str:
        x = rng.randint(lo, hi)
        return str(x) if rng.random() < 0.5 else f"{x}-{min(hi, x + rng.randint(1, 20))}"

    rules = []
    for i in range(n):
        f: dict = {}  # type: ignore[type-arg]
        if rng.random() < 0.6:
            f["srcAddress"] = [rng.choice(["198.18.10.0/28", "198.18.10.16/28", "198.18.10.0/25", "198.18.10.7"])]
        if rng.random() < 0.6:
            f["dstAddress"] = [rng.choice(["198.18.20.0/26", "198.18.20.64/26", "198.18.20.0/24", "198.18.20.9"])]
        if rng.random() < 0.5:
            f["protocol"] = [rng.choice(["TCP", "UDP"])]
        if rng.random() < 0.5:
            f["dstPort"] = [f"{int(span(1000, 1040).split('-')[0])}" if rng.random() < 0.5 else span(1000, 1040)]
        if rng.random() < 0.3:
            f["srcPort"] = [span(2000, 2040)]
        f = f or {"dstAddress": ["198.18.20.0/26"]}  # no match-all rule: it would hide the rest
        rules.append(rule(f"r{i}", rng.choice(["DROP", "PASSTHROUGH"]), priority=rng.randint(1, 20), filters=[f]))
    return rules


@pytest.mark.parametrize("sets", [False, True], ids=["linear", "sets"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_nft_forwards_and_drops_what_the_reference_engine_does(router: tuple[str, str, str], sets: bool,
                                                               seed: int) -> None:
    a, r, b = router
    rng = random.Random(seed)
    # Two DROPs that overlap without either holding the other: the sets form keeps one in a set and
    # the other as a linear rule (nft_set_pipapo refuses an element with a corner inside another).
    overlapping = [rule("o1", "DROP", 0, filters=[{"srcAddress": ["198.18.10.0/28"], "dstPort": ["1000-1020"]}]),
                   rule("o2", "DROP", 0, filters=[{"srcAddress": ["198.18.10.8-198.18.10.20"],
                                                   "dstPort": ["1010-1030"]}])]
    rs = ruleset(overlapping + _random_rules(rng, 40), capacity=Capacity(rules=64, filters=128))
    load = subprocess.run(["ip", "netns", "exec", r, "nft", "-f", "-"], input=emit(rs, sets=sets), text=True,
                          capture_output=True)
    assert load.returncode == 0, load.stderr
    reference = ReferenceEngine()
    reference.apply(rs)
    packets, want = [], set()
    for i in range(200):
        l4 = (TCP if rng.random() < 0.5 else UDP)(sport=rng.randint(2000, 2040), dport=rng.randint(1000, 1040))
        pkt = IP(src=f"198.18.10.{rng.randint(1, 40)}", dst=f"198.18.20.{rng.randint(1, 100)}") / l4 / Raw(b"%06d" % i)
        packets.append(bytes(pkt))
        if reference.process(bytes(eth() / pkt), N6).verdict != Verdict.DROP:
            want.add(i)
    assert 0 < len(want) < len(packets)  # both verdicts exercised
    netns.pushns(b)
    try:
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        rx.bind(("b0", 0))
    finally:
        netns.popns()
    netns.pushns(a)
    try:
        tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    finally:
        netns.popns()
    with rx, tx:
        for raw in packets:
            tx.sendto(raw, (IP(raw).dst, 0))
            time.sleep(0.0002)
        rx.settimeout(0.5)
        got = set()
        try:
            while True:
                frame = rx.recv(2048)
                ip = IP(frame[14:])
                if ip.src.startswith("198.18.10.") and Raw in ip:
                    got.add(int(bytes(ip[Raw].load)[:6]))
        except socket.timeout:
            pass
    assert got == want


@pytest.mark.parametrize("body,field", [
    (rule("t", "DROP", filters=[{"srcTunnelAddress": ["198.18.200.1"]}]), "trafficFilter"),
    (rule("v", "DROP", filters=[{"token": ["7"]}]), "token"),
    (rule("f", "FORWARD_DECAPSULATED", dst=TO_APP1_MAC), "action"),
    (rule("e", "DUPLICATE_ENCAPSULATED", dst=GTP_TUNNEL), "action"),
], ids=["tunnel", "vlan", "forward", "duplicate"])
def test_what_nft_cannot_express_is_refused(body: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(NftUnsupported) as info:
        emit(ruleset([body]))
    assert info.value.field == field
