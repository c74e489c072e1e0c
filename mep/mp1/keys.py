"""Typed application keys of the Mp1 aiohttp app: how handlers reach the layer they translate for."""
from __future__ import annotations

from aiohttp import web

from .http import Representations
from .support import AppSupport

__all__ = ["SUPPORT", "REPRESENTATIONS"]

SUPPORT = web.AppKey("mp1_support", AppSupport)
REPRESENTATIONS = web.AppKey("mp1_representations", Representations)
