"""What the store holds: ETSI bodies wrapped with the platform's own bookkeeping.

Every record carries ``revision``: the store-wide revision of its last change.
It is the ETag of the resource (``"<revision>"``) and the value an If-Match or
a generation check compares against.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models import DnsRule, ServiceInfo, TrafficRule
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
    "AppConfig",
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


class EventKind(StrEnum):
    APP = "app"
    TRAFFIC_RULE = "traffic_rule"
    DNS_RULE = "dns_rule"
    SERVICE = "service"
    SUBSCRIPTION = "subscription"


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


class Snapshot(BaseModel):
    """A consistent view at one revision: what the compiler reads."""

    model_config = ConfigDict(frozen=True)

    revision: int
    apps: dict[str, AppInstance]
    traffic_rules: tuple[StoredTrafficRule, ...]
    dns_rules: tuple[StoredDnsRule, ...]


class AppConfig(BaseModel):
    """The whole configuration of one app, replaced atomically (Mm5 ApplyConfiguration)."""

    model_config = ConfigDict(frozen=True)

    traffic_rules: tuple[TrafficRule, ...] = ()
    dns_rules: tuple[DnsRule, ...] = ()
    services: tuple[ServiceInfo, ...] = ()
