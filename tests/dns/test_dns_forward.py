"""Forwarding to a real upstream (unbound with local-data on loopback): UDP and TCP, the cache and its
TTLs, truncation, SERVFAIL on a dead or silent upstream, overload, and answers that must be ignored."""
from __future__ import annotations

import asyncio
import socket

import pytest
from dnslib import QTYPE, DNSRecord

from tests.dns.conftest import StartDns
from tests.dns.dns_support import (
    ScriptedUpstream,
    Unbound,
    answer_to,
    dns_rule,
    kdig,
    query,
    rcode_of,
    tcp_exchange,
    udp_exchange,
)

pytestmark = pytest.mark.asyncio


async def udp(address: tuple[str, int], msg: bytes) -> bytes:
    return await asyncio.to_thread(udp_exchange, address, msg)


def upstream_of(unbound: Unbound) -> str:
    return f"{unbound.host}:{unbound.port}"


async def test_forwarded_over_udp_and_tcp_with_the_question_as_asked(dns_server: StartDns, unbound: Unbound) -> None:
    server = await dns_server(dns_rule(1, "video.example.com", "198.19.1.10"), upstream=upstream_of(unbound),
                              cache_entries=0)
    assert server.address is not None
    answer = DNSRecord.parse(await udp(server.address, query("Up.EXAMPLE", msg_id=0x0A0B)))
    assert answer.header.id == 0x0A0B and str(answer.q.qname) == "Up.EXAMPLE."
    assert [str(rr.rdata) for rr in answer.rr] == ["198.18.100.10"]
    (over_tcp,) = await asyncio.to_thread(tcp_exchange, server.address, [query("up.example", "AAAA", msg_id=9)])
    assert [str(rr.rdata) for rr in DNSRecord.parse(over_tcp).rr] == ["2001:db8:100::10"]
    nx = DNSRecord.parse(await udp(server.address, query("absent.example")))
    assert nx.header.rcode == 3 and nx.auth[0].rtype == QTYPE.SOA
    out = await asyncio.to_thread(kdig, "127.0.0.1", server.address[1], "up.example", "A", "+tcp")
    assert "198.18.100.10" in out
    assert server.stats()["outcomes"]["forwarded"] == 4 and server.stats()["outcomes"]["cache"] == 0


async def test_cache_serves_with_ttls_counting_down_and_expires(dns_server: StartDns, unbound: Unbound) -> None:
    server = await dns_server(upstream=upstream_of(unbound))
    assert server.address is not None
    first = DNSRecord.parse(await udp(server.address, query("up.example", msg_id=1)))
    await asyncio.sleep(1.1)  # the TTL the cache hands out must have dropped by at least one second
    second = DNSRecord.parse(await udp(server.address, query("UP.example", msg_id=2)))
    assert second.header.id == 2 and str(second.q.qname) == "UP.example."  # the asker's id and case
    assert [str(rr.rdata) for rr in second.rr] == [str(rr.rdata) for rr in first.rr]
    assert second.rr[0].ttl <= first.rr[0].ttl - 1
    assert server.stats()["outcomes"]["cache"] == 1 and server.stats()["outcomes"]["forwarded"] == 1
    # A TTL of 1 s: kept for 1 s, then asked again.
    await udp(server.address, query("short.example"))
    await asyncio.sleep(1.1)
    await udp(server.address, query("short.example"))
    assert server.stats()["outcomes"]["forwarded"] == 3
    # NXDOMAIN is kept for min(SOA TTL, SOA MINIMUM) = 60 s.
    for _ in range(2):
        assert rcode_of(await udp(server.address, query("absent.example"))) == 3
    assert server.stats()["outcomes"]["cache"] == 2 and server.stats()["cache_entries"] == 3


async def test_edns_client_options_are_not_passed_on(dns_server: StartDns) -> None:
    upstream = ScriptedUpstream(lambda msg: [answer_to(msg)])
    try:
        server = await dns_server(upstream=upstream.address)
        assert server.address is not None
        msg = bytearray(query("app.example", edns=4096, do=True))
        # Put a COOKIE option (code 10, 8 bytes) into the client's OPT record.
        msg[-2:] = (12).to_bytes(2, "big")
        msg += b"\x00\x0a\x00\x08" + b"\x01" * 8
        answer = DNSRecord.parse(await udp(server.address, bytes(msg)))
        assert [str(rr.rdata) for rr in answer.rr] == ["198.18.100.7"]
        sent = DNSRecord.parse(upstream.received[0])
        opt = [rr for rr in sent.ar if rr.rtype == QTYPE.OPT]
        assert len(opt) == 1 and opt[0].rdata == [] and opt[0].rclass == 1232 and opt[0].ttl == 0x8000
    finally:
        upstream.close()


async def test_large_answers_are_truncated_over_udp_and_whole_over_tcp(dns_server: StartDns, unbound: Unbound) -> None:
    server = await dns_server(upstream=upstream_of(unbound))
    assert server.address is not None
    short = DNSRecord.parse(await udp(server.address, query("big.example", "TXT")))
    assert short.header.tc == 1
    (full,) = await asyncio.to_thread(tcp_exchange, server.address, [query("big.example", "TXT")])
    assert len(DNSRecord.parse(full).rr) == 6 and len(full) > 1232


async def test_servfail_when_the_upstream_is_dead(dns_server: StartDns) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    server = await dns_server(upstream=f"127.0.0.1:{port}", upstream_timeout_s=2.0)
    assert server.address is not None
    assert rcode_of(await udp(server.address, query("up.example"))) == 2  # ICMP port unreachable
    (tcp_answer,) = await asyncio.to_thread(tcp_exchange, server.address, [query("up.example")])
    assert rcode_of(tcp_answer) == 2  # connection refused
    stats = server.stats()
    assert stats["upstream_failures"]["unreachable"] == 2 and stats["outcomes"]["servfail"] == 2


async def test_servfail_on_timeout_and_on_overload(dns_server: StartDns) -> None:
    silent = ScriptedUpstream(lambda msg: [])
    try:
        server = await dns_server(upstream=silent.address, upstream_timeout_s=0.5, max_inflight=1)
        assert server.address is not None
        address = server.address
        slow = asyncio.create_task(udp(address, query("first.example", msg_id=1)))
        while server.inflight == 0:  # the first query is waiting for the upstream
            await asyncio.sleep(0.01)
        overloaded = await udp(address, query("second.example", msg_id=2))
        assert overloaded[:2] == b"\x00\x02" and rcode_of(overloaded) == 2
        timed_out = await slow
        assert timed_out[:2] == b"\x00\x01" and rcode_of(timed_out) == 2
        failures = server.stats()["upstream_failures"]
        assert failures == {"timeout": 1, "unreachable": 0, "overload": 1}
        edns = DNSRecord.parse(await udp(address, query("third.example", edns=1232)))
        assert edns.header.rcode == 2 and [rr.rtype for rr in edns.ar] == [QTYPE.OPT]  # SERVFAIL keeps EDNS
    finally:
        silent.close()


async def test_answers_with_another_id_or_question_are_ignored(dns_server: StartDns) -> None:
    def script(msg: bytes) -> list[bytes]:
        msg_id = int.from_bytes(msg[:2], "big")
        return [answer_to(msg, address="198.18.66.6", msg_id=(msg_id + 1) % 65536),  # spoofed id
                answer_to(msg, address="198.18.66.7", name="other.example"),  # another question
                answer_to(msg, address="198.18.100.8")]  # the answer

    upstream = ScriptedUpstream(script)
    try:
        server = await dns_server(upstream=upstream.address)
        assert server.address is not None
        answer = DNSRecord.parse(await udp(server.address, query("spoof.example")))
        assert [str(rr.rdata) for rr in answer.rr] == ["198.18.100.8"]
    finally:
        upstream.close()


async def test_rule_names_never_reach_the_upstream(dns_server: StartDns) -> None:
    upstream = ScriptedUpstream(lambda msg: [answer_to(msg)])
    try:
        server = await dns_server(dns_rule(1, "video.example.com", "198.19.1.10"), upstream=upstream.address)
        assert server.address is not None
        for qtype in ("A", "AAAA", "MX"):
            await udp(server.address, query("video.example.com", qtype))
        await udp(server.address, query("else.example"))
        assert [DNSRecord.parse(m).q.qname for m in upstream.received] == ["else.example."]
    finally:
        upstream.close()


async def test_rd_and_cd_are_part_of_the_cache_key(dns_server: StartDns, unbound: Unbound) -> None:
    server = await dns_server(upstream=upstream_of(unbound))
    assert server.address is not None
    await udp(server.address, query("up.example", rd=True))
    await udp(server.address, query("up.example", rd=False))
    await udp(server.address, query("up.example", rd=False))
    assert server.stats()["outcomes"]["forwarded"] == 2 and server.stats()["outcomes"]["cache"] == 1
