"""The in-memory view both backends share, and every rule of the store contract.

A write goes through three steps::

    StateView.plan_*()   validate against the view and build a ChangeSet; no side effects
    backend._persist()   write the ChangeSet in one backend transaction
    StateView.apply()    install it in the view; ViewStore fans its events out
    backend._durable()   wait until the transaction survives a power cut; then the write returns

Each rule of the contract in store.py (NotFound, Conflict, If-Match, lifecycle
transitions, DNS name conflicts, rule ids, configuration generations) is
written once, in a ``plan_*`` method of StateView. A backend only persists
change sets and loads state; ViewStore serves every read from the view, with
no I/O.

A ChangeSet carries the complete new state of each app it touches
(``AppRecords``: the instance with all its rules, services and subscriptions)
and the events it causes, computed by one diff (``diff_app``). Loading a
backend and following another writer (etcd's watch) build their change sets
with the same diff (``StateView.adopt``), so an event means the same thing
whichever path produced it. Within one revision, an app's events come in a
fixed order: the app itself when put, then traffic rules, DNS rules, services
and subscriptions (each by key), then the app itself when deleted.
"""
from __future__ import annotations

import abc
import asyncio
import json
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import immutables
from pydantic import ValidationError

from ..errors import Conflict, InvalidInput, NotFound, PreconditionFailed, StoreUnavailable
from ..models import DnsRule, DnsRuleState, ServiceInfo, TrafficRule
from ..sorted_tuples import edited
from .lifecycle import LifecycleEvent, next_state
from .records import (
    MAX_TASKS_PER_APP,
    AppConfig,
    AppInstance,
    EventKind,
    EventOp,
    Record,
    RuleChanges,
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
from .store import SnapshotCheck, Store

__all__ = [
    "CHILD_KINDS",
    "AppRecords",
    "ChangeSet",
    "Plan",
    "StateView",
    "ViewStore",
    "decode_record",
    "diff_app",
    "encode_record",
    "group_records",
]

T = TypeVar("T")
R = TypeVar("R", bound=Record)
RuleRecord = TypeVar("RuleRecord", StoredTrafficRule, StoredDnsRule)

# The record kinds an app owns, in the order their events are emitted.
CHILD_KINDS = (EventKind.TRAFFIC_RULE, EventKind.DNS_RULE, EventKind.SERVICE, EventKind.SUBSCRIPTION, EventKind.TASK)

_RECORD_TYPES: dict[EventKind, type[Record]] = {
    EventKind.APP: AppInstance,
    EventKind.TRAFFIC_RULE: StoredTrafficRule,
    EventKind.DNS_RULE: StoredDnsRule,
    EventKind.SERVICE: StoredService,
    EventKind.SUBSCRIPTION: StoredSubscription,
    EventKind.TASK: StoredTask,
}
_KIND_OF = {cls: kind for kind, cls in _RECORD_TYPES.items()}
# AppRecords field holding each child kind, by trafficRuleId/dnsRuleId/serInstanceId/subscription id.
_FIELD = {
    EventKind.TRAFFIC_RULE: "traffic_rules",
    EventKind.DNS_RULE: "dns_rules",
    EventKind.SERVICE: "services",
    EventKind.SUBSCRIPTION: "subscriptions",
    EventKind.TASK: "tasks",
}
# For error details: what a child is called, and the request field naming it.
_NOUN = {
    EventKind.TRAFFIC_RULE: "traffic rule",
    EventKind.DNS_RULE: "DNS rule",
    EventKind.SERVICE: "service",
    EventKind.SUBSCRIPTION: "subscription",
    EventKind.TASK: "task",
}
_ID_FIELD = {
    EventKind.TRAFFIC_RULE: "trafficRuleId",
    EventKind.DNS_RULE: "dnsRuleId",
    EventKind.SERVICE: "serInstanceId",
    EventKind.SUBSCRIPTION: "subscriptionId",
    EventKind.TASK: "taskId",
}


# -- stored form -------------------------------------------------------------


def _dump(record: Record) -> dict[str, Any]:
    # Record fields as JSON values; the nested ETSI bodies come out in their
    # wire form (aliases, absent optionals omitted), exactly as .to_json().
    return record.model_dump(mode="json", by_alias=True, exclude_none=True)


def _load(kind: EventKind, data: Any) -> Record:
    try:
        return _RECORD_TYPES[kind].model_validate(data)
    except ValidationError as exc:
        raise StoreUnavailable(f"a stored {kind.value} record is invalid: {exc}") from None


def encode_record(record: Record) -> str:
    """The stored form of one record: JSON text (``_dump``'s, serialised in one step)."""
    return record.model_dump_json(by_alias=True, exclude_none=True)


def decode_record(kind: str, text: str | bytes) -> Record:
    """Parse what ``encode_record`` wrote; StoreUnavailable if it is not a valid ``kind`` record."""
    try:
        record_kind = EventKind(kind)
        data = json.loads(text)
    except ValueError as exc:
        raise StoreUnavailable(f"a stored {kind} record is unreadable: {exc}") from None
    return _load(record_kind, data)


def _record_key(record: Record) -> str:
    match record:
        case AppInstance():
            return record.appInstanceId
        case StoredTrafficRule():
            return record.rule.trafficRuleId
        case StoredDnsRule():
            return record.rule.dnsRuleId
        case StoredService():
            return record.service.serInstanceId or ""
        case StoredSubscription():
            return record.subscription_id
        case StoredTask():
            return record.task_id
    raise TypeError(f"not a stored record: {type(record).__name__}")


def _record_app(record: Record) -> str:
    if isinstance(record, AppInstance):
        return record.appInstanceId
    app_instance_id: str = getattr(record, "app_instance_id")
    return app_instance_id


# -- one app's records -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppRecords:
    """Everything stored for one app instance.

    Never mutated: a write builds a new AppRecords sharing the unchanged
    records, so a ChangeSet can hold the new state before it is applied.
    Each kind of child is an immutables.Map (a hash array mapped trie): a
    write to one of an app's 10,000 rules derives the next map in O(log n)
    instead of copying a dict of them all.
    """

    app: AppInstance
    traffic_rules: Mapping[str, StoredTrafficRule] = field(default_factory=immutables.Map)  # by trafficRuleId
    dns_rules: Mapping[str, StoredDnsRule] = field(default_factory=immutables.Map)  # by dnsRuleId
    services: Mapping[str, StoredService] = field(default_factory=immutables.Map)  # by serInstanceId
    subscriptions: Mapping[str, StoredSubscription] = field(default_factory=immutables.Map)  # by subscription id
    tasks: Mapping[str, StoredTask] = field(default_factory=immutables.Map)  # by task id (Mm5 configuration tasks)

    def __post_init__(self) -> None:
        for kind in CHILD_KINDS:
            children = getattr(self, _FIELD[kind])
            if not isinstance(children, immutables.Map):
                object.__setattr__(self, _FIELD[kind], immutables.Map(children))

    def children(self, kind: EventKind) -> immutables.Map[str, Record]:
        """The app's records of one child kind, by key."""
        children: immutables.Map[str, Record] = getattr(self, _FIELD[kind])
        return children

    def record(self, kind: EventKind, key: str) -> Record:
        """The record an event of ``kind`` and ``key`` names."""
        return self.app if kind is EventKind.APP else self.children(kind)[key]

    def with_child(self, kind: EventKind, key: str, record: Record) -> AppRecords:
        """A copy with ``record`` (of ``kind``) stored under ``key``."""
        changed: dict[str, Any] = {_FIELD[kind]: self.children(kind).set(key, record)}
        return replace(self, **changed)

    def without_child(self, kind: EventKind, key: str) -> AppRecords:
        """A copy without the child ``key``."""
        children = self.children(kind)
        if key not in children:
            return self
        changed: dict[str, Any] = {_FIELD[kind]: children.delete(key)}
        return replace(self, **changed)

    def to_document(self) -> bytes:
        """The whole app as one JSON document: ``{"app": {...}, "<kind>": [{...}, ...], ...}``."""
        doc: dict[str, Any] = {EventKind.APP.value: _dump(self.app)}
        for kind in CHILD_KINDS:
            doc[kind.value] = [_dump(r) for _, r in sorted(self.children(kind).items())]
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_document(cls, text: str | bytes) -> AppRecords:
        """Parse what ``to_document`` wrote; StoreUnavailable if it is not one app's records."""
        try:
            doc = json.loads(text)
            items = [(EventKind(k), v) for k, v in doc.items()]
        except (ValueError, AttributeError) as exc:
            raise StoreUnavailable(f"a stored app document is unreadable: {exc}") from None
        records: list[Record] = []
        for kind, value in items:
            records.extend([_load(kind, value)] if kind is EventKind.APP else (_load(kind, v) for v in value))
        return cls.from_records(records)

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> AppRecords:
        """Assemble one app from its records (exactly one AppInstance among them)."""
        app: AppInstance | None = None
        children: dict[EventKind, dict[str, Any]] = {kind: {} for kind in CHILD_KINDS}
        for record in records:
            if isinstance(record, AppInstance):
                app = record
            else:
                children[_KIND_OF[type(record)]][_record_key(record)] = record
        if app is None:
            owners = {_record_app(r) for c in children.values() for r in c.values()}
            raise StoreUnavailable(f"stored records of app instance {sorted(owners)} have no app instance record")
        return cls(app, **{_FIELD[kind]: children[kind] for kind in CHILD_KINDS})


def group_records(records: Iterable[Record]) -> dict[str, AppRecords]:
    """Records as loaded from a backend, assembled per app instance."""
    by_app: dict[str, list[Record]] = {}
    for record in records:
        by_app.setdefault(_record_app(record), []).append(record)
    return {app_id: AppRecords.from_records(recs) for app_id, recs in by_app.items()}


# Child keys a write may have changed, by kind; every other child is the same object before and after.
Touched = Mapping[EventKind, Collection[str]]


def diff_app(
    app_instance_id: str,
    before: AppRecords | None,
    after: AppRecords | None,
    revision: int,
    touched: Touched | None = None,
) -> list[StoreEvent]:
    """One event per object that differs between two states of an app, in emission order.

    ``touched``: compare only these children (a write to one rule of an app
    with 10,000 costs one comparison); None: compare them all.
    """

    def event(kind: EventKind, op: EventOp, key: str) -> StoreEvent:
        return StoreEvent(revision=revision, kind=kind, op=op, app_instance_id=app_instance_id, key=key)

    events = []
    if after is not None and (before is None or before.app != after.app):
        events.append(event(EventKind.APP, EventOp.PUT, app_instance_id))
    for kind in CHILD_KINDS:
        old = before.children(kind) if before is not None else {}
        new = after.children(kind) if after is not None else {}
        keys = {*old, *new} if touched is None else touched.get(kind, ())
        for key in sorted(keys):
            was, now = old.get(key), new.get(key)
            if now is None:
                if was is not None:
                    events.append(event(kind, EventOp.DELETE, key))
            elif was is not now and was != now:
                events.append(event(kind, EventOp.PUT, key))
    if before is not None and after is None:
        events.append(event(EventKind.APP, EventOp.DELETE, app_instance_id))
    return events


# -- change sets -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """One write, ready to persist: the new state of each app it touches and its events."""

    base_revision: int  # the view revision it was planned on; apply() refuses any other
    revision: int  # the store revision after it
    next_rule_id: int  # the rule-id sequence after it
    apps: Mapping[str, AppRecords | None]  # new state of each touched app; None: deleted
    events: tuple[StoreEvent, ...]  # one per changed object

    def changes(self) -> Iterator[tuple[StoreEvent, Record | None]]:
        """Each event with the record it puts (None for a delete): what a per-record backend writes."""
        for event in self.events:
            after = self.apps[event.app_instance_id]
            if event.op is EventOp.DELETE or after is None:
                yield event, None
            else:
                yield event, after.record(event.kind, event.key)


# A planned write: its ChangeSet (None: nothing to write) and what the Store method returns.
Plan = tuple[ChangeSet | None, T]


def _by_rule_id(record: StoredTrafficRule | StoredDnsRule) -> int:
    return record.rule_id


# Rules a write touched, by rule id: (kind, app instance id, key). A rule id names one
# (app, kind, key) for ever (ids are never reused), so it finds the rule in any later state.
RuleIds = dict[int, tuple[EventKind, str, str]]

# How many earlier snapshots a snapshot names its changed traffic rules against
# (Snapshot.rule_changes): the compile loop may take several writes as one
# compilation and still start from the last snapshot it compiled.
_RULE_CHANGES_KEPT = 4


def _moves_apps(change: ChangeSet) -> bool:
    return any(event.kind is EventKind.APP for event in change.events)


def _with_id(record: RuleRecord | None, rule_id: int) -> RuleRecord | None:
    """``record`` if it is the rule ``rule_id`` (a trafficRuleId deleted and stored again has a new rule id)."""
    return record if record is not None and record.rule_id == rule_id else None


def _derived(
    base: Snapshot, revision: int, apps: Mapping[str, AppRecords], touched: RuleIds, apps_changed: bool
) -> Snapshot:
    """``base`` moved to ``revision``: the rules ``touched`` names as they are in ``apps``, and the apps too
    when ``apps_changed``. Costs the touched rules (and one copy of each rule tuple), not a sort of them all."""
    traffic: dict[int, StoredTrafficRule | None] = {}
    dns: dict[int, StoredDnsRule | None] = {}
    for rule_id, (kind, app_id, key) in touched.items():
        records = apps.get(app_id)
        if kind is EventKind.TRAFFIC_RULE:
            traffic[rule_id] = _with_id(records.traffic_rules.get(key) if records else None, rule_id)
        else:
            dns[rule_id] = _with_id(records.dns_rules.get(key) if records else None, rule_id)
    rule_changes = base.rule_changes
    if traffic:
        ids = frozenset(traffic)
        rule_changes = (
            RuleChanges(base.traffic_rules, ids),
            *(RuleChanges(c.since, c.rule_ids | ids) for c in base.rule_changes),
        )[:_RULE_CHANGES_KEPT]
    return Snapshot.model_construct(
        revision=revision,
        apps={app_id: a.app for app_id, a in sorted(apps.items())} if apps_changed else base.apps,
        traffic_rules=edited(base.traffic_rules, _by_rule_id, traffic, (r for r in traffic.values() if r)),
        dns_rules=edited(base.dns_rules, _by_rule_id, dns, (r for r in dns.values() if r)),
        rule_changes=rule_changes,
    )


def _same_config(before: AppRecords, after: AppRecords) -> bool:
    """True when ``after`` configures the app exactly as ``before`` (rules, services, app record)."""
    return (after.app, after.traffic_rules, after.dns_rules, after.services) == (
        before.app,
        before.traffic_rules,
        before.dns_rules,
        before.services,
    )


def _domain_key(name: str) -> str:
    return (name[:-1] if name.endswith(".") else name).lower()


def _member(children: Mapping[str, R], key: str, kind: EventKind, app_instance_id: str) -> R:
    try:
        return children[key]
    except KeyError:
        raise NotFound(
            f"app instance '{app_instance_id}' has no {_NOUN[kind]} '{key}'", field=_ID_FIELD[kind]
        ) from None


def _check_if_match(current: Record | None, expected: int | None, what: str) -> None:
    if expected is None or (current is not None and current.revision == expected):
        return
    have = f"is at revision {current.revision}" if current is not None else "does not exist"
    raise PreconditionFailed(f"{what} {have}, not at the expected revision {expected}", field="If-Match")


class _RuleIds:
    """Rule ids for one plan, drawn from the view's never-reused sequence."""

    def __init__(self, next_rule_id: int) -> None:
        self.next_rule_id = next_rule_id

    def keep_or_new(self, before: StoredTrafficRule | StoredDnsRule | None) -> int:
        if before is not None:
            return before.rule_id
        self.next_rule_id += 1
        return self.next_rule_id - 1


class StateView:
    """Every app with its records at one revision, plus the rule-id sequence.

    ``plan_*`` methods validate a write and return its Plan without changing
    the view; ``apply`` installs a ChangeSet. Both are synchronous, so a
    ChangeSet is applied as one step between two awaits.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.next_rule_id = 1  # the next rule id to hand out; ids are never reused
        self._apps: dict[str, AppRecords] = {}
        self._service_app: dict[str, str] = {}  # serInstanceId -> app instance id
        # The newest snapshot built, and what changed since (snapshot() brings it up to date).
        self._snapshot = Snapshot.model_construct(revision=0, apps={}, traffic_rules=(), dns_rules=())
        self._unsnapped: RuleIds = {}
        self._apps_unsnapped = False

    # -- reading -------------------------------------------------------------
    @property
    def apps(self) -> Mapping[str, AppRecords]:
        """Every app's records by app instance id."""
        return self._apps

    def app(self, app_instance_id: str) -> AppRecords:
        """The app's records; NotFound if unknown."""
        try:
            return self._apps[app_instance_id]
        except KeyError:
            raise NotFound(f"app instance '{app_instance_id}' not found", field="appInstanceId") from None

    def service_owner(self, ser_instance_id: str) -> str:
        """The app producing the service; NotFound if unknown."""
        try:
            return self._service_app[ser_instance_id]
        except KeyError:
            raise NotFound(f"service '{ser_instance_id}' not found", field="serInstanceId") from None

    def snapshot(self) -> Snapshot:
        """Apps and rules at ``self.revision``; rules in rule-id (installation) order. Cached per revision,
        and derived from the previous one: it costs the rules changed since."""
        if self._unsnapped or self._apps_unsnapped or self._snapshot.revision != self.revision:
            self._snapshot = _derived(self._snapshot, self.revision, self._apps, self._unsnapped, self._apps_unsnapped)
            self._unsnapped, self._apps_unsnapped = {}, False
        return self._snapshot

    def keep_snapshot(self, snapshot: Snapshot) -> None:
        """Use ``snapshot`` (a ``preview`` of the change just applied) as the cached snapshot of this revision."""
        if snapshot.revision == self.revision:
            self._snapshot = snapshot
            self._unsnapped, self._apps_unsnapped = {}, False

    def preview(self, change: ChangeSet) -> Snapshot:
        """The snapshot the view would have after ``change``, without applying it."""
        base = self.snapshot()
        apps = dict(self._apps)
        for app_id, after in change.apps.items():
            if after is None:
                apps.pop(app_id, None)
            else:
                apps[app_id] = after
        return _derived(base, change.revision, apps, self._rule_ids(change), _moves_apps(change))

    def _rule_ids(self, change: ChangeSet) -> RuleIds:
        """The rules ``change`` touches, by their rule ids before and after it."""
        touched: RuleIds = {}
        for event in change.events:
            if event.kind not in (EventKind.TRAFFIC_RULE, EventKind.DNS_RULE):
                continue
            for records in (self._apps.get(event.app_instance_id), change.apps[event.app_instance_id]):
                record = records.children(event.kind).get(event.key) if records is not None else None
                if isinstance(record, (StoredTrafficRule, StoredDnsRule)):
                    touched[record.rule_id] = (event.kind, event.app_instance_id, event.key)
        return touched

    # -- applying ------------------------------------------------------------
    def apply(self, change: ChangeSet) -> bool:
        """Install ``change``. False, and nothing changes, if the view is no longer at its base revision
        (it was planned on an older view, or already arrived by another path)."""
        if change.base_revision != self.revision:
            return False
        self._unsnapped.update(self._rule_ids(change))
        self._apps_unsnapped = self._apps_unsnapped or _moves_apps(change)
        for app_id, after in change.apps.items():
            before = self._apps.pop(app_id, None)
            if before is not None:
                for ser_instance_id in before.services:
                    del self._service_app[ser_instance_id]
            if after is not None:
                self._apps[app_id] = after
                self._service_app.update(dict.fromkeys(after.services, app_id))
        self.revision = change.revision
        self.next_rule_id = change.next_rule_id
        return True

    def adopt(
        self, apps: Mapping[str, AppRecords | None], revision: int, next_rule_id: int, *, complete: bool
    ) -> ChangeSet | None:
        """A ChangeSet moving the view to state read from the backend: a load, or another writer's transaction.

        ``complete``: ``apps`` is the whole state, and apps missing from it are
        deleted. None if the view already equals that state.
        """
        after = dict(apps)
        if complete:
            after.update({app_id: None for app_id in self._apps if app_id not in apps})
        change = self._change(after, revision, next_rule_id)
        if not change.events and (revision, next_rule_id) == (self.revision, self.next_rule_id):
            return None
        return change

    def _change(
        self,
        after: Mapping[str, AppRecords | None],
        revision: int,
        next_rule_id: int,
        touched: Touched | None = None,
    ) -> ChangeSet:
        events = tuple(
            event
            for app_id in sorted(after)
            for event in diff_app(app_id, self._apps.get(app_id), after[app_id], revision, touched)
        )
        return ChangeSet(self.revision, revision, next_rule_id, after, events)

    def _next(
        self,
        app_instance_id: str,
        after: AppRecords | None,
        next_rule_id: int | None = None,
        *,
        touched: Touched | None = None,
    ) -> ChangeSet:
        """The ChangeSet of a write to one app, at the next revision; ``touched`` as for diff_app."""
        seq = self.next_rule_id if next_rule_id is None else next_rule_id
        return self._change({app_instance_id: after}, self.revision + 1, seq, touched)

    # -- planning: the rules of the contract ---------------------------------
    def plan_create_app(self, app: AppInstance, *, now: float) -> Plan[AppInstance]:
        """Conflict if the app exists; created_at and updated_at become ``now``."""
        if app.appInstanceId in self._apps:
            raise Conflict(f"app instance '{app.appInstanceId}' already exists", field="appInstanceId")
        record = app.model_copy(update={"revision": self.revision + 1, "created_at": now, "updated_at": now})
        return self._next(app.appInstanceId, AppRecords(record)), record

    def plan_transition_app(
        self, app_instance_id: str, event: LifecycleEvent, *, expected_revision: int | None, now: float
    ) -> Plan[AppInstance]:
        """lifecycle.next_state decides (InvalidTransition); updated_at becomes ``now``."""
        current = self.app(app_instance_id)
        _check_if_match(current.app, expected_revision, f"app instance '{app_instance_id}'")
        state = next_state(current.app.state, event, confirm_ready_required=current.app.confirm_ready_required)
        record = current.app.model_copy(update={"state": state, "updated_at": now, "revision": self.revision + 1})
        return self._next(app_instance_id, replace(current, app=record), touched={}), record

    def plan_set_app_credentials(
        self, app_instance_id: str, client_id: str, client_secret_hash: str, *, now: float
    ) -> Plan[AppInstance]:
        """Replace the app's Mp1 client credentials; Conflict if another app uses the client id."""
        current = self.app(app_instance_id)
        self._check_client_id(app_instance_id, client_id)
        record = current.app.model_copy(update={"client_id": client_id, "client_secret_hash": client_secret_hash,
                                               "updated_at": now, "revision": self.revision + 1})
        return self._next(app_instance_id, replace(current, app=record), touched={}), record

    def plan_delete_app(self, app_instance_id: str) -> Plan[None]:
        """The app goes with everything it owns."""
        self.app(app_instance_id)
        return self._next(app_instance_id, None), None

    def plan_replace_app_config(
        self, app_instance_id: str, config: AppConfig, *, generation: int, now: float
    ) -> Plan[AppInstance]:
        """The app's rules, services, required services and (when given) credentials become ``config``;
        subscriptions and tasks stay.

        A rule whose id survives keeps its rule id, and its revision too if its
        body is unchanged (no event). A service given with a serInstanceId is
        stored under it (Conflict if another app produces that service); one
        given without takes the id of the app's existing service of the same
        serName (of several, the one least recently written: the lowest
        revision, not the lowest random id, so every backend keeps the same
        one), so a re-pushed configuration keeps its service ids, or else a
        new uuid4. Duplicate ids within ``config`` are InvalidInput; a client
        id another app holds is Conflict.
        ``generation`` lower than the applied one: PreconditionFailed. Equal:
        a no-op when the configuration is identical, else PreconditionFailed
        (one generation cannot name two configurations).
        """
        current = self.app(app_instance_id)
        applied = current.app.config_generation
        if generation < applied:
            raise PreconditionFailed(
                f"configuration generation {generation} is older than the applied generation {applied}",
                field="generation",
            )
        after, next_rule_id = self._configured(current, config, generation, now)
        if generation == applied:
            if _same_config(current, after):
                return None, current.app
            raise PreconditionFailed(
                f"configuration generation {generation} is already applied with a different configuration",
                field="generation",
            )
        return self._next(app_instance_id, after, next_rule_id), after.app

    def plan_reset_app_config(
        self, app_instance_id: str, config: AppConfig, *, generation: int, expected_generation: int, now: float
    ) -> Plan[AppInstance]:
        """As plan_replace_app_config, but ``generation`` may be lower: the app goes back to an earlier version.

        Only while the app is at ``expected_generation`` (else PreconditionFailed:
        a newer configuration has arrived since, and it stands). A no-op when
        nothing would change.
        """
        current = self.app(app_instance_id)
        if current.app.config_generation != expected_generation:
            raise PreconditionFailed(
                f"the app is at configuration generation {current.app.config_generation},"
                f" not at the expected generation {expected_generation}",
                field="generation",
            )
        after, next_rule_id = self._configured(current, config, generation, now)
        if generation == expected_generation and _same_config(current, after):
            return None, current.app
        return self._next(app_instance_id, after, next_rule_id), after.app

    def _configured(
        self, current: AppRecords, config: AppConfig, generation: int, now: float
    ) -> tuple[AppRecords, int]:
        """``current`` with ``config`` at ``generation`` (the rules of plan_replace_app_config), and the
        rule-id sequence after it."""
        app_instance_id = current.app.appInstanceId
        revision = self.revision + 1
        ids = _RuleIds(self.next_rule_id)

        traffic_rules: dict[str, StoredTrafficRule] = {}
        for rule in config.traffic_rules:
            key = rule.trafficRuleId
            if key in traffic_rules:
                raise InvalidInput(f"trafficRuleId '{key}' appears twice", field="trafficRuleId")
            before_tr = current.traffic_rules.get(key)
            traffic_rules[key] = (
                before_tr
                if before_tr is not None and before_tr.rule == rule
                else StoredTrafficRule(
                    revision=revision, app_instance_id=app_instance_id, rule_id=ids.keep_or_new(before_tr), rule=rule
                )
            )

        dns_rules: dict[str, StoredDnsRule] = {}
        for dns_rule in config.dns_rules:
            key = dns_rule.dnsRuleId
            if key in dns_rules:
                raise InvalidInput(f"dnsRuleId '{key}' appears twice", field="dnsRuleId")
            self._check_domain_name(app_instance_id, dns_rule)
            before_dr = current.dns_rules.get(key)
            dns_rules[key] = (
                before_dr
                if before_dr is not None and before_dr.rule == dns_rule
                else StoredDnsRule(
                    revision=revision,
                    app_instance_id=app_instance_id,
                    rule_id=ids.keep_or_new(before_dr),
                    rule=dns_rule,
                )
            )

        explicit = {s.serInstanceId for s in config.services if s.serInstanceId is not None}
        by_name: dict[str, str] = {}
        for ser_id, stored in sorted(current.services.items(), key=lambda item: (item[1].revision, item[0])):
            if ser_id not in explicit:
                by_name.setdefault(stored.service.serName, ser_id)
        services: dict[str, StoredService] = {}
        for service in config.services:
            ser_id = service.serInstanceId or by_name.pop(service.serName, None) or str(uuid.uuid4())
            if ser_id in services:
                raise InvalidInput(f"serInstanceId '{ser_id}' appears twice", field="serInstanceId")
            owner = self._service_app.get(ser_id, app_instance_id)
            if owner != app_instance_id:
                raise Conflict(f"service '{ser_id}' belongs to app instance '{owner}'", field="serInstanceId")
            body = service.model_copy(update={"serInstanceId": ser_id})
            before_sv = current.services.get(ser_id)
            services[ser_id] = (
                before_sv
                if before_sv is not None and before_sv.service == body
                else StoredService(revision=revision, app_instance_id=app_instance_id, service=body)
            )

        fields: dict[str, Any] = {"config_generation": generation, "required_services": config.required_services}
        if config.credentials is not None:
            self._check_client_id(app_instance_id, config.credentials.client_id)
            fields.update(config.credentials.model_dump())
        app = current.app.model_copy(update=fields)
        if app != current.app:
            app = app.model_copy(update={"updated_at": now, "revision": revision})
        after = replace(current, app=app, traffic_rules=traffic_rules, dns_rules=dns_rules, services=services)
        return after, ids.next_rule_id

    def plan_put_task(self, task: StoredTask, *, now: float) -> Plan[StoredTask]:
        """Create or replace the task by task_id; NotFound if its app is unknown.

        Beyond MAX_TASKS_PER_APP, the app's oldest finished tasks (by seq) are
        deleted in the same write, except its newest ACTIVE one.
        """
        current = self.app(task.app_instance_id)
        history = task.history if task.history and task.history[-1][0] is task.state else (
            *task.history, (task.state, now)
        )
        record = task.model_copy(update={"revision": self.revision + 1, "history": history})
        after = current.with_child(EventKind.TASK, task.task_id, record)
        tasks = sorted(after.tasks.values(), key=lambda t: t.seq)
        newest_active = max((t.seq for t in tasks if t.state is TaskState.ACTIVE), default=0)
        excess = len(tasks) - MAX_TASKS_PER_APP
        for old in tasks:
            if excess <= 0:
                break
            if old.state.final and old.seq != newest_active and old.task_id != task.task_id:
                after = after.without_child(EventKind.TASK, old.task_id)
                excess -= 1
        touched = {EventKind.TASK: {*current.tasks, *after.tasks}}
        return self._next(task.app_instance_id, after, touched=touched), record

    def plan_put_traffic_rule(
        self, app_instance_id: str, rule: TrafficRule, *, expected_revision: int | None
    ) -> Plan[StoredTrafficRule]:
        """Create or replace by trafficRuleId; a replaced rule keeps its rule id."""
        current = self.app(app_instance_id)
        before = current.traffic_rules.get(rule.trafficRuleId)
        _check_if_match(before, expected_revision, f"traffic rule '{rule.trafficRuleId}'")
        ids = _RuleIds(self.next_rule_id)
        record = StoredTrafficRule(
            revision=self.revision + 1, app_instance_id=app_instance_id, rule_id=ids.keep_or_new(before), rule=rule
        )
        after = current.with_child(EventKind.TRAFFIC_RULE, rule.trafficRuleId, record)
        touched = {EventKind.TRAFFIC_RULE: (rule.trafficRuleId,)}
        return self._next(app_instance_id, after, ids.next_rule_id, touched=touched), record

    def plan_put_dns_rule(
        self, app_instance_id: str, rule: DnsRule, *, expected_revision: int | None
    ) -> Plan[StoredDnsRule]:
        """Create or replace by dnsRuleId; Conflict if another app claims the name."""
        current = self.app(app_instance_id)
        before = current.dns_rules.get(rule.dnsRuleId)
        _check_if_match(before, expected_revision, f"DNS rule '{rule.dnsRuleId}'")
        self._check_domain_name(app_instance_id, rule)
        ids = _RuleIds(self.next_rule_id)
        record = StoredDnsRule(
            revision=self.revision + 1, app_instance_id=app_instance_id, rule_id=ids.keep_or_new(before), rule=rule
        )
        after = current.with_child(EventKind.DNS_RULE, rule.dnsRuleId, record)
        touched = {EventKind.DNS_RULE: (rule.dnsRuleId,)}
        return self._next(app_instance_id, after, ids.next_rule_id, touched=touched), record

    def plan_put_service(
        self, app_instance_id: str, service: ServiceInfo, *, expected_revision: int | None
    ) -> Plan[StoredService]:
        """No serInstanceId: create under a new uuid4. Else replace the app's service; NotFound if it has none."""
        current = self.app(app_instance_id)
        ser_id = service.serInstanceId
        before = None if ser_id is None else _member(current.services, ser_id, EventKind.SERVICE, app_instance_id)
        ser_id = ser_id or str(uuid.uuid4())
        _check_if_match(before, expected_revision, f"service '{ser_id}'")
        record = StoredService(
            revision=self.revision + 1,
            app_instance_id=app_instance_id,
            service=service.model_copy(update={"serInstanceId": ser_id}),
        )
        after = current.with_child(EventKind.SERVICE, ser_id, record)
        return self._next(app_instance_id, after, touched={EventKind.SERVICE: (ser_id,)}), record

    def plan_create_subscription(
        self, app_instance_id: str, kind: SubscriptionKind, body: dict[str, object], subscription_id: str | None = None
    ) -> Plan[StoredSubscription]:
        """A new subscription under ``subscription_id`` (Conflict if the app has it) or a new uuid4."""
        current = self.app(app_instance_id)
        if subscription_id is not None and subscription_id in current.subscriptions:
            raise Conflict(f"subscription '{subscription_id}' already exists", field="subscriptionId")
        record = StoredSubscription(
            revision=self.revision + 1,
            subscription_id=subscription_id or str(uuid.uuid4()),
            app_instance_id=app_instance_id,
            kind=kind,
            body=body,
        )
        after = current.with_child(EventKind.SUBSCRIPTION, record.subscription_id, record)
        return self._next(app_instance_id, after, touched={EventKind.SUBSCRIPTION: (record.subscription_id,)}), record

    def plan_delete_child(self, app_instance_id: str, kind: EventKind, key: str) -> Plan[None]:
        """Delete one rule, service or subscription of the app; NotFound if the app or the child is unknown."""
        current = self.app(app_instance_id)
        _member(current.children(kind), key, kind, app_instance_id)
        return self._next(app_instance_id, current.without_child(kind, key), touched={kind: (key,)}), None

    def plan_clear_app(self, app_instance_id: str, kinds: Iterable[EventKind]) -> Plan[int]:
        """Delete every record of ``kinds`` (child kinds only) the app owns; the app stays. Returns how many."""
        current = self.app(app_instance_id)
        cleared = {kind: current.children(kind) for kind in kinds if kind is not EventKind.APP}
        count = sum(len(children) for children in cleared.values())
        if not count:
            return None, 0
        emptied: dict[str, Any] = {_FIELD[kind]: immutables.Map() for kind in cleared}
        after = replace(current, **emptied)
        return self._next(app_instance_id, after), count

    def _check_client_id(self, app_instance_id: str, client_id: str) -> None:
        """Conflict if another app holds the (non-empty) client id."""
        for other_id, other in self._apps.items():
            if other_id != app_instance_id and client_id and other.app.client_id == client_id:
                raise Conflict(f"client id '{client_id}' belongs to app instance '{other_id}'", field="client_id")

    def _check_domain_name(self, app_instance_id: str, rule: DnsRule) -> None:
        """Conflict if ``rule`` is ACTIVE and another app has an ACTIVE rule for the same name
        (compared case-insensitively, ignoring a trailing dot)."""
        if rule.state is not DnsRuleState.ACTIVE:
            return
        name = _domain_key(rule.domainName)
        for other_id, other in self._apps.items():
            if other_id == app_instance_id:
                continue
            for _, claim in sorted(other.dns_rules.items()):  # the first claim by dnsRuleId is the one named
                if claim.rule.state is DnsRuleState.ACTIVE and _domain_key(claim.rule.domainName) == name:
                    raise Conflict(
                        f"domain name '{rule.domainName}' is already claimed by app instance '{other_id}'"
                        f" (DNS rule '{claim.rule.dnsRuleId}')",
                        field="domainName",
                    )


class ViewStore(Store):
    """A Store served from a StateView: every read, every write's rules, and event fan-out.

    A backend adds persistence. It implements ``open`` (read its state and
    hand it to ``_adopt``, then call ``_mark_open``), ``close`` (calling
    ``_mark_closed``) and ``_persist``. Writes are serialised by one
    asyncio.Lock, held from planning until the change set is applied, so a
    backend never sees two writes interleaved. A write is visible (reads,
    events, the data plane) once applied, and returns once ``_durable``
    says it survives a power cut; a backend may implement ``_durable`` to
    sync many writes at once.

    Loading is an adoption like any other: a queue subscribed before
    ``open()`` receives a PUT event for every object loaded.
    """

    def __init__(self) -> None:
        self._view = StateView()
        self._is_open = False
        self._write_lock = asyncio.Lock()
        self._subscribers: list[asyncio.Queue[StoreEvent]] = []

    # -- what a backend provides -----------------------------------------------
    @abc.abstractmethod
    async def _persist(self, change: ChangeSet) -> bool:
        """Write ``change`` in one backend transaction.

        True: written. False: the backend has moved past ``change.base_revision``
        (another writer); the view must have moved too by the time this
        returns, and the write is planned again on it. Raises StoreUnavailable
        when the backend fails (for a lost connection the outcome is unknown).
        """

    async def _durable(self) -> None:
        """Return once every change persisted so far survives a power cut.

        Called by each write after it released the write lock, so that the
        next write can be planned and persisted while this one waits: a
        backend that syncs many transactions at once (SQLite's group commit)
        does it here. A backend whose ``_persist`` is durable on return
        (etcd acknowledges after its raft log is synced) keeps this default.
        Raises StoreUnavailable when durability cannot be had.
        """
        return None

    def _adopt(
        self, apps: Mapping[str, AppRecords | None], revision: int, next_rule_id: int, *, complete: bool
    ) -> None:
        """Move the view to state read from the backend (StateView.adopt), emitting its events."""
        change = self._view.adopt(apps, revision, next_rule_id, complete=complete)
        if change is not None:
            self._apply(change)

    def _apply(self, change: ChangeSet) -> None:
        if self._view.apply(change):
            for queue in self._subscribers:
                for event in change.events:
                    queue.put_nowait(event)

    def _mark_open(self) -> None:
        self._is_open = True

    def _mark_closed(self) -> None:
        self._is_open = False
        self._subscribers.clear()

    def _state(self) -> StateView:
        if not self._is_open:
            raise StoreUnavailable("the state store is not open")
        return self._view

    async def _write(self, plan: Callable[[StateView], Plan[T]], check: SnapshotCheck | None = None) -> T:
        result = await self._commit(plan, check)
        # Outside the lock: the next write commits while this one waits for
        # its sync. A write that changed nothing waits too, since what it
        # answers from may be another write's change not yet durable.
        await self._durable()
        return result

    async def _commit(self, plan: Callable[[StateView], Plan[T]], check: SnapshotCheck | None) -> T:
        """Plan, check, persist and apply one write under the write lock; its result."""
        async with self._write_lock:
            while True:
                view = self._state()
                change, result = plan(view)
                if change is None:
                    return result
                checked = None
                if check is not None:
                    # Inside the lock: the snapshot checked is exactly the one committed.
                    checked = view.preview(change)
                    await check(checked)
                    if view.revision != change.base_revision:
                        continue  # another writer's change arrived (etcd watch) while checking: plan again
                if await self._persist(change):
                    self._apply(change)
                    if checked is not None:
                        # snapshot() now returns the very object the check saw, so whoever
                        # checked it (the daemon compiles it) can recognise it by identity.
                        view.keep_snapshot(checked)
                    return result

    # -- life ----------------------------------------------------------------
    @property
    def revision(self) -> int:
        """The revision of the last write this view has seen (0 before the first open)."""
        return self._view.revision

    def subscribe(self) -> asyncio.Queue[StoreEvent]:
        """A new unbounded queue that receives every event after this call."""
        queue: asyncio.Queue[StoreEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[StoreEvent]) -> None:
        """Stop delivering events to ``queue`` (no error if it is not subscribed)."""
        if queue in self._subscribers:
            self._subscribers.remove(queue)

    def snapshot(self) -> Snapshot:
        """A consistent view of apps and rules at ``self.revision``; rules in rule-id order."""
        return self._state().snapshot()

    # -- application instances -----------------------------------------------
    async def create_app(self, app: AppInstance) -> AppInstance:
        """Store a new app instance (revision, created_at, updated_at assigned); Conflict if it exists."""
        return await self._write(lambda view: view.plan_create_app(app, now=time.time()))

    def get_app(self, app_instance_id: str) -> AppInstance:
        """The app instance; NotFound if unknown."""
        return self._state().app(app_instance_id).app

    def list_apps(self) -> list[AppInstance]:
        """Every app instance, ordered by id."""
        return [a.app for _, a in sorted(self._state().apps.items())]

    async def transition_app(
        self,
        app_instance_id: str,
        event: LifecycleEvent,
        *,
        expected_revision: int | None = None,
        check: SnapshotCheck | None = None,
    ) -> AppInstance:
        """Apply a lifecycle event (lifecycle.next_state); InvalidTransition if not allowed."""
        return await self._write(
            lambda view: view.plan_transition_app(
                app_instance_id, event, expected_revision=expected_revision, now=time.time()
            ),
            check,
        )

    async def delete_app(self, app_instance_id: str) -> None:
        """Delete the app with its rules, services and subscriptions; NotFound if unknown."""
        await self._write(lambda view: view.plan_delete_app(app_instance_id))

    async def set_app_credentials(self, app_instance_id: str, client_id: str, client_secret_hash: str) -> AppInstance:
        """Store the app's Mp1 client credentials (StateView.plan_set_app_credentials)."""
        return await self._write(
            lambda view: view.plan_set_app_credentials(app_instance_id, client_id, client_secret_hash, now=time.time())
        )

    async def replace_app_config(
        self, app_instance_id: str, config: AppConfig, *, generation: int, check: SnapshotCheck | None = None
    ) -> AppInstance:
        """Replace the app's rules and services atomically (StateView.plan_replace_app_config)."""
        return await self._write(
            lambda view: view.plan_replace_app_config(app_instance_id, config, generation=generation, now=time.time()),
            check,
        )

    async def reset_app_config(
        self, app_instance_id: str, config: AppConfig, *, generation: int, expected_generation: int
    ) -> AppInstance:
        """Put the app back to an earlier configuration (StateView.plan_reset_app_config)."""
        return await self._write(
            lambda view: view.plan_reset_app_config(
                app_instance_id, config, generation=generation, expected_generation=expected_generation, now=time.time()
            )
        )

    async def clear_app(self, app_instance_id: str, kinds: Iterable[EventKind]) -> int:
        """Delete all the app's records of ``kinds`` in one write (StateView.plan_clear_app)."""
        return await self._write(lambda view: view.plan_clear_app(app_instance_id, kinds))

    # -- traffic rules -------------------------------------------------------
    async def put_traffic_rule(
        self,
        app_instance_id: str,
        rule: TrafficRule,
        *,
        expected_revision: int | None = None,
        check: SnapshotCheck | None = None,
    ) -> StoredTrafficRule:
        """Create or replace the rule named by ``rule.trafficRuleId``; NotFound if the app is unknown."""
        return await self._write(
            lambda view: view.plan_put_traffic_rule(app_instance_id, rule, expected_revision=expected_revision),
            check,
        )

    def get_traffic_rule(self, app_instance_id: str, traffic_rule_id: str) -> StoredTrafficRule:
        """NotFound if the app or the rule is unknown."""
        rules = self._state().app(app_instance_id).traffic_rules
        return _member(rules, traffic_rule_id, EventKind.TRAFFIC_RULE, app_instance_id)

    def list_traffic_rules(self, app_instance_id: str) -> list[StoredTrafficRule]:
        """The app's rules by rule id; NotFound if the app is unknown."""
        return sorted(self._state().app(app_instance_id).traffic_rules.values(), key=_by_rule_id)

    async def delete_traffic_rule(self, app_instance_id: str, traffic_rule_id: str) -> None:
        """NotFound if the app or the rule is unknown."""
        await self._write(lambda view: view.plan_delete_child(app_instance_id, EventKind.TRAFFIC_RULE, traffic_rule_id))

    # -- DNS rules -------------------------------------------------------------
    async def put_dns_rule(
        self,
        app_instance_id: str,
        rule: DnsRule,
        *,
        expected_revision: int | None = None,
        check: SnapshotCheck | None = None,
    ) -> StoredDnsRule:
        """Create or replace; Conflict if another app has an ACTIVE rule for the same domainName."""
        return await self._write(
            lambda view: view.plan_put_dns_rule(app_instance_id, rule, expected_revision=expected_revision),
            check,
        )

    def get_dns_rule(self, app_instance_id: str, dns_rule_id: str) -> StoredDnsRule:
        """NotFound if the app or the rule is unknown."""
        rules = self._state().app(app_instance_id).dns_rules
        return _member(rules, dns_rule_id, EventKind.DNS_RULE, app_instance_id)

    def list_dns_rules(self, app_instance_id: str) -> list[StoredDnsRule]:
        """The app's DNS rules by rule id; NotFound if the app is unknown."""
        return sorted(self._state().app(app_instance_id).dns_rules.values(), key=_by_rule_id)

    async def delete_dns_rule(self, app_instance_id: str, dns_rule_id: str) -> None:
        """NotFound if the app or the rule is unknown."""
        await self._write(lambda view: view.plan_delete_child(app_instance_id, EventKind.DNS_RULE, dns_rule_id))

    # -- services --------------------------------------------------------------
    async def put_service(
        self, app_instance_id: str, service: ServiceInfo, *, expected_revision: int | None = None
    ) -> StoredService:
        """Create (serInstanceId None: one is assigned) or replace (serInstanceId set: NotFound if unknown)."""
        return await self._write(
            lambda view: view.plan_put_service(app_instance_id, service, expected_revision=expected_revision)
        )

    def get_service(self, ser_instance_id: str) -> StoredService:
        """The service, whichever app produces it; NotFound if unknown."""
        view = self._state()
        return view.apps[view.service_owner(ser_instance_id)].services[ser_instance_id]

    def list_services(self, app_instance_id: str | None = None) -> list[StoredService]:
        """All services, or those the app produces (NotFound if the app is unknown); by app, then id."""
        return [s for a in self._selected(app_instance_id) for _, s in sorted(a.services.items())]

    async def delete_service(self, app_instance_id: str, ser_instance_id: str) -> None:
        """NotFound if the app is unknown or does not produce the service."""
        await self._write(lambda view: view.plan_delete_child(app_instance_id, EventKind.SERVICE, ser_instance_id))

    # -- subscriptions -----------------------------------------------------------
    async def create_subscription(
        self, app_instance_id: str, kind: SubscriptionKind, body: dict[str, object], *, subscription_id: str | None = None
    ) -> StoredSubscription:
        """Store a subscription under ``subscription_id`` or a new uuid4; NotFound if the app is unknown."""
        return await self._write(
            lambda view: view.plan_create_subscription(app_instance_id, kind, body, subscription_id)
        )

    def get_subscription(self, app_instance_id: str, subscription_id: str) -> StoredSubscription:
        """NotFound if the app is unknown or has no such subscription."""
        subscriptions = self._state().app(app_instance_id).subscriptions
        return _member(subscriptions, subscription_id, EventKind.SUBSCRIPTION, app_instance_id)

    def list_subscriptions(
        self, app_instance_id: str | None = None, kind: SubscriptionKind | None = None
    ) -> list[StoredSubscription]:
        """All subscriptions, or the app's (NotFound if unknown), optionally of one kind; by app, then id."""
        return [
            s
            for a in self._selected(app_instance_id)
            for _, s in sorted(a.subscriptions.items())
            if kind is None or s.kind is kind
        ]

    async def delete_subscription(self, app_instance_id: str, subscription_id: str) -> None:
        """NotFound if the app is unknown or has no such subscription."""
        await self._write(
            lambda view: view.plan_delete_child(app_instance_id, EventKind.SUBSCRIPTION, subscription_id)
        )

    # -- Mm5 configuration tasks -------------------------------------------------
    async def put_task(self, task: StoredTask) -> StoredTask:
        """Create or replace the task (StateView.plan_put_task)."""
        return await self._write(lambda view: view.plan_put_task(task, now=time.time()))

    def get_task(self, task_id: str) -> StoredTask:
        """The task, whichever app it belongs to; NotFound if unknown."""
        for records in self._state().apps.values():
            if task_id in records.tasks:
                return records.tasks[task_id]
        raise NotFound(f"task '{task_id}' not found", field="taskId")

    def list_tasks(self, app_instance_id: str) -> list[StoredTask]:
        """The app's tasks, oldest first; NotFound if the app is unknown."""
        return sorted(self._state().app(app_instance_id).tasks.values(), key=lambda t: t.seq)

    def _selected(self, app_instance_id: str | None) -> list[AppRecords]:
        view = self._state()
        if app_instance_id is not None:
            return [view.app(app_instance_id)]
        return [a for _, a in sorted(view.apps.items())]
