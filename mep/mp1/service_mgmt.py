"""Handlers of the MEC service management API (mep/mp1/etsi/MecServiceMgmtApi.yaml), under /mec_service_mgmt/v1.

============================================================  ======  ===========================
path                                                          method  answer
============================================================  ======  ===========================
/applications/{appInstanceId}/subscriptions                   GET     200 MecServiceMgmtApiSubscriptionLinkList
                                                              POST    201 SerAvailabilityNotificationSubscription
/applications/{appInstanceId}/subscriptions/{subscriptionId}  GET     200 SerAvailabilityNotificationSubscription
                                                              DELETE  204
/applications/{appInstanceId}/services                        GET     200 [ServiceInfo] (query filters)
                                                              POST    201 ServiceInfo
/applications/{appInstanceId}/services/{serviceId}            GET     200 ServiceInfo
                                                              PUT     200 ServiceInfo (If-Match)
                                                              DELETE  204
/services                                                     GET     200 [ServiceInfo] (query filters)
/services/{serviceId}                                         GET     200 ServiceInfo
/transports                                                   GET     200 [TransportInfo]
============================================================  ======  ===========================

Query filters of the two service lists (MEC 011 7.2.6.3.1): ``ser_instance_id``
and ``ser_name`` (repeatable), ``ser_category_id`` (at most one of these three
kinds), ``consumed_local_only``, ``is_local`` (``true``/``false``) and
``scope_of_locality`` (a LocalityType). Anything else in the query is ignored.
"""
from __future__ import annotations

from aiohttp import web
from multidict import MultiMapping

from ..errors import InvalidInput
from ..models import LocalityType, SerAvailabilityNotificationSubscription, ServiceInfo
from ..models.base import MAX_LIST
from ..state.records import SubscriptionKind
from .http import json_body, json_response, origin, parse_if_match, parse_model
from .keys import REPRESENTATIONS, SUPPORT
from .subscriptions import subscription_link_list, subscription_request
from .support import SERVICE_MGMT_PREFIX, ServiceFilter

__all__ = ["add_routes", "service_filter"]

_APP = SERVICE_MGMT_PREFIX + "/applications/{appInstanceId}"
_ALTERNATIVES = ("ser_instance_id", "ser_name", "ser_category_id")


def add_routes(app: web.Application) -> None:
    """Register every service management route on ``app``."""
    r = app.router
    r.add_get(f"{_APP}/subscriptions", list_subscriptions)
    r.add_post(f"{_APP}/subscriptions", create_subscription)
    r.add_get(f"{_APP}/subscriptions/{{subscriptionId}}", get_subscription)
    r.add_delete(f"{_APP}/subscriptions/{{subscriptionId}}", delete_subscription)
    r.add_get(f"{_APP}/services", list_app_services)
    r.add_post(f"{_APP}/services", register_service)
    r.add_get(f"{_APP}/services/{{serviceId}}", get_app_service)
    r.add_put(f"{_APP}/services/{{serviceId}}", put_app_service)
    r.add_delete(f"{_APP}/services/{{serviceId}}", delete_app_service)
    r.add_get(f"{SERVICE_MGMT_PREFIX}/services", list_services)
    r.add_get(f"{SERVICE_MGMT_PREFIX}/services/{{serviceId}}", get_service)
    r.add_get(f"{SERVICE_MGMT_PREFIX}/transports", list_transports)


def _flag(query: MultiMapping[str], name: str) -> bool | None:
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1 or values[0] not in ("true", "false"):
        raise InvalidInput(f"{name} is one of true or false", field=name)
    return values[0] == "true"


def service_filter(query: MultiMapping[str]) -> ServiceFilter:
    """The ServiceFilter of a service list's query; InvalidInput naming the parameter at fault."""
    lists = {name: query.getall(name, []) for name in _ALTERNATIVES}
    given = [name for name in _ALTERNATIVES if lists[name]]
    if len(given) > 1:
        raise InvalidInput(f"give at most one of {', '.join(_ALTERNATIVES)}; got {' and '.join(given)}", field=given[1])
    for name, values in lists.items():
        if len(values) > MAX_LIST:
            raise InvalidInput(f"{name} is given {len(values)} times; at most {MAX_LIST}", field=name)
    if len(lists["ser_category_id"]) > 1:
        raise InvalidInput("ser_category_id takes one category", field="ser_category_id")
    scope = query.getall("scope_of_locality", [])
    if len(scope) > 1 or (scope and scope[0] not in LocalityType.__members__):
        raise InvalidInput(f"scope_of_locality is one of {', '.join(LocalityType.__members__)}", field="scope_of_locality")
    return ServiceFilter(
        ser_instance_ids=frozenset(lists["ser_instance_id"]) or None,
        ser_names=frozenset(lists["ser_name"]) or None,
        category_ids=frozenset(lists["ser_category_id"]) or None,
        is_local=_flag(query, "is_local"),
        consumed_local_only=_flag(query, "consumed_local_only"),
        scope_of_locality=LocalityType(scope[0]) if scope else None,
    )


def _app_id(request: web.Request) -> str:
    return request.match_info["appInstanceId"]


async def list_subscriptions(request: web.Request) -> web.Response:
    """GET subscriptions: links to the app's SerAvailabilityNotificationSubscriptions."""
    subs = request.app[SUPPORT].subscriptions(_app_id(request), SubscriptionKind.SER_AVAILABILITY)
    return json_response(subscription_link_list(request, subs))


async def create_subscription(request: web.Request) -> web.Response:
    """POST subscriptions: 201 with Location."""
    subscription = subscription_request(SerAvailabilityNotificationSubscription, await json_body(request))
    collection = origin(request) + request.rel_url.raw_path
    stored = await request.app[SUPPORT].subscribe(
        _app_id(request), SubscriptionKind.SER_AVAILABILITY, subscription, collection
    )
    location = str(stored.body["_links"]["self"]["href"])
    return request.app[REPRESENTATIONS].one(stored, status=201, headers={"Location": location})


async def get_subscription(request: web.Request) -> web.Response:
    """GET subscriptions/{subscriptionId}."""
    stored = request.app[SUPPORT].subscription(
        _app_id(request), SubscriptionKind.SER_AVAILABILITY, request.match_info["subscriptionId"]
    )
    return request.app[REPRESENTATIONS].one(stored)


async def delete_subscription(request: web.Request) -> web.Response:
    """DELETE subscriptions/{subscriptionId}: 204."""
    await request.app[SUPPORT].unsubscribe(
        _app_id(request), SubscriptionKind.SER_AVAILABILITY, request.match_info["subscriptionId"]
    )
    return web.Response(status=204)


async def list_app_services(request: web.Request) -> web.Response:
    """GET applications/{appInstanceId}/services: the services the app produces."""
    selected = service_filter(request.query)
    return request.app[REPRESENTATIONS].many(request.app[SUPPORT].services(selected, _app_id(request)))


async def register_service(request: web.Request) -> web.Response:
    """POST applications/{appInstanceId}/services: 201 with Location."""
    service = parse_model(ServiceInfo, await json_body(request))
    stored = await request.app[SUPPORT].register_service(_app_id(request), service)
    location = f"{origin(request)}{request.rel_url.raw_path}/{stored.service.serInstanceId}"
    return request.app[REPRESENTATIONS].one(stored, status=201, headers={"Location": location})


async def get_app_service(request: web.Request) -> web.Response:
    """GET applications/{appInstanceId}/services/{serviceId}."""
    stored = request.app[SUPPORT].app_service(_app_id(request), request.match_info["serviceId"])
    return request.app[REPRESENTATIONS].one(stored)


async def put_app_service(request: web.Request) -> web.Response:
    """PUT applications/{appInstanceId}/services/{serviceId}."""
    if_match = parse_if_match(request.headers.get("If-Match"))
    service = parse_model(ServiceInfo, await json_body(request))
    stored = await request.app[SUPPORT].update_service(_app_id(request), request.match_info["serviceId"], service, if_match)
    return request.app[REPRESENTATIONS].one(stored)


async def delete_app_service(request: web.Request) -> web.Response:
    """DELETE applications/{appInstanceId}/services/{serviceId}: 204."""
    await request.app[SUPPORT].deregister_service(_app_id(request), request.match_info["serviceId"])
    return web.Response(status=204)


async def list_services(request: web.Request) -> web.Response:
    """GET services: every service on the platform the query selects."""
    selected = service_filter(request.query)
    return request.app[REPRESENTATIONS].many(request.app[SUPPORT].services(selected))


async def get_service(request: web.Request) -> web.Response:
    """GET services/{serviceId}."""
    stored = request.app[SUPPORT].service(request.match_info["serviceId"])
    return request.app[REPRESENTATIONS].one(stored)


async def list_transports(request: web.Request) -> web.Response:
    """GET transports."""
    return json_response([t.to_json() for t in request.app[SUPPORT].transports(origin(request))])
