"""MEPM keeps two MEPs as desired through kill -9, lost state and a partition; a MEP enforces without MEPM.

Two real ``mep run`` processes (reference engine), each with its own etcd
prefix in one real etcd, Mm5 over mutual TLS; MEPM's desired state under a
third prefix; ``mepm reconcile`` as a process. "Traffic" is a UE's datagram
run through each MEP's engine with ``mep explain`` (the reference engine sees
no wire); test_mepm_topology.py sends real frames through two lab topologies.

With the reference engine the counters live in the process, so after a
kill -9 they start again from zero: what this test proves is that the same
rule (same trafficRuleId, same platform rule id, kept by the MEP's store)
counts the traffic again. With the XDP engine the counters are pinned maps
and carry on from where they were.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mepm.certs import CertPaths
from tests.fixtures.etcd import delete_prefix
from tests.fixtures.mep_daemon import MepFactory
from tests.mepm.harness import (APP, APPD, NEW_PORT, PORT, Mepm, Reconciler, appd_v2, host_args, instance, probe,
                                running, wait_until)

@pytest.mark.needs_etcd
def test_two_meps_are_reconciled_after_kill_9_lost_state_and_a_partition(
    etcd_endpoint: str, mep_factory: MepFactory, mm5_certs: CertPaths, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = f"/mepm-test/{uuid.uuid4().hex}/"
    meps = {
        name: mep_factory(name, certs=mm5_certs, etcd=(etcd_endpoint, f"{base}{name}/")).start()
        for name in ("edge1", "edge2")
    }
    edge1, edge2 = meps["edge1"], meps["edge2"]
    mepm = Mepm(f"etcd://{etcd_endpoint}{base}mepm/", capsys)
    reconciler: Reconciler | None = None
    try:
        for name, mep in meps.items():
            mepm.ok("host", "add", name, *host_args(mep, mm5_certs))
        out = mepm.ok("app", "instantiate", str(APPD / "video-analytics.yaml"), "--host", "edge1", "--host", "edge2")
        assert out.count("READY         generation 1, in force") == 2
        first = {name: running(mep, mm5_certs, 1) for name, mep in meps.items()}
        for name, mep in meps.items():
            hit = probe(mep, PORT)
            assert (hit["verdict"], hit["rule_id"]) == ("REDIRECT", first[name]["rules"]["video-to-edge"])  # type: ignore[index]

        reconciler = Reconciler(mepm.store_url, tmp_path / "reconcile.log")
        wait_until(lambda: "host_seen host=edge1" in reconciler.log() and "host_seen host=edge2" in reconciler.log(),
                   "the reconciler sees both MEPs")

        # 1. kill -9 a MEP and restart it: it comes back from its own store, and MEPM finds it as desired.
        edge1.kill()
        wait_until(lambda: "host_unreachable host=edge1" in reconciler.log(), "the reconciler notices edge1 is gone")
        edge1.start()
        wait_until(lambda: "host_restarted host=edge1" in reconciler.log(), "the reconciler sees edge1's new boot")
        again = wait_until(lambda: running(edge1, mm5_certs, 1), "edge1 READY at generation 1")
        assert first["edge1"] is not None
        assert (again["id"], again["rules"]) == (first["edge1"]["id"], first["edge1"]["rules"])
        hit = probe(edge1, PORT)
        assert (hit["verdict"], hit["rule_id"]) == ("REDIRECT", again["rules"]["video-to-edge"])
        assert instance(edge1, mm5_certs)["packets"]["video-to-edge"] >= 1  # type: ignore[index]

        # 2. a MEP that lost its state (kill -9, store wiped) gets the app again from MEPM.
        edge2.kill()
        delete_prefix(etcd_endpoint, f"{base}edge2/")
        edge2.start()
        rebuilt = wait_until(lambda: running(edge2, mm5_certs, 1), "edge2 re-created at generation 1")
        assert first["edge2"] is not None
        assert rebuilt["id"] == first["edge2"]["id"] and set(rebuilt["rules"]) == set(first["edge2"]["rules"])
        assert probe(edge2, PORT)["verdict"] == "REDIRECT"
        assert "instance_created" in reconciler.log() and "configuration_pushed" in reconciler.log()

        # 3. a partition during an update: edge1 is down while generation 2 is pushed; it gets it when back.
        edge1.kill()
        code, out, _ = mepm("app", "update", APP, str(appd_v2(tmp_path)))
        assert code == 1 and "edge1        UNREACHABLE" in out and "edge2        READY         generation 2" in out
        assert probe(edge2, NEW_PORT)["verdict"] == "REDIRECT"
        edge1.start()
        updated = wait_until(lambda: running(edge1, mm5_certs, 2), "edge1 at generation 2 after the partition")
        assert updated["id"] == first["edge1"]["id"]
        assert probe(edge1, NEW_PORT)["verdict"] == "REDIRECT"
        listed = wait_until(
            lambda: [a for a in mepm.json("app", "list") if all(s["ok"] for s in a["status"].values())],
            "MEPM records both instances as desired",
        )
        assert [(a["name"], a["generation"], sorted(a["status"])) for a in listed] == [(APP, 2, ["edge1", "edge2"])]

        assert reconciler.stop() == 0
    finally:
        if reconciler is not None:
            reconciler.kill()
        delete_prefix(etcd_endpoint, base)


def test_a_mep_keeps_enforcing_while_mepm_is_down(
    mep_factory: MepFactory, mm5_certs: CertPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mep = mep_factory("edge", certs=mm5_certs).start()
    mepm = Mepm(f"sqlite://{tmp_path}/mepm/mepm.db", capsys)
    mepm.ok("host", "add", "edge", *host_args(mep, mm5_certs))
    mepm.ok("app", "instantiate", str(APPD / "video-analytics.yaml"), "--host", "edge")
    reconciler = Reconciler(mepm.store_url, tmp_path / "reconcile.log")
    try:
        wait_until(lambda: "host_seen host=edge" in reconciler.log(), "the reconciler sees the MEP")
        rule_id = probe(mep, PORT)["rule_id"]
    finally:
        reconciler.kill()  # MEPM is down from here on

    for _ in range(3):
        hit = probe(mep, PORT)
        assert (hit["verdict"], hit["rule_id"]) == ("REDIRECT", rule_id)
    assert instance(mep, mm5_certs)["packets"]["video-to-edge"] == 4  # type: ignore[index]

    mep.kill()  # and the MEP restarts while MEPM is still down
    mep.start()
    seen = running(mep, mm5_certs, 1)
    assert seen is not None and seen["rules"]["video-to-edge"] == rule_id
    hit = probe(mep, PORT)
    assert (hit["verdict"], hit["rule_id"]) == ("REDIRECT", rule_id)
    assert probe(mep, 80)["verdict"] == "PASS"  # everything else still goes to the data network
