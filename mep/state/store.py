"""The Store interface: the only writer of platform state.

Two backends implement it, with one behaviour, proved by one test suite
(tests/unit/test_store.py runs every test against both):

- ``SqliteStore`` (mep/state/sqlite.py): the embedded default, one file, WAL.
- ``EtcdStore`` (mep/state/etcd.py): etcd v3 through ``aetcd``.

Contract shared by both backends:

- **Revisions.** Every successful write increments one store-wide revision;
  the written records carry it (``Record.revision``) and it is their ETag.
  ``expected_revision`` on a write makes it conditional (If-Match): a
  mismatch raises PreconditionFailed and writes nothing.
- **Atomicity.** Each method is one transaction. ``replace_app_config``
  replaces an app's traffic rules, DNS rules and services in one step.
  Deleting an app deletes its rules, services and subscriptions with it.
- **Rule ids.** A traffic or DNS rule gets a platform-wide integer id from one
  never-reused sequence the first time it is stored; updates keep it.
- **Reads** come from an in-memory view kept equal to the backend (no I/O on a
  read), so they are cheap enough for the Mp1 hot path.
- **Events.** Every write emits one StoreEvent per changed object, in revision
  order, to every ``subscribe()`` queue. The daemon's compiler loop is one
  such subscriber.
- **Errors.** Unknown ids raise NotFound, duplicates Conflict, lifecycle
  violations InvalidTransition, an unreachable backend StoreUnavailable.
- **Checks.** Writes that can change what the data plane enforces take an
  optional ``check``: it is awaited with the Snapshot the write would
  produce, inside the write (no other write of this store can come between
  the check and the commit). If it raises, nothing is written and the
  exception propagates. Mp1 passes the daemon's compiler here, so a rule set
  the compiler would refuse is never committed.
"""
from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Iterable

from ..models import DnsRule, ServiceInfo, TrafficRule
from .lifecycle import LifecycleEvent
from .records import (
    AppConfig,
    AppInstance,
    EventKind,
    Snapshot,
    StoredDnsRule,
    StoredService,
    StoredSubscription,
    StoredTask,
    StoredTrafficRule,
    StoreEvent,
    SubscriptionKind,
)

__all__ = ["Store", "SnapshotCheck"]

# Awaited with the snapshot a write would produce; raising refuses the write.
SnapshotCheck = Callable[[Snapshot], Awaitable[None]]


class Store(abc.ABC):
    """Platform state: app instances, rules, services, subscriptions."""

    # -- life ---------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect/create the backend and load the in-memory view."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the backend; subscriber queues receive no more events."""

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The revision of the last write this view has seen."""

    @abc.abstractmethod
    def subscribe(self) -> asyncio.Queue[StoreEvent]:
        """A new unbounded queue that receives every event after this call."""

    @abc.abstractmethod
    def unsubscribe(self, queue: asyncio.Queue[StoreEvent]) -> None:
        """Stop delivering events to ``queue``."""

    @abc.abstractmethod
    def snapshot(self) -> Snapshot:
        """A consistent view of apps and rules at ``self.revision``."""

    # -- application instances -------------------------------------------
    @abc.abstractmethod
    async def create_app(self, app: AppInstance) -> AppInstance:
        """Store a new app instance (its revision is assigned); Conflict if it exists."""

    @abc.abstractmethod
    def get_app(self, app_instance_id: str) -> AppInstance:
        """The app instance; NotFound if unknown."""

    @abc.abstractmethod
    def list_apps(self) -> list[AppInstance]:
        """Every app instance, ordered by id."""

    @abc.abstractmethod
    async def transition_app(
        self,
        app_instance_id: str,
        event: LifecycleEvent,
        *,
        expected_revision: int | None = None,
        check: SnapshotCheck | None = None,
    ) -> AppInstance:
        """Apply a lifecycle event (lifecycle.next_state); InvalidTransition if not allowed."""

    @abc.abstractmethod
    async def set_app_credentials(self, app_instance_id: str, client_id: str, client_secret_hash: str) -> AppInstance:
        """Replace the app's Mp1 client id and secret hash; Conflict if another app has the client id."""

    @abc.abstractmethod
    async def delete_app(self, app_instance_id: str) -> None:
        """Delete the app with its rules, services and subscriptions; NotFound if unknown."""

    @abc.abstractmethod
    async def replace_app_config(
        self, app_instance_id: str, config: AppConfig, *, generation: int, check: SnapshotCheck | None = None
    ) -> AppInstance:
        """Replace the app's rules and services atomically and set ``config_generation``.

        Rules keep their rule ids when their trafficRuleId/dnsRuleId survives.
        A ``generation`` equal to the stored one with an identical config is a
        no-op (no revision, no event); a lower one raises PreconditionFailed.
        """

    @abc.abstractmethod
    async def reset_app_config(
        self, app_instance_id: str, config: AppConfig, *, generation: int, expected_generation: int
    ) -> AppInstance:
        """Put the app back to an earlier configuration: as ``replace_app_config``, but ``generation``
        may be lower than the applied one.

        Only while the app is at ``expected_generation``, else PreconditionFailed
        (a newer configuration has been applied since, and it stands). Mm5 uses
        it to revert a configuration the data plane failed to apply.
        """

    @abc.abstractmethod
    async def clear_app(self, app_instance_id: str, kinds: Iterable[EventKind]) -> int:
        """Delete every traffic rule, DNS rule, service or subscription (per ``kinds``) of the app
        in one write; the app itself stays. Returns how many records went (0: no write, no event).
        NotFound if the app is unknown."""

    # -- Mm5 configuration tasks ------------------------------------------
    @abc.abstractmethod
    async def put_task(self, task: StoredTask) -> StoredTask:
        """Create or replace ``task`` (by task_id) under its app; NotFound if the app is unknown.

        The store appends ``(state, time)`` to the task's history when its state
        changes, and keeps at most MAX_TASKS_PER_APP tasks per app, dropping the
        oldest finished ones first but never the app's newest ACTIVE task.
        Deleting the app deletes its tasks.
        """

    @abc.abstractmethod
    def get_task(self, task_id: str) -> StoredTask:
        """The task, whichever app it belongs to; NotFound if unknown."""

    @abc.abstractmethod
    def list_tasks(self, app_instance_id: str) -> list[StoredTask]:
        """The app's tasks in order of acceptance (seq); NotFound if the app is unknown."""

    # -- traffic rules ----------------------------------------------------
    @abc.abstractmethod
    async def put_traffic_rule(
        self,
        app_instance_id: str,
        rule: TrafficRule,
        *,
        expected_revision: int | None = None,
        check: SnapshotCheck | None = None,
    ) -> StoredTrafficRule:
        """Create or replace the rule named by ``rule.trafficRuleId``; NotFound if the app is unknown."""

    @abc.abstractmethod
    def get_traffic_rule(self, app_instance_id: str, traffic_rule_id: str) -> StoredTrafficRule:
        """NotFound if the app or the rule is unknown."""

    @abc.abstractmethod
    def list_traffic_rules(self, app_instance_id: str) -> list[StoredTrafficRule]:
        """The app's rules by rule id; NotFound if the app is unknown."""

    @abc.abstractmethod
    async def delete_traffic_rule(self, app_instance_id: str, traffic_rule_id: str) -> None:
        """NotFound if the app or the rule is unknown."""

    # -- DNS rules ----------------------------------------------------------
    @abc.abstractmethod
    async def put_dns_rule(
        self,
        app_instance_id: str,
        rule: DnsRule,
        *,
        expected_revision: int | None = None,
        check: SnapshotCheck | None = None,
    ) -> StoredDnsRule:
        """Create or replace; Conflict if another app has an ACTIVE rule for the same domainName."""

    @abc.abstractmethod
    def get_dns_rule(self, app_instance_id: str, dns_rule_id: str) -> StoredDnsRule: ...

    @abc.abstractmethod
    def list_dns_rules(self, app_instance_id: str) -> list[StoredDnsRule]: ...

    @abc.abstractmethod
    async def delete_dns_rule(self, app_instance_id: str, dns_rule_id: str) -> None: ...

    # -- services -------------------------------------------------------------
    @abc.abstractmethod
    async def put_service(
        self, app_instance_id: str, service: ServiceInfo, *, expected_revision: int | None = None
    ) -> StoredService:
        """Create (serInstanceId None: one is assigned) or replace (serInstanceId set: NotFound if unknown)."""

    @abc.abstractmethod
    def get_service(self, ser_instance_id: str) -> StoredService: ...

    @abc.abstractmethod
    def list_services(self, app_instance_id: str | None = None) -> list[StoredService]:
        """All services, or those the app produces."""

    @abc.abstractmethod
    async def delete_service(self, app_instance_id: str, ser_instance_id: str) -> None: ...

    # -- subscriptions ----------------------------------------------------------
    @abc.abstractmethod
    async def create_subscription(
        self, app_instance_id: str, kind: SubscriptionKind, body: dict[str, object], *, subscription_id: str | None = None
    ) -> StoredSubscription:
        """Store a subscription under ``subscription_id`` (chosen by the caller, so that ``body`` can link
        to it; Conflict if the app already has it) or a new uuid4; NotFound if the app is unknown."""

    @abc.abstractmethod
    def get_subscription(self, app_instance_id: str, subscription_id: str) -> StoredSubscription: ...

    @abc.abstractmethod
    def list_subscriptions(
        self, app_instance_id: str | None = None, kind: SubscriptionKind | None = None
    ) -> list[StoredSubscription]: ...

    @abc.abstractmethod
    async def delete_subscription(self, app_instance_id: str, subscription_id: str) -> None: ...
