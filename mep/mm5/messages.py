"""Mm5 messages <-> platform models: request validation and response building.

Every request field is checked here, before anything reaches the store, and
a bad one raises InvalidInput naming it as the request spells it, down into
the JSON of an ETSI body: ``config.traffic_rules[2].trafficFilter[0].dstPort[0]``.
Lists are bounded by ``mm5.max_rules_per_app``; each body by the model's own
bounds (mep/models/base.py) and the whole message by ``mm5.max_message_bytes``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..credentials import is_secret_hash
from ..errors import InvalidInput
from ..models import DnsRule, DnsRuleState, ServiceDependency, ServiceInfo, TrafficRule, TrafficRuleState
from ..state import (
    AppConfig,
    AppCredentials,
    AppInstance,
    StoredDnsRule,
    StoredTask,
    StoredTrafficRule,
    StoreEvent,
)
from .rpc import pb

__all__ = [
    "MAX_ID_CHARS",
    "check_id",
    "check_text",
    "parse_config",
    "config_digest",
    "config_message",
    "app_message",
    "task_message",
    "event_message",
]

MAX_ID_CHARS = 256  # app instance ids, task ids, names (AppInstance.appInstanceId bounds)

M = TypeVar("M", bound=BaseModel)


def check_id(value: str, field: str) -> str:
    """A required id: 1..256 characters, no control characters."""
    if not value:
        raise InvalidInput("is required", field=field)
    return check_text(value, field)


def check_text(value: str, field: str) -> str:
    """Optional text: at most 256 characters, no control characters."""
    if len(value) > MAX_ID_CHARS:
        raise InvalidInput(f"is at most {MAX_ID_CHARS} characters, got {len(value)}", field=field)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput("must not contain control characters", field=field)
    return value


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _body(model: type[M], text: str, field: str) -> M:
    """One ETSI body from its JSON text; InvalidInput naming the first bad member."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"is not JSON: {exc}", field=field) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"must be a JSON object (a {model.__name__}), got {type(data).__name__}", field=field)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidInput(message + more, field=_path(field, first["loc"])) from None


def _bodies(model: type[M], texts: Sequence[str], field: str, max_items: int) -> tuple[M, ...]:
    if len(texts) > max_items:
        raise InvalidInput(f"holds at most {max_items} entries (mm5.max_rules_per_app), got {len(texts)}", field=field)
    return tuple(_body(model, text, f"{field}[{i}]") for i, text in enumerate(texts))


def parse_config(msg: pb.AppConfiguration, *, max_items: int, field: str = "config") -> AppConfig:
    """The AppConfig a request carries; InvalidInput naming the first bad field."""
    credentials = None
    if msg.HasField("credentials"):
        c = msg.credentials
        check_id(c.client_id, f"{field}.credentials.client_id")
        if not is_secret_hash(c.client_secret_hash):
            raise InvalidInput(
                "must be mep.credentials.hash_secret(secret): scrypt$<salt>$<hash>; the secret itself never "
                "travels over Mm5",
                field=f"{field}.credentials.client_secret_hash",
            )
        credentials = AppCredentials(client_id=c.client_id, client_secret_hash=c.client_secret_hash)
    return AppConfig(
        traffic_rules=_bodies(TrafficRule, msg.traffic_rules, f"{field}.traffic_rules", max_items),
        dns_rules=_bodies(DnsRule, msg.dns_rules, f"{field}.dns_rules", max_items),
        services=_bodies(ServiceInfo, msg.services_produced, f"{field}.services_produced", max_items),
        required_services=_bodies(
            ServiceDependency, msg.services_required, f"{field}.services_required", max_items
        ),
        credentials=credentials,
    )


def config_digest(config: AppConfig) -> str:
    """SHA-256 of the configuration's canonical JSON: equal digests, equal configurations."""
    canonical = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json(model: BaseModel) -> str:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(data, separators=(",", ":"))


def config_message(
    traffic_rules: Sequence[StoredTrafficRule],
    dns_rules: Sequence[StoredDnsRule],
    services: Sequence[ServiceInfo],
    app: AppInstance,
) -> pb.AppConfiguration:
    """An app's stored configuration as it would be sent; credentials carry the client id only."""
    msg = pb.AppConfiguration(
        traffic_rules=[_json(r.rule) for r in traffic_rules],
        dns_rules=[_json(r.rule) for r in dns_rules],
        services_produced=[_json(s) for s in services],
        services_required=[_json(s) for s in app.required_services],
    )
    if app.client_id:
        msg.credentials.client_id = app.client_id
    return msg


def app_message(
    app: AppInstance,
    *,
    in_force: bool,
    traffic_rules: Sequence[StoredTrafficRule],
    dns_rules: Sequence[StoredDnsRule],
    services_produced: int,
    last_task_id: str,
) -> pb.AppInstance:
    """An app instance with its rule references."""
    return pb.AppInstance(
        app_instance_id=app.appInstanceId,
        app_name=app.appName,
        app_provider=app.appProvider,
        app_d_id=app.appDId,
        state=app.state.value,
        config_generation=app.config_generation,
        in_force=in_force,
        graceful_timeout_s=app.graceful_timeout_s,
        confirm_ready_required=app.confirm_ready_required,
        client_id=app.client_id,
        revision=app.revision,
        created_at=app.created_at,
        updated_at=app.updated_at,
        traffic_rules=[
            pb.RuleRef(id=r.rule.trafficRuleId, rule_id=r.rule_id, active=r.rule.state is TrafficRuleState.ACTIVE)
            for r in traffic_rules
        ],
        dns_rules=[
            pb.RuleRef(id=r.rule.dnsRuleId, rule_id=r.rule_id, active=r.rule.state is DnsRuleState.ACTIVE)
            for r in dns_rules
        ],
        services_produced=services_produced,
        last_task_id=last_task_id,
    )


def task_message(task: StoredTask) -> pb.Task:
    """A stored task as sent."""
    return pb.Task(
        task_id=task.task_id,
        app_instance_id=task.app_instance_id,
        generation=task.generation,
        state=task.state.value,
        detail=task.detail,
        history=[pb.TaskTransition(state=s.value, at=at) for s, at in task.history],
        previous_generation=task.previous_generation,
        config_revision=task.config_revision,
    )


def event_message(event: StoreEvent) -> pb.Event:
    """A store event as sent."""
    return pb.Event(
        revision=event.revision,
        kind=event.kind.name,
        op=event.op.name,
        app_instance_id=event.app_instance_id,
        key=event.key,
    )
