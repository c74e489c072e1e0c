"""Pydantic v2 models of every MEC 011 v2.1.1 type the platform uses.

``SCHEMAS`` maps each schema name of the two OpenAPI files in
mep/mp1/etsi/ to the class that models it; tests walk the YAML through it.
The MEC 010-2 types an app's configuration carries over Mm5 (``ServiceDependency``)
are in app_descriptor.py.
"""
from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from . import app_support as _app
from . import service_mgmt as _svc
from .app_descriptor import ServiceDependency, TransportDependency, TransportDescriptor
from .app_support import *  # noqa: F403
from .base import EtsiModel
from .common import LinkType, ProblemDetails, Self
from .service_mgmt import *  # noqa: F403
from .types import AddrRange, PortRange, Protocol, VlanId

__all__ = [
    "EtsiModel",
    "LinkType",
    "ProblemDetails",
    "Self",
    "AddrRange",
    "PortRange",
    "Protocol",
    "VlanId",
    "ServiceDependency",
    "TransportDependency",
    "TransportDescriptor",
    "SCHEMAS",
    *_app.__all__,
    *_svc.__all__,
]

# YAML schema name -> model class. Dotted YAML names lose their dots in Python.
SCHEMAS: dict[str, type[BaseModel] | type[StrEnum]] = {
    "LinkType": LinkType,
    "Self": Self,
    "ProblemDetails": ProblemDetails,
    "AppReadyConfirmation": _app.AppReadyConfirmation,
    "AppTerminationConfirmation": _app.AppTerminationConfirmation,
    "AppTerminationNotification.Links": _app.AppTerminationNotificationLinks,
    "AppTerminationNotification": _app.AppTerminationNotification,
    "AppTerminationNotificationSubscription": _app.AppTerminationNotificationSubscription,
    "CurrentTime": _app.CurrentTime,
    "DestinationInterface.InterfaceType": _app.DestinationInterfaceInterfaceType,
    "DestinationInterface": _app.DestinationInterface,
    "DnsRule.IpAddressType": _app.DnsRuleIpAddressType,
    "DnsRule.State": _app.DnsRuleState,
    "DnsRule": _app.DnsRule,
    "LinkType.ConfirmTermination": _app.LinkTypeConfirmTermination,
    "MecAppSuptApiSubscriptionLinkList.Links": _app.MecAppSuptApiSubscriptionLinkListLinks,
    "MecAppSuptApiSubscriptionLinkList.Subscription": _app.MecAppSuptApiSubscriptionLinkListSubscription,
    "MecAppSuptApiSubscriptionLinkList": _app.MecAppSuptApiSubscriptionLinkList,
    "OperationActionType": _app.OperationActionType,
    "TimingCaps.NtpServers.AuthenticationOption": _app.TimingCapsNtpServersAuthenticationOption,
    "TimingCaps.NtpServers.NtpServerAddrType": _app.TimingCapsNtpServersNtpServerAddrType,
    "TimingCaps.NtpServers": _app.TimingCapsNtpServers,
    "TimingCaps_PtpMasters": _app.TimingCapsPtpMasters,
    "TimingCaps.TimeStamp": _app.TimingCapsTimeStamp,
    "TimingCaps": _app.TimingCaps,
    "TrafficFilter": _app.TrafficFilter,
    "TrafficRule.Action": _app.TrafficRuleAction,
    "TrafficRule.FilterType": _app.TrafficRuleFilterType,
    "TrafficRule.State": _app.TrafficRuleState,
    "TrafficRule": _app.TrafficRule,
    "TunnelInfo.TunnelType": _app.TunnelInfoTunnelType,
    "TunnelInfo": _app.TunnelInfo,
    "TimeSourceStatus": _app.TimeSourceStatus,
    "CategoryRef": _svc.CategoryRef,
    "EndPointInfo.Address": _svc.EndPointInfoAddress,
    "EndPointInfo.Addresses": _svc.EndPointInfoAddresses,
    "EndPointInfo.Alternative": _svc.EndPointInfoAlternative,
    "EndPointInfo.Uris": _svc.EndPointInfoUris,
    "MecServiceMgmtApiSubscriptionLinkList.Links": _svc.MecServiceMgmtApiSubscriptionLinkListLinks,
    "MecServiceMgmtApiSubscriptionLinkList.Subscription": _svc.MecServiceMgmtApiSubscriptionLinkListSubscription,
    "MecServiceMgmtApiSubscriptionLinkList": _svc.MecServiceMgmtApiSubscriptionLinkList,
    "SecurityInfo.OAuth2Info.GrantType": _svc.SecurityInfoOAuth2InfoGrantType,
    "SecurityInfo.OAuth2Info": _svc.SecurityInfoOAuth2Info,
    "SecurityInfo": _svc.SecurityInfo,
    "SerAvailabilityNotificationSubscription": _svc.SerAvailabilityNotificationSubscription,
    "SerAvailabilityNotificationSubscription.FilteringCriteria": (
        _svc.SerAvailabilityNotificationSubscriptionFilteringCriteria
    ),
    "ServiceAvailabilityNotification": _svc.ServiceAvailabilityNotification,
    "ServiceAvailabilityNotification.ServiceReferences": _svc.ServiceAvailabilityNotificationServiceReferences,
    "ServiceAvailabilityNotification.ChangeType": _svc.ServiceAvailabilityNotificationChangeType,
    "SerializerType": _svc.SerializerType,
    "LocalityType": _svc.LocalityType,
    "ServiceState": _svc.ServiceState,
    "ServiceInfo": _svc.ServiceInfo,
    "Subscription": _svc.Subscription,
    "TransportInfo": _svc.TransportInfo,
    "TransportType": _svc.TransportType,
}
