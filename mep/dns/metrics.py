"""Prometheus series of the user-space DNS responder, for the Mp1 /metrics registry.

Labels are bounded: outcomes, failures and transports are fixed enums; rule
series exist for the DNS rules in force (at most ``dataplane.capacity.dns_names``).

=====================================  =======  ==============================================
metric                                 type     labels
=====================================  =======  ==============================================
mep_dns_queries_total                  counter  transport (udp, tcp)
mep_dns_responses_total                counter  outcome (stats.Outcome)
mep_dns_upstream_failures_total        counter  cause (stats.UpstreamFailure)
mep_dns_truncated_total                counter  (none): UDP answers sent with TC
mep_dns_rule_answers_total             counter  rule_id, app_instance_id: answers holding the rule's address
mep_dns_cache_entries                  gauge    (none)
mep_dns_inflight                       gauge    (none): forwarded queries waiting for the upstream
=====================================  =======  ==============================================
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .server import DnsServer
from .stats import Outcome, UpstreamFailure

__all__ = ["DnsCollector"]


class DnsCollector(Collector):
    """Reads ``server``'s counters at every scrape."""

    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        """The series in the module docstring."""
        responder = self._server.responder
        stats = responder.stats
        queries = CounterMetricFamily("mep_dns_queries", "DNS queries received by the user-space responder.",
                                      labels=["transport"])
        for transport in ("udp", "tcp"):
            queries.add_metric([transport], stats.queries[transport])
        yield queries
        outcomes = CounterMetricFamily("mep_dns_responses", "DNS queries by how they were answered.",
                                       labels=["outcome"])
        for outcome in Outcome:
            outcomes.add_metric([outcome.value], stats.outcomes[outcome])
        yield outcomes
        failures = CounterMetricFamily("mep_dns_upstream_failures", "Forwarded queries answered SERVFAIL, by cause.",
                                       labels=["cause"])
        for failure in UpstreamFailure:
            failures.add_metric([failure.value], stats.upstream_failures[failure])
        yield failures
        yield CounterMetricFamily("mep_dns_truncated", "UDP answers cut to the question with TC set.",
                                  value=stats.truncated)
        rules = CounterMetricFamily("mep_dns_rule_answers", "Answers holding each DNS rule's address (user space).",
                                    labels=["rule_id", "app_instance_id"])
        for rule in responder.table.rules:
            rules.add_metric([str(rule.rule_id), rule.app_instance_id], stats.rule_answers[rule.rule_id])
        yield rules
        yield GaugeMetricFamily("mep_dns_cache_entries", "Upstream answers in the cache.", value=len(responder.cache))
        yield GaugeMetricFamily("mep_dns_inflight", "Forwarded queries waiting for the upstream.",
                                value=self._server.inflight)
