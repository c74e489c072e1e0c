"""Subscription representations both APIs share: the request body and the link list.

MEC 011 makes ``_links`` a required member of a subscription, but only the
platform can know the link of a subscription it has not created yet, so a
POST may leave it out; whatever it says is replaced by the real link.
"""
from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from ..state.records import StoredSubscription
from .http import origin, parse_model
from .support import AnySubscription

__all__ = ["subscription_request", "subscription_link_list"]

S = TypeVar("S", bound=AnySubscription)


def subscription_request(model: type[S], data: Any) -> S:
    """The POSTed subscription as ``model``, its ``_links`` set aside (InvalidInput names a bad field)."""
    if isinstance(data, dict):
        data = {**data, "_links": {"self": {}}}
    return parse_model(model, data)


def subscription_link_list(request: web.Request, subscriptions: list[StoredSubscription]) -> dict[str, Any]:
    """MecAppSuptApiSubscriptionLinkList / MecServiceMgmtApiSubscriptionLinkList: self, then one link per subscription."""
    return {
        "_links": {
            "self": {"href": origin(request) + request.rel_url.raw_path},
            "subscriptions": [{"href": s.body["_links"]["self"]["href"], "rel": s.kind.value} for s in subscriptions],
        }
    }
