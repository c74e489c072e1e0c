"""Every ``mepm`` command against a real ``mep run``, with certificates made by ``mepm certs init``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mep.mm5.client import Mm5Client
from mepm.certs import CertPaths
from tests.fixtures.mep_daemon import MepFactory
from tests.mepm.harness import APPD, NEW_PORT, PORT, Mepm, appd_v2, host_args, on_mep, probe


def test_the_operator_flow(mep_factory: MepFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mepm = Mepm(f"sqlite://{tmp_path}/mepm.db", capsys)

    out = mepm.ok("certs", "init", str(tmp_path / "pki"), "--san", "localhost", "--san", "127.0.0.1")
    assert "SAN localhost, 127.0.0.1" in out
    certs = CertPaths.under(tmp_path / "pki")
    assert all(p.exists() for p in certs.all()) and certs.ca_key.stat().st_mode & 0o777 == 0o600
    code, _, err = mepm("certs", "init", str(tmp_path / "pki"))
    assert code == 1 and "refusing to overwrite" in err

    mep = mep_factory("edge1", certs=certs).start()
    code, _, err = mepm("host", "add", "edge1", "--address", mep.target)
    assert code == 2 and "--ca" in err
    code, _, err = mepm("host", "add", "Edge 1", *host_args(mep, certs))
    assert code == 2 and "name" in err
    assert "edge1: 127.0.0.1" in mepm.ok("host", "add", "edge1", *host_args(mep, certs))
    code, _, err = mepm("host", "add", "edge1", *host_args(mep, certs))
    assert code == 1 and "exists already" in err
    mepm.ok("host", "add", "edge9", "--address", "127.0.0.1:9", "--insecure")
    hosts = {h["name"]: h for h in mepm.json("host", "list")}
    assert hosts["edge1"]["reachable"] and hosts["edge1"]["security"] == "mtls" and hosts["edge1"]["instance"] == "edge1"
    assert not hosts["edge9"]["reachable"] and "does not answer" in hosts["edge9"]["error"]
    mepm.ok("host", "remove", "edge9")

    # A bad AppD: exit 2, file, line and field named; nothing stored.
    bad = tmp_path / "bad.yaml"
    bad.write_text((APPD / "video-analytics.yaml").read_text().replace("priority: 10", "priority: -1"))
    code, _, err = mepm("app", "instantiate", str(bad), "--host", "edge1")
    assert code == 2 and f"{bad}:33: appTrafficRule[0].priority: Input should be greater than or equal to 0" in err
    code, _, err = mepm("app", "instantiate", str(APPD / "flow-monitor.yaml"), "--host", "edge7")
    assert code == 2 and "no host 'edge7' (known: edge1)" in err
    assert mepm.json("app", "list") == []

    out = mepm.ok("app", "instantiate", str(APPD / "video-analytics.yaml"), "--host", "edge1")
    assert "edge1        READY         generation 1, in force" in out and out.count("client_secret=") == 1
    out = mepm.ok("app", "instantiate", str(APPD / "video-analytics.yaml"), "--host", "edge1")  # nothing new
    assert "client_secret=" not in out
    mepm.ok("app", "instantiate", str(APPD / "flow-monitor.yaml"), "--host", "edge1")
    code, _, err = mepm("app", "instantiate", str(appd_v2(tmp_path)), "--host", "edge1")
    assert code == 1 and "mepm app update video-analytics" in err

    listed = {a["name"]: a for a in mepm.json("app", "list")}
    assert sorted(listed) == ["flow-monitor", "video-analytics"]
    assert listed["video-analytics"]["status"]["edge1"]["state"] == "READY"
    shown = mepm.json("app", "show", "video-analytics")
    live = shown["live"]["edge1"]
    assert (live["state"], live["config_generation"], live["in_force"]) == ("READY", 1, True)
    assert '"client_secret"' not in json.dumps(shown) and shown["instances"]["edge1"]["client_secret_hash"]
    assert "video.edge.example->198.19.1.10" in mepm.ok("app", "show", "video-analytics")

    rules = {(r["app"], r["trafficRuleId"]): r for r in mepm.json("rules")}
    assert set(rules) == {("video-analytics", "video-to-edge"), ("flow-monitor", "mirror-web")}
    assert rules[("flow-monitor", "mirror-web")]["action"] == "DUPLICATE_DECAPSULATED"
    assert "FORWARD_DECAPSULATED   yes" in mepm.ok("rules", "--host", "edge1")

    for _ in range(2):
        assert probe(mep, PORT)["verdict"] == "REDIRECT"
    stats = {r["rule"]: r for r in mepm.json("stats", "--app", "video-analytics")}
    assert stats["video-to-edge"]["packets"] == 2 and stats["video-to-edge"]["rule_id"] == live["traffic_rules"][
        "video-to-edge"]
    assert set(stats) == {"video-to-edge", "video-name"}

    out = mepm.ok("app", "update", "video-analytics", str(appd_v2(tmp_path)))
    assert "generation 2, desired INSTANTIATED" in out and "READY         generation 2, in force" in out
    assert probe(mep, NEW_PORT)["verdict"] == "REDIRECT"
    assert "unchanged; still generation 2" in mepm.ok("app", "update", "video-analytics", str(appd_v2(tmp_path)))
    code, _, err = mepm("app", "update", "video-analytics", str(APPD / "flow-monitor.yaml"))
    assert code == 2 and "appDId" in err

    code, _, err = mepm("host", "remove", "edge1")
    assert code == 1 and "runs flow-monitor, video-analytics" in err
    out = mepm.ok("app", "terminate", "flow-monitor")
    assert "terminated everywhere and forgotten" in out
    assert [a["name"] for a in mepm.json("app", "list")] == ["video-analytics"]

    async def ids(client: Mm5Client) -> list[str]:
        return [a.app_instance_id for a in (await client.get_state()).apps]

    assert [i.split("-edge1-")[0] for i in on_mep(mep, certs, ids)] == ["video-analytics"]
    out = mepm.ok("reconcile", "--once")
    assert "video-analytics" in out and "READY" in out
    mepm.ok("app", "terminate", "video-analytics")
    assert on_mep(mep, certs, ids) == [] and mepm.json("app", "list") == []
    mepm.ok("host", "remove", "edge1")
    assert mepm.json("host", "list") == []
    code, _, err = mepm("app", "show", "video-analytics")
    assert code == 1 and "no app 'video-analytics'" in err
