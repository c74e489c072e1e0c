"""ETSI GS MEC 010-2 types that reach the MEP: what an app requires of the platform.

MEPM reads them from an AppD (``appServiceRequired``) and sends them over
Mm5 with the rest of the app's configuration; the store keeps them on the app
instance (``AppInstance.required_services``). MEC 011 has no schema for them,
so they are not in ``SCHEMAS``.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from .base import MAX_LIST, EtsiModel, Text
from .service_mgmt import CategoryRef, SecurityInfo, SerializerType, TransportType

__all__ = ["TransportDescriptor", "TransportDependency", "ServiceDependency"]


class TransportDescriptor(EtsiModel):
    """MEC 010-2 TransportDescriptor: a transport an app can use to reach a service."""

    type: TransportType
    protocol: Text
    version: Text
    security: Optional[SecurityInfo] = None
    implSpecificInfo: Optional[dict[str, Any]] = None


class TransportDependency(EtsiModel):
    """MEC 010-2 TransportDependency: a transport with the serializers and labels the app needs."""

    transport: TransportDescriptor
    serializers: list[SerializerType] = Field(min_length=1, max_length=8)
    labels: list[Text] = Field(min_length=1, max_length=MAX_LIST)


class ServiceDependency(EtsiModel):
    """MEC 010-2 ServiceDependency: a MEC service the app requires (``appServiceRequired``)."""

    serName: Text = Field(min_length=1)
    serCategory: Optional[CategoryRef] = None
    version: Text = Field(min_length=1)
    serTransportDependencies: Optional[list[TransportDependency]] = Field(default=None, max_length=16)
    requestedPermissions: Optional[list[Text]] = Field(default=None, max_length=MAX_LIST)
