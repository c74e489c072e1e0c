"""The MEC service management API, operation by operation, error paths included."""
from __future__ import annotations

from typing import Any

import pytest

from mep.mp1.auth import TOKEN_PATH
from tests.mp1.conftest import APP, OTHER, SM, Platform, service_info
from tests.mp1.test_mp1_app_support import problem

pytestmark = pytest.mark.asyncio

SERVICES = f"{SM}/applications/{APP}/services"
SUBS = f"{SM}/applications/{APP}/subscriptions"


async def register(p: Platform, body: dict[str, Any], app: str = APP) -> dict[str, Any]:
    resp = await p.client.post(f"{SM}/applications/{app}/services", json=body, headers=p.auth(app))
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    assert resp.headers["Location"].endswith(f"{SM}/applications/{app}/services/{created['serInstanceId']}")
    return created


async def names(p: Platform, path: str, app: str = APP) -> list[str]:
    resp = await p.client.get(path, headers=p.auth(app))
    assert resp.status == 200, await resp.text()
    return sorted(s["serName"] for s in await resp.json())


async def test_register_get_update_delete_a_service(platform: Platform) -> None:
    await platform.add_app()
    created = await register(platform, service_info("video", category="cdn"))
    ser_id = created["serInstanceId"]
    # Defaults are written out, and isLocal is the platform's to say.
    assert created == {**service_info("video", category="cdn"), "serInstanceId": ser_id,
                       "scopeOfLocality": "MEC_HOST", "consumedLocalOnly": False, "isLocal": True}

    resp = await platform.client.get(f"{SERVICES}/{ser_id}", headers=platform.auth())
    assert resp.status == 200 and await resp.json() == created
    etag = resp.headers["ETag"]
    assert etag == f'"{platform.daemon.store.get_service(ser_id).revision}"'

    updated = {**service_info("video", state="INACTIVE"), "serInstanceId": ser_id, "consumedLocalOnly": True}
    body = await problem(await platform.client.put(f"{SERVICES}/{ser_id}", json=updated,
                                                   headers={**platform.auth(), "If-Match": '"1"'}), 412)
    assert body["field"] == "If-Match"
    resp = await platform.client.put(f"{SERVICES}/{ser_id}", json=updated, headers={**platform.auth(), "If-Match": etag})
    assert resp.status == 200
    got = await resp.json()
    assert (got["state"], got["consumedLocalOnly"], got["scopeOfLocality"]) == ("INACTIVE", True, "MEC_HOST")
    # The body may leave the id out; a different one is refused.
    assert (await platform.client.put(f"{SERVICES}/{ser_id}", json=service_info("video"), headers=platform.auth())).status == 200
    body = await problem(await platform.client.put(f"{SERVICES}/{ser_id}", json={**service_info("video"), "serInstanceId": "x"},
                                                   headers=platform.auth()), 400)
    assert body["field"] == "serInstanceId"

    assert (await platform.client.delete(f"{SERVICES}/{ser_id}", headers=platform.auth())).status == 204
    await problem(await platform.client.get(f"{SERVICES}/{ser_id}", headers=platform.auth()), 404)
    await problem(await platform.client.get(f"{SM}/services/{ser_id}", headers=platform.auth()), 404)
    await problem(await platform.client.delete(f"{SERVICES}/{ser_id}", headers=platform.auth()), 404)


async def test_registration_refusals(platform: Platform) -> None:
    await platform.add_app()
    post = platform.client.post
    assigned = await register(platform, {**service_info("own-id"), "serInstanceId": "mine"})
    assert assigned["serInstanceId"] != "mine"  # the platform assigns it
    for field, value in (("state", "UP"), ("serializer", "YAML"), ("scopeOfLocality", "PLANET"), ("isLocal", "yes")):
        body = await problem(await post(SERVICES, json={**service_info(), field: value}, headers=platform.auth()), 400)
        assert body["field"] == field
    missing = service_info()
    del missing["transportInfo"]["security"]
    body = await problem(await post(SERVICES, json=missing, headers=platform.auth()), 400)
    assert body["field"] == "transportInfo.security"
    both = service_info()
    both["transportInfo"]["endpoint"]["alternative"] = {}  # EndPointInfo is a oneOf: two forms match two
    body = await problem(await post(SERVICES, json=both, headers=platform.auth()), 400)
    assert body["field"] == "transportInfo.endpoint" and "uris and alternative" in body["detail"]
    await register(platform, service_info("video"))
    body = await problem(await post(SERVICES, json=service_info("video"), headers=platform.auth()), 400)
    assert body["field"] == "serName" and "update that one" in body["detail"]


@pytest.mark.mp1_config(scope_of_locality="ZONE")
async def test_scope_of_locality_default_comes_from_the_configuration(platform: Platform) -> None:
    await platform.add_app()
    assert (await register(platform, service_info("a")))["scopeOfLocality"] == "ZONE"
    assert (await register(platform, service_info("b", scopeOfLocality="MEC_SYSTEM")))["scopeOfLocality"] == "MEC_SYSTEM"


async def test_services_of_another_app(platform: Platform) -> None:
    await platform.add_app()
    await platform.add_app(OTHER)
    theirs = await register(platform, service_info("theirs"), OTHER)
    ser_id = theirs["serInstanceId"]
    # Anyone reads it through /services; only its producer manages it.
    resp = await platform.client.get(f"{SM}/services/{ser_id}", headers=platform.auth())
    assert resp.status == 200 and await resp.json() == theirs
    await problem(await platform.client.get(f"{SERVICES}/{ser_id}", headers=platform.auth()), 404)
    await problem(await platform.client.put(f"{SERVICES}/{ser_id}", json=service_info("theirs"), headers=platform.auth()), 404)
    await problem(await platform.client.delete(f"{SERVICES}/{ser_id}", headers=platform.auth()), 404)
    body = await problem(await platform.client.delete(f"{SM}/applications/{OTHER}/services/{ser_id}",
                                                      headers=platform.auth()), 403)
    assert body["field"] == "appInstanceId"
    assert platform.daemon.store.get_service(ser_id).app_instance_id == OTHER


async def test_service_query_filters(platform: Platform) -> None:
    await platform.add_app()
    await platform.add_app(OTHER)
    a = await register(platform, service_info("a", category="rni"))
    await register(platform, service_info("b", category="loc", state="INACTIVE", consumedLocalOnly=True))
    await register(platform, service_info("c", scopeOfLocality="ZONE"), OTHER)
    every = f"{SM}/services"
    assert await names(platform, every) == ["a", "b", "c"]
    assert await names(platform, SERVICES) == ["a", "b"]
    assert await names(platform, f"{SM}/applications/{OTHER}/services", OTHER) == ["c"]
    cases = {
        f"ser_instance_id={a['serInstanceId']}": ["a"],
        f"ser_instance_id={a['serInstanceId']}&ser_instance_id=nope": ["a"],
        "ser_name=b&ser_name=c": ["b", "c"],
        "ser_name=zzz": [],
        "ser_category_id=loc": ["b"],
        "consumed_local_only=true": ["b"],
        "consumed_local_only=false": ["a", "c"],
        "is_local=true": ["a", "b", "c"],
        "is_local=false": [],
        "scope_of_locality=ZONE": ["c"],
        "scope_of_locality=MEC_HOST&consumed_local_only=false": ["a"],
        "ser_name=a&is_local=true": ["a"],
        "unrelated=1": ["a", "b", "c"],
    }
    for query, expected in cases.items():
        assert await names(platform, f"{every}?{query}") == expected, query
    assert await names(platform, f"{SERVICES}?ser_name=b&ser_name=c") == ["b"]

    refusals = {
        "ser_name=a&ser_instance_id=x": "ser_name",  # the second of the alternatives given
        "ser_category_id=a&ser_name=b": "ser_category_id",
        "ser_category_id=a&ser_category_id=b": "ser_category_id",
        "is_local=yes": "is_local",
        "consumed_local_only=1": "consumed_local_only",
        "scope_of_locality=PLANET": "scope_of_locality",
        "&".join(["ser_name=x"] * 257): "ser_name",
    }
    for query, field in refusals.items():
        body = await problem(await platform.client.get(f"{every}?{query}", headers=platform.auth()), 400)
        assert body["field"] == field, query
    body = await problem(await platform.client.get(f"{every}?ser_name={'x' * 9000}", headers=platform.auth()), 414)


async def test_transports_advertise_the_token_endpoint(platform: Platform) -> None:
    await platform.add_app()
    resp = await platform.client.get(f"{SM}/transports", headers=platform.auth())
    assert resp.status == 200
    (transport,) = await resp.json()
    origin = str(platform.client.make_url("")).rstrip("/")
    assert transport["type"] == "REST_HTTP" and transport["protocol"] == "HTTP"
    assert transport["security"]["oAuth2Info"] == {"grantTypes": ["OAUTH2_CLIENT_CREDENTIALS"],
                                                    "tokenEndpoint": origin + TOKEN_PATH}
    assert transport["endpoint"]["uris"] == [origin + "/mec_app_support/v1", origin + SM]
    # The advertised endpoint is the one that works.
    client_id, secret = platform.secrets[APP]
    assert await platform.token(client_id, secret)


async def test_ser_availability_subscription_create_list_get_delete(platform: Platform) -> None:
    await platform.add_app()
    sub = {"subscriptionType": "SerAvailabilityNotificationSubscription", "callbackReference": "http://198.18.9.9/cb",
           "filteringCriteria": {"serNames": ["video"], "states": ["ACTIVE"], "isLocal": True}}
    resp = await platform.client.post(SUBS, json=sub, headers=platform.auth())
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    location = resp.headers["Location"]
    assert created == {**sub, "_links": {"self": {"href": location}}}
    resp = await platform.client.get(SUBS, headers=platform.auth())
    assert (await resp.json())["_links"]["subscriptions"] == [
        {"href": location, "rel": "SerAvailabilityNotificationSubscription"}]
    sub_id = location.rsplit("/", 1)[1]
    assert await (await platform.client.get(f"{SUBS}/{sub_id}", headers=platform.auth())).json() == created
    await problem(await platform.client.get(f"/mec_app_support/v1/applications/{APP}/subscriptions/{sub_id}",
                                            headers=platform.auth()), 404)
    assert (await platform.client.delete(f"{SUBS}/{sub_id}", headers=platform.auth())).status == 204
    await problem(await platform.client.get(f"{SUBS}/{sub_id}", headers=platform.auth()), 404)

    both = {**sub, "filteringCriteria": {"serNames": ["a"], "serInstanceIds": ["b"]}}
    body = await problem(await platform.client.post(SUBS, json=both, headers=platform.auth()), 400)
    assert body["field"] == "filteringCriteria.serNames"
    body = await problem(await platform.client.post(SUBS, json={**sub, "filteringCriteria": {"states": ["UP"]}},
                                                    headers=platform.auth()), 400)
    assert body["field"] == "filteringCriteria.states.0"
