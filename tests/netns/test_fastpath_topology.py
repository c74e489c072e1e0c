"""The fastpath engine's own life cycle on the lab topology (its steering scenarios: test_steering_topology.py).

Closing the engine gives the ports back to the kernel, a configured ``xdp``
engine that cannot attach runs as fastpath, saying so, AF_XDP receive steps
aside for another XDP program (or refuses to start when insisted on) and
takes over its own program left by a crash, and the daemon runs
``engine: fastpath`` from store change to packet.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from mep.config import Capacity, Config, DataplaneConfig
from mep.daemon import Daemon
from mep.dataplane.factory import make_engine
from mep.dataplane.fastpath import FastpathEngine, extension
from mep.dataplane.links import in_netns, link, xdp_attached
from mep.dataplane.testrun import XDP_FLAGS_DRV_MODE, ProbeProgram
from mep.dataplane.xsk import XskRedirect, attached_program
from mep.errors import AttachError
from mep.models import TrafficRule
from mep.state.lifecycle import LifecycleEvent
from mep.state.records import AppInstance
from tests.netns.lab import REPO, STEER_HTTP, EngineLab, ask, echo_servers, fastpath_lab, settle
from tests.rulesets import rule
from upf_sim.topology import ADDR, MEP_PORTS, Topology

pytestmark = pytest.mark.needs_root


def test_a_closed_engine_gives_the_ports_back_to_the_kernel() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, AF_PACKET)")
    with Topology() as topo:
        lab = fastpath_lab(topo)
        try:
            lab.start("dn", "echo-tcp", ADDR.server, "80", "dn")
            lab.apply([rule("block", "DROP", 0, filters=[{"protocol": ["TCP"]}])])
            blocked = topo.run("upf", [sys.executable, "-m", "tests.netns.peers", "tcp-ask", ADDR.ue1, ADDR.server,
                                       "80", "x"], cwd=REPO, capture_output=True, timeout=30)
            assert blocked.returncode != 0  # the DROP rule is enforced: no connection
            lab.engine.close()
            assert lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", "back")["reply"] == "dn:back"
            nft = topo.run("mep", ["nft", "list", "tables"], capture_output=True)
            assert b"mep_fastpath" not in nft.stdout
            with in_netns(topo.ns("mep")):  # nor any AF_XDP receive program
                assert {xdp_attached(link(p["ifname"]).ifindex)[0] for p in MEP_PORTS} == {"none"}
        finally:
            lab.close()


def test_xdp_that_cannot_attach_runs_as_fastpath_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """dataplane.engine xdp with xdp_mode native on ports without native XDP (bridges): a loud fallback."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF)")
    pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is needed to try XDP first")
    name = f"mep-fb-{uuid.uuid4().hex[:6]}"
    pin_root = Path("/sys/fs/bpf") / name
    netns.create(name)
    engine = None
    try:
        with in_netns(name), IPRoute() as ipr:
            for ifname, mac in (("n6", "02:00:00:00:06:01"), ("dn", "02:00:00:00:0d:01")):
                ipr.link("add", ifname=ifname, kind="bridge")
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], address=mac, state="up")
        config = Config(instance="fallback", dataplane=DataplaneConfig(
            engine="xdp", xdp_mode="native", netns=name, pin_root=pin_root,
            ports=[{"name": "n6", "ifname": "n6", "role": "n6"},
                   {"name": "dn", "ifname": "dn", "role": "dn"}],
            capacity=Capacity(rules=64, filters=64, flows=1024, dns_names=16)))
        with caplog.at_level(logging.WARNING, logger="mep.dataplane.factory"):
            engine = make_engine(config)
        assert isinstance(engine, FastpathEngine)
        described = engine.describe()
        assert described["engine"] == "fastpath" and described["io_running"]
        assert "xdp could not run" in described["fallback_from"]
        assert any("engine_fallback" in r.getMessage() for r in caplog.records)
    finally:
        if engine is not None:
            engine.close()
        netns.remove(name)
        shutil.rmtree(pin_root, ignore_errors=True)


@contextlib.contextmanager
def steering_http(topo: Topology) -> Iterator[EngineLab]:
    """A fastpath lab steering UE -> server:80 to app1 (STEER_HTTP), its servers running; closed on exit."""
    lab = fastpath_lab(topo)
    try:
        lab.start_servers()
        lab.apply([STEER_HTTP])
        yield lab
    finally:
        lab.close()


def http_reply(lab: EngineLab, text: str) -> str:
    return str(lab.run("upf", "tcp-ask", ADDR.ue1, ADDR.server, "80", text)["reply"])


def test_redirected_frames_leave_through_af_xdp_and_a_port_that_went_down_gets_it_back() -> None:
    """FORWARD outputs go out through the port's AF_XDP socket; a send error closes it, AF_PACKET carries on
    (counting what it cannot send), and a second later the socket is reopened."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, AF_PACKET, AF_XDP)")
    with Topology() as topo, steering_http(topo) as lab:
        assert http_reply(lab, "a") == "app1:a"
        ports = lab.engine.describe()["ports"]
        assert {p["transmit"] for p in ports.values()} == {"af_xdp"}
        assert ports["app1"]["tx_frames"] > 0 and ports["n6"]["tx_frames"] > 0  # the flow's both ways

        topo.run("mep", ["ip", "link", "set", "app1", "down"], check=True)
        lost = topo.run("upf", [sys.executable, "-m", "tests.netns.peers", "tcp-ask", ADDR.ue1, ADDR.server,
                                "80", "b"], cwd=REPO, capture_output=True, timeout=30)
        assert lost.returncode != 0
        ports = lab.engine.describe()["ports"]
        # "Network is down" from the send, or "No such device" from a reopen tried while still down
        assert ports["app1"]["transmit"].startswith("af_packet (AF_XDP: ")
        assert ports["n6"]["tx_dropped"] > 0  # counted on the port the frames came in on

        topo.run("mep", ["ip", "link", "set", "app1", "up"], check=True)
        time.sleep(1.2)  # the reopen is tried at most once a second
        assert http_reply(lab, "c") == "app1:c"
        assert lab.engine.describe()["ports"]["app1"]["transmit"] == "af_xdp"


def test_a_port_whose_af_xdp_queue_is_taken_sends_with_af_packet() -> None:
    """Another AF_XDP socket holds queue 0 of app1: the engine says why and sends there with AF_PACKET."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, AF_PACKET, AF_XDP)")
    with Topology() as topo:
        squatter = extension().Io(0)  # opens an AF_XDP socket on queue 0 with its port
        try:
            with in_netns(topo.ns("mep")):
                squatter.open_port(1, link("app1").ifindex, 1 << 16, 2)
            assert squatter.stats(1)["transmit"] == "af_xdp"
            with steering_http(topo) as lab:
                assert http_reply(lab, "x") == "app1:x"
                ports = lab.engine.describe()["ports"]
                assert ports["app1"]["transmit"] == "af_packet (AF_XDP: Device or resource busy)"
                assert ports["app1"]["tx_frames"] > 0 and ports["n6"]["transmit"] == "af_xdp"
        finally:
            squatter.close()


def test_a_port_with_another_xdp_program_receives_with_af_packet_unless_af_xdp_is_insisted_on() -> None:
    """auto: that port receives on its AF_PACKET ring, saying why, the others through AF_XDP; af_xdp: the
    engine refuses to start, naming the port and the program, and leaves no program of its own behind."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF, nftables, AF_XDP)")
    pytest.importorskip("bcc", reason="the other XDP program (testrun.ProbeProgram) is loaded with bcc")
    probe = ProbeProgram.load()
    try:
        with Topology() as topo:
            with in_netns(topo.ns("mep")):
                probe.attach("app2", XDP_FLAGS_DRV_MODE)
            with steering_http(topo) as lab:
                assert http_reply(lab, "p") == "app1:p"
                ports = lab.engine.describe()["ports"]
                assert ports["app2"]["receive"] == "af_packet (XDP program mep_probe attached (native))"
                assert {ports[p]["receive"] for p in ("n6", "dn", "app1")} == {"af_xdp"}
            with pytest.raises(AttachError, match=r"AF_XDP receive on app2 .*mep_probe"):
                fastpath_lab(topo, "af_xdp")
            with in_netns(topo.ns("mep")):
                attached = {p["ifname"]: attached_program(link(p["ifname"]).ifindex) for p in MEP_PORTS}
            mode, _, name = attached.pop("app2")
            assert (mode, name) == ("native", "mep_probe")
            assert set(attached.values()) == {("none", 0, None)}
    finally:
        probe.close()


def test_a_crashed_engines_receive_program_is_replaced_and_removed_on_close() -> None:
    """A receive program whose socket died with its engine (frames pass to the stack) is taken over."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF, nftables, AF_XDP)")
    with Topology() as topo:
        with in_netns(topo.ns("mep")):
            n6 = link("n6").ifindex
            leftover = XskRedirect(n6)  # attached with an empty map, as a killed engine leaves it
            leftover.attach()
            _, leftover_id, _ = attached_program(n6)
        try:
            with steering_http(topo) as lab:
                assert http_reply(lab, "r") == "app1:r"
                n6_port = lab.engine.describe()["ports"]["n6"]
                assert n6_port["receive"] == "af_xdp" and n6_port["rx_af_xdp"] > 0
                with in_netns(topo.ns("mep")):
                    mode, prog_id, name = attached_program(n6)
                assert (mode, name) == ("native", "mep_xsk_rx") and prog_id != leftover_id
            with in_netns(topo.ns("mep")):
                assert attached_program(n6) == ("none", 0, None)
        finally:
            leftover.close()


def test_the_daemon_with_engine_fastpath_steers_real_packets(tmp_path: Path) -> None:
    """``dataplane.engine: fastpath`` through the daemon: store -> compiler -> engine -> packets."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, AF_PACKET)")
    config = Config.model_validate({
        "instance": "dfp",
        "store": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "mep.db")}},
        "dataplane": {"engine": "fastpath", "ports": MEP_PORTS,
                      "capacity": {"rules": 128, "filters": 256, "flows": 4096, "dns_names": 16}},
        "admin": {"socket": str(tmp_path / "admin.sock")},
        "mp1": {"enabled": False}, "mm5": {"enabled": False},
    })
    with Topology() as topo:
        config = config.model_copy(update={"dataplane": config.dataplane.model_copy(update={"netns": topo.ns("mep")})})

        async def scenario() -> None:
            daemon = Daemon(config)
            await daemon.start()
            try:
                assert daemon.engine.describe()["engine"] == "fastpath"
                await daemon.store.create_app(AppInstance(appInstanceId="cache"))
                await daemon.store.put_traffic_rule("cache", TrafficRule.model_validate(STEER_HTTP))
                await daemon.store.transition_app("cache", LifecycleEvent.INSTANTIATE)
                await daemon.store.transition_app("cache", LifecycleEvent.CONFIRM_READY)
                await settle(daemon)
                assert await asyncio.to_thread(ask, topo) == "app1:q"
                await daemon.store.put_traffic_rule("cache", TrafficRule.model_validate({**STEER_HTTP,
                                                                                        "state": "INACTIVE"}))
                await settle(daemon)
                assert await asyncio.to_thread(ask, topo) == "dn:q"
            finally:
                await daemon.close()

        with echo_servers(topo):
            asyncio.run(scenario())
        nft = topo.run("mep", ["nft", "list", "tables"], capture_output=True)
        assert b"mep_fastpath" not in nft.stdout  # closing the daemon gave the ports back
