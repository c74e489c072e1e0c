"""The user-space responder answers every query the XDP path answers with exactly the XDP bytes.

``XdpTwin`` (mep/dns/twin.py) is the XDP responder's executable spec
(docs/dns-xdp.md); the XDP program's differential test holds the program to
it. Here the real server, over a real UDP socket, is held to it: hypothesis
builds queries around the rule names (0x20 case, types, classes, flags,
counts, trailing bytes, names at the key's length limit) and, for every
query the twin answers, the server's answer must be byte for byte the twin's.
"""
from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mep.dns import AnswerTable, XdpTwin
from mep.dns.table import DNS_NAME_BYTES, wire_name
from tests.dns.dns_support import ServerThread, dns_rule, query, ruleset, udp_exchange

ROOT = Path(__file__).resolve().parents[2]
LONG = ".".join(["a" * 60, "b" * 60]) + ".example"  # 131 bytes in wire form: beyond the XDP key
AT_LIMIT = ".".join(["c" * 63, "d" * 59]) + ".ex"  # 128 bytes in wire form: the longest the key holds
RULES = [
    dns_rule(1, "video.example.com", "198.19.1.10", ttl=30),
    dns_rule(2, "video.example.com", "2001:db8:a1::10", ttl=40),
    dns_rule(3, "cache.example", "198.19.1.11", ttl=0),
    dns_rule(4, "v6only.example", "2001:db8:a1::12", ttl=86400),
    dns_rule(5, "multi.example", "198.19.1.13"),
    dns_rule(6, "multi.example", "198.19.1.14"),
    dns_rule(7, "_svc.x-y.example", "198.19.1.15", ttl=2**31 - 1),
    dns_rule(8, LONG, "198.19.1.16"),
    dns_rule(9, AT_LIMIT, "198.19.1.17"),
]
NAMES = sorted({r.name for r in RULES}) + ["absent.example", "example", "video.example.co", ""]
TWIN = XdpTwin(AnswerTable(ruleset(*RULES).dns_rules).xdp_entries())


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    running = ServerThread(RULES)
    try:
        yield running
    finally:
        running.stop()


def test_the_xdp_entries_hold_what_xdp_can_answer() -> None:
    entries = {(e.qname, e.qtype): e for e in AnswerTable(ruleset(*RULES).dns_rules).xdp_entries()}
    assert entries[(wire_name("video.example.com"), 1)].rule_id == 1
    assert entries[(wire_name("cache.example"), 28)].record == b""  # NODATA
    assert entries[(wire_name("v6only.example"), 1)].rule_id == 0
    assert (wire_name("multi.example"), 1) not in entries  # two addresses: user space
    assert (wire_name(LONG), 1) not in entries and len(wire_name(LONG)) > DNS_NAME_BYTES
    assert entries[(wire_name(AT_LIMIT), 1)].rule_id == 9 and len(wire_name(AT_LIMIT)) == DNS_NAME_BYTES
    assert {len(e.record) for e in entries.values()} == {0, 16, 28}


def _mixed_case(name: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips + [False] * len(name)))


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Half the time a query as a stub sends it (XDP answers many of those), else anything around it."""
    name = draw(st.sampled_from(NAMES))
    name = _mixed_case(name, draw(st.lists(st.booleans(), max_size=len(name))))
    msg_id = draw(st.integers(0, 0xFFFF))
    if draw(st.booleans()):
        qtype, qclass = draw(st.sampled_from([1, 28])), 1
        flags = draw(st.sampled_from([0x0000, 0x0100, 0x0110, 0x0120, 0x0170, 0x010F, 0x01FF]))
        counts, trailing = (1, 0, 0, 0), b""
    else:
        qtype = draw(st.one_of(st.sampled_from([1, 28, 255, 15, 65]), st.integers(0, 0xFFFF)))
        qclass = draw(st.one_of(st.just(1), st.sampled_from([3, 255]), st.integers(0, 0xFFFF)))
        flags = draw(st.integers(0, 0xFFFF))
        counts = draw(st.one_of(st.just((1, 0, 0, 0)), st.tuples(*[st.integers(0, 2)] * 4)))
        trailing = draw(st.one_of(st.just(b""), st.binary(max_size=4)))
    return (struct.pack("!HH4H", msg_id, flags, *counts) + wire_name(name) + struct.pack("!HH", qtype, qclass)
            + trailing)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads())
def test_server_answers_what_xdp_answers_byte_for_byte(server: ServerThread, payload: bytes) -> None:
    expected = TWIN.answer(payload)
    event("answered by XDP" if expected is not None else "left to user space")
    if expected is None:
        return
    assert udp_exchange(server.address, payload) == expected


@pytest.mark.parametrize("name,qtype,flags", [
    ("VIDEO.example.COM", 1, 0x0100), ("video.example.com", 28, 0x0000), ("cAcHe.example", 28, 0x0110),
    ("cache.example", 1, 0x0170), ("v6only.EXAMPLE", 1, 0x0100), (AT_LIMIT.upper(), 1, 0x0100),
    ("_SVC.x-y.example", 1, 0x010F),
])
def test_examples_every_xdp_answer_kind(server: ServerThread, name: str, qtype: int, flags: int) -> None:
    payload = struct.pack("!HH4H", 0xBEEF, flags, 1, 0, 0, 0) + wire_name(name) + struct.pack("!HH", qtype, 1)
    expected = TWIN.answer(payload)
    assert expected is not None
    assert udp_exchange(server.address, payload) == expected


def test_what_xdp_leaves_is_still_answered_by_user_space(server: ServerThread) -> None:
    for name, qtype in ((LONG, "A"), ("multi.example", "A"), ("video.example.com", "MX")):
        msg = query(name, qtype)
        assert TWIN.answer(msg) is None
        answer = udp_exchange(server.address, msg)
        assert answer[:2] == msg[:2] and answer[3] & 0x0F == 0  # NOERROR from the rules
    edns = query("video.example.com", edns=1232)
    assert TWIN.answer(edns) is None and udp_exchange(server.address, edns)[11] == 1  # ARCOUNT 1: our OPT


def test_the_documented_example_is_the_twins_answer() -> None:
    doc = (ROOT / "docs" / "dns-xdp.md").read_text()
    block = doc[doc.index("query   12 34"):]
    hexes = re.findall(r"^(?:query|answer|) +((?:[0-9a-f]{2} *)+)$", block[: block.index("```")], re.M)
    query_bytes = bytes.fromhex(hexes[0].replace(" ", ""))
    answer_bytes = bytes.fromhex("".join(h.replace(" ", "") for h in hexes[1:]))
    twin = XdpTwin(AnswerTable(ruleset(dns_rule(1, "video.example.com", "198.19.1.10", ttl=30)).dns_rules)
                   .xdp_entries())
    assert twin.answer(query_bytes) == answer_bytes
