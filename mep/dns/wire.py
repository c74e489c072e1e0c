"""DNS wire format, bounded: reading queries, walking records, building the responses the responder makes itself.

Reading never follows a compression pointer. The question name must be
uncompressed (it is the message's first name: there is nothing before it to
point to), and every other name is only skipped, which stops at its first
pointer. So no input can loop, recurse or allocate beyond its own length.
Names are at most 255 bytes and labels 63 (RFC 1035 section 3.1); a pointer
must point backwards; label types 01 and 10 (RFC 6891 section 5) are
malformed.

This module, not dnslib, reads what clients and the upstream send, for three
reasons: the responder echoes the question exactly as asked (its 0x20 case
included) and must produce the same bytes as the XDP responder
(docs/dns-xdp.md); dnslib follows pointers recursively (a 64 KiB message can
chain 32k of them: RecursionError), accepts names longer than 255 bytes and
refuses labels that are not UTF-8, though DNS labels are binary. dnslib packs
the answer records (table.py) and checks, in the tests, what the responder
sends.

Readers return an offset, or -1 when the input is malformed: no exceptions
on the path every packet takes. Byte order is network order throughout.
"""
from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple, Optional

__all__ = [
    "Flag",
    "Rcode",
    "OPCODE_MASK",
    "RCODE_MASK",
    "TYPE_A",
    "TYPE_SOA",
    "TYPE_AAAA",
    "TYPE_OPT",
    "TYPE_ANY",
    "CLASS_IN",
    "HEADER_BYTES",
    "MAX_NAME_BYTES",
    "MAX_LABEL_BYTES",
    "CLASSIC_UDP_BYTES",
    "MAX_MESSAGE_BYTES",
    "ANSWER_FLAGS",
    "COPIED_FLAGS",
    "Edns",
    "Query",
    "Record",
    "read_question_name",
    "skip_name",
    "walk_records",
    "parse_query",
    "is_answer_to",
    "header",
    "opt_record",
    "error_response",
    "truncated_response",
]

HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
QUESTION_FIXED = struct.Struct("!HH")  # qtype, qclass
HEADER_BYTES = 12
MAX_NAME_BYTES = 255  # wire form, root label included (RFC 1035 section 3.1)
MAX_LABEL_BYTES = 63
CLASSIC_UDP_BYTES = 512  # largest UDP message to a client without EDNS (RFC 1035 section 4.2.1)
MAX_MESSAGE_BYTES = 65535  # the TCP length prefix is 16 bits

TYPE_A = 1
TYPE_SOA = 6
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1


class Flag:
    """Header flag bits (RFC 1035 section 4.1.1, RFC 4035 section 3.2 for AD and CD).

    Plain ints, not an IntFlag: IntFlag's operators run in Python, and every
    query goes through a few of them.
    """

    QR = 0x8000
    AA = 0x0400
    TC = 0x0200
    RD = 0x0100
    RA = 0x0080
    Z = 0x0040
    AD = 0x0020
    CD = 0x0010


OPCODE_MASK = 0x7800  # opcode << 11; QUERY is 0
RCODE_MASK = 0x000F


class Rcode(IntEnum):
    """Response codes the responder sends; BADVERS needs EDNS (its upper 8 bits go in the OPT record)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16


# Every answer from a DNS rule, by the XDP path or user space: QR, AA (the rule
# is the authority for its name, as unbound's local-data is) and RA (the
# responder forwards everything else), plus the query's RD and CD (RFC 1035
# 4.1.1, RFC 6840 5.9). Opcode 0, TC 0, Z 0, AD 0 (nothing is validated), rcode 0.
ANSWER_FLAGS = Flag.QR | Flag.AA | Flag.RA
COPIED_FLAGS = Flag.RD | Flag.CD


class Edns(NamedTuple):
    """The OPT record of a query (RFC 6891 section 6.1.2)."""

    udp_payload: int  # the requestor's UDP payload size (class field); below 512 counts as 512
    version: int
    do: bool  # DNSSEC OK
    offset: int  # where the OPT record starts


class Query(NamedTuple):
    """A well-formed query with one question (QUERY opcode)."""

    id: int
    flags: int
    question: bytes  # the question exactly as asked: qname, qtype, qclass
    qname: bytes  # the name in wire form, A-Z folded to a-z: the key of every table
    qtype: int
    qclass: int
    edns: Optional[Edns]
    # Nothing but the header, the question and the OPT record if any: forwarded
    # with the responder's own OPT in place of the client's, and cacheable.
    clean: bool

    @property
    def question_end(self) -> int:
        """The offset just past the question."""
        return HEADER_BYTES + len(self.question)


class Record(NamedTuple):
    """Where one resource record sits in a message."""

    offset: int
    rtype: int
    rclass: int
    ttl: int
    ttl_offset: int
    rdata_offset: int
    rdlength: int


def read_question_name(msg: bytes, offset: int) -> int:
    """The offset past an uncompressed name starting at ``offset``; -1 if malformed or compressed."""
    start = offset
    end = len(msg)
    while offset < end:
        length = msg[offset]
        if length == 0:
            return offset + 1
        if length > MAX_LABEL_BYTES:  # a pointer (11) or a reserved label type (01, 10)
            return -1
        offset += 1 + length
        if offset - start >= MAX_NAME_BYTES:  # no room left for the root label
            return -1
    return -1


def skip_name(msg: bytes, offset: int) -> int:
    """The offset past a possibly compressed name, without following its pointer; -1 if malformed.

    A pointer must point before itself; its target is never read.
    """
    start = offset
    end = len(msg)
    while offset < end:
        length = msg[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:
            if offset + 2 > end:
                return -1
            target = ((length & 0x3F) << 8) | msg[offset + 1]
            return offset + 2 if target < offset else -1
        if length > MAX_LABEL_BYTES:
            return -1
        offset += 1 + length
        if offset - start >= MAX_NAME_BYTES:
            return -1
    return -1


def walk_records(msg: bytes, offset: int, count: int) -> tuple[list[Record], int] | None:
    """``count`` records from ``offset``: their positions and the offset past them; None if malformed."""
    records = []
    end = len(msg)
    for _ in range(count):
        name_end = skip_name(msg, offset)
        if name_end < 0 or name_end + RR_FIXED.size > end:
            return None
        rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(msg, name_end)
        rdata = name_end + RR_FIXED.size
        if rdata + rdlength > end:
            return None
        records.append(Record(offset, rtype, rclass, ttl, name_end + 4, rdata, rdlength))
        offset = rdata + rdlength
    return records, offset


def parse_query(msg: bytes) -> Query | Rcode | None:
    """Read a query: a Query to answer, an Rcode to answer with (header only), or None to drop.

    Dropped: shorter than a header, or a response (QR set: answering responses
    invites loops and reflection). NOTIMP: an opcode other than QUERY.
    FORMERR: QDCOUNT other than 1, a malformed question or record, bytes
    after the last record, an OPT record that is not in the additional
    section, not owned by the root, or not the only one (RFC 6891 section 6.1.1).
    """
    if len(msg) < HEADER_BYTES:
        return None
    msg_id, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(msg)
    if flags & Flag.QR:
        return None
    if flags & OPCODE_MASK:
        return Rcode.NOTIMP
    if qdcount != 1:
        return Rcode.FORMERR
    name_end = read_question_name(msg, HEADER_BYTES)
    if name_end < 0 or name_end + QUESTION_FIXED.size > len(msg):
        return Rcode.FORMERR
    qtype, qclass = QUESTION_FIXED.unpack_from(msg, name_end)
    question_end = name_end + QUESTION_FIXED.size
    edns = None
    records: list[Record] = []
    if ancount or nscount or arcount:
        walked = walk_records(msg, question_end, ancount + nscount + arcount)
        if walked is None or walked[1] != len(msg):
            return Rcode.FORMERR
        records = walked[0]
    elif question_end != len(msg):
        return Rcode.FORMERR
    for index, record in enumerate(records):
        if record.rtype != TYPE_OPT:
            continue
        if edns is not None or index < ancount + nscount or msg[record.offset] != 0:
            return Rcode.FORMERR
        edns = Edns(
            udp_payload=max(record.rclass, CLASSIC_UDP_BYTES),
            version=(record.ttl >> 16) & 0xFF,
            do=bool(record.ttl & 0x8000),
            offset=record.offset,
        )
    return Query(
        id=msg_id,
        flags=flags,
        question=msg[HEADER_BYTES:question_end],
        qname=msg[HEADER_BYTES:name_end].lower(),  # bytes.lower() folds A-Z only; length bytes are <= 63
        qtype=qtype,
        qclass=qclass,
        edns=edns,
        clean=ancount == 0 and nscount == 0 and arcount == (1 if edns else 0),
    )


def is_answer_to(response: bytes, msg_id: int, query: Query) -> bool:
    """Does ``response`` answer ``query`` sent with ``msg_id``: that id, QR, and the same question
    (name compared case-insensitively, type and class exactly)?"""
    if len(response) < query.question_end or response[:2] != msg_id.to_bytes(2, "big"):
        return False
    flags, qdcount = struct.unpack_from("!HH", response, 2)
    if not flags & Flag.QR or qdcount != 1:
        return False
    name_end = HEADER_BYTES + len(query.qname)
    return (response[HEADER_BYTES:name_end].lower() == query.qname
            and response[name_end:query.question_end] == query.question[-QUESTION_FIXED.size:])


def header(msg_id: int, flags: int, qdcount: int, ancount: int, nscount: int, arcount: int) -> bytes:
    """A 12-byte header."""
    return HEADER.pack(msg_id, flags, qdcount, ancount, nscount, arcount)


def opt_record(udp_payload: int, *, do: bool, ext_rcode: int = 0) -> bytes:
    """The responder's own OPT record: EDNS version 0, no options (RFC 6891 section 6.1.2)."""
    return b"\x00" + struct.pack("!HHBBHH", TYPE_OPT, udp_payload, ext_rcode, 0, 0x8000 if do else 0, 0)


def error_response(msg: bytes, rcode: Rcode) -> bytes:
    """A header-only answer to ``msg`` (at least 12 bytes): its id, opcode, RD and CD; QR, RA and ``rcode``."""
    msg_id, flags = struct.unpack_from("!HH", msg)
    return header(msg_id, Flag.QR | Flag.RA | (flags & (OPCODE_MASK | COPIED_FLAGS)) | rcode, 0, 0, 0, 0)


def truncated_response(query: Query, flags: int, udp_payload: int) -> bytes:
    """An answer too large for the client's UDP limit: ``flags`` with TC, the question, and OPT if asked."""
    edns = query.edns
    out = header(query.id, flags | Flag.TC, 1, 0, 0, 1 if edns else 0) + query.question
    if edns is not None:
        out += opt_record(udp_payload, do=edns.do)
    return out
