"""Wire fuzz: whatever arrives, the responder answers FORMERR/NOTIMP/..., forwards, or drops, and never fails.

Three layers: the Responder itself (many examples, no sockets), the real
server over UDP and TCP (each example followed by a canary query that must
still be answered), and the cache fed with arbitrary upstream answers. The
inputs are random bytes, valid queries mutated (flipped, cut, spliced,
recounted), and messages assembled from DNS pieces: labels whose length
bytes lie, compression pointers forwards, backwards and to themselves, the
reserved label types, names beyond 255 bytes, unknown opcodes, records cut
short and chains of pointers.
"""
from __future__ import annotations

import socket
import struct
import time
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mep.config import DnsConfig
from mep.dns import Responder
from mep.dns.stats import Outcome
from mep.dns.wire import Query, is_answer_to, parse_query
from tests.dns.dns_support import ScriptedUpstream, ServerThread, dns_rule, query, ruleset

RULES = [dns_rule(1, "video.example.com", "198.19.1.10"), dns_rule(2, "video.example.com", "2001:db8:a1::10")]
VALID = [query("video.example.com"), query("Video.Example.com", "AAAA", edns=1232, do=True),
         query("other.example", "MX"), query("video.example.com", "ANY", edns=512)]
CANARY_ID = 0xC0DE

_label = st.binary(min_size=0, max_size=70).map(lambda b: bytes([len(b)]) + b)
_lying_label = st.tuples(st.integers(0, 255), st.binary(max_size=70)).map(lambda t: bytes([t[0]]) + t[1])
_pointer = st.integers(0, 0x3FFF).map(lambda p: struct.pack("!H", 0xC000 | p))
_reserved = st.sampled_from([b"\x40", b"\x41", b"\x80", b"\xbf"])
_piece = st.one_of(_label, _lying_label, _pointer, _reserved, st.just(b"\x00"),
                   st.integers(0, 0xFFFF).map(lambda n: struct.pack("!H", n)),
                   st.binary(max_size=12))


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFFFF))
    counts = draw(st.tuples(*[st.integers(0, 4)] * 4))
    body = b"".join(draw(st.lists(_piece, max_size=30)))
    return struct.pack("!HH4H", draw(st.integers(0, 0xFFFF)), flags, *counts) + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    msg = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "count", "opcode"]))
        at = draw(st.integers(0, max(len(msg) - 1, 0)))
        if op == "flip" and msg:
            msg[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del msg[at:]
        elif op == "insert":
            msg[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "count" and len(msg) >= 12:
            field = draw(st.integers(2, 5))
            msg[2 * field:2 * field + 2] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        elif op == "opcode" and len(msg) >= 4:
            msg[2] = (msg[2] & 0x87) | (draw(st.integers(0, 15)) << 3)
    return bytes(msg)


def pointer_chain(records: int) -> bytes:
    """A query followed by ``records`` additional records, each named by a pointer to the previous one."""
    base = query("video.example.com")
    out = bytearray(struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, records) + base[12:])
    previous = 12
    for _ in range(records):
        here = len(out)
        out += struct.pack("!HHHIH", 0xC000 | previous, 1, 1, 0, 0)
        previous = here
    return bytes(out)


messages = st.one_of(st.binary(max_size=600), mutated(), structured())


def check_answer(msg: bytes, answer: bytes | Query | None) -> None:
    """An answer echoes the id, has QR set and a whole header; a Query to forward is well formed."""
    if answer is None:
        return
    if isinstance(answer, Query):
        assert parse_query(msg) == answer
        return
    assert len(answer) >= 12 and answer[:2] == msg[:2] and answer[2] & 0x80


@settings(max_examples=3000, deadline=None)
@given(msg=messages)
def test_responder_never_fails(msg: bytes) -> None:
    responder = Responder(DnsConfig(enabled=True, upstream="127.0.0.1:53"))
    responder.update(ruleset(*RULES).dns_rules)
    for tcp in (False, True):
        check_answer(msg, responder.respond(msg, tcp=tcp))


@settings(max_examples=1000, deadline=None)
@given(msg=st.sampled_from(VALID), tail=st.lists(_piece, max_size=40), flags=st.integers(0, 0xFFFF),
       counts=st.tuples(*[st.integers(0, 6)] * 3))
def test_cache_takes_any_upstream_answer(msg: bytes, tail: list[bytes], flags: int, counts: tuple[int, ...]) -> None:
    responder = Responder(DnsConfig(enabled=True, upstream="127.0.0.1:53"))
    parsed = responder.respond(msg, tcp=False)
    assert isinstance(parsed, Query)
    answer = struct.pack("!HHHHHH", 7, flags | 0x8000, 1, *counts) + parsed.question + b"".join(tail)
    assert is_answer_to(answer, 7, parsed)
    relayed = responder.relay(parsed, answer, tcp=False)
    assert relayed[:2] == msg[:2]
    again = responder.respond(msg, tcp=False)
    assert isinstance(again, (bytes, Query))
    if isinstance(again, bytes):  # from the cache: the asker's id, a whole header
        assert again[:2] == msg[:2] and len(again) >= 12


def test_pointer_chains_cost_nothing() -> None:
    responder = Responder(DnsConfig(enabled=True))
    responder.update(ruleset(*RULES).dns_rules)
    msg = pointer_chain(5000)  # 60 KB: dnslib would recurse 5000 deep
    answer = responder.respond(msg, tcp=True)
    assert isinstance(answer, bytes) and answer[3] & 0x0F == 0  # answered from the rule, the records ignored


# -- through the real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerThread]:
    # The upstream echoes each query back as an answer: forwarded oddities come back through relay and cache.
    upstream = ScriptedUpstream(lambda msg: [msg[:2] + bytes([msg[2] | 0x80]) + msg[3:]] if len(msg) > 2 else [])
    running = ServerThread(RULES, upstream=upstream.address, upstream_timeout_s=0.5)
    try:
        yield running
    finally:
        running.stop()
        upstream.close()


def canary(address: tuple[str, int], sock: socket.socket, sent_id: int | None) -> list[bytes]:
    """Send the canary on ``sock`` and read until its answer; the other datagrams that came first."""
    sock.sendto(query("video.example.com", msg_id=CANARY_ID), address)
    others: list[bytes] = []
    while True:
        data = sock.recv(65535)
        if data[:2] == CANARY_ID.to_bytes(2, "big") and sent_id != CANARY_ID:
            return others
        others.append(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=st.one_of(messages, st.sampled_from([pointer_chain(100)])))
def test_server_survives_any_datagram(fuzz_server: ServerThread, msg: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(msg, fuzz_server.address)
        sent_id = int.from_bytes(msg[:2], "big") if len(msg) >= 2 else None
        for data in canary(fuzz_server.address, s, sent_id):
            assert data[:2] == msg[:2] and data[2] & 0x80 and len(data) >= 12


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.one_of(messages.map(lambda m: len(m).to_bytes(2, "big") + m),
                                 st.binary(max_size=40)), max_size=6))
def test_server_survives_any_tcp_stream(fuzz_server: ServerThread, frames: list[bytes]) -> None:
    with socket.create_connection(fuzz_server.address, timeout=5) as s:
        s.sendall(b"".join(frames))
    # The server is still there, on both transports.
    with socket.create_connection(fuzz_server.address, timeout=5) as s:
        msg = query("video.example.com", msg_id=CANARY_ID)
        s.sendall(len(msg).to_bytes(2, "big") + msg)
        assert s.recv(2)


def test_every_query_got_exactly_one_outcome(fuzz_server: ServerThread) -> None:
    deadline = time.monotonic() + 10
    while fuzz_server.call(lambda: fuzz_server.server.inflight) and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = fuzz_server.call(fuzz_server.server.stats)
    assert isinstance(stats, dict)
    assert sum(stats["outcomes"].values()) == sum(stats["queries"].values())
    assert stats["outcomes"][Outcome.FORMERR.value] > 0 and stats["outcomes"][Outcome.ANSWER.value] > 0
