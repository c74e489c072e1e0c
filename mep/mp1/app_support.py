"""Handlers of the MEC application support API (mep/mp1/etsi/MecAppSupportApi.yaml), under /mec_app_support/v1.

==========================================================  ======  ===========================
path                                                        method  answer
==========================================================  ======  ===========================
/applications/{appInstanceId}/traffic_rules                 GET     200 [TrafficRule]
/applications/{appInstanceId}/traffic_rules/{trafficRuleId} GET     200 TrafficRule
                                                            PUT     200 TrafficRule (If-Match)
/applications/{appInstanceId}/dns_rules                     GET     200 [DnsRule]
/applications/{appInstanceId}/dns_rules/{dnsRuleId}         GET     200 DnsRule
                                                            PUT     200 DnsRule (If-Match)
/applications/{appInstanceId}/subscriptions                 GET     200 MecAppSuptApiSubscriptionLinkList
                                                            POST    201 AppTerminationNotificationSubscription
/applications/{appInstanceId}/subscriptions/{subscriptionId} GET    200 AppTerminationNotificationSubscription
                                                            DELETE  204
/applications/{appInstanceId}/confirm_termination           POST    204
/applications/{appInstanceId}/confirm_ready                 POST    204
/timing/timing_caps                                         GET     200 TimingCaps
/timing/current_time                                        GET     200 CurrentTime
==========================================================  ======  ===========================

Each handler reads the request (path, If-Match, body as a model), calls
AppSupport, and writes the answer; nothing else.
"""
from __future__ import annotations

from aiohttp import web

from ..models import (
    AppReadyConfirmation,
    AppTerminationConfirmation,
    AppTerminationNotificationSubscription,
    DnsRule,
    TrafficRule,
)
from ..state.records import SubscriptionKind
from .http import json_body, json_response, origin, parse_if_match, parse_model
from .keys import REPRESENTATIONS, SUPPORT
from .support import APP_SUPPORT_PREFIX
from .subscriptions import subscription_link_list, subscription_request

__all__ = ["add_routes"]

_APP = APP_SUPPORT_PREFIX + "/applications/{appInstanceId}"


def add_routes(app: web.Application) -> None:
    """Register every app support route on ``app``."""
    r = app.router
    r.add_get(f"{_APP}/traffic_rules", list_traffic_rules)
    r.add_get(f"{_APP}/traffic_rules/{{trafficRuleId}}", get_traffic_rule)
    r.add_put(f"{_APP}/traffic_rules/{{trafficRuleId}}", put_traffic_rule)
    r.add_get(f"{_APP}/dns_rules", list_dns_rules)
    r.add_get(f"{_APP}/dns_rules/{{dnsRuleId}}", get_dns_rule)
    r.add_put(f"{_APP}/dns_rules/{{dnsRuleId}}", put_dns_rule)
    r.add_get(f"{_APP}/subscriptions", list_subscriptions)
    r.add_post(f"{_APP}/subscriptions", create_subscription)
    r.add_get(f"{_APP}/subscriptions/{{subscriptionId}}", get_subscription)
    r.add_delete(f"{_APP}/subscriptions/{{subscriptionId}}", delete_subscription)
    r.add_post(f"{_APP}/confirm_termination", confirm_termination)
    r.add_post(f"{_APP}/confirm_ready", confirm_ready)
    r.add_get(f"{APP_SUPPORT_PREFIX}/timing/timing_caps", timing_caps)
    r.add_get(f"{APP_SUPPORT_PREFIX}/timing/current_time", current_time)


def _app_id(request: web.Request) -> str:
    return request.match_info["appInstanceId"]


async def list_traffic_rules(request: web.Request) -> web.Response:
    """GET traffic_rules."""
    return request.app[REPRESENTATIONS].many(request.app[SUPPORT].traffic_rules(_app_id(request)))


async def get_traffic_rule(request: web.Request) -> web.Response:
    """GET traffic_rules/{trafficRuleId}."""
    stored = request.app[SUPPORT].traffic_rule(_app_id(request), request.match_info["trafficRuleId"])
    return request.app[REPRESENTATIONS].one(stored)


async def put_traffic_rule(request: web.Request) -> web.Response:
    """PUT traffic_rules/{trafficRuleId}."""
    if_match = parse_if_match(request.headers.get("If-Match"))
    rule = parse_model(TrafficRule, await json_body(request))
    stored = await request.app[SUPPORT].update_traffic_rule(
        _app_id(request), request.match_info["trafficRuleId"], rule, if_match
    )
    return request.app[REPRESENTATIONS].one(stored)


async def list_dns_rules(request: web.Request) -> web.Response:
    """GET dns_rules."""
    return request.app[REPRESENTATIONS].many(request.app[SUPPORT].dns_rules(_app_id(request)))


async def get_dns_rule(request: web.Request) -> web.Response:
    """GET dns_rules/{dnsRuleId}."""
    stored = request.app[SUPPORT].dns_rule(_app_id(request), request.match_info["dnsRuleId"])
    return request.app[REPRESENTATIONS].one(stored)


async def put_dns_rule(request: web.Request) -> web.Response:
    """PUT dns_rules/{dnsRuleId}."""
    if_match = parse_if_match(request.headers.get("If-Match"))
    rule = parse_model(DnsRule, await json_body(request))
    stored = await request.app[SUPPORT].update_dns_rule(_app_id(request), request.match_info["dnsRuleId"], rule, if_match)
    return request.app[REPRESENTATIONS].one(stored)


async def list_subscriptions(request: web.Request) -> web.Response:
    """GET subscriptions: links to the app's AppTerminationNotificationSubscriptions."""
    subs = request.app[SUPPORT].subscriptions(_app_id(request), SubscriptionKind.APP_TERMINATION)
    return json_response(subscription_link_list(request, subs))


async def create_subscription(request: web.Request) -> web.Response:
    """POST subscriptions: 201 with Location."""
    subscription = subscription_request(AppTerminationNotificationSubscription, await json_body(request))
    collection = origin(request) + request.rel_url.raw_path
    stored = await request.app[SUPPORT].subscribe(
        _app_id(request), SubscriptionKind.APP_TERMINATION, subscription, collection
    )
    location = str(stored.body["_links"]["self"]["href"])
    return request.app[REPRESENTATIONS].one(stored, status=201, headers={"Location": location})


async def get_subscription(request: web.Request) -> web.Response:
    """GET subscriptions/{subscriptionId}."""
    stored = request.app[SUPPORT].subscription(
        _app_id(request), SubscriptionKind.APP_TERMINATION, request.match_info["subscriptionId"]
    )
    return request.app[REPRESENTATIONS].one(stored)


async def delete_subscription(request: web.Request) -> web.Response:
    """DELETE subscriptions/{subscriptionId}: 204."""
    await request.app[SUPPORT].unsubscribe(
        _app_id(request), SubscriptionKind.APP_TERMINATION, request.match_info["subscriptionId"]
    )
    return web.Response(status=204)


async def confirm_ready(request: web.Request) -> web.Response:
    """POST confirm_ready (body optional: AppReadyConfirmation): 204."""
    body = await request.read()
    confirmation = parse_model(AppReadyConfirmation, await json_body(request)) if body.strip() else None
    await request.app[SUPPORT].confirm_ready(_app_id(request), confirmation)
    return web.Response(status=204)


async def confirm_termination(request: web.Request) -> web.Response:
    """POST confirm_termination (body optional: AppTerminationConfirmation): 204."""
    body = await request.read()
    confirmation = parse_model(AppTerminationConfirmation, await json_body(request)) if body.strip() else None
    request.app[SUPPORT].confirm_termination(_app_id(request), confirmation)
    return web.Response(status=204)


async def timing_caps(request: web.Request) -> web.Response:
    """GET timing/timing_caps."""
    return json_response(request.app[SUPPORT].timing_caps().to_json())


async def current_time(request: web.Request) -> web.Response:
    """GET timing/current_time."""
    return json_response(request.app[SUPPORT].current_time().to_json())
