"""``mep run``: the platform daemon, wiring store -> compiler -> engine.

::

    store ──events──> compile loop ──snapshot──> compiler ──CompiledRuleSet──> engine.apply
      ^                  (batches apply_batch_ms)                                  |
      |                                                                            v
    services (admin API, apps, Mm5, Mp1, DNS)  <── status, stats, explain; rule-set listeners (DNS)

Start-up, in order: open the store, build the engine (``make_engine``),
subscribe to store events, compile the current snapshot and apply it, then
start the services. Any failure there ends the daemon with exit status 1 and
the reason on stderr (a bad configuration is caught earlier by the CLI:
exit 2).

The compile loop waits for a store event, collects further events for
``dataplane.apply_batch_ms``, drops those that cannot change the data plane
(services, subscriptions, revisions already applied), then compiles the
store's snapshot with generation + 1 and applies it.

- A refused rule set (CompileError) is logged with every problem; the rule set
  in force stays, the generation does not move, and ``/status`` shows the
  refusal until a later rule set is applied. This holds at start-up too: the
  daemon then runs with no rule set (the engine's own state, such as pinned
  XDP maps, stays as it was), so that the operator can fix the rules through
  the APIs.
- A failed apply (DataplaneError, for example a map write) is not skipped:
  the data plane may no longer match the store, so the daemon stops with exit
  status 1 and a supervisor restart reconciles it.

SIGTERM or SIGINT: stop the services, stop the loop, close the engine and the
store, exit 0.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import signal
import sys
import time
from typing import Any, Callable, Optional, Protocol

from .admin import AdminApi
from .config import Config, EngineName
from .dataplane.compiler import RuleCache, StaticResolver, compile_few, compile_ruleset
from .dataplane.engine import Engine
from .dataplane.factory import make_engine
from .dataplane.ruleset import CompiledRuleSet
from .dns import DnsCollector, DnsServer
from .errors import CompileError, DataplaneError, MepError
from .log import get_logger, setup_logging
from .mp1 import AppSupport, Mp1Server
from .state import open_store
from .state.records import Snapshot, StoreEvent
from .state.store import Store

__all__ = ["Service", "Daemon", "run", "build_services", "tune_gc"]

log = get_logger(__name__)

# compile(snapshot, generation): a CompiledRuleSet, or CompileError.
_Compile = Callable[[Snapshot, int], CompiledRuleSet]
# The same, or None at once when that would compile more than INLINE_RULES rules,
# wait for a compilation running in a worker thread (compiler.compile_few) or read
# the ports and neighbours from the kernel again (resolver.LiveResolver.cached).
_CompileFew = Callable[[Snapshot, int], Optional[CompiledRuleSet]]
# A compilation that compiles at most this many rules (traffic
# and DNS) runs on the event loop: compiling them takes at most about 2 ms
# (25-30 us a rule), sharing the rest with the previous compilation about 0.1 ms
# at 10,000 rules (copying the match-order tuple), while
# the thread hop that would move it off the loop costs about 0.3 ms of latency
# per Mp1 PUT (measured at 10,000 rules, the process pinned to one CPU).
INLINE_RULES = 64
# Allocations between two young-generation collections in ``mep run`` (Python's default: 700). Every
# such collection traverses the containers made since the previous one, and each write makes a few
# with one entry per rule (the rule tuples of the store's snapshot and the compiler's match order): at
# 10,000 rules one took 1.3-2.3 ms and fell inside about one Mp1 rule install in 13 (measured before
# the rule indexes became persistent maps, when each write also copied those).
GC_YOUNG_THRESHOLD = 10_000


class Service(Protocol):
    """Something the daemon hosts beside the data plane (admin API, Mp1, Mm5, DNS).

    ``start()`` returns once the service accepts work and raises if it cannot
    (the daemon then exits 1); ``stop()`` releases everything it took and is
    called once, only after a successful ``start()``.
    """

    name: str

    async def start(self) -> None:
        """Begin serving."""

    async def stop(self) -> None:
        """Stop serving and release resources."""


def _compiler(config: Config) -> tuple[_Compile, _CompileFew, Callable[[], None]]:
    """The compiler with ports and neighbours resolved for the configured engine: the variant that
    may block (a worker thread runs it), the one that answers None at once instead (the event loop
    runs it), and what releases the resolver.

    The reference engine has no interfaces: ports and neighbours come from the
    configuration. The XDP and fastpath engines read each port's MAC and MTU
    and the neighbour tables from the kernel (resolver.LiveResolver, inside
    ``dataplane.netns`` when set), and keep them until the kernel announces a
    change: only a compilation that finds them unchanged may run on the loop.
    """
    dp = config.dataplane
    cache = RuleCache()
    if dp.engine is EngineName.REFERENCE:
        static = StaticResolver.from_config(dp)

        def compile_static(snapshot: Snapshot, generation: int) -> CompiledRuleSet:
            return compile_ruleset(snapshot, config=dp, resolver=static, generation=generation, cache=cache)

        def compile_static_few(snapshot: Snapshot, generation: int) -> Optional[CompiledRuleSet]:
            return compile_few(snapshot, config=dp, resolver=static, generation=generation, cache=cache,
                               limit=INLINE_RULES)

        return compile_static, compile_static_few, lambda: None

    from .dataplane.resolver import LiveResolver  # pyroute2: only for the engines with interfaces

    live = LiveResolver(dp, dp.netns)

    def compile_live(snapshot: Snapshot, generation: int) -> CompiledRuleSet:
        return compile_ruleset(snapshot, config=dp, resolver=live.current(), generation=generation, cache=cache)

    def compile_live_few(snapshot: Snapshot, generation: int) -> Optional[CompiledRuleSet]:
        resolver = live.cached()
        if resolver is None:
            return None
        return compile_few(snapshot, config=dp, resolver=resolver, generation=generation, cache=cache,
                           limit=INLINE_RULES)

    return compile_live, compile_live_few, live.close


def build_services(daemon: "Daemon") -> list[Service]:
    """The services this build hosts, in start order; the admin API first.

    ``apps`` (app lifecycle and notifications, mep/mp1/support.py) always
    runs: the admin API drives it too; ``mp1`` serves it to the apps.
    """
    config = daemon.config
    apps = AppSupport(daemon.store, config, daemon.check)
    services: list[Service] = [AdminApi(daemon, config.admin_socket, apps), apps]
    if config.mm5.enabled:
        from .mm5.service import Mm5Service  # grpc is imported only by a daemon that serves Mm5

        services.append(Mm5Service(daemon))
    dns = DnsServer(config.dns, netns=config.dataplane.netns) if config.dns.enabled else None  # serves N6
    if config.mp1.enabled:
        collectors = [DnsCollector(dns)] if dns is not None else []
        services.append(Mp1Server(config, apps, daemon.engine, collectors))
    if dns is not None:
        daemon.add_ruleset_listener(dns.update)
        services.append(dns)
    return services


class Daemon:
    """One running platform instance. ``start()``, then ``serve(stop)``, then ``close()``.

    ``start()`` leaves the compile loop running as a task, so a caller that
    drives the store itself (the demo, tests) needs no ``serve()``.

    ``engine`` defaults to the one the configuration names; tests may pass
    their own. The store is always the configured one and is reachable as
    ``daemon.store`` once started.
    """

    def __init__(self, config: Config, *, engine: Engine | None = None) -> None:
        self.config = config
        self._engine = engine
        self._compile, self._compile_few, self._close_compiler = _compiler(config)
        self._store: Store | None = None
        self._queue: asyncio.Queue[StoreEvent] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._started: list[Service] = []  # in start order; stopped in reverse
        self._settled = asyncio.Condition()
        # Engine calls run in worker threads (XDP map writes and netlink must not
        # block, nor run inside, the event loop), but an apply the engine calls
        # cheap (Engine.cheap: a few map writes, nothing to wait for); one at a time.
        self.engine_lock = asyncio.Lock()
        self.started_monotonic = time.monotonic()
        self.generation = 0  # of the rule set in force; 0: none applied yet
        self.applied_revision: int | None = None  # store revision of the rule set in force
        self.compiled_revision = -1  # newest store revision compiled, applied or refused
        self.last_refusal: dict[str, Any] | None = None  # cleared by the next apply
        self._ruleset_listeners: list[Callable[[CompiledRuleSet], None]] = []
        self._checked: tuple[Snapshot, CompiledRuleSet] | None = None  # the newest check()'s snapshot and result

    @property
    def store(self) -> Store:
        """The open store; RuntimeError before ``start()``."""
        if self._store is None:
            raise RuntimeError("the daemon has not opened its store yet")
        return self._store

    @property
    def engine(self) -> Engine:
        """The engine in use; RuntimeError before ``start()``."""
        if self._engine is None:
            raise RuntimeError("the daemon has not built its engine yet")
        return self._engine

    async def start(self) -> None:
        """Open the store, build the engine, apply the first rule set, start the services.

        On failure the caller still calls ``close()``, which releases what was taken.
        """
        cfg = self.config
        log.info("starting", instance=cfg.instance, engine=cfg.dataplane.engine.value, store=cfg.store.backend)
        store = open_store(cfg.store)
        await store.open()
        self._store = store
        log.info("store_open", backend=cfg.store.backend, revision=store.revision)
        if self._engine is None:
            self._engine = await asyncio.to_thread(make_engine, cfg)
        log.info("engine_ready", **self._engine.describe())
        # Subscribe before the first snapshot: no write can fall between the two.
        self._queue = store.subscribe()
        await self.apply_current()
        self._loop_task = asyncio.create_task(self.compile_loop(), name="compile-loop")
        for service in build_services(self):
            await service.start()
            self._started.append(service)
            log.info("service_started", service=service.name)
        log.info("ready", generation=self.generation, revision=store.revision, admin_socket=str(cfg.admin_socket))

    async def apply_current(self) -> bool:
        """Compile the store's snapshot as generation + 1 and apply it; False if refused.

        DataplaneError from ``engine.apply`` propagates.
        """
        snapshot = self.store.snapshot()
        generation = self.generation + 1
        t0 = time.perf_counter()
        checked, self._checked = self._checked, None
        try:
            if checked is not None and checked[0] is snapshot:  # compiled by check() already
                ruleset = dataclasses.replace(checked[1], generation=generation)
            else:
                ruleset = await self._compiled(snapshot, generation)
        except CompileError as exc:
            self._refused(exc, snapshot.revision)
            await self._mark_compiled(snapshot.revision)
            return False
        compiled_s = time.perf_counter() - t0
        async with self.engine_lock:
            if self.engine.cheap(ruleset):
                self.engine.apply(ruleset)
            else:
                await asyncio.to_thread(self.engine.apply, ruleset)
        for listener in self._ruleset_listeners:
            listener(ruleset)
        self.generation = generation
        self.applied_revision = snapshot.revision
        self.last_refusal = None
        log.info(
            "ruleset_applied",
            generation=generation,
            revision=snapshot.revision,
            rules=len(ruleset.rules),
            dns_rules=len(ruleset.dns_rules),
            compile_ms=round(compiled_s * 1000, 3),
            apply_ms=round((time.perf_counter() - t0 - compiled_s) * 1000, 3),
        )
        await self._mark_compiled(snapshot.revision)
        return True

    def add_ruleset_listener(self, listener: Callable[[CompiledRuleSet], None]) -> None:
        """Call ``listener`` with the rule set in force now, if any, and with every one applied later.

        It runs in the event loop right after ``engine.apply`` returns, before
        anything else sees the new generation (``settled()`` waiters included),
        so whatever it updates (the DNS responder's table) is in step with the
        engine from the next event on. It must not block or raise.
        """
        self._ruleset_listeners.append(listener)
        if self._engine is not None and self._engine.ruleset is not None:
            listener(self._engine.ruleset)

    @property
    def services(self) -> tuple[Service, ...]:
        """The services started so far, in start order."""
        return tuple(self._started)

    async def _compiled(self, snapshot: Snapshot, generation: int) -> CompiledRuleSet:
        """``snapshot`` compiled as ``generation``: on the event loop when that compiles at most
        INLINE_RULES rules with ports and neighbours already known, else in a worker thread.

        The snapshot is immutable, so the compiler may run off the event loop.
        """
        ruleset = self._compile_few(snapshot, generation)
        if ruleset is not None:
            return ruleset
        return await asyncio.to_thread(self._compile, snapshot, generation)

    async def check(self, snapshot: Snapshot) -> None:
        """Compile ``snapshot`` as the compile loop would (off the event loop unless it compiles few rules).

        Raises CompileError when the data plane would refuse it: a store
        SnapshotCheck (Mm5 and Mp1 pass it to their writes). The newest result
        is kept: the store hands out the checked snapshot object itself once
        the write commits, and ``apply_current`` then applies this compilation
        instead of compiling the same snapshot again.
        """
        ruleset = await self._compiled(snapshot, self.generation + 1)
        self._checked = (snapshot, ruleset)

    def _refused(self, exc: CompileError, revision: int) -> None:
        problems = [str(p) for p in exc.problems] or [exc.detail]
        log.error(
            "ruleset_refused",
            revision=revision,
            kept_generation=self.generation,
            problems=len(problems),
            detail=exc.detail,
        )
        for p in exc.problems:
            log.error("rule_problem", revision=revision, app=p.app_instance_id, rule=p.rule_id, field=p.field, message=p.message)
        self.last_refusal = {"revision": revision, "kept_generation": self.generation, "problems": problems}

    async def _mark_compiled(self, revision: int) -> None:
        async with self._settled:
            self.compiled_revision = max(self.compiled_revision, revision)
            self._settled.notify_all()

    async def settled(self, revision: int, timeout: float = 10.0) -> None:
        """Wait until the store at ``revision`` (or later) was compiled, applied or refused.

        Raises TimeoutError after ``timeout`` seconds, and the compile loop's
        error if it stopped on one.
        """

        async def reached() -> None:
            async with self._settled:
                await self._settled.wait_for(lambda: self.compiled_revision >= revision)

        assert self._loop_task is not None, "settled() needs a started daemon"
        waiter = asyncio.create_task(reached())
        try:
            await asyncio.wait({waiter, self._loop_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self.compiled_revision >= revision:
            return
        if self._loop_task.done():
            self._loop_task.result()  # raises the loop's error
        raise TimeoutError(f"store revision {revision} not compiled within {timeout} s")

    async def _next_batch(self, queue: asyncio.Queue[StoreEvent]) -> list[StoreEvent]:
        """The next event and every one arriving within ``apply_batch_ms`` of it."""
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.dataplane.apply_batch_ms / 1000
        while (remaining := deadline - loop.time()) > 0:
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        while not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def compile_loop(self) -> None:
        """Recompile and apply on every batch of data-plane events; runs until cancelled."""
        assert self._queue is not None
        while True:
            batch = await self._next_batch(self._queue)
            relevant = [e for e in batch if e.affects_dataplane and e.revision > self.compiled_revision]
            if not relevant:
                log.debug("events_skipped", events=len(batch), newest=batch[-1].revision)
                continue
            log.debug("events", events=len(batch), relevant=len(relevant), newest=relevant[-1].revision)
            await self.apply_current()

    async def serve(self, stop: asyncio.Event) -> int:
        """Wait until ``stop`` is set (0) or the compile loop fails to apply (1)."""
        assert self._loop_task is not None, "serve() needs a started daemon"
        loop_task = self._loop_task
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
        if loop_task.done():
            exc = loop_task.exception()
            if isinstance(exc, DataplaneError):
                log.error("apply_failed", error=str(exc), generation=self.generation)
                print(f"mep: applying a rule set failed, stopping: {exc}", file=sys.stderr)
                return 1
            if exc is not None:
                raise exc
        log.info("stopping", generation=self.generation)
        await self._stop_services()
        await self._stop_loop()
        return 0

    async def _stop_loop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except MepError:
            pass  # already reported by serve() or settled()

    async def _stop_services(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception as exc:  # keep stopping the others; the error is reported
                log.error("service_stop_failed", service=service.name, error=str(exc))
            else:
                log.info("service_stopped", service=service.name)

    async def close(self) -> None:
        """Stop what is still running, close the engine, then the store. Safe to call twice."""
        await self._stop_services()
        await self._stop_loop()
        if self._store is not None and self._queue is not None:
            self._store.unsubscribe(self._queue)
            self._queue = None
        if self._engine is not None:
            await asyncio.to_thread(self._engine.close)  # netlink work (pyroute2's sync API) off the loop
        self._close_compiler()
        if self._store is not None:
            await self._store.close()
            self._store = None
        log.info("stopped")


def tune_gc() -> None:
    """Set the collector up for a long-running daemon: what start-up loaded (the whole store) is frozen,
    so full collections no longer traverse it, and young collections run every GC_YOUNG_THRESHOLD
    allocations. Cycles are still collected; objects freed by reference counting go at once as before."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def run(config: Config) -> int:
    """Run the daemon until SIGTERM/SIGINT; the process exit status (0, or 1 on failure)."""
    setup_logging(config.log)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(config)
    try:
        try:
            await daemon.start()
        except (MepError, OSError) as exc:
            log.error("startup_failed", error=str(exc))
            print(f"mep: cannot start: {exc}", file=sys.stderr)
            return 1
        tune_gc()
        return await daemon.serve(stop)
    finally:
        await daemon.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
