"""The mep, mepm and upf-sim command lines: help, config check, daemon-less errors."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

import mepm.cli
import upf_sim.cli
from mep import cli
from mep.config import Config, PortConfig, TlsConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mep.yaml"

SUBCOMMANDS = [
    ["run"],
    ["config"],
    ["config", "check"],
    ["doctor"],
    ["status"],
    ["stats"],
    ["rules"],
    ["explain"],
    ["version"],
]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse: --help and usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_lists_every_command_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for name in ("run", "config", "doctor", "status", "stats", "rules", "explain", "version"):
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), f"{name} has no one-line help"
    assert "examples:" in out


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help_with_examples(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main([*argv, "--help"], capsys)
    assert code == 0
    assert out.startswith("usage: mep ")
    assert "examples:" in out


def test_console_script_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "mep.cli", "version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert re.fullmatch(r"mep \d+\.\d+\.\d+\S*\n", proc.stdout)


def test_config_check_example_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["config", "check", str(EXAMPLE)], capsys)
    assert (code, out) == (0, f"{EXAMPLE}: OK\n")


def test_config_check_prints_each_error_with_its_dotted_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "store:\n  backend: redis\n"
        "dataplane:\n  ports:\n    - {name: n6, ifname: a-very-long-ifname, role: n6}\n"
        "mp1:\n  listn: 127.0.0.1:1\n"
    )
    code, out, _ = run_main(["config", "check", str(bad)], capsys)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{bad}: ") for line in lines)
    paths = {line.split(": ")[1] for line in lines}
    assert paths == {"store.backend", "dataplane.ports.0.ifname", "mp1.listn"}
    assert "unknown key" in out


def test_config_check_reports_yaml_errors_with_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("store:\n  backend: [sqlite\n")
    code, out, _ = run_main(["config", "check", str(bad)], capsys)
    assert code == 2
    assert out.startswith(f"{bad}: ") and "line" in out
    assert len(out.splitlines()) == 1


def test_config_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["config", "check", str(tmp_path / "none.yaml")], capsys)
    assert code == 2
    assert "cannot read" in out


def test_run_refuses_a_bad_config_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataplane:\n  engine: warp\n")
    code, out, err = run_main(["run", "-c", str(bad)], capsys)
    assert code == 2
    assert "dataplane.engine" in err and "Traceback" not in err


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of ``model``, dotted."""
    keys = []
    for name, field in model.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
        if isinstance(default, BaseModel):
            keys += _keys(type(default), f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_configuration_doc_names_every_key() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    keys = _keys(Config) + _keys(PortConfig, "dataplane.ports[].") + _keys(TlsConfig, "mp1.tls.") + _keys(TlsConfig, "mm5.tls.")
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"docs/configuration.md does not document: {missing}"


@pytest.mark.parametrize("command", ["status", "stats", "rules"])
def test_daemon_commands_say_when_no_daemon_runs(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "none.sock"
    code, out, err = run_main([command, "--socket", str(sock)], capsys)
    assert code == 1
    assert out == ""
    assert f"no daemon is running on {sock}" in err
    assert "Traceback" not in err


def test_explain_rejects_bad_hex_before_asking_the_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["explain", "--socket", str(tmp_path / "x.sock"), "--ingress", "1", "--hex", "zz"], capsys)
    assert code == 2
    assert "--hex takes hex digits" in err


def test_explain_scapy_expression_errors_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        ["explain", "--socket", str(tmp_path / "x.sock"), "--ingress", "1", "--scapy", "Ether()/__import__('os')"], capsys
    )
    assert code == 1
    assert "--scapy expression does not evaluate" in err


def test_scapy_frames_are_built_from_layers() -> None:
    frame = cli._scapy_frame("Ether(src='02:00:00:00:05:01', dst='02:00:00:00:06:01')/IP(src='198.18.0.5', dst='198.18.100.1')/UDP(dport=53)")
    assert frame[:12] == bytes.fromhex("020000000601020000000501")
    assert frame[12:14] == b"\x08\x00"


def test_mepm_prints_usage_and_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert mepm.cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mepm") and "mepm app instantiate" in out
    assert mepm.cli.main(["version"]) == 0
    assert re.fullmatch(r"mepm \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_upf_sim_prints_usage_and_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert upf_sim.cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: upf-sim") and "upf-sim lab" in out  # tests/upf has the rest
    assert upf_sim.cli.main(["version"]) == 0
    assert re.fullmatch(r"upf-sim \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
