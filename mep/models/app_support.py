"""MEC 011 v2.1.1 application support types (mep/mp1/etsi/MecAppSupportApi.yaml).

Class names follow the schema names with the dots removed
(``TrafficRule.Action`` -> ``TrafficRuleAction``); field names are the JSON
member names. ``SCHEMAS`` in ``mep.models`` maps every schema name to its class.
"""
from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from .base import MAX_LIST, EtsiModel, Id, Int32, Text, Uri
from .common import LinkType, Self
from .types import AddressSpec, IpAddressText, MacAddressText, PortSpec, ProtocolSpec, TokenSpec

__all__ = [
    "AppReadyConfirmation",
    "OperationActionType",
    "AppTerminationConfirmation",
    "LinkTypeConfirmTermination",
    "AppTerminationNotificationLinks",
    "AppTerminationNotification",
    "AppTerminationNotificationSubscription",
    "TimeSourceStatus",
    "CurrentTime",
    "DestinationInterfaceInterfaceType",
    "TunnelInfoTunnelType",
    "TunnelInfo",
    "DestinationInterface",
    "DnsRuleIpAddressType",
    "DnsRuleState",
    "DnsRule",
    "MecAppSuptApiSubscriptionLinkListSubscription",
    "MecAppSuptApiSubscriptionLinkListLinks",
    "MecAppSuptApiSubscriptionLinkList",
    "TimingCapsNtpServersAuthenticationOption",
    "TimingCapsNtpServersNtpServerAddrType",
    "TimingCapsNtpServers",
    "TimingCapsPtpMasters",
    "TimingCapsTimeStamp",
    "TimingCaps",
    "TrafficFilter",
    "TrafficRuleAction",
    "TrafficRuleFilterType",
    "TrafficRuleState",
    "TrafficRule",
]

# Per-field list bound inside one traffic filter, and filters per rule. The
# compiler has its own, configurable capacity limits on top of these.
MAX_FILTER_ITEMS = 64
MAX_FILTERS_PER_RULE = 16


class AppReadyConfirmation(EtsiModel):
    indication: Literal["READY"]


class OperationActionType(StrEnum):
    STOPPING = "STOPPING"
    TERMINATING = "TERMINATING"


class AppTerminationConfirmation(EtsiModel):
    operationAction: OperationActionType


class LinkTypeConfirmTermination(EtsiModel):
    href: Optional[Uri] = None


class AppTerminationNotificationLinks(EtsiModel):
    subscription: LinkType
    confirmTermination: Optional[LinkTypeConfirmTermination] = None


class AppTerminationNotification(EtsiModel):
    notificationType: Literal["AppTerminationNotification"]
    operationAction: OperationActionType
    maxGracefulTimeout: Int32
    links: AppTerminationNotificationLinks = Field(alias="_links")


class AppTerminationNotificationSubscription(EtsiModel):
    subscriptionType: Literal["AppTerminationNotificationSubscription"]
    callbackReference: Uri
    links: Self = Field(alias="_links")
    appInstanceId: Id


class TimeSourceStatus(StrEnum):
    TRACEABLE = "TRACEABLE"
    NONTRACEABLE = "NONTRACEABLE"


class CurrentTime(EtsiModel):
    seconds: Int32
    nanoSeconds: Int32
    timeSourceStatus: TimeSourceStatus


class DestinationInterfaceInterfaceType(StrEnum):
    TUNNEL = "TUNNEL"
    MAC = "MAC"
    IP = "IP"


class TunnelInfoTunnelType(StrEnum):
    GTP_U = "GTP_U"
    GRE = "GRE"


class TunnelInfo(EtsiModel):
    tunnelType: TunnelInfoTunnelType
    # The YAML's examples for both addresses are '?', so the model accepts any
    # string; the compiler requires real addresses when a rule uses the tunnel.
    tunnelDstAddress: Optional[Text] = None
    tunnelSrcAddress: Optional[Text] = None


class DestinationInterface(EtsiModel):
    interfaceType: DestinationInterfaceInterfaceType
    tunnelInfo: Optional[TunnelInfo] = None
    srcMacAddress: Optional[MacAddressText] = None
    dstMacAddress: Optional[MacAddressText] = None
    dstIpAddress: Optional[IpAddressText] = None


class DnsRuleIpAddressType(StrEnum):
    IP_V6 = "IP_V6"
    IP_V4 = "IP_V4"


class DnsRuleState(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


def _check_domain_name(name: str) -> str:
    """A DNS name: 1..253 characters, labels 1..63 of letters, digits, '-' and '_'."""
    stripped = name[:-1] if name.endswith(".") else name
    if not stripped or len(stripped) > 253:
        raise ValueError("domain name must be 1..253 characters")
    for label in stripped.split("."):
        if not 1 <= len(label) <= 63:
            raise ValueError(f"label '{label}' must be 1..63 characters")
        if not all(c.isascii() and (c.isalnum() or c in "-_*") for c in label):
            raise ValueError(f"label '{label}' has a character outside letters, digits, '-', '_'")
    return name


class DnsRule(EtsiModel):
    dnsRuleId: Id
    domainName: Id
    ipAddressType: DnsRuleIpAddressType
    ipAddress: IpAddressText
    ttl: Optional[Int32] = Field(default=None, ge=0)
    state: DnsRuleState

    @field_validator("domainName")
    @classmethod
    def _domain_name(cls, value: str) -> str:
        return _check_domain_name(value)

    @model_validator(mode="after")
    def _family_matches_type(self) -> "DnsRule":
        version = ipaddress.ip_address(self.ipAddress).version
        if (version == 4) != (self.ipAddressType is DnsRuleIpAddressType.IP_V4):
            raise ValueError(f"ipAddress {self.ipAddress} is not of ipAddressType {self.ipAddressType.value}")
        return self


class MecAppSuptApiSubscriptionLinkListSubscription(EtsiModel):
    href: Uri
    rel: Text


class MecAppSuptApiSubscriptionLinkListLinks(EtsiModel):
    self: LinkType
    subscriptions: Optional[list[MecAppSuptApiSubscriptionLinkListSubscription]] = None


class MecAppSuptApiSubscriptionLinkList(EtsiModel):
    links: MecAppSuptApiSubscriptionLinkListLinks = Field(alias="_links")


class TimingCapsNtpServersAuthenticationOption(StrEnum):
    NONE = "NONE"
    SYMMETRIC_KEY = "SYMMETRIC_KEY"
    AUTO_KEY = "AUTO_KEY"


class TimingCapsNtpServersNtpServerAddrType(StrEnum):
    IP_ADDRESS = "IP_ADDRESS"
    DNS_NAME = "DNS_NAME"


class TimingCapsNtpServers(EtsiModel):
    ntpServerAddrType: TimingCapsNtpServersNtpServerAddrType
    ntpServerAddr: Text
    minPollingInterval: Int32
    maxPollingInterval: Int32
    localPriority: Int32
    authenticationOption: TimingCapsNtpServersAuthenticationOption
    authenticationKeyNum: Int32


class TimingCapsPtpMasters(EtsiModel):
    ptpMasterIpAddress: Text
    ptpMasterLocalPriority: Int32
    delayReqMaxRate: Int32


class TimingCapsTimeStamp(EtsiModel):
    seconds: Int32
    nanoSeconds: Int32


class TimingCaps(EtsiModel):
    timeStamp: Optional[TimingCapsTimeStamp] = None
    ntpServers: Optional[list[TimingCapsNtpServers]] = Field(default=None, max_length=MAX_LIST)
    ptpMasters: Optional[list[TimingCapsPtpMasters]] = Field(default=None, max_length=MAX_LIST)


def _items() -> Any:
    return Field(default=None, max_length=MAX_FILTER_ITEMS)


class TrafficFilter(EtsiModel):
    """One filter: every field it sets must match; each list matches if any element does."""

    srcAddress: Optional[list[AddressSpec]] = _items()
    dstAddress: Optional[list[AddressSpec]] = _items()
    srcPort: Optional[list[PortSpec]] = _items()
    dstPort: Optional[list[PortSpec]] = _items()
    protocol: Optional[list[ProtocolSpec]] = _items()
    token: Optional[list[TokenSpec]] = _items()
    srcTunnelAddress: Optional[list[AddressSpec]] = _items()
    tgtTunnelAddress: Optional[list[AddressSpec]] = _items()
    srcTunnelPort: Optional[list[PortSpec]] = _items()
    dstTunnelPort: Optional[list[PortSpec]] = _items()
    qCI: Optional[Int32] = Field(default=None, ge=0, le=255)
    dSCP: Optional[Int32] = Field(default=None, ge=0, le=63)
    tC: Optional[Int32] = Field(default=None, ge=0, le=255)


class TrafficRuleAction(StrEnum):
    DROP = "DROP"
    FORWARD_DECAPSULATED = "FORWARD_DECAPSULATED"
    FORWARD_ENCAPSULATED = "FORWARD_ENCAPSULATED"
    PASSTHROUGH = "PASSTHROUGH"
    DUPLICATE_DECAPSULATED = "DUPLICATE_DECAPSULATED"
    DUPLICATE_ENCAPSULATED = "DUPLICATE_ENCAPSULATED"


class TrafficRuleFilterType(StrEnum):
    FLOW = "FLOW"
    PACKET = "PACKET"


class TrafficRuleState(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class TrafficRule(EtsiModel):
    trafficRuleId: Id
    filterType: TrafficRuleFilterType
    # MEC 011 types priority as int32; the platform orders 0 (highest) .. 255.
    priority: Annotated[Int32, Field(ge=0, le=255)]
    trafficFilter: list[TrafficFilter] = Field(max_length=MAX_FILTERS_PER_RULE)
    action: TrafficRuleAction
    # The YAML types dstInterface as one object; the MEC 011 text allows two for
    # DUPLICATE_*. Both shapes are accepted and serialised back as given.
    dstInterface: Optional[Union[DestinationInterface, list[DestinationInterface]]] = None
    state: TrafficRuleState

    @field_validator("dstInterface")
    @classmethod
    def _at_most_two(
        cls, value: DestinationInterface | list[DestinationInterface] | None
    ) -> DestinationInterface | list[DestinationInterface] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 2:
            raise ValueError("dstInterface holds one or two destination interfaces")
        return value

    @property
    def dst_interfaces(self) -> tuple[DestinationInterface, ...]:
        """dstInterface as a tuple, whichever shape it was given in."""
        if self.dstInterface is None:
            return ()
        if isinstance(self.dstInterface, list):
            return tuple(self.dstInterface)
        return (self.dstInterface,)

