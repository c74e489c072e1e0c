"""Mm5: the gRPC service MEPM uses to manage apps on this MEP (docs/mm5.md).

``Mm5Service`` is the daemon service ``mep run`` hosts; ``Mm5Client`` the
typed asyncio client. mm5.proto is the one definition of the messages and
RPCs; ``make setup`` generates ``mm5_pb2`` from it.
"""
from __future__ import annotations

from .client import ClientTls, Mm5Client
from .service import Mm5Service

__all__ = ["ClientTls", "Mm5Client", "Mm5Service"]
