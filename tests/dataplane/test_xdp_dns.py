"""The XDP DNS responder against its spec (mep/dns/twin.py XdpTwin) through the loaded program.

For every query the twin answers, the program's answer has the twin's DNS
payload, addresses and ports swapped and valid IP/UDP checksums; every
query the twin leaves to user space passes unchanged (PASS_DNS_QUERY).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRROPT
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from mep.config import DnsConfig
from mep.dataplane.compiler import StaticResolver, compile_ruleset
from mep.dataplane.reasons import Reason, Verdict
from mep.dns.table import AnswerTable
from mep.dns.twin import XdpTwin
from mep.models import DnsRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredDnsRule
from tests.packets import N6, N6_MAC, UE1, UPF_MAC
from tests.rulesets import dataplane_config

pytestmark = pytest.mark.needs_bpf

LISTEN = "198.18.1.2"
NAMES = ["video.example.com", "cache.mec.example", "a.b", "x" * 60 + ".example.org"]


def dns_ruleset(rules: list[dict[str, Any]], generation: int = 1) -> Any:
    stored = tuple(StoredDnsRule(app_instance_id="app", rule_id=100 + i, rule=DnsRule.model_validate(r))
                   for i, r in enumerate(rules))
    snap = Snapshot(revision=1, apps={"app": AppInstance(appInstanceId="app", state=AppState.READY)},
                    traffic_rules=(), dns_rules=stored)
    config = dataplane_config()
    return compile_ruleset(snap, config=config, resolver=StaticResolver.from_config(config), generation=generation)


def dns_rule(i: int, name: str, ip: str, state: str = "ACTIVE") -> dict[str, Any]:
    return {"dnsRuleId": f"d{i}", "domainName": name, "ipAddressType": "IP_V6" if ":" in ip else "IP_V4",
            "ipAddress": ip, "ttl": 30 + i, "state": state}


RULES = [dns_rule(0, NAMES[0], "198.19.1.10"), dns_rule(1, NAMES[1], "2001:db8:a1::10"),
         dns_rule(2, NAMES[2], "198.19.2.10"), dns_rule(3, NAMES[3], "198.19.2.11")]


@pytest.fixture()
def responder(xdp_engine) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    xdp_engine._dns.set_listen(DnsConfig.model_validate({"enabled": True, "listen": f"{LISTEN}:53"}))
    try:
        rs = dns_ruleset(RULES)
        xdp_engine.apply(rs)
        yield xdp_engine, XdpTwin(AnswerTable(rs.dns_rules).xdp_entries())
    finally:
        xdp_engine._dns.set_listen(DnsConfig())


def query(dns: Any, src: str = UE1, dst: str = LISTEN, sport: int = 33333) -> bytes:
    ip = IPv6(src=src, dst=dst) if ":" in dst else IP(src=src, dst=dst)
    return bytes(Ether(src=UPF_MAC, dst=N6_MAC) / ip / UDP(sport=sport, dport=53) / dns)


def check_answer(data: bytes, result: Any, twin: XdpTwin) -> None:
    """The program answered like the twin: payload, swapped addresses, valid checksums."""
    q = Ether(data)
    payload = bytes(q[UDP].payload)
    want = twin.answer(payload)
    if want is None:
        assert (result.verdict, result.reason) == (Verdict.PASS, Reason.PASS_DNS_QUERY)
        assert [o.frame for o in result.outputs] == [data]
        return
    assert (result.verdict, result.reason) == (Verdict.TX, Reason.TX_DNS_ANSWER)
    assert [o.port for o in result.outputs] == [N6]
    a = Ether(result.outputs[0].frame)
    assert bytes(a[UDP].payload) == want
    assert (a.src, a.dst) == (q.dst, q.src)
    l3 = IP if a.haslayer(IP) else IPv6
    assert (a[l3].src, a[l3].dst) == (q[l3].dst, q[l3].src)
    assert (a[UDP].sport, a[UDP].dport) == (q[UDP].dport, q[UDP].sport)
    rebuilt = a.copy()
    if rebuilt.haslayer(IP):
        del rebuilt[IP].chksum
        del rebuilt[IP].len
    if a[UDP].chksum != 0:
        del rebuilt[UDP].chksum
    del rebuilt[UDP].len
    assert bytes(Ether(bytes(rebuilt))) == result.outputs[0].frame


@pytest.mark.parametrize("name,qtype,rd", [(NAMES[0], "A", 1), ("ViDeO.Example.COM", "A", 0), (NAMES[0], "AAAA", 1),
                                           (NAMES[1], "AAAA", 1), (NAMES[2], "A", 1), (NAMES[3], "A", 1)],
                         ids=["a", "0x20-case", "nodata", "aaaa", "short-name", "long-label"])
def test_answers_match_the_twin(responder: Any, name: str, qtype: str, rd: int) -> None:
    engine, twin = responder
    data = query(DNS(id=0x1234, rd=rd, qd=DNSQR(qname=name, qtype=qtype)))
    assert twin.answer(bytes(Ether(data)[UDP].payload)) is not None
    check_answer(data, engine.process(data, N6), twin)


@pytest.mark.parametrize("dns", [
    DNS(rd=1, qd=DNSQR(qname=NAMES[0], qtype="A"), ar=DNSRROPT(rclass=1232)),  # EDNS
    DNS(rd=1, qd=DNSQR(qname="unknown.example", qtype="A")),
    DNS(rd=1, qd=DNSQR(qname=NAMES[0], qtype="MX")),
    DNS(rd=1, opcode=2, qd=DNSQR(qname=NAMES[0], qtype="A")),
    DNS(qr=1, qd=DNSQR(qname=NAMES[0], qtype="A")),
], ids=["edns", "unknown-name", "mx", "opcode", "response"])
def test_what_xdp_does_not_answer_goes_to_user_space(responder: Any, dns: Any) -> None:
    engine, twin = responder
    data = query(dns)
    check_answer(data, engine.process(data, N6), twin)


def test_ipv4_without_udp_checksum_is_answered_without_one(responder: Any) -> None:
    engine, twin = responder
    frame = Ether(query(DNS(rd=1, qd=DNSQR(qname=NAMES[0], qtype="A"))))
    frame[UDP].chksum = 0
    data = bytes(frame)
    result = engine.process(data, N6)
    check_answer(data, result, twin)
    assert Ether(result.outputs[0].frame)[UDP].chksum == 0


def test_an_inactive_rule_is_not_answered_from_the_next_query(responder: Any) -> None:
    engine, _ = responder
    data = query(DNS(rd=1, qd=DNSQR(qname=NAMES[0], qtype="A")))
    assert engine.process(data, N6).reason == Reason.TX_DNS_ANSWER
    engine.apply(dns_ruleset([dns_rule(0, NAMES[0], "198.19.1.10", state="INACTIVE")] + RULES[1:], generation=2))
    assert engine.process(data, N6).reason == Reason.PASS_DNS_QUERY


def test_answers_are_counted_per_rule(responder: Any) -> None:
    engine, _ = responder
    rule_id = engine.ruleset.dns_rules[[d.dns_rule_id for d in engine.ruleset.dns_rules].index("d2")].rule_id
    before = engine.counters().rules.get(rule_id)
    for _ in range(3):
        engine.process(query(DNS(rd=1, qd=DNSQR(qname=NAMES[2], qtype="A"))), N6)
    assert engine.counters().rules[rule_id].packets == (before.packets if before else 0) + 3


labels = st.text(alphabet="abcdefgABCDEFG0123456789-", min_size=1, max_size=12)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.one_of(st.sampled_from(NAMES + [n.upper() for n in NAMES]),
                      st.lists(labels, min_size=1, max_size=5).map(".".join)),
       qtype=st.sampled_from(["A", "AAAA", "TXT", 255]), rd=st.integers(0, 1), cd=st.integers(0, 1),
       msg_id=st.integers(0, 65535), trailer=st.binary(max_size=3))
def test_random_queries_match_the_twin(responder: Any, name: str, qtype: str, rd: int, cd: int, msg_id: int,
                                       trailer: bytes) -> None:
    engine, twin = responder
    frame = Ether(query(DNS(id=msg_id, rd=rd, cd=cd, qd=DNSQR(qname=name, qtype=qtype))))
    if trailer:
        frame = Ether(query(bytes(frame[UDP].payload) + trailer))
    data = bytes(frame)
    check_answer(data, engine.process(data, N6), twin)


def test_answers_survive_rule_sets_that_keep_the_same_dns_rules(responder: Any) -> None:
    """Rule sets sharing one tuple of DNS rules write each half's answers once (maps/dns.py skips a half last
    written from the same table); the answers stay in force across the swaps, and a later change of the
    DNS rules reaches both halves."""
    engine, twin = responder
    data = query(DNS(id=7, rd=1, qd=DNSQR(qname=NAMES[0], qtype="A")))
    kept = dns_ruleset(RULES)
    for generation in range(2, 6):
        engine.apply(dataclasses.replace(kept, generation=generation))  # the very same dns_rules tuple
        check_answer(data, engine.process(data, N6), twin)
    moved = dns_ruleset([dns_rule(0, NAMES[0], "198.19.3.3"), *RULES[1:]], generation=6)
    moved_twin = XdpTwin(AnswerTable(moved.dns_rules).xdp_entries())
    for generation in (6, 7):  # both halves
        engine.apply(dataclasses.replace(moved, generation=generation))
        check_answer(data, engine.process(data, N6), moved_twin)
