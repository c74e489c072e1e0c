"""The data plane follows the lifecycle: confirm_ready enforces, termination notifies, waits, then removes.

Each test drives a real daemon; callbacks go to a real HTTP server on
loopback and termination is started the way the operator starts it (the
admin API's POST /apps/ID/terminate) or MEPM does (the store transition Mm5
writes).
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from mep.admin import AdminClient
from mep.errors import InvalidTransition, MepError
from mep.models import AppTerminationNotification, ServiceAvailabilityNotification
from mep.mp1 import AppSupport
from mep.state import AppState, EventKind, EventOp, LifecycleEvent, StoreEvent, SubscriptionKind
from tests.mp1.conftest import (
    APP,
    AS,
    OTHER,
    SM,
    Callbacks,
    Platform,
    dns_rule,
    service_info,
    start_platform,
    traffic_rule,
    until,
)
from tests.mp1.test_mp1_app_support import problem, verdict

pytestmark = pytest.mark.asyncio


async def subscribe_termination(p: Platform, callbacks: Callbacks, app: str = APP) -> str:
    body = {"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": f"{callbacks.url}/{app}",
            "appInstanceId": app}
    resp = await p.client.post(f"{AS}/applications/{app}/subscriptions", json=body, headers=p.auth(app))
    assert resp.status == 201, await resp.text()
    return resp.headers["Location"]


async def subscribe_services(p: Platform, callbacks: Callbacks, app: str, criteria: dict[str, Any] | None = None,
                             tag: str = "svc") -> str:
    body: dict[str, Any] = {"subscriptionType": "SerAvailabilityNotificationSubscription",
                            "callbackReference": f"{callbacks.url}/{tag}"}
    if criteria is not None:
        body["filteringCriteria"] = criteria
    resp = await p.client.post(f"{SM}/applications/{app}/subscriptions", json=body, headers=p.auth(app))
    assert resp.status == 201, await resp.text()
    return resp.headers["Location"]


def drain(queue: asyncio.Queue[StoreEvent]) -> list[StoreEvent]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def terminate(p: Platform, app: str = APP) -> dict[str, Any]:
    res: dict[str, Any] = await asyncio.to_thread(p.admin.post, f"/apps/{app}/terminate", {})
    return res


async def test_termination_notifies_waits_for_confirmation_then_removes_rules_then_services(
    platform: Platform, callbacks: Callbacks
) -> None:
    await platform.add_app(confirm_ready_required=False, graceful_timeout_s=60,
                           traffic_rules=[traffic_rule("r1")], dns_rules=[dns_rule("d1")])
    await platform.add_app(OTHER, confirm_ready_required=False)
    resp = await platform.client.post(f"{SM}/applications/{APP}/services", json=service_info("video"),
                                      headers=platform.auth())
    ser_id = (await resp.json())["serInstanceId"]
    sub_href = await subscribe_termination(platform, callbacks)
    await subscribe_services(platform, callbacks, OTHER)
    await platform.settled()
    assert verdict(platform)[2] == "r1"
    queue = platform.daemon.store.subscribe()

    res = await terminate(platform)
    assert res["app"]["state"] == "TERMINATING"
    await platform.settled()
    assert verdict(platform)[:2] == ("PASS", "PASS_NO_MATCH")  # not READY: no longer enforced
    (path, body), = await callbacks.wait_for(1)
    assert path == f"/{APP}"
    notification = AppTerminationNotification.model_validate(body)
    assert notification.operationAction.value == "TERMINATING" and 0 < notification.maxGracefulTimeout <= 60
    assert notification.links.subscription.href == sub_href
    confirm = notification.links.confirmTermination
    assert confirm is not None and confirm.href == sub_href.rsplit("/subscriptions/", 1)[0] + "/confirm_termination"
    # Waiting for the app: still TERMINATING, rules and services still stored.
    assert platform.daemon.store.get_app(APP).state is AppState.TERMINATING
    assert platform.daemon.store.list_traffic_rules(APP) and platform.daemon.store.list_services(APP)

    confirm_url = URL(confirm.href)
    assert str(confirm_url.origin()) == str(platform.client.make_url("/").origin())  # the link works as given
    wrong = await platform.client.post(confirm_url.path, json={"operationAction": "STOPPING"}, headers=platform.auth())
    assert (await problem(wrong, 409))["field"] == "operationAction"
    resp = await platform.client.post(confirm_url.path, json={"operationAction": "TERMINATING"}, headers=platform.auth())
    assert resp.status == 204

    store = platform.daemon.store
    await until(lambda: store.get_app(APP).state is AppState.TERMINATED and not store.list_services(APP))
    assert store.list_traffic_rules(APP) == [] and store.list_dns_rules(APP) == []
    assert len(store.list_subscriptions(APP)) == 1  # stays until the app is deleted
    steps = [(e.kind, e.op, e.key, e.revision) for e in drain(queue) if e.app_instance_id == APP]
    kinds = [(k, op, key) for k, op, key, _ in steps]
    assert kinds == [
        (EventKind.APP, EventOp.PUT, APP),  # TERMINATING
        (EventKind.APP, EventOp.PUT, APP),  # TERMINATED (confirm_termination)
        (EventKind.TRAFFIC_RULE, EventOp.DELETE, "r1"),
        (EventKind.DNS_RULE, EventOp.DELETE, "d1"),
        (EventKind.SERVICE, EventOp.DELETE, ser_id),
    ]
    revisions = [r for *_, r in steps]
    assert revisions[2] == revisions[3] < revisions[4]  # rules in one write, services in the next

    # The other app hears the service go.
    received = await callbacks.wait_for(2)
    removed = ServiceAvailabilityNotification.model_validate(received[1][1])
    assert [(r.serInstanceId, r.changeType.value) for r in removed.serviceReferences] == [(ser_id, "REMOVED")]
    await until(lambda: platform.apps.notifier.pending == 0)  # the answer reached the notifier too
    deliveries = platform.apps.notifier.deliveries()
    assert {d["notification_type"] for d in deliveries if d["status"] == "delivered"} == {
        "AppTerminationNotification", "ServiceAvailabilityNotification"}


async def test_termination_ends_at_the_graceful_timeout_without_confirmation(platform: Platform, callbacks: Callbacks) -> None:
    await platform.add_app(confirm_ready_required=False, graceful_timeout_s=1, traffic_rules=[traffic_rule("r1")])
    await subscribe_termination(platform, callbacks)
    await terminate(platform)
    await callbacks.wait_for(1)
    store = platform.daemon.store
    await until(lambda: store.get_app(APP).state is AppState.TERMINATED and not store.list_traffic_rules(APP))
    # A late confirmation has nothing left to confirm.
    resp = await platform.client.post(f"{AS}/applications/{APP}/confirm_termination", headers=platform.auth())
    assert resp.status == 401  # TERMINATED: its token no longer works


async def test_termination_without_subscribers_does_not_wait(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, graceful_timeout_s=3600, traffic_rules=[traffic_rule("r1")])
    await terminate(platform)
    store = platform.daemon.store
    await until(lambda: store.get_app(APP).state is AppState.TERMINATED and not store.list_traffic_rules(APP))


async def test_termination_started_by_mepm_is_followed_too(platform: Platform, callbacks: Callbacks) -> None:
    # Mm5's TerminateAppInstance writes the transition; the app is notified all the same.
    await platform.add_app(confirm_ready_required=False, graceful_timeout_s=60, traffic_rules=[traffic_rule("r1")])
    await subscribe_termination(platform, callbacks)
    await platform.daemon.store.transition_app(APP, LifecycleEvent.TERMINATE)
    await callbacks.wait_for(1)
    resp = await platform.client.post(f"{AS}/applications/{APP}/confirm_termination", headers=platform.auth())
    assert resp.status == 204  # no body: confirms whatever is pending
    store = platform.daemon.store
    await until(lambda: store.get_app(APP).state is AppState.TERMINATED and not store.list_traffic_rules(APP))


async def test_termination_is_taken_up_again_after_a_restart(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    cb_app = web.Application()
    cb_app.router.add_post("/cb", receive)
    async with TestServer(cb_app) as cb_server:
        callback = str(cb_server.make_url("/cb"))
        daemon, server = await start_platform(tmp_path)
        try:
            admin = AdminClient(daemon.config.admin_socket)
            await asyncio.to_thread(admin.post, "/apps", {"app_instance_id": APP, "graceful_timeout_s": 120,
                                                          "confirm_ready_required": False,
                                                          "traffic_rules": [traffic_rule("r1")]})
            await daemon.store.create_subscription(
                APP, SubscriptionKind.APP_TERMINATION,
                {"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": callback,
                 "appInstanceId": APP, "_links": {"self": {"href": f"http://127.0.0.1/mec_app_support/v1/applications/{APP}/subscriptions/s1"}}},
                subscription_id="s1")
            await asyncio.to_thread(admin.post, f"/apps/{APP}/terminate", {})
            await until(lambda: len(received) == 1)
        finally:
            await daemon.close()  # mid-wait
        daemon, server = await start_platform(tmp_path)
        try:
            assert daemon.store.get_app(APP).state is AppState.TERMINATING
            await until(lambda: len(received) == 2)  # notified again: at least once
            assert received[1]["maxGracefulTimeout"] <= received[0]["maxGracefulTimeout"]
            apps = next(s for s in daemon.services if isinstance(s, AppSupport))
            apps.confirm_termination(APP, None)
            await until(lambda: daemon.store.get_app(APP).state is AppState.TERMINATED
                        and not daemon.store.list_traffic_rules(APP))
        finally:
            await daemon.close()


async def test_stop_is_followed_with_stopping_and_keeps_the_rules(platform: Platform, callbacks: Callbacks) -> None:
    await platform.add_app(confirm_ready_required=False, graceful_timeout_s=60, traffic_rules=[traffic_rule("r1")])
    await subscribe_termination(platform, callbacks)
    await platform.daemon.store.transition_app(APP, LifecycleEvent.STOP)
    (_, body), = await callbacks.wait_for(1)
    assert body["operationAction"] == "STOPPING"
    resp = await platform.client.post(f"{AS}/applications/{APP}/confirm_termination", json={"operationAction": "TERMINATING"},
                                      headers=platform.auth())
    await problem(resp, 409)
    resp = await platform.client.post(f"{AS}/applications/{APP}/confirm_termination", json={"operationAction": "STOPPING"},
                                      headers=platform.auth())
    assert resp.status == 204
    await until(lambda: platform.daemon.store.get_app(APP).state is AppState.STOPPED)
    assert [r.rule.trafficRuleId for r in platform.daemon.store.list_traffic_rules(APP)] == ["r1"]
    await platform.settled()
    assert verdict(platform)[0] == "PASS"  # STOPPED: stored, not enforced


async def test_terminate_refusals(platform: Platform) -> None:
    await platform.add_app()
    with pytest.raises(MepError, match="not found"):
        await asyncio.to_thread(platform.admin.post, "/apps/ghost/terminate", {})
    await terminate(platform)
    await until(lambda: platform.daemon.store.get_app(APP).state is AppState.TERMINATED)
    with pytest.raises(MepError, match="terminate is not allowed in state TERMINATED"):
        await asyncio.to_thread(platform.admin.post, f"/apps/{APP}/terminate", {})
    assert InvalidTransition.http_status == 409


async def test_service_notifications_honour_filtering_criteria(platform: Platform, callbacks: Callbacks) -> None:
    await platform.add_app()
    await platform.add_app(OTHER)
    await subscribe_services(platform, callbacks, OTHER, None, tag="all")
    await subscribe_services(platform, callbacks, OTHER, {"serNames": ["video"], "states": ["ACTIVE"]}, tag="active-video")
    await subscribe_services(platform, callbacks, OTHER, {"isLocal": False}, tag="remote")
    await subscribe_services(platform, callbacks, OTHER, {"serCategories": [
        {"href": "/c", "id": "cdn", "name": "cdn", "version": "1"}]}, tag="cdn")
    services = f"{SM}/applications/{APP}/services"

    def seen() -> list[tuple[str, str, str]]:
        out = []
        for path, body in callbacks.received:
            n = ServiceAvailabilityNotification.model_validate(body)
            assert n.notificationType == "SerAvailabilityNotificationSubscription"
            (ref,) = n.serviceReferences
            assert ref.link is not None and ref.link.href is not None
            assert ref.link.href.endswith(f"{SM}/services/{ref.serInstanceId}")
            out.append((path, ref.serName, ref.changeType.value))
        return sorted(out)

    resp = await platform.client.post(services, json=service_info("video", category="cdn"), headers=platform.auth())
    ser_id = (await resp.json())["serInstanceId"]
    await callbacks.wait_for(3)
    await asyncio.sleep(0.05)  # and nothing more arrives
    assert seen() == [("/active-video", "video", "ADDED"), ("/all", "video", "ADDED"), ("/cdn", "video", "ADDED")]

    callbacks.received.clear()
    inactive = {**service_info("video", state="INACTIVE", category="cdn")}
    await platform.client.put(f"{services}/{ser_id}", json=inactive, headers=platform.auth())
    await callbacks.wait_for(2)
    assert seen() == [("/all", "video", "STATE_CHANGED"), ("/cdn", "video", "STATE_CHANGED")]

    callbacks.received.clear()
    await platform.client.put(f"{services}/{ser_id}", json={**inactive, "version": "2.0"}, headers=platform.auth())
    await callbacks.wait_for(2)
    assert seen() == [("/all", "video", "ATTRIBUTES_CHANGED"), ("/cdn", "video", "ATTRIBUTES_CHANGED")]

    callbacks.received.clear()
    await platform.client.put(f"{services}/{ser_id}", json=inactive | {"version": "2.0"}, headers=platform.auth())
    await platform.client.post(services, json=service_info("audio"), headers=platform.auth())
    await callbacks.wait_for(1)
    await platform.client.delete(f"{services}/{ser_id}", headers=platform.auth())
    await callbacks.wait_for(3)
    assert seen() == [("/all", "audio", "ADDED"), ("/all", "video", "REMOVED"), ("/cdn", "video", "REMOVED")]
