"""Platform state: the Store interface, its two backends and what they hold.

``open_store(config)`` picks the backend the configuration names; the caller
awaits ``open()`` on the result. docs/state.md describes the backends, their
durability and the etcd key layout.
"""
from __future__ import annotations

from ..config import StoreConfig
from .etcd import EtcdStore
from .lifecycle import ENFORCED_STATES, AppState, LifecycleEvent, next_state
from .records import (
    MAX_TASKS_PER_APP,
    AppConfig,
    AppCredentials,
    AppInstance,
    EventKind,
    EventOp,
    Record,
    Snapshot,
    StoredDnsRule,
    StoredService,
    StoredSubscription,
    StoredTask,
    StoredTrafficRule,
    StoreEvent,
    SubscriptionKind,
    TaskState,
)
from .sqlite import SqliteStore
from .store import SnapshotCheck, Store

__all__ = [
    "Store",
    "SnapshotCheck",
    "SqliteStore",
    "EtcdStore",
    "open_store",
    "AppState",
    "LifecycleEvent",
    "ENFORCED_STATES",
    "next_state",
    "Record",
    "AppInstance",
    "AppConfig",
    "AppCredentials",
    "StoredTask",
    "TaskState",
    "MAX_TASKS_PER_APP",
    "StoredTrafficRule",
    "StoredDnsRule",
    "StoredService",
    "StoredSubscription",
    "SubscriptionKind",
    "StoreEvent",
    "EventKind",
    "EventOp",
    "Snapshot",
]


def open_store(config: StoreConfig) -> Store:
    """The store ``config.backend`` names, not yet opened."""
    if config.backend == "etcd":
        return EtcdStore(config.etcd.endpoints, config.etcd.prefix, config.etcd.timeout_s)
    return SqliteStore(config.sqlite.path)
