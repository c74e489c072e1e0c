"""HTTP behaviour shared by every Mp1 resource: ProblemDetails for aiohttp's own errors, bounds, If-Match, metrics."""
from __future__ import annotations

import asyncio
import re

import pytest
from dnslib import DNSRecord

from mep.dns import DnsServer
from mep.errors import InvalidInput, PreconditionFailed
from mep.models import TrafficRule
from mep.mp1.http import IfMatch, expected_revision, parse_if_match, parse_model
from mep.state import StoredTrafficRule
from tests.mp1.conftest import APP, AS, SM, Platform, dns_rule, traffic_rule
from tests.mp1.test_mp1_app_support import problem
from tests.packets import APP1_IP, N6, tcp, udp

pytestmark = pytest.mark.asyncio


async def test_aiohttp_errors_are_problem_details_too(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    body = await problem(await platform.client.get("/mec_app_support/v1/nowhere", headers=platform.auth()), 404)
    assert body["instance"] == "/mec_app_support/v1/nowhere"
    resp = await platform.client.delete(f"{AS}/applications/{APP}/traffic_rules/r1", headers=platform.auth())
    await problem(resp, 405)
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "PUT"}
    big = b'{"pad": "' + b"x" * (1 << 20) + b'"}'
    resp = await platform.client.put(f"{AS}/applications/{APP}/traffic_rules/r1", data=big,
                                     headers={**platform.auth(), "Content-Type": "application/json"})
    await problem(resp, 413)
    resp = await platform.client.head(f"{AS}/applications/{APP}/traffic_rules/r1", headers=platform.auth())
    assert resp.status == 200 and resp.headers["ETag"]


@pytest.mark.mp1_config(max_body_bytes=2048)
async def test_the_body_bound_comes_from_the_configuration(platform: Platform) -> None:
    await platform.add_app(traffic_rules=[traffic_rule("r1")])
    rule = traffic_rule("r1", serName="x" * 2048)  # an unknown member, ignored, but still bytes
    resp = await platform.client.put(f"{AS}/applications/{APP}/traffic_rules/r1", json=rule, headers=platform.auth())
    await problem(resp, 413)


async def test_if_match_parsing() -> None:
    assert parse_if_match(None) is None
    assert parse_if_match(" * ") == IfMatch(True, frozenset())
    assert parse_if_match('"3", W/"4", "x5", "6"') == IfMatch(False, frozenset({3, 6}))
    for bad in ("3", '"3" "4"', '"3",,', 'W/3', '"unterminated', "x" * 5000):
        with pytest.raises(InvalidInput):
            parse_if_match(bad)
    stored = StoredTrafficRule(revision=7, app_instance_id=APP, rule_id=1, rule=TrafficRule.model_validate(traffic_rule()))
    assert expected_revision(stored, None, "r") is None
    assert expected_revision(stored, IfMatch(True, frozenset()), "r") == 7
    assert expected_revision(stored, IfMatch(False, frozenset({1, 7})), "r") == 7
    with pytest.raises(PreconditionFailed):
        expected_revision(stored, IfMatch(False, frozenset({8})), "r")


async def test_validation_errors_name_the_member_the_client_sent() -> None:
    rule = traffic_rule(dstInterface={"interfaceType": "IP", "dstMacAddress": "zz"})
    with pytest.raises(InvalidInput) as info:
        parse_model(TrafficRule, rule)
    assert info.value.field == "dstInterface.dstMacAddress"  # not the union member's class name


async def test_metrics(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, traffic_rules=[traffic_rule("r1")])
    await platform.settled()
    engine = platform.daemon.engine
    engine.process(bytes(tcp(dport=80)), N6)
    engine.process(bytes(tcp(dport=80)), N6)
    engine.process(bytes(udp(dport=53)), N6)
    await platform.client.get(f"{SM}/services", headers=platform.auth())
    await platform.client.get(f"{AS}/applications/{APP}/traffic_rules/nope", headers=platform.auth())

    resp = await platform.client.get("/metrics")  # no token: scraped by Prometheus
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    rule_id = platform.daemon.store.get_traffic_rule(APP, "r1").rule_id
    frame = len(bytes(tcp(dport=80)))

    def value(sample: str) -> float:
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
        assert match, sample
        return float(match.group(1))

    assert value(f'mep_dataplane_rule_packets_total{{app_instance_id="{APP}",rule_id="{rule_id}"}}') == 2
    assert value(f'mep_dataplane_rule_bytes_total{{app_instance_id="{APP}",rule_id="{rule_id}"}}') == 2 * frame
    assert value('mep_dataplane_verdict_packets_total{verdict="REDIRECT"}') == 2
    assert value('mep_dataplane_verdict_packets_total{verdict="PASS"}') == 1
    assert value('mep_dataplane_reason_packets_total{reason="PASS_NO_MATCH",verdict="PASS"}') == 1
    assert value('mep_dataplane_reason_packets_total{reason="DROP_TRUNCATED_ETH",verdict="DROP"}') == 0
    assert value("mep_dataplane_rules") == 1 and value("mep_dataplane_ruleset_generation") >= 1
    assert value(f'mep_mp1_request_duration_seconds_count{{method="GET",route="{SM}/services",status="200"}}') == 1
    route = f"{AS}/applications/{{appInstanceId}}/traffic_rules/{{trafficRuleId}}"
    assert value(f'mep_mp1_request_duration_seconds_count{{method="GET",route="{route}",status="404"}}') == 1
    assert value('mep_mp1_request_duration_seconds_count{method="POST",route="/oauth2/token",status="200"}') == 1
    assert value("mep_mp1_notifications_pending") == 0
    # Labels stay bounded: raw paths and odd methods never become label values.
    await platform.client.request("PROPFIND", f"{AS}/applications/{APP}/traffic_rules/r1")
    text = await (await platform.client.get("/metrics")).text()
    assert "/r1" not in text and "PROPFIND" not in text and 'method="OTHER"' in text


@pytest.mark.mp1_config(dns={"enabled": True, "listen": "127.0.0.1:0"})
async def test_metrics_include_the_dns_responder(platform: Platform) -> None:
    await platform.add_app(confirm_ready_required=False, dns_rules=[dns_rule("d1", "cache.example")])
    await platform.settled()
    server = next(s for s in platform.daemon.services if isinstance(s, DnsServer))
    assert server.address is not None
    reply = await asyncio.to_thread(
        DNSRecord.question("cache.example", "A").send, server.address[0], server.address[1], timeout=5)
    assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == [APP1_IP]
    rule_id = platform.daemon.store.get_dns_rule(APP, "d1").rule_id

    text = await (await platform.client.get("/metrics")).text()
    labels = f'{{app_instance_id="{APP}",rule_id="{rule_id}"}}'
    assert re.search(r'^mep_dns_queries_total\{transport="udp"\} 1\.0$', text, re.M)
    assert f"mep_dns_rule_answers_total{labels} 1.0" in text  # user space answered it
    assert f"mep_dataplane_dns_rule_answers_total{labels} 0.0" in text  # the reference engine has no responder


@pytest.mark.mp1_config(metrics=False)
async def test_metrics_can_be_switched_off(platform: Platform) -> None:
    await problem(await platform.client.get("/metrics"), 404)
