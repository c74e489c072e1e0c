"""The user-space DNS responder on real UDP and TCP sockets: rule answers, NODATA, 0x20, EDNS,
truncation, toggling, malformed input, connection limits. No upstream here (test_dns_forward.py)."""
from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from dnslib import QTYPE, DNSRecord
from prometheus_client import CollectorRegistry, generate_latest

from mep.dns import DnsCollector, XdpTwin
from mep.dns.stats import Outcome
from mep.dns.table import AnswerTable
from tests.dns.conftest import StartDns
from tests.dns.dns_support import dns_rule, kdig, query, rcode_of, ruleset, tcp_exchange, udp_exchange

pytestmark = pytest.mark.asyncio

VIDEO_A = dns_rule(5, "video.example.com", "198.19.1.10", ttl=30)
VIDEO_AAAA = dns_rule(6, "video.example.com", "2001:db8:a1::10", ttl=40)
ONLY_A = dns_rule(7, "cache.example", "198.19.1.11", ttl=20)


async def udp(server_address: tuple[str, int], msg: bytes) -> bytes:
    return await asyncio.to_thread(udp_exchange, server_address, msg)


async def tcp(server_address: tuple[str, int], *msgs: bytes) -> list[bytes]:
    return await asyncio.to_thread(tcp_exchange, server_address, list(msgs))


async def test_a_answer_bytes_are_the_xdp_answer(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A, VIDEO_AAAA)
    assert server.address is not None
    msg = query("ViDeo.Example.COM", "A", msg_id=0x4242)
    answer = await udp(server.address, msg)
    twin = XdpTwin(AnswerTable(ruleset(VIDEO_A, VIDEO_AAAA).dns_rules).xdp_entries())
    assert answer == twin.answer(msg)
    record = DNSRecord.parse(answer)
    assert record.header.id == 0x4242 and record.header.aa == 1 and record.header.ra == 1 and record.header.rd == 1
    assert str(record.q.qname) == "ViDeo.Example.COM."  # the question as asked (0x20)
    assert [(str(rr.rdata), rr.ttl, rr.rtype) for rr in record.rr] == [("198.19.1.10", 30, QTYPE.A)]
    assert answer[len(msg):len(msg) + 2] == b"\xc0\x0c"  # the owner points at the question
    aaaa = DNSRecord.parse(await udp(server.address, query("video.EXAMPLE.com", "AAAA", rd=False)))
    assert aaaa.header.rd == 0 and [(str(rr.rdata), rr.ttl) for rr in aaaa.rr] == [("2001:db8:a1::10", 40)]
    stats = server.stats()
    assert stats["rules"]["5"]["answers"] == 1 and stats["rules"]["6"]["answers"] == 1
    assert stats["outcomes"]["answer"] == 2 and stats["queries"]["udp"] == 2


async def test_other_types_of_a_rule_name_are_nodata(dns_server: StartDns) -> None:
    server = await dns_server(ONLY_A)
    assert server.address is not None
    for qtype in ("AAAA", "MX", "TXT", "HTTPS"):
        answer = DNSRecord.parse(await udp(server.address, query("cache.example", qtype)))
        assert answer.header.rcode == 0 and answer.header.aa == 1 and answer.rr == [] and answer.auth == []
    assert server.stats()["outcomes"]["nodata"] == 4 and server.stats()["rules"]["7"]["answers"] == 0
    # ANY: every address record of the name
    any_answer = DNSRecord.parse(await udp(server.address, query("cache.example", "ANY")))
    assert [str(rr.rdata) for rr in any_answer.rr] == ["198.19.1.11"]


async def test_several_rules_of_one_name_make_an_rrset(dns_server: StartDns) -> None:
    server = await dns_server(dns_rule(1, "multi.example", "198.19.1.1", ttl=50),
                              dns_rule(2, "multi.example", "198.19.1.2", ttl=20))
    assert server.address is not None
    answer = DNSRecord.parse(await udp(server.address, query("multi.example")))
    assert sorted((str(rr.rdata), rr.ttl) for rr in answer.rr) == [("198.19.1.1", 20), ("198.19.1.2", 20)]
    assert {k: v["answers"] for k, v in server.stats()["rules"].items()} == {"1": 1, "2": 1}


async def test_tcp_answers_are_the_udp_answers_and_may_be_pipelined(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A, ONLY_A)
    assert server.address is not None
    a, b = query("video.example.com", msg_id=1), query("Cache.Example", "AAAA", msg_id=2)
    over_tcp = await tcp(server.address, a, b)
    assert sorted(over_tcp) == sorted([await udp(server.address, a), await udp(server.address, b)])
    assert server.stats()["queries"] == {"udp": 2, "tcp": 2}
    out = await asyncio.to_thread(kdig, "127.0.0.1", server.address[1], "video.example.com", "A", "+tcp")
    assert "198.19.1.10" in out and "status: NOERROR" in out


async def test_kdig_sees_rule_answers_and_nodata(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A, ONLY_A)
    assert server.address is not None
    out = await asyncio.to_thread(kdig, "127.0.0.1", server.address[1], "VIDEO.example.com", "A")
    assert "198.19.1.10" in out and "qr aa rd ra" in out
    out = await asyncio.to_thread(kdig, "127.0.0.1", server.address[1], "cache.example", "AAAA")
    assert "status: NOERROR" in out and "ANSWER: 0" in out


async def test_edns_queries_get_our_opt_and_badvers(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A)
    assert server.address is not None
    answer = DNSRecord.parse(await udp(server.address, query("video.example.com", edns=4096, do=True)))
    opt = [rr for rr in answer.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1 and opt[0].rclass == 1232 and opt[0].ttl == 0x8000  # our size, DO echoed, version 0
    assert [str(rr.rdata) for rr in answer.rr] == ["198.19.1.10"]
    bad = await udp(server.address, query("video.example.com", edns=1232, version=1))
    parsed = DNSRecord.parse(bad)
    assert rcode_of(bad) == 0 and parsed.ar[0].ttl >> 24 == 1 and parsed.rr == []  # BADVERS = 16: upper bits in OPT
    assert server.stats()["outcomes"]["badvers"] == 1


async def test_udp_answers_beyond_the_client_limit_are_truncated(dns_server: StartDns) -> None:
    rules = [dns_rule(100 + i, "many.example", f"2001:db8:a1::{i + 1:x}") for i in range(40)]
    server = await dns_server(*rules)
    assert server.address is not None
    msg = query("many.example", "AAAA")
    short = DNSRecord.parse(await udp(server.address, msg))
    assert short.header.tc == 1 and short.rr == [] and str(short.q.qname) == "many.example."
    (full,) = await tcp(server.address, msg)
    assert len(DNSRecord.parse(full).rr) == 40 and len(full) > 512
    edns = DNSRecord.parse(await udp(server.address, query("many.example", "AAAA", edns=4096)))
    assert edns.header.tc == 0 and len(edns.rr) == 40  # 1197 bytes fit our 1232
    assert server.stats()["truncated"] == 1


async def test_a_rule_removed_is_not_answered_from_the_next_query(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A, ONLY_A)
    assert server.address is not None
    assert DNSRecord.parse(await udp(server.address, query("video.example.com"))).rr
    server.update(ruleset(ONLY_A, generation=2))  # what the daemon does once a rule is INACTIVE
    refused = await udp(server.address, query("video.example.com"))
    assert rcode_of(refused) == 5  # no rule, and no upstream configured: REFUSED
    assert server.stats()["outcomes"]["refused"] == 1 and "5" not in server.stats()["rules"]


def _header(msg_id: int, flags: int, qd: int, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", msg_id, flags, qd, an, ns, ar)


QUESTION = b"\x05video\x07example\x03com\x00\x00\x01\x00\x01"

MALFORMED = {
    "no question": _header(1, 0x0100, 0),
    "two questions": _header(2, 0x0100, 2) + QUESTION + QUESTION,
    "question cut in the name": _header(3, 0x0100, 1) + QUESTION[:8],
    "question without class": _header(4, 0x0100, 1) + QUESTION[:-2],
    "pointer in the question": _header(5, 0x0100, 1) + b"\xc0\x0c\x00\x01\x00\x01",
    "label type 01": _header(6, 0x0100, 1) + b"\x45abc\x00\x00\x01\x00\x01",
    "name over 255 bytes": _header(7, 0x0100, 1) + b"\x3f" + b"a" * 63 + (b"\x3f" + b"b" * 63) * 3 + b"\x00\x00\x01\x00\x01",
    "trailing bytes": _header(8, 0x0100, 1) + QUESTION + b"\x00",
    "additional record cut": _header(9, 0x0100, 1, ar=1) + QUESTION + b"\x00\x00\x29",
    "pointer to itself in a record": _header(10, 0x0100, 1, ar=1) + QUESTION + b"\xc0\x23\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00",
    "forward pointer": _header(11, 0x0100, 1, an=1) + QUESTION + b"\xc0\x40\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00",
    "OPT in the answer section": _header(12, 0x0100, 1, an=1) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
    "two OPT records": _header(13, 0x0100, 1, ar=2) + QUESTION + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" * 2,
    "OPT not owned by the root": _header(14, 0x0100, 1, ar=1) + QUESTION + b"\xc0\x0c\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
    "count beyond the records": _header(15, 0x0100, 1, ns=3) + QUESTION,
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_queries_get_formerr(dns_server: StartDns, name: str) -> None:
    server = await dns_server(VIDEO_A)
    assert server.address is not None
    msg = MALFORMED[name]
    for answer in (await udp(server.address, msg), (await tcp(server.address, msg))[0]):
        msg_id, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", answer)
        assert (msg_id, flags & 0x8000, flags & 0xF, qd, an, ns, ar) == (struct.unpack_from("!H", msg)[0], 0x8000, 1, 0, 0, 0, 0)
    assert server.stats()["outcomes"]["formerr"] == 2


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 6, 15])
async def test_other_opcodes_get_notimp(dns_server: StartDns, opcode: int) -> None:
    server = await dns_server(VIDEO_A)
    assert server.address is not None
    answer = await udp(server.address, _header(77, opcode << 11 | 0x0100, 1) + QUESTION)
    msg_id, flags = struct.unpack_from("!HH", answer)
    assert msg_id == 77 and flags & 0x8000 and (flags >> 11) & 0xF == opcode and flags & 0xF == 4
    assert server.stats()["outcomes"]["notimp"] == 1


async def test_short_messages_and_responses_are_dropped(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A)
    assert server.address is not None
    canary = query("video.example.com", msg_id=0x7777)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for junk in (b"", b"\x00" * 11, _header(9, 0x8180, 1) + QUESTION):
            s.sendto(junk, server.address)
        s.sendto(canary, server.address)
        data = await asyncio.to_thread(s.recv, 65535)
    assert data[:2] == b"\x77\x77"  # the first datagram back answers the canary: the others got nothing
    assert server.stats()["outcomes"]["dropped"] == 3 and server.stats()["outcomes"]["answer"] == 1


async def test_tcp_connection_limit_idle_timeout_and_empty_messages(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A, tcp_connections=1, tcp_idle_timeout_s=0.3)
    assert server.address is not None
    address = server.address
    first = await asyncio.open_connection(*address)
    # An empty message is dropped; the connection keeps working.
    first[1].write(b"\x00\x00" + len(query("video.example.com")).to_bytes(2, "big") + query("video.example.com"))
    length = int.from_bytes(await first[0].readexactly(2), "big")
    assert DNSRecord.parse(await first[0].readexactly(length)).rr
    second = await asyncio.open_connection(*address)
    assert await second[0].read() == b""  # closed at once: the one connection allowed is open
    second[1].close()
    assert await first[0].read() == b""  # closed by the server once idle
    first[1].close()
    assert server.stats()["tcp_refused"] == 1 and server.stats()["outcomes"]["dropped"] == 1


async def test_stats_count_every_outcome_once(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A)
    assert server.address is not None
    for msg in (query("video.example.com"), query("video.example.com", "AAAA"), query("nothing.example"),
                MALFORMED["no question"]):
        await udp(server.address, msg)
    outcomes = server.stats()["outcomes"]
    assert {k: v for k, v in outcomes.items() if v} == {
        Outcome.ANSWER.value: 1, Outcome.NODATA.value: 1, Outcome.REFUSED.value: 1, Outcome.FORMERR.value: 1}


async def test_prometheus_collector_reads_the_counters(dns_server: StartDns) -> None:
    server = await dns_server(VIDEO_A)
    assert server.address is not None
    await udp(server.address, query("video.example.com"))
    await udp(server.address, query("video.example.com", "AAAA"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DnsCollector(server))
    text = generate_latest(registry).decode()
    assert 'mep_dns_queries_total{transport="udp"} 2.0' in text
    assert 'mep_dns_responses_total{outcome="nodata"} 1.0' in text
    assert 'mep_dns_rule_answers_total{app_instance_id="app-1",rule_id="5"} 1.0' in text
    assert "mep_dns_cache_entries 0.0" in text and "mep_dns_inflight 0.0" in text
