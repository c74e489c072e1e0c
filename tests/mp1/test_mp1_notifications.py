"""Notification delivery: retries with backoff, bounded queue, the delivery log, and what the CLI shows."""
from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from mep import cli
from mep.config import Mp1NotificationsConfig
from mep.mp1.notify import DeliveryLog, DeliveryStatus, Notifier
from mep.state import StoredSubscription, SubscriptionKind
from tests.mp1.conftest import APP, AS, Callbacks, Platform, until

pytestmark = pytest.mark.asyncio


def subscription(callback: str, sub_id: str = "s1") -> StoredSubscription:
    return StoredSubscription(
        subscription_id=sub_id, app_instance_id=APP, kind=SubscriptionKind.APP_TERMINATION,
        body={"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": callback,
              "appInstanceId": APP, "_links": {"self": {"href": "http://198.18.0.1/s1"}}},
    )


def notifier(tmp_path: Path, **config: Any) -> Notifier:
    settings = {"timeout_s": 2.0, "max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.02, **config}
    return Notifier(Mp1NotificationsConfig(**settings), tmp_path / "deliveries.jsonl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_a_failing_callback_is_retried_until_it_answers(tmp_path: Path, callbacks: Callbacks) -> None:
    n = notifier(tmp_path)
    await n.start()
    try:
        callbacks.statuses[:] = [500, 503]
        delivery = n.send(subscription(f"{callbacks.url}/cb"), "AppTerminationNotification", {"n": 1})
        assert delivery.status is DeliveryStatus.PENDING and n.pending == 1  # returned before any POST
        await until(lambda: delivery.status is not DeliveryStatus.PENDING)
        assert (delivery.status, delivery.attempts, delivery.last_status) == (DeliveryStatus.DELIVERED, 3, 204)
        assert [body for _, body in callbacks.received] == [{"n": 1}] * 3
        assert n.outcomes[("AppTerminationNotification", "delivered")] == 1 and n.pending == 0
    finally:
        await n.stop()


async def test_attempts_are_bounded_and_a_failure_is_logged(tmp_path: Path, callbacks: Callbacks) -> None:
    n = notifier(tmp_path, max_attempts=2)
    await n.start()
    try:
        callbacks.statuses[:] = [500, 500, 500]
        failed = n.send(subscription(f"{callbacks.url}/cb"), "AppTerminationNotification", {})
        unreachable = n.send(subscription(f"http://127.0.0.1:{free_port()}/cb", "s2"), "AppTerminationNotification", {})
        await until(lambda: n.pending == 0)
        assert (failed.status, failed.attempts, failed.last_status, failed.last_error) == (
            DeliveryStatus.FAILED, 2, 500, "HTTP 500 Internal Server Error")
        assert (unreachable.status, unreachable.attempts, unreachable.last_status) == (DeliveryStatus.FAILED, 2, None)
        assert unreachable.last_error and "Connect" in unreachable.last_error
        assert len(callbacks.received) == 2
    finally:
        await n.stop()
    logged = [json.loads(line) for line in (tmp_path / "deliveries.jsonl").read_text().splitlines()]
    assert {(e["subscription_id"], e["status"], e["attempts"]) for e in logged} == {("s1", "failed", 2), ("s2", "failed", 2)}
    assert all("body" not in e for e in logged)  # what the app was told is its own business


async def test_a_full_queue_drops_and_a_stop_abandons(tmp_path: Path, callbacks: Callbacks) -> None:
    n = notifier(tmp_path, queue_size=1, backoff_s=30, max_backoff_s=30)
    await n.start()
    callbacks.statuses[:] = [500]
    first = n.send(subscription(f"{callbacks.url}/cb"), "AppTerminationNotification", {})
    await callbacks.wait_for(1)  # first attempt failed; it now waits 30 s to retry
    dropped = n.send(subscription(f"{callbacks.url}/cb", "s2"), "AppTerminationNotification", {})
    assert dropped.status is DeliveryStatus.DROPPED and "queue_size" in (dropped.last_error or "")
    await n.stop()
    assert first.status is DeliveryStatus.ABANDONED
    assert [d["status"] for d in n.deliveries()] == ["abandoned", "dropped"]
    after_stop = n.send(subscription(f"{callbacks.url}/cb", "s3"), "AppTerminationNotification", {})
    assert after_stop.status is DeliveryStatus.DROPPED


async def test_redirects_are_not_followed(tmp_path: Path, callbacks: Callbacks) -> None:
    n = notifier(tmp_path, max_attempts=1)
    await n.start()
    try:
        callbacks.statuses[:] = [307]
        d = n.send(subscription(f"{callbacks.url}/cb"), "AppTerminationNotification", {})
        await until(lambda: d.status is not DeliveryStatus.PENDING)
        assert (d.status, d.last_status, len(callbacks.received)) == (DeliveryStatus.FAILED, 307, 1)
    finally:
        await n.stop()


async def test_the_delivery_log_is_bounded_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = DeliveryLog(path, entries=10)
    log.open()
    for i in range(25):
        log.append({"id": str(i)})
    assert [e["id"] for e in log.newest()] == [str(i) for i in range(24, 14, -1)]
    assert len(path.read_text().splitlines()) < 20  # compacted at twice the entries
    log.close()
    with path.open("a") as f:
        f.write('{"id": "cut sho')  # a line a crash cut short
    again = DeliveryLog(path, entries=10)
    again.open()
    assert [e["id"] for e in again.newest()] == [str(i) for i in range(24, 15, -1)]
    again.close()


async def test_the_daemon_keeps_the_log_across_restarts_and_the_cli_shows_it(
    platform: Platform, callbacks: Callbacks, capsys: pytest.CaptureFixture[str]
) -> None:
    await platform.add_app(confirm_ready_required=False, graceful_timeout_s=1)
    body = {"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": f"{callbacks.url}/a",
            "appInstanceId": APP}
    assert (await platform.client.post(f"{AS}/applications/{APP}/subscriptions", json=body,
                                       headers=platform.auth())).status == 201
    await asyncio.to_thread(platform.admin.post, f"/apps/{APP}/terminate", {})
    await callbacks.wait_for(1)
    await until(lambda: any(d["status"] == "delivered" for d in platform.apps.notifier.deliveries()))

    sock = str(platform.daemon.config.admin_socket)
    code = await asyncio.to_thread(cli.main, ["notifications", "--socket", sock])
    out = capsys.readouterr().out
    assert code == 0
    assert "AppTerminationNotification" in out and "delivered" in out and APP in out and "1 of 1 shown" in out
    code = await asyncio.to_thread(cli.main, ["notifications", "--socket", sock, "--status", "failed"])
    assert code == 0 and "no notifications matching" in capsys.readouterr().out
    code = await asyncio.to_thread(cli.main, ["notifications", "--socket", sock, "--json", "--app", APP])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and [d["status"] for d in res["deliveries"]] == ["delivered"]
    assert res["deliveries"][0]["callback"] == f"{callbacks.url}/a"

    with pytest.raises(Exception, match="limit is 1"):
        await asyncio.to_thread(platform.admin.get, "/notifications?limit=0")
    with pytest.raises(Exception, match="status is one of"):
        await asyncio.to_thread(platform.admin.get, "/notifications?status=lost")

    # The log file outlives the notifier.
    await platform.apps.notifier.stop()
    reread = DeliveryLog(platform.daemon.config.notification_log_file, entries=100)
    reread.open()
    assert [e["notification_type"] for e in reread.newest()] == ["AppTerminationNotification"]
    reread.close()
