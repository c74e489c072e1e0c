"""Both packet engines on the lab topology (DESIGN.md section 7), with real packets through real veths.

Every scenario runs against the XDP engine and the fastpath engine, the
latter receiving through AF_XDP (the default where xsk.py's program attaches)
and through AF_PACKET rings (dataplane.fastpath_receive: af_packet): steered
TCP reaches the app and its replies come back to the UE through the FLOW
state; everything else reaches the DN; an INACTIVE rule steers nothing; DROP
drops; DUPLICATE copies reach app2 while the original reaches the DN;
rule-set swaps under a steady stream lose nothing. Then what only one engine
does: a restarted control plane adopts the running XDP program without
losing a packet; the fastpath engine's frames passed to the kernel stack are
delivered locally too (a ping of the MEP's own address).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from bench._harness import pinned_cpu
from mep.dataplane.links import in_netns, link
from mep.dataplane.engine import PacketBytes, Result
from mep.dataplane.reasons import FibOutcome, Reason, Verdict
from mep.dataplane.ruleset import PORT_STACK
from mep.dataplane.xsk import PROG_NAME, attached_program
from tests.netns.lab import REPO, STEER_HTTP, EngineLab, XdpLab, fastpath_lab
from tests.rulesets import rule
from upf_sim.topology import ADDR, MEP_PORTS, Topology

pytestmark = pytest.mark.needs_root

@pytest.fixture(scope="module", params=["xdp", "xdp, fib_forward", "fastpath", "fastpath, af_packet"])
def lab(request: pytest.FixtureRequest) -> Iterator[EngineLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF, nftables, AF_PACKET); CI runs as root")
    if request.param.startswith("xdp"):
        pytest.importorskip("bcc", reason="the XDP engine needs bcc (python3-bpfcc)")
    with Topology() as topo:
        lab = (XdpLab(topo, Path("/sys/fs/bpf") / f"mep-e2e-{os.getpid()}",
                      fib_forward=request.param.endswith("fib_forward")) if request.param.startswith("xdp")
               else fastpath_lab(topo, "af_packet" if request.param.endswith("af_packet") else "auto"))
        try:
            lab.start_servers()
            yield lab
        finally:
            lab.close()


def only(lab: EngineLab, engine: str) -> None:
    if lab.engine.name != engine:
        pytest.skip(f"what only the {engine} engine does")


def test_steered_tcp_reaches_the_app_and_replies_return(lab: EngineLab) -> None:
    lab.apply([STEER_HTTP])
    before = lab.engine.counters().rules.get(1)
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "hello")["reply"] == "app1:hello"
    counters = lab.engine.counters()
    assert counters.rules[1].packets > (before.packets if before else 0)
    assert counters.reasons[Reason.REDIRECT_FLOW_REPLY].packets > 0


def test_unsteered_traffic_reaches_the_dn(lab: EngineLab) -> None:
    lab.apply([STEER_HTTP])
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "8080", "hi")["reply"] == "dn:hi"


def test_inactive_rule_sends_traffic_back_to_the_dn(lab: EngineLab) -> None:
    lab.apply([])
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "x")["reply"] == "dn:x"


def test_drop_rule_drops(lab: EngineLab) -> None:
    lab.apply([rule("block", "DROP", 0, filters=[{"protocol": ["UDP"], "dstPort": ["9000"]}])])
    before = lab.engine.counters().rules.get(1)
    receiver = lab.start("dn", "count-udp", ADDR.server, "9000", "1")
    lab.run("upf", "send-udp", ADDR.ue1, ADDR.server, "9000", "200", "2000")
    assert lab.result(receiver)["received"] == 0
    assert lab.engine.counters().rules[1].packets - (before.packets if before else 0) >= 200


def test_duplicate_reaches_the_dn_and_a_copy_reaches_app2(lab: EngineLab) -> None:
    lab.apply([rule("mirror", "DUPLICATE_DECAPSULATED", 0, filters=[{"protocol": ["UDP"], "dstPort": ["9100"]}],
                    dst={"interfaceType": "MAC", "dstMacAddress": ADDR.app2_mac})])
    receiver = lab.start("dn", "count-udp", ADDR.server, "9100", "1")
    sniffer = lab.start("app2", "sniff-udp", "eth0", "9100", "1")
    lab.run("upf", "send-udp", ADDR.ue1, ADDR.server, "9100", "300", "2000")
    assert lab.result(receiver)["received"] == 300
    assert lab.result(sniffer)["frames"] == 300


def test_rule_set_swaps_under_traffic_lose_nothing(lab: EngineLab) -> None:
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
    assert EngineLab.result(sender)["sent"] == count
    got = lab.result(receiver)
    assert swaps >= 50, f"only {swaps} swaps happened while the stream ran"
    assert (got["received"], got["distinct"]) == (count, count)
    # The mirror veths carry copies only: the kernel sends nothing of its own there (no IPv6 on them).
    assert Reason.DROP_COPY_STALE not in lab.engine.counters().reasons


def test_xdp_restart_adopts_the_running_program_without_loss(lab: EngineLab) -> None:
    only(lab, "xdp")
    assert isinstance(lab, XdpLab)
    count = 6000
    lab.apply([STEER_HTTP])
    generation = lab.engine.generation
    receiver = lab.start("dn", "count-udp", ADDR.server, "9300", "2")
    sender = lab.topo.popen("upf", [sys.executable, "-m", "tests.netns.peers", "send-udp", ADDR.ue1, ADDR.server,
                                    "9300", str(count), "3000"], cwd=REPO, stdout=subprocess.PIPE)
    progs = lab.pin_root / lab.config.instance
    first = list(progs.glob("mep_progs_*"))
    lab.restart_engine()
    assert lab.engine.generation == generation  # adopted: the running rule set's generation
    # The old program's tail-call table stayed pinned until the new program replaced it everywhere
    # (it classified the new flows meanwhile), then went; the new load's table is pinned.
    (now,) = progs.glob("mep_progs_*")
    assert len(first) == 1 and now != first[0]
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "again")["reply"] == "app1:again"
    lab.apply([STEER_HTTP])
    assert lab.engine.generation == generation + 1
    assert EngineLab.result(sender)["sent"] == count
    assert lab.result(receiver)["received"] == count


def fib_only(lab: EngineLab) -> None:
    if not lab.config.dataplane.fib_forward:
        pytest.skip("what only dataplane.fib_forward does")


def stack_forwarded(lab: EngineLab) -> int:
    """IPv4 datagrams the mep namespace's stack has forwarded (/proc/net/snmp Ip: ForwDatagrams)."""
    out = lab.topo.run("mep", ["cat", "/proc/net/snmp"], capture_output=True, text=True, check=True).stdout
    names, values = [line.split()[1:] for line in out.splitlines() if line.startswith("Ip:")][:2]
    return int(values[names.index("ForwDatagrams")])


def fib_counts(lab: EngineLab) -> dict[FibOutcome, int]:
    return {outcome: pb.packets for outcome, pb in lab.engine.counters().fib.items()}


def test_fib_forward_takes_pass_frames_to_the_dn_without_the_stack(lab: EngineLab) -> None:
    fib_only(lab)
    lab.apply([STEER_HTTP])
    before = fib_counts(lab)
    stack_before = stack_forwarded(lab)
    receiver = lab.start("dn", "count-udp", ADDR.server, "9400", "1")
    lab.run("upf", "send-udp", ADDR.ue1, ADDR.server, "9400", "300", "2000")
    assert lab.result(receiver)["received"] == 300
    after = fib_counts(lab)
    looked_up, cached = (after.get(o, 0) - before.get(o, 0) for o in (FibOutcome.FORWARDED, FibOutcome.CACHED))
    assert looked_up + cached >= 300
    # one flow: looked up once per CPU, then cached (again after each bump of the generation, which
    # the kernel's own neighbour discovery in the lab's namespace may cause)
    assert cached >= 270, (looked_up, cached)
    assert stack_forwarded(lab) == stack_before  # the topology's neighbours are static: none went the slow way


def test_fib_forward_rewrites_as_the_stack_would(lab: EngineLab) -> None:
    """Byte for byte (test-run on the n6 port, in the lab's namespace): the TTL less one and the
    IPv4 checksum updated, the DN port's MAC and the next hop's; a TTL of 1 goes to the stack,
    which answers it with an ICMP time exceeded."""
    fib_only(lab)
    lab.apply([STEER_HTTP])
    n6, dn = (next(i for i, p in enumerate(MEP_PORTS, start=1) if p["name"] == name) for name in ("n6", "dn"))

    def frame(ttl: int) -> Ether:
        return (Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac) / IP(src=ADDR.ue1, dst=ADDR.server, ttl=ttl, tos=0x28)
                / UDP(sport=40000, dport=9400) / Raw(b"fib" * 10))

    want = frame(63)
    want[Ether].src, want[Ether].dst = ADDR.mep_dn_mac, ADDR.dn_mac
    # looked up, then the cached answer: the same bytes; a TTL of 1 to the stack
    results = in_one_generation(lab, [bytes(frame(64)), bytes(frame(64)), bytes(frame(1))], n6)
    for result, _ in results[:2]:
        assert (result.verdict, result.reason) == (Verdict.PASS, Reason.PASS_NO_MATCH)
        assert [(o.port, o.frame) for o in result.outputs] == [(dn, bytes(want))]
    assert [(o.port, o.frame) for o in results[2][0].outputs] == [(PORT_STACK, bytes(frame(1)))]
    assert [outcome for _, outcome in results] == [FibOutcome.FORWARDED, FibOutcome.CACHED, FibOutcome.TTL]


def in_one_generation(lab: EngineLab, frames: list[bytes], ingress: int) -> list[tuple[Result, FibOutcome]]:
    """Each frame's result and FIB outcome (the one counter its run moved, by one), all in one new FIB
    cache generation (nothing cached at the start), all on one CPU (the FIB cache is per CPU: a frame run
    on the other CPU found it empty, a CI failure of a cached answer). Tried again when the generation or
    another counter moved meanwhile: the kernel's own neighbour discovery and MLD reports in the lab's
    namespace may bump the one and pass through the other at any time."""
    with pinned_cpu():
        for _ in range(5):
            generation = lab.engine.sync_fib()
            results = []
            for frame in frames:
                before = fib_counts(lab)
                result = lab.engine.process(frame, ingress)
                moved = {o: n - before.get(o, 0) for o, n in fib_counts(lab).items() if n != before.get(o, 0)}
                if list(moved.values()) != [1]:
                    break
                results.append((result, next(iter(moved))))
            if len(results) == len(frames) and lab.engine.fib_generation() == generation:
                return results
    raise AssertionError("the FIB cache generation or another FIB counter moved during each of five tries")


def test_fib_cache_follows_the_kernels_changes(lab: EngineLab) -> None:
    """A cached next hop is used until the kernel's answer changes: a new neighbour MAC, a route MTU
    below the frame (a longer frame of a cached flow is looked up again), each heard over rtnetlink."""
    fib_only(lab)
    lab.apply([STEER_HTTP])
    n6, dn = (next(i for i, p in enumerate(MEP_PORTS, start=1) if p["name"] == name) for name in ("n6", "dn"))

    def frame(size: int) -> bytes:
        return bytes(Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac) / IP(src=ADDR.ue1, dst=ADDR.server)
                     / UDP(sport=40100, dport=9400) / Raw(b"c" * size))

    def sent(frames: list[bytes]) -> list[tuple[list[int], str, str]]:
        """Per frame: its ports, its destination MAC, its FIB outcome."""
        return [([o.port for o in r.outputs], r.outputs[0].frame[:6].hex(":"), outcome.name)
                for r, outcome in in_one_generation(lab, frames, n6)]

    moved = "02:00:00:00:0d:0e"
    assert sent([frame(100)] * 2) == [([dn], ADDR.dn_mac, "FORWARDED"), ([dn], ADDR.dn_mac, "CACHED")]
    try:
        # the listener hears the change by itself: the next frame is looked up again
        generation = lab.engine.fib_generation()
        lab.topo.run("mep", ["ip", "neigh", "replace", ADDR.dn_gw, "lladdr", moved, "dev", "dn", "nud", "permanent"],
                     check=True)
        started = time.monotonic()
        while lab.engine.fib_generation() == generation and time.monotonic() - started < 2.0:
            time.sleep(0.001)
        assert lab.engine.fib_generation() != generation
        assert sent([frame(100)] * 2) == [([dn], moved, "FORWARDED"), ([dn], moved, "CACHED")]
        lab.topo.run("mep", ["ip", "route", "replace", ADDR.servers, "via", ADDR.dn_gw, "mtu", "lock", "300"],
                     check=True)
        assert [outcome for _, _, outcome in sent([frame(100), frame(100), frame(400), frame(100)])] == \
            ["FORWARDED", "CACHED", "FRAG_NEEDED", "CACHED"]
    finally:
        lab.topo.run("mep", ["ip", "route", "replace", ADDR.servers, "via", ADDR.dn_gw], check=True)
        lab.topo.run("mep", ["ip", "neigh", "replace", ADDR.dn_gw, "lladdr", ADDR.dn_mac, "dev", "dn", "nud",
                             "permanent"], check=True)
        lab.engine.sync_fib()


# What the FIB says for a destination (routes the case adds to the mep namespace) -> the outcome.
# Each frame goes to the stack unchanged (test-run: nothing is sent), counted under that outcome.
FIB_CASES = [
    ("blackhole route", "198.18.101.1", [["ip", "route", "add", "blackhole", "198.18.101.0/24"]], "BLACKHOLE"),
    ("unreachable route", "198.18.102.1", [["ip", "route", "add", "unreachable", "198.18.102.0/24"]],
     "UNREACHABLE"),
    ("prohibit route", "198.18.103.1", [["ip", "route", "add", "prohibit", "198.18.103.0/24"]], "PROHIBIT"),
    ("the MEP's own address", ADDR.mep_n6, [], "NOT_FWDED"),
    ("a next hop with no neighbour entry", "198.18.104.1",
     [["ip", "route", "add", "198.18.104.0/24", "via", "198.18.2.3"]], "NO_NEIGH"),
    ("a route MTU below the frame", "198.18.105.1",
     [["ip", "route", "add", "198.18.105.0/24", "via", ADDR.dn_gw, "mtu", "lock", "100"]], "FRAG_NEEDED"),
    ("a route out of an interface that is no data-plane port", "198.18.106.1",
     [["ip", "route", "add", "198.18.106.0/24", "dev", "mep-mir0"],
      ["ip", "neigh", "add", "198.18.106.1", "lladdr", "02:00:00:00:ee:01", "dev", "mep-mir0"]], "NOT_A_PORT"),
    ("forwarding off on the port it came in on", ADDR.server,
     [["sysctl", "-qw", "net.ipv4.conf.n6.forwarding=0"]], "FWD_DISABLED"),
]


def test_fib_forward_leaves_to_the_stack_what_the_stack_must_answer(lab: EngineLab) -> None:
    fib_only(lab)
    lab.apply([STEER_HTTP])
    n6 = next(i for i, p in enumerate(MEP_PORTS, start=1) if p["name"] == "n6")
    for what, dst, setup, outcome in FIB_CASES:
        frame = bytes(Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac) / IP(src=ADDR.ue1, dst=dst)
                      / UDP(sport=40000, dport=9400) / Raw(b"x" * 200))
        counted = lab.engine.counters().fib.get(FibOutcome[outcome], PacketBytes()).packets
        try:
            for argv in setup:
                lab.topo.run("mep", argv, check=True)
            lab.engine.sync_fib()  # no answer cached before the change is used
            result = lab.engine.process(frame, n6)
        finally:
            lab.topo.run("mep", ["sysctl", "-qw", "net.ipv4.conf.n6.forwarding=1"], check=True)
            for argv in setup:
                if argv[:2] == ["ip", "route"]:
                    lab.topo.run("mep", ["ip", "route", "del", *argv[3:]], check=True)
            lab.engine.sync_fib()
        assert [(o.port, o.frame) for o in result.outputs] == [(PORT_STACK, frame)], what
        assert lab.engine.counters().fib[FibOutcome[outcome]].packets == counted + 1, what
    tagged = bytes(Ether(src=ADDR.upf_n6_mac, dst=ADDR.mep_n6_mac) / Dot1Q(vlan=7)
                   / IP(src=ADDR.ue1, dst=ADDR.server) / UDP(sport=40000, dport=9400))
    # a VLAN tag, and the link's own traffic (an MLD report as the UPF's kernel sends it, a subnet
    # broadcast): the stack's, whatever its TTL or route
    group = [Ether(src=ADDR.upf_n6_mac, dst="33:33:00:00:00:16") / IPv6(src="fe80::5:1", dst="ff02::16", hlim=1)
             / UDP(sport=40000, dport=9400),
             Ether(src=ADDR.upf_n6_mac, dst="ff:ff:ff:ff:ff:ff") / IP(src=ADDR.upf_n6, dst="198.18.1.255")
             / UDP(sport=40000, dport=9400)]
    frames = [tagged] + [bytes(g) for g in group]
    results = in_one_generation(lab, frames, n6)
    assert [[(o.port, o.frame) for o in r.outputs] for r, _ in results] == [[(PORT_STACK, f)] for f in frames]
    assert [outcome for _, outcome in results] == [FibOutcome.VLAN, FibOutcome.LINK_GROUP, FibOutcome.LINK_GROUP]


def test_fastpath_passes_frames_to_the_stack_for_forwarding_and_local_delivery(lab: EngineLab) -> None:
    only(lab, "fastpath")
    lab.apply([STEER_HTTP])
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "8080", "hi")["reply"] == "dn:hi"
    ping = lab.topo.run("upf", ["ping", "-c", "3", "-i", "0.2", "-W", "2", ADDR.mep_n6], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    ports = lab.engine.describe()["ports"]
    assert ports["n6"]["stack_frames"] > 0 and ports["dn"]["stack_frames"] > 0
    assert all(p["tx_dropped"] == 0 and p["rx_dropped"] == 0 for p in ports.values())


def test_the_fastpath_engine_receives_as_configured(lab: EngineLab) -> None:
    """auto: every port through AF_XDP, nothing through the rings; af_packet: the rings, no XDP program.

    Counted over one exchange: a frame that arrives while the engine starts,
    between a port's ring and its program (the kernel's own neighbour
    discovery on a new link), takes the ring (docs/fastpath.md, start and stop).
    """
    only(lab, "fastpath")
    lab.apply([STEER_HTTP])
    before = lab.engine.describe()["ports"]
    assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "rx")["reply"] == "app1:rx"
    ports = lab.engine.describe()["ports"]
    receive = lab.config.dataplane.fastpath_receive
    frames = {name: port["rx_frames"] - before[name]["rx_frames"] for name, port in ports.items()}
    through_xdp = {name: port["rx_af_xdp"] - before[name]["rx_af_xdp"] for name, port in ports.items()}
    for name, port in ports.items():
        if receive == "auto":
            assert port["receive"] == "af_xdp", name
            assert through_xdp[name] == frames[name], name
        else:
            assert port["receive"] == "af_packet (dataplane.fastpath_receive: af_packet)", name
            assert port["rx_af_xdp"] == 0, name
    assert frames["n6"] > 0 and frames["app1"] > 0
    with in_netns(lab.topo.ns("mep")):
        modes = {p["ifname"]: attached_program(link(p["ifname"]).ifindex) for p in MEP_PORTS}
    expected = ("native", PROG_NAME) if receive == "auto" else ("none", None)
    assert {(mode, name) for mode, _, name in modes.values()} == {expected}
