"""What the user-space responder counts: queries, outcomes, upstream failures, per-rule answers.

Plain integers in one event loop: no locks. Counted since the responder
started. The XDP responder's own counters live in its maps
(mep/dataplane/maps/dns.py); the two are reported side by side, never mixed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Sequence

from ..dataplane.ruleset import CompiledDnsRule

__all__ = ["Outcome", "UpstreamFailure", "DnsStats"]


class Outcome(StrEnum):
    """How a query was answered (each query has exactly one outcome)."""

    ANSWER = "answer"  # records of a DNS rule
    NODATA = "nodata"  # a DNS rule's name, no record of the type asked
    CACHE = "cache"  # an upstream answer from the cache
    FORWARDED = "forwarded"  # the upstream's answer, relayed
    SERVFAIL = "servfail"  # the upstream failed (see UpstreamFailure)
    REFUSED = "refused"  # no rule names it and no upstream is configured
    FORMERR = "formerr"  # malformed
    NOTIMP = "notimp"  # an opcode other than QUERY
    BADVERS = "badvers"  # an EDNS version other than 0
    DROPPED = "dropped"  # not answered: shorter than a header, or itself a response


class UpstreamFailure(StrEnum):
    """Why a forwarded query was answered SERVFAIL."""

    TIMEOUT = "timeout"  # no acceptable answer within dns.upstream_timeout_s
    UNREACHABLE = "unreachable"  # ICMP unreachable, connection refused or reset
    OVERLOAD = "overload"  # dns.max_inflight forwarded queries were already waiting


@dataclass
class DnsStats:
    """Counters of one responder."""

    queries: Counter[str] = field(default_factory=Counter)  # by transport: udp, tcp
    outcomes: Counter[Outcome] = field(default_factory=Counter)
    upstream_failures: Counter[UpstreamFailure] = field(default_factory=Counter)
    truncated: int = 0  # UDP answers cut to the header and question (TC set)
    tcp_refused: int = 0  # connections closed at accept: dns.tcp_connections were open
    rule_answers: Counter[int] = field(default_factory=Counter)  # rule id -> answers holding its address

    def as_dict(self, rules: Sequence[CompiledDnsRule], *, cache_entries: int, inflight: int) -> dict[str, Any]:
        """Plain data for the admin API: totals, and every DNS rule in force with its answers."""
        return {
            "queries": {t: self.queries[t] for t in ("udp", "tcp")},
            "outcomes": {o.value: self.outcomes[o] for o in Outcome},
            "upstream_failures": {f.value: self.upstream_failures[f] for f in UpstreamFailure},
            "truncated": self.truncated,
            "tcp_refused": self.tcp_refused,
            "cache_entries": cache_entries,
            "inflight": inflight,
            "rules": {
                str(r.rule_id): {"app": r.app_instance_id, "dnsRuleId": r.dns_rule_id, "name": r.name,
                                 "type": "A" if r.qtype == 1 else "AAAA", "answers": self.rule_answers[r.rule_id]}
                for r in rules
            },
        }
