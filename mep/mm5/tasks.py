"""Configuration tasks: ApplyConfiguration as PENDING -> APPLYING -> ACTIVE, or FAILED -> REVERTED.

A task is a store record (``StoredTask``, a child of its app), so its state
survives a restart and reaches every Watch stream as a ``task`` event.

Accepting (``submit``), under a per-app lock:

- the same generation and configuration digest as a task that is pending,
  applying or active (for the generation in force): that task, nothing else
  happens (the idempotent re-apply);
- a generation below the app's, or equal to it with another digest, or not
  above one still being applied: FAILED_PRECONDITION (PreconditionFailed);
  a terminating or terminated app: FAILED_PRECONDITION (InvalidTransition);
  more than MAX_TASKS_IN_FLIGHT of the app's tasks unfinished: RESOURCE_EXHAUSTED;
- else a new task is stored PENDING and its worker starts.

A worker runs under a second per-app lock, so one app's tasks apply in the
order accepted:

1. APPLYING, storing the app's current configuration and generation as the
   revert point.
2. ``replace_app_config`` with a check: the daemon's compiler runs on the
   snapshot the write would produce, with this app counted as READY (so a
   configuration pushed before the app is ready is checked as it will be
   enforced). A refusal (CompileError, a DNS name conflict, a bad id) writes
   nothing: FAILED, then REVERTED at once, the store never left the previous
   version.
3. Wait until the daemon has compiled that store revision
   (``Daemon.settled``). Applied: ACTIVE. Refused anyway, not done within
   ``mm5.apply_timeout_s``, or the engine failed to apply it (the compile
   loop stops, and ``mep run`` exits 1): FAILED, the revert point is written
   back with ``reset_app_config`` (its generation too, only while the app
   still holds this task's generation), then REVERTED.

A stored task that is unfinished but has no worker (the MEP stopped mid-way,
or its worker lost the store) is an orphan. ``recover()`` at start and each
worker before its own apply resolve the app's orphans from what the store
shows: PENDING never wrote anything (FAILED, REVERTED); APPLYING whose
generation the app holds is ACTIVE if the rule set in force includes it,
else reverted; APPLYING whose generation the app does not hold never wrote
(REVERTED); FAILED finishes its revert.
"""
from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import TYPE_CHECKING

from ..errors import InvalidTransition, MepError, NotFound, PreconditionFailed, StoreUnavailable, TooBusy
from ..log import get_logger
from ..state import AppConfig, AppCredentials, AppInstance, AppState, Snapshot, StoredTask, TaskState
from .messages import config_digest

if TYPE_CHECKING:
    from ..daemon import Daemon

__all__ = ["ConfigTasks", "current_config", "config_revision", "in_force", "TaskDetail", "MAX_TASKS_IN_FLIGHT"]

log = get_logger(__name__)

_NOT_CONFIGURABLE = (AppState.TERMINATING, AppState.TERMINATED)
_IN_FLIGHT = (TaskState.PENDING, TaskState.APPLYING)
# Tasks of one app accepted and not finished; more is RESOURCE_EXHAUSTED. They
# apply one at a time, so a longer queue only holds configurations in memory.
MAX_TASKS_IN_FLIGHT = 8
# A detail is one line an operator reads; problem lists are cut to this.
_MAX_DETAIL_CHARS = 2000


class TaskDetail:
    """The fixed wording of task details (tests and docs/mm5.md quote them)."""

    INTERRUPTED = "interrupted before it was stored (the MEP stopped); apply it again"
    TERMINATED = "the app is {state}: its configuration can no longer change"
    NOT_IN_TIME = "the data plane did not take it in within {timeout} s (mm5.apply_timeout_s)"


def current_config(daemon: "Daemon", app: AppInstance) -> AppConfig:
    """Everything ``replace_app_config`` would need to put the app back as it is now."""
    store = daemon.store
    app_id = app.appInstanceId
    return AppConfig(
        traffic_rules=tuple(r.rule for r in store.list_traffic_rules(app_id)),
        dns_rules=tuple(r.rule for r in store.list_dns_rules(app_id)),
        services=tuple(s.service for s in store.list_services(app_id)),
        required_services=app.required_services,
        credentials=AppCredentials(client_id=app.client_id, client_secret_hash=app.client_secret_hash),
    )


def config_revision(daemon: "Daemon", app_id: str) -> int:
    """The newest store revision among the app's record and rules: what the data plane must have compiled."""
    store = daemon.store
    return max(
        [store.get_app(app_id).revision]
        + [r.revision for r in store.list_traffic_rules(app_id)]
        + [r.revision for r in store.list_dns_rules(app_id)]
    )


def in_force(daemon: "Daemon", app_id: str) -> bool:
    """Was the rule set in force compiled from a revision holding the app's current record and rules?"""
    applied = daemon.applied_revision
    return applied is not None and applied >= config_revision(daemon, app_id)


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 3] + "..."


def _refusal(daemon: "Daemon") -> str:
    refusal = daemon.last_refusal
    if not refusal:
        return "the data plane did not apply it"
    return "the data plane refused the rule set: " + "; ".join(str(p) for p in refusal["problems"])


class ConfigTasks:
    """Accepts, runs and recovers configuration tasks for one daemon."""

    def __init__(self, daemon: "Daemon", *, apply_timeout_s: float) -> None:
        self._daemon = daemon
        self._timeout = apply_timeout_s
        self._accepting: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._applying: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._workers: dict[str, asyncio.Task[None]] = {}  # by task id

    @staticmethod
    def _lock(locks: weakref.WeakValueDictionary[str, asyncio.Lock], app_id: str) -> asyncio.Lock:
        lock = locks.get(app_id)
        if lock is None:
            lock = asyncio.Lock()
            locks[app_id] = lock
        return lock

    # -- accepting ---------------------------------------------------------------------
    async def submit(self, app_id: str, generation: int, config: AppConfig) -> StoredTask:
        """Accept a configuration (module docstring); the task to follow."""
        digest = config_digest(config)
        store = self._daemon.store
        async with self._lock(self._accepting, app_id):
            app = store.get_app(app_id)
            if app.state in _NOT_CONFIGURABLE:
                raise InvalidTransition(TaskDetail.TERMINATED.format(state=app.state.value), field="state")
            tasks = store.list_tasks(app_id)
            active = [t for t in tasks if t.state is TaskState.ACTIVE]
            for t in reversed(tasks):
                if t.generation != generation or t.digest != digest:
                    continue
                if t.task_id in self._workers and t.state in _IN_FLIGHT:
                    return t  # the same request, still on its way
                if active and t.task_id == active[-1].task_id and generation == app.config_generation:
                    return t  # the same request, in force
            applied = app.config_generation
            if generation < applied:
                raise PreconditionFailed(
                    f"configuration generation {generation} is older than the applied generation {applied}",
                    field="generation",
                )
            if generation == applied and active and active[-1].generation == applied:
                raise PreconditionFailed(
                    f"configuration generation {generation} is already applied with a different configuration"
                    f" (task {active[-1].task_id})",
                    field="generation",
                )
            # A worker outlives its task's final state by the store's sync: a
            # client that saw REVERTED may already be here with the same generation.
            running = [t for t in tasks if t.task_id in self._workers and not t.state.final]
            if len(running) >= MAX_TASKS_IN_FLIGHT:
                raise TooBusy(
                    f"app instance '{app_id}' has {len(running)} configuration tasks in flight; wait for them",
                    field="generation",
                )
            if running and generation <= max(t.generation for t in running):
                newest = max(running, key=lambda t: t.generation)
                raise PreconditionFailed(
                    f"configuration generation {generation} is not newer than generation {newest.generation},"
                    f" accepted as task {newest.task_id} ({newest.state.value})",
                    field="generation",
                )
            task = await store.put_task(
                StoredTask(
                    task_id=uuid.uuid4().hex,
                    app_instance_id=app_id,
                    seq=max((t.seq for t in tasks), default=0) + 1,
                    generation=generation,
                    digest=digest,
                )
            )
            self._workers[task.task_id] = asyncio.create_task(self._work(task, config), name=f"mm5-task-{task.task_id}")
        log.info("task_accepted", task=task.task_id, app=app_id, generation=generation)
        return task

    # -- applying ------------------------------------------------------------------------
    async def _work(self, task: StoredTask, config: AppConfig) -> None:
        try:
            async with self._lock(self._applying, task.app_instance_id):
                await self._resolve_orphans(task.app_instance_id)
                await self._apply(task, config)
        except NotFound:
            log.info("task_dropped", task=task.task_id, app=task.app_instance_id, reason="the app was deleted")
        except StoreUnavailable as exc:
            # The stored task stays unfinished; the app's next task or the next start resolves it.
            log.error("task_interrupted", task=task.task_id, app=task.app_instance_id, error=str(exc))
        except Exception:
            log.exception("task_crashed", task=task.task_id, app=task.app_instance_id)
        finally:
            self._workers.pop(task.task_id, None)

    def _checker(self, app_id: str) -> "_ReadyCheck":
        return _ReadyCheck(self._daemon, app_id)

    async def _apply(self, task: StoredTask, config: AppConfig) -> None:
        store = self._daemon.store
        app = store.get_app(task.app_instance_id)
        if app.state in _NOT_CONFIGURABLE:
            await self._fail(task, TaskDetail.TERMINATED.format(state=app.state.value), written=False)
            return
        task = await store.put_task(
            task.model_copy(
                update={
                    "state": TaskState.APPLYING,
                    "previous_generation": app.config_generation,
                    "revert_to": current_config(self._daemon, app),
                }
            )
        )
        try:
            written = await store.replace_app_config(
                task.app_instance_id, config, generation=task.generation, check=self._checker(task.app_instance_id)
            )
        except StoreUnavailable:
            raise
        except MepError as exc:  # CompileError, Conflict, InvalidInput, PreconditionFailed: nothing written
            await self._fail(task, f"refused: {exc}", written=False)
            return
        await self._settle(task, written.revision)

    async def _settle(self, task: StoredTask, revision: int) -> None:
        """Wait for the data plane to take in store ``revision`` written for ``task``; ACTIVE or revert."""
        daemon = self._daemon
        try:
            await daemon.settled(revision, timeout=self._timeout)
        except TimeoutError:
            await self._fail(task, TaskDetail.NOT_IN_TIME.format(timeout=self._timeout), written=True)
            return
        except MepError as exc:  # the compile loop stopped on it (an engine apply failure)
            await self._fail(task, f"the data plane failed to apply it: {exc}", written=True)
            return
        if daemon.applied_revision is not None and daemon.applied_revision >= revision:
            await daemon.store.put_task(
                task.model_copy(
                    update={"state": TaskState.ACTIVE, "config_revision": revision, "revert_to": None, "detail": ""}
                )
            )
            log.info("task_active", task=task.task_id, app=task.app_instance_id, generation=task.generation,
                     revision=revision, ruleset_generation=daemon.generation)
        else:
            await self._fail(task, _refusal(daemon), written=True)

    async def _fail(self, task: StoredTask, detail: str, *, written: bool) -> None:
        """FAILED, the revert point back in the store when ``written``, then REVERTED."""
        store = self._daemon.store
        detail = _cut(detail)
        log.warning("task_failed", task=task.task_id, app=task.app_instance_id, generation=task.generation,
                    detail=detail)
        task = await store.put_task(task.model_copy(update={"state": TaskState.FAILED, "detail": detail}))
        outcome = "nothing was written"
        if written and task.revert_to is not None:
            outcome = await self._revert(task)
        await store.put_task(
            task.model_copy(update={"state": TaskState.REVERTED, "detail": _cut(f"{detail}; {outcome}"),
                                    "revert_to": None})
        )
        log.info("task_reverted", task=task.task_id, app=task.app_instance_id, outcome=outcome)

    async def _revert(self, task: StoredTask) -> str:
        daemon = self._daemon
        assert task.revert_to is not None
        try:
            restored = await daemon.store.reset_app_config(
                task.app_instance_id,
                task.revert_to,
                generation=task.previous_generation,
                expected_generation=task.generation,
            )
        except PreconditionFailed as exc:
            return f"not reverted: {exc.detail}"
        try:
            await daemon.settled(restored.revision, timeout=self._timeout)
        except (TimeoutError, MepError) as exc:
            return (f"the store holds generation {task.previous_generation} again; the data plane has not taken"
                    f" it in yet ({exc})")
        return f"the store holds generation {task.previous_generation} again"

    # -- orphans -------------------------------------------------------------------------
    async def recover(self) -> None:
        """Resolve every orphaned task (at start, before serving)."""
        for app in self._daemon.store.list_apps():
            async with self._lock(self._applying, app.appInstanceId):
                await self._resolve_orphans(app.appInstanceId)

    async def _resolve_orphans(self, app_id: str) -> None:
        store = self._daemon.store
        for task in store.list_tasks(app_id):
            if task.state.final or task.task_id in self._workers:
                continue  # done, or a live worker has it (the caller's own task among them)
            log.warning("task_orphaned", task=task.task_id, app=app_id, state=task.state.value)
            app = store.get_app(app_id)
            holds = app.config_generation == task.generation and task.revert_to is not None
            if task.state is TaskState.FAILED:
                await self._fail(task, task.detail, written=holds)
            elif task.state is TaskState.APPLYING and holds:
                await self._settle(task, config_revision(self._daemon, app_id))
            else:
                await self._fail(task, TaskDetail.INTERRUPTED, written=False)

    async def close(self, timeout: float) -> None:
        """Let running workers finish (an engine failure's revert among them) for ``timeout`` s, then cancel."""
        workers = list(self._workers.values())
        if not workers:
            return
        _, pending = await asyncio.wait(workers, timeout=timeout)
        for worker in pending:
            worker.cancel()
        if pending:
            await asyncio.wait(pending)


class _ReadyCheck:
    """The store check of a configuration write: the daemon's compiler, the app counted as READY."""

    def __init__(self, daemon: "Daemon", app_id: str) -> None:
        self._daemon = daemon
        self._app_id = app_id

    async def __call__(self, snapshot: Snapshot) -> None:
        app = snapshot.apps[self._app_id]
        if app.state is not AppState.READY:
            apps = {**snapshot.apps, self._app_id: app.model_copy(update={"state": AppState.READY})}
            snapshot = snapshot.model_copy(update={"apps": apps})
        await self._daemon.check(snapshot)
