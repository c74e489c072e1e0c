"""The app-support and service-management logic behind Mp1, the admin API and Mm5.

Handlers translate HTTP to the calls below and back; everything an Mp1
operation *means* is here, over the store (the only writer of state):

- **Rules.** Apps update the traffic and DNS rules the platform configured
  for them (by MEPM over Mm5, or ``mep app add --rules``); a PUT never
  creates one (MEC 011 defines PUT responses as 200 only). A write is
  refused with 403 once the app is TERMINATING or TERMINATED.
- **Validation before commit.** A write that can change what the data plane
  enforces (a rule update, confirm_ready, an app's first configuration)
  passes ``check`` to the store: the daemon's compiler compiles the snapshot
  the write would produce, inside the store's write, and a rule set it
  would refuse is never committed. Problems that the current state already
  has (another app's broken rule) do not block this write: only new ones do.
- **Lifecycle.** confirm_ready moves the app to READY (its ACTIVE rules are
  then enforced by the daemon's compile loop); termination is sequenced by
  ``Terminator`` (termination.py).
- **Services.** Registration, update and removal; every change reaches
  SerAvailabilityNotificationSubscription holders whose filteringCriteria
  match, from the store's events, so changes made over Mm5 notify too.
- **Platform resources.** Transports (with the OAuth2 token endpoint) and
  timing.

``AppSupport`` is a daemon service (``name = "apps"``): ``start()`` starts
the notifier, follows service events and resumes interrupted terminations.
"""
from __future__ import annotations

import asyncio
import ctypes
import time
import uuid
from dataclasses import dataclass
from typing import Union

from yarl import URL

from ..config import Config
from ..credentials import hash_secret, new_credentials
from ..errors import CapacityError, CompileError, Conflict, Forbidden, InvalidInput, NotFound, RuleProblem
from ..log import get_logger
from ..models import (
    AppReadyConfirmation,
    AppTerminationConfirmation,
    AppTerminationNotificationSubscription,
    CurrentTime,
    DnsRule,
    EndPointInfoUris,
    LinkType,
    LocalityType,
    SecurityInfo,
    SecurityInfoOAuth2Info,
    SecurityInfoOAuth2InfoGrantType,
    Self,
    SerAvailabilityNotificationSubscription,
    SerAvailabilityNotificationSubscriptionFilteringCriteria,
    ServiceAvailabilityNotification,
    ServiceAvailabilityNotificationChangeType,
    ServiceInfo,
    ServiceState,
    TimeSourceStatus,
    TimingCaps,
    TimingCapsNtpServers,
    TimingCapsNtpServersAuthenticationOption,
    TimingCapsNtpServersNtpServerAddrType,
    TimingCapsTimeStamp,
    TrafficRule,
    TransportInfo,
    TransportType,
)
from ..models.types import parse_ip
from ..state.lifecycle import AppState, LifecycleEvent
from ..state.records import (
    AppConfig,
    AppInstance,
    EventKind,
    EventOp,
    Snapshot,
    StoredDnsRule,
    StoredService,
    StoredSubscription,
    StoredTrafficRule,
    StoreEvent,
    SubscriptionKind,
)
from ..state.store import SnapshotCheck, Store
from .auth import TOKEN_PATH
from .http import IfMatch, expected_revision
from .notify import Notifier
from .termination import Terminator

__all__ = [
    "AppSupport",
    "NewApp",
    "IssuedCredentials",
    "ServiceFilter",
    "AnySubscription",
    "APP_SUPPORT_PREFIX",
    "SERVICE_MGMT_PREFIX",
    "MAX_SUBSCRIPTIONS_PER_APP",
    "MAX_SERVICES_PER_APP",
    "clock_synchronized",
]

log = get_logger(__name__)

APP_SUPPORT_PREFIX = "/mec_app_support/v1"
SERVICE_MGMT_PREFIX = "/mec_service_mgmt/v1"
MAX_SUBSCRIPTIONS_PER_APP = 64
MAX_SERVICES_PER_APP = 256
_LOCKED = frozenset({AppState.TERMINATING, AppState.TERMINATED})  # no more writes from the app
# MEC 011 calls this value notificationType of ServiceAvailabilityNotification (the YAML's description and example).
_SER_AVAILABILITY_TYPE = "SerAvailabilityNotificationSubscription"

AnySubscription = Union[AppTerminationNotificationSubscription, SerAvailabilityNotificationSubscription]


@dataclass(frozen=True)
class NewApp:
    """An app instance to create for single-host use (``mep app add``)."""

    app_instance_id: str
    app_name: str = ""
    app_provider: str = ""
    confirm_ready_required: bool = True
    graceful_timeout_s: int = 10
    traffic_rules: tuple[TrafficRule, ...] = ()
    dns_rules: tuple[DnsRule, ...] = ()


@dataclass(frozen=True)
class IssuedCredentials:
    """Freshly issued Mp1 client credentials: the secret is shown once and stored only hashed."""

    app: AppInstance
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class ServiceFilter:
    """Which services a query or a subscription's filteringCriteria selects; None: any.

    Categories match by ``CategoryRef.id`` (``ser_category_id``). All given
    attributes must match (MEC 011: combined with AND).
    """

    ser_instance_ids: frozenset[str] | None = None
    ser_names: frozenset[str] | None = None
    category_ids: frozenset[str] | None = None
    states: frozenset[ServiceState] | None = None
    is_local: bool | None = None
    consumed_local_only: bool | None = None
    scope_of_locality: LocalityType | None = None

    @classmethod
    def from_criteria(cls, criteria: SerAvailabilityNotificationSubscriptionFilteringCriteria | None) -> ServiceFilter:
        """The filter of a subscription's filteringCriteria (absent lists and empty lists select any)."""
        if criteria is None:
            return cls()
        return cls(
            ser_instance_ids=frozenset(criteria.serInstanceIds) if criteria.serInstanceIds else None,
            ser_names=frozenset(criteria.serNames) if criteria.serNames else None,
            category_ids=frozenset(c.id for c in criteria.serCategories) if criteria.serCategories else None,
            states=frozenset(criteria.states) if criteria.states else None,
            is_local=criteria.isLocal,
        )

    def matches(self, service: ServiceInfo) -> bool:
        """Whether ``service`` is selected."""
        return (
            (self.ser_instance_ids is None or service.serInstanceId in self.ser_instance_ids)
            and (self.ser_names is None or service.serName in self.ser_names)
            and (self.category_ids is None or (service.serCategory is not None and service.serCategory.id in self.category_ids))
            and (self.states is None or service.state in self.states)
            and (self.is_local is None or service.isLocal is self.is_local)
            and (self.consumed_local_only is None or service.consumedLocalOnly is self.consumed_local_only)
            and (self.scope_of_locality is None or service.scopeOfLocality is self.scope_of_locality)
        )


def _check_callback(uri: str) -> None:
    try:
        url = URL(uri)
    except ValueError:
        raise InvalidInput("callbackReference is not a URI", field="callbackReference") from None
    if not (url.is_absolute() and url.scheme in ("http", "https") and url.host):
        raise InvalidInput("callbackReference must be an absolute http:// or https:// URI", field="callbackReference")
    if url.user is not None or url.password is not None:
        raise InvalidInput("callbackReference must not carry credentials", field="callbackReference")


def _check_criteria(criteria: SerAvailabilityNotificationSubscriptionFilteringCriteria | None) -> None:
    if criteria is None:
        return
    given = [n for n in ("serInstanceIds", "serNames", "serCategories") if getattr(criteria, n)]
    if len(given) > 1:
        raise InvalidInput(
            f"serInstanceIds, serNames and serCategories are alternatives (MEC 011): give one, not {' and '.join(given)}",
            field=f"filteringCriteria.{given[1]}",
        )


_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
_libc = ctypes.CDLL(None, use_errno=True)


def clock_synchronized() -> bool:
    """Whether the kernel reports the system clock as synchronised (adjtimex(2) state is not TIME_ERROR)."""
    timex = ctypes.create_string_buffer(512)  # struct timex (208 bytes on x86-64); modes 0: read only
    state = int(_libc.adjtimex(timex))
    return state not in (-1, _TIME_ERROR)


def _links_origin(href: str) -> str:
    return str(URL(href).origin())


class AppSupport:
    """The logic of Mp1 over the store (see the module docstring); a daemon service named ``apps``."""

    name = "apps"

    def __init__(self, store: Store, config: Config, validate: SnapshotCheck) -> None:
        self.store = store
        self.config = config
        self._validate = validate
        self.notifier = Notifier(config.mp1.notifications, config.notification_log_file)
        self.terminator = Terminator(store, self.notifier)
        self._known_services: dict[str, StoredService] = {}
        self._events: asyncio.Queue[StoreEvent] | None = None
        self._watcher: asyncio.Task[None] | None = None

    # -- service life ---------------------------------------------------------------
    async def start(self) -> None:
        """Start the notifier, follow service changes, resume interrupted terminations."""
        await self.notifier.start()
        self._events = self.store.subscribe()
        # No await between subscribing and reading: the two agree.
        self._known_services = {s.service.serInstanceId or "": s for s in self.store.list_services()}
        self._watcher = asyncio.create_task(self._watch_services(self._events), name="service-notifications")
        await self.terminator.start()

    async def stop(self) -> None:
        """Stop the sequences, the watcher and the notifier (pending deliveries are logged ABANDONED)."""
        await self.terminator.stop()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        if self._events is not None:
            self.store.unsubscribe(self._events)
            self._events = None
        await self.notifier.stop()

    # -- app instances (admin API, Mm5) ---------------------------------------------
    def require_app(self, app_instance_id: str) -> AppInstance:
        """The app instance; NotFound (404) if unknown."""
        return self.store.get_app(app_instance_id)

    def app_for_client(self, client_id: str) -> AppInstance | None:
        """The app instance holding ``client_id``, if any."""
        for app in self.store.list_apps():
            if app.client_id == client_id:
                return app
        return None

    async def add_app(self, new: NewApp) -> IssuedCredentials:
        """Create and instantiate an app (READY at once unless it must confirm), with rules and credentials.

        All or nothing: if a step fails (for example the rules do not
        compile), the app is deleted again and the error propagates.
        """
        await self.store.create_app(
            AppInstance(
                appInstanceId=new.app_instance_id,
                appName=new.app_name,
                appProvider=new.app_provider,
                confirm_ready_required=new.confirm_ready_required,
                graceful_timeout_s=new.graceful_timeout_s,
            )
        )
        try:
            if new.traffic_rules or new.dns_rules:
                config = AppConfig(traffic_rules=new.traffic_rules, dns_rules=new.dns_rules)
                await self.store.replace_app_config(new.app_instance_id, config, generation=1, check=self._dataplane_check)
            await self.store.transition_app(new.app_instance_id, LifecycleEvent.INSTANTIATE, check=self._dataplane_check)
            issued = await self.issue_credentials(new.app_instance_id)
        except Exception:
            await self.store.delete_app(new.app_instance_id)
            raise
        log.info("app_added", app=new.app_instance_id, state=issued.app.state.value, client_id=issued.client_id,
                 traffic_rules=len(new.traffic_rules), dns_rules=len(new.dns_rules))
        return issued

    async def issue_credentials(self, app_instance_id: str) -> IssuedCredentials:
        """New client credentials for the app; the previous ones, and tokens issued for them, stop working."""
        client_id, secret = new_credentials(app_instance_id)
        hashed = await asyncio.to_thread(hash_secret, secret)
        app = await self.store.set_app_credentials(app_instance_id, client_id, hashed)
        log.info("credentials_issued", app=app_instance_id, client_id=client_id)
        return IssuedCredentials(app, client_id, secret)

    async def terminate(self, app_instance_id: str) -> AppInstance:
        """Begin graceful termination (termination.py); the app, now TERMINATING."""
        return await self.terminator.terminate(app_instance_id)

    # -- lifecycle, from the app -------------------------------------------------------
    async def confirm_ready(self, app_instance_id: str, confirmation: AppReadyConfirmation | None) -> AppInstance:
        """The app is up: READY, so its ACTIVE rules get enforced.

        InvalidTransition (409) unless it is INSTANTIATED or READY; Conflict
        (409) naming the rule and field if its rules would make a rule set
        the data plane refuses.
        """
        current = self.store.get_app(app_instance_id)
        if current.state is AppState.READY:
            return current  # confirmed before: nothing to write, nothing to recompile
        try:
            app = await self.store.transition_app(
                app_instance_id, LifecycleEvent.CONFIRM_READY, check=self._dataplane_check
            )
        except CompileError as exc:
            raise Conflict(f"the app's rules cannot be enforced: {exc.detail}", field=exc.field) from None
        log.info("app_ready", app=app_instance_id, revision=app.revision)
        return app

    def confirm_termination(self, app_instance_id: str, confirmation: AppTerminationConfirmation | None) -> None:
        """The app finished its own termination (or stop) work: end the graceful wait."""
        self.terminator.confirm(app_instance_id, confirmation.operationAction if confirmation is not None else None)

    # -- traffic and DNS rules -----------------------------------------------------------
    def traffic_rules(self, app_instance_id: str) -> list[StoredTrafficRule]:
        """The app's traffic rules, in installation order."""
        return self.store.list_traffic_rules(app_instance_id)

    def traffic_rule(self, app_instance_id: str, traffic_rule_id: str) -> StoredTrafficRule:
        """One traffic rule of the app; NotFound if unknown."""
        return self.store.get_traffic_rule(app_instance_id, traffic_rule_id)

    async def update_traffic_rule(
        self, app_instance_id: str, traffic_rule_id: str, rule: TrafficRule, if_match: IfMatch | None
    ) -> StoredTrafficRule:
        """Replace an existing traffic rule (validated by compiling the result before it is committed)."""
        if rule.trafficRuleId != traffic_rule_id:
            raise InvalidInput(
                f"trafficRuleId '{rule.trafficRuleId}' differs from '{traffic_rule_id}' in the path", field="trafficRuleId"
            )
        self._writable(app_instance_id)
        current = self.store.get_traffic_rule(app_instance_id, traffic_rule_id)
        expected = expected_revision(current, if_match, f"traffic rule '{traffic_rule_id}'")
        stored = await self.store.put_traffic_rule(
            app_instance_id, rule, expected_revision=expected,
            check=self._rule_check(app_instance_id, EventKind.TRAFFIC_RULE, current.rule_id),
        )
        log.info("traffic_rule_updated", app=app_instance_id, rule=traffic_rule_id, rule_id=stored.rule_id,
                 state=rule.state.value, revision=stored.revision)
        return stored

    def dns_rules(self, app_instance_id: str) -> list[StoredDnsRule]:
        """The app's DNS rules, in installation order."""
        return self.store.list_dns_rules(app_instance_id)

    def dns_rule(self, app_instance_id: str, dns_rule_id: str) -> StoredDnsRule:
        """One DNS rule of the app; NotFound if unknown."""
        return self.store.get_dns_rule(app_instance_id, dns_rule_id)

    async def update_dns_rule(
        self, app_instance_id: str, dns_rule_id: str, rule: DnsRule, if_match: IfMatch | None
    ) -> StoredDnsRule:
        """Replace an existing DNS rule; Conflict (409) if another app claims the name."""
        if rule.dnsRuleId != dns_rule_id:
            raise InvalidInput(f"dnsRuleId '{rule.dnsRuleId}' differs from '{dns_rule_id}' in the path", field="dnsRuleId")
        self._writable(app_instance_id)
        current = self.store.get_dns_rule(app_instance_id, dns_rule_id)
        expected = expected_revision(current, if_match, f"DNS rule '{dns_rule_id}'")
        stored = await self.store.put_dns_rule(
            app_instance_id, rule, expected_revision=expected,
            check=self._rule_check(app_instance_id, EventKind.DNS_RULE, current.rule_id),
        )
        log.info("dns_rule_updated", app=app_instance_id, rule=dns_rule_id, rule_id=stored.rule_id,
                 state=rule.state.value, revision=stored.revision)
        return stored

    def _writable(self, app_instance_id: str) -> AppInstance:
        app = self.store.get_app(app_instance_id)
        if app.state in _LOCKED:
            raise Forbidden(f"app instance '{app_instance_id}' is {app.state.value}: it can no longer change anything",
                            field="appInstanceId")
        return app

    def _rule_check(self, app_instance_id: str, kind: EventKind, rule_id: int) -> SnapshotCheck:
        """The check of a rule update: the app may still write, the rule still exists, the data plane accepts it."""

        async def check(snapshot: Snapshot) -> None:
            app = snapshot.apps[app_instance_id]
            if app.state in _LOCKED:
                raise Forbidden(f"app instance '{app_instance_id}' is {app.state.value}", field="appInstanceId")
            rule = snapshot.traffic_rule(rule_id) if kind is EventKind.TRAFFIC_RULE else snapshot.dns_rule(rule_id)
            if rule is None:
                # Deleted (termination, Mm5) between reading it and writing: a PUT never creates.
                raise NotFound("the rule was removed while this request was in flight",
                               field="trafficRuleId" if kind is EventKind.TRAFFIC_RULE else "dnsRuleId")
            await self._dataplane_check(snapshot)

        return check

    async def _dataplane_check(self, snapshot: Snapshot) -> None:
        """CompileError if ``snapshot`` has compile problems the store's current state has not."""
        try:
            await self._validate(snapshot)
        except CompileError as exc:
            new = await self._new_problems(exc.problems)
            if new:
                raise (CapacityError if isinstance(exc, CapacityError) else CompileError)(new) from None
            log.warning("ruleset_already_refused", revision=snapshot.revision, problems=len(exc.problems),
                        detail="the state before this write is refused for the same reasons; the write goes ahead")

    async def _new_problems(self, problems: tuple[RuleProblem, ...]) -> list[RuleProblem]:
        def key(p: RuleProblem) -> tuple[str, str, str]:
            return (p.app_instance_id, p.rule_id, p.field)

        try:
            await self._validate(self.store.snapshot())  # the state before the write being checked
        except CompileError as exc:
            existing = {key(p) for p in exc.problems}
            return [p for p in problems if key(p) not in existing]
        return list(problems)

    # -- subscriptions ---------------------------------------------------------------------
    async def subscribe(
        self, app_instance_id: str, kind: SubscriptionKind, subscription: AnySubscription, collection_url: str
    ) -> StoredSubscription:
        """Store a subscription whose self link is ``<collection_url>/<new id>``."""
        self._writable(app_instance_id)
        if isinstance(subscription, AppTerminationNotificationSubscription):
            if subscription.appInstanceId != app_instance_id:
                raise Forbidden(
                    f"an app instance subscribes to its own termination only: appInstanceId must be '{app_instance_id}'",
                    field="appInstanceId",
                )
        else:
            _check_criteria(subscription.filteringCriteria)
        _check_callback(subscription.callbackReference)
        if len(self.store.list_subscriptions(app_instance_id)) >= MAX_SUBSCRIPTIONS_PER_APP:
            raise InvalidInput(
                f"app instance '{app_instance_id}' already holds {MAX_SUBSCRIPTIONS_PER_APP} subscriptions, the most allowed",
                field="subscriptionType",
            )
        sub_id = str(uuid.uuid4())
        links = Self(self=LinkType(href=f"{collection_url}/{sub_id}"))
        body = subscription.model_copy(update={"links": links}).to_json()
        stored = await self.store.create_subscription(app_instance_id, kind, body, subscription_id=sub_id)
        log.info("subscription_created", app=app_instance_id, kind=kind.value, subscription=sub_id,
                 callback=subscription.callbackReference)
        return stored

    def subscriptions(self, app_instance_id: str, kind: SubscriptionKind) -> list[StoredSubscription]:
        """The app's subscriptions of ``kind``."""
        return self.store.list_subscriptions(app_instance_id, kind)

    def subscription(self, app_instance_id: str, kind: SubscriptionKind, subscription_id: str) -> StoredSubscription:
        """One of the app's subscriptions of ``kind``; NotFound if it has none by that id (or of another kind)."""
        stored = self.store.get_subscription(app_instance_id, subscription_id)
        if stored.kind is not kind:
            raise NotFound(f"app instance '{app_instance_id}' has no {kind.value} '{subscription_id}'",
                           field="subscriptionId")
        return stored

    async def unsubscribe(self, app_instance_id: str, kind: SubscriptionKind, subscription_id: str) -> None:
        """Delete one of the app's subscriptions of ``kind``."""
        self.subscription(app_instance_id, kind, subscription_id)
        await self.store.delete_subscription(app_instance_id, subscription_id)
        log.info("subscription_deleted", app=app_instance_id, kind=kind.value, subscription=subscription_id)

    # -- services ----------------------------------------------------------------------------
    def services(self, selected: ServiceFilter, app_instance_id: str | None = None) -> list[StoredService]:
        """Every service (or the app's) that ``selected`` selects."""
        return [s for s in self.store.list_services(app_instance_id) if selected.matches(s.service)]

    def service(self, ser_instance_id: str) -> StoredService:
        """One service, whichever app produces it; NotFound if unknown."""
        return self.store.get_service(ser_instance_id)

    def app_service(self, app_instance_id: str, ser_instance_id: str) -> StoredService:
        """One service the app produces; NotFound if the app does not produce it."""
        self.store.get_app(app_instance_id)
        try:
            stored: StoredService | None = self.store.get_service(ser_instance_id)
        except NotFound:
            stored = None
        if stored is None or stored.app_instance_id != app_instance_id:
            raise NotFound(f"app instance '{app_instance_id}' has no service '{ser_instance_id}'", field="serviceId")
        return stored

    def _as_registered(self, service: ServiceInfo, ser_instance_id: str | None) -> ServiceInfo:
        # Every service the platform knows runs on this MEC host, as do its
        # consumers: isLocal is true. scopeOfLocality defaults to mp1.scope_of_locality.
        update: dict[str, object] = {"serInstanceId": ser_instance_id, "isLocal": True}
        if "scopeOfLocality" not in service.model_fields_set:
            update["scopeOfLocality"] = self.config.mp1.scope_of_locality
        return service.model_copy(update=update)

    def _check_name(self, app_instance_id: str, service: ServiceInfo, ser_instance_id: str | None) -> None:
        for other in self.store.list_services(app_instance_id):
            if other.service.serName == service.serName and other.service.serInstanceId != ser_instance_id:
                raise InvalidInput(
                    f"app instance '{app_instance_id}' already produces service '{service.serName}' "
                    f"as {other.service.serInstanceId}: update that one",
                    field="serName",
                )

    async def register_service(self, app_instance_id: str, service: ServiceInfo) -> StoredService:
        """A new service produced by the app; the platform assigns serInstanceId (one in the body is replaced)."""
        self._writable(app_instance_id)
        if len(self.store.list_services(app_instance_id)) >= MAX_SERVICES_PER_APP:
            raise InvalidInput(f"app instance '{app_instance_id}' already produces {MAX_SERVICES_PER_APP} services, "
                               "the most allowed", field="serName")
        self._check_name(app_instance_id, service, None)
        stored = await self.store.put_service(app_instance_id, self._as_registered(service, None))
        log.info("service_registered", app=app_instance_id, service=stored.service.serInstanceId,
                 name=service.serName, state=service.state.value)
        return stored

    async def update_service(
        self, app_instance_id: str, ser_instance_id: str, service: ServiceInfo, if_match: IfMatch | None
    ) -> StoredService:
        """Replace one of the app's services."""
        if service.serInstanceId not in (None, ser_instance_id):
            raise InvalidInput(
                f"serInstanceId '{service.serInstanceId}' differs from '{ser_instance_id}' in the path", field="serInstanceId"
            )
        self._writable(app_instance_id)
        current = self.app_service(app_instance_id, ser_instance_id)
        self._check_name(app_instance_id, service, ser_instance_id)
        expected = expected_revision(current, if_match, f"service '{ser_instance_id}'")
        stored = await self.store.put_service(
            app_instance_id, self._as_registered(service, ser_instance_id), expected_revision=expected
        )
        log.info("service_updated", app=app_instance_id, service=ser_instance_id, state=service.state.value)
        return stored

    async def deregister_service(self, app_instance_id: str, ser_instance_id: str) -> None:
        """Remove one of the app's services."""
        self.app_service(app_instance_id, ser_instance_id)
        await self.store.delete_service(app_instance_id, ser_instance_id)
        log.info("service_deregistered", app=app_instance_id, service=ser_instance_id)

    async def _watch_services(self, events: asyncio.Queue[StoreEvent]) -> None:
        while True:
            event = await events.get()
            if event.kind is not EventKind.SERVICE:
                continue
            try:
                self._service_changed(event)
            except Exception as exc:  # one bad record must not end every later notification
                log.exception("service_notification_failed", service=event.key, error=type(exc).__name__)

    def _service_changed(self, event: StoreEvent) -> None:
        before = self._known_services.get(event.key)
        if event.op is EventOp.DELETE:
            if before is not None:
                del self._known_services[event.key]
                self._announce(before.service, ServiceAvailabilityNotificationChangeType.REMOVED)
            return
        try:
            after = self.store.get_service(event.key)
        except NotFound:
            return  # deleted by a later write: its DELETE event follows
        self._known_services[event.key] = after
        if before is None:
            change = ServiceAvailabilityNotificationChangeType.ADDED
        elif before.service == after.service:
            return
        elif before.service.model_copy(update={"state": after.service.state}) == after.service:
            change = ServiceAvailabilityNotificationChangeType.STATE_CHANGED
        else:
            change = ServiceAvailabilityNotificationChangeType.ATTRIBUTES_CHANGED
        self._announce(after.service, change)

    def _announce(self, service: ServiceInfo, change: ServiceAvailabilityNotificationChangeType) -> None:
        """Notify every SerAvailability subscriber whose filteringCriteria select ``service``."""
        sent = 0
        for sub in self.store.list_subscriptions(kind=SubscriptionKind.SER_AVAILABILITY):
            if self.store.get_app(sub.app_instance_id).state is AppState.TERMINATED:
                continue  # its subscriptions stay until it is deleted, but nobody listens any more
            criteria = SerAvailabilityNotificationSubscription.model_validate(sub.body).filteringCriteria
            if not ServiceFilter.from_criteria(criteria).matches(service):
                continue
            href = str(sub.body["_links"]["self"]["href"])
            notification = ServiceAvailabilityNotification.model_validate({
                "notificationType": _SER_AVAILABILITY_TYPE,
                "serviceReferences": [{
                    "link": {"href": f"{_links_origin(href)}{SERVICE_MGMT_PREFIX}/services/{service.serInstanceId}"},
                    "serName": service.serName,
                    "serInstanceId": service.serInstanceId,
                    "state": service.state,
                    "changeType": change,
                }],
                "_links": {"subscription": {"href": href}},
            })
            self.notifier.send(sub, "ServiceAvailabilityNotification", notification.to_json())
            sent += 1
        log.info("service_changed", service=service.serInstanceId, name=service.serName, change=change.value,
                 notified=sent)

    # -- platform resources ----------------------------------------------------------------
    def transports(self, origin: str) -> list[TransportInfo]:
        """The transports this platform provides: its own HTTP REST API, secured by OAuth2 client credentials."""
        return [
            TransportInfo(
                id="mep-rest-http",
                name="REST",
                description="HTTP REST API of this MEC platform (Mp1), OAuth 2.0 client credentials",
                type=TransportType.REST_HTTP,
                protocol="HTTP",
                version="1.1",
                endpoint=EndPointInfoUris(uris=[origin + APP_SUPPORT_PREFIX, origin + SERVICE_MGMT_PREFIX]),
                security=SecurityInfo(
                    oAuth2Info=SecurityInfoOAuth2Info(
                        grantTypes=[SecurityInfoOAuth2InfoGrantType.OAUTH2_CLIENT_CREDENTIALS],
                        tokenEndpoint=origin + TOKEN_PATH,
                    )
                ),
            )
        ]

    def timing_caps(self) -> TimingCaps:
        """The time now and the NTP servers of ``mp1.ntp_servers`` (no PTP masters)."""
        ntp = []
        for priority, server in enumerate(self.config.mp1.ntp_servers, start=1):
            try:
                parse_ip(server)
                addr_type = TimingCapsNtpServersNtpServerAddrType.IP_ADDRESS
            except ValueError:
                addr_type = TimingCapsNtpServersNtpServerAddrType.DNS_NAME
            ntp.append(TimingCapsNtpServers(
                ntpServerAddrType=addr_type,
                ntpServerAddr=server,
                minPollingInterval=6,  # chrony's and ntpd's defaults: 2^6 .. 2^10 s
                maxPollingInterval=10,
                localPriority=priority,
                authenticationOption=TimingCapsNtpServersAuthenticationOption.NONE,
                authenticationKeyNum=0,
            ))
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        return TimingCaps(timeStamp=TimingCapsTimeStamp(seconds=seconds, nanoSeconds=nanos), ntpServers=ntp or None)

    def current_time(self) -> CurrentTime:
        """The platform's time; TRACEABLE when the kernel reports the clock synchronised (NTP/PTP)."""
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        status = TimeSourceStatus.TRACEABLE if clock_synchronized() else TimeSourceStatus.NONTRACEABLE
        return CurrentTime(seconds=seconds, nanoSeconds=nanos, timeSourceStatus=status)
