"""MEPM and two XDP MEPs on real namespace topologies: kill -9 one, and real packets stay steered.

Each MEP is a ``mep run`` process with the XDP engine in the mep namespace of
its own lab topology (upf_sim/topology.py); both keep their state under their
own prefix of one real etcd; MEPM deploys the video-analytics AppD to both
over Mm5 with mutual TLS. A UE's TCP connection to the cloud server's port
8554 then reaches the app (the AppD's FORWARD_DECAPSULATED FLOW rule: the
reply comes back through the flow state), other ports still reach the DN.
After kill -9 of edge1 its XDP program keeps steering with no process
behind it (edge autonomy); the restarted MEP adopts the pinned program and
maps, the reconciler sees the new boot, the app is READY at the same
generation with the same rule ids, and the rule's pinned counters carried
on through the crash.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from mepm.certs import CertPaths
from tests.fixtures.etcd import delete_prefix
from tests.fixtures.mep_daemon import MepFactory, MepProcess
from tests.mepm.harness import APPD, PORT, Mepm, Reconciler, host_args, instance, running, wait_until
from tests.netns.lab import ask, echo_servers
from upf_sim.topology import ADDR, MEP_PORTS, Topology

pytestmark = [pytest.mark.needs_root, pytest.mark.needs_etcd]


def test_two_xdp_meps_steer_real_packets_through_kill_9_and_restart(
    etcd_endpoint: str, mep_factory: MepFactory, mm5_certs: CertPaths, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, BPF); CI runs as root")
    pytest.importorskip("bcc", reason="the XDP engine needs bcc (python3-bpfcc)")
    base = f"/mepm-topo-test/{uuid.uuid4().hex}/"
    pins = [Path("/sys/fs/bpf") / f"mep-mepm-{os.getpid()}-{i}" for i in (1, 2)]
    reconciler: Reconciler | None = None
    meps: dict[str, MepProcess] = {}
    with contextlib.ExitStack() as stack:
        # Last out: the pinned maps, once the topologies (and with them the programs) are gone.
        for pin in pins:
            stack.callback(shutil.rmtree, pin, ignore_errors=True)
        topos = {name: stack.enter_context(Topology()) for name in ("edge1", "edge2")}
        try:
            for (name, topo), pin in zip(topos.items(), pins):
                stack.enter_context(echo_servers(topo, [("app1", "0.0.0.0", PORT), ("dn", ADDR.server, PORT),
                                                        ("dn", ADDR.server, 80)]))
                meps[name] = mep_factory(name, certs=mm5_certs, etcd=(etcd_endpoint, f"{base}{name}/"), overrides={
                    "dataplane": {"engine": "xdp", "netns": topo.ns("mep"), "ports": MEP_PORTS, "pin_root": str(pin)},
                }).start()
            edge1 = meps["edge1"]
            mepm = Mepm(f"etcd://{etcd_endpoint}{base}mepm/", capsys)
            for name, mep in meps.items():
                mepm.ok("host", "add", name, *host_args(mep, mm5_certs))
                assert ask(topos[name], PORT) == "dn:q"  # nothing deployed yet
            out = mepm.ok("app", "instantiate", str(APPD / "video-analytics.yaml"), "--host", "edge1", "--host", "edge2")
            assert out.count("READY         generation 1, in force") == 2
            for name in meps:
                assert ask(topos[name], PORT) == "app1:q"  # steered to the app, and the reply came back
                assert ask(topos[name], 80) == "dn:q"  # not named by the rule: the data network
            first = running(edge1, mm5_certs, 1)
            assert first is not None and first["packets"]["video-to-edge"] > 0

            reconciler = rec = Reconciler(mepm.store_url, tmp_path / "reconcile.log")
            wait_until(lambda: "host_seen host=edge1" in rec.log() and "host_seen host=edge2" in rec.log(),
                       "the reconciler sees both MEPs")

            edge1.kill()
            assert ask(topos["edge1"], PORT) == "app1:q"  # no MEP process: the kernel keeps enforcing
            edge1.start()
            wait_until(lambda: "host_restarted host=edge1" in rec.log(), "the reconciler sees edge1's new boot")
            again = wait_until(lambda: running(edge1, mm5_certs, 1), "edge1 READY at generation 1 after the restart")
            assert (again["id"], again["rules"]) == (first["id"], first["rules"])
            assert ask(topos["edge1"], PORT) == "app1:q"
            assert ask(topos["edge1"], 80) == "dn:q"
            after = instance(edge1, mm5_certs)
            assert after is not None
            # Pinned counters: the packets before the crash, during it, and after.
            assert after["packets"]["video-to-edge"] > first["packets"]["video-to-edge"]
            reconciler = None
            assert rec.stop() == 0
        finally:
            if reconciler is not None:
                reconciler.kill()
            for mep in meps.values():
                mep.kill()
            delete_prefix(etcd_endpoint, base)
