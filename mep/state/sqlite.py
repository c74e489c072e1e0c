"""SqliteStore: the embedded default backend, one SQLite file.

Durability: the database runs in WAL mode with ``synchronous=FULL``, so a
write method returns only after its transaction is fsynced; committed state
survives the process being killed (kill -9) and the machine losing power.

One process owns the file: it is opened with ``locking_mode=EXCLUSIVE``, so a
second store (in this process or another) fails to open with
StoreUnavailable instead of silently diverging from the first one's view.
The lock dies with the process, so a killed MEP does not block its restart.

Schema (``PRAGMA user_version`` 1)::

    meta(name, value)                         'revision' and 'next_rule_id'
    records(kind, app_instance_id, key, body) one row per record; kind is an
                                              EventKind value, key the record id
                                              (the app id for kind 'app'), body
                                              view.encode_record's JSON

Each write method is one ``BEGIN IMMEDIATE`` .. ``COMMIT``: the rows its
events name, then both meta rows. The blocking sqlite3 calls run inline on
the event loop (each commit is one fsync); ViewStore's write lock keeps them
from interleaving.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreUnavailable
from .view import ChangeSet, ViewStore, decode_record, encode_record, group_records

__all__ = ["SqliteStore"]

_SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS records ("
    " kind TEXT NOT NULL, app_instance_id TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (kind, app_instance_id, key)) WITHOUT ROWID",
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('next_rule_id', 1)",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
# How long open() waits for a lock held by another connection before failing.
_BUSY_TIMEOUT_S = 1.0


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SqliteStore(ViewStore):
    """The Store in one SQLite file at ``path`` (parent directories are created)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self._path = Path(path)
        self._db: sqlite3.Connection | None = None

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        hint = " (another MEP process has it open?)" if "locked" in str(exc) else ""
        return StoreUnavailable(f"sqlite {self._path}: {exc}{hint}", field="store.sqlite.path")

    async def open(self) -> None:
        """Create or open the file, take its lock and load every record into the view."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._unavailable(exc) from exc
        try:
            # EXCLUSIVE before WAL: the WAL index then lives in heap memory and
            # the lock taken by the first write below is held until close().
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            with _transaction(db):
                (version,) = db.execute("PRAGMA user_version").fetchone()
                if version not in (0, _SCHEMA_VERSION):
                    raise StoreUnavailable(
                        f"sqlite {self._path}: schema version {version}, this MEP reads version {_SCHEMA_VERSION}"
                    )
                for statement in _SCHEMA:
                    db.execute(statement)
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
                rows = db.execute("SELECT kind, body FROM records").fetchall()
        except sqlite3.Error as exc:
            db.close()
            raise self._unavailable(exc) from exc
        except StoreUnavailable:
            db.close()
            raise
        self._db = db
        apps = group_records(decode_record(kind, body) for kind, body in rows)
        self._adopt(apps, meta["revision"], meta["next_rule_id"], complete=True)
        self._mark_open()

    async def close(self) -> None:
        """Close the file (checkpointing the WAL) and release its lock."""
        self._mark_closed()
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _persist(self, change: ChangeSet) -> bool:
        db = self._db
        if db is None:
            raise StoreUnavailable("the state store is not open")
        try:
            with _transaction(db):
                for event, record in change.changes():
                    where = (event.kind.value, event.app_instance_id, event.key)
                    if record is None:
                        db.execute("DELETE FROM records WHERE kind = ? AND app_instance_id = ? AND key = ?", where)
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO records (kind, app_instance_id, key, body) VALUES (?, ?, ?, ?)",
                            (*where, encode_record(record)),
                        )
                db.executemany(
                    "UPDATE meta SET value = ? WHERE name = ?",
                    [(change.revision, "revision"), (change.next_rule_id, "next_rule_id")],
                )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return True
