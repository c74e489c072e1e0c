"""Notification delivery: POST to an app's callbackReference, off the request path, with retries and a log.

``Notifier.send(subscription, body)`` returns at once with a ``Delivery``
(status PENDING); a task then POSTs ``body`` as JSON to the subscription's
callbackReference:

- an attempt succeeds on any 2xx answer; it fails on another status, a
  connection error or ``notifications.timeout_s`` without an answer;
- a failed attempt is retried up to ``notifications.max_attempts`` attempts
  in all, waiting ``backoff_s``, then twice as long each time, at most
  ``max_backoff_s``; redirects are not followed (a callback that moved is a
  failure, not a reason to POST somewhere else);
- at most ``notifications.concurrency`` POSTs are in flight at once, and at
  most ``notifications.queue_size`` deliveries pending: beyond that a new
  one is DROPPED at once (and logged), so a dead callback cannot grow memory
  without bound.

Every delivery ends DELIVERED, FAILED (attempts exhausted), DROPPED (queue
full) or ABANDONED (the daemon stopped before it finished). Finished
deliveries go to the **delivery log**: the newest ``notifications.log_entries``
are kept in memory and appended, one JSON object per line, to
``notifications.log_file``, which is compacted to that many lines whenever
it reaches twice as many, and read back at start, so ``mep notifications``
shows deliveries from before a restart. The file is flushed per line but not
fsynced: a power cut may lose the last lines, which is the price of not
putting an fsync on every notification.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from ..config import Mp1NotificationsConfig
from ..log import get_logger
from ..state.records import StoredSubscription

__all__ = ["DeliveryStatus", "Delivery", "DeliveryLog", "Notifier"]

log = get_logger(__name__)


class DeliveryStatus(StrEnum):
    """Where a delivery stands; every one but PENDING is final."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"
    ABANDONED = "abandoned"


@dataclass
class Delivery:
    """One notification to one subscriber, with the outcome of its last attempt."""

    id: str
    created_at: float
    app_instance_id: str  # the subscriber
    subscription_id: str
    notification_type: str
    callback: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_status: int | None = None  # HTTP status of the last attempt, None if it got no answer
    last_error: str | None = None
    finished_at: float | None = None
    body: dict[str, Any] = field(default_factory=dict, repr=False)  # not logged: it is the app's business

    def record(self) -> dict[str, Any]:
        """The log entry: everything but the body."""
        out = asdict(self)
        del out["body"]
        out["status"] = self.status.value
        return out


class DeliveryLog:
    """The newest ``entries`` finished deliveries, in memory and in a compacted JSON-lines file."""

    def __init__(self, path: Path, entries: int) -> None:
        self.path = path
        self.entries = entries
        self._memory: deque[dict[str, Any]] = deque(maxlen=entries)
        self._lines = 0
        self._file: TextIO | None = None

    def open(self) -> None:
        """Read what the file holds (the newest ``entries`` lines; unreadable lines skipped), then append to it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines[-self.entries :]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(entry, dict):
                self._memory.append(entry)
        self._lines = len(lines)
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        """Close the file (entries stay readable in memory)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, entry: dict[str, Any]) -> None:
        """Keep ``entry``; compact the file to the newest ``entries`` lines once it holds twice that many."""
        self._memory.append(entry)
        if self._file is None:
            return
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()
        self._lines += 1
        if self._lines >= 2 * self.entries:
            self._compact()

    def _compact(self) -> None:
        assert self._file is not None
        self._file.close()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in self._memory), encoding="utf-8")
        os.replace(tmp, self.path)
        self._lines = len(self._memory)
        self._file = self.path.open("a", encoding="utf-8")

    def newest(self) -> list[dict[str, Any]]:
        """Every kept entry, newest first."""
        return list(reversed(self._memory))


class Notifier:
    """Delivers notifications (see the module docstring). ``start()`` before ``send()``; ``stop()`` once."""

    def __init__(self, config: Mp1NotificationsConfig, log_path: Path) -> None:
        self.config = config
        self.log = DeliveryLog(log_path, config.log_entries)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (notification type, final status) -> deliveries
        self._pending: dict[str, tuple[Delivery, asyncio.Task[None]]] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None

    @property
    def pending(self) -> int:
        """Deliveries not finished yet."""
        return len(self._pending)

    async def start(self) -> None:
        """Read the delivery log and open the HTTP client."""
        self.log.open()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            connector=aiohttp.TCPConnector(limit=self.config.concurrency),
            headers={"User-Agent": f"mep/{version('mep')} (notifications)"},
            trust_env=False,  # never through a proxy from the environment
        )

    async def stop(self) -> None:
        """Abandon what is still pending (logged as ABANDONED), close the client and the log."""
        tasks = [task for _, task in self._pending.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A task cancelled before its first step never ran its own handler.
        for delivery, _ in list(self._pending.values()):
            self._finish(delivery, DeliveryStatus.ABANDONED, error="the daemon stopped before the delivery started")
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.log.close()

    def send(self, subscription: StoredSubscription, notification_type: str, body: dict[str, Any]) -> Delivery:
        """Queue ``body`` for ``subscription``'s callbackReference; returns at once."""
        delivery = Delivery(
            id=uuid.uuid4().hex[:16],
            created_at=time.time(),
            app_instance_id=subscription.app_instance_id,
            subscription_id=subscription.subscription_id,
            notification_type=notification_type,
            callback=str(subscription.body["callbackReference"]),
            body=body,
        )
        if self._session is None or len(self._pending) >= self.config.queue_size:
            why = "the notifier is not running" if self._session is None else (
                f"{len(self._pending)} deliveries are pending (notifications.queue_size)")
            self._finish(delivery, DeliveryStatus.DROPPED, error=why)
            return delivery
        task = asyncio.create_task(self._deliver(delivery), name=f"notify-{delivery.id}")
        self._pending[delivery.id] = (delivery, task)
        log.debug("notification_queued", delivery=delivery.id, app=delivery.app_instance_id,
                  type=notification_type, callback=delivery.callback)
        return delivery

    def deliveries(self) -> list[dict[str, Any]]:
        """Pending deliveries, then finished ones; newest first within each."""
        pending = sorted((d.record() for d, _ in self._pending.values()), key=lambda e: -e["created_at"])
        return pending + self.log.newest()

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            for attempt in range(1, self.config.max_attempts + 1):
                delivery.attempts = attempt
                if await self._attempt(delivery):
                    self._finish(delivery, DeliveryStatus.DELIVERED)
                    return
                if attempt < self.config.max_attempts:
                    delay = min(self.config.backoff_s * 2 ** (attempt - 1), self.config.max_backoff_s)
                    await asyncio.sleep(delay)
            self._finish(delivery, DeliveryStatus.FAILED)
        except asyncio.CancelledError:
            self._finish(delivery, DeliveryStatus.ABANDONED, error="the daemon stopped before the delivery finished")
            raise

    async def _attempt(self, delivery: Delivery) -> bool:
        assert self._session is not None
        async with self._slots:
            try:
                async with self._session.post(delivery.callback, json=delivery.body, allow_redirects=False) as resp:
                    delivery.last_status, delivery.last_error = resp.status, None
                    ok = 200 <= resp.status < 300
                    if not ok:
                        delivery.last_error = f"HTTP {resp.status} {resp.reason or ''}".rstrip()
                    return ok
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                delivery.last_status = None
                delivery.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                return False

    def _finish(self, delivery: Delivery, status: DeliveryStatus, *, error: str | None = None) -> None:
        delivery.status = status
        delivery.finished_at = time.time()
        if error is not None:
            delivery.last_error = error
        self._pending.pop(delivery.id, None)
        self.outcomes[(delivery.notification_type, status.value)] += 1
        self.log.append(delivery.record())
        fields = dict(delivery=delivery.id, app=delivery.app_instance_id, type=delivery.notification_type,
                      callback=delivery.callback, attempts=delivery.attempts, error=delivery.last_error)
        if status is DeliveryStatus.DELIVERED:
            log.info("notification_delivered", **fields)
        else:
            log.warning(f"notification_{status.value}", **fields)
