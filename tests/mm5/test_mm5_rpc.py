"""Every Mm5 RPC over loopback against a real ``mep run`` (reference engine, SQLite), errors included.

Each test works on app instance ids of its own in the module's shared daemon.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from mep.errors import Conflict, InvalidInput, InvalidTransition, MepError, NotFound, PreconditionFailed, TooBusy
from mep.mm5.client import Mm5Client
from mep.mm5.rpc import METHODS, pb
from mep.mm5.service import Mm5Servicer
from tests.fixtures.mep_daemon import MepProcess
from tests.mm5.bodies import (
    config,
    dns_rule,
    drop_rule,
    forward_rule,
    required,
    service,
    udp_frame_hex,
)
from tests.mm5.conftest import LIMITS

pytestmark = pytest.mark.asyncio

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout_s: float = 15) -> T:
    """Poll ``probe`` until ``check`` holds on its result; fail with the last result after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await probe()
            if check(value):
                return value
            await asyncio.sleep(0.05)


async def app_state(client: Mm5Client, app_id: str, *, include_config: bool = False) -> pb.AppInstance:
    (app,) = (await client.get_state(app_id, include_config=include_config)).apps
    return app


async def states(client: Mm5Client, task_id: str) -> list[str]:
    return [pb.TaskState.Name(t.state) async for t in client.watch_task(task_id)]


async def create(client: Mm5Client, app_id: str, **kw: object) -> pb.AppInstance:
    return await client.create_app_instance(
        pb.CreateAppInstanceRequest(app_instance_id=app_id, app_name=f"{app_id}-name", app_d_id="appd-1", **kw)  # type: ignore[arg-type]
    )


async def test_every_rpc_of_the_proto_has_a_handler() -> None:
    assert sorted(METHODS) == sorted(m.name for m in pb.DESCRIPTOR.services_by_name["Mm5"].methods)
    missing = [m.attr for m in METHODS.values() if not callable(getattr(Mm5Servicer, m.attr, None))]
    assert missing == []


async def test_health(client: Mm5Client, mep: MepProcess) -> None:
    health = await client.health()
    assert health.serving and health.instance == "mm5" and health.engine == "reference"
    assert len(health.boot_id) == 32 and health.generation >= 1 and health.version


async def test_app_lifecycle_configuration_and_counters(client: Mm5Client, mep: MepProcess) -> None:
    created = await create(client, "life", graceful_timeout_s=5)
    assert pb.AppState.Name(created.state) == "NOT_INSTANTIATED"
    assert (created.config_generation, created.graceful_timeout_s, created.app_d_id) == (0, 5, "appd-1")

    cfg = config(
        forward_rule("to-app"),
        drop_rule("no-9999", 9999),
        dns=(dns_rule("name", "life.edge.example"),),
        services=(service("life-svc"),),
        requires=(required("rnis"),),
        client_id="life.0001",
    )
    accepted = await client.apply_configuration("life", 1, cfg)
    assert pb.TaskState.Name(accepted.state) == "PENDING" and len(accepted.task_id) == 32
    assert await states(client, accepted.task_id) == ["PENDING", "APPLYING", "ACTIVE"]
    task = await client.get_task(accepted.task_id)
    assert (task.app_instance_id, task.generation, task.previous_generation) == ("life", 1, 0)
    assert [pb.TaskState.Name(h.state) for h in task.history] == ["PENDING", "APPLYING", "ACTIVE"]
    assert task.config_revision > 0 and task.detail == ""

    app = await app_state(client, "life", include_config=True)
    assert app.config_generation == 1 and app.in_force and app.last_task_id == accepted.task_id
    assert [r.id for r in app.traffic_rules] == ["to-app", "no-9999"] and all(r.active for r in app.traffic_rules)
    assert [r.id for r in app.dns_rules] == ["name"] and app.services_produced == 1
    assert app.client_id == "life.0001"
    assert [json.loads(s)["serName"] for s in app.config.services_required] == ["rnis"]
    assert json.loads(app.config.traffic_rules[0]) == forward_rule("to-app")
    assert app.config.credentials.client_id == "life.0001" and app.config.credentials.client_secret_hash == ""

    # Stored, not enforced: the app is not instantiated yet.
    probe = mep.admin.post("/explain", {"frame": udp_frame_hex(8554), "ingress": 1})
    assert probe["verdict"] == "PASS"

    ready = await client.instantiate_app_instance("life")
    assert pb.AppState.Name(ready.state) == "READY" and ready.in_force  # confirm_ready_required: false
    again = await client.instantiate_app_instance("life")  # idempotent
    assert again.revision == ready.revision

    rule_id = {r.id: r.rule_id for r in ready.traffic_rules}["to-app"]
    probe = mep.admin.post("/explain", {"frame": udp_frame_hex(8554), "ingress": 1})
    assert (probe["verdict"], probe["rule_id"]) == ("REDIRECT", rule_id)
    counters = await client.get_counters("life")
    by_rule = {c.traffic_rule_id: c for c in counters.rules}
    assert set(by_rule) == {"to-app", "no-9999", "name"}
    assert (by_rule["to-app"].packets, by_rule["to-app"].rule_id) == (1, rule_id)
    assert by_rule["no-9999"].packets == 0
    assert counters.engine == "reference" and counters.generation >= 1
    assert "REDIRECT" in {v.name for v in counters.verdicts}

    with pytest.raises(InvalidTransition, match="terminate it first") as info:
        await client.delete_app_instance("life")
    assert info.value.field == "state"

    gone = await client.terminate_app_instance("life", forceful=True)
    assert pb.AppState.Name(gone.state) == "TERMINATED"
    assert list(gone.traffic_rules) == [] and list(gone.dns_rules) == [] and gone.services_produced == 0
    with pytest.raises(InvalidTransition, match="the app is TERMINATED"):
        await client.apply_configuration("life", 2, cfg)
    with pytest.raises(InvalidTransition, match="instantiate is not allowed in state TERMINATED"):
        await client.instantiate_app_instance("life")
    assert (await client.delete_app_instance("life")).app_instance_id == "life"
    with pytest.raises(NotFound):
        await client.get_state("life")
    with pytest.raises(NotFound):  # its tasks went with it
        await client.get_task(accepted.task_id)


@pytest.mark.parametrize(
    ("request_fields", "field", "message"),
    [
        ({"app_instance_id": ""}, "app_instance_id", "is required"),
        ({"app_instance_id": "x" * 257}, "app_instance_id", "at most 256 characters"),
        ({"app_instance_id": "ok", "app_name": "a\nb"}, "app_name", "control characters"),
        ({"app_instance_id": "ok", "graceful_timeout_s": 4000}, "graceful_timeout_s", "at most 3600"),
    ],
)
async def test_create_refuses_bad_input_naming_the_field(
    client: Mm5Client, request_fields: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        await client.create_app_instance(pb.CreateAppInstanceRequest(**request_fields))  # type: ignore[arg-type]
    assert info.value.field == field


async def test_create_twice_is_already_exists(client: Mm5Client) -> None:
    await create(client, "twice")
    with pytest.raises(Conflict, match="'twice' already exists") as info:
        await create(client, "twice")
    assert info.value.field == "appInstanceId"


async def test_unknown_ids_are_not_found(client: Mm5Client) -> None:
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.instantiate_app_instance("nobody"),
        lambda: client.terminate_app_instance("nobody"),
        lambda: client.delete_app_instance("nobody"),
        lambda: client.apply_configuration("nobody", 1, config()),
        lambda: client.get_state("nobody"),
        lambda: client.get_counters("nobody"),
        lambda: client.get_task("0" * 32),
        lambda: states(client, "0" * 32),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()


@pytest.mark.parametrize(
    ("cfg", "field", "message"),
    [
        (pb.AppConfiguration(traffic_rules=["{not json"]), "config.traffic_rules[0]", "is not JSON"),
        (pb.AppConfiguration(traffic_rules=["[1]"]), "config.traffic_rules[0]", "must be a JSON object"),
        (
            config(forward_rule("a"), dict(forward_rule("b"), trafficFilter=[{"dstPort": ["70000"]}])),
            "config.traffic_rules[1].trafficFilter[0].dstPort[0]",
            "port 70000 in '70000' is above 65535",
        ),
        (config(dict(forward_rule("a"), priority=300)), "config.traffic_rules[0].priority", "less than or equal"),
        (config(dns=(dns_rule("d", "bad name.example"),)), "config.dns_rules[0].domainName", "label"),
        (config(services=(dict(service(), state="SOMETIMES"),)), "config.services_produced[0].state", "'ACTIVE' or 'INACTIVE'"),
        (config(requires=({"serName": "x"},)), "config.services_required[0].version", "required"),
        (
            config(*(drop_rule(f"r{i}", 1000 + i) for i in range(LIMITS["max_rules_per_app"] + 1))),
            "config.traffic_rules",
            "at most 20 entries",
        ),
    ],
    ids=["json", "not-object", "port", "priority", "domain", "service-state", "required-version", "too-many"],
)
async def test_apply_refuses_bad_configurations_naming_the_field(
    client: Mm5Client, cfg: pb.AppConfiguration, field: str, message: str
) -> None:
    await create(client, f"bad-{field}-{message}"[:200])
    with pytest.raises(InvalidInput, match=message) as info:
        await client.apply_configuration(f"bad-{field}-{message}"[:200], 1, cfg)
    assert info.value.field == field


async def test_apply_refuses_bad_generation_and_credentials(client: Mm5Client) -> None:
    await create(client, "gen")
    with pytest.raises(InvalidInput) as info:
        await client.apply_configuration("gen", 0, config())
    assert info.value.field == "generation"
    cfg = config()
    cfg.credentials.client_id = "gen.1"
    cfg.credentials.client_secret_hash = "the-secret-itself"
    with pytest.raises(InvalidInput, match="never travels over Mm5") as info:
        await client.apply_configuration("gen", 1, cfg)
    assert info.value.field == "config.credentials.client_secret_hash"

    first = await client.apply_configuration("gen", 3, config(drop_rule("d", 7000)))
    assert (await client.wait_task(first.task_id)).state == pb.ACTIVE
    with pytest.raises(PreconditionFailed, match="older than the applied generation 3") as older:
        await client.apply_configuration("gen", 2, config(drop_rule("d", 7000)))
    assert older.value.field == "generation"
    with pytest.raises(PreconditionFailed, match="already applied with a different configuration"):
        await client.apply_configuration("gen", 3, config(drop_rule("d", 7001)))


async def test_idempotent_reapply_changes_nothing(client: Mm5Client, mep: MepProcess) -> None:
    await create(client, "idem")
    await client.instantiate_app_instance("idem")
    cfg = config(forward_rule("to-app", dport=8600), dns=(dns_rule("n", "idem.edge.example"),), client_id="idem.1")
    first = await client.apply_configuration("idem", 1, cfg)
    assert (await client.wait_task(first.task_id)).state == pb.ACTIVE
    mep.admin.post("/explain", {"frame": udp_frame_hex(8600), "ingress": 1})
    before_state = await client.get_state()
    before_counters = await client.get_counters()
    before_status = mep.admin.get("/status")

    again = await client.apply_configuration("idem", 1, cfg)

    assert again.task_id == first.task_id and again.state == pb.ACTIVE
    after_state = await client.get_state()
    assert after_state.store_revision == before_state.store_revision  # not even a task record was written
    assert after_state.generation == before_state.generation  # no rule set was compiled or applied
    assert await client.get_counters() == before_counters
    after_status = mep.admin.get("/status")
    assert (after_status["generation"], after_status["applied_revision"]) == (
        before_status["generation"], before_status["applied_revision"],
    )
    # The same request while a newer generation is in force is refused, not re-applied.
    newer = await client.apply_configuration("idem", 2, config(forward_rule("to-app", dport=8601)))
    assert (await client.wait_task(newer.task_id)).state == pb.ACTIVE
    with pytest.raises(PreconditionFailed, match="older"):
        await client.apply_configuration("idem", 1, cfg)


async def test_a_refused_configuration_fails_and_reverts(client: Mm5Client, mep: MepProcess) -> None:
    await create(client, "refused")
    await client.instantiate_app_instance("refused")
    good = await client.apply_configuration("refused", 1, config(forward_rule("to-app", dport=8700)))
    assert (await client.wait_task(good.task_id)).state == pb.ACTIVE
    before = await app_state(client, "refused", include_config=True)
    generation = (await client.get_state()).generation

    unresolvable = dict(forward_rule("to-app", dport=8700),
                        dstInterface={"interfaceType": "MAC", "dstMacAddress": "02:00:00:00:99:99"})
    bad = await client.apply_configuration("refused", 2, config(unresolvable, drop_rule("extra", 8701)))
    seen = [t async for t in client.watch_task(bad.task_id)]

    assert [pb.TaskState.Name(t.state) for t in seen] == ["PENDING", "APPLYING", "FAILED", "REVERTED"]
    assert "dstInterface.dstMacAddress: no data-plane port leads to 02:00:00:00:99:99" in seen[-1].detail
    assert seen[-1].detail.endswith("nothing was written") and seen[-1].previous_generation == 1
    after = await app_state(client, "refused", include_config=True)
    assert after.config_generation == 1 and after.in_force
    assert after.config == before.config and after.traffic_rules == before.traffic_rules
    assert (await client.get_state()).generation == generation
    probe = mep.admin.post("/explain", {"frame": udp_frame_hex(8700), "ingress": 1})
    assert probe["verdict"] == "REDIRECT"

    # A DNS name another app holds is refused the same way.
    await create(client, "other")
    taken = await client.apply_configuration("other", 1, config(dns=(dns_rule("n", "taken.edge.example"),)))
    assert (await client.wait_task(taken.task_id)).state == pb.ACTIVE
    clash = await client.apply_configuration("refused", 2, config(dns=(dns_rule("n", "TAKEN.edge.example"),)))
    final = await client.wait_task(clash.task_id)
    assert final.state == pb.REVERTED and "already claimed by app instance 'other'" in final.detail

    # The generation that failed can be applied again once fixed.
    fixed = await client.apply_configuration("refused", 2, config(forward_rule("to-app", dport=8702)))
    assert (await client.wait_task(fixed.task_id)).state == pb.ACTIVE
    assert (await app_state(client, "refused")).config_generation == 2


async def test_graceful_termination_ends_with_rules_and_services_removed(client: Mm5Client, mep: MepProcess) -> None:
    """Mp1's side runs in every daemon: with no termination subscriber it finishes at once (the backstop
    alone is tested in test_mm5_termination.py)."""
    await create(client, "graceful", graceful_timeout_s=1)
    ok = await client.apply_configuration("graceful", 1, config(forward_rule("to-app", dport=8800),
                                                               services=(service("graceful-svc"),)))
    assert (await client.wait_task(ok.task_id)).state == pb.ACTIVE
    await client.instantiate_app_instance("graceful")
    assert mep.admin.post("/explain", {"frame": udp_frame_hex(8800), "ingress": 1})["verdict"] == "REDIRECT"

    terminating = await client.terminate_app_instance("graceful")
    assert pb.AppState.Name(terminating.state) in ("TERMINATING", "TERMINATED")
    again = await client.terminate_app_instance("graceful")  # idempotent
    assert pb.AppState.Name(again.state) in ("TERMINATING", "TERMINATED")

    done = await eventually(lambda: app_state(client, "graceful"), lambda a: a.state == pb.TERMINATED
                            and not a.traffic_rules and a.services_produced == 0)
    assert done.in_force
    assert mep.admin.post("/explain", {"frame": udp_frame_hex(8800), "ingress": 1})["verdict"] == "PASS"


async def test_a_not_instantiated_app_terminates_at_once(client: Mm5Client) -> None:
    await create(client, "never")
    ok = await client.apply_configuration("never", 1, config(drop_rule("d", 8900)))
    assert (await client.wait_task(ok.task_id)).state == pb.ACTIVE
    gone = await client.terminate_app_instance("never")
    assert pb.AppState.Name(gone.state) == "TERMINATED" and list(gone.traffic_rules) == []


async def test_watch_streams_store_events(client: Mm5Client) -> None:
    stream = client.watch("watched")
    first = await anext(stream)
    assert first.kind == pb.SYNC and first.revision > 0
    await create(client, "unwatched")
    await create(client, "watched")
    event = await anext(stream)
    assert (pb.EventKind.Name(event.kind), pb.EventOp.Name(event.op), event.app_instance_id, event.key) == (
        "APP", "PUT", "watched", "watched",
    )
    assert event.revision > first.revision
    accepted = await client.apply_configuration("watched", 1, config(drop_rule("w", 9100)))
    seen = []
    while ("TRAFFIC_RULE", "w") not in seen:
        e = await anext(stream)
        assert e.app_instance_id == "watched"
        seen.append((pb.EventKind.Name(e.kind), e.key))
    assert ("TASK", accepted.task_id) in seen
    await stream.aclose()


async def test_streams_are_bounded(client: Mm5Client) -> None:
    streams = [client.watch() for _ in range(LIMITS["max_streams"])]
    for s in streams:
        assert (await anext(s)).kind == pb.SYNC
    with pytest.raises(TooBusy, match="mm5.max_streams"):
        await anext(client.watch())
    for s in streams:
        await s.aclose()
    # A slot is free again once a stream ends.
    s = client.watch()
    assert (await eventually(lambda: anext(s), lambda e: e.kind == pb.SYNC)).kind == pb.SYNC
    await s.aclose()


async def test_a_mep_that_is_not_there_is_peer_unavailable() -> None:
    from tests.fixtures.etcd import free_port

    async with Mm5Client(f"127.0.0.1:{free_port()}", timeout_s=2) as c:
        with pytest.raises(MepError, match="does not answer"):
            await c.health()
