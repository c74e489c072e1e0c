"""The Store contract (mep/state/store.py), run against every backend through the ``store`` fixture.

Backend-specific tests follow the contract suite: SQLite durability after
SIGKILL and its single-owner lock; etcd's watch (a second store on the same
prefix), concurrent writers, an unreachable endpoint and a server restart.
The differential test at the end applies random operation sequences to both
backends (and an etcd observer following through the watch) and requires
the same observable behaviour from all of them.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import mep.state
from mep.config import EtcdConfig, SqliteConfig, StoreConfig
from mep.errors import Conflict, InvalidInput, InvalidTransition, NotFound, PreconditionFailed, StoreUnavailable
from mep.models import DnsRule, ServiceInfo, TrafficRule
from mep.state import (
    AppConfig,
    AppInstance,
    AppState,
    EtcdStore,
    EventKind,
    EventOp,
    LifecycleEvent,
    SqliteStore,
    Store,
    StoreEvent,
    SubscriptionKind,
    open_store,
)
from tests.fixtures.etcd import EtcdServer, StoreFactory, delete_prefix, etcd_binary, free_port, put_key

REPO = Path(__file__).resolve().parents[2]


# -- builders ------------------------------------------------------------------


def app(app_id: str = "app1", **fields: Any) -> AppInstance:
    return AppInstance(**{"appInstanceId": app_id, "appName": f"{app_id}-name", **fields})


def traffic_rule(
    rule_id: str = "tr1", *, priority: int = 1, state: str = "ACTIVE", action: str = "DROP"
) -> TrafficRule:
    return TrafficRule.model_validate(
        {
            "trafficRuleId": rule_id,
            "filterType": "FLOW",
            "priority": priority,
            "trafficFilter": [{"dstAddress": ["198.18.0.0/24"], "dstPort": ["80", "8000-8080"], "protocol": ["TCP"]}],
            "action": action,
            "state": state,
        }
    )


def dns_rule(
    rule_id: str = "dr1", name: str = "app.example", *, state: str = "ACTIVE", ip: str = "198.18.1.1"
) -> DnsRule:
    return DnsRule.model_validate(
        {
            "dnsRuleId": rule_id,
            "domainName": name,
            "ipAddressType": "IP_V6" if ":" in ip else "IP_V4",
            "ipAddress": ip,
            "ttl": 30,
            "state": state,
        }
    )


def service(name: str = "location", *, ser_id: str | None = None, version: str = "1.0") -> ServiceInfo:
    body: dict[str, Any] = {
        "serName": name,
        "version": version,
        "state": "ACTIVE",
        "serializer": "JSON",
        "transportInfo": {
            "id": "rest",
            "name": "REST",
            "type": "REST_HTTP",
            "protocol": "HTTP",
            "version": "2.0",
            "endpoint": {"uris": [f"http://198.18.2.1/{name}"]},
            "security": {},
        },
    }
    if ser_id is not None:
        body["serInstanceId"] = ser_id
    return ServiceInfo.model_validate(body)


def subscription_body(callback: str = "http://198.18.3.1/cb") -> dict[str, object]:
    return {
        "subscriptionType": "AppTerminationNotificationSubscription",
        "callbackReference": callback,
        "_links": {"self": {"href": "http://198.18.0.1/mec_app_support/v2/subscriptions/x"}},
        "appInstanceId": "app1",
    }


def drain(queue: asyncio.Queue[StoreEvent]) -> list[tuple[int, str, str, str, str]]:
    """The queued events as (revision, kind, op, app, key), without waiting."""
    events = []
    while not queue.empty():
        e = queue.get_nowait()
        events.append((e.revision, e.kind.value, e.op.value, e.app_instance_id, e.key))
    return events


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


def is_uuid4(text: str) -> bool:
    return uuid.UUID(text).version == 4


def state_of(store: Store) -> dict[str, Any]:
    """Everything a client can read from a store, as plain data."""
    ids = [a.appInstanceId for a in store.list_apps()]
    return {
        "revision": store.revision,
        "apps": [a.model_dump(mode="json") for a in store.list_apps()],
        "traffic_rules": {i: [r.model_dump(mode="json") for r in store.list_traffic_rules(i)] for i in ids},
        "dns_rules": {i: [r.model_dump(mode="json") for r in store.list_dns_rules(i)] for i in ids},
        "services": [s.model_dump(mode="json") for s in store.list_services()],
        "subscriptions": [s.model_dump(mode="json") for s in store.list_subscriptions()],
        "snapshot": store.snapshot().model_dump(mode="json"),
    }


# -- application instances -------------------------------------------------------


@pytest.mark.asyncio
async def test_app_create_get_list(store: Store) -> None:
    created = await store.create_app(app("b"))
    assert created.revision == 1 == store.revision
    assert created.etag == '"1"'
    assert created.created_at > 0 and created.updated_at == created.created_at
    await store.create_app(app("a", confirm_ready_required=False))
    assert store.get_app("b") == created
    assert [a.appInstanceId for a in store.list_apps()] == ["a", "b"]
    assert store.get_app("a").confirm_ready_required is False


@pytest.mark.asyncio
async def test_app_duplicate_is_conflict_and_writes_nothing(store: Store) -> None:
    await store.create_app(app("a"))
    with pytest.raises(Conflict) as info:
        await store.create_app(app("a", appName="other"))
    assert info.value.field == "appInstanceId" and "'a' already exists" in info.value.detail
    assert store.revision == 1 and store.get_app("a").appName == "a-name"


@pytest.mark.asyncio
async def test_unknown_app_is_not_found_everywhere(store: Store) -> None:
    await store.create_app(app("a"))
    reads: list[Callable[[], object]] = [
        lambda: store.get_app("x"),
        lambda: store.list_traffic_rules("x"),
        lambda: store.get_traffic_rule("x", "tr1"),
        lambda: store.list_dns_rules("x"),
        lambda: store.get_dns_rule("x", "dr1"),
        lambda: store.list_services("x"),
        lambda: store.list_subscriptions("x"),
        lambda: store.get_subscription("x", "s"),
    ]
    for read in reads:
        with pytest.raises(NotFound) as info:
            read()
        assert info.value.detail == "app instance 'x' not found"
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: store.transition_app("x", LifecycleEvent.INSTANTIATE),
        lambda: store.delete_app("x"),
        lambda: store.replace_app_config("x", AppConfig(), generation=1),
        lambda: store.put_traffic_rule("x", traffic_rule()),
        lambda: store.delete_traffic_rule("x", "tr1"),
        lambda: store.put_dns_rule("x", dns_rule()),
        lambda: store.delete_dns_rule("x", "dr1"),
        lambda: store.put_service("x", service()),
        lambda: store.delete_service("x", "s"),
        lambda: store.create_subscription("x", SubscriptionKind.APP_TERMINATION, {}),
        lambda: store.delete_subscription("x", "s"),
    ]
    for write in writes:
        with pytest.raises(NotFound):
            await write()
    assert store.revision == 1


# -- traffic and DNS rules -----------------------------------------------------------


@pytest.mark.asyncio
async def test_traffic_rule_crud(store: Store) -> None:
    await store.create_app(app())
    first = await store.put_traffic_rule("app1", traffic_rule("tr1", priority=5))
    assert (first.rule_id, first.revision, first.app_instance_id) == (1, 2, "app1")
    second = await store.put_traffic_rule("app1", traffic_rule("tr0", priority=1))
    assert second.rule_id == 2
    assert store.get_traffic_rule("app1", "tr1") == first
    assert first.rule.to_json() == traffic_rule("tr1", priority=5).to_json()
    # Listed by rule id (installation order), not by trafficRuleId.
    assert [r.rule.trafficRuleId for r in store.list_traffic_rules("app1")] == ["tr1", "tr0"]

    updated = await store.put_traffic_rule("app1", traffic_rule("tr1", priority=9, action="PASSTHROUGH"))
    assert (updated.rule_id, updated.revision, updated.rule.priority) == (1, 4, 9)
    assert store.get_traffic_rule("app1", "tr1") == updated

    await store.delete_traffic_rule("app1", "tr1")
    with pytest.raises(NotFound) as info:
        store.get_traffic_rule("app1", "tr1")
    assert info.value.field == "trafficRuleId"
    assert info.value.detail == "app instance 'app1' has no traffic rule 'tr1'"
    with pytest.raises(NotFound):
        await store.delete_traffic_rule("app1", "tr1")
    assert [r.rule.trafficRuleId for r in store.list_traffic_rules("app1")] == ["tr0"]
    assert store.revision == 5


@pytest.mark.asyncio
async def test_dns_rule_crud(store: Store) -> None:
    await store.create_app(app())
    v4 = await store.put_dns_rule("app1", dns_rule("dr1", "app.example"))
    v6 = await store.put_dns_rule("app1", dns_rule("dr2", "app.example", ip="2001:db8::1"))
    assert (v4.rule_id, v6.rule_id) == (1, 2)
    assert store.get_dns_rule("app1", "dr2") == v6
    assert [r.rule.dnsRuleId for r in store.list_dns_rules("app1")] == ["dr1", "dr2"]
    moved = await store.put_dns_rule("app1", dns_rule("dr1", "app.example", ip="198.18.1.9"))
    assert (moved.rule_id, moved.rule.ipAddress) == (1, "198.18.1.9")
    await store.delete_dns_rule("app1", "dr1")
    with pytest.raises(NotFound) as info:
        store.get_dns_rule("app1", "dr1")
    assert info.value.field == "dnsRuleId"
    with pytest.raises(NotFound):
        await store.delete_dns_rule("app1", "dr1")


@pytest.mark.asyncio
async def test_rules_belong_to_their_app(store: Store) -> None:
    await store.create_app(app("a"))
    await store.create_app(app("b"))
    await store.put_traffic_rule("a", traffic_rule("tr1"))
    other = await store.put_traffic_rule("b", traffic_rule("tr1"))  # same trafficRuleId, another app
    assert other.rule_id == 2
    with pytest.raises(NotFound):
        await store.delete_dns_rule("b", "tr1")
    await store.delete_traffic_rule("a", "tr1")
    assert store.get_traffic_rule("b", "tr1") == other


@pytest.mark.asyncio
async def test_rule_ids_are_stable_and_never_reused(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    await store.create_app(app("a"))
    assert (await store.put_traffic_rule("a", traffic_rule("t1"))).rule_id == 1
    assert (await store.put_dns_rule("a", dns_rule("d1"))).rule_id == 2  # one sequence for both kinds
    assert (await store.put_traffic_rule("a", traffic_rule("t2"))).rule_id == 3
    assert (await store.put_traffic_rule("a", traffic_rule("t1", priority=7))).rule_id == 1
    await store.delete_traffic_rule("a", "t2")
    assert (await store.put_traffic_rule("a", traffic_rule("t2"))).rule_id == 4
    await store.delete_app("a")
    await store.create_app(app("a"))
    assert (await store.put_traffic_rule("a", traffic_rule("t1"))).rule_id == 5
    await store.close()

    reopened = store_factory()
    await reopened.open()
    try:
        assert reopened.get_traffic_rule("a", "t1").rule_id == 5
        await reopened.delete_traffic_rule("a", "t1")
        assert (await reopened.put_traffic_rule("a", traffic_rule("t1"))).rule_id == 6
        assert (await reopened.put_dns_rule("a", dns_rule("d9"))).rule_id == 7
    finally:
        await reopened.close()


# -- services and subscriptions -----------------------------------------------------


@pytest.mark.asyncio
async def test_service_crud(store: Store) -> None:
    await store.create_app(app("a"))
    await store.create_app(app("b"))
    created = await store.put_service("a", service("location"))
    ser_id = created.service.serInstanceId
    assert ser_id is not None and is_uuid4(ser_id)
    assert created.app_instance_id == "a"
    assert store.get_service(ser_id) == created
    other = await store.put_service("b", service("rnis"))
    assert other.service.serInstanceId != ser_id

    replaced = await store.put_service("a", service("location", ser_id=ser_id, version="2.0"))
    assert replaced.service.version == "2.0" and replaced.revision == created.revision + 2
    assert store.get_service(ser_id) == replaced

    with pytest.raises(NotFound) as info:
        await store.put_service("a", service("location", ser_id="no-such-service"))
    assert info.value.field == "serInstanceId"
    # Another app's service is not the app's to replace or delete.
    with pytest.raises(NotFound):
        await store.put_service("b", service("location", ser_id=ser_id))
    with pytest.raises(NotFound):
        await store.delete_service("b", ser_id)

    assert [s.service.serName for s in store.list_services()] == ["location", "rnis"]
    assert [s.service.serName for s in store.list_services("b")] == ["rnis"]
    await store.delete_service("a", ser_id)
    with pytest.raises(NotFound):
        store.get_service(ser_id)
    assert store.list_services("a") == []


@pytest.mark.asyncio
async def test_subscription_crud(store: Store) -> None:
    await store.create_app(app("a"))
    await store.create_app(app("b"))
    term = await store.create_subscription("a", SubscriptionKind.APP_TERMINATION, subscription_body())
    avail = await store.create_subscription(
        "a", SubscriptionKind.SER_AVAILABILITY, {"subscriptionType": "SerAvailabilityNotificationSubscription"}
    )
    theirs = await store.create_subscription(
        "b", SubscriptionKind.APP_TERMINATION, subscription_body("http://198.18.3.2/")
    )
    assert is_uuid4(term.subscription_id) and term.subscription_id != avail.subscription_id
    assert store.get_subscription("a", term.subscription_id) == term
    assert term.body == subscription_body()
    with pytest.raises(NotFound) as info:
        store.get_subscription("b", term.subscription_id)
    assert info.value.field == "subscriptionId"

    assert {s.subscription_id for s in store.list_subscriptions("a")} == {term.subscription_id, avail.subscription_id}
    assert store.list_subscriptions(kind=SubscriptionKind.APP_TERMINATION) == [term, theirs]  # by app, then id
    assert store.list_subscriptions("a", SubscriptionKind.SER_AVAILABILITY) == [avail]

    with pytest.raises(NotFound):
        await store.delete_subscription("b", term.subscription_id)
    await store.delete_subscription("a", term.subscription_id)
    assert store.list_subscriptions("a") == [avail]


# -- If-Match ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_expected_revision_is_if_match(store: Store) -> None:
    created = await store.create_app(app())
    rule = await store.put_traffic_rule("app1", traffic_rule("tr1"))
    updated = await store.put_traffic_rule("app1", traffic_rule("tr1", priority=2), expected_revision=rule.revision)
    assert updated.rule.priority == 2

    revision = store.revision
    with pytest.raises(PreconditionFailed) as info:
        await store.put_traffic_rule("app1", traffic_rule("tr1", priority=3), expected_revision=rule.revision)
    assert info.value.field == "If-Match"
    assert info.value.detail == (
        f"traffic rule 'tr1' is at revision {updated.revision}, not at the expected revision {rule.revision}"
    )
    with pytest.raises(PreconditionFailed) as info:
        await store.put_traffic_rule("app1", traffic_rule("new"), expected_revision=1)
    assert "does not exist" in info.value.detail
    with pytest.raises(PreconditionFailed):
        await store.put_dns_rule("app1", dns_rule("dr1"), expected_revision=1)
    with pytest.raises(PreconditionFailed):
        await store.transition_app("app1", LifecycleEvent.INSTANTIATE, expected_revision=created.revision + 1)
    with pytest.raises(PreconditionFailed):
        await store.put_service("app1", service(), expected_revision=1)
    assert store.revision == revision
    assert store.get_traffic_rule("app1", "tr1") == updated

    moved = await store.transition_app("app1", LifecycleEvent.INSTANTIATE, expected_revision=created.revision)
    assert moved.state is AppState.INSTANTIATED
    svc = await store.put_service("app1", service())
    assert svc.service.serInstanceId is not None
    await store.put_service(
        "app1", service(ser_id=svc.service.serInstanceId, version="2"), expected_revision=svc.revision
    )
    dns = await store.put_dns_rule("app1", dns_rule("dr1"))
    await store.put_dns_rule("app1", dns_rule("dr1", ip="198.18.1.2"), expected_revision=dns.revision)


@pytest.mark.asyncio
async def test_check_sees_the_snapshot_the_write_would_commit(store: Store) -> None:
    await store.create_app(app())
    await store.transition_app("app1", LifecycleEvent.INSTANTIATE)
    seen: list[Any] = []

    async def accept(snapshot: Any) -> None:
        seen.append(snapshot)

    stored = await store.put_traffic_rule("app1", traffic_rule("tr1"), check=accept)
    assert seen[-1].revision == stored.revision
    assert [r.rule.trafficRuleId for r in seen[-1].traffic_rules] == ["tr1"]
    assert seen[-1].traffic_rules[0].rule_id == stored.rule_id
    assert store.snapshot() is seen[-1]  # the committed snapshot is the very object checked

    await store.put_dns_rule("app1", dns_rule("dr1"), check=accept)
    assert [r.rule.dnsRuleId for r in seen[-1].dns_rules] == ["dr1"]
    await store.transition_app("app1", LifecycleEvent.CONFIRM_READY, check=accept)
    assert seen[-1].apps["app1"].state is AppState.READY
    await store.replace_app_config("app1", AppConfig(traffic_rules=(traffic_rule("tr2"),)), generation=1, check=accept)
    assert [r.rule.trafficRuleId for r in seen[-1].traffic_rules] == ["tr2"]
    assert store.snapshot().model_dump() == seen[-1].model_dump()


@pytest.mark.asyncio
async def test_a_failing_check_refuses_the_write(store: Store) -> None:
    await store.create_app(app())
    queue = store.subscribe()
    revision = store.revision

    async def refuse(snapshot: Any) -> None:
        raise InvalidInput("refused by the check", field="action")

    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put_traffic_rule("app1", traffic_rule("tr1"), check=refuse),
        lambda: store.put_dns_rule("app1", dns_rule("dr1"), check=refuse),
        lambda: store.transition_app("app1", LifecycleEvent.INSTANTIATE, check=refuse),
        lambda: store.replace_app_config("app1", AppConfig(traffic_rules=(traffic_rule(),)), generation=1, check=refuse),
    ]
    for write in writes:
        with pytest.raises(InvalidInput, match="refused by the check"):
            await write()
    assert store.revision == revision and drain(queue) == []
    assert store.list_traffic_rules("app1") == [] and store.get_app("app1").state is AppState.NOT_INSTANTIATED


@pytest.mark.asyncio
async def test_clear_app_removes_the_named_kinds_in_one_write(store: Store) -> None:
    await store.create_app(app())
    await store.put_traffic_rule("app1", traffic_rule("tr1"))
    await store.put_traffic_rule("app1", traffic_rule("tr2"))
    await store.put_dns_rule("app1", dns_rule("dr1"))
    svc = await store.put_service("app1", service())
    await store.create_subscription("app1", SubscriptionKind.APP_TERMINATION, subscription_body())
    queue = store.subscribe()
    revision = store.revision

    assert await store.clear_app("app1", [EventKind.TRAFFIC_RULE, EventKind.DNS_RULE]) == 3
    assert store.revision == revision + 1
    assert [(e[1], e[2], e[4]) for e in drain(queue)] == [
        ("traffic_rule", "delete", "tr1"), ("traffic_rule", "delete", "tr2"), ("dns_rule", "delete", "dr1")]
    assert store.list_traffic_rules("app1") == [] and store.list_dns_rules("app1") == []
    assert [s.service.serInstanceId for s in store.list_services("app1")] == [svc.service.serInstanceId]

    assert await store.clear_app("app1", [EventKind.TRAFFIC_RULE]) == 0  # nothing left: no write
    assert store.revision == revision + 1 and drain(queue) == []
    assert await store.clear_app("app1", [EventKind.SERVICE, EventKind.SUBSCRIPTION]) == 2
    assert store.list_services() == [] and store.list_subscriptions() == []
    assert store.get_app("app1").appInstanceId == "app1"
    with pytest.raises(NotFound):
        await store.clear_app("x", [EventKind.SERVICE])


@pytest.mark.asyncio
async def test_subscription_under_a_chosen_id(store: Store) -> None:
    await store.create_app(app())
    chosen = str(uuid.uuid4())
    stored = await store.create_subscription(
        "app1", SubscriptionKind.APP_TERMINATION, subscription_body(), subscription_id=chosen)
    assert stored.subscription_id == chosen and store.get_subscription("app1", chosen) == stored
    with pytest.raises(Conflict) as info:
        await store.create_subscription("app1", SubscriptionKind.APP_TERMINATION, subscription_body(), subscription_id=chosen)
    assert info.value.field == "subscriptionId" and store.revision == stored.revision


# -- lifecycle ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_lifecycle_transitions(store: Store) -> None:
    created = await store.create_app(app())
    inst = await store.transition_app("app1", LifecycleEvent.INSTANTIATE)
    assert inst.state is AppState.INSTANTIATED and inst.revision == 2
    assert inst.updated_at >= created.updated_at and inst.created_at == created.created_at
    ready = await store.transition_app("app1", LifecycleEvent.CONFIRM_READY)
    assert ready.state is AppState.READY and store.get_app("app1") == ready
    stopping = await store.transition_app("app1", LifecycleEvent.STOP)
    assert stopping.state is AppState.STOPPING

    with pytest.raises(InvalidTransition) as info:
        await store.transition_app("app1", LifecycleEvent.START)
    assert info.value.detail.startswith("start is not allowed in state STOPPING")
    assert store.revision == 4 and store.get_app("app1") == stopping

    for event, state in [
        (LifecycleEvent.GRACEFUL_TIMEOUT, AppState.STOPPED),
        (LifecycleEvent.START, AppState.INSTANTIATED),
        (LifecycleEvent.TERMINATE, AppState.TERMINATING),
        (LifecycleEvent.CONFIRM_TERMINATION, AppState.TERMINATED),
    ]:
        assert (await store.transition_app("app1", event)).state is state
    with pytest.raises(InvalidTransition):
        await store.transition_app("app1", LifecycleEvent.INSTANTIATE)


@pytest.mark.asyncio
async def test_app_without_ready_confirmation_is_ready_on_instantiate(store: Store) -> None:
    await store.create_app(app(confirm_ready_required=False))
    assert (await store.transition_app("app1", LifecycleEvent.INSTANTIATE)).state is AppState.READY


# -- DNS name conflicts -------------------------------------------------------------


@pytest.mark.asyncio
async def test_dns_name_conflicts_between_apps(store: Store) -> None:
    for a in ("a", "b"):
        await store.create_app(app(a))
    await store.put_dns_rule("a", dns_rule("d1", "svc.example"))
    await store.put_dns_rule("a", dns_rule("d2", "SVC.Example.", ip="2001:db8::1"))  # the same app may, e.g. AAAA
    revision = store.revision
    for name in ("svc.example", "SVC.EXAMPLE", "svc.example."):
        with pytest.raises(Conflict) as info:
            await store.put_dns_rule("b", dns_rule("d1", name))
        assert info.value.field == "domainName"
        assert info.value.detail == (
            f"domain name '{name}' is already claimed by app instance 'a' (DNS rule 'd1')"
        )
    assert store.revision == revision
    with pytest.raises(Conflict):
        await store.replace_app_config("b", AppConfig(dns_rules=(dns_rule("x", "svc.example"),)), generation=1)

    # An INACTIVE rule claims nothing, and an INACTIVE claim blocks nothing.
    parked = await store.put_dns_rule("b", dns_rule("d1", "svc.example", state="INACTIVE"))
    with pytest.raises(Conflict):
        await store.put_dns_rule("b", dns_rule("d1", "svc.example"))
    assert store.get_dns_rule("b", "d1") == parked
    await store.put_dns_rule("a", dns_rule("d1", "svc.example", state="INACTIVE"))
    with pytest.raises(Conflict) as info:
        await store.put_dns_rule("b", dns_rule("d1", "svc.example"))
    assert "(DNS rule 'd2')" in info.value.detail
    await store.delete_dns_rule("a", "d2")
    active = await store.put_dns_rule("b", dns_rule("d1", "svc.example"))
    assert active.rule_id == parked.rule_id
    with pytest.raises(Conflict) as info:
        await store.put_dns_rule("a", dns_rule("d1", "svc.example"))
    assert "app instance 'b'" in info.value.detail
    other = await store.put_dns_rule("a", dns_rule("d3", "other.example"))
    assert other.rule.domainName == "other.example"


# -- replace_app_config --------------------------------------------------------------


@pytest.mark.asyncio
async def test_replace_app_config(store: Store) -> None:
    await store.create_app(app())
    await store.create_app(app("other"))
    kept = await store.put_traffic_rule("app1", traffic_rule("keep"))
    changed = await store.put_traffic_rule("app1", traffic_rule("change"))
    await store.put_traffic_rule("app1", traffic_rule("drop"))
    dns = await store.put_dns_rule("app1", dns_rule("d1"))
    sub = await store.create_subscription("app1", SubscriptionKind.APP_TERMINATION, subscription_body())
    queue = store.subscribe()
    base = store.revision

    config = AppConfig(
        traffic_rules=(traffic_rule("keep"), traffic_rule("change", priority=9), traffic_rule("new")),
        dns_rules=(dns_rule("d1"),),
        services=(service("location"),),
    )
    result = await store.replace_app_config("app1", config, generation=1)
    assert result.config_generation == 1 and result.revision == base + 1 == store.revision
    rules = {r.rule.trafficRuleId: r for r in store.list_traffic_rules("app1")}
    assert set(rules) == {"keep", "change", "new"}
    assert rules["keep"] == kept  # untouched: same record, same revision
    assert (rules["change"].rule_id, rules["change"].rule.priority, rules["change"].revision) == (
        changed.rule_id, 9, base + 1,
    )
    assert rules["new"].rule_id == 5  # after keep=1, change=2, drop=3, d1=4
    assert store.get_dns_rule("app1", "d1") == dns
    assert store.get_subscription("app1", sub.subscription_id) == sub  # subscriptions are not configuration
    (svc,) = store.list_services("app1")
    assert svc.service.serName == "location"
    # One event per changed object, all at the new revision.
    assert drain(queue) == [
        (base + 1, "app", "put", "app1", "app1"),
        (base + 1, "traffic_rule", "put", "app1", "change"),
        (base + 1, "traffic_rule", "delete", "app1", "drop"),
        (base + 1, "traffic_rule", "put", "app1", "new"),
        (base + 1, "service", "put", "app1", svc.service.serInstanceId),
    ]

    # Same generation, same configuration: a no-op.
    again = await store.replace_app_config("app1", config, generation=1)
    assert again == result and store.revision == base + 1 and drain(queue) == []
    # Same generation, another configuration; or an older one: refused, nothing written.
    with pytest.raises(PreconditionFailed) as info:
        await store.replace_app_config("app1", AppConfig(), generation=1)
    assert info.value.field == "generation" and "already applied" in info.value.detail
    with pytest.raises(PreconditionFailed) as info:
        await store.replace_app_config("app1", config, generation=0)
    assert info.value.detail == "configuration generation 0 is older than the applied generation 1"
    assert store.revision == base + 1 and drain(queue) == []

    # A newer generation of the same configuration only moves the generation;
    # the service keeps its id (matched by serName).
    bumped = await store.replace_app_config("app1", config, generation=2)
    assert bumped.config_generation == 2
    assert store.list_services("app1") == [svc]
    assert drain(queue) == [(base + 2, "app", "put", "app1", "app1")]

    # Emptying it.
    await store.replace_app_config("app1", AppConfig(), generation=3)
    assert store.list_traffic_rules("app1") == [] and store.list_dns_rules("app1") == []
    assert store.list_services("app1") == []
    assert len(drain(queue)) == 1 + 3 + 1 + 1


@pytest.mark.asyncio
async def test_replace_app_config_is_atomic(store: Store) -> None:
    await store.create_app(app("a"))
    await store.create_app(app("b"))
    await store.put_dns_rule("b", dns_rule("d1", "taken.example"))
    await store.put_traffic_rule("a", traffic_rule("t1"))
    taken = (await store.put_service("b", service("theirs"))).service.serInstanceId
    assert taken is not None
    before = state_of(store)
    queue = store.subscribe()
    refused = [
        # The last DNS rule conflicts with app b: none of the rest is applied either.
        AppConfig(
            traffic_rules=(traffic_rule("t2"),),
            dns_rules=(dns_rule("d1", "mine.example"), dns_rule("d2", "taken.example")),
        ),
        AppConfig(traffic_rules=(traffic_rule("t2"), traffic_rule("t2", priority=3))),
        AppConfig(dns_rules=(dns_rule("d1"), dns_rule("d1"))),
        AppConfig(services=(service("x", ser_id="s1"), service("y", ser_id="s1"))),
        AppConfig(traffic_rules=(traffic_rule("t2"),), services=(service("x", ser_id=taken),)),
    ]
    errors: list[tuple[str, str | None]] = []
    for config in refused:
        with pytest.raises((Conflict, InvalidInput)) as info:
            await store.replace_app_config("a", config, generation=1)
        errors.append((type(info.value).__name__, info.value.field))
    assert errors == [
        ("Conflict", "domainName"),
        ("InvalidInput", "trafficRuleId"),
        ("InvalidInput", "dnsRuleId"),
        ("InvalidInput", "serInstanceId"),
        ("Conflict", "serInstanceId"),
    ]
    assert state_of(store) == before
    assert drain(queue) == []


# -- deleting an app ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delete_app_cascades(store: Store) -> None:
    for a in ("app1", "app2"):
        await store.create_app(app(a))
    await store.put_traffic_rule("app1", traffic_rule("t1"))
    await store.put_traffic_rule("app1", traffic_rule("t2"))
    await store.put_dns_rule("app1", dns_rule("d1", "gone.example"))
    svc = await store.put_service("app1", service())
    sub = await store.create_subscription("app1", SubscriptionKind.APP_TERMINATION, subscription_body())
    survivor = await store.put_traffic_rule("app2", traffic_rule("t1"))
    queue = store.subscribe()

    await store.delete_app("app1")
    rev = store.revision
    ser_id = svc.service.serInstanceId
    assert ser_id is not None
    assert drain(queue) == [
        (rev, "traffic_rule", "delete", "app1", "t1"),
        (rev, "traffic_rule", "delete", "app1", "t2"),
        (rev, "dns_rule", "delete", "app1", "d1"),
        (rev, "service", "delete", "app1", ser_id),
        (rev, "subscription", "delete", "app1", sub.subscription_id),
        (rev, "app", "delete", "app1", "app1"),
    ]
    with pytest.raises(NotFound):
        store.get_app("app1")
    with pytest.raises(NotFound):
        store.get_service(ser_id)
    assert store.list_services() == [] and store.list_subscriptions() == []
    snap = store.snapshot()
    assert list(snap.apps) == ["app2"] and snap.traffic_rules == (survivor,) and snap.dns_rules == ()
    with pytest.raises(NotFound):
        await store.delete_app("app1")
    # The name is free again, for an app with nothing.
    await store.create_app(app("app1"))
    assert store.list_traffic_rules("app1") == []
    await store.put_dns_rule("app2", dns_rule("d1", "gone.example"))


# -- events -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_events_one_per_change_in_revision_order(store: Store) -> None:
    early = store.subscribe()
    await store.create_app(app())
    late = store.subscribe()
    await store.put_traffic_rule("app1", traffic_rule("t1"))
    await store.transition_app("app1", LifecycleEvent.INSTANTIATE)
    # Reads, refused writes and no-ops emit nothing.
    store.list_apps()
    store.snapshot()
    with pytest.raises(NotFound):
        await store.delete_traffic_rule("app1", "zz")
    with pytest.raises(InvalidTransition):
        await store.transition_app("app1", LifecycleEvent.START)
    await store.replace_app_config("app1", AppConfig(traffic_rules=(traffic_rule("t1"),)), generation=0)
    await store.delete_traffic_rule("app1", "t1")

    expected = [
        (1, "app", "put", "app1", "app1"),
        (2, "traffic_rule", "put", "app1", "t1"),
        (3, "app", "put", "app1", "app1"),
        (4, "traffic_rule", "delete", "app1", "t1"),
    ]
    assert drain(early) == expected
    assert drain(late) == expected[1:]

    store.unsubscribe(late)
    store.unsubscribe(late)  # harmless
    await store.create_app(app("app2"))
    assert drain(late) == [] and drain(early) == [(5, "app", "put", "app2", "app2")]
    event = StoreEvent(revision=5, kind=EventKind.TRAFFIC_RULE, op=EventOp.PUT, app_instance_id="a", key="k")
    assert event.affects_dataplane


@pytest.mark.asyncio
async def test_closed_store_sends_no_events_and_refuses_reads(store_factory: StoreFactory) -> None:
    store = store_factory()
    with pytest.raises(StoreUnavailable):
        store.list_apps()
    await store.open()
    queue = store.subscribe()
    await store.create_app(app())
    await store.close()
    with pytest.raises(StoreUnavailable):
        store.get_app("app1")
    with pytest.raises(StoreUnavailable):
        await store.create_app(app("app2"))
    assert drain(queue) == [(1, "app", "put", "app1", "app1")]


@pytest.mark.asyncio
async def test_subscribers_before_open_see_the_loaded_state(store_factory: StoreFactory) -> None:
    first = store_factory()
    await first.open()
    await first.create_app(app())
    await first.put_traffic_rule("app1", traffic_rule("t1"))
    await first.close()
    second = store_factory()
    queue = second.subscribe()
    await second.open()
    try:
        assert drain(queue) == [(2, "app", "put", "app1", "app1"), (2, "traffic_rule", "put", "app1", "t1")]
    finally:
        await second.close()


# -- snapshots ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_snapshot_is_consistent_and_immutable(store: Store) -> None:
    empty = store.snapshot()
    assert (empty.revision, empty.apps, empty.traffic_rules, empty.dns_rules) == (0, {}, (), ())
    await store.create_app(app("b"))
    await store.create_app(app("a"))
    rb = await store.put_traffic_rule("b", traffic_rule("x", priority=3))
    ra = await store.put_traffic_rule("a", traffic_rule("y", priority=3))
    da = await store.put_dns_rule("a", dns_rule("d"))
    snap = store.snapshot()
    assert snap is store.snapshot()  # cached until the next write
    assert snap.revision == store.revision == 5
    assert snap.apps == {"a": store.get_app("a"), "b": store.get_app("b")}
    assert snap.traffic_rules == (rb, ra)  # rule-id order across apps: the priority tie-break
    assert snap.dns_rules == (da,)

    await store.delete_app("b")
    assert snap.traffic_rules == (rb, ra) and snap.revision == 5  # the old snapshot does not move
    after = store.snapshot()
    assert after.revision == 6 and after.traffic_rules == (ra,) and "b" not in after.apps
    with pytest.raises(ValidationError):
        after.revision = 1  # type: ignore[misc]


# -- durability ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_state_survives_close_and_reopen(store_factory: StoreFactory) -> None:
    store = store_factory()
    await store.open()
    await store.create_app(app("a", confirm_ready_required=False))
    await store.transition_app("a", LifecycleEvent.INSTANTIATE)
    await store.put_traffic_rule("a", traffic_rule("t1"))
    await store.put_dns_rule("a", dns_rule("d1", "a.example", ip="2001:db8::7"))
    await store.put_service("a", service("location"))
    await store.create_subscription("a", SubscriptionKind.APP_TERMINATION, subscription_body())
    await store.create_app(app("b/with:odd id%"))
    await store.replace_app_config("b/with:odd id%", AppConfig(traffic_rules=(traffic_rule("t1"),)), generation=4)
    await store.delete_traffic_rule("a", "t1")
    before = state_of(store)
    await store.close()

    reopened = store_factory()
    await reopened.open()
    try:
        assert state_of(reopened) == before
        assert reopened.get_app("a").state is AppState.READY
        rule = await reopened.put_traffic_rule("a", traffic_rule("t2"))
        assert rule.revision == before["revision"] + 1
    finally:
        await reopened.close()


def test_open_store_builds_the_configured_backend(tmp_path: Path) -> None:
    sqlite = open_store(StoreConfig(sqlite=SqliteConfig(path=tmp_path / "x.db")))
    assert isinstance(sqlite, SqliteStore)
    etcd = open_store(StoreConfig(backend="etcd", etcd=EtcdConfig(endpoints=["127.0.0.1:1"], prefix="/p/")))
    assert isinstance(etcd, EtcdStore)
    assert not (tmp_path / "x.db").exists()  # not opened


def test_state_package_exports() -> None:
    for name in mep.state.__all__:
        assert getattr(mep.state, name) is not None, name
    assert {"Store", "SqliteStore", "EtcdStore", "open_store", "AppState", "LifecycleEvent"} <= set(mep.state.__all__)


# -- SQLite ----------------------------------------------------------------------------------

_WRITER = """
import asyncio, sys
from mep.models import TrafficRule
from mep.state import AppInstance, SqliteStore

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    await store.open()
    await store.create_app(AppInstance(appInstanceId="app1"))
    for i in range(100_000):
        rule = TrafficRule.model_validate({
            "trafficRuleId": f"r{i}", "filterType": "FLOW", "priority": 1,
            "trafficFilter": [{"dstPort": [str(i % 65536)]}], "action": "DROP", "state": "ACTIVE"})
        stored = await store.put_traffic_rule("app1", rule)
        print(stored.revision, flush=True)

asyncio.run(main())
"""


@pytest.mark.asyncio
async def test_sqlite_survives_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "mep.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        acknowledged = 0
        while acknowledged < 200:
            line = child.stdout.readline()
            assert line, child.stderr.read().decode() if child.stderr else "writer died"
            acknowledged = int(line)
        # Killed mid-stream: writes after `acknowledged` may or may not have committed.
        assert Path(f"{path}-wal").exists()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    store = SqliteStore(path)
    await store.open()
    try:
        assert store.revision >= acknowledged
        rules = store.list_traffic_rules("app1")
        # Every acknowledged write is there, and nothing half-written is.
        assert len(rules) == store.revision - 1
        assert [r.rule.trafficRuleId for r in rules] == [f"r{i}" for i in range(len(rules))]
        assert [r.rule_id for r in rules] == list(range(1, len(rules) + 1))
        assert (await store.put_traffic_rule("app1", traffic_rule("after"))).rule_id == len(rules) + 1
    finally:
        await store.close()


@pytest.fixture
def synced_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SqliteStore, list[int], threading.Event]:
    """An unopened SqliteStore; for each WAL sync it makes (the real fdatasync runs), the store
    revision when that sync started: every commit up to it is on disk once the sync ends; and a
    gate each sync waits at (open: clear it to hold the syncs)."""
    store = SqliteStore(tmp_path / "mep.db")
    syncs: list[int] = []
    gate = threading.Event()
    gate.set()
    real = os.fdatasync

    def counted(fd: int) -> None:
        covered = store.revision
        gate.wait(10)
        real(fd)
        syncs.append(covered)

    monkeypatch.setattr(mep.state.sqlite.os, "fdatasync", counted)
    return store, syncs, gate


@pytest.mark.asyncio
async def test_sqlite_concurrent_writes_share_a_sync_and_each_returns_after_it(
    tmp_path: Path, synced_sqlite: tuple[SqliteStore, list[int], threading.Event]
) -> None:
    store, syncs, _ = synced_sqlite
    await store.open()
    try:
        await store.create_app(app())
        assert syncs == [1]
        written: list[int] = []

        async def write(i: int) -> None:
            stored = await store.put_traffic_rule("app1", traffic_rule(f"r{i}"))
            assert syncs and syncs[-1] >= stored.revision  # returned after a sync that covers it
            written.append(stored.revision)

        await asyncio.gather(*(write(i) for i in range(20)))
        assert sorted(written) == list(range(2, 22))
        assert 1 < len(syncs) < 21, syncs  # batched: fewer syncs than writes
        # A write that changes nothing has nothing to sync.
        before = len(syncs)
        assert await store.clear_app("app1", [EventKind.SERVICE]) == 0
        assert len(syncs) == before
    finally:
        await store.close()
    reopened = SqliteStore(tmp_path / "mep.db")
    await reopened.open()
    try:
        assert len(reopened.list_traffic_rules("app1")) == 20
    finally:
        await reopened.close()


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    assert condition()


@pytest.mark.asyncio
async def test_sqlite_writer_cancelled_after_its_commit_still_syncs_it(
    synced_sqlite: tuple[SqliteStore, list[int], threading.Event]
) -> None:
    store, syncs, _ = synced_sqlite
    await store.open()
    try:
        await store.create_app(app())
        writer = asyncio.create_task(store.put_traffic_rule("app1", traffic_rule("r1")))
        while store.revision < 2:  # committed, now yielding before its sync
            await asyncio.sleep(0)
        assert syncs == [1]
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        # No other write comes to sync it: the commit of the cancelled writer is synced all the same.
        await _until(lambda: syncs == [1, 2])
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_sqlite_commits_made_during_a_sync_get_the_next_one_even_with_no_writer_left(
    synced_sqlite: tuple[SqliteStore, list[int], threading.Event]
) -> None:
    store, syncs, gate = synced_sqlite
    await store.open()
    try:
        await store.create_app(app())
        gate.clear()
        first = asyncio.create_task(store.put_traffic_rule("app1", traffic_rule("r1")))
        await _until(lambda: store.revision == 2)  # committed; its sync is held in the wal-sync thread
        second = asyncio.create_task(store.put_traffic_rule("app1", traffic_rule("r2")))
        await _until(lambda: store.revision == 3)  # committed during that sync, so not covered by it
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        gate.set()
        assert (await first).revision == 2
        await _until(lambda: syncs == [1, 2, 3])
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_sqlite_failed_sync_leaves_the_store_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path / "mep.db")
    await store.open()
    try:
        await store.create_app(app())

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(mep.state.sqlite.os, "fdatasync", failing)
        with pytest.raises(StoreUnavailable) as info:
            await store.put_traffic_rule("app1", traffic_rule("r1"))
        assert "fsync failed" in info.value.detail and info.value.field == "store.sqlite.path"
        monkeypatch.undo()
        # The page cache can no longer be trusted: later writes are refused until the store is opened again.
        with pytest.raises(StoreUnavailable):
            await store.put_traffic_rule("app1", traffic_rule("r2"))
    finally:
        await store.close()


@pytest.mark.asyncio
async def test_sqlite_has_one_owner(tmp_path: Path) -> None:
    path = tmp_path / "mep.db"
    owner = SqliteStore(path)
    await owner.open()
    try:
        await owner.create_app(app())
        intruder = SqliteStore(path)
        with pytest.raises(StoreUnavailable) as info:
            await intruder.open()
        assert str(path) in info.value.detail and "locked" in info.value.detail
    finally:
        await owner.close()
    successor = SqliteStore(path)
    await successor.open()
    try:
        assert successor.get_app("app1").appInstanceId == "app1"
    finally:
        await successor.close()


@pytest.mark.asyncio
async def test_sqlite_unusable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable) as info:
        await SqliteStore(tmp_path / "file" / "mep.db").open()
    assert info.value.field == "store.sqlite.path" and str(tmp_path / "file") in info.value.detail
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable):
        await SqliteStore(tmp_path / "garbage.db").open()


# -- etcd ---------------------------------------------------------------------------------------


@pytest.fixture
def etcd_prefix(etcd_endpoint: str) -> Iterator[str]:
    prefix = f"/mep-test/{uuid.uuid4().hex}/"
    yield prefix
    delete_prefix(etcd_endpoint, prefix)


@pytest.mark.needs_etcd
@pytest.mark.asyncio
async def test_etcd_second_store_follows_through_the_watch(etcd_endpoint: str, etcd_prefix: str) -> None:
    one = EtcdStore([etcd_endpoint], etcd_prefix)
    two = EtcdStore([etcd_endpoint], etcd_prefix)
    await one.open()
    await two.open()
    try:
        seen = two.subscribe()
        await one.create_app(app("a"))
        await one.put_traffic_rule("a", traffic_rule("t1"))
        await one.put_dns_rule("a", dns_rule("d1", "a.example"))
        await until(lambda: two.revision == one.revision)
        assert state_of(two) == state_of(one)
        assert drain(seen) == [
            (1, "app", "put", "a", "a"),
            (2, "traffic_rule", "put", "a", "t1"),
            (3, "dns_rule", "put", "a", "d1"),
        ]

        # The second store writes too, and validates against the first one's writes
        # even when its view has not caught up yet (its transaction's compare fails).
        await two.create_app(app("b"))
        await one.put_dns_rule("a", dns_rule("d2", "b.example"))
        with pytest.raises(Conflict) as info:
            await two.put_dns_rule("b", dns_rule("d1", "b.example"))
        assert "app instance 'a'" in info.value.detail
        await until(lambda: one.revision == two.revision)

        # Interleaved writers: nothing lost, no rule id handed out twice.
        await asyncio.gather(
            *(one.put_traffic_rule("a", traffic_rule(f"one{i}")) for i in range(10)),
            *(two.put_traffic_rule("b", traffic_rule(f"two{i}")) for i in range(10)),
        )
        await until(lambda: one.revision == two.revision)
        assert state_of(one) == state_of(two)
        ids = [r.rule_id for r in one.snapshot().traffic_rules]
        assert len(ids) == 21 and len(set(ids)) == 21
        await one.delete_app("a")
        await until(lambda: two.revision == one.revision)
        assert [a.appInstanceId for a in two.list_apps()] == ["b"]
    finally:
        await one.close()
        await two.close()


@pytest.mark.needs_etcd
@pytest.mark.asyncio
async def test_etcd_resyncs_after_a_foreign_write(etcd_endpoint: str, etcd_prefix: str) -> None:
    one = EtcdStore([etcd_endpoint], etcd_prefix)
    two = EtcdStore([etcd_endpoint], etcd_prefix)
    await one.open()
    await two.open()
    try:
        await one.create_app(app("a"))
        # A key no store wrote: the watch cannot take it as a transaction, so
        # the second store reloads the prefix (ignoring the key) and watches on.
        put_key(etcd_endpoint, f"{etcd_prefix}operator-note", b"hello")
        await one.put_traffic_rule("a", traffic_rule("t1"))
        await until(lambda: two.revision == one.revision)
        await one.put_traffic_rule("a", traffic_rule("t2"))
        await until(lambda: two.revision == one.revision)
        assert state_of(two) == state_of(one)
        assert (await two.put_traffic_rule("a", traffic_rule("t3"))).rule_id == 3
    finally:
        await one.close()
        await two.close()


@pytest.mark.needs_etcd
@pytest.mark.asyncio
async def test_etcd_unreachable_endpoint_is_unavailable() -> None:
    dead = f"127.0.0.1:{free_port()}"
    store = EtcdStore([dead], "/mep/", timeout_s=2.0)
    with pytest.raises(StoreUnavailable) as info:
        await store.open()
    assert dead in info.value.detail and info.value.field == "store.etcd.endpoints"
    await store.close()


@pytest.mark.needs_etcd
@pytest.mark.asyncio
async def test_etcd_falls_back_to_the_next_endpoint(etcd_endpoint: str, etcd_prefix: str) -> None:
    store = EtcdStore([f"127.0.0.1:{free_port()}", etcd_endpoint], etcd_prefix)
    await store.open()
    try:
        await store.create_app(app())
        assert store.get_app("app1").revision == 1
    finally:
        await store.close()


@pytest.mark.needs_etcd
@pytest.mark.asyncio
async def test_etcd_restart_is_survived() -> None:
    server = EtcdServer(etcd_binary())
    try:
        server.start()
        one = EtcdStore([server.endpoint], "/mep/", timeout_s=2.0)
        await one.open()
        await one.create_app(app("a"))
        server.stop()
        with pytest.raises(StoreUnavailable) as info:
            await one.put_traffic_rule("a", traffic_rule("t1"))
        assert server.endpoint in info.value.detail
        server.start()
        # A second process writes while the first one's watch is down; the
        # first reloads, catches up and emits the change as events.
        queue = one.subscribe()
        two = EtcdStore([server.endpoint], "/mep/")
        await two.open()
        await two.put_traffic_rule("a", traffic_rule("t2"))
        await until(lambda: one.revision == two.revision, timeout_s=30)
        assert state_of(one) == state_of(two)
        assert ("traffic_rule", "put", "a", "t2") in [e[1:] for e in drain(queue)]
        assert (await one.put_traffic_rule("a", traffic_rule("t3"))).rule_id == 2
        await two.close()
        await one.close()
    finally:
        server.remove()


# -- differential: both backends, and an etcd observer, behave the same ----------------------------

APPS = ("a", "b")
RULE_IDS = ("r1", "r2", "r3")
DNS_NAMES = ("x.example", "X.Example.", "y.example")
SER_NAMES = ("loc", "rnis")

ops = st.one_of(
    st.tuples(st.just("create_app"), st.sampled_from(APPS), st.booleans()),
    st.tuples(st.just("delete_app"), st.sampled_from(APPS)),
    st.tuples(st.just("transition"), st.sampled_from(APPS), st.sampled_from(list(LifecycleEvent))),
    st.tuples(
        st.just("put_traffic_rule"),
        st.sampled_from(APPS),
        st.sampled_from(RULE_IDS),
        st.integers(0, 3),
        st.sampled_from(["ACTIVE", "INACTIVE"]),
        st.one_of(st.none(), st.integers(0, 12)),
    ),
    st.tuples(st.just("delete_traffic_rule"), st.sampled_from(APPS), st.sampled_from(RULE_IDS)),
    st.tuples(
        st.just("put_dns_rule"),
        st.sampled_from(APPS),
        st.sampled_from(RULE_IDS),
        st.sampled_from(DNS_NAMES),
        st.sampled_from(["ACTIVE", "INACTIVE"]),
    ),
    st.tuples(st.just("delete_dns_rule"), st.sampled_from(APPS), st.sampled_from(RULE_IDS)),
    st.tuples(
        st.just("put_service"),
        st.sampled_from(APPS),
        st.one_of(st.none(), st.integers(0, 3)),
        st.sampled_from(SER_NAMES),
    ),
    st.tuples(st.just("delete_service"), st.sampled_from(APPS), st.integers(0, 3)),
    st.tuples(st.just("subscribe"), st.sampled_from(APPS), st.sampled_from(list(SubscriptionKind))),
    st.tuples(st.just("delete_subscription"), st.sampled_from(APPS), st.integers(0, 3)),
    st.tuples(
        st.just("replace_app_config"),
        st.sampled_from(APPS),
        st.integers(0, 3),
        st.lists(st.sampled_from(RULE_IDS), unique=True, max_size=3),
        st.lists(st.sampled_from(DNS_NAMES), max_size=2),
        st.lists(st.sampled_from(SER_NAMES), unique=True, max_size=2),
    ),
    st.tuples(st.just("reopen")),
)


class Driver:
    """One store under test, with the ids it assigned named by creation order (they differ per store)."""

    def __init__(self, factory: Callable[[], Store]) -> None:
        self.factory = factory
        self.store = factory()
        self.ids: dict[str, str] = {}  # assigned uuid -> "service#k" / "subscription#k"
        self.services: list[str] = []
        self.subscriptions: list[str] = []
        self.events: list[tuple[int, str, str, str, str]] = []
        self.queue: asyncio.Queue[StoreEvent] | None = None

    async def open(self) -> None:
        await self.store.open()
        self.queue = self.store.subscribe()

    async def close(self) -> None:
        self.collect()
        await self.store.close()

    def collect(self) -> None:
        assert self.queue is not None
        self.events.extend(drain(self.queue))

    def name(self, kind: str, assigned: str) -> None:
        if assigned not in self.ids:
            created = self.services if kind == "service" else self.subscriptions
            self.ids[assigned] = f"{kind}#{len(created)}"
            created.append(assigned)

    def normal(self, value: Any) -> Any:
        """``value`` with assigned ids replaced by their names and wall-clock times dropped."""
        if isinstance(value, dict):
            return {k: self.normal(v) for k, v in value.items() if k not in ("created_at", "updated_at")}
        if isinstance(value, (list, tuple)):
            return [self.normal(v) for v in value]
        if isinstance(value, str):
            return self.ids.get(value, value)
        return value

    async def run(self, op: tuple[Any, ...]) -> Any:
        """Apply one operation; its outcome in comparable form."""
        if op[0] == "reopen":
            await self.close()
            self.store = self.factory()
            await self.open()
            return None
        try:
            result = await self._call(self.store, op)
        except (NotFound, Conflict, PreconditionFailed, InvalidInput) as exc:
            return ("error", type(exc).__name__, exc.field)
        if op[0] == "put_service":
            self.name("service", result.service.serInstanceId or "")
        elif op[0] == "subscribe":
            self.name("subscription", result.subscription_id)
        elif op[0] == "replace_app_config":
            for stored in sorted(self.store.list_services(op[1]), key=lambda s: s.service.serName):
                self.name("service", stored.service.serInstanceId or "")
        return self.normal(result.model_dump(mode="json") if result is not None else None)

    async def _call(self, store: Store, op: tuple[Any, ...]) -> Any:
        match op:
            case ("create_app", app_id, confirm):
                return await store.create_app(app(app_id, confirm_ready_required=confirm))
            case ("delete_app", app_id):
                return await store.delete_app(app_id)
            case ("transition", app_id, event):
                return await store.transition_app(app_id, event)
            case ("put_traffic_rule", app_id, rule_id, priority, state, expected):
                return await store.put_traffic_rule(
                    app_id, traffic_rule(rule_id, priority=priority, state=state), expected_revision=expected
                )
            case ("delete_traffic_rule", app_id, rule_id):
                return await store.delete_traffic_rule(app_id, rule_id)
            case ("put_dns_rule", app_id, rule_id, name, state):
                return await store.put_dns_rule(app_id, dns_rule(rule_id, name, state=state))
            case ("delete_dns_rule", app_id, rule_id):
                return await store.delete_dns_rule(app_id, rule_id)
            case ("put_service", app_id, index, ser_name):
                return await store.put_service(app_id, service(ser_name, ser_id=self._ref(self.services, index)))
            case ("delete_service", app_id, index):
                return await store.delete_service(app_id, self._ref(self.services, index) or "none")
            case ("subscribe", app_id, kind):
                body: dict[str, object] = {"callbackReference": f"http://198.18.3.1/{app_id}"}
                return await store.create_subscription(app_id, kind, body)
            case ("delete_subscription", app_id, index):
                return await store.delete_subscription(app_id, self._ref(self.subscriptions, index) or "none")
            case ("replace_app_config", app_id, generation, rule_ids, names, ser_names):
                config = AppConfig(
                    traffic_rules=tuple(traffic_rule(r) for r in rule_ids),
                    dns_rules=tuple(dns_rule(f"d{i}", n) for i, n in enumerate(names)),
                    services=tuple(service(n) for n in ser_names),
                )
                return await store.replace_app_config(app_id, config, generation=generation)
        raise AssertionError(op)

    @staticmethod
    def _ref(created: list[str], index: int | None) -> str | None:
        if index is None:
            return None
        return created[index] if index < len(created) else f"unknown-{index}"

    def observable(self) -> Any:
        """The store's state with this driver's names; services and subscriptions (listed by
        their random ids) in a stable order."""
        state = self.normal(state_of(self.store))
        for key in ("services", "subscriptions"):
            state[key].sort(key=lambda record: json.dumps(record, sort_keys=True))
        return state

    def normal_events(self) -> list[Any]:
        """The events with this driver's names, sorted within each revision (keys are random ids)."""
        revisions = [e[0] for e in self.events]
        assert revisions == sorted(revisions)
        return sorted(self.normal(self.events))


async def _differential(sequence: list[tuple[Any, ...]], endpoint: str, directory: str) -> None:
    prefix = f"/mep-test/{uuid.uuid4().hex}/"
    sqlite = Driver(lambda: SqliteStore(Path(directory) / "mep.db"))
    etcd = Driver(lambda: EtcdStore([endpoint], prefix))
    observer = Driver(lambda: EtcdStore([endpoint], prefix))
    for driver in (sqlite, etcd, observer):
        await driver.open()
    try:
        for op in sequence:
            outcome = await sqlite.run(op)
            assert await etcd.run(op) == outcome, op
        for driver in (sqlite, etcd):
            driver.collect()
        await until(lambda: observer.store.revision == etcd.store.revision)
        observer.collect()
        assert sqlite.observable() == etcd.observable()
        assert sqlite.normal_events() == etcd.normal_events()
        # The observer saw every write through the watch, as the same events.
        assert state_of(observer.store) == state_of(etcd.store)
        assert observer.events == etcd.events
        # What each backend persisted is exactly what its view held.
        for driver in (sqlite, etcd):
            before = state_of(driver.store)
            await driver.close()
            driver.store = driver.factory()
            await driver.open()
            assert state_of(driver.store) == before
    finally:
        for driver in (sqlite, etcd, observer):
            await driver.close()
        delete_prefix(endpoint, prefix)


# Both apps exist at the start, so most operations have something to act on.
PROLOGUE: list[tuple[Any, ...]] = [("create_app", "a", True), ("create_app", "b", False)]


@pytest.mark.needs_etcd
@settings(max_examples=50, deadline=None)
@given(sequence=st.lists(ops, min_size=5, max_size=40))
def test_backends_are_indistinguishable(etcd_endpoint: str, sequence: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="mep-test-store-") as directory:
        asyncio.run(_differential(PROLOGUE + sequence, etcd_endpoint, directory))


@pytest.mark.asyncio
async def test_app_credentials_are_stored_and_client_ids_unique(store: Store) -> None:
    from mep.errors import Conflict

    await store.create_app(AppInstance(appInstanceId="cred-a"))
    await store.create_app(AppInstance(appInstanceId="cred-b"))
    app = await store.set_app_credentials("cred-a", "client-a", "hash-a")
    assert (app.client_id, app.client_secret_hash) == ("client-a", "hash-a")
    assert store.get_app("cred-a").client_id == "client-a"
    with pytest.raises(Conflict, match="client-a"):
        await store.set_app_credentials("cred-b", "client-a", "hash-b")


# -- Mm5: credentials and required services in a configuration, reset_app_config, tasks -------------


@pytest.mark.asyncio
async def test_replace_app_config_carries_credentials_and_required_services(store: Store) -> None:
    from mep.models import ServiceDependency
    from mep.state import AppCredentials

    await store.create_app(app("a"))
    await store.create_app(app("b"))
    rnis = ServiceDependency.model_validate({"serName": "rnis", "version": "2.1.1"})
    config = AppConfig(
        traffic_rules=(traffic_rule("t1"),),
        required_services=(rnis,),
        credentials=AppCredentials(client_id="a.1", client_secret_hash="h1"),
    )
    result = await store.replace_app_config("a", config, generation=1)
    assert (result.client_id, result.client_secret_hash, result.required_services) == ("a.1", "h1", (rnis,))
    # Identical again: a no-op; credentials None keeps them.
    assert await store.replace_app_config("a", config, generation=1) == result
    kept = await store.replace_app_config("a", config.model_copy(update={"credentials": None}), generation=2)
    assert kept.client_id == "a.1"
    with pytest.raises(PreconditionFailed, match="different configuration"):
        await store.replace_app_config("a", config.model_copy(update={"required_services": ()}), generation=2)
    with pytest.raises(Conflict) as info:
        await store.replace_app_config("b", config, generation=1)
    assert info.value.field == "client_id" and store.get_app("b").config_generation == 0


@pytest.mark.asyncio
async def test_a_config_service_without_id_takes_the_first_written_of_its_name(store: Store) -> None:
    """Of two services of one name, a configuration naming it keeps the one written first, whatever their
    ids (the ids are random: ordered by id, the backends kept different ones)."""
    await store.create_app(app())


    async def put_loc(lo: str, hi: str) -> str:
        """A new service named loc whose (random) id sorts between ``lo`` and ``hi``."""
        for _ in range(40):  # half of the ids or more qualify each time
            ser_id = (await store.put_service("app1", service("loc"))).service.serInstanceId
            assert ser_id is not None
            if lo <= ser_id < hi:
                return ser_id
            await store.delete_service("app1", ser_id)
        raise AssertionError(f"40 random ids, none in [{lo}, {hi})")

    first = await put_loc("8", "g")  # in the upper half, so that the second can sort before it
    second = await put_loc("", first)
    assert sorted(s.service.serInstanceId or "" for s in store.list_services("app1")) == [second, first]
    await store.replace_app_config("app1", AppConfig(services=(service("loc"),)), generation=1)
    assert [s.service.serInstanceId for s in store.list_services("app1")] == [first]


@pytest.mark.asyncio
async def test_reset_app_config_goes_back_a_generation(store: Store) -> None:
    await store.create_app(app())
    v1 = AppConfig(traffic_rules=(traffic_rule("keep"), traffic_rule("gone")))
    await store.replace_app_config("app1", v1, generation=1)
    ids = {r.rule.trafficRuleId: r.rule_id for r in store.list_traffic_rules("app1")}
    await store.replace_app_config("app1", AppConfig(traffic_rules=(traffic_rule("keep", priority=7),)), generation=2)
    queue = store.subscribe()

    with pytest.raises(PreconditionFailed, match="not at the expected generation 1") as info:
        await store.reset_app_config("app1", v1, generation=1, expected_generation=1)
    assert info.value.field == "generation" and drain(queue) == []
    reset = await store.reset_app_config("app1", v1, generation=1, expected_generation=2)

    assert reset.config_generation == 1 and reset.revision == store.revision
    rules = {r.rule.trafficRuleId: r for r in store.list_traffic_rules("app1")}
    assert rules["keep"].rule == traffic_rule("keep") and rules["keep"].rule_id == ids["keep"]
    assert rules["gone"].rule_id > max(ids.values())  # a deleted rule's id is never handed out again
    assert [e[1:4] for e in drain(queue)] == [
        ("app", "put", "app1"), ("traffic_rule", "put", "app1"), ("traffic_rule", "put", "app1"),
    ]
    # Nothing to change: a no-op.
    assert await store.reset_app_config("app1", v1, generation=1, expected_generation=1) == reset
    assert drain(queue) == []
    await store.replace_app_config("app1", v1, generation=2)  # generation 2 may name a new configuration now


def task(task_id: str, seq: int, state: Any, *, generation: int = 1) -> Any:
    from mep.state import StoredTask

    return StoredTask(task_id=task_id, app_instance_id="app1", seq=seq, generation=generation, digest="d",
                      state=state)


@pytest.mark.asyncio
async def test_tasks_are_stored_with_their_history_and_bounded(store: Store, store_factory: StoreFactory) -> None:
    from mep.state import MAX_TASKS_PER_APP, TaskState

    await store.create_app(app())
    queue = store.subscribe()
    first = await store.put_task(task("t1", 1, TaskState.PENDING))
    assert first.revision == store.revision and [s for s, _ in first.history] == [TaskState.PENDING]
    applying = await store.put_task(first.model_copy(update={"state": TaskState.APPLYING}))
    same = await store.put_task(applying.model_copy(update={"detail": "x"}))  # no state change: no new entry
    assert [s for s, _ in same.history] == [TaskState.PENDING, TaskState.APPLYING]
    assert drain(queue) == [(r, "task", "put", "app1", "t1") for r in range(first.revision, same.revision + 1)]
    assert store.get_task("t1") == same and store.list_tasks("app1") == [same]
    assert not store.snapshot().model_dump()["traffic_rules"]  # tasks are not part of what the compiler reads
    with pytest.raises(NotFound) as info:
        store.get_task("nope")
    assert info.value.field == "taskId"
    with pytest.raises(NotFound):
        await store.put_task(task("t1", 1, TaskState.PENDING).model_copy(update={"app_instance_id": "x"}))

    # The oldest finished tasks go beyond the bound; the newest ACTIVE one stays whatever its age.
    await store.put_task(same.model_copy(update={"state": TaskState.ACTIVE}))
    for seq in range(2, MAX_TASKS_PER_APP + 4):
        await store.put_task(task(f"t{seq}", seq, TaskState.REVERTED, generation=seq))
    kept = [t.task_id for t in store.list_tasks("app1")]
    assert len(kept) == MAX_TASKS_PER_APP and kept[0] == "t1" and "t2" not in kept and kept[-1] == f"t{seq}"

    # Reopened, the tasks are all there; deleting the app deletes them.
    await store.close()
    reopened = store_factory()
    await reopened.open()
    try:
        assert [t.task_id for t in reopened.list_tasks("app1")] == kept
        await reopened.delete_app("app1")
        with pytest.raises(NotFound):
            reopened.get_task("t1")
    finally:
        await reopened.close()
