"""AppD parsing: the examples, both required-services layouts, and errors that name the field and the line."""
from __future__ import annotations

from pathlib import Path

import pytest

from mep.models import DnsRule, ServiceInfo, TrafficRule
from mepm.appd import MAX_APPD_BYTES, AppdError, appd_json, load_appd, parse_appd
from tests.fixtures.mep_daemon import ROOT

EXAMPLES = ROOT / "examples" / "appd"

HEAD = """\
appDId: 11111111-2222-3333-4444-555555555555
appName: probe
appProvider: Tests
appSoftVersion: "1.0"
"""
RULE = """\
appTrafficRule:
  - trafficRuleId: r1
    filterType: FLOW
    priority: 10
    trafficFilter:
      - dstAddress: ["198.18.100.0/24"]
        dstPort: ["80"]
    action: FORWARD_DECAPSULATED
    dstInterface:
      interfaceType: IP
      dstIpAddress: 198.19.1.10
"""


def test_the_video_analytics_example() -> None:
    appd = load_appd(EXAMPLES / "video-analytics.yaml")
    assert (appd.appName, appd.appSoftVersion, appd.graceful_timeout_s) == ("video-analytics", "2.3.0", 5)
    (rule,) = appd.traffic_rules()
    assert isinstance(rule, TrafficRule)
    assert rule.to_json() == {
        "trafficRuleId": "video-to-edge",
        "filterType": "FLOW",
        "priority": 10,
        "trafficFilter": [
            {"dstAddress": ["198.18.100.0/24"], "protocol": ["TCP", "UDP"], "dstPort": ["554", "8554", "5004-5005"]}
        ],
        "action": "FORWARD_DECAPSULATED",
        "dstInterface": {"interfaceType": "IP", "dstIpAddress": "198.19.1.10"},
        "state": "ACTIVE",
    }
    (dns,) = appd.dns_rules()
    assert isinstance(dns, DnsRule)
    assert (dns.domainName, dns.ipAddress, dns.ttl, dns.state.value) == ("video.edge.example", "198.19.1.10", 30,
                                                                          "ACTIVE")
    (svc,) = appd.services()
    assert isinstance(svc, ServiceInfo)
    assert svc.transportInfo.endpoint.to_json() == {"uris": ["http://198.19.1.10:8080/video-analytics/v1"]}
    assert (svc.serializer.value, svc.transportInfo.type.value) == ("JSON", "REST_HTTP")
    assert [s.serName for s in appd.required_services] == ["rnis"]


def test_the_flow_monitor_example_uses_the_mec_app_requirements_layout() -> None:
    appd = load_appd(EXAMPLES / "flow-monitor.yaml")
    (rule,) = appd.traffic_rules()
    assert rule.action.value == "DUPLICATE_DECAPSULATED"
    assert rule.to_json()["dstInterface"] == {"interfaceType": "MAC", "dstMacAddress": "02:00:00:00:a2:02"}
    assert [(s.serName, s.version, s.requestedPermissions) for s in appd.required_services] == [
        ("rnis", "2.1.1", ["GET_RADIO_INFO"])
    ]
    assert appd.dns_rules() == [] and appd.services() == []


def test_a_stored_appd_reads_back_equal() -> None:
    appd = load_appd(EXAMPLES / "video-analytics.yaml")
    again = type(appd).model_validate(appd.document())
    assert appd_json(again) == appd_json(appd)
    assert again.traffic_rules() == appd.traffic_rules()


def test_mec_011_and_mec_010_2_spellings_and_one_or_two_interfaces() -> None:
    text = HEAD + RULE.replace("dstIpAddress", "dstIPAddress")
    assert parse_appd(text).traffic_rules() == parse_appd(HEAD + RULE).traffic_rules()
    two = HEAD + """\
appTrafficRule:
  - trafficRuleId: dup
    filterType: PACKET
    priority: 1
    trafficFilter: [{protocol: [UDP]}]
    action: DUPLICATE_DECAPSULATED
    dstInterface:
      - {interfaceType: MAC, dstMACAddress: "02:00:00:00:a1:02"}
      - {interfaceType: MAC, dstMacAddress: "02:00:00:00:a2:02"}
"""
    (rule,) = parse_appd(two).traffic_rules()
    assert [d.dstMacAddress for d in rule.dst_interfaces] == ["02:00:00:00:a1:02", "02:00:00:00:a2:02"]
    assert parse_appd(HEAD + "unusedButStandard: 1\n".replace("unusedButStandard", "virtualComputeDescriptor"))


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (HEAD + RULE.replace('["80"]', '["80", "70000"]'), ":11: appTrafficRule[0].trafficFilter[0].dstPort[1]:",
         "port 70000 in '70000' is above 65535"),
        (HEAD + RULE.replace("priority: 10", "priority: 300"), ":8: appTrafficRule[0].priority:",
         "less than or equal to 255"),
        (HEAD + RULE.replace("priority: 10", 'priority: "10"'), ":8: appTrafficRule[0].priority:",
         "valid integer"),
        (HEAD + RULE.replace("action: FORWARD_DECAPSULATED", "action: TELEPORT"), ":12: appTrafficRule[0].action:",
         "Input should be"),
        (HEAD + RULE.replace("dstIpAddress", "dstIPAdress"), ":15: appTrafficRule[0].dstInterface[0].dstIPAdress:",
         "unknown field; did you mean dstIPAddress?"),
        (HEAD + RULE.replace("dstPort", "dstPorts"), ":11: appTrafficRule[0].trafficFilter[0].dstPorts:",
         "unknown field; did you mean dstPort?"),
        (HEAD + RULE.replace("appTrafficRule", "appTraficRule"), ":5: appTraficRule:",
         "unknown field; did you mean appTrafficRule?"),
        (HEAD.replace("appProvider: Tests\n", ""), ":1: appProvider:", "required"),
        (HEAD + "appName: twice\n", ":5: appName:", "duplicate key (first at line 2)"),
        (HEAD + RULE + RULE.replace("appTrafficRule:\n", ""), ":16: appTrafficRule[1].trafficRuleId:",
         "'r1' is also the id of appTrafficRule[0]"),
        (HEAD + "appDNSRule:\n  - {dnsRuleId: d, domainName: a.example, ipAddressType: IP_V6, ipAddress: 198.19.1.1}\n",
         ":6: appDNSRule[0]:", "is not of ipAddressType IP_V6"),
        (HEAD + "appServiceRequired: [{serName: rnis, version: '2'}]\n"
         "mecAppRequirements: {requiredMecServices: [{serName: rnis, version: '2'}]}\n",
         ":6: mecAppRequirements.requiredMecServices:", "give them once"),
        (HEAD + "appServiceProduced:\n  - serName: s\n    version: '1'\n    transportsSupported:\n"
         "      - transport: {type: REST_HTTP, protocol: HTTP, version: '1.1'}\n        serializers: [JSON]\n",
         ":8: appServiceProduced[0].transportsSupported:", "needs an endpoint"),
        (HEAD + "appTrafficRule: [\n", ":6:", "not valid YAML"),
        ("- just\n- a list\n", ":1:", "an AppD is a mapping"),
    ],
    ids=["port", "priority", "priority-string", "action", "interface-key", "filter-key", "top-key", "missing",
         "duplicate-key", "duplicate-rule-id", "dns-family", "required-twice", "no-endpoint", "yaml", "not-mapping"],
)
def test_errors_name_the_file_the_line_and_the_field(text: str, where: str, message: str) -> None:
    with pytest.raises(AppdError) as info:
        parse_appd(text, "app.yaml")
    assert str(info.value).startswith("app.yaml" + where), str(info.value)
    assert message in str(info.value)


def test_limits_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AppdError, match=f"larger than {MAX_APPD_BYTES} bytes"):
        parse_appd(HEAD + "appDescription: " + "x" * MAX_APPD_BYTES + "\n")
    with pytest.raises(AppdError, match="cannot read"):
        load_appd(tmp_path / "missing.yaml")
