"""The DNS responder without its sockets: query bytes in, answer bytes out.

``respond(msg)`` decides every query (docs/dns.md has the table):

==========================================  ===========================================
query                                       answer
==========================================  ===========================================
shorter than a header, or a response (QR)   none (dropped)
opcode other than QUERY                     NOTIMP, header only
QDCOUNT != 1, anything malformed            FORMERR, header only
EDNS version other than 0                   BADVERS (RFC 6891 section 6.1.3)
class IN, a DNS rule's name                 the rule's records, or NODATA (table.py)
other, upstream configured                  from the cache, or forwarded (``Query``)
other, no upstream                          REFUSED
==========================================  ===========================================

Answers carry the question exactly as asked and, when the query had EDNS,
the responder's OPT record (``dns.udp_payload_bytes``, DO echoed, no
options). Over UDP an answer longer than the client takes (512 bytes without
EDNS, else the smaller of its payload size and ours) is cut to its header
and question with TC set, and the client retries over TCP.

For a query the XDP responder answers (twin.py), ``respond`` produces exactly
the XDP answer's bytes: same flags, same question bytes, the same answer
record from the same table.

Forwarding: the query goes upstream with a fresh random ID and, when it is
clean (nothing but the question and an OPT record), the responder's own OPT
in place of the client's (the client's EDNS options, such as cookies or
client subnet, are not passed on, so cached answers fit every client). The
upstream's answer is relayed with the client's ID; clean queries' answers
are cached (cache.py).
"""
from __future__ import annotations

from ..config import DnsConfig
from ..dataplane.ruleset import CompiledDnsRule
from .cache import ResponseCache
from .stats import DnsStats, Outcome, UpstreamFailure
from .table import AnswerTable
from .wire import (
    ANSWER_FLAGS,
    CLASSIC_UDP_BYTES,
    COPIED_FLAGS,
    MAX_MESSAGE_BYTES,
    Flag,
    Query,
    Rcode,
    error_response,
    header,
    opt_record,
    parse_query,
    truncated_response,
)

__all__ = ["Responder"]

_ERROR_FLAGS = Flag.QR | Flag.RA
_OUTCOME = {Rcode.FORMERR: Outcome.FORMERR, Rcode.NOTIMP: Outcome.NOTIMP}


class Responder:
    """Answers queries from the DNS rules in force and the cache; says which to forward."""

    def __init__(self, config: DnsConfig) -> None:
        self.config = config
        self.stats = DnsStats()
        self.table = AnswerTable()
        self.cache = ResponseCache(config.cache_entries, config.cache_max_ttl_s)

    def update(self, rules: tuple[CompiledDnsRule, ...]) -> None:
        """Answer from ``rules`` from the next query on (rebuilt only when they changed)."""
        if rules != self.table.rules:
            self.table = AnswerTable(rules)

    def udp_limit(self, query: Query) -> int:
        """The largest UDP answer this client takes."""
        if query.edns is None:
            return CLASSIC_UDP_BYTES
        return min(query.edns.udp_payload, self.config.udp_payload_bytes)

    def respond(self, msg: bytes, *, tcp: bool) -> bytes | Query | None:
        """The answer to ``msg``; a Query to forward (not cached); None to drop it."""
        self.stats.queries["tcp" if tcp else "udp"] += 1
        parsed = parse_query(msg)
        if parsed is None:
            self.stats.outcomes[Outcome.DROPPED] += 1
            return None
        if isinstance(parsed, Rcode):
            self.stats.outcomes[_OUTCOME[parsed]] += 1
            return error_response(msg, parsed)
        query = parsed
        if query.edns is not None and query.edns.version != 0:
            self.stats.outcomes[Outcome.BADVERS] += 1
            flags = _ERROR_FLAGS | (query.flags & COPIED_FLAGS)
            return (header(query.id, flags, 1, 0, 0, 1) + query.question
                    + opt_record(self.config.udp_payload_bytes, do=query.edns.do, ext_rcode=Rcode.BADVERS >> 4))
        answer = self.table.lookup(query.qname, query.qtype, query.qclass)
        if answer is not None:
            self.stats.outcomes[Outcome.ANSWER if answer.count else Outcome.NODATA] += 1
            rule_answers = self.stats.rule_answers
            for rule_id in answer.rule_ids:  # a loop: Counter.update costs a few microseconds more
                rule_answers[rule_id] += 1
            flags = ANSWER_FLAGS | (query.flags & COPIED_FLAGS)
            return self._answer(query, flags, answer.count, answer.records, tcp)
        if self.config.upstream is None:
            self.stats.outcomes[Outcome.REFUSED] += 1
            return self._error(query, Rcode.REFUSED, tcp)
        if query.clean:
            cached = self.cache.get(query)
            if cached is not None:
                self.stats.outcomes[Outcome.CACHE] += 1
                return self._fit(query, cached, tcp)
        return query

    def upstream_message(self, query: Query, msg: bytes, upstream_id: int) -> bytes:
        """What goes upstream for ``query`` (``msg`` as received): see the module docstring."""
        body = msg[2:]
        if query.clean and query.edns is not None:
            body = msg[2:query.edns.offset] + opt_record(self.udp_limit(query), do=query.edns.do)
        return upstream_id.to_bytes(2, "big") + body

    def relay(self, query: Query, result: bytes | UpstreamFailure, *, tcp: bool) -> bytes:
        """The answer to a forwarded query, from the upstream's answer or its failure."""
        if isinstance(result, UpstreamFailure):
            self.stats.upstream_failures[result] += 1
            self.stats.outcomes[Outcome.SERVFAIL] += 1
            return self._error(query, Rcode.SERVFAIL, tcp)
        self.stats.outcomes[Outcome.FORWARDED] += 1
        if query.clean:
            self.cache.put(query, result)
        return self._fit(query, query.id.to_bytes(2, "big") + result[2:], tcp)

    def _error(self, query: Query, rcode: Rcode, tcp: bool) -> bytes:
        return self._answer(query, _ERROR_FLAGS | (query.flags & COPIED_FLAGS) | rcode, 0, b"", tcp)

    def _answer(self, query: Query, flags: int, ancount: int, records: bytes, tcp: bool) -> bytes:
        edns = query.edns
        out = header(query.id, flags, 1, ancount, 0, 1 if edns else 0) + query.question + records
        if edns is not None:
            out += opt_record(self.config.udp_payload_bytes, do=edns.do)
        return self._fit(query, out, tcp)

    def _fit(self, query: Query, answer: bytes, tcp: bool) -> bytes:
        """``answer``, or its truncated form when it is too long for the client: its UDP limit, or
        over TCP the 16-bit length prefix (an RRset of thousands of rules)."""
        if len(answer) <= (MAX_MESSAGE_BYTES if tcp else self.udp_limit(query)):
            return answer
        self.stats.truncated += 1
        flags = int.from_bytes(answer[2:4], "big")
        return truncated_response(query, flags, self.config.udp_payload_bytes)
