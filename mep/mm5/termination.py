"""The graceful termination hand-off: Mm5 starts it, whoever is first finishes it.

Mm5 and Mp1 coordinate through the store's lifecycle states and events only:

1. ``TerminateAppInstance`` moves the app to TERMINATING (lifecycle event
   ``terminate``). The app leaves READY, so the compiler stops enforcing its
   rules at once.
2. Mp1, when it runs, sees the app event, sends AppTerminationNotification to
   the app's subscribers and waits for ``confirm_termination``.
3. Whoever finishes applies ``confirm_termination`` (Mp1, on the app's
   confirmation) or ``graceful_timeout`` (whoever sees the deadline pass
   first), which makes the app TERMINATED, and then removes the app's traffic
   rules, DNS rules and services in one write (``Store.clear_app``). A
   transition that loses the race raises InvalidTransition: the loser stands
   down; clearing twice is a no-op.

This module is Mm5's side of step 3, the backstop: for every app in
TERMINATING, whoever put it there, it waits until ``updated_at +
graceful_timeout_s`` (wall clock, so a restart keeps the deadline) and then
finishes the termination if it is still pending. It works the same with Mp1
absent (the backstop always finishes) or present (Mp1 finishes first on a
confirmation). At start it also clears what a TERMINATED app still holds,
which is what a process stopped between steps 3's two writes leaves.
A FORCEFUL termination finishes at once (``finish``).
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..errors import InvalidTransition, NotFound
from ..log import get_logger
from ..state import AppState, EventKind, EventOp, LifecycleEvent, StoreEvent

if TYPE_CHECKING:
    from ..daemon import Daemon

__all__ = ["TerminationBackstop", "CLEARED_KINDS"]

log = get_logger(__name__)

# What a terminated app loses; subscriptions and tasks stay until the app is deleted.
CLEARED_KINDS = (EventKind.TRAFFIC_RULE, EventKind.DNS_RULE, EventKind.SERVICE)


class TerminationBackstop:
    """Finishes graceful terminations nobody else finished in time (module docstring)."""

    def __init__(self, daemon: "Daemon") -> None:
        self._daemon = daemon
        self._timers: dict[str, asyncio.Task[None]] = {}  # by app instance id
        self._queue: asyncio.Queue[StoreEvent] | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Arm a timer for every TERMINATING app, clear TERMINATED leftovers, then follow the store."""
        store = self._daemon.store
        self._queue = store.subscribe()
        for app in store.list_apps():
            if app.state is AppState.TERMINATING:
                self._arm(app.appInstanceId, app.updated_at + app.graceful_timeout_s)
            elif app.state is AppState.TERMINATED:
                await self.clear(app.appInstanceId)
        self._follower = asyncio.create_task(self._follow(self._queue), name="mm5-termination")

    async def _follow(self, queue: asyncio.Queue[StoreEvent]) -> None:
        while True:
            event = await queue.get()
            if event.kind is not EventKind.APP:
                continue
            app_id = event.app_instance_id
            if event.op is EventOp.DELETE:
                self._disarm(app_id)
                continue
            try:
                app = self._daemon.store.get_app(app_id)
            except NotFound:
                continue  # deleted by a later write already in the queue
            if app.state is AppState.TERMINATING and app_id not in self._timers:
                self._arm(app_id, app.updated_at + app.graceful_timeout_s)

    def _arm(self, app_id: str, deadline: float) -> None:
        log.info("termination_backstop_armed", app=app_id, in_s=round(max(0.0, deadline - time.time()), 3))
        self._timers[app_id] = asyncio.create_task(self._expire(app_id, deadline), name=f"mm5-terminate-{app_id}")

    def _disarm(self, app_id: str) -> None:
        timer = self._timers.pop(app_id, None)
        if timer is not None:
            timer.cancel()

    async def _expire(self, app_id: str, deadline: float) -> None:
        try:
            await asyncio.sleep(max(0.0, deadline - time.time()))
            await self.finish(app_id, LifecycleEvent.GRACEFUL_TIMEOUT)
        finally:
            if self._timers.get(app_id) is asyncio.current_task():
                del self._timers[app_id]

    async def finish(self, app_id: str, event: LifecycleEvent) -> bool:
        """End a TERMINATING app's termination with ``event``; False if someone else already did."""
        try:
            app = await self._daemon.store.transition_app(app_id, event)
        except (InvalidTransition, NotFound):
            log.info("termination_finished_elsewhere", app=app_id)
            return False
        log.info("termination_finished", app=app_id, lifecycle_event=event.value, state=app.state.value)
        await self.clear(app_id)
        return True

    async def clear(self, app_id: str) -> None:
        """Remove what a TERMINATED app still holds: rules, DNS rules, services (a no-op if nothing)."""
        try:
            removed = await self._daemon.store.clear_app(app_id, CLEARED_KINDS)
        except NotFound:
            return
        if removed:
            log.info("terminated_app_cleared", app=app_id, records=removed)

    async def stop(self) -> None:
        """Cancel the timers and stop following; the store still holds every deadline."""
        tasks = [t for t in (self._follower, *self._timers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()
        self._follower = None
        if self._queue is not None:
            self._daemon.store.unsubscribe(self._queue)
            self._queue = None
