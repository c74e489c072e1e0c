"""Driving MEPM in the tests: its CLI in this process, its reconciler as a process, MEPs through Mm5."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import mepm.cli
from mep.mm5.client import ClientTls, Mm5Client
from mep.mm5.rpc import pb
from mepm.certs import CertPaths
from tests.fixtures.mep_daemon import ROOT, MepProcess
from tests.mm5.bodies import udp_frame_hex

__all__ = ["Mepm", "Reconciler", "host_args", "on_mep", "wait_until", "probe", "instance", "running",
           "appd_v2", "APP", "APPD", "PORT", "NEW_PORT", "ROOT"]

T = TypeVar("T")
APPD = ROOT / "examples" / "appd"
APP = "video-analytics"  # examples/appd/video-analytics.yaml
PORT = 8554  # a port its traffic rule steers (in every generation the tests write)


class Mepm:
    """``mepm --store URL ...`` in this process; each call returns (exit status, stdout, stderr)."""

    def __init__(self, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.store_url = store_url
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = mepm.cli.main(["--store", self.store_url, *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        """Run, require exit 0, return stdout."""
        code, out, err = self(*args)
        assert code == 0, f"mepm {' '.join(args)} exited {code}\n{out}\n{err}"
        return out

    def json(self, *args: str) -> Any:
        """Run with --json, return the decoded output."""
        return json.loads(self.ok(*args, "--json"))


class Reconciler:
    """``mepm reconcile`` as a process (so a test can kill it); its log in ``log_path``."""

    def __init__(self, store_url: str, log_path: Path, interval_s: float = 0.2) -> None:
        self.log_path = log_path
        log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mepm.cli", "--store", store_url, "reconcile", "--interval", str(interval_s),
             "--timeout", "5"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM; its exit status."""
        self.proc.terminate()
        return self.proc.wait(timeout=30)


def host_args(mep: MepProcess, certs: CertPaths) -> list[str]:
    """``mepm host add`` arguments for ``mep`` over mutual TLS."""
    return ["--address", mep.target, "--ca", str(certs.ca_cert), "--cert", str(certs.client_cert),
            "--key", str(certs.client_key)]


def on_mep(mep: MepProcess, certs: CertPaths | None, call: Callable[[Mm5Client], Awaitable[T]]) -> T:
    """Run ``call`` with an Mm5 client of ``mep`` (mutual TLS when ``certs``)."""
    tls = ClientTls(ca=certs.ca_cert, cert=certs.client_cert, key=certs.client_key) if certs else None

    async def go() -> T:
        async with Mm5Client(mep.target, tls=tls, timeout_s=5) as client:
            return await call(client)

    return asyncio.run(go())


def wait_until(check: Callable[[], T | None], what: str, timeout_s: float = 30.0) -> T:
    """Poll ``check`` until it returns something other than None or False; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # a MEP restarting does not answer for a moment
            last = exc
        else:
            if value is not None and value is not False:
                return value
            last = value
        time.sleep(0.1)
    pytest.fail(f"not within {timeout_s} s: {what} (last: {last!r})")


def probe(mep: MepProcess, dport: int) -> dict[str, Any]:
    """A UE's UDP datagram to 198.18.100.1:dport through the MEP's engine (``mep explain``; it is counted)."""
    result: dict[str, Any] = mep.admin.post("/explain", {"frame": udp_frame_hex(dport), "ingress": 1})
    return result



def instance(mep: MepProcess, certs: CertPaths) -> dict[str, Any] | None:
    """The MEPM app's instance on ``mep`` as Mm5 reports it, or None when it has none."""

    async def call(client: Mm5Client) -> dict[str, Any] | None:
        state = await client.get_state()
        apps = [a for a in state.apps if a.app_instance_id.startswith(f"{APP}-")]
        if not apps:
            return None
        (a,) = apps
        counters = {c.traffic_rule_id: c.packets for c in (await client.get_counters(a.app_instance_id)).rules}
        return {
            "id": a.app_instance_id,
            "state": pb.AppState.Name(a.state),
            "generation": a.config_generation,
            "in_force": a.in_force,
            "rules": {r.id: r.rule_id for r in a.traffic_rules},
            "packets": counters,
        }

    return on_mep(mep, certs, call)


def running(mep: MepProcess, certs: CertPaths, generation: int) -> dict[str, Any] | None:
    """The instance once it is READY at ``generation`` and in force; else None."""
    seen = instance(mep, certs)
    if seen and seen["state"] == "READY" and seen["generation"] == generation and seen["in_force"]:
        return seen
    return None


NEW_PORT = 9554  # only in the AppD's second generation


def appd_v2(tmp_path: Path) -> Path:
    text = (APPD / "video-analytics.yaml").read_text()
    v2 = text.replace('dstPort: ["554", "8554", "5004-5005"]', f'dstPort: ["554", "{PORT}", "{NEW_PORT}"]')
    assert v2 != text
    path = tmp_path / "video-analytics-v2.yaml"
    path.write_text(v2.replace('appSoftVersion: "2.3.0"', 'appSoftVersion: "2.4.0"'))
    return path
