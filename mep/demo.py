"""``make demo``: one app's traffic rules, end to end, with no root and no network.

What it does, in order:

1. writes a configuration in a temporary directory (SQLite store there,
   the reference engine, three ports n6/dn/app1, the admin socket there);
2. starts the daemon in this process (``Daemon``: the same code ``mep run``
   runs) and uses its store the way Mp1/Mm5 will: create an app instance,
   instantiate it, put three traffic rules, confirm it ready;
3. waits until the daemon has compiled and applied that revision, then sends
   five frames built with scapy through the admin socket's ``/explain`` (what
   ``mep explain`` does) and prints packet -> verdict, rule, reason;
4. terminates the app, waits for the new rule set, sends the same frames
   again: every one now passes (its rules are no longer enforced);
5. prints the counters, stops the daemon, removes the directory.

Every verdict is checked against the expected one; the exit status is 1 if
any differs. ``--once`` (the default when stdout is not a terminal) runs
through without pausing between steps.

The reference engine processes frames handed to it; it is not attached to any
interface. The namespace topology with the XDP engine and real traffic
replaces this in a later issue.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from .admin import AdminClient
from .config import LogConfig, load_config
from .daemon import Daemon
from .log import setup_logging
from .models import TrafficRule
from .state.lifecycle import LifecycleEvent
from .state.records import AppInstance

__all__ = ["main", "DEMO_RULES", "DEMO_FRAMES"]

UPF_MAC, N6_MAC = "02:00:00:00:05:01", "02:00:00:00:06:01"
APP1_PORT_MAC, APP1_MAC = "02:00:00:00:a1:01", "02:00:00:00:a1:02"
UE, SERVER, APP1_IP = "198.18.0.5", "198.18.100.1", "198.19.1.10"
APP_ID = "video-cache-1"

_CONFIG: dict[str, Any] = {
    "instance": "demo",
    "log": {"level": "warning", "format": "text"},
    "dataplane": {
        "engine": "reference",
        "ports": [
            {"name": "n6", "ifname": "n6", "role": "n6", "mac": N6_MAC},
            {"name": "dn", "ifname": "dn", "role": "dn", "mac": "02:00:00:00:0d:01"},
            {"name": "app1", "ifname": "app1", "role": "app", "mac": APP1_PORT_MAC, "neighbours": {APP1_IP: APP1_MAC}},
        ],
    },
    # The demo drives the store directly; these servers are not part of this build yet.
    "mp1": {"enabled": False},
    "mm5": {"enabled": False},
}

# The app's rules, as an AppD or an Mm5 ApplyConfiguration would carry them.
DEMO_RULES: list[dict[str, Any]] = [
    {
        "trafficRuleId": "cache-http",
        "filterType": "FLOW",
        "priority": 5,
        "trafficFilter": [{"dstAddress": [f"{SERVER}/32"], "protocol": ["TCP"], "dstPort": ["80"]}],
        "action": "FORWARD_DECAPSULATED",
        "dstInterface": {"interfaceType": "IP", "dstIpAddress": APP1_IP},
        "state": "ACTIVE",
    },
    {
        "trafficRuleId": "mirror-dns",
        "filterType": "PACKET",
        "priority": 10,
        "trafficFilter": [{"protocol": ["UDP"], "dstPort": ["53"]}],
        "action": "DUPLICATE_DECAPSULATED",
        "dstInterface": {"interfaceType": "MAC", "dstMacAddress": APP1_MAC},
        "state": "ACTIVE",
    },
    {
        "trafficRuleId": "block-discard",
        "filterType": "PACKET",
        "priority": 1,
        "trafficFilter": [{"srcAddress": ["198.18.0.0/24"], "protocol": ["UDP"], "dstPort": ["9"]}],
        "action": "DROP",
        "state": "ACTIVE",
    },
]


@dataclass(frozen=True)
class DemoFrame:
    """One probe: a label, the frame, and the verdict expected while the app is READY."""

    label: str
    packet: Packet
    expected: str


def _eth() -> Ether:
    return Ether(src=UPF_MAC, dst=N6_MAC)


DEMO_FRAMES: list[DemoFrame] = [
    DemoFrame("TCP UE -> server:80", _eth() / IP(src=UE, dst=SERVER) / TCP(sport=40000, dport=80, flags="S"), "REDIRECT"),
    DemoFrame("UDP UE -> server:53", _eth() / IP(src=UE, dst=SERVER) / UDP(sport=40001, dport=53) / (b"\x12\x34" + bytes(10)), "DUPLICATE"),
    DemoFrame("UDP UE -> server:9", _eth() / IP(src=UE, dst=SERVER) / UDP(sport=40002, dport=9) / b"junk", "DROP"),
    DemoFrame("TCP UE -> server:443", _eth() / IP(src=UE, dst=SERVER) / TCP(sport=40003, dport=443, flags="S"), "PASS"),
    DemoFrame("ARP who-has", Ether(src=UPF_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=UE, pdst=SERVER), "PASS"),
]


class _Steps:
    """Prints step headings; pauses for Enter between steps when interactive."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.number = 0

    def __call__(self, title: str) -> None:
        if self.interactive and self.number:
            input("\n[press Enter to continue] ")
        self.number += 1
        print(f"\n== {self.number}. {title}")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


async def _probe(client: AdminClient, expect_pass: bool) -> bool:
    """Send every demo frame through /explain; print the table; True if all verdicts are as expected."""
    rows, ok = [], True
    for f in DEMO_FRAMES:
        res = await asyncio.to_thread(client.post, "/explain", {"frame": bytes(f.packet).hex(), "ingress": 1})
        expected = "PASS" if expect_pass else f.expected
        good = res["verdict"] == expected
        ok &= good
        rule = f"{res['rule']['trafficRuleId']} ({res['rule_id']})" if res["rule"] else "-"
        outs = ",".join(o["port_name"] for o in res["outputs"]) or "-"
        rows.append((f.label, res["verdict"] + ("" if good else f" (expected {expected})"), rule, res["reason"], outs))
    _table(rows, ("PACKET (ingress n6)", "VERDICT", "RULE", "REASON", "OUT"))
    return ok


async def _settle(daemon: Daemon, revision: int) -> None:
    await daemon.settled(revision)
    if daemon.last_refusal:
        raise SystemExit(f"demo: the rule set was refused: {daemon.last_refusal['problems']}")


async def _run(directory: Path, interactive: bool) -> int:
    step = _Steps(interactive)
    config_path = directory / "mep.yaml"
    config_data = dict(_CONFIG, store={"sqlite": {"path": str(directory / "mep.db")}},
                       admin={"socket": str(directory / "admin.sock")})
    config_path.write_text(yaml.safe_dump(config_data, sort_keys=False))
    config = load_config(config_path)
    setup_logging(LogConfig(level="warning", format="text"))

    step(f"start the daemon ({config_path}: sqlite store, reference engine, ports n6/dn/app1)")
    daemon = Daemon(config)
    try:
        await daemon.start()
        client = AdminClient(config.admin_socket)
        st = await asyncio.to_thread(client.get, "/status")
        print(f"  running: engine {st['engine']['engine']}, generation {st['generation']}, "
              f"{st['engine']['rules']} rules, admin socket {config.admin_socket}")

        step(f"app {APP_ID}: create, instantiate, put {len(DEMO_RULES)} traffic rules, confirm ready")
        store = daemon.store
        await store.create_app(AppInstance(appInstanceId=APP_ID, appName="video-cache", confirm_ready_required=True))
        await store.transition_app(APP_ID, LifecycleEvent.INSTANTIATE)
        for body in DEMO_RULES:
            await store.put_traffic_rule(APP_ID, TrafficRule.model_validate(body))
        app = await store.transition_app(APP_ID, LifecycleEvent.CONFIRM_READY)
        await _settle(daemon, store.revision)
        rules = await asyncio.to_thread(client.get, "/rules")
        print(f"  app state {app.state.value}; generation {rules['generation']} in force:")
        _table([(r["id"], r["priority"], r["action"], r["trafficRuleId"], " | ".join(r["filters"])) for r in rules["rules"]],
               ("ID", "PRIO", "ACTION", "RULE", "FILTERS"))

        step("send frames through the engine (POST /explain, as `mep explain` does)")
        ok = await _probe(client, expect_pass=False)

        step(f"terminate {APP_ID}: its rules are no longer enforced")
        await store.transition_app(APP_ID, LifecycleEvent.TERMINATE)
        app = await store.transition_app(APP_ID, LifecycleEvent.CONFIRM_TERMINATION)
        await _settle(daemon, store.revision)
        rules = await asyncio.to_thread(client.get, "/rules")
        print(f"  app state {app.state.value}; generation {rules['generation']} in force, {len(rules['rules'])} rules")
        ok &= await _probe(client, expect_pass=True)

        step("counters (GET /stats, as `mep stats` shows them; the probes above were counted)")
        stats = await asyncio.to_thread(client.get, "/stats")
        _table([(v, c["packets"], c["bytes"]) for v, c in stats["verdicts"].items()], ("VERDICT", "PACKETS", "BYTES"))
    finally:
        await daemon.close()
    print("\n" + ("every verdict as expected" if ok else "SOME VERDICTS DIFFER FROM THE EXPECTED ONES"))
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m mep.demo``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mep.demo",
        description="End-to-end demo: one app's traffic rules through store, compiler and the reference engine.",
        epilog="examples:\n  make demo\n  python -m mep.demo --once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--once", action="store_true", help="run through without pausing (default when not on a terminal)")
    args = parser.parse_args(argv)
    interactive = sys.stdout.isatty() and sys.stdin.isatty() and not args.once
    print("MEP demo: one MEC app's traffic rules, store -> compiler -> reference engine (no root, no network)")
    with tempfile.TemporaryDirectory(prefix="mep-demo-") as tmp:
        return asyncio.run(_run(Path(tmp), interactive))


if __name__ == "__main__":
    sys.exit(main())
