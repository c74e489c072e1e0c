"""The compiler: what is enforced, in which order, and every refusal with its field."""
from __future__ import annotations

from typing import Any

import pytest

from mep.config import Capacity, DataplaneConfig
from mep.dataplane.compiler import StaticResolver, compile_ruleset
from mep.dataplane.reasons import Verdict
from mep.dataplane.ruleset import TargetKind
from mep.errors import CapacityError, CompileError
from mep.models import DnsRule, TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredDnsRule, StoredTrafficRule
from tests.dataplane.cases import GRE_TUNNEL, GTP_TUNNEL, TO_APP1_IP, TO_APP1_MAC, TO_APP2_MAC
from tests.packets import APP1, APP1_IP, APP1_MAC, APP1_PORT_MAC, APP2
from tests.rulesets import dataplane_config, rule, ruleset


def snapshot(rules: dict[str, list[dict[str, Any]]], states: dict[str, AppState],
             dns: dict[str, list[dict[str, Any]]] | None = None) -> Snapshot:
    stored, next_id = [], 1
    for app, bodies in rules.items():
        for body in bodies:
            stored.append(StoredTrafficRule(app_instance_id=app, rule_id=next_id, rule=TrafficRule.model_validate(body)))
            next_id += 1
    stored_dns = []
    for app, bodies in (dns or {}).items():
        for body in bodies:
            stored_dns.append(StoredDnsRule(app_instance_id=app, rule_id=next_id, rule=DnsRule.model_validate(body)))
            next_id += 1
    apps = {a: AppInstance(appInstanceId=a, state=s) for a, s in states.items()}
    return Snapshot(revision=7, apps=apps, traffic_rules=tuple(stored), dns_rules=tuple(stored_dns))


def compile_snapshot(snap: Snapshot, **cfg: Any):  # type: ignore[no-untyped-def]
    config = dataplane_config(**cfg)
    return compile_ruleset(snap, config=config, resolver=StaticResolver.from_config(config), generation=3)


def test_only_active_rules_of_ready_apps_are_compiled() -> None:
    snap = snapshot(
        {
            "ready": [rule("a"), rule("b", state="INACTIVE")],
            "waiting": [rule("c")],
            "stopped": [rule("d")],
        },
        {"ready": AppState.READY, "waiting": AppState.INSTANTIATED, "stopped": AppState.STOPPED},
    )
    rs = compile_snapshot(snap)
    assert [r.traffic_rule_id for r in rs.rules] == ["a"]
    assert (rs.generation, rs.store_revision) == (3, 7)


def test_match_order_is_priority_then_rule_id() -> None:
    rs = ruleset([rule("x", priority=9), rule("y", priority=0), rule("z", priority=9), rule("w", priority=3)])
    assert [r.traffic_rule_id for r in rs.rules] == ["y", "w", "x", "z"]


def test_default_action_drop() -> None:
    assert ruleset([], default_action="DROP").default_verdict == Verdict.DROP
    assert ruleset([]).default_verdict == Verdict.PASS


def test_any_protocol_is_a_wildcard_and_tokens_are_vlan_ids() -> None:
    rs = ruleset([rule("a", filters=[{"protocol": ["TCP", "any"], "token": ["7", "7", "100"]}])])
    f = rs.rules[0].filters[0]
    assert f.protocols == () and f.vlans == (7, 100)


def test_destinations_resolve_to_ports_and_macs() -> None:
    rs = ruleset([
        rule("ip", "FORWARD_DECAPSULATED", dst=TO_APP1_IP),
        rule("mac", "FORWARD_DECAPSULATED", dst=TO_APP1_MAC),
        rule("gtp", "FORWARD_ENCAPSULATED", dst=GTP_TUNNEL),
        rule("gre", "DUPLICATE_ENCAPSULATED", dst=GRE_TUNNEL),
        rule("two", "DUPLICATE_DECAPSULATED", dst=[TO_APP1_MAC, TO_APP2_MAC]),
    ])
    t = {r.traffic_rule_id: r.targets for r in rs.rules}
    assert t["ip"][0].port == APP1 and t["ip"][0].new_dst_ip is not None
    assert t["ip"][0].dst_mac == bytes.fromhex(APP1_MAC.replace(":", ""))
    assert t["ip"][0].src_mac == bytes.fromhex(APP1_PORT_MAC.replace(":", ""))
    assert t["mac"][0].new_dst_ip is None and t["mac"][0].kind is TargetKind.DELIVER
    assert t["gtp"][0].kind is TargetKind.ENCAP_GTPU and t["gtp"][0].port == APP2
    assert t["gre"][0].kind is TargetKind.ENCAP_GRE
    assert [x.port for x in t["two"]] == [APP1, APP2]


def test_src_mac_override() -> None:
    rs = ruleset([rule("a", "FORWARD_DECAPSULATED", dst={**TO_APP1_MAC, "srcMacAddress": "02-aa-00-00-00-01"})])
    assert rs.rules[0].targets[0].src_mac == bytes.fromhex("02aa00000001")


def test_rule_version_changes_with_content_only() -> None:
    a = ruleset([rule("a", "DROP", filters=[{"dstPort": ["80"]}])]).rules[0]
    b = ruleset([rule("a", "DROP", filters=[{"dstPort": ["80"]}])], generation=9).rules[0]
    c = ruleset([rule("a", "DROP", filters=[{"dstPort": ["81"]}])]).rules[0]
    assert a.version == b.version != c.version


REFUSALS = [
    ("forward-without-destination", rule("r", "FORWARD_DECAPSULATED"), "dstInterface", "needs a dstInterface"),
    ("duplicate-without-destination", rule("r", "DUPLICATE_ENCAPSULATED"), "dstInterface", "needs a dstInterface"),
    ("forward-two-destinations", rule("r", "FORWARD_DECAPSULATED", dst=[TO_APP1_MAC, TO_APP2_MAC]), "dstInterface",
     "takes one"),
    ("encap-without-tunnel-info", rule("r", "FORWARD_ENCAPSULATED", dst={"interfaceType": "TUNNEL"}),
     "dstInterface.tunnelInfo", "needs interfaceType TUNNEL with tunnelInfo"),
    ("encap-to-mac", rule("r", "FORWARD_ENCAPSULATED", dst=TO_APP1_MAC), "dstInterface.tunnelInfo", "TUNNEL"),
    ("decap-to-tunnel", rule("r", "FORWARD_DECAPSULATED", dst=GTP_TUNNEL), "dstInterface.interfaceType", "MAC or IP"),
    ("mac-without-mac", rule("r", "FORWARD_DECAPSULATED", dst={"interfaceType": "MAC"}), "dstInterface.dstMacAddress",
     "needs dstMacAddress"),
    ("unknown-mac", rule("r", "FORWARD_DECAPSULATED", dst={"interfaceType": "MAC", "dstMacAddress": "02-99-00-00-00-01"}),
     "dstInterface.dstMacAddress", "no data-plane port"),
    ("ip-without-ip", rule("r", "FORWARD_DECAPSULATED", dst={"interfaceType": "IP"}), "dstInterface.dstIpAddress",
     "needs dstIpAddress"),
    ("unknown-ip", rule("r", "FORWARD_DECAPSULATED", dst={"interfaceType": "IP", "dstIpAddress": "198.19.9.9"}),
     "dstInterface.dstIpAddress", "not a known neighbour"),
    ("tunnel-address-placeholder",
     rule("r", "FORWARD_ENCAPSULATED", dst={"interfaceType": "TUNNEL", "tunnelInfo": {"tunnelType": "GTP_U",
                                                                                       "tunnelSrcAddress": "?",
                                                                                       "tunnelDstAddress": "?"}}),
     "dstInterface.tunnelInfo.tunnelSrcAddress", "needs an IP address"),
    ("tunnel-mixed-family",
     rule("r", "FORWARD_ENCAPSULATED", dst={"interfaceType": "TUNNEL", "tunnelInfo": {
         "tunnelType": "GRE", "tunnelSrcAddress": "2001:db8::1", "tunnelDstAddress": "198.19.2.20"}}),
     "dstInterface.tunnelInfo", "differ in family"),
    ("second-destination-bad", rule("r", "DUPLICATE_DECAPSULATED", dst=[TO_APP1_MAC, {"interfaceType": "MAC"}]),
     "dstInterface.1.dstMacAddress", "needs dstMacAddress"),
]


@pytest.mark.parametrize("body,field,message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_name_the_field(body: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(CompileError) as info:
        ruleset([body])
    problem = info.value.problems[0]
    assert (problem.app_instance_id, problem.rule_id, problem.field) == ("app1", "r", field)
    assert message in problem.message
    assert field in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(CompileError) as info:
        ruleset([rule("a", "FORWARD_DECAPSULATED"), rule("ok"), rule("b", "DUPLICATE_DECAPSULATED")])
    assert [p.rule_id for p in info.value.problems] == ["a", "b"]
    assert "and 1 more" in str(info.value)


def test_port_without_mac_is_refused_only_when_used() -> None:
    ports = [{"name": "n6", "ifname": "n6", "role": "n6"},
             {"name": "app1", "ifname": "app1", "role": "app", "neighbours": {APP1_IP: APP1_MAC}}]
    config = DataplaneConfig(ports=ports)  # type: ignore[arg-type]
    resolver = StaticResolver.from_config(config)
    ok = snapshot({"a": [rule("d")]}, {"a": AppState.READY})
    compile_ruleset(ok, config=config, resolver=resolver, generation=1)
    bad = snapshot({"a": [rule("f", "FORWARD_DECAPSULATED", dst=TO_APP1_IP)]}, {"a": AppState.READY})
    with pytest.raises(CompileError, match="has no MAC"):
        compile_ruleset(bad, config=config, resolver=resolver, generation=1)


def test_capacity() -> None:
    rules = [rule(f"r{i}", filters=[{}, {}]) for i in range(3)]
    ruleset(rules, capacity=Capacity(rules=3, filters=6))
    with pytest.raises(CapacityError, match="3 rules exceed the capacity of 2"):
        ruleset(rules, capacity=Capacity(rules=2))
    with pytest.raises(CapacityError, match="6 traffic filters exceed the capacity of 5") as info:
        ruleset(rules, capacity=Capacity(filters=5))
    assert info.value.problems[0].field == "dataplane.capacity.filters"


def dns(rule_id: str, name: str, ip: str = "198.19.1.10", state: str = "ACTIVE") -> dict[str, Any]:
    return {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V6" if ":" in ip else "IP_V4",
            "ipAddress": ip, "ttl": 30, "state": state}


def test_dns_rules_compile_lowercased_and_typed() -> None:
    snap = snapshot({}, {"a": AppState.READY, "b": AppState.INSTANTIATED},
                    dns={"a": [dns("d1", "Video.Example.COM."), dns("d2", "video.example.com", "2001:db8::10"),
                               dns("d3", "off.example.com", state="INACTIVE")],
                         "b": [dns("d4", "waiting.example.com")]})
    rs = compile_snapshot(snap)
    assert [(d.name, d.qtype, d.ttl) for d in rs.dns_rules] == [("video.example.com", 1, 30), ("video.example.com", 28, 30)]
    assert rs.dns_rules[0].address == bytes([198, 19, 1, 10])


def test_dns_name_claimed_by_two_apps_is_refused() -> None:
    snap = snapshot({}, {"a": AppState.READY, "b": AppState.READY},
                    dns={"a": [dns("d1", "video.example.com")], "b": [dns("d2", "VIDEO.example.com.")]})
    with pytest.raises(CompileError, match="already claimed by app a") as info:
        compile_snapshot(snap)
    assert info.value.problems[0].field == "domainName"


def test_rule_cache_reuses_unchanged_rules_and_drops_on_resolver_change() -> None:
    from mep.dataplane.compiler import RuleCache

    config = dataplane_config()
    resolver = StaticResolver.from_config(config)
    snap = snapshot({"a": [rule("x", "FORWARD_DECAPSULATED", dst=TO_APP1_IP), rule("y")]}, {"a": AppState.READY})
    cache = RuleCache()
    first = compile_ruleset(snap, config=config, resolver=resolver, generation=1, cache=cache)
    second = compile_ruleset(snap, config=config, resolver=resolver, generation=2, cache=cache)
    assert all(a is b for a, b in zip(first.rules, second.rules))  # reused, not recompiled
    assert first.rules == compile_ruleset(snap, config=config, resolver=resolver, generation=3).rules
    moved = StaticResolver.from_config(DataplaneConfig(ports=[  # type: ignore[arg-type]
        {**p.model_dump(), "mac": "02:00:00:00:ee:01"} if p.name == "app1" else p.model_dump()
        for p in config.ports]))
    third = compile_ruleset(snap, config=config, resolver=moved, generation=4, cache=cache)
    assert third.rules[0].targets[0].src_mac == bytes.fromhex("02000000ee01")
