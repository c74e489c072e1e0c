"""MEC 011 v2.1.1 service management types (mep/mp1/etsi/MecServiceMgmtApi.yaml).

Class names follow the schema names with dots and underscores removed
(``EndPointInfo.Address`` -> ``EndPointInfoAddress``).
"""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator

from .base import MAX_LIST, Bool, EtsiModel, Id, Int32, Text, Uri
from .common import LinkType, Self

__all__ = [
    "CategoryRef",
    "EndPointInfoAddress",
    "EndPointInfoAddresses",
    "EndPointInfoAlternative",
    "EndPointInfoUris",
    "MecServiceMgmtApiSubscriptionLinkListSubscription",
    "MecServiceMgmtApiSubscriptionLinkListLinks",
    "MecServiceMgmtApiSubscriptionLinkList",
    "SecurityInfoOAuth2InfoGrantType",
    "SecurityInfoOAuth2Info",
    "SecurityInfo",
    "ServiceState",
    "SerAvailabilityNotificationSubscriptionFilteringCriteria",
    "SerAvailabilityNotificationSubscription",
    "ServiceAvailabilityNotificationChangeType",
    "ServiceAvailabilityNotificationServiceReferences",
    "Subscription",
    "ServiceAvailabilityNotification",
    "SerializerType",
    "LocalityType",
    "TransportType",
    "TransportInfo",
    "ServiceInfo",
]


class CategoryRef(EtsiModel):
    href: Uri
    id: Id
    name: Text
    version: Text


class EndPointInfoAddress(EtsiModel):
    host: Text
    port: Annotated[Int32, Field(ge=0, le=65535)]


class EndPointInfoAddresses(EtsiModel):
    addresses: list[EndPointInfoAddress] = Field(max_length=MAX_LIST)


class EndPointInfoAlternative(EtsiModel):
    alternative: dict[str, Any]


class EndPointInfoUris(EtsiModel):
    uris: list[Uri] = Field(max_length=MAX_LIST)


class MecServiceMgmtApiSubscriptionLinkListSubscription(EtsiModel):
    href: Uri
    rel: Text


class MecServiceMgmtApiSubscriptionLinkListLinks(EtsiModel):
    self: LinkType
    subscriptions: Optional[list[MecServiceMgmtApiSubscriptionLinkListSubscription]] = None


class MecServiceMgmtApiSubscriptionLinkList(EtsiModel):
    links: MecServiceMgmtApiSubscriptionLinkListLinks = Field(alias="_links")


class SecurityInfoOAuth2InfoGrantType(StrEnum):
    OAUTH2_AUTHORIZATION_CODE = "OAUTH2_AUTHORIZATION_CODE"
    OAUTH2_IMPLICIT_GRANT = "OAUTH2_IMPLICIT_GRANT"
    OAUTH2_RESOURCE_OWNER = "OAUTH2_RESOURCE_OWNER"
    OAUTH2_CLIENT_CREDENTIALS = "OAUTH2_CLIENT_CREDENTIALS"


class SecurityInfoOAuth2Info(EtsiModel):
    grantTypes: list[SecurityInfoOAuth2InfoGrantType] = Field(min_length=1, max_length=4)
    tokenEndpoint: Uri


class SecurityInfo(EtsiModel):
    oAuth2Info: Optional[SecurityInfoOAuth2Info] = None


class ServiceState(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class SerAvailabilityNotificationSubscriptionFilteringCriteria(EtsiModel):
    serInstanceIds: Optional[list[Id]] = Field(default=None, max_length=MAX_LIST)
    serNames: Optional[list[Text]] = Field(default=None, max_length=MAX_LIST)
    serCategories: Optional[list[CategoryRef]] = Field(default=None, max_length=MAX_LIST)
    states: Optional[list[ServiceState]] = Field(default=None, max_length=2)
    isLocal: Optional[Bool] = None


class SerAvailabilityNotificationSubscription(EtsiModel):
    subscriptionType: Literal["SerAvailabilityNotificationSubscription"]
    callbackReference: Uri
    links: Self = Field(alias="_links")
    filteringCriteria: Optional[SerAvailabilityNotificationSubscriptionFilteringCriteria] = None


class ServiceAvailabilityNotificationChangeType(StrEnum):
    ADDED = "ADDED"
    REMOVED = "REMOVED"
    STATE_CHANGED = "STATE_CHANGED"
    ATTRIBUTES_CHANGED = "ATTRIBUTES_CHANGED"


class ServiceAvailabilityNotificationServiceReferences(EtsiModel):
    link: Optional[LinkType] = None
    serName: Text
    serInstanceId: Id
    state: ServiceState
    changeType: ServiceAvailabilityNotificationChangeType


class Subscription(EtsiModel):
    subscription: LinkType


class ServiceAvailabilityNotification(EtsiModel):
    # The YAML's description and example both say SerAvailabilityNotificationSubscription.
    notificationType: Text
    serviceReferences: list[ServiceAvailabilityNotificationServiceReferences] = Field(max_length=MAX_LIST)
    links: Subscription = Field(alias="_links")


class SerializerType(StrEnum):
    JSON = "JSON"
    XML = "XML"
    PROTOBUF3 = "PROTOBUF3"


class LocalityType(StrEnum):
    MEC_SYSTEM = "MEC_SYSTEM"
    MEC_HOST = "MEC_HOST"
    NFVI_POP = "NFVI_POP"
    ZONE = "ZONE"
    ZONE_GROUP = "ZONE_GROUP"
    NFVI_NODE = "NFVI_NODE"


class TransportType(StrEnum):
    REST_HTTP = "REST_HTTP"
    MB_TOPIC_BASED = "MB_TOPIC_BASED"
    MB_ROUTING = "MB_ROUTING"
    MB_PUBSUB = "MB_PUBSUB"
    RPC = "RPC"
    RPC_STREAMING = "RPC_STREAMING"
    WEBSOCKET = "WEBSOCKET"


class TransportInfo(EtsiModel):
    id: Id
    name: Text
    description: Optional[Text] = None
    type: TransportType
    protocol: Text
    version: Text
    endpoint: Union[EndPointInfoUris, EndPointInfoAddresses, EndPointInfoAlternative]
    security: SecurityInfo
    implSpecificInfo: Optional[dict[str, Any]] = None

    @field_validator("endpoint", mode="before")
    @classmethod
    def _one_endpoint_form(cls, value: Any) -> Any:
        # EndPointInfo is a oneOf: an object holding two of the forms matches both, which oneOf refuses
        # (other members are ignored, as everywhere).
        if isinstance(value, dict):
            forms = [key for key in ("uris", "addresses", "alternative") if key in value]
            if len(forms) > 1:
                raise ValueError(f"exactly one of uris, addresses and alternative, not {' and '.join(forms)}")
        return value


class ServiceInfo(EtsiModel):
    serInstanceId: Optional[Id] = None
    serName: Text
    serCategory: Optional[CategoryRef] = None
    version: Text
    state: ServiceState
    transportInfo: TransportInfo
    serializer: SerializerType
    # Defaults are serialised explicitly: MEC 011 says scopeOfLocality defaults
    # to MEC_HOST when absent; a service registered here is local to this host.
    scopeOfLocality: LocalityType = LocalityType.MEC_HOST
    consumedLocalOnly: Bool = False
    isLocal: Bool = True
