"""Mm5's termination backstop on its own: a daemon built with the Mm5 service only (no Mp1 app support).

With Mp1's side present (every ``mep run``), an app without termination
subscribers is finished by Mp1 at once (test_mm5_rpc.py). Here nobody else
runs, so what ends the sequence is Mm5's backstop at the graceful deadline,
also across a restart, and at once for a FORCEFUL termination.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from mep.mm5.client import Mm5Client
from mep.mm5.rpc import pb
from mep.state import LifecycleEvent
from tests.mm5.bodies import config, forward_rule, service
from tests.mm5.inprocess import daemon_config, mm5_only, running_daemon

pytestmark = pytest.mark.asyncio


async def terminating_app(client: Mm5Client, app_id: str, graceful_timeout_s: int) -> None:
    await client.create_app_instance(
        pb.CreateAppInstanceRequest(app_instance_id=app_id, graceful_timeout_s=graceful_timeout_s)
    )
    accepted = await client.apply_configuration(app_id, 1, config(forward_rule(), services=(service(),)))
    assert (await client.wait_task(accepted.task_id)).state == pb.ACTIVE
    assert (await client.instantiate_app_instance(app_id)).state == pb.READY
    assert (await client.terminate_app_instance(app_id)).state == pb.TERMINATING


async def until_terminated(client: Mm5Client, app_id: str) -> pb.AppInstance:
    async with asyncio.timeout(15):
        while True:
            (app,) = (await client.get_state(app_id)).apps
            if app.state == pb.TERMINATED:
                return app
            await asyncio.sleep(0.05)


async def test_the_backstop_finishes_at_the_graceful_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mep.mm5.termination")
    with mm5_only(monkeypatch):
        async with running_daemon(daemon_config(tmp_path)) as (daemon, client):
            await terminating_app(client, "app", graceful_timeout_s=1)
            # Until the deadline the app keeps its rules (not enforced: it is not READY).
            assert [r.id for r in (await client.get_state("app")).apps[0].traffic_rules] == ["to-app"]
            assert daemon.engine.ruleset is not None and daemon.engine.ruleset.rules == ()

            app = await until_terminated(client, "app")

    assert list(app.traffic_rules) == [] and app.services_produced == 0
    finished = [r for r in caplog.records if r.getMessage() == "termination_finished"]
    assert [getattr(r, "mep_fields")["lifecycle_event"] for r in finished] == ["graceful_timeout"]


async def test_the_backstop_keeps_its_deadline_across_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = daemon_config(tmp_path)
    with mm5_only(monkeypatch):
        async with running_daemon(cfg) as (_, client):
            await terminating_app(client, "app", graceful_timeout_s=2)
        async with running_daemon(cfg) as (_, client):
            assert (await client.get_state("app")).apps[0].state == pb.TERMINATING
            app = await until_terminated(client, "app")
    assert list(app.traffic_rules) == []


async def test_forceful_termination_ends_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with mm5_only(monkeypatch):
        async with running_daemon(daemon_config(tmp_path)) as (_, client):
            await terminating_app(client, "app", graceful_timeout_s=3600)
            app = await client.terminate_app_instance("app", forceful=True)
    assert app.state == pb.TERMINATED and list(app.traffic_rules) == [] and app.services_produced == 0


async def test_the_backstop_stands_down_when_another_side_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Mp1's side, played by the test through the store: confirm_termination, then its own removal."""
    caplog.set_level(logging.INFO, logger="mep.mm5.termination")
    with mm5_only(monkeypatch):
        async with running_daemon(daemon_config(tmp_path)) as (daemon, client):
            await terminating_app(client, "app", graceful_timeout_s=1)
            await daemon.store.transition_app("app", LifecycleEvent.CONFIRM_TERMINATION)
            async with asyncio.timeout(15):
                while not any(r.getMessage() == "termination_finished_elsewhere" for r in caplog.records):
                    await asyncio.sleep(0.05)
            (app,) = (await client.get_state("app")).apps
    assert app.state == pb.TERMINATED
    assert not any(r.getMessage() == "termination_finished" for r in caplog.records)
