"""The reconciler: make every MEP hold what MEPM's desired state says, again and again.

One pass, per host (hosts in parallel):

1. ``Health`` (short timeout) and ``GetState``. No answer: every instance on
   the host is recorded unreachable and left alone; the host is partitioned
   or down, and the MEP keeps enforcing what it has (edge autonomy). A new
   ``boot_id`` means the MEP restarted; it is logged, and the pass checks the
   host like any other.
2. Per app with an instance there, compare and act:

   desired INSTANTIATED   absent: CreateAppInstance (same id, so a MEP that lost its
                          state is re-created as it was); TERMINATED there: delete and
                          create again; config generation behind the desired one:
                          ApplyConfiguration and wait for the task; NOT_INSTANTIATED:
                          InstantiateAppInstance.
   desired TERMINATED     running: TerminateAppInstance; TERMINATED: DeleteAppInstance.

3. Record a Status per instance. An app desired TERMINATED whose instances
   are all gone is forgotten.

Every action is idempotent on the MEP (the same generation and configuration
again is the same task), so a pass interrupted anywhere is simply run again,
and two passes at once (``mepm reconcile`` and a CLI command) do no harm. A
generation that ended REVERTED on a host is not pushed there again for
``retry_s`` (the MEP refused it; pushing it every pass would only churn).
"""
from __future__ import annotations

import asyncio
import time

from mep.errors import Conflict, MepError, NotFound, PeerUnavailable
from mep.log import get_logger
from mep.mm5.client import Mm5Client
from mep.mm5.rpc import pb

from .inventory import App, Host, Instance, Inventory, Status, instance_config

__all__ = ["Reconciler", "HEALTH_TIMEOUT_S"]

log = get_logger(__name__)

HEALTH_TIMEOUT_S = 2.0
_RUNNING = ("INSTANTIATED", "READY")


class Reconciler:
    """Runs reconciliation passes over an Inventory (module docstring)."""

    def __init__(self, inventory: Inventory, *, timeout_s: float = 10.0, retry_s: float = 30.0) -> None:
        self.inventory = inventory
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._refused: dict[tuple[str, str, int], tuple[float, str]] = {}  # (app, host, gen) -> (when, why)
        self._boots: dict[str, str] = {}  # host -> boot_id last seen
        self._down: set[str] = set()  # hosts that did not answer the last pass

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Pass after pass, ``interval_s`` apart, until ``stop`` is set."""
        log.info("reconciler_started", interval_s=interval_s)
        while not stop.is_set():
            try:
                await self.reconcile()
            except MepError as exc:  # the desired-state store itself failed: try again next time
                log.error("reconcile_pass_failed", error=str(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass
        log.info("reconciler_stopped")

    async def reconcile(self, apps: set[str] | None = None, hosts: set[str] | None = None) -> list[Status]:
        """One pass over every host (or those named) for every app (or those named); the statuses recorded."""
        all_apps = [a for a in await self.inventory.apps() if apps is None or a.name in apps]
        all_hosts = [h for h in await self.inventory.hosts() if hosts is None or h.name in hosts]
        results = await asyncio.gather(*(
            self._host(host, [a for a in all_apps if host.name in a.instances]) for host in all_hosts
        ))
        statuses = [s for r in results for s in r]
        for status in statuses:
            await self.inventory.put_status(status)
        await self._forget_terminated(all_apps, {(s.app, s.host) for s in statuses if s.ok and not s.state})
        return statuses

    async def _forget_terminated(self, apps: list[App], gone: set[tuple[str, str]]) -> None:
        for app in apps:
            if app.desired != "TERMINATED" or not all((app.name, h) in gone for h in app.instances):
                continue
            current, version = await self.inventory.app(app.name)
            if current.desired == "TERMINATED":
                try:
                    await self.inventory.forget_app(app.name, expected=version)
                except Conflict:
                    continue  # changed meanwhile: the next pass decides
                log.info("app_forgotten", app=app.name, hosts=sorted(app.instances))

    async def _host(self, host: Host, apps: list[App]) -> list[Status]:
        async with host.client(self.timeout_s) as client:
            try:
                health = await client.health(timeout_s=HEALTH_TIMEOUT_S)
                state = await client.get_state()
            except PeerUnavailable as exc:
                if host.name not in self._down:
                    self._down.add(host.name)
                    log.warning("host_unreachable", host=host.name, error=str(exc))
                return [
                    Status(app=a.name, host=host.name, reachable=False, detail=str(exc), seen_at=time.time())
                    for a in apps
                ]
            previous = self._boots.get(host.name)
            if previous is None or previous != health.boot_id:
                log.info("host_seen" if previous is None else "host_restarted", host=host.name,
                         boot_id=health.boot_id, generation=health.generation)
                self._boots[host.name] = health.boot_id
            elif host.name in self._down:
                log.info("host_reachable_again", host=host.name, boot_id=health.boot_id)
            self._down.discard(host.name)
            observed = {a.app_instance_id: a for a in state.apps}
            statuses = []
            for app in apps:
                instance = app.instances[host.name]
                try:
                    status = await self._converge(client, host, app, instance, observed.get(instance.app_instance_id))
                except MepError as exc:
                    log.warning("converge_failed", app=app.name, host=host.name, error=str(exc))
                    status = Status(app=app.name, host=host.name, reachable=not isinstance(exc, PeerUnavailable),
                                    detail=str(exc), seen_at=time.time())
                statuses.append(status)
            return statuses

    async def _converge(
        self, client: Mm5Client, host: Host, app: App, instance: Instance, observed: pb.AppInstance | None
    ) -> Status:
        if app.desired == "TERMINATED":
            return await self._terminate(client, host, app, instance, observed)
        app_id = instance.app_instance_id
        if observed is not None and observed.state == pb.TERMINATED:
            await client.delete_app_instance(app_id)
            log.info("instance_deleted_to_recreate", app=app.name, host=host.name, instance=app_id)
            observed = None
        if observed is not None and observed.state == pb.TERMINATING:
            return self._status(app, host, observed, ok=False, detail="terminating on the MEP; created again after")
        if observed is None:
            appd = app.descriptor
            request = pb.CreateAppInstanceRequest(
                app_instance_id=app_id, app_name=appd.appName, app_provider=appd.appProvider, app_d_id=appd.appDId
            )
            if appd.graceful_timeout_s is not None:
                request.graceful_timeout_s = appd.graceful_timeout_s
            observed = await client.create_app_instance(request)
            log.info("instance_created", app=app.name, host=host.name, instance=app_id)
        task: pb.Task | None = None
        if observed.config_generation > app.generation:
            return self._status(app, host, observed, ok=False, detail=(
                f"the MEP holds generation {observed.config_generation}, newer than the desired {app.generation}"
                " (was MEPM's store reset?); push a newer one with: mepm app update"))
        if observed.config_generation < app.generation:
            refused = self._refused.get((app.name, host.name, app.generation))
            if refused is not None and time.monotonic() - refused[0] < self.retry_s:
                return self._status(app, host, observed, ok=False, detail=f"refused, retried later: {refused[1]}")
            accepted = await client.apply_configuration(app_id, app.generation, instance_config(app, instance))
            task = await client.wait_task(accepted.task_id)
            log.info("configuration_pushed", app=app.name, host=host.name, generation=app.generation,
                     task=task.task_id, state=pb.TaskState.Name(task.state))
            if task.state != pb.ACTIVE:
                self._refused[(app.name, host.name, app.generation)] = (time.monotonic(), task.detail)
                observed = (await client.get_state(app_id)).apps[0]
                return self._status(app, host, observed, ok=False, task=task, detail=task.detail)
            self._refused.pop((app.name, host.name, app.generation), None)
        if observed.state == pb.NOT_INSTANTIATED:
            await client.instantiate_app_instance(app_id)
            log.info("instance_instantiated", app=app.name, host=host.name, instance=app_id)
        observed = (await client.get_state(app_id)).apps[0]
        state = pb.AppState.Name(observed.state)
        ok = state in _RUNNING and observed.config_generation == app.generation
        detail = "" if observed.in_force else "not in force yet (see `mep status` on the host)"
        if state == "INSTANTIATED":
            detail = "waiting for the app's confirm_ready (Mp1)"
        return self._status(app, host, observed, ok=ok, task=task, detail=detail)

    async def _terminate(
        self, client: Mm5Client, host: Host, app: App, instance: Instance, observed: pb.AppInstance | None
    ) -> Status:
        app_id = instance.app_instance_id
        if observed is None:
            return Status(app=app.name, host=host.name, reachable=True, ok=True, seen_at=time.time())
        if observed.state not in (pb.TERMINATING, pb.TERMINATED):
            observed = await client.terminate_app_instance(app_id)
            log.info("instance_terminating", app=app.name, host=host.name, instance=app_id,
                     state=pb.AppState.Name(observed.state))
        if observed.state == pb.TERMINATED:
            try:
                await client.delete_app_instance(app_id)
            except NotFound:
                pass
            log.info("instance_deleted", app=app.name, host=host.name, instance=app_id)
            return Status(app=app.name, host=host.name, reachable=True, ok=True, seen_at=time.time())
        return self._status(app, host, observed, ok=False, detail="terminating: waiting for confirm_termination"
                            " or the graceful timeout")

    @staticmethod
    def _status(
        app: App, host: Host, observed: pb.AppInstance, *, ok: bool, detail: str = "", task: pb.Task | None = None
    ) -> Status:
        return Status(
            app=app.name,
            host=host.name,
            reachable=True,
            state=pb.AppState.Name(observed.state),
            config_generation=observed.config_generation,
            in_force=observed.in_force,
            task_id=task.task_id if task is not None else observed.last_task_id,
            task_state=pb.TaskState.Name(task.state) if task is not None else "",
            detail=detail,
            ok=ok,
            seen_at=time.time(),
        )
