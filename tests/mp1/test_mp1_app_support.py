"""The MEC application support API, operation by operation, error paths included.

Runs against the real daemon (SQLite store, compiler, ReferenceEngine); where
the data plane matters the frame goes through the engine the daemon applied.
"""
from __future__ import annotations

from typing import Any

import pytest

from mep.models import TrafficRule
from mep.mp1.support import MAX_SUBSCRIPTIONS_PER_APP
from mep.state import AppState, EventKind, EventOp, LifecycleEvent
from tests.mp1.conftest import APP, AS, OTHER, Platform, dns_rule, traffic_rule
from tests.packets import APP1, N6, tcp

pytestmark = pytest.mark.asyncio

RULES = f"{AS}/applications/{APP}/traffic_rules"
DNS = f"{AS}/applications/{APP}/dns_rules"
SUBS = f"{AS}/applications/{APP}/subscriptions"


def verdict(p: Platform, dport: int = 80) -> tuple[str, str, str | None]:
    """What the daemon's engine does with a TCP SYN to SERVER:dport from the UE: verdict, reason, rule."""
    engine = p.daemon.engine
    result = engine.process(bytes(tcp(dport=dport)), N6)
    rule = engine.ruleset.rule(result.rule_id) if engine.ruleset and result.rule_id else None
    return result.verdict.name, result.reason.name, rule.traffic_rule_id if rule else None


async def problem(resp: Any, status: int) -> dict[str, Any]:
    """Assert an RFC 7807 answer with ``status``; its body."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- traffic rules -----------------------------------------------------------------------


async def test_traffic_rules_list_and_get_with_etags(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1"), traffic_rule("r2", dport="443")])
    resp = await platform.client.get(RULES, headers=platform.auth())
    assert resp.status == 200 and resp.headers["ETag"].startswith('"')
    assert [r["trafficRuleId"] for r in await resp.json()] == ["r1", "r2"]

    resp = await platform.client.get(f"{RULES}/r2", headers=platform.auth())
    assert resp.status == 200
    assert await resp.json() == traffic_rule("r2", dport="443")
    stored = platform.daemon.store.get_traffic_rule(APP, "r2")
    assert resp.headers["ETag"] == f'"{stored.revision}"'

    body = await problem(await platform.client.get(f"{RULES}/nope", headers=platform.auth()), 404)
    assert body["field"] == "trafficRuleId" and "nope" in body["detail"]


async def test_put_active_enforces_and_put_inactive_removes_at_once(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, traffic_rules=[traffic_rule("r1", state="INACTIVE")])
    await platform.settled()
    assert verdict(platform)[:2] == ("PASS", "PASS_NO_MATCH")

    resp = await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=platform.auth())
    assert resp.status == 200 and (await resp.json())["state"] == "ACTIVE"
    assert resp.headers["ETag"] == f'"{platform.daemon.store.revision}"'
    await platform.settled()
    assert verdict(platform) == ("REDIRECT", "REDIRECT_RULE", "r1")
    assert platform.daemon.engine.process(bytes(tcp(dport=80)), N6).outputs[0].port == APP1

    resp = await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1", state="INACTIVE"), headers=platform.auth())
    assert resp.status == 200
    await platform.settled()
    assert verdict(platform)[:2] == ("PASS", "PASS_NO_MATCH")


async def test_put_with_if_match(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    etag = (await platform.client.get(f"{RULES}/r1", headers=platform.auth())).headers["ETag"]

    stale = {**platform.auth(), "If-Match": '"1"'}
    body = await problem(await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1", priority=9), headers=stale), 412)
    assert body["field"] == "If-Match"
    assert platform.daemon.store.get_traffic_rule(APP, "r1").rule.priority == 5

    for form in ("{}", 'W/"0", "abc", {}', "*"):
        header = form.format(etag)
        resp = await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1", priority=7),
                                         headers={**platform.auth(), "If-Match": header})
        assert resp.status == 200, header
        etag = resp.headers["ETag"]
    weak = {**platform.auth(), "If-Match": f"W/{etag}"}  # If-Match compares strongly: a weak tag never matches
    await problem(await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=weak), 412)
    garbage = {**platform.auth(), "If-Match": "not-a-tag"}
    body = await problem(await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=garbage), 400)
    assert body["field"] == "If-Match"


async def test_put_refusals_name_the_field(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    put = platform.client.put
    body = await problem(await put(f"{RULES}/r1", json=traffic_rule("r2"), headers=platform.auth()), 400)
    assert body["field"] == "trafficRuleId" and "differs" in body["detail"]
    body = await problem(await put(f"{RULES}/r1", json=traffic_rule("r1", priority=256), headers=platform.auth()), 400)
    assert body["field"] == "priority"
    bad_port = traffic_rule("r1")
    bad_port["trafficFilter"][0]["dstPort"] = ["80", "70000"]
    body = await problem(await put(f"{RULES}/r1", json=bad_port, headers=platform.auth()), 400)
    assert body["field"] == "trafficFilter.0.dstPort.1"
    as_json = {**platform.auth(), "Content-Type": "application/json"}
    body = await problem(await put(f"{RULES}/r1", data=b"{not json", headers=as_json), 400)
    assert body["field"] == "body"
    body = await problem(await put(f"{RULES}/r1", json=[1, 2], headers=platform.auth()), 400)
    assert body["field"] == "body"
    body = await problem(await put(f"{RULES}/r1", data=b"[" * 100_000, headers=as_json), 400)
    assert body["field"] == "body" and "deeply" in body["detail"]
    body = await problem(await put(f"{RULES}/r1", data=b"", headers=as_json), 400)
    assert body["field"] == "body"
    body = await problem(await put(f"{RULES}/r1", data=b"<xml/>", headers={**platform.auth(), "Content-Type": "text/xml"}), 400)
    assert body["field"] == "Content-Type"
    body = await problem(await put(f"{RULES}/unknown", json=traffic_rule("unknown"), headers=platform.auth()), 404)
    assert body["field"] == "trafficRuleId"  # PUT updates; it never creates
    assert [r.rule.trafficRuleId for r in platform.daemon.store.list_traffic_rules(APP)] == ["r1"]


async def test_a_rule_the_compiler_would_refuse_never_reaches_the_store(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, traffic_rules=[traffic_rule("r1")])
    await platform.settled()
    store, daemon = platform.daemon.store, platform.daemon
    revision, generation, ruleset = store.revision, daemon.generation, daemon.engine.ruleset
    queue = store.subscribe()

    no_tunnel = traffic_rule("r1", action="FORWARD_ENCAPSULATED")
    body = await problem(await platform.client.put(f"{RULES}/r1", json=no_tunnel, headers=platform.auth()), 400)
    assert body["field"] == "dstInterface.tunnelInfo" and "FORWARD_ENCAPSULATED" in body["detail"]
    unreachable = traffic_rule("r1", dstInterface={"interfaceType": "IP", "dstIpAddress": "198.19.99.99"})
    body = await problem(await platform.client.put(f"{RULES}/r1", json=unreachable, headers=platform.auth()), 400)
    assert body["field"] == "dstInterface.dstIpAddress"

    assert store.revision == revision and queue.empty()  # nothing committed, nothing announced
    assert store.get_traffic_rule(APP, "r1").rule.action.value == "FORWARD_DECAPSULATED"
    assert (daemon.generation, daemon.engine.ruleset, daemon.last_refusal) == (generation, ruleset, None)
    assert verdict(platform) == ("REDIRECT", "REDIRECT_RULE", "r1")


async def test_a_checked_write_is_compiled_once(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, traffic_rules=[traffic_rule("r1", state="INACTIVE")])
    await platform.settled()
    compiled: list[int] = []
    compile_, compile_few = platform.daemon._compile, platform.daemon._compile_few

    def counting(snapshot: Any, generation: int) -> Any:
        compiled.append(snapshot.revision)
        return compile_(snapshot, generation)

    def counting_few(snapshot: Any, generation: int) -> Any:
        ruleset = compile_few(snapshot, generation)
        if ruleset is not None:
            compiled.append(snapshot.revision)
        return ruleset

    platform.daemon._compile, platform.daemon._compile_few = counting, counting_few
    resp = await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=platform.auth())
    assert resp.status == 200
    await platform.settled()
    revision = platform.daemon.store.revision
    assert compiled == [revision]  # by the check; the compile loop applied that result
    assert platform.daemon.applied_revision == revision and verdict(platform)[2] == "r1"


async def test_an_app_not_ready_may_store_rules_the_data_plane_would_refuse_only_once_enforced(platform: Platform) -> None:
    # Not READY: nothing of the app is compiled, so the rule is stored; confirm_ready then refuses (409).
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    bad = traffic_rule("r1", action="FORWARD_ENCAPSULATED")
    assert (await platform.client.put(f"{RULES}/r1", json=bad, headers=platform.auth())).status == 200
    body = await problem(await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", headers=platform.auth()), 409)
    assert body["field"] == "dstInterface.tunnelInfo" and "r1" in body["detail"]
    assert platform.daemon.store.get_app(APP).state is AppState.INSTANTIATED
    assert (await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=platform.auth())).status == 200
    assert (await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", headers=platform.auth())).status == 204


async def test_another_apps_broken_rule_does_not_block_this_app(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, traffic_rules=[traffic_rule("r1", state="INACTIVE")])
    await platform.add_app(OTHER, confirm_ready_required=False)
    # A broken rule reaches the store without a check (as an old configuration could).
    broken = TrafficRule.model_validate(traffic_rule("bad", action="FORWARD_ENCAPSULATED", dport="81"))
    await platform.daemon.store.put_traffic_rule(OTHER, broken)
    await platform.settled()
    assert platform.daemon.last_refusal is not None
    resp = await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=platform.auth())
    assert resp.status == 200, await resp.text()


# -- DNS rules ---------------------------------------------------------------------------


async def test_dns_rules_list_get_put(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, dns_rules=[dns_rule("d1"), dns_rule("d2", "other.example")])
    await platform.settled()
    resp = await platform.client.get(DNS, headers=platform.auth())
    assert resp.status == 200 and [r["dnsRuleId"] for r in await resp.json()] == ["d1", "d2"]
    resp = await platform.client.get(f"{DNS}/d1", headers=platform.auth())
    assert await resp.json() == dns_rule("d1") and resp.headers["ETag"].strip('"').isdigit()
    ruleset = platform.daemon.engine.ruleset
    assert ruleset is not None and [d.dns_rule_id for d in ruleset.dns_rules] == ["d1", "d2"]

    resp = await platform.client.put(f"{DNS}/d1", json=dns_rule("d1", state="INACTIVE"),
                                     headers={**platform.auth(), "If-Match": resp.headers["ETag"]})
    assert resp.status == 200 and (await resp.json())["state"] == "INACTIVE"
    await platform.settled()
    ruleset = platform.daemon.engine.ruleset
    assert ruleset is not None and [d.dns_rule_id for d in ruleset.dns_rules] == ["d2"]  # out of DNS at once

    body = await problem(await platform.client.put(f"{DNS}/d1", json=dns_rule("d9"), headers=platform.auth()), 400)
    assert body["field"] == "dnsRuleId"
    wrong_family = dns_rule("d1")
    wrong_family["ipAddressType"] = "IP_V6"
    await problem(await platform.client.put(f"{DNS}/d1", json=wrong_family, headers=platform.auth()), 400)
    body = await problem(await platform.client.put(f"{DNS}/d1", json={**dns_rule("d1"), "domainName": "bad name!"},
                                                   headers=platform.auth()), 400)
    assert body["field"] == "domainName"
    await problem(await platform.client.put(f"{DNS}/zz", json=dns_rule("zz"), headers=platform.auth()), 404)
    await problem(await platform.client.put(f"{DNS}/d1", json=dns_rule("d1"), headers={**platform.auth(), "If-Match": '"1"'}), 412)


async def test_dns_name_claimed_by_another_app_is_a_conflict(platform: Platform) -> None:
    await platform.add_app(dns_rules=[dns_rule("d1", "shared.example", state="INACTIVE")])
    await platform.add_app(OTHER, dns_rules=[dns_rule("o1", "shared.example")])
    body = await problem(await platform.client.put(f"{DNS}/d1", json=dns_rule("d1", "SHARED.example."),
                                                   headers=platform.auth()), 409)
    assert body["field"] == "domainName" and OTHER in body["detail"]


# -- scope and unknown apps ----------------------------------------------------------------


async def test_unknown_app_is_404_and_another_apps_resources_403(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    await platform.add_app(OTHER, traffic_rules=[traffic_rule("o1")])
    for path in ("traffic_rules", "traffic_rules/o1", "dns_rules", "subscriptions"):
        body = await problem(await platform.client.get(f"{AS}/applications/{OTHER}/{path}", headers=platform.auth()), 403)
        assert body["field"] == "appInstanceId"
        body = await problem(await platform.client.get(f"{AS}/applications/ghost/{path}", headers=platform.auth()), 404)
        assert body["field"] == "appInstanceId"
    await problem(await platform.client.put(f"{AS}/applications/{OTHER}/traffic_rules/o1", json=traffic_rule("o1"),
                                            headers=platform.auth()), 403)
    await problem(await platform.client.post(f"{AS}/applications/{OTHER}/confirm_ready", headers=platform.auth()), 403)
    assert platform.daemon.store.get_app(OTHER).state is AppState.INSTANTIATED


# -- confirm_ready, confirm_termination ---------------------------------------------------------


async def test_confirm_ready_makes_the_rules_enforced(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    await platform.settled()
    assert verdict(platform)[0] == "PASS"  # INSTANTIATED: stored, not enforced
    body = await problem(await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", json={"indication": "GO"},
                                                    headers=platform.auth()), 400)
    assert body["field"] == "indication"
    resp = await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", json={"indication": "READY"},
                                      headers=platform.auth())
    assert resp.status == 204
    assert platform.daemon.store.get_app(APP).state is AppState.READY
    await platform.settled()
    assert verdict(platform) == ("REDIRECT", "REDIRECT_RULE", "r1")
    # Again: harmless; without a body: fine too (the body is optional).
    assert (await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", headers=platform.auth())).status == 204


async def test_confirm_ready_of_a_terminating_app_is_409_and_its_writes_403(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, traffic_rules=[traffic_rule("r1")])
    resp = await platform.client.post(SUBS, json=termination_subscription(), headers=platform.auth())
    assert resp.status == 201  # a subscriber: the termination waits for it
    await platform.daemon.store.transition_app(APP, LifecycleEvent.TERMINATE)
    body = await problem(await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", headers=platform.auth()), 409)
    assert "confirm_ready is not allowed in state TERMINATING" in body["detail"]
    body = await problem(await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1"), headers=platform.auth()), 403)
    assert "TERMINATING" in body["detail"]
    body = await problem(await platform.client.post(SUBS, json=termination_subscription(), headers=platform.auth()), 403)


async def test_confirm_termination_without_a_termination_is_409(platform: Platform) -> None:
    await platform.add_app()
    body = await problem(await platform.client.post(f"{AS}/applications/{APP}/confirm_termination",
                                                    json={"operationAction": "TERMINATING"}, headers=platform.auth()), 409)
    assert body["field"] == "operationAction"
    body = await problem(await platform.client.post(f"{AS}/applications/{APP}/confirm_termination",
                                                    json={"operationAction": "RUNNING"}, headers=platform.auth()), 400)
    assert body["field"] == "operationAction"


# -- subscriptions -------------------------------------------------------------------------------


def termination_subscription(callback: str = "http://198.18.9.9/cb", app: str = APP) -> dict[str, Any]:
    return {"subscriptionType": "AppTerminationNotificationSubscription", "callbackReference": callback,
            "appInstanceId": app}


async def test_subscription_create_list_get_delete(platform: Platform) -> None:
    await platform.add_app()
    resp = await platform.client.post(SUBS, json=termination_subscription(), headers=platform.auth())
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    location = resp.headers["Location"]
    sub_id = location.rsplit("/", 1)[1]
    assert location.endswith(f"{SUBS}/{sub_id}") and location.startswith("http://")
    assert created == {**termination_subscription(), "_links": {"self": {"href": location}}}
    assert resp.headers["ETag"] == f'"{platform.daemon.store.revision}"'

    resp = await platform.client.get(SUBS, headers=platform.auth())
    links = (await resp.json())["_links"]
    assert links["self"]["href"].endswith(SUBS)
    assert links["subscriptions"] == [{"href": location, "rel": "AppTerminationNotificationSubscription"}]

    resp = await platform.client.get(f"{SUBS}/{sub_id}", headers=platform.auth())
    assert resp.status == 200 and await resp.json() == created

    # The same id under the service management API is another resource.
    await problem(await platform.client.get(f"/mec_service_mgmt/v1/applications/{APP}/subscriptions/{sub_id}",
                                            headers=platform.auth()), 404)
    assert (await platform.client.delete(f"{SUBS}/{sub_id}", headers=platform.auth())).status == 204
    await problem(await platform.client.get(f"{SUBS}/{sub_id}", headers=platform.auth()), 404)
    await problem(await platform.client.delete(f"{SUBS}/{sub_id}", headers=platform.auth()), 404)


async def test_subscription_refusals(platform: Platform) -> None:
    await platform.add_app()
    await platform.add_app(OTHER)
    post = platform.client.post
    body = await problem(await post(SUBS, json=termination_subscription(app=OTHER), headers=platform.auth()), 403)
    assert body["field"] == "appInstanceId"
    for callback in ("not a uri", "ftp://198.18.9.9/cb", "/relative", "http://user:pw@198.18.9.9/cb", "http://[::1/cb"):
        body = await problem(await post(SUBS, json=termination_subscription(callback), headers=platform.auth()), 400)
        assert body["field"] == "callbackReference", callback
    wrong_type = {**termination_subscription(), "subscriptionType": "SerAvailabilityNotificationSubscription"}
    body = await problem(await post(SUBS, json=wrong_type, headers=platform.auth()), 400)
    assert body["field"] == "subscriptionType"
    missing = termination_subscription()
    del missing["callbackReference"]
    body = await problem(await post(SUBS, json=missing, headers=platform.auth()), 400)
    assert body["field"] == "callbackReference"
    assert platform.daemon.store.list_subscriptions(APP) == []


async def test_subscriptions_per_app_are_bounded(platform: Platform) -> None:
    await platform.add_app()
    for _ in range(MAX_SUBSCRIPTIONS_PER_APP):
        assert (await platform.client.post(SUBS, json=termination_subscription(), headers=platform.auth())).status == 201
    body = await problem(await platform.client.post(SUBS, json=termination_subscription(), headers=platform.auth()), 400)
    assert str(MAX_SUBSCRIPTIONS_PER_APP) in body["detail"]


# -- timing ---------------------------------------------------------------------------------------


@pytest.mark.mp1_config(ntp_servers=["198.18.0.123", "ntp.example.org"])
async def test_timing_caps_and_current_time(platform: Platform) -> None:
    await platform.add_app()
    resp = await platform.client.get(f"{AS}/timing/timing_caps", headers=platform.auth())
    caps = await resp.json()
    assert resp.status == 200 and resp.headers["ETag"]
    assert caps["timeStamp"]["seconds"] > 1_600_000_000 and 0 <= caps["timeStamp"]["nanoSeconds"] < 10**9
    assert [(s["ntpServerAddr"], s["ntpServerAddrType"], s["localPriority"]) for s in caps["ntpServers"]] == [
        ("198.18.0.123", "IP_ADDRESS", 1), ("ntp.example.org", "DNS_NAME", 2)]
    resp = await platform.client.get(f"{AS}/timing/current_time", headers=platform.auth())
    now = await resp.json()
    assert resp.status == 200 and now["timeSourceStatus"] in ("TRACEABLE", "NONTRACEABLE")
    assert now["seconds"] >= caps["timeStamp"]["seconds"]
    # Open to any authenticated app, never without a token.
    await problem(await platform.client.get(f"{AS}/timing/current_time"), 401)


# -- events of a rule update ---------------------------------------------------------------------


async def test_every_write_is_one_store_event(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    queue = platform.daemon.store.subscribe()
    await platform.client.put(f"{RULES}/r1", json=traffic_rule("r1", priority=1), headers=platform.auth())
    await platform.client.post(f"{AS}/applications/{APP}/confirm_ready", headers=platform.auth())
    events = []
    while not queue.empty():
        e = queue.get_nowait()
        events.append((e.kind, e.op, e.key))
    assert events == [(EventKind.TRAFFIC_RULE, EventOp.PUT, "r1"), (EventKind.APP, EventOp.PUT, APP)]
