"""What the store holds: ETSI bodies wrapped with the platform's own bookkeeping.

Every record carries ``revision``: the store-wide revision of its last change.
It is the ETag of the resource (``"<revision>"``) and the value an If-Match or
a generation check compares against.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..models import DnsRule, ServiceDependency, ServiceInfo, TrafficRule
from .lifecycle import AppState

__all__ = [
    "Record",
    "AppInstance",
    "StoredTrafficRule",
    "StoredDnsRule",
    "StoredService",
    "SubscriptionKind",
    "StoredSubscription",
    "EventKind",
    "EventOp",
    "StoreEvent",
    "Snapshot",
    "RuleChanges",
    "AppCredentials",
    "AppConfig",
    "TaskState",
    "StoredTask",
    "MAX_TASKS_PER_APP",
]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    revision: int = 0

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


class AppInstance(Record):
    appInstanceId: str = Field(min_length=1, max_length=256)
    appName: str = ""
    appProvider: str = ""
    appDId: str = ""
    state: AppState = AppState.NOT_INSTANTIATED
    confirm_ready_required: bool = True
    graceful_timeout_s: int = Field(default=10, ge=0, le=3600)
    # Version of the whole app configuration pushed by MEPM over Mm5 (0: none yet).
    config_generation: int = 0
    # Mp1 OAuth2 client credentials of this instance: the client id, and a salted
    # hash of the secret (mep/mp1 owns the format); empty: none issued yet.
    client_id: str = ""
    client_secret_hash: str = ""
    # MEC 010-2 appServiceRequired, as pushed with the configuration (Mm5).
    required_services: tuple[ServiceDependency, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0


class StoredTrafficRule(Record):
    app_instance_id: str
    # Platform-wide, never reused, assigned when the rule is first stored and
    # kept across updates: it is the rule id the data plane reports, and the
    # tie-break between equal priorities (lower id = installed first).
    rule_id: int
    rule: TrafficRule


class StoredDnsRule(Record):
    app_instance_id: str
    rule_id: int  # from the same sequence as traffic rules; names the hit counter
    rule: DnsRule


class StoredService(Record):
    app_instance_id: str
    service: ServiceInfo  # serInstanceId always set


class SubscriptionKind(StrEnum):
    APP_TERMINATION = "AppTerminationNotificationSubscription"
    SER_AVAILABILITY = "SerAvailabilityNotificationSubscription"


class StoredSubscription(Record):
    subscription_id: str
    app_instance_id: str
    kind: SubscriptionKind
    body: dict[str, Any]  # the subscription's wire form, _links filled in


class TaskState(StrEnum):
    """Where an Mm5 configuration task is: PENDING -> APPLYING -> ACTIVE, or -> FAILED -> REVERTED."""

    PENDING = "PENDING"  # accepted, waiting for the app's previous task
    APPLYING = "APPLYING"  # being written to the store and compiled into the data plane
    ACTIVE = "ACTIVE"  # final: the configuration is in the rule set in force
    FAILED = "FAILED"  # the data plane refused it; the previous version is being restored
    REVERTED = "REVERTED"  # final: the store holds the previous version again

    @property
    def final(self) -> bool:
        """ACTIVE and REVERTED end a task."""
        return self in (TaskState.ACTIVE, TaskState.REVERTED)


# Task records kept per app: the oldest finished ones are dropped beyond this,
# but never the newest ACTIVE one (it describes the configuration in force).
MAX_TASKS_PER_APP = 16


class StoredTask(Record):
    """One Mm5 ApplyConfiguration of one app, kept so its outcome survives a restart."""

    task_id: str = Field(min_length=1, max_length=64)
    app_instance_id: str
    seq: int = Field(ge=1)  # per app, in order of acceptance
    generation: int = Field(ge=1)
    digest: str  # of the configuration as requested: the same generation and digest is the same request
    state: TaskState = TaskState.PENDING
    # (state, unix time) for every state the task has been in, oldest first.
    history: tuple[tuple[TaskState, float], ...] = ()
    detail: str = ""  # why it failed, or a note on how it ended
    config_revision: int = 0  # store revision of its configuration write; 0: not written
    previous_generation: int = 0  # what a revert returns the app to
    # The app's configuration before this task: the revert point. Kept only
    # while the task is unfinished, so a restart mid-task can still revert.
    revert_to: Optional["AppConfig"] = None


class EventKind(StrEnum):
    APP = "app"
    TRAFFIC_RULE = "traffic_rule"
    DNS_RULE = "dns_rule"
    SERVICE = "service"
    SUBSCRIPTION = "subscription"
    TASK = "task"


class EventOp(StrEnum):
    PUT = "put"
    DELETE = "delete"


class StoreEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    revision: int
    kind: EventKind
    op: EventOp
    app_instance_id: str
    key: str  # the trafficRuleId, dnsRuleId, serInstanceId, subscription id, or app id

    @property
    def affects_dataplane(self) -> bool:
        return self.kind in (EventKind.APP, EventKind.TRAFFIC_RULE, EventKind.DNS_RULE)


_Rule = TypeVar("_Rule", StoredTrafficRule, StoredDnsRule)


def _find(rules: tuple[_Rule, ...], rule_id: int) -> _Rule | None:
    at = bisect_left(rules, rule_id, key=lambda r: r.rule_id)
    return rules[at] if at < len(rules) and rules[at].rule_id == rule_id else None


@dataclass(frozen=True, slots=True)
class RuleChanges:
    """Which traffic rules differ between a snapshot and an earlier one: what lets the compiler redo only those."""

    since: tuple[StoredTrafficRule, ...]  # the earlier snapshot's traffic_rules (that very tuple)
    rule_ids: frozenset[int]  # rules added, replaced or removed since then


class Snapshot(BaseModel):
    """A consistent view at one revision: what the compiler reads.

    Rules are in rule-id order. ``rule_changes`` is bookkeeping, not state
    (left out of dumps): the store fills it when it derives a snapshot from
    its previous ones, naming the traffic rules that changed since each.
    """

    model_config = ConfigDict(frozen=True)

    revision: int
    apps: dict[str, AppInstance]
    traffic_rules: tuple[StoredTrafficRule, ...]
    dns_rules: tuple[StoredDnsRule, ...]
    rule_changes: tuple[RuleChanges, ...] = Field(default=(), exclude=True, repr=False)  # newest first

    def traffic_rule(self, rule_id: int) -> StoredTrafficRule | None:
        """The traffic rule with ``rule_id``, None if there is none (a binary search)."""
        return _find(self.traffic_rules, rule_id)

    def dns_rule(self, rule_id: int) -> StoredDnsRule | None:
        """The DNS rule with ``rule_id``, None if there is none (a binary search)."""
        return _find(self.dns_rules, rule_id)

    def changed_rule_ids(self, since: tuple[StoredTrafficRule, ...]) -> frozenset[int] | None:
        """The rule ids of traffic rules added, replaced or removed between ``since`` (an earlier snapshot's
        ``traffic_rules``) and this snapshot; None when the store did not record it (compare in full)."""
        if since is self.traffic_rules:
            return frozenset()
        for changes in self.rule_changes:
            if changes.since is since:
                return changes.rule_ids
        return None


class AppCredentials(BaseModel):
    """An app's Mp1 client id and secret hash (mep.credentials); empty strings: none."""

    model_config = ConfigDict(frozen=True)

    client_id: str = Field(default="", max_length=256)
    client_secret_hash: str = Field(default="", max_length=512)


class AppConfig(BaseModel):
    """The whole configuration of one app, replaced atomically (Mm5 ApplyConfiguration)."""

    model_config = ConfigDict(frozen=True)

    traffic_rules: tuple[TrafficRule, ...] = ()
    dns_rules: tuple[DnsRule, ...] = ()
    services: tuple[ServiceInfo, ...] = ()  # produced (MEC 010-2 appServiceProduced)
    required_services: tuple[ServiceDependency, ...] = ()  # MEC 010-2 appServiceRequired
    credentials: Optional[AppCredentials] = None  # None: keep the app's credentials as they are


StoredTask.model_rebuild()
