"""The daemon: store -> compiler -> engine, the admin API, signals and exit codes.

In-process tests run ``Daemon`` against a real SqliteStore in tmp_path, the
real compiler and the ReferenceEngine (recording when apply is called); the
subprocess tests run ``mep run`` itself.
"""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import yaml
from dnslib import DNSRecord

from mep.admin import AdminClient, DaemonNotRunning
from mep.config import Config, EngineName, load_config
from mep.daemon import GC_YOUNG_THRESHOLD, INLINE_RULES, Daemon, tune_gc
from mep.dns import DnsServer
from mep.dataplane.factory import ENGINE_MODULES, make_engine
from mep.dataplane.reference import ReferenceEngine
from mep.dataplane.ruleset import CompiledRuleSet
from mep.errors import DataplaneError, InvalidInput
from mep.models import DnsRule, TrafficRule
from mep.state import AppConfig, AppInstance, LifecycleEvent, SqliteStore, SubscriptionKind

ROOT = Path(__file__).resolve().parents[2]

UPF_MAC, N6_MAC = "02:00:00:00:05:01", "02:00:00:00:06:01"
APP1_PORT_MAC, APP1_MAC = "02:00:00:00:a1:01", "02:00:00:00:a1:02"
UE, SERVER, APP1_IP = "198.18.0.5", "198.18.100.1", "198.19.1.10"


def config_data(tmp_path: Path, batch_ms: float = 20, dns: bool = False) -> dict[str, Any]:
    return {
        "instance": "test",
        "log": {"level": "info", "format": "text"},
        "store": {"sqlite": {"path": str(tmp_path / "state" / "mep.db")}},
        "dataplane": {
            "engine": "reference",
            "apply_batch_ms": batch_ms,
            "ports": [
                {"name": "n6", "ifname": "n6", "role": "n6", "mac": N6_MAC},
                {"name": "dn", "ifname": "dn", "role": "dn", "mac": "02:00:00:00:0d:01"},
                {"name": "app1", "ifname": "app1", "role": "app", "mac": APP1_PORT_MAC, "neighbours": {APP1_IP: APP1_MAC}},
            ],
        },
        "mp1": {"enabled": False},
        "mm5": {"enabled": False},
        "dns": {"enabled": dns, "listen": "127.0.0.1:0"},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }


def write_config(tmp_path: Path, **kw: Any) -> Path:
    path = tmp_path / "mep.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, **kw)))
    return path


def drop_rule(rule_id: str, dport: int, priority: int = 10) -> TrafficRule:
    return TrafficRule.model_validate(
        {
            "trafficRuleId": rule_id,
            "filterType": "PACKET",
            "priority": priority,
            "trafficFilter": [{"protocol": ["UDP"], "dstPort": [str(dport)]}],
            "action": "DROP",
            "state": "ACTIVE",
        }
    )


def unresolvable_rule(rule_id: str) -> TrafficRule:
    """A rule the compiler refuses: no port leads to its destination MAC."""
    return TrafficRule.model_validate(
        {
            "trafficRuleId": rule_id,
            "filterType": "PACKET",
            "priority": 1,
            "trafficFilter": [{"protocol": ["TCP"]}],
            "action": "FORWARD_DECAPSULATED",
            "dstInterface": {"interfaceType": "MAC", "dstMacAddress": "02:00:00:00:99:99"},
            "state": "ACTIVE",
        }
    )


def udp_frame(dport: int) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=UPF_MAC, dst=N6_MAC) / IP(src=UE, dst=SERVER) / UDP(sport=40000, dport=dport) / b"x")


class RecordingEngine(ReferenceEngine):
    """The reference engine, remembering when, and in which thread, each rule set was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[float, CompiledRuleSet]] = []
        self.apply_threads: list[int] = []

    def apply(self, ruleset: CompiledRuleSet) -> None:
        self.applied.append((time.monotonic(), ruleset))
        self.apply_threads.append(threading.get_ident())
        super().apply(ruleset)


def rule_ids(engine: RecordingEngine) -> list[str]:
    assert engine.ruleset is not None
    return [r.traffic_rule_id for r in engine.ruleset.rules]


async def ready_app(daemon: Daemon, app_id: str = "app-1") -> None:
    store = daemon.store
    await store.create_app(AppInstance(appInstanceId=app_id, confirm_ready_required=False))
    await store.transition_app(app_id, LifecycleEvent.INSTANTIATE)


def in_daemon(tmp_path: Path, body: Callable[[Daemon, RecordingEngine], Awaitable[None]], **kw: Any) -> None:
    """Start a daemon in this process, run ``body``, close it whatever happens."""
    config = Config(**config_data(tmp_path, **kw))
    engine = RecordingEngine()

    async def main() -> None:
        daemon = Daemon(config, engine=engine)
        try:
            await daemon.start()
            await body(daemon, engine)
        finally:
            await daemon.close()

    asyncio.run(main())


# -- compile loop -------------------------------------------------------------------


def test_first_ruleset_is_applied_before_services_start(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        assert len(engine.applied) == 1
        assert daemon.generation == 1 and engine.ruleset is not None and engine.ruleset.generation == 1
        assert [p.name for p in engine.ruleset.ports] == ["n6", "dn", "app1"]
        assert (tmp_path / "admin.sock").is_socket()

    in_daemon(tmp_path, body)


def test_rule_put_in_the_store_reaches_the_engine_within_the_batch_window(tmp_path: Path) -> None:
    batch_s = 0.05

    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        await ready_app(daemon)
        await daemon.settled(daemon.store.revision)
        before = len(engine.applied)
        t0 = time.monotonic()
        stored = await daemon.store.put_traffic_rule("app-1", drop_rule("r1", 9))
        await daemon.settled(stored.revision)
        applied_at, ruleset = engine.applied[-1]
        assert len(engine.applied) == before + 1
        assert [r.traffic_rule_id for r in ruleset.rules] == ["r1"]
        assert ruleset.store_revision == stored.revision
        # The loop waits out the window for more events (asyncio may fire a timer
        # up to its clock resolution early), then compiles: allow slack for a busy CI machine.
        assert batch_s - 0.005 <= applied_at - t0 < batch_s + 0.5
        assert engine.process(udp_frame(9), 1).verdict.name == "DROP"

    in_daemon(tmp_path, body, batch_ms=batch_s * 1000)


def test_a_burst_of_writes_is_applied_as_one_ruleset(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        await ready_app(daemon)
        await daemon.settled(daemon.store.revision)
        before = len(engine.applied)
        for i in range(10):
            await daemon.store.put_traffic_rule("app-1", drop_rule(f"r{i}", 1000 + i))
        await daemon.settled(daemon.store.revision)
        assert len(engine.applied) == before + 1
        assert len(engine.applied[-1][1].rules) == 10

    in_daemon(tmp_path, body, batch_ms=500)


def test_compilations_of_few_rules_run_on_the_event_loop_larger_ones_in_a_worker_thread(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        compile_threads: list[int] = []  # the full compiler: called only off the event loop
        compile = daemon._compile

        def recording_compile(snapshot: Any, generation: int) -> CompiledRuleSet:
            compile_threads.append(threading.get_ident())
            return compile(snapshot, generation)

        daemon._compile = recording_compile
        loop_thread = threading.get_ident()
        await ready_app(daemon)
        await daemon.settled(daemon.store.revision)
        await daemon.store.replace_app_config(
            "app-1", AppConfig(traffic_rules=tuple(drop_rule(f"r{i}", 1000 + i) for i in range(INLINE_RULES + 1))),
            generation=1, check=daemon.check,
        )
        assert compile_threads and loop_thread not in compile_threads  # more than INLINE_RULES new rules
        await daemon.settled(daemon.store.revision)
        assert len(engine.ruleset.rules) == INLINE_RULES + 1  # type: ignore[union-attr]
        assert engine.apply_threads[-1] == loop_thread  # the reference engine keeps a reference: O(1)
        compiled = len(compile_threads)
        for i in range(3):  # one rule each, however many there are: on the event loop
            stored = await daemon.store.put_traffic_rule("app-1", drop_rule(f"r{i}", 2000 + i), check=daemon.check)
            await daemon.settled(stored.revision)
        assert len(compile_threads) == compiled
        assert engine.apply_threads[-1] == loop_thread
        assert engine.process(udp_frame(2002), 1).verdict.name == "DROP"
        assert engine.process(udp_frame(1002), 1).verdict.name == "PASS"

    in_daemon(tmp_path, body, batch_ms=0)


def test_tune_gc_freezes_what_start_up_loaded_and_collects_the_young_generation_less_often() -> None:
    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        assert GC_YOUNG_THRESHOLD > threshold[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_events_that_cannot_change_the_dataplane_are_skipped(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        await ready_app(daemon)
        await daemon.settled(daemon.store.revision)
        before, generation = len(engine.applied), daemon.generation
        await daemon.store.create_subscription(
            "app-1", SubscriptionKind.APP_TERMINATION,
            {"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": "http://198.18.0.9/cb",
             "appInstanceId": "app-1"},
        )
        await asyncio.sleep(0.2)  # ten batch windows
        assert (len(engine.applied), daemon.generation) == (before, generation)

    in_daemon(tmp_path, body)


def test_rules_of_an_app_that_is_not_ready_are_not_enforced(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        store = daemon.store
        await store.create_app(AppInstance(appInstanceId="app-2", confirm_ready_required=True))
        await store.transition_app("app-2", LifecycleEvent.INSTANTIATE)
        await store.put_traffic_rule("app-2", drop_rule("r1", 9))
        await daemon.settled(store.revision)
        assert rule_ids(engine) == []
        await store.transition_app("app-2", LifecycleEvent.CONFIRM_READY)
        await daemon.settled(store.revision)
        assert rule_ids(engine) == ["r1"]

    in_daemon(tmp_path, body)


def test_compile_error_keeps_the_old_ruleset_until_fixed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        store = daemon.store
        await ready_app(daemon)
        await store.put_traffic_rule("app-1", drop_rule("good", 9))
        await daemon.settled(store.revision)
        kept = engine.ruleset
        assert kept is not None
        generation = daemon.generation

        bad = await store.put_traffic_rule("app-1", unresolvable_rule("bad"))
        await daemon.settled(bad.revision)
        assert engine.ruleset is kept and daemon.generation == generation
        assert daemon.last_refusal is not None
        assert daemon.last_refusal["revision"] == bad.revision
        assert daemon.last_refusal["kept_generation"] == generation
        assert any("rule bad" in p and "dstMacAddress" in p for p in daemon.last_refusal["problems"])
        # The old rules are still enforced.
        assert engine.process(udp_frame(9), 1).verdict.name == "DROP"
        status = await asyncio.to_thread(AdminClient(daemon.config.admin_socket).get, "/status")
        assert status["refused"]["revision"] == bad.revision

        await store.delete_traffic_rule("app-1", "bad")
        await daemon.settled(store.revision)
        assert daemon.generation == generation + 1 and daemon.last_refusal is None
        assert rule_ids(engine) == ["good"]

    with caplog.at_level("ERROR", logger="mep.daemon"):
        in_daemon(tmp_path, body)
    events = [r.getMessage() for r in caplog.records]
    assert "ruleset_refused" in events
    problem = next(r for r in caplog.records if r.getMessage() == "rule_problem")
    assert problem.mep_fields["rule"] == "bad" and problem.mep_fields["field"] == "dstInterface.dstMacAddress"  # type: ignore[attr-defined]


def test_a_refused_ruleset_at_startup_leaves_the_daemon_running_without_one(tmp_path: Path) -> None:
    config = Config(**config_data(tmp_path))

    async def seed() -> None:
        store = SqliteStore(config.store.sqlite.path)
        await store.open()
        try:
            await store.create_app(AppInstance(appInstanceId="app-1", confirm_ready_required=False))
            await store.transition_app("app-1", LifecycleEvent.INSTANTIATE)
            await store.put_traffic_rule("app-1", unresolvable_rule("bad"))
        finally:
            await store.close()

    asyncio.run(seed())

    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        assert engine.applied == [] and engine.ruleset is None and daemon.generation == 0
        assert daemon.last_refusal is not None
        client = AdminClient(daemon.config.admin_socket)
        status = await asyncio.to_thread(client.get, "/status")
        assert status["generation"] == 0 and status["refused"]["problems"]
        with pytest.raises(Exception, match="no rule set is applied yet"):
            await asyncio.to_thread(client.post, "/explain", {"frame": udp_frame(9).hex(), "ingress": 1})
        await daemon.store.delete_traffic_rule("app-1", "bad")
        await daemon.settled(daemon.store.revision)
        assert daemon.generation == 1

    in_daemon(tmp_path, body)


def test_a_failed_apply_stops_the_daemon_with_status_1(tmp_path: Path) -> None:
    class FailingEngine(RecordingEngine):
        def apply(self, ruleset: CompiledRuleSet) -> None:
            if ruleset.generation > 1:
                raise DataplaneError("map write failed: mep_rules slot 7: ENOMEM")
            super().apply(ruleset)

    config = Config(**config_data(tmp_path))

    async def main() -> int:
        daemon = Daemon(config, engine=FailingEngine())
        try:
            await daemon.start()
            await daemon.store.create_app(AppInstance(appInstanceId="app-1"))
            return await asyncio.wait_for(daemon.serve(asyncio.Event()), 10)
        finally:
            await daemon.close()

    assert asyncio.run(main()) == 1


# -- admin API ------------------------------------------------------------------------


def test_admin_api_status_rules_stats_explain(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        client = AdminClient(daemon.config.admin_socket)
        await ready_app(daemon)
        await daemon.store.put_traffic_rule("app-1", drop_rule("r1", 9, priority=3))
        await daemon.settled(daemon.store.revision)

        status = await asyncio.to_thread(client.get, "/status")
        assert status["engine"]["engine"] == "reference"
        assert status["generation"] == daemon.generation
        assert status["store"] == {"backend": "sqlite", "revision": daemon.store.revision}
        assert status["apps"] == {"READY": 1}
        assert [p["name"] for p in status["ports"]] == ["n6", "dn", "app1"]
        assert status["refused"] is None and status["uptime_s"] >= 0

        rules = await asyncio.to_thread(client.get, "/rules")
        assert rules["default"] == "PASS"
        (rule,) = rules["rules"]
        assert {k: rule[k] for k in ("app", "trafficRuleId", "priority", "action")} == {
            "app": "app-1", "trafficRuleId": "r1", "priority": 3, "action": "DROP"}
        assert rule["filters"] == ["proto=UDP dport=9"]

        res = await asyncio.to_thread(client.post, "/explain", {"frame": udp_frame(9).hex(), "ingress": 1})
        assert (res["verdict"], res["reason"], res["rule_id"]) == ("DROP", "DROP_RULE", rule["id"])
        assert res["counted"] is True and "counted" in res["note"]
        res = await asyncio.to_thread(client.post, "/explain", {"frame": udp_frame(53).hex(), "ingress": 1})
        assert (res["verdict"], res["reason"]) == ("PASS", "PASS_NO_MATCH")
        assert res["outputs"] == [{"port": 0, "port_name": "stack", "frame": udp_frame(53).hex()}]

        stats = await asyncio.to_thread(client.get, "/stats")
        assert stats["verdicts"]["DROP"]["packets"] == 1
        assert stats["rules"][str(rule["id"])] == {"packets": 1, "bytes": len(udp_frame(9))}

        with pytest.raises(InvalidInput, match="ingress"):
            await asyncio.to_thread(client.post, "/explain", {"frame": udp_frame(9).hex(), "ingress": 7})
        with pytest.raises(InvalidInput, match="frame"):
            await asyncio.to_thread(client.post, "/explain", {"frame": "not hex", "ingress": 1})

    in_daemon(tmp_path, body)


def test_explain_describes_the_verdict_with_the_rule_set_it_ran_against(tmp_path: Path) -> None:
    # An explain waiting for the engine while a rule set is applied must describe its verdict with the
    # rule set it ran against, not the one in force when the request arrived.
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        client = AdminClient(daemon.config.admin_socket)
        await ready_app(daemon)
        await daemon.settled(daemon.store.revision)
        async with daemon.engine_lock:  # what an apply in a worker thread holds
            pending = asyncio.ensure_future(
                asyncio.to_thread(client.post, "/explain", {"frame": udp_frame(9).hex(), "ingress": 1}))
            await asyncio.sleep(0.2)  # the request is in, waiting for the engine
            await daemon.store.put_traffic_rule("app-1", drop_rule("r1", 9))
            ruleset = daemon._compile(daemon.store.snapshot(), daemon.generation + 1)
            engine.apply(ruleset)
            assert not pending.done()
        res = await pending
        assert (res["verdict"], res["rule_id"], res["generation"]) == ("DROP", ruleset.rules[0].rule_id, ruleset.generation)
        assert res["rule"] is not None and res["rule"]["trafficRuleId"] == "r1"

    in_daemon(tmp_path, body)


def test_a_second_daemon_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        data = config_data(tmp_path / "other")
        data["admin"]["socket"] = str(daemon.config.admin_socket)
        second = Daemon(Config(**data), engine=ReferenceEngine())
        try:
            with pytest.raises(Exception, match="another daemon already listens"):
                await second.start()
        finally:
            await second.close()
        # The first one still answers.
        assert (await asyncio.to_thread(AdminClient(daemon.config.admin_socket).get, "/status"))["instance"] == "test"

    (tmp_path / "other").mkdir()
    in_daemon(tmp_path, body)


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "admin.sock"))  # bound, never listening: what a killed daemon leaves
    stale.close()

    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        assert (await asyncio.to_thread(AdminClient(daemon.config.admin_socket).get, "/status"))["pid"] == os.getpid()

    in_daemon(tmp_path, body)


def test_client_without_daemon_raises_daemon_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="no daemon is running"):
        AdminClient(tmp_path / "none.sock").get("/status")


# -- engine factory -------------------------------------------------------------------


def test_an_engine_missing_from_the_build_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINE_MODULES, EngineName.FASTPATH, ("mep.dataplane.not_built", "NotBuilt"))
    data = config_data(tmp_path)
    data["dataplane"]["engine"] = "fastpath"
    with pytest.raises(DataplaneError, match="engine 'fastpath' is not available yet"):
        make_engine(Config(**data))


def test_the_reference_engine_is_built_from_config(tmp_path: Path) -> None:
    assert isinstance(make_engine(Config(**config_data(tmp_path))), ReferenceEngine)


def test_mep_stats_shows_the_dns_answers(tmp_path: Path) -> None:
    async def body(daemon: Daemon, engine: RecordingEngine) -> None:
        await ready_app(daemon)
        rule = DnsRule.model_validate({"dnsRuleId": "d1", "domainName": "cache.example", "ipAddressType": "IP_V4",
                                       "ipAddress": APP1_IP, "ttl": 30, "state": "ACTIVE"})
        await daemon.store.put_dns_rule("app-1", rule)
        await daemon.settled(daemon.store.revision)
        server = next(s for s in daemon.services if isinstance(s, DnsServer))
        assert server.address is not None
        for _ in range(2):
            await asyncio.to_thread(DNSRecord.question("cache.example", "A").send, *server.address, timeout=5)
        rule_id = daemon.store.get_dns_rule("app-1", "d1").rule_id

        out = await asyncio.to_thread(mep, "stats", "--socket", str(daemon.config.admin_socket))
        assert out.returncode == 0, out.stderr
        assert "no packets counted yet" in out.stdout  # nothing went through the engine
        assert "dns: 2 UDP and 0 TCP queries in user space (answer 2); 0 cached, 0 in flight" in out.stdout
        row = next(line.split() for line in out.stdout.splitlines() if line.startswith(str(rule_id)))
        assert row == [str(rule_id), "app-1", "d1", "cache.example", "A", "2", "0"]

    in_daemon(tmp_path, body, dns=True)


# -- mep run as a process ----------------------------------------------------------------


def mep(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mep.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60, **kw)


def wait_for_status(sock: Path, proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mep run exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            return AdminClient(sock, timeout=2).get("/status")
        except DaemonNotRunning:
            time.sleep(0.05)
    raise AssertionError("mep run did not answer on its admin socket")


def test_mep_run_serves_the_cli_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    sock = tmp_path / "admin.sock"
    proc = subprocess.Popen([sys.executable, "-m", "mep.cli", "run", "-c", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = wait_for_status(sock, proc)
        assert status["generation"] == 1 and status["pid"] == proc.pid

        out = mep("status", "--socket", str(sock))
        assert out.returncode == 0 and "engine   reference, generation 1" in out.stdout
        out = mep("rules", "-c", str(cfg))
        assert out.returncode == 0 and "0 rules, default PASS" in out.stdout
        out = mep("explain", "--socket", str(sock), "--ingress", "n6", "--scapy",
                  f"Ether(src='{UPF_MAC}', dst='{N6_MAC}')/IP(src='{UE}', dst='{SERVER}')/UDP(dport=53)")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("PASS  PASS_NO_MATCH") and "probe itself was counted" in out.stdout
        out = mep("stats", "--socket", str(sock))
        assert out.returncode == 0 and "PASS     1" in out.stdout

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in err  # the last log line
    assert not sock.exists()


def test_mep_run_exits_0_on_sigint(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "mep.cli", "run", "-c", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_status(tmp_path / "admin.sock", proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err


def test_mep_run_bad_config_exits_2_with_the_reason(tmp_path: Path) -> None:
    data = config_data(tmp_path)
    data["dataplane"]["apply_batch_ms"] = -1
    data["store"]["backend"] = "redis"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = mep("run", "-c", str(cfg))
    assert out.returncode == 2
    assert "dataplane.apply_batch_ms" in out.stderr and "store.backend" in out.stderr
    assert "Traceback" not in out.stderr


def test_mep_run_store_failure_exits_1_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    data = config_data(tmp_path)
    data["store"]["sqlite"]["path"] = str(tmp_path / "a-file" / "mep.db")  # its parent is not a directory
    cfg = tmp_path / "mep.yaml"
    cfg.write_text(yaml.safe_dump(data))
    out = mep("run", "-c", str(cfg))
    assert out.returncode == 1
    assert "mep: cannot start: " in out.stderr and "a-file" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "admin.sock").exists()


def test_mep_run_reads_environment_overrides(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    env = dict(os.environ, MEP_DATAPLANE__ENGINE="warp")
    out = mep("run", "-c", str(cfg), env=env)
    assert out.returncode == 2 and "dataplane.engine" in out.stderr
    assert load_config(cfg).dataplane.engine is EngineName.REFERENCE


def test_demo_explains_itself() -> None:
    # The demo itself needs root (namespaces, XDP): tests/upf/test_upf_demo.py runs it.
    proc = subprocess.run([sys.executable, "-m", "mep.demo", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--once" in proc.stdout and "make demo" in proc.stdout
