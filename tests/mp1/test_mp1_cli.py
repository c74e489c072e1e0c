"""``mep app`` and ``mep notifications`` against a running daemon (its admin socket)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from mep import cli
from mep.state import AppState
from tests.mp1.conftest import APP, Platform, dns_rule, traffic_rule

NEW_COMMANDS = [["app"], ["app", "add"], ["app", "list"], ["app", "terminate"], ["app", "credentials"], ["notifications"]]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: --help and usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", NEW_COMMANDS, ids=" ".join)
def test_every_new_command_has_help_with_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*argv, "--help"], capsys)
    assert code == 0 and out.startswith("usage: mep ") and "examples:" in out


def test_top_level_help_names_the_new_commands(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["--help"], capsys)
    assert "mep app add" in out and "mep notifications" in out


@pytest.mark.asyncio
async def test_app_add_list_credentials_terminate(platform: Platform, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sock = ["--socket", str(platform.daemon.config.admin_socket)]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"trafficRules": [traffic_rule("r1")], "dnsRules": [dns_rule("d1")]}))

    code, out, err = await asyncio.to_thread(run, ["app", "add", APP, "--rules", str(rules), "--no-confirm-ready",
                                                   "--graceful-timeout", "0", *sock], capsys)
    assert code == 0, err
    assert f"app instance {APP}: READY, 1 traffic rules, 1 DNS rules" in out
    client_id = next(line.split()[1] for line in out.splitlines() if line.startswith("client_id"))
    secret = next(line.split()[1] for line in out.splitlines() if line.startswith("client_secret"))
    token_endpoint = next(line.split()[2] for line in out.splitlines() if line.startswith("token endpoint"))
    assert token_endpoint == f"{platform.mp1.url}/oauth2/token"
    assert await platform.token(client_id, secret)
    stored = platform.daemon.store.get_app(APP)
    assert (stored.state, stored.graceful_timeout_s, stored.client_id) == (AppState.READY, 0, client_id)

    code, out, _ = await asyncio.to_thread(run, ["app", "list", *sock], capsys)
    assert code == 0 and out.splitlines()[0].split() == ["APP", "STATE", "RULES", "DNS", "SERVICES", "CLIENT", "ID"]
    assert out.splitlines()[1].split() == [APP, "READY", "1", "1", "0", client_id]

    code, out, _ = await asyncio.to_thread(run, ["app", "credentials", APP, *sock, "--json"], capsys)
    rotated = json.loads(out)
    assert code == 0 and rotated["client_id"] != client_id and await platform.token(rotated["client_id"], rotated["client_secret"])

    code, out, err = await asyncio.to_thread(run, ["app", "add", APP, *sock], capsys)
    assert code == 1 and "already exists" in err
    code, out, _ = await asyncio.to_thread(run, ["app", "terminate", APP, "--wait", *sock], capsys)
    assert code == 0 and "TERMINATED, rules and services removed" in out
    assert platform.daemon.store.list_traffic_rules(APP) == []


@pytest.mark.asyncio
async def test_app_add_refusals_name_the_field(platform: Platform, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    sock = ["--socket", str(platform.daemon.config.admin_socket)]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"trafficRules": [traffic_rule("r1", priority=300)]}))
    code, _, err = await asyncio.to_thread(run, ["app", "add", APP, "--rules", str(bad), *sock], capsys)
    assert code == 2 and "traffic_rules.0.priority" in err
    bad.write_text(yaml.safe_dump({"rules": []}))
    code, _, err = await asyncio.to_thread(run, ["app", "add", APP, "--rules", str(bad), *sock], capsys)
    assert code == 2 and "unknown key 'rules'" in err
    code, _, err = await asyncio.to_thread(run, ["app", "add", "bad id/x", *sock], capsys)
    assert code == 2 and "app_instance_id" in err
    # Rules the data plane would refuse, for an app enforced at once: nothing is left behind.
    bad.write_text(yaml.safe_dump({"trafficRules": [traffic_rule("r1", action="FORWARD_ENCAPSULATED")]}))
    code, _, err = await asyncio.to_thread(run, ["app", "add", APP, "--rules", str(bad), "--no-confirm-ready", *sock],
                                           capsys)
    assert code == 2 and "dstInterface.tunnelInfo" in err
    assert platform.daemon.store.list_apps() == []
    code, _, err = await asyncio.to_thread(run, ["app", "terminate", "ghost", *sock], capsys)
    assert code == 1 and "not found" in err
