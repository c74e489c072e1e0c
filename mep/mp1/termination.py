"""Graceful termination (and stop) of an app instance, Mp1's side (DESIGN.md section 6).

Who starts a termination does not matter: MEPM over Mm5
(``TerminateAppInstance``) or the operator (``mep app terminate``) moves the
app to TERMINATING, and ``Terminator`` follows the store's app events from
there. Each step below is a store write or a delivery, so each shows in the
app's state, in the store's events and in the delivery log, and each is logged:

1. TERMINATING (written by whoever started it): the app is no longer READY,
   so its rules stop being enforced at once (lifecycle.py);
2. every AppTerminationNotificationSubscription of the app gets an
   AppTerminationNotification (operationAction, maxGracefulTimeout: the
   seconds left, links to the subscription and to confirm_termination);
3. wait for the app's confirm_termination or the deadline
   ``updated_at + graceful_timeout_s`` (wall clock, so a restart keeps it).
   An app without such a subscription cannot know it is being terminated,
   so there is nothing to wait for: it finishes at once;
4. TERMINATED, through the lifecycle event that ended the wait
   (``confirm_termination`` or ``graceful_timeout``);
5. the app's traffic and DNS rules are deleted (one write), then its
   services (one write; their subscribers hear REMOVED). Subscriptions stay
   until the app is deleted; a TERMINATED app is sent no more notifications.

Mm5 runs a backstop (mep/mm5/termination.py) that finishes any termination
still pending at the deadline, and clears the same kinds; whoever applies
step 4 first wins, the other gets InvalidTransition and stands down, and
clearing twice is a no-op. So a termination completes with Mp1 or Mm5
alone, and a confirmation is honoured whenever Mp1 runs.

STOPPING is followed the same way with operationAction STOPPING: steps 2-4
(to STOPPED), no removal; a stopped app keeps its rules and services, which
are not enforced while it is not READY.

A daemon that stops mid-way leaves the app TERMINATING (or STOPPING, or
TERMINATED with leftovers); ``start()`` picks every such app up again,
notifying again (delivery is at least once) with what is left of the
graceful period.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from ..errors import InvalidTransition, MepError, NotFound
from ..log import get_logger
from ..models import AppTerminationNotification, OperationActionType
from ..state.lifecycle import AppState, LifecycleEvent
from ..state.records import AppInstance, EventKind, EventOp, StoreEvent, SubscriptionKind
from ..state.store import Store
from .notify import Notifier

__all__ = ["Terminator", "REMOVED_KINDS"]

log = get_logger(__name__)

# The state an operation runs in.
_OPERATION = {AppState.TERMINATING: OperationActionType.TERMINATING, AppState.STOPPING: OperationActionType.STOPPING}
# What a terminated app loses, one write per group, in this order.
REMOVED_KINDS = (
    ("rules", (EventKind.TRAFFIC_RULE, EventKind.DNS_RULE)),
    ("services", (EventKind.SERVICE,)),
)


@dataclass
class _Sequence:
    operation: OperationActionType
    confirmed: asyncio.Event
    task: asyncio.Task[None]


class Terminator:
    """Follows apps into TERMINATING or STOPPING and sees them through (see the module docstring)."""

    def __init__(self, store: Store, notifier: Notifier) -> None:
        self._store = store
        self._notifier = notifier
        self._running: dict[str, _Sequence] = {}
        self._events: asyncio.Queue[StoreEvent] | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take up every app left TERMINATING, STOPPING or TERMINATED with leftovers; then follow the store."""
        self._events = self._store.subscribe()
        for app in self._store.list_apps():
            self._take_up(app)
        self._follower = asyncio.create_task(self._follow(self._events), name="mp1-termination")

    async def stop(self) -> None:
        """Cancel the running sequences (the apps stay where they are; ``start()`` continues them)."""
        tasks = [seq.task for seq in self._running.values()]
        if self._follower is not None:
            tasks.append(self._follower)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self._follower = None
        if self._events is not None:
            self._store.unsubscribe(self._events)
            self._events = None

    async def terminate(self, app_instance_id: str) -> AppInstance:
        """Start a graceful termination (step 1); the app, TERMINATING (or TERMINATED if it never ran).

        InvalidTransition (409) when the app's state does not allow it.
        """
        app = await self._store.transition_app(app_instance_id, LifecycleEvent.TERMINATE)
        log.info("termination_requested", app=app_instance_id, state=app.state.value,
                 graceful_timeout_s=app.graceful_timeout_s)
        return app

    def confirm(self, app_instance_id: str, operation: OperationActionType | None) -> None:
        """The app's confirm_termination: end the wait of its sequence.

        InvalidTransition (409) when the app is neither TERMINATING nor
        STOPPING, or ``operation`` names the other one.
        """
        app = self._store.get_app(app_instance_id)
        pending = _OPERATION.get(app.state)
        if pending is None:
            raise InvalidTransition(
                f"app instance '{app_instance_id}' is {app.state.value}: there is no termination or stop to confirm",
                field="operationAction",
            )
        if operation is not None and operation is not pending:
            raise InvalidTransition(
                f"operationAction is {operation.value}, but app instance '{app_instance_id}' is {app.state.value}",
                field="operationAction",
            )
        seq = self._running.get(app_instance_id)
        if seq is not None:
            seq.confirmed.set()
        log.info("termination_confirmed", app=app_instance_id, operation=pending.value, waiting=seq is not None)

    async def _follow(self, events: asyncio.Queue[StoreEvent]) -> None:
        while True:
            event = await events.get()
            if event.kind is not EventKind.APP:
                continue
            if event.op is EventOp.DELETE:
                seq = self._running.pop(event.app_instance_id, None)
                if seq is not None:
                    seq.task.cancel()
                continue
            try:
                app = self._store.get_app(event.app_instance_id)
            except NotFound:
                continue  # deleted by a later write: its event follows
            try:
                self._take_up(app)
            except Exception as exc:  # keep following the other apps
                log.exception("termination_failed", app=app.appInstanceId, operation="take up", error=type(exc).__name__)

    def _take_up(self, app: AppInstance) -> None:
        app_id = app.appInstanceId
        operation = _OPERATION.get(app.state)
        seq = self._running.get(app_id)
        if operation is not None and (seq is None or seq.operation is not operation):
            if seq is not None:  # a stop in progress became a termination
                seq.task.cancel()
            confirmed = asyncio.Event()
            task = asyncio.create_task(self._run(app_id, operation, confirmed), name=f"mp1-{operation.value.lower()}-{app_id}")
            self._running[app_id] = _Sequence(operation, confirmed, task)
        elif app.state is AppState.TERMINATED and seq is None:
            task = asyncio.create_task(self._run_removal(app_id), name=f"mp1-clear-{app_id}")
            self._running[app_id] = _Sequence(OperationActionType.TERMINATING, asyncio.Event(), task)

    async def _run(self, app_id: str, operation: OperationActionType, confirmed: asyncio.Event) -> None:
        try:
            await self._sequence(app_id, operation, confirmed)
        except MepError as exc:
            log.error("termination_failed", app=app_id, operation=operation.value, error=str(exc),
                      detail="the app stays where it is; the next daemon start takes it up again")
        except Exception as exc:  # a bug: keep it visible, never a silent dead task
            log.exception("termination_failed", app=app_id, operation=operation.value, error=type(exc).__name__)
        finally:
            self._forget(app_id)

    async def _run_removal(self, app_id: str) -> None:
        try:
            await self._remove(app_id)
        except MepError as exc:
            log.error("termination_failed", app=app_id, operation="remove", error=str(exc))
        finally:
            self._forget(app_id)

    def _forget(self, app_id: str) -> None:
        seq = self._running.get(app_id)
        if seq is not None and seq.task is asyncio.current_task():
            del self._running[app_id]

    async def _sequence(self, app_id: str, operation: OperationActionType, confirmed: asyncio.Event) -> None:
        store = self._store
        app = store.get_app(app_id)
        deadline = app.updated_at + app.graceful_timeout_s
        # 2. notify
        subscribers = [
            s for s in store.list_subscriptions(app_id, SubscriptionKind.APP_TERMINATION)
            if s.body.get("appInstanceId") == app_id
        ]
        left_s = math.ceil(max(0.0, deadline - time.time()))
        for sub in subscribers:
            href = str(sub.body["_links"]["self"]["href"])
            notification = AppTerminationNotification.model_validate({
                "notificationType": "AppTerminationNotification",
                "operationAction": operation,
                "maxGracefulTimeout": left_s,
                "_links": {
                    "subscription": {"href": href},
                    "confirmTermination": {"href": href.rsplit("/subscriptions/", 1)[0] + "/confirm_termination"},
                },
            })
            self._notifier.send(sub, "AppTerminationNotification", notification.to_json())
        log.info("termination_notified", app=app_id, operation=operation.value, subscribers=len(subscribers),
                 max_graceful_timeout_s=left_s)
        # 3. wait
        if subscribers and not confirmed.is_set():
            try:
                await asyncio.wait_for(confirmed.wait(), max(0.0, deadline - time.time()))
            except TimeoutError:
                pass
        ended_by = LifecycleEvent.CONFIRM_TERMINATION if confirmed.is_set() else LifecycleEvent.GRACEFUL_TIMEOUT
        # 4. final state; whoever gets here first (the Mm5 backstop too) writes it.
        try:
            final = await store.transition_app(app_id, ended_by)
        except InvalidTransition:
            log.info("termination_finished_elsewhere", app=app_id, operation=operation.value)
            return
        log.info("termination_finished", app=app_id, operation=operation.value, ended_by=ended_by.value,
                 state=final.state.value, waited=bool(subscribers), revision=final.revision)
        # 5. remove
        if final.state is AppState.TERMINATED:
            await self._remove(app_id)

    async def _remove(self, app_id: str) -> None:
        for what, kinds in REMOVED_KINDS:
            removed = await self._store.clear_app(app_id, kinds)
            if removed:
                log.info("termination_removed", app=app_id, what=what, count=removed, revision=self._store.revision)
