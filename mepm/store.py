"""MEPM's desired state: JSON documents under keys, each with a version for compare-and-set.

Two backends behind one small interface (``DesiredStore``):

- ``SqliteDesired``: one SQLite file, for a single MEPM host. WAL with
  ``synchronous=FULL``; the CLI and a running ``mepm reconcile`` share the
  file (a 5 s busy timeout serialises their writes). A key's version counts
  its writes from 1.
- ``EtcdDesired``: etcd v3 under a prefix (aetcd), for MEPM replicas or
  hosts that already run etcd. A key's version is its etcd mod_revision; a
  conditional write is one transaction comparing it.

``put(key, value, expected=V)`` writes only if the key is at version V
(0: absent) and raises Conflict otherwise; ``expected=None`` writes
unconditionally. The key layout (docs/mepm.md)::

    hosts/<name>         a MEP: Mm5 address and TLS files
    apps/<name>          an app: its AppD, desired state and generation, its instances per host
    status/<app>/<host>  what the last reconciliation saw of that instance

``open_desired(url)``: ``sqlite:///var/lib/mepm/mepm.db`` or
``etcd://127.0.0.1:2379[,host:port...]/mepm/``.
"""
from __future__ import annotations

import abc
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aetcd

from mep.errors import Conflict, InvalidInput, StoreUnavailable

__all__ = ["Entry", "DesiredStore", "SqliteDesired", "EtcdDesired", "open_desired", "DEFAULT_STORE_URL"]

DEFAULT_STORE_URL = "sqlite:///var/lib/mepm/mepm.db"
_MAX_VALUE_BYTES = 1 << 20  # one app document: its AppD with thousands of rules fits
_ETCD_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Entry:
    """One document and the version it was read at."""

    key: str
    value: dict[str, Any]
    version: int


def _encode(key: str, value: dict[str, Any]) -> bytes:
    data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > _MAX_VALUE_BYTES:
        raise InvalidInput(f"{key}: the document is {len(data)} bytes, more than {_MAX_VALUE_BYTES}")
    return data


def _decode(key: str, data: bytes | str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise StoreUnavailable(f"MEPM store key {key} holds something that is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise StoreUnavailable(f"MEPM store key {key} holds {type(value).__name__}, not a document")
    return value


def _mismatch(key: str, expected: int, found: int) -> Conflict:
    what = "does not exist" if found == 0 else f"is at version {found}"
    return Conflict(f"{key} {what}, not at version {expected}: someone else changed it; try again")


class DesiredStore(abc.ABC):
    """Versioned JSON documents under string keys (module docstring)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect or create; StoreUnavailable when the backend cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the backend."""

    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The document at ``key``, or None."""

    @abc.abstractmethod
    async def list(self, prefix: str) -> list[Entry]:
        """Every document whose key starts with ``prefix``, by key."""

    @abc.abstractmethod
    async def put(self, key: str, value: dict[str, Any], *, expected: int | None) -> int:
        """Write ``value``; Conflict unless ``key`` is at version ``expected`` (None: any). The new version."""

    @abc.abstractmethod
    async def delete(self, key: str, *, expected: int | None) -> None:
        """Delete ``key`` (absent: nothing to do); Conflict unless at version ``expected`` (None: any)."""

    async def __aenter__(self) -> "DesiredStore":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SqliteDesired(DesiredStore):
    """Desired state in one SQLite file (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("the MEPM store is not open")
        return self._db

    async def open(self) -> None:
        """Create or open the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                " version INTEGER NOT NULL) WITHOUT ROWID"
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"MEPM store {self.path}: {exc}", field="--store") from None
        self._db = db

    async def close(self) -> None:
        """Close the file."""
        if self._db is not None:
            self._db.close()
            self._db = None

    async def get(self, key: str) -> Entry | None:
        """The document at ``key``, or None."""
        row = self._conn().execute("SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else Entry(key, _decode(key, row[0]), int(row[1]))

    async def list(self, prefix: str) -> list[Entry]:
        """Documents under ``prefix``, by key."""
        rows = self._conn().execute(
            "SELECT key, value, version FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
        ).fetchall()
        return [Entry(k, _decode(k, v), int(n)) for k, v, n in rows]

    async def put(self, key: str, value: dict[str, Any], *, expected: int | None) -> int:
        """Conditional write in one IMMEDIATE transaction."""
        data = _encode(key, value).decode()
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()
            found = int(row[0]) if row else 0
            if expected is not None and found != expected:
                db.execute("ROLLBACK")
                raise _mismatch(key, expected, found)
            db.execute("INSERT OR REPLACE INTO kv (key, value, version) VALUES (?, ?, ?)", (key, data, found + 1))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreUnavailable(f"MEPM store {self.path}: {exc}") from None
        return found + 1

    async def delete(self, key: str, *, expected: int | None) -> None:
        """Conditional delete."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()
            found = int(row[0]) if row else 0
            if expected is not None and found != expected:
                db.execute("ROLLBACK")
                raise _mismatch(key, expected, found)
            db.execute("DELETE FROM kv WHERE key = ?", (key,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreUnavailable(f"MEPM store {self.path}: {exc}") from None


class EtcdDesired(DesiredStore):
    """Desired state under a prefix in etcd v3 (module docstring)."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self._client: aetcd.Client | None = None
        self._endpoint = ""

    def _conn(self) -> aetcd.Client:
        if self._client is None:
            raise StoreUnavailable("the MEPM store is not open")
        return self._client

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _failed(self, what: str, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"MEPM store etcd {self._endpoint}: {what} failed: {exc or type(exc).__name__}")

    async def open(self) -> None:
        """Connect to the first endpoint that answers a read of the prefix."""
        failures = []
        for endpoint in self.endpoints:
            host, _, port = endpoint.rpartition(":")
            client = aetcd.Client(host, int(port), timeout=_ETCD_TIMEOUT_S)
            try:
                await client.get(self._key("hosts/"))
            except (aetcd.ClientError, TimeoutError) as exc:
                failures.append(f"{endpoint}: {exc or type(exc).__name__}")
                await client.close()
                continue
            self._client, self._endpoint = client, endpoint
            return
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(failures), field="--store")

    async def close(self) -> None:
        """Close the connection."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def get(self, key: str) -> Entry | None:
        """The document at ``key``, or None."""
        try:
            result = await self._conn().get(self._key(key))
        except (aetcd.ClientError, TimeoutError) as exc:
            raise self._failed(f"reading {key}", exc) from None
        return None if result is None else Entry(key, _decode(key, result.value), int(result.mod_revision))

    async def list(self, prefix: str) -> list[Entry]:
        """Documents under ``prefix``, by key."""
        try:
            result = await self._conn().get_prefix(self._key(prefix))
        except (aetcd.ClientError, TimeoutError) as exc:
            raise self._failed(f"reading {prefix}", exc) from None
        entries = []
        for kv in result:
            key = kv.key.decode()[len(self.prefix):]
            entries.append(Entry(key, _decode(key, kv.value), int(kv.mod_revision)))
        return sorted(entries, key=lambda e: e.key)

    async def put(self, key: str, value: dict[str, Any], *, expected: int | None) -> int:
        """One transaction: compare mod_revision, put, read back the new revision."""
        client = self._conn()
        tx = client.transactions
        k = self._key(key)
        compare = [] if expected is None else [tx.mod(k) == expected]
        try:
            ok, responses = await client.transaction(
                compare=compare, success=[tx.put(k, _encode(key, value)), tx.get(k)], failure=[tx.get(k)]
            )
        except (aetcd.ClientError, TimeoutError) as exc:
            raise self._failed(f"writing {key}", exc) from None
        found = responses[-1]
        revision = int(found[0][1].mod_revision) if found else 0
        if not ok:
            raise _mismatch(key, expected or 0, revision)
        return revision

    async def delete(self, key: str, *, expected: int | None) -> None:
        """One transaction: compare mod_revision, delete."""
        client = self._conn()
        tx = client.transactions
        k = self._key(key)
        compare = [] if expected is None else [tx.mod(k) == expected]
        try:
            ok, responses = await client.transaction(compare=compare, success=[tx.delete(k)], failure=[tx.get(k)])
        except (aetcd.ClientError, TimeoutError) as exc:
            raise self._failed(f"deleting {key}", exc) from None
        if not ok:
            found = responses[-1]
            raise _mismatch(key, expected or 0, int(found[0][1].mod_revision) if found else 0)


def open_desired(url: str) -> DesiredStore:
    """The store a URL names (not yet opened): ``sqlite:///PATH`` or ``etcd://HOST:PORT[,...]/PREFIX/``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite" and parts.path:
        return SqliteDesired(Path(parts.path))
    if parts.scheme == "etcd" and parts.netloc:
        prefix = parts.path if parts.path.endswith("/") else parts.path + "/"
        endpoints = parts.netloc.split(",")
        if prefix == "/" or any(not e.rpartition(":")[2].isdigit() for e in endpoints):
            raise InvalidInput(f"'{url}': etcd://HOST:PORT[,HOST:PORT...]/PREFIX/ with a prefix", field="--store")
        return EtcdDesired(endpoints, prefix)
    raise InvalidInput(
        f"'{url}' is not a MEPM store URL: sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT...]/PREFIX/",
        field="--store",
    )
