"""EtcdStore: the Store in etcd v3, through aetcd (asyncio, gRPC).

Key layout under ``prefix`` (default ``/mep/``)::

    <prefix>meta           {"revision": R, "next_rule_id": S, "apps": N}
                           the store revision, the rule-id sequence, and how
                           many app documents the transaction that wrote it
                           changed (for the watch, below)
    <prefix>apps/<app id>  one JSON document per app instance (AppRecords.to_document):
                           the AppInstance with all its traffic rules, DNS rules,
                           services and subscriptions; <app id> is percent-encoded

Record revisions are the store's own counter (``meta.revision``), not
etcd's mod_revision: they then count writes to this store only, exactly as in
SqliteStore, whatever else the etcd cluster holds.

Every write is one etcd transaction::

    compare  mod_revision(<prefix>meta) == the mod_revision the view was built from
    success  put <prefix>meta; put or delete <prefix>apps/<app>; get <prefix>meta

A write's validity depends on the whole store (DNS names across apps, the
rule-id sequence), so it compares the one key every write changes. If another
process wrote first the compare fails, nothing is written, the store waits
for its watch to bring that write into the view, and plans the write again.
Two MEP processes sharing a prefix therefore serialise their writes and never
reuse a rule id.

One document per app keeps every write at three operations, far below etcd's
``--max-txn-ops`` (128 by default) however many rules an app has; an app's
document is bounded by etcd's request size limit (``--max-request-bytes``,
1.5 MiB by default: thousands of rules).

The view follows etcd through a watch on the prefix. The events of one
transaction share an etcd revision; the group is complete when it holds the
meta event and the N app documents it announces. A group at or below the
view's revision is this store's own write, already applied when its
transaction committed. Anything else (a gap, a foreign key, a broken stream)
makes the store reload the whole prefix, diff it into the view (emitting the
events of whatever changed) and watch again from there.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import aetcd

from ..errors import StoreUnavailable
from .view import AppRecords, ChangeSet, ViewStore

__all__ = ["EtcdStore"]

log = logging.getLogger(__name__)

# Pause before reloading after the watch broke, so a down etcd is not spun on.
_RETRY_S = 0.5
# gRPC channel options. By default gRPC backs off reconnecting up to 120 s and
# shares one connection per target across channels, so after an etcd restart
# every call (even from a newly opened store) would fail fast until that
# backoff ran out. An edge site wants its store back within a second.
_CHANNEL_OPTIONS = {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


@dataclass(frozen=True, slots=True)
class _Meta:
    revision: int = 0
    next_rule_id: int = 1
    apps: int = 0  # app documents changed by the transaction that wrote this

    def encode(self) -> bytes:
        fields = {"revision": self.revision, "next_rule_id": self.next_rule_id, "apps": self.apps}
        return json.dumps(fields).encode()

    @classmethod
    def decode(cls, value: bytes) -> _Meta:
        try:
            data = json.loads(value)
            return cls(int(data["revision"]), int(data["next_rule_id"]), int(data["apps"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreUnavailable(f"etcd meta key holds {value[:80]!r}: {exc}") from None


class EtcdStore(ViewStore):
    """The Store under ``prefix`` in an etcd v3 cluster.

    ``open()`` uses the first of ``endpoints`` (``host:port``) that answers;
    a running store stays on that endpoint. ``timeout_s`` bounds every etcd
    call and the wait for the watch after a lost compare.
    """

    def __init__(self, endpoints: Sequence[str], prefix: str = "/mep/", timeout_s: float = 5.0) -> None:
        super().__init__()
        self._endpoints = list(endpoints)
        self._prefix = prefix.encode()
        self._meta_key = self._prefix + b"meta"
        self._apps_prefix = self._prefix + b"apps/"
        self._timeout_s = timeout_s
        self._client: aetcd.Client | None = None
        self._endpoint = ""  # the endpoint in use, for error details
        # mod_revision of <prefix>meta that the view reflects (0: no meta key);
        # the compare of every transaction.
        self._meta_mod = 0
        self._moved = asyncio.Event()  # set (and replaced) whenever the view follows etcd
        self._group: list[Any] = []  # watch events of one etcd revision, until complete
        self._follower: asyncio.Task[None] | None = None

    # -- connection ------------------------------------------------------------
    @contextlib.contextmanager
    def _rpc(self, what: str) -> Iterator[None]:
        try:
            yield
        except (aetcd.ClientError, TimeoutError) as exc:
            raise StoreUnavailable(f"etcd {self._endpoint}: {what} failed: {exc or type(exc).__name__}") from exc

    def _connected(self) -> aetcd.Client:
        if self._client is None:
            raise StoreUnavailable("the state store is not open")
        return self._client

    async def open(self) -> None:
        """Connect to the first endpoint that answers, load the prefix into the view and start watching it."""
        failures = []
        for endpoint in self._endpoints:
            host, _, port = endpoint.rpartition(":")
            self._endpoint = endpoint
            self._client = aetcd.Client(host, int(port), timeout=self._timeout_s, options=_CHANNEL_OPTIONS)
            try:
                start = await self._reload() + 1
            except StoreUnavailable as exc:
                failures.append(exc.detail)
                await self._client.close()
                self._client = None
                continue
            self._mark_open()
            self._follower = asyncio.create_task(self._follow(start), name=f"etcd watch {self._prefix.decode()}")
            return
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(failures), field="store.etcd.endpoints")

    async def close(self) -> None:
        """Stop the watch and close the connection."""
        self._mark_closed()
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
        if self._client is not None:
            # Closing the client also ends a watch the cancel missed: aetcd
            # creates watches under asyncio.wait_for, which on Python 3.11
            # swallows a cancel that arrives as the watch is created.
            await self._client.close()
            self._client = None
        if follower is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    # -- writing -------------------------------------------------------------
    def _app_key(self, app_instance_id: str) -> bytes:
        return self._apps_prefix + quote(app_instance_id, safe="").encode()

    def _app_id(self, key: bytes) -> str | None:
        """The app a key under ``<prefix>apps/`` holds; None for any other key."""
        if not key.startswith(self._apps_prefix):
            return None
        return unquote(key[len(self._apps_prefix) :].decode())

    async def _persist(self, change: ChangeSet) -> bool:
        client = self._connected()
        tx = client.transactions
        meta = _Meta(change.revision, change.next_rule_id, len(change.apps))
        ops = [tx.put(self._meta_key, meta.encode())]
        for app_id, after in change.apps.items():
            key = self._app_key(app_id)
            ops.append(tx.delete(key) if after is None else tx.put(key, after.to_document()))
        ops.append(tx.get(self._meta_key))
        seen = self._meta_mod
        with self._rpc(f"writing revision {change.revision}"):
            succeeded, responses = await client.transaction(
                compare=[tx.mod(self._meta_key) == seen], success=ops, failure=[]
            )
        if succeeded:
            ((_, written),) = responses[-1]
            self._meta_mod = int(written.mod_revision)
            return True
        await self._catch_up(seen)
        return False

    async def _catch_up(self, seen: int) -> None:
        """Wait until the watch has moved the view past meta mod_revision ``seen``."""
        try:
            async with asyncio.timeout(self._timeout_s):
                while self._meta_mod == seen:
                    await self._moved.wait()
        except TimeoutError:
            raise StoreUnavailable(
                f"etcd {self._endpoint}: another writer changed {self._prefix.decode()} and the watch"
                f" did not bring the change within {self._timeout_s}s"
            ) from None

    def _signal_moved(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()

    # -- following -------------------------------------------------------------
    async def _reload(self) -> int:
        """Read the whole prefix into the view; the etcd revision it was read at."""
        async with self._write_lock:
            with self._rpc(f"reading {self._prefix.decode()}"):
                result = await self._connected().get_prefix(self._prefix)
            meta, meta_mod, apps = _Meta(), 0, {}
            for kv in result:
                app_id = self._app_id(kv.key)
                if kv.key == self._meta_key:
                    meta, meta_mod = _Meta.decode(kv.value), int(kv.mod_revision)
                elif app_id is not None:
                    apps[app_id] = AppRecords.from_document(kv.value)
                else:
                    log.warning("etcd %s: ignoring foreign key %r", self._endpoint, kv.key)
            self._adopt(apps, meta.revision, meta.next_rule_id, complete=True)
            self._meta_mod = meta_mod
            self._signal_moved()
            return int(result.header.revision)

    async def _follow(self, start: int | None) -> None:
        """Keep the view equal to etcd until closed: watch, and after any break reload and watch again."""
        while self._is_open:
            try:
                if start is None:
                    start = await self._reload() + 1
                await self._watch(start)
                if self._is_open:
                    log.warning("etcd %s: watch events out of step with the view; reloading", self._endpoint)
            except (aetcd.ClientError, StoreUnavailable) as exc:
                if self._is_open:
                    log.warning("etcd %s: watch broke (%s); reloading in %.1fs", self._endpoint, exc, _RETRY_S)
                    await asyncio.sleep(_RETRY_S)
            start = None
            self._group.clear()

    async def _watch(self, start: int) -> None:
        """Apply watched transactions from etcd revision ``start``; returns when they stop fitting the view."""
        watch = await self._connected().watch_prefix(self._prefix, start_revision=start)
        try:
            async for event in watch:
                if not self._take(event):
                    return
        finally:
            with contextlib.suppress(aetcd.ClientError):
                await watch.cancel()

    def _take(self, event: Any) -> bool:
        """Add one watch event to the current group and apply the group once complete.

        False when the events are not this store's transactions in order.
        """
        if self._group and self._group[0].kv.mod_revision != event.kv.mod_revision:
            return False  # the previous revision ended without completing a transaction
        self._group.append(event)
        metas = [e for e in self._group if e.kv.key == self._meta_key]
        if not metas:
            return True
        if metas[0].kind != aetcd.EventKind.PUT:
            return False
        meta = _Meta.decode(metas[0].kv.value)
        if len(self._group) < 1 + meta.apps:
            return True
        group, self._group = self._group, []
        if meta.revision <= self._view.revision:
            return True  # this store's own write, applied when it committed
        if meta.revision != self._view.revision + 1:
            return False
        apps: dict[str, AppRecords | None] = {}
        for e in group:
            if e is metas[0]:
                continue
            app_id = self._app_id(e.kv.key)
            if app_id is None:
                return False
            apps[app_id] = AppRecords.from_document(e.kv.value) if e.kind == aetcd.EventKind.PUT else None
        self._adopt(apps, meta.revision, meta.next_rule_id, complete=False)
        self._meta_mod = int(metas[0].kv.mod_revision)
        self._signal_moved()
        return True
