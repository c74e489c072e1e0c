"""Application descriptors (AppD, ETSI GS MEC 010-2 style) from YAML or JSON, with errors by field and line.

What MEPM reads of an AppD, and what it becomes on the MEP (Mm5)::

    appDId, appName, appProvider, appSoftVersion   identity (appDVersion, appDescription optional)
    appTrafficRule[]        TrafficRuleDescriptor -> MEC 011 TrafficRule, state ACTIVE
    appDNSRule[]            DNSRuleDescriptor     -> MEC 011 DnsRule, state ACTIVE
    appServiceRequired[]    ServiceDependency     -> the app's required services
      or mecAppRequirements.requiredMecServices[] (the same, in the other common layout)
    appServiceProduced[]    ServiceDescriptor     -> MEC 011 ServiceInfo, registered for the app
    terminateAppInstanceOpConfig.minGracefulTerminationTimeout -> the graceful timeout, seconds

MEC 010-2 spells interface addresses ``dstIPAddress``/``dstMACAddress``/
``srcMACAddress``; MEC 011's ``dstIpAddress`` spellings are accepted too.
``dstInterface`` is a list of at most two descriptors, or one.
A produced service needs an ``endpoint`` under its first
``transportsSupported`` entry (MEC 011 EndPointInfo: ``uris`` or
``addresses``): MEC 010-2 leaves the address to the instance, and MEPM
registers the service with it.

Other MEC 010-2 attributes (virtualComputeDescriptor, swImageDescriptor,
appExtCpd, ...) are accepted and not used. Any other key, at the top level or
inside a descriptor MEPM reads, is an error with a suggestion, so a typo never
silently drops a rule. Every error names the file, the line and the field::

    video.yaml:14: appTrafficRule[0].trafficFilter[0].dstPort[0]: port 70000 in '70000' is above 65535
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from mep.errors import InvalidInput
from mep.models import (
    CategoryRef,
    DestinationInterfaceInterfaceType,
    DnsRule,
    DnsRuleState,
    EndPointInfoAddresses,
    EndPointInfoUris,
    SerializerType,
    ServiceDependency,
    ServiceInfo,
    TrafficFilter,
    TrafficRule,
    TrafficRuleAction,
    TrafficRuleFilterType,
    TransportDescriptor,
    TunnelInfo,
)
from mep.models.types import IpAddressText, MacAddressText

__all__ = [
    "AppdError",
    "AppDescriptor",
    "InterfaceDescriptor",
    "TrafficRuleDescriptor",
    "DNSRuleDescriptor",
    "ServiceDescriptor",
    "TransportsSupported",
    "load_appd",
    "parse_appd",
    "appd_json",
    "MAX_APPD_BYTES",
]

MAX_APPD_BYTES = 1 << 20  # an AppD with thousands of rules stays far below this
_MAX_RULES = 4096  # per list; a MEP refuses more than mm5.max_rules_per_app anyway

# MEC 010-2 AppD attributes MEPM accepts and does not use.
_UNUSED = frozenset({
    "appDVersion", "mecVersion", "appInfoName", "appDescription", "virtualComputeDescriptor",
    "swImageDescriptor", "virtualStorageDescriptor", "appExtCpd", "appServiceOptional", "appFeatureRequired",
    "appFeatureOptional", "transportDependencies", "appLatency", "changeAppInstanceStateOpConfig",
    "userContextTransferCapability", "appNetworkPolicy",
})


class AppdError(InvalidInput):
    """A bad AppD: ``detail`` reads ``FILE:LINE: FIELD: message``."""

    def __init__(self, source: str, line: int | None, field: str, message: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}", field=field or None)
        self.source = source
        self.line = line

    def __str__(self) -> str:
        return self.detail


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, str_max_length=4096)


class _StrictFilter(TrafficFilter):
    model_config = ConfigDict(extra="forbid")


class _StrictDependency(ServiceDependency):
    model_config = ConfigDict(extra="forbid")


class InterfaceDescriptor(_Strict):
    """MEC 010-2 InterfaceDescriptor: where FORWARD_* and DUPLICATE_* send packets."""

    interfaceType: DestinationInterfaceInterfaceType
    tunnelInfo: Optional[TunnelInfo] = None
    srcMACAddress: Optional[MacAddressText] = Field(
        default=None, validation_alias=AliasChoices("srcMACAddress", "srcMacAddress")
    )
    dstMACAddress: Optional[MacAddressText] = Field(
        default=None, validation_alias=AliasChoices("dstMACAddress", "dstMacAddress")
    )
    dstIPAddress: Optional[IpAddressText] = Field(
        default=None, validation_alias=AliasChoices("dstIPAddress", "dstIpAddress")
    )

    def to_etsi(self) -> dict[str, Any]:
        """The MEC 011 DestinationInterface."""
        out: dict[str, Any] = {"interfaceType": self.interfaceType.value}
        if self.tunnelInfo is not None:
            out["tunnelInfo"] = self.tunnelInfo.to_json()
        for name, value in (("srcMacAddress", self.srcMACAddress), ("dstMacAddress", self.dstMACAddress),
                            ("dstIpAddress", self.dstIPAddress)):
            if value is not None:
                out[name] = value
        return out


class TrafficRuleDescriptor(_Strict):
    """MEC 010-2 TrafficRuleDescriptor."""

    trafficRuleId: str = Field(min_length=1, max_length=256)
    filterType: TrafficRuleFilterType
    priority: int = Field(ge=0, le=255, strict=True)
    trafficFilter: list[_StrictFilter] = Field(min_length=1, max_length=16)
    action: TrafficRuleAction
    dstInterface: list[InterfaceDescriptor] = Field(default_factory=list, max_length=2)

    @field_validator("dstInterface", mode="before")
    @classmethod
    def _one_or_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    def to_etsi(self) -> TrafficRule:
        """The MEC 011 TrafficRule, state ACTIVE."""
        body: dict[str, Any] = {
            "trafficRuleId": self.trafficRuleId,
            "filterType": self.filterType.value,
            "priority": self.priority,
            "trafficFilter": [f.to_json() for f in self.trafficFilter],
            "action": self.action.value,
            "state": "ACTIVE",
        }
        if len(self.dstInterface) == 1:
            body["dstInterface"] = self.dstInterface[0].to_etsi()
        elif self.dstInterface:
            body["dstInterface"] = [d.to_etsi() for d in self.dstInterface]
        return TrafficRule.model_validate(body)


class DNSRuleDescriptor(DnsRule):
    """MEC 010-2 DNSRuleDescriptor: a MEC 011 DnsRule whose state is ACTIVE unless given."""

    model_config = ConfigDict(extra="forbid")

    state: DnsRuleState = DnsRuleState.ACTIVE

    def to_etsi(self) -> DnsRule:
        """The MEC 011 DnsRule."""
        return DnsRule.model_validate(self.to_json())


class TransportsSupported(_Strict):
    """One transport a produced service offers, with the endpoint MEPM registers it at."""

    transport: TransportDescriptor
    serializers: list[SerializerType] = Field(min_length=1, max_length=8)
    endpoint: Optional[Union[EndPointInfoUris, EndPointInfoAddresses]] = None


class ServiceDescriptor(_Strict):
    """MEC 010-2 ServiceDescriptor (``appServiceProduced``)."""

    serName: str = Field(min_length=1, max_length=1024)
    serCategory: Optional[CategoryRef] = None
    version: str = Field(min_length=1, max_length=1024)
    transportsSupported: list[TransportsSupported] = Field(min_length=1, max_length=8)

    @field_validator("transportsSupported")
    @classmethod
    def _endpoint(cls, value: list[TransportsSupported]) -> list[TransportsSupported]:
        if value and value[0].endpoint is None:
            raise ValueError(
                "transportsSupported[0] needs an endpoint (uris or addresses): MEC 010-2 leaves the address to "
                "the instance, and MEPM registers the service with it"
            )
        return value

    def to_etsi(self) -> ServiceInfo:
        """The MEC 011 ServiceInfo MEPM registers for the app (its first transport)."""
        first = self.transportsSupported[0]
        t = first.transport
        assert first.endpoint is not None
        body: dict[str, Any] = {
            "serName": self.serName,
            "version": self.version,
            "state": "ACTIVE",
            "serializer": first.serializers[0].value,
            "transportInfo": {
                "id": f"{self.serName}-{t.type.value.lower()}",
                "name": f"{t.protocol} {t.version}",
                "type": t.type.value,
                "protocol": t.protocol,
                "version": t.version,
                "endpoint": first.endpoint.to_json(),
                "security": t.security.to_json() if t.security is not None else {},
            },
        }
        if self.serCategory is not None:
            body["serCategory"] = self.serCategory.to_json()
        return ServiceInfo.model_validate(body)


class TerminateOpConfig(_Strict):
    """MEC 010-2 TerminateAppInstanceOpConfig."""

    minGracefulTerminationTimeout: int = Field(ge=0, le=3600, strict=True)
    maxRecommendedGracefulTerminationTimeout: Optional[int] = Field(default=None, ge=0, le=3600, strict=True)


class MecAppRequirements(BaseModel):
    """The other AppD layout's requirements block; only requiredMecServices is used (QoS hints are not)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    requiredMecServices: list[_StrictDependency] = Field(default_factory=list, max_length=256)


class AppDescriptor(BaseModel):
    """An AppD as MEPM uses it (module docstring)."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=4096)

    appDId: str = Field(min_length=1, max_length=256)
    appName: str = Field(min_length=1, max_length=256)
    appProvider: str = Field(min_length=1, max_length=256)
    appSoftVersion: str = Field(min_length=1, max_length=256)
    appDVersion: Optional[str] = None
    appDescription: Optional[str] = None
    appTrafficRule: list[TrafficRuleDescriptor] = Field(default_factory=list, max_length=_MAX_RULES)
    appDNSRule: list[DNSRuleDescriptor] = Field(default_factory=list, max_length=_MAX_RULES)
    appServiceRequired: list[_StrictDependency] = Field(default_factory=list, max_length=256)
    appServiceProduced: list[ServiceDescriptor] = Field(default_factory=list, max_length=256)
    terminateAppInstanceOpConfig: Optional[TerminateOpConfig] = None
    mecAppRequirements: Optional[MecAppRequirements] = None

    @property
    def required_services(self) -> list[ServiceDependency]:
        """appServiceRequired, or mecAppRequirements.requiredMecServices."""
        if self.appServiceRequired:
            return list(self.appServiceRequired)
        return list(self.mecAppRequirements.requiredMecServices) if self.mecAppRequirements else []

    @property
    def graceful_timeout_s(self) -> int | None:
        """terminateAppInstanceOpConfig.minGracefulTerminationTimeout, if given."""
        op = self.terminateAppInstanceOpConfig
        return op.minGracefulTerminationTimeout if op is not None else None

    def traffic_rules(self) -> list[TrafficRule]:
        """The MEC 011 traffic rules."""
        return [r.to_etsi() for r in self.appTrafficRule]

    def dns_rules(self) -> list[DnsRule]:
        """The MEC 011 DNS rules."""
        return [r.to_etsi() for r in self.appDNSRule]

    def services(self) -> list[ServiceInfo]:
        """The MEC 011 services the app produces."""
        return [s.to_etsi() for s in self.appServiceProduced]

    def document(self) -> dict[str, Any]:
        """The AppD as plain JSON data, as MEPM stores it (``AppDescriptor.model_validate`` reads it back)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data


# -- reading, with lines -------------------------------------------------------------------


Path_ = tuple[Union[str, int], ...]


def _lines(node: yaml.Node, path: Path_, lines: dict[Path_, int], source: str) -> None:
    """Record the line of every key and item under ``node``; AppdError on a duplicate key."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first:
                raise AppdError(source, line, _dotted(path + (key,)), f"duplicate key (first at line {first[key]})")
            first[key] = line
            lines[path + (key,)] = line
            _lines(value_node, path + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _lines(item, path + (i,), lines, source)


def _dotted(path: Sequence[Union[str, int]]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(path: Sequence[Union[str, int]], lines: dict[Path_, int]) -> int | None:
    """The line of the deepest part of ``path`` the file has; an index into a single mapping
    (``dstInterface`` given as one object) is skipped."""
    found: Path_ = ()
    line = lines.get(())
    for part in path:
        candidate = found + (part,)
        if candidate in lines:
            found, line = candidate, lines[candidate]
        elif not isinstance(part, int):
            break
    return line


def _field_names() -> set[str]:
    """Every field name (and alias) of the descriptors MEPM reads: the vocabulary for suggestions."""
    names: set[str] = set()
    for model in (AppDescriptor, TrafficRuleDescriptor, _StrictFilter, InterfaceDescriptor, DNSRuleDescriptor,
                  ServiceDescriptor, TransportsSupported, TransportDescriptor, _StrictDependency, TerminateOpConfig,
                  MecAppRequirements, TunnelInfo, CategoryRef):
        for name, info in model.model_fields.items():
            names.add(name)
            if isinstance(info.validation_alias, AliasChoices):
                names.update(str(c) for c in info.validation_alias.choices)
    return names


def _check_keys(data: dict[str, Any], lines: dict[Path_, int], source: str) -> None:
    known = set(AppDescriptor.model_fields) | _UNUSED
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else " (not an AppD attribute MEPM knows)"
            raise AppdError(source, lines.get((key,)), key, "unknown field" + hint)


def parse_appd(text: str, source: str = "<appd>") -> AppDescriptor:
    """Parse and validate one AppD; AppdError naming the file, line and field of the first problem."""
    if len(text.encode()) > MAX_APPD_BYTES:
        raise AppdError(source, None, "", f"is larger than {MAX_APPD_BYTES} bytes")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise AppdError(source, line, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict) or node is None:
        raise AppdError(source, 1, "", "an AppD is a mapping (appDId, appName, ...)")
    lines: dict[Path_, int] = {}
    _lines(node, (), lines, source)
    _check_keys(data, lines, source)
    try:
        appd = AppDescriptor.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        loc = list(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), sorted(_field_names()), n=1)
            message = "unknown field" + (f"; did you mean {close[0]}?" if close else "")
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        if err["type"] == "missing":
            message = "required" + message.removeprefix("Field required")
        raise AppdError(source, _line_of(loc, lines), _dotted(loc), message) from None
    _check_ids(appd, lines, source)
    return appd


def _check_ids(appd: AppDescriptor, lines: dict[Path_, int], source: str) -> None:
    """Rule ids are unique per list; required services are given in one layout only."""
    for field, key, ids in (
        ("appTrafficRule", "trafficRuleId", [r.trafficRuleId for r in appd.appTrafficRule]),
        ("appDNSRule", "dnsRuleId", [r.dnsRuleId for r in appd.appDNSRule]),
    ):
        first: dict[str, int] = {}
        for i, rule_id in enumerate(ids):
            rule_path: Path_ = (field, i, key)
            if rule_id in first:
                raise AppdError(source, lines.get(rule_path), _dotted(rule_path),
                                f"'{rule_id}' is also the id of {field}[{first[rule_id]}]")
            first[rule_id] = i
    if appd.appServiceRequired and appd.mecAppRequirements and appd.mecAppRequirements.requiredMecServices:
        path: Path_ = ("mecAppRequirements", "requiredMecServices")
        raise AppdError(source, lines.get(path), _dotted(path),
                        "required services are already given as appServiceRequired; give them once")


def load_appd(path: Path) -> AppDescriptor:
    """Read and parse the AppD file at ``path`` (YAML or JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AppdError(str(path), None, "", f"cannot read: {exc}") from None
    return parse_appd(text, str(path))


def appd_json(appd: AppDescriptor) -> str:
    """Canonical JSON of an AppD: equal for equal descriptors."""
    return json.dumps(appd.document(), sort_keys=True, separators=(",", ":"))
