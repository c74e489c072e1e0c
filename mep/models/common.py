"""Types both MEC 011 APIs define identically: LinkType, Self, ProblemDetails."""
from __future__ import annotations

from typing import Optional

from .base import EtsiModel, Int32, Text, Uri

__all__ = ["LinkType", "Self", "ProblemDetails"]


class LinkType(EtsiModel):
    href: Optional[Uri] = None


class Self(EtsiModel):
    self: LinkType


class ProblemDetails(EtsiModel):
    type: Optional[Uri] = None
    title: Optional[Text] = None
    status: Optional[Int32] = None
    detail: Optional[Text] = None
    instance: Optional[Uri] = None
