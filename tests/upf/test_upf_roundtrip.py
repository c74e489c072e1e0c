"""UE -> gNB -> UPF -> MEP (XDP engine) -> app or DN -> and back, on the lab topology.

The UEs are sockets in the ran namespace bound to their addresses; the gNB
(upf_sim/gnb.py) tunnels them over N3, the UPF (upf_sim/upf.py) puts them
on N6, and the MEP's XdpEngine applies the rules, as in
tests/netns/lab.py (whose XdpLab drives the engine). Replies
come back through the MEP's flow state, the UPF's downlink encapsulation
and the gNB's decapsulation. Counters of all three are asserted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.netns.lab import STEER_HTTP, XdpLab
from tests.rulesets import rule
from upf_sim.counters import Counters
from upf_sim.gnb import Gnb
from upf_sim.sessions import SessionTable
from upf_sim.topology import ADDR, Topology
from upf_sim.traffic import FlowMix, Generator
from upf_sim.upf import Upf

pytestmark = pytest.mark.needs_root

TABLE = SessionTable.generate(3)
STEER_UDP = rule("steer-udp", "FORWARD_DECAPSULATED", 2,
                 filters=[{"dstAddress": [ADDR.server], "dstPort": ["7000"], "protocol": ["UDP"]}],
                 dst={"interfaceType": "IP", "dstIpAddress": ADDR.app1})


@dataclass
class RoundTrip:
    lab: XdpLab
    upf: Upf
    gnb: Gnb


@pytest.fixture(scope="module")
def rt() -> Iterator[RoundTrip]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    with Topology() as topo:
        lab = XdpLab(topo, Path("/sys/fs/bpf") / f"mep-upf-rt-{os.getpid()}")
        opened: list[Upf | Gnb] = []
        try:
            upf = Upf(TABLE, netns=topo.ns("upf"))
            opened.append(upf)
            gnb = Gnb(TABLE, netns=topo.ns("ran"))
            opened.append(gnb)
            lab.start("app1", "echo-tcp", "0.0.0.0", "80", "app1")
            lab.start("dn", "echo-tcp", ADDR.server, "80", "dn")
            lab.start("dn", "echo-tcp", ADDR.server, "8080", "dn")
            yield RoundTrip(lab, upf, gnb)
        finally:
            for endpoint in reversed(opened):
                endpoint.close()
            lab.close()


def _no_drops(*counted: Counters) -> None:
    for c in counted:
        assert c.dropped().packets == 0, {k: v for k, v in c.reasons.items() if v.packets}


def test_ue_tcp_is_steered_to_the_app_and_back(rt: RoundTrip) -> None:
    ue = TABLE.sessions[0]
    rt.lab.apply([STEER_HTTP])
    rule_before = rt.lab.engine.counters().rules.get(1)
    upf_before, gnb_before = rt.upf.counters(), rt.gnb.counters()
    reply = rt.lab.run("ran", "tcp-ask", str(ue.ue), ADDR.server, "80", "hello")["reply"]
    assert reply == "app1:hello"
    rule_after = rt.lab.engine.counters().rules[1]
    upf_after, gnb_after = rt.upf.counters(), rt.gnb.counters()
    assert rule_after.packets > (rule_before.packets if rule_before else 0)
    # the handshake, the request and the close went up; the answers came down
    assert upf_after.sessions[0].ul.packets - upf_before.sessions[0].ul.packets >= 3
    assert upf_after.sessions[0].dl.packets - upf_before.sessions[0].dl.packets >= 3
    assert gnb_after.sessions[0].dl.packets - gnb_before.sessions[0].dl.packets == \
        upf_after.sessions[0].dl.packets - upf_before.sessions[0].dl.packets
    _no_drops(upf_after, gnb_after)


def test_ue_tcp_unsteered_reaches_the_dn(rt: RoundTrip) -> None:
    rt.lab.apply([STEER_HTTP])
    reply = rt.lab.run("ran", "tcp-ask", str(TABLE.sessions[1].ue), ADDR.server, "8080", "hi")["reply"]
    assert reply == "dn:hi"
    _no_drops(rt.upf.counters(), rt.gnb.counters())


def test_generated_uplink_reaches_the_app_exactly(rt: RoundTrip) -> None:
    count = 3000
    rt.lab.apply([STEER_HTTP, STEER_UDP])
    with Generator(TABLE, netns=rt.lab.topo.ns("ran"), dport=7000, flows=4) as gen:
        # the receiver waits a few seconds for its first datagram: start it once the generator is built
        receiver = rt.lab.start("app1", "count-udp", "0.0.0.0", "7000", "1")
        rule_before = rt.lab.engine.counters().rules.get(2)
        upf_before = rt.upf.counters().reasons["UPF_UL_FORWARDED"].packets
        sent = gen.run(FlowMix.parse("udp/64:3,udp/570:1"), rate=20_000, packets=count)
    assert sent.packets == count
    assert XdpLab.result(receiver)["received"] == count
    assert rt.upf.counters().reasons["UPF_UL_FORWARDED"].packets - upf_before == count
    rule_after = rt.lab.engine.counters().rules[2]
    assert rule_after.packets - (rule_before.packets if rule_before else 0) == count
