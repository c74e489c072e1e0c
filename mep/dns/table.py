"""The answers of the DNS rules in force: the user-space responder's table and the XDP responder's entries.

Built from ``CompiledRuleSet.dns_rules`` (ACTIVE rules of READY apps, names
lower case without the trailing dot). A name belongs to the app whose rules
name it (the store and the compiler refuse a second app), and for that name:

- A or AAAA: one record per distinct address of the rules of that type
  (several rules of one app make an RRset, with the smallest of their TTLs:
  RFC 2181 section 5.2); no rule of that type: NODATA;
- ANY: every A and AAAA record of the name;
- any other type: NODATA. The name is answered here, as unbound answers a
  local-data name (docs/dns.md says why this is not forwarded).

Queries of other classes than IN, and other names, are not in the table.

Every answer record is written the same way, in the user-space answer and in
the XDP map: owner a compression pointer to the question name (0xC00C),
type, class IN, the rule's TTL, the address (docs/dns-xdp.md). dnslib packs
it; a record depends only on (type, address, TTL), so records are memoised
and a new rule set repacks only what changed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

from dnslib import AAAA, RR, A, DNSBuffer, DNSLabel

from ..dataplane.ruleset import CompiledDnsRule
from .wire import CLASS_IN, HEADER_BYTES, TYPE_A, TYPE_AAAA, TYPE_ANY

__all__ = ["DNS_NAME_BYTES", "RuleAnswer", "NODATA", "XdpEntry", "AnswerTable", "wire_name", "answer_record"]

# The XDP map key holds the question name in at most this many bytes (wire
# form, root label included): names up to 126 characters. Longer names are
# answered by user space. maps/dns.py passes it to the C as MEP_DNS_NAME_BYTES.
DNS_NAME_BYTES = 128

_OWNER = DNSLabel("q")  # any label: the buffer below maps it to the question name's offset


@dataclass(frozen=True, slots=True)
class RuleAnswer:
    """What the rules say for one (name, type): ``count`` records, or none (NODATA)."""

    records: bytes  # the answer section, each record's owner a pointer to offset 12
    count: int
    rule_ids: tuple[int, ...]  # the rules whose addresses are in it (their hit counters)


NODATA = RuleAnswer(b"", 0, ())


@dataclass(frozen=True, slots=True)
class XdpEntry:
    """One entry of the XDP responder's map: the answer to (name, type), or NODATA."""

    qname: bytes  # wire form, lower case, at most DNS_NAME_BYTES
    qtype: int  # TYPE_A or TYPE_AAAA
    rule_id: int  # 0: NODATA
    record: bytes  # the one answer record (16 bytes for A, 28 for AAAA); b"" for NODATA


def wire_name(name: str) -> bytes:
    """``video.example.com`` -> ``\\x05video\\x07example\\x03com\\x00`` (the name is valid ASCII)."""
    out = bytearray()
    for label in name.split(".") if name else ():
        raw = label.encode("ascii")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


@functools.lru_cache(maxsize=65_536)
def answer_record(qtype: int, address: bytes, ttl: int) -> bytes:
    """One answer record: owner 0xC00C, ``qtype``, class IN, ``ttl``, ``address`` (4 or 16 bytes)."""
    buffer = DNSBuffer()
    buffer.names[_OWNER.label] = HEADER_BYTES
    rdata = A(tuple(address)) if qtype == TYPE_A else AAAA(tuple(address))
    RR(rname=_OWNER, rtype=qtype, rclass=CLASS_IN, ttl=ttl, rdata=rdata).pack(buffer)
    return bytes(buffer.data)


def _answer(rules: Sequence[CompiledDnsRule]) -> RuleAnswer:
    ttl = min(r.ttl for r in rules)
    addresses = list(dict.fromkeys(r.address for r in rules))
    records = b"".join(answer_record(rules[0].qtype, a, ttl) for a in addresses)
    return RuleAnswer(records, len(addresses), tuple(r.rule_id for r in rules))


class AnswerTable:
    """Name -> type -> answer, for the DNS rules in force. Immutable once built."""

    def __init__(self, rules: Iterable[CompiledDnsRule] = ()) -> None:
        self.rules = tuple(rules)
        by_name: dict[bytes, dict[int, list[CompiledDnsRule]]] = {}
        for rule in self.rules:
            by_name.setdefault(wire_name(rule.name), {}).setdefault(rule.qtype, []).append(rule)
        self._names: dict[bytes, dict[int, RuleAnswer]] = {}
        for qname, types in by_name.items():
            answers = {qtype: _answer(rs) for qtype, rs in types.items()}
            a, aaaa = answers.get(TYPE_A, NODATA), answers.get(TYPE_AAAA, NODATA)
            answers[TYPE_ANY] = RuleAnswer(a.records + aaaa.records, a.count + aaaa.count, a.rule_ids + aaaa.rule_ids)
            self._names[qname] = answers

    def __len__(self) -> int:
        """Names in the table."""
        return len(self._names)

    def lookup(self, qname: bytes, qtype: int, qclass: int) -> RuleAnswer | None:
        """The answer for a lower-case wire name, or None when no rule names it (the query is forwarded)."""
        answers = self._names.get(qname)
        if answers is None or qclass != CLASS_IN:
            return None
        return answers.get(qtype, NODATA)

    def xdp_entries(self, name_bytes: int = DNS_NAME_BYTES) -> list[XdpEntry]:
        """The entries the XDP responder answers from: A and AAAA of every name of at most
        ``name_bytes``, where the answer is one record or NODATA. An RRset of several
        addresses stays with user space (the XDP answer holds one record)."""
        entries = []
        for qname, answers in self._names.items():
            if len(qname) > name_bytes:
                continue
            for qtype in (TYPE_A, TYPE_AAAA):
                answer = answers.get(qtype, NODATA)
                if answer.count == 0:
                    entries.append(XdpEntry(qname, qtype, 0, b""))
                elif answer.count == 1 and len(answer.rule_ids) == 1:
                    entries.append(XdpEntry(qname, qtype, answer.rule_ids[0], answer.records))
        return entries
