"""Configuration tasks across failures: an engine that cannot apply, restarts, tasks cut off mid-way.

- An apply that fails in the engine after the compiler accepted it
  (FullMapEngine) ends FAILED -> REVERTED with the previous version written
  back; the daemon stops as ``mep run`` does (exit 1), and the next start
  applies the reverted version.
- A task's final state survives ``kill -9`` of ``mep run``.
- A generation that was refused can be submitted again the moment its task
  shows REVERTED, while the task's worker still waits for the store's sync.
- Tasks left PENDING or APPLYING by a process that died (written into the
  store as that process would have left them) are resolved at the next start
  from what the store and the data plane show.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mep.mm5.client import Mm5Client
from mep.mm5.messages import config_digest, parse_config
from mep.mm5.rpc import pb
from mep.mm5.tasks import ConfigTasks, TaskDetail
from mep.models import TrafficRule
from mep.state import AppConfig, EventKind, SqliteStore, StoredTask, TaskState
from tests.fixtures.mep_daemon import MepFactory
from tests.mm5.bodies import config, drop_rule, forward_rule
from tests.mm5.inprocess import FullMapEngine, daemon_config, running_daemon

pytestmark = pytest.mark.asyncio


async def ready_app(client: Mm5Client, app_id: str, cfg: pb.AppConfiguration) -> pb.Task:
    await client.create_app_instance(pb.CreateAppInstanceRequest(app_instance_id=app_id))
    await client.instantiate_app_instance(app_id)
    accepted = await client.apply_configuration(app_id, 1, cfg)
    return await client.wait_task(accepted.task_id)


async def test_an_engine_apply_failure_reverts_and_the_restart_applies_the_previous_version(tmp_path: Path) -> None:
    cfg = daemon_config(tmp_path)
    two = config(drop_rule("a", 5001), drop_rule("b", 5002))
    three = config(drop_rule("a", 5001), drop_rule("b", 5002), drop_rule("c", 5003))
    async with running_daemon(cfg, FullMapEngine(size=2)) as (daemon, client):
        assert (await ready_app(client, "app", two)).state == pb.ACTIVE
        applied_generation = daemon.generation

        accepted = await client.apply_configuration("app", 2, three)
        seen = [t async for t in client.watch_task(accepted.task_id)]

        assert [pb.TaskState.Name(t.state) for t in seen] == ["PENDING", "APPLYING", "FAILED", "REVERTED"]
        detail = seen[-1].detail
        assert "the data plane failed to apply it: mep_rules is full: 3 rules, 2 entries" in detail
        assert "the store holds generation 1 again" in detail
        app = (await client.get_state("app", include_config=True)).apps[0]
        assert app.config_generation == 1
        assert [json.loads(r)["trafficRuleId"] for r in app.config.traffic_rules] == ["a", "b"]
        assert daemon.generation == applied_generation
        # The data plane may no longer match the store: the daemon stops, as `mep run` exits 1.
        assert await daemon.serve(asyncio.Event()) == 1

    async with running_daemon(cfg, FullMapEngine(size=2)) as (daemon, client):
        app = (await client.get_state("app")).apps[0]
        assert app.config_generation == 1 and app.in_force
        assert [r.traffic_rule_id for r in daemon.engine.ruleset.rules] == ["a", "b"]  # type: ignore[union-attr]
        assert pb.TaskState.Name((await client.get_task(accepted.task_id)).state) == "REVERTED"


async def test_a_final_task_state_survives_kill_9(mep_factory: MepFactory) -> None:
    mep = mep_factory("killed").start()
    async with Mm5Client(mep.target) as client:
        done = await ready_app(client, "app", config(forward_rule()))
        assert done.state == pb.ACTIVE
    mep.kill()
    mep.start()
    async with Mm5Client(mep.target) as client:
        task = await client.get_task(done.task_id)
        assert task == done
        assert [pb.TaskState.Name(t.state) async for t in client.watch_task(done.task_id)] == [
            "PENDING", "APPLYING", "ACTIVE",
        ]
        app = (await client.get_state("app")).apps[0]
        assert (app.config_generation, app.in_force, app.last_task_id) == (1, True, done.task_id)


async def test_a_refused_generation_is_accepted_again_as_soon_as_it_shows_reverted(tmp_path: Path) -> None:
    unresolvable = dict(forward_rule("b"), dstInterface={"interfaceType": "MAC", "dstMacAddress": "02:00:00:00:99:99"})
    refused = parse_config(config(unresolvable), max_items=10)
    fixed = parse_config(config(drop_rule("b", 6002)), max_items=10)
    async with running_daemon(daemon_config(tmp_path)) as (daemon, client):
        assert (await ready_app(client, "app", config(drop_rule("a", 6001)))).state == pb.ACTIVE
        tasks = ConfigTasks(daemon, apply_timeout_s=5)
        events = daemon.store.subscribe()
        try:
            task = await tasks.submit("app", 2, refused)
            while daemon.store.get_task(task.task_id).state is not TaskState.REVERTED:
                event = await events.get()
                while not (event.kind is EventKind.TASK and event.key == task.task_id):
                    event = await events.get()
            # The store published REVERTED and is syncing it: the worker has not ended yet.
            again = await tasks.submit("app", 2, fixed)
        finally:
            daemon.store.unsubscribe(events)
        assert again.task_id != task.task_id
        assert (await client.wait_task(again.task_id)).state == pb.ACTIVE
        await tasks.close(timeout=5)


def _task(app_id: str, seq: int, generation: int, state: TaskState, cfg: AppConfig, **fields: object) -> StoredTask:
    return StoredTask(
        task_id=f"orphan-{seq}", app_instance_id=app_id, seq=seq, generation=generation,
        digest=config_digest(cfg), state=state, **fields,
    )


async def leave_orphans(path: Path, app_id: str, written: AppConfig, pending: AppConfig) -> None:
    """What a process killed mid-way leaves: a task APPLYING whose configuration was written, one PENDING."""
    store = SqliteStore(path)
    await store.open()
    try:
        app = store.get_app(app_id)
        revert_to = AppConfig(traffic_rules=tuple(r.rule for r in store.list_traffic_rules(app_id)))
        seq = max(t.seq for t in store.list_tasks(app_id))
        await store.put_task(_task(app_id, seq + 1, 2, TaskState.APPLYING, written,
                                   previous_generation=app.config_generation, revert_to=revert_to))
        await store.replace_app_config(app_id, written, generation=2)
        await store.put_task(_task(app_id, seq + 2, 3, TaskState.PENDING, pending))
    finally:
        await store.close()


@pytest.mark.parametrize("refused", [False, True], ids=["in-force", "refused"])
async def test_orphaned_tasks_are_resolved_at_start(tmp_path: Path, refused: bool) -> None:
    cfg = daemon_config(tmp_path)
    async with running_daemon(cfg) as (_, client):
        assert (await ready_app(client, "app", config(drop_rule("a", 6001)))).state == pb.ACTIVE

    new_rule = dict(drop_rule("b", 6002))
    if refused:  # a destination no port leads to: the compiler refuses the stored version at start
        new_rule = dict(forward_rule("b"), dstInterface={"interfaceType": "MAC", "dstMacAddress": "02:00:00:00:99:99"})
    written = parse_config(config(new_rule), max_items=10)
    await leave_orphans(cfg.store.sqlite.path, "app", written, AppConfig(
        traffic_rules=(TrafficRule.model_validate(drop_rule("c", 6003)),)))

    async with running_daemon(cfg) as (_, client):
        applying = await client.get_task("orphan-2")
        pending = await client.get_task("orphan-3")
        app = (await client.get_state("app", include_config=True)).apps[0]
        rules = [json.loads(r)["trafficRuleId"] for r in app.config.traffic_rules]
        if refused:
            assert pb.TaskState.Name(applying.state) == "REVERTED"
            assert "no data-plane port leads to 02:00:00:00:99:99" in applying.detail
            assert (app.config_generation, rules, app.in_force) == (1, ["a"], True)
        else:
            assert pb.TaskState.Name(applying.state) == "ACTIVE"
            assert (app.config_generation, rules, app.in_force) == (2, ["b"], True)
        assert pb.TaskState.Name(pending.state) == "REVERTED"
        assert pending.detail == f"{TaskDetail.INTERRUPTED}; nothing was written"
        assert [pb.TaskState.Name(h.state) for h in pending.history] == ["PENDING", "FAILED", "REVERTED"]
