"""How long from an Mm5 ApplyConfiguration to the rule set in force: p50/p99 for 1 and 1000 rules per app.

Method: one ``mep run`` (reference engine, SQLite store in a temporary
directory, Mm5 plaintext on loopback, ``apply_batch_ms`` 1) and one client
in this process, on the same 2-core machine. One app is created and
instantiated (READY, so its rules are enforced). Each sample pushes the next
generation with N traffic rules (FORWARD_DECAPSULATED to app1, UDP to
198.18.100.1, every rule's port moved, so every rule changes) and times from
just before ApplyConfiguration to the arrival of the WatchTask message
ACTIVE: the MEP sends it once the daemon's rule set in force was compiled
from the store revision holding that generation (``Daemon.settled`` +
``applied_revision``). Each sample is then checked, untimed: GetState shows
the generation in force, and a UE datagram to the first rule's port run
through the engine (``mep explain``) is steered by that rule (verdict and
rule id). The first sample of each size is a warm-up, not kept.

Baselines, same run, same daemon: GetState (one Mm5 round trip) and an
idempotent re-apply of the generation in force (validation and acceptance,
no store write, no data-plane work). The daemon's own compile and apply
times come from its ``ruleset_applied`` log lines. With the XDP engine the
map writes add to "apply" (bench/swap_loss.py, bench/xdp_rules.py).

Examples:
    python -m bench.mm5_apply                      # 1 and 1000 rules, 200 and 30 samples
    python -m bench.mm5_apply --sizes 1 100 1000 --samples 50
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bench._harness import RESULTS, Report, percentile, progress
from mep.admin import AdminClient, DaemonNotRunning
from mep.mm5.client import Mm5Client
from mep.mm5.rpc import pb

NAME = "mm5_apply"
ROOT = Path(__file__).resolve().parents[1]
APP = "bench-app"
SERVER, APP1_IP = "198.18.100.1", "198.19.1.10"
UPF_MAC, N6_MAC = "02:00:00:00:05:01", "02:00:00:00:06:01"
PORTS = [
    {"name": "n6", "ifname": "n6", "role": "n6", "mac": N6_MAC},
    {"name": "dn", "ifname": "dn", "role": "dn", "mac": "02:00:00:00:0d:01"},
    {"name": "app1", "ifname": "app1", "role": "app", "mac": "02:00:00:00:a1:01",
     "neighbours": {APP1_IP: "02:00:00:00:a1:02"}},
]
_APPLIED = re.compile(r"ruleset_applied .*\srules=(\d+) .*compile_ms=([\d.]+) apply_ms=([\d.]+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rules(n: int, generation: int) -> pb.AppConfiguration:
    """N rules; the ports move with the generation, so every rule differs from the previous generation's."""
    base = 10_000 + (generation % 2) * 20_000
    return pb.AppConfiguration(traffic_rules=[json.dumps({
        "trafficRuleId": f"r{i}",
        "filterType": "FLOW",
        "priority": 10,
        "trafficFilter": [{"dstAddress": [f"{SERVER}/32"], "dstPort": [str(base + i)], "protocol": ["UDP"]}],
        "action": "FORWARD_DECAPSULATED",
        "dstInterface": {"interfaceType": "IP", "dstIpAddress": APP1_IP},
        "state": "ACTIVE",
    }) for i in range(n)])


def first_port(generation: int) -> int:
    return 10_000 + (generation % 2) * 20_000


class Mep:
    """The daemon under test."""

    def __init__(self, workdir: Path) -> None:
        self.target = f"127.0.0.1:{free_port()}"
        self.socket = workdir / "admin.sock"
        self.log = workdir / "mep.log"
        config = {
            "instance": "bench",
            "log": {"level": "info", "format": "text"},
            "store": {"sqlite": {"path": str(workdir / "state" / "mep.db")}},
            "dataplane": {"engine": "reference", "apply_batch_ms": 1, "ports": PORTS},
            "mp1": {"enabled": False},
            "mm5": {"listen": self.target},
            "apps": {"confirm_ready_required": False},
            "admin": {"socket": str(self.socket)},
        }
        path = workdir / "mep.yaml"
        path.write_text(yaml.safe_dump(config))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "mep.cli", "run", "-c", str(path)], cwd=ROOT,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mep run did not start:\n{self.log.read_text()[-2000:]}")
            try:
                AdminClient(self.socket, timeout=2).get("/status")
                host, port = self.target.rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=1):
                    break
            except (DaemonNotRunning, OSError):
                time.sleep(0.05)

    def probe(self, dport: int) -> dict[str, Any]:
        frame = bytes(Ether(src=UPF_MAC, dst=N6_MAC) / IP(src="198.18.0.5", dst=SERVER) / UDP(dport=dport) / b"x")
        result: dict[str, Any] = AdminClient(self.socket).post("/explain", {"frame": frame.hex(), "ingress": 1})
        return result

    def applied(self) -> list[tuple[int, float, float]]:
        """(rules, compile_ms, apply_ms) of every rule set the daemon applied, from its log."""
        return [(int(m[1]), float(m[2]), float(m[3])) for m in _APPLIED.finditer(self.log.read_text())]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


async def apply_once(client: Mm5Client, generation: int, config: pb.AppConfiguration) -> tuple[float, pb.Task]:
    """Seconds from ApplyConfiguration to the ACTIVE message of its task, and that message."""
    t0 = time.perf_counter()
    accepted = await client.apply_configuration(APP, generation, config)
    async for task in client.watch_task(accepted.task_id):
        if task.state == pb.ACTIVE:
            return time.perf_counter() - t0, task
        if task.state == pb.REVERTED:
            raise SystemExit(f"generation {generation} was refused: {task.detail}")
    raise SystemExit(f"WatchTask {accepted.task_id} ended without a final state")


async def measure(mep: Mep, sizes: list[int], samples: int, large_samples: int) -> list[dict[str, Any]]:
    raw: list[dict[str, Any]] = []
    async with Mm5Client(mep.target, timeout_s=60, max_message_bytes=64 << 20) as client:
        await client.create_app_instance(pb.CreateAppInstanceRequest(app_instance_id=APP))
        await client.instantiate_app_instance(APP)
        generation = 0
        for n in sizes:
            count = samples if n < 100 else large_samples
            progress(f"{n} rules: {count} samples")
            for i in range(count + 1):
                generation += 1
                config = rules(n, generation)
                seconds, task = await apply_once(client, generation, config)
                (app,) = (await client.get_state(APP)).apps
                hit = mep.probe(first_port(generation))
                expected = {r.id: r.rule_id for r in app.traffic_rules}["r0"]
                if not (app.config_generation == generation and app.in_force and hit["verdict"] == "REDIRECT"
                        and hit["rule_id"] == expected):
                    raise SystemExit(f"generation {generation} not enforced as expected: {app} {hit}")
                if i == 0:
                    continue  # warm-up
                server_s = task.history[-1].at - task.history[0].at
                raw.append({"case": "apply->enforced", "rules": n, "sample": i, "ms": seconds * 1000,
                            "server_ms": server_s * 1000})
                t0 = time.perf_counter()
                again = await client.apply_configuration(APP, generation, config)
                idem = time.perf_counter() - t0
                assert again.task_id == task.task_id and again.state == pb.ACTIVE
                raw.append({"case": "idempotent re-apply", "rules": n, "sample": i, "ms": idem * 1000,
                            "server_ms": ""})
                t0 = time.perf_counter()
                await client.get_state(APP)
                raw.append({"case": "GetState", "rules": n, "sample": i, "ms": (time.perf_counter() - t0) * 1000,
                            "server_ms": ""})
    return raw


def summarise(raw: list[dict[str, Any]], mep: Mep, sizes: list[int]) -> Report:
    report = Report(
        name=NAME,
        question="How long from an Mm5 ApplyConfiguration to the new rules in force, for 1 and 1000 rules per app?",
        method=(__doc__ or "").split("Examples:")[0].split("Method: ", 1)[1].replace("\n", " ").strip(),
        columns=["case", "rules", "samples", "p50_ms", "p99_ms", "mean_ms", "max_ms", "vs_GetState_p50"],
    )
    for n in sizes:
        floor = percentile([r["ms"] for r in raw if r["rules"] == n and r["case"] == "GetState"], 50)
        for case in ("apply->enforced", "idempotent re-apply", "GetState"):
            ms = [r["ms"] for r in raw if r["rules"] == n and r["case"] == case]
            report.add(case=case, rules=n, samples=len(ms), p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
                       mean_ms=statistics.fmean(ms), max_ms=max(ms), vs_GetState_p50=percentile(ms, 50) / floor)
    applied = mep.applied()
    for n in sizes:
        compiles = [c for rules_n, c, _ in applied if rules_n == n]
        applies = [a for rules_n, _, a in applied if rules_n == n]
        server = [r["server_ms"] for r in raw if r["rules"] == n and r["case"] == "apply->enforced"]
        if compiles:
            report.notes.append(
                f"{n} rules: the MEP's own view, task PENDING to ACTIVE p50 {percentile(server, 50):.1f} ms; the"
                f" compile loop's compile p50 {percentile(compiles, 50):.2f} ms and engine apply p50"
                f" {percentile(applies, 50):.2f} ms per rule set (its log). The configuration is compiled inside"
                " the store write, as the check before the commit; the compile loop applies that result when the"
                " snapshot it takes is the one checked, so its own compile time is near zero here."
            )
    report.notes.append("Every sample was checked after timing: GetState shows the generation in force, and a"
                        " datagram to the first rule's port is steered by that rule (mep explain).")
    report.notes.append(f"Raw samples: {NAME}_raw.csv.")
    return report


def plot(raw: list[dict[str, Any]], sizes: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for n in sizes:
        for case, style in (("apply->enforced", "-"), ("idempotent re-apply", ":")):
            ms = sorted(r["ms"] for r in raw if r["rules"] == n and r["case"] == case)
            if ms:
                ax.plot(ms, [(i + 1) / len(ms) for i in range(len(ms))], style, label=f"{case}, {n} rules")
    ax.set_xscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_ylabel("fraction of samples")
    ax.set_title("Mm5 ApplyConfiguration -> rule set in force (reference engine, SQLite)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 1000], help="rules per app (default 1 1000)")
    parser.add_argument("--samples", type=int, default=200, help="samples for sizes below 100 (default 200)")
    parser.add_argument("--large-samples", type=int, default=30, help="samples for 100 rules or more (default 30)")
    args = parser.parse_args()
    print("method: Mm5 apply -> WatchTask ACTIVE, mep run (reference engine, SQLite), loopback gRPC; no XDP")
    workdir = Path(tempfile.mkdtemp(prefix="mep-bench-mm5-"))
    mep = Mep(workdir)
    try:
        raw = asyncio.run(measure(mep, args.sizes, args.samples, args.large_samples))
    finally:
        mep.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"{NAME}_raw.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case", "rules", "sample", "ms", "server_ms"])
        writer.writeheader()
        writer.writerows(raw)
    report = summarise(raw, mep, args.sizes)
    plot(raw, args.sizes)
    path = report.write()
    path.write_text(path.read_text() + f"\n![{NAME}]({NAME}.png)\n")
    shutil.rmtree(workdir, ignore_errors=True)
    for row in report.rows:
        print(f"{row['case']:<20} {row['rules']:>5} rules  p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
