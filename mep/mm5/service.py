"""The Mm5 gRPC server (grpc.aio) that ``mep run`` hosts: MEPM's way into the platform.

``Mm5Service`` is a daemon service (mep/daemon.py ``Service``). ``start()``:

1. the termination backstop takes over every TERMINATING app (termination.py);
2. orphaned configuration tasks are resolved (tasks.py);
3. the server listens on ``mm5.listen``, with TLS when ``mm5.tls`` is set and
   mutual TLS when ``mm5.tls.ca`` is: a client must then present a
   certificate signed by that CA, or the TLS handshake fails and no call is
   made.

Handlers are registered from the proto's service descriptor (rpc.py), one
``Mm5Servicer`` method per RPC. A MepError becomes the status its class names
(``grpc_code``) with ``str(error)`` ("field: detail") as the detail, and the
trailing metadata ``mep-error`` (the class name) and ``mep-field`` (the
field, if any); anything else is logged and becomes INTERNAL.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.message import Message

from ..config import Mm5Config, TlsConfig
from ..errors import InvalidInput, InvalidTransition, MepError, NotFound, StoreUnavailable, TooBusy
from ..log import get_logger
from ..state import AppInstance, AppState, EventKind, LifecycleEvent, StoreEvent, TaskState
from .messages import (
    app_message,
    check_id,
    check_text,
    config_message,
    event_message,
    parse_config,
    task_message,
)
from .rpc import ERROR_METADATA_KEY, FIELD_METADATA_KEY, METHODS, SERVICE_NAME, pb
from .tasks import ConfigTasks, config_revision, in_force
from .termination import TerminationBackstop

if TYPE_CHECKING:
    from ..daemon import Daemon

__all__ = ["Mm5Service", "Mm5Servicer", "server_credentials", "MAX_BACKLOG_EVENTS"]

log = get_logger(__name__)

# Events a Watch or WatchTask stream may have queued and not yet sent: a
# client that falls further behind is cut off (RESOURCE_EXHAUSTED) and
# re-synchronises with GetState, instead of growing the MEP's memory.
MAX_BACKLOG_EVENTS = 10_000
# How long stop() lets calls in flight finish, then lets task workers finish.
_STOP_GRACE_S = 1.0
_STOP_TASKS_S = 5.0
_MAX_GRACEFUL_TIMEOUT_S = 3600  # AppInstance.graceful_timeout_s bound
# Calls in progress at once besides the streams; gRPC answers RESOURCE_EXHAUSTED beyond.
_MAX_UNARY_CALLS = 256


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """TLS credentials from ``mm5.tls``; with ``ca`` set, client certificates are required."""
    def read(path: Path, key: str) -> bytes:
        try:
            data: bytes = path.read_bytes()
        except OSError as exc:
            raise MepError(f"cannot read {path}: {exc.strerror}", field=f"mm5.tls.{key}") from None
        return data

    ca = read(tls.ca, "ca") if tls.ca is not None else None
    return grpc.ssl_server_credentials(
        [(read(tls.key, "key"), read(tls.cert, "cert"))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: MepError) -> NoReturn:
    metadata = [(ERROR_METADATA_KEY, type(exc).__name__)]
    if exc.field:
        metadata.append((FIELD_METADATA_KEY, exc.field))
    await context.abort(grpc.StatusCode[exc.grpc_code], str(exc), trailing_metadata=tuple(metadata))


_Unary = Callable[[Any, Any], Awaitable[Message]]
_Streaming = Callable[[Any, Any], AsyncIterator[Message]]


def _unary_handler(name: str, fn: _Unary) -> _Unary:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            return await fn(request, context)
        except MepError as exc:
            await _abort(context, exc)
        except Exception:
            log.exception("mm5_internal_error", method=name)
            await _abort(context, MepError(f"internal error in {name}; the MEP's log has the traceback"))

    return handle


def _streaming_handler(name: str, fn: _Streaming) -> _Streaming:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        try:
            async for message in fn(request, context):
                yield message
        except MepError as exc:
            await _abort(context, exc)
        except Exception:
            log.exception("mm5_internal_error", method=name)
            await _abort(context, MepError(f"internal error in {name}; the MEP's log has the traceback"))

    return handle


class Mm5Servicer:
    """One method per RPC of mm5.proto, named in snake case; requests and responses are mm5_pb2 messages."""

    def __init__(self, daemon: "Daemon", config: Mm5Config, tasks: ConfigTasks, backstop: TerminationBackstop) -> None:
        self._daemon = daemon
        self._config = config
        self._tasks = tasks
        self._backstop = backstop
        self._streams = 0
        self.boot_id = uuid.uuid4().hex

    # -- helpers ---------------------------------------------------------------------------
    def _app(self, app_id: str, *, include_config: bool = False) -> pb.AppInstance:
        store = self._daemon.store
        app = store.get_app(app_id)
        traffic_rules = store.list_traffic_rules(app_id)
        dns_rules = store.list_dns_rules(app_id)
        services = [s.service for s in store.list_services(app_id)]
        tasks = store.list_tasks(app_id)
        msg = app_message(
            app,
            in_force=in_force(self._daemon, app_id),
            traffic_rules=traffic_rules,
            dns_rules=dns_rules,
            services_produced=len(services),
            last_task_id=tasks[-1].task_id if tasks else "",
        )
        if include_config:
            msg.config.CopyFrom(config_message(traffic_rules, dns_rules, services, app))
        return msg

    async def _settle_quietly(self, revision: int) -> None:
        """Wait for the data plane to take in ``revision``; the caller reports ``in_force`` either way."""
        with contextlib.suppress(TimeoutError, MepError):
            await self._daemon.settled(revision, timeout=self._config.apply_timeout_s)

    @contextlib.contextmanager
    def _stream_slot(self) -> Iterator[None]:
        if self._streams >= self._config.max_streams:
            raise TooBusy(f"{self._streams} streams are open, the most this MEP serves (mm5.max_streams)")
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1

    @staticmethod
    async def _next_event(queue: asyncio.Queue[StoreEvent]) -> StoreEvent:
        if queue.qsize() > MAX_BACKLOG_EVENTS:
            raise TooBusy(
                f"this stream fell more than {MAX_BACKLOG_EVENTS} events behind; read the state with GetState "
                "and watch again"
            )
        return await queue.get()

    # -- app instances -----------------------------------------------------------------------
    async def create_app_instance(self, request: pb.CreateAppInstanceRequest, context: Any) -> pb.AppInstance:
        """CreateAppInstance."""
        apps = self._daemon.config.apps
        timeout = request.graceful_timeout_s if request.HasField("graceful_timeout_s") else apps.graceful_timeout_s
        if timeout > _MAX_GRACEFUL_TIMEOUT_S:
            raise InvalidInput(f"is at most {_MAX_GRACEFUL_TIMEOUT_S} s, got {timeout}", field="graceful_timeout_s")
        app = await self._daemon.store.create_app(
            AppInstance(
                appInstanceId=check_id(request.app_instance_id, "app_instance_id"),
                appName=check_text(request.app_name, "app_name"),
                appProvider=check_text(request.app_provider, "app_provider"),
                appDId=check_text(request.app_d_id, "app_d_id"),
                confirm_ready_required=apps.confirm_ready_required,
                graceful_timeout_s=timeout,
            )
        )
        log.info("app_created", app=app.appInstanceId, app_d_id=app.appDId, graceful_timeout_s=timeout)
        return self._app(app.appInstanceId)

    async def instantiate_app_instance(self, request: pb.AppInstanceRequest, context: Any) -> pb.AppInstance:
        """InstantiateAppInstance."""
        app_id = check_id(request.app_instance_id, "app_instance_id")
        store = self._daemon.store
        app = store.get_app(app_id)
        if app.state not in (AppState.INSTANTIATED, AppState.READY):
            # The check refuses the transition if the app's rules, now enforced, would not compile.
            app = await store.transition_app(app_id, LifecycleEvent.INSTANTIATE, check=self._daemon.check)
            log.info("app_instantiated", app=app_id, state=app.state.value)
        await self._settle_quietly(app.revision)
        return self._app(app_id)

    async def terminate_app_instance(self, request: pb.TerminateAppInstanceRequest, context: Any) -> pb.AppInstance:
        """TerminateAppInstance: GRACEFUL starts the hand-off (termination.py); FORCEFUL ends it at once.

        Returns once the data plane has taken the change in: the app's rules are no longer enforced.
        """
        app_id = check_id(request.app_instance_id, "app_instance_id")
        store = self._daemon.store
        app = store.get_app(app_id)
        if app.state not in (AppState.TERMINATING, AppState.TERMINATED):
            app = await store.transition_app(app_id, LifecycleEvent.TERMINATE)
            log.info("app_terminating", app=app_id, state=app.state.value, graceful_timeout_s=app.graceful_timeout_s)
        if app.state is AppState.TERMINATING and request.termination_type == pb.FORCEFUL:
            await self._backstop.finish(app_id, LifecycleEvent.GRACEFUL_TIMEOUT)
        if store.get_app(app_id).state is AppState.TERMINATED:
            # Straight to TERMINATED, or finished here or by Mp1's termination sequence (which, with no
            # subscriber to wait for, races this call and may still be removing): the answer holds none of
            # the app's rules and services either way (a clear with nothing left is a no-op).
            await self._backstop.clear(app_id)
        # Return once the data plane no longer enforces the app's rules (it left READY).
        await self._settle_quietly(config_revision(self._daemon, app_id))
        return self._app(app_id)

    async def delete_app_instance(self, request: pb.AppInstanceRequest, context: Any) -> pb.DeleteAppInstanceResponse:
        """DeleteAppInstance: only NOT_INSTANTIATED or TERMINATED apps."""
        app_id = check_id(request.app_instance_id, "app_instance_id")
        store = self._daemon.store
        app = store.get_app(app_id)
        if app.state not in (AppState.NOT_INSTANTIATED, AppState.TERMINATED):
            raise InvalidTransition(
                f"app instance '{app_id}' is {app.state.value}; terminate it first", field="state"
            )
        await store.delete_app(app_id)
        log.info("app_deleted", app=app_id)
        return pb.DeleteAppInstanceResponse(app_instance_id=app_id)

    # -- configuration -------------------------------------------------------------------------
    async def apply_configuration(
        self, request: pb.ApplyConfigurationRequest, context: Any
    ) -> pb.ApplyConfigurationResponse:
        """ApplyConfiguration: validate, then accept as a task (tasks.py)."""
        app_id = check_id(request.app_instance_id, "app_instance_id")
        if request.generation < 1:
            raise InvalidInput("must be at least 1", field="generation")
        config = parse_config(request.config, max_items=self._config.max_rules_per_app)
        task = await self._tasks.submit(app_id, request.generation, config)
        return pb.ApplyConfigurationResponse(task_id=task.task_id, state=task.state.value)

    async def get_task(self, request: pb.TaskRequest, context: Any) -> pb.Task:
        """GetTask."""
        return task_message(self._daemon.store.get_task(check_id(request.task_id, "task_id")))

    async def watch_task(self, request: pb.TaskRequest, context: Any) -> AsyncIterator[pb.Task]:
        """WatchTask: one message per state the task has been in, ending with ACTIVE or REVERTED."""
        task_id = check_id(request.task_id, "task_id")
        store = self._daemon.store
        with self._stream_slot():
            queue = store.subscribe()
            try:
                task = store.get_task(task_id)
                sent = 0
                while True:
                    for i in range(sent, len(task.history)):
                        # The detail belongs to how the task failed and ended, not to its earlier states.
                        state = task.history[i][0]
                        detail = task.detail if state in (TaskState.FAILED, TaskState.REVERTED) else ""
                        yield task_message(
                            task.model_copy(update={"state": state, "history": task.history[: i + 1], "detail": detail})
                        )
                    sent = len(task.history)
                    if task.state.final:
                        return
                    event = await self._next_event(queue)
                    while not (event.kind is EventKind.TASK and event.key == task_id):
                        event = await self._next_event(queue)
                    try:
                        task = store.get_task(task_id)
                    except NotFound:
                        raise NotFound(f"task '{task_id}' was deleted with its app", field="task_id") from None
            finally:
                store.unsubscribe(queue)

    # -- observation -----------------------------------------------------------------------------
    async def get_state(self, request: pb.GetStateRequest, context: Any) -> pb.State:
        """GetState."""
        d = self._daemon
        store = d.store
        app_id = check_text(request.app_instance_id, "app_instance_id")
        ids = [app_id] if app_id else [a.appInstanceId for a in store.list_apps()]
        refusal = d.last_refusal
        return pb.State(
            instance=d.config.instance,
            generation=d.generation,
            store_revision=store.revision,
            applied_revision=d.applied_revision or 0,
            refusal="; ".join(str(p) for p in refusal["problems"]) if refusal else "",
            apps=[self._app(i, include_config=request.include_config) for i in ids],
        )

    async def get_counters(self, request: pb.GetCountersRequest, context: Any) -> pb.Counters:
        """GetCounters: per rule in force (of the app, if named), per verdict, per reason."""
        d = self._daemon
        app_id = check_text(request.app_instance_id, "app_instance_id")
        if app_id:
            d.store.get_app(app_id)  # NotFound for an unknown app
        async with d.engine_lock:
            counters = await asyncio.to_thread(d.engine.counters)
            ruleset = d.engine.ruleset
        rules: list[tuple[int, str, str]] = []
        if ruleset is not None:
            rules += [(r.rule_id, r.app_instance_id, r.traffic_rule_id) for r in ruleset.rules]
            rules += [(r.rule_id, r.app_instance_id, r.dns_rule_id) for r in ruleset.dns_rules]
        msg = pb.Counters(engine=d.engine.name, generation=d.generation)
        for rule_id, owner, rule_name in sorted(rules):
            if app_id and owner != app_id:
                continue
            c = counters.rules.get(rule_id)
            msg.rules.add(
                rule_id=rule_id,
                app_instance_id=owner,
                traffic_rule_id=rule_name,
                packets=c.packets if c else 0,
                bytes=c.bytes if c else 0,
            )
        for verdict, c in sorted(counters.verdicts.items()):
            if c.packets:
                msg.verdicts.add(name=verdict.name, packets=c.packets, bytes=c.bytes)
        for reason, c in sorted(counters.reasons.items()):
            if c.packets:
                msg.reasons.add(name=reason.name, packets=c.packets, bytes=c.bytes)
        return msg

    async def watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.Event]:
        """Watch: SYNC at the current revision, then every store event (of the app, if named)."""
        app_id = check_text(request.app_instance_id, "app_instance_id")
        store = self._daemon.store
        with self._stream_slot():
            queue = store.subscribe()
            try:
                yield pb.Event(revision=store.revision, kind=pb.SYNC)
                while True:
                    event = await self._next_event(queue)
                    if not app_id or event.app_instance_id == app_id:
                        yield event_message(event)
            finally:
                store.unsubscribe(queue)

    async def health(self, request: pb.HealthRequest, context: Any) -> pb.HealthResponse:
        """Health."""
        d = self._daemon
        try:
            d.store.snapshot()
            serving = True
        except StoreUnavailable:
            serving = False
        refusal = d.last_refusal
        return pb.HealthResponse(
            serving=serving,
            instance=d.config.instance,
            version=version("mep"),
            boot_id=self.boot_id,
            generation=d.generation,
            store_revision=d.store.revision,
            engine=d.engine.name,
            uptime_s=time.monotonic() - d.started_monotonic,
            refusal="; ".join(str(p) for p in refusal["problems"]) if refusal else "",
        )

    def handlers(self) -> grpc.GenericRpcHandler:
        """The generic handler serving every method of the proto's service."""
        table: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in METHODS.values():
            fn = getattr(self, method.attr)
            if method.streaming:
                table[method.name] = grpc.unary_stream_rpc_method_handler(
                    _streaming_handler(method.name, fn),
                    request_deserializer=method.request.FromString,
                    response_serializer=method.response.SerializeToString,
                )
            else:
                table[method.name] = grpc.unary_unary_rpc_method_handler(
                    _unary_handler(method.name, fn),
                    request_deserializer=method.request.FromString,
                    response_serializer=method.response.SerializeToString,
                )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, table)


class Mm5Service:
    """The daemon service: backstop, task recovery, then the gRPC server (module docstring)."""

    name = "mm5"

    def __init__(self, daemon: "Daemon") -> None:
        self._daemon = daemon
        self._config = daemon.config.mm5
        self._tasks = ConfigTasks(daemon, apply_timeout_s=self._config.apply_timeout_s)
        self._backstop = TerminationBackstop(daemon)
        self._server: grpc.aio.Server | None = None
        self.port = 0  # the port bound, once started (mm5.listen may name port 0)

    async def start(self) -> None:
        """Take over terminations and orphaned tasks, then listen; MepError if the port or TLS files fail."""
        cfg = self._config
        await self._backstop.start()
        await self._tasks.recover()
        servicer = Mm5Servicer(self._daemon, cfg, self._tasks, self._backstop)
        size = cfg.max_message_bytes
        server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)],
            maximum_concurrent_rpcs=cfg.max_streams + _MAX_UNARY_CALLS,
        )
        server.add_generic_rpc_handlers((servicer.handlers(),))
        try:
            if cfg.tls is not None:
                self.port = server.add_secure_port(cfg.listen, server_credentials(cfg.tls))
            else:
                self.port = server.add_insecure_port(cfg.listen)
        except RuntimeError as exc:
            raise MepError(f"cannot listen on {cfg.listen}: {exc}", field="mm5.listen") from None
        await server.start()
        self._server = server
        mode = "plaintext" if cfg.tls is None else ("mtls" if cfg.tls.ca is not None else "tls")
        log.info("mm5_listening", listen=cfg.listen, port=self.port, security=mode, boot_id=servicer.boot_id)

    async def stop(self) -> None:
        """Stop taking calls, let task workers finish (a revert among them), stop the backstop."""
        if self._server is not None:
            await self._server.stop(_STOP_GRACE_S)
            self._server = None
        await self._tasks.close(_STOP_TASKS_S)
        await self._backstop.stop()
