"""Prometheus metrics served at GET /metrics on the Mp1 listener (``mp1.metrics``).

Every series has bounded labels: verdict and reason names come from
reasons.h (a few dozen), rule series exist for the rules in force (at most
``dataplane.capacity.rules``), routes are the API's path templates, never
raw paths.

==========================================  =======  =====================================
metric                                      type     labels
==========================================  =======  =====================================
mep_dataplane_verdict_packets_total         counter  verdict
mep_dataplane_verdict_bytes_total           counter  verdict
mep_dataplane_reason_packets_total          counter  reason, verdict
mep_dataplane_reason_bytes_total            counter  reason, verdict
mep_dataplane_rule_packets_total            counter  rule_id, app_instance_id
mep_dataplane_rule_bytes_total              counter  rule_id, app_instance_id
mep_dataplane_dns_rule_answers_total        counter  rule_id, app_instance_id: XDP DNS answers
mep_dataplane_ruleset_generation            gauge    (none): the rule set in force, 0 before the first
mep_dataplane_rules                         gauge    (none): rules in force
mep_mp1_request_duration_seconds            histo    method, route, status
mep_mp1_notifications_total                 counter  type, outcome (delivered, failed, dropped, abandoned)
mep_mp1_notifications_pending               gauge    (none)
==========================================  =======  =====================================

With the DNS responder enabled the mep_dns_* series of mep/dns/metrics.py
(the user-space responder) are served here too.

Data-plane counters are read from ``engine.counters()`` when scraped (the
engine's own totals since it started); bytes are input frame lengths. A
rule's series disappears with the rule.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..dataplane.engine import Engine
from ..dataplane.reasons import REASON_VERDICT, Reason, Verdict
from .notify import Notifier

__all__ = ["Mp1Metrics", "LATENCY_BUCKETS_S"]

# Request latency buckets, seconds: fine below 10 ms, where the targets are.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others count as OTHER


class _DataplaneCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        counters = self._engine.counters()
        ruleset = self._engine.ruleset
        packets = CounterMetricFamily("mep_dataplane_verdict_packets", "Packets per verdict.", labels=["verdict"])
        octets = CounterMetricFamily("mep_dataplane_verdict_bytes", "Input bytes per verdict.", labels=["verdict"])
        for verdict in Verdict:
            pb = counters.verdicts.get(verdict)
            packets.add_metric([verdict.name], pb.packets if pb else 0)
            octets.add_metric([verdict.name], pb.bytes if pb else 0)
        yield packets
        yield octets
        packets = CounterMetricFamily("mep_dataplane_reason_packets", "Packets per reason.", labels=["reason", "verdict"])
        octets = CounterMetricFamily("mep_dataplane_reason_bytes", "Input bytes per reason.", labels=["reason", "verdict"])
        for reason in Reason:
            pb = counters.reasons.get(reason)
            labels = [reason.name, REASON_VERDICT[reason].name]
            packets.add_metric(labels, pb.packets if pb else 0)
            octets.add_metric(labels, pb.bytes if pb else 0)
        yield packets
        yield octets
        packets = CounterMetricFamily("mep_dataplane_rule_packets", "Packets decided by each traffic rule in force.",
                                      labels=["rule_id", "app_instance_id"])
        octets = CounterMetricFamily("mep_dataplane_rule_bytes", "Input bytes decided by each traffic rule in force.",
                                     labels=["rule_id", "app_instance_id"])
        for rule in ruleset.rules if ruleset is not None else ():
            pb = counters.rules.get(rule.rule_id)
            labels = [str(rule.rule_id), rule.app_instance_id]
            packets.add_metric(labels, pb.packets if pb else 0)
            octets.add_metric(labels, pb.bytes if pb else 0)
        yield packets
        yield octets
        answers = CounterMetricFamily("mep_dataplane_dns_rule_answers",
                                      "DNS queries each DNS rule in force answered in the data plane (XDP responder).",
                                      labels=["rule_id", "app_instance_id"])
        for dns_rule in ruleset.dns_rules if ruleset is not None else ():
            pb = counters.rules.get(dns_rule.rule_id)
            answers.add_metric([str(dns_rule.rule_id), dns_rule.app_instance_id], pb.packets if pb else 0)
        yield answers
        yield GaugeMetricFamily("mep_dataplane_ruleset_generation", "Generation of the rule set in force (0: none).",
                                value=ruleset.generation if ruleset is not None else 0)
        yield GaugeMetricFamily("mep_dataplane_rules", "Traffic rules in force.",
                                value=len(ruleset.rules) if ruleset is not None else 0)


class _NotificationCollector(Collector):
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily("mep_mp1_notifications", "Finished notification deliveries.",
                                    labels=["type", "outcome"])
        for (kind, outcome), count in sorted(self._notifier.outcomes.items()):
            total.add_metric([kind, outcome], count)
        yield total
        yield GaugeMetricFamily("mep_mp1_notifications_pending", "Notification deliveries not finished yet.",
                                value=self._notifier.pending)


class Mp1Metrics:
    """The registry behind GET /metrics, and the middleware timing every request."""

    def __init__(self, engine: Engine, notifier: Notifier, collectors: Sequence[Collector] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Histogram(
            "mep_mp1_request_duration_seconds",
            "Mp1 request handling time, from routing to the response being ready.",
            labelnames=["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], Histogram] = {}
        self.registry.register(_DataplaneCollector(engine))
        self.registry.register(_NotificationCollector(notifier))
        for collector in collectors:
            self.registry.register(collector)

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Observe the handling time per method, route template and status (errors included)."""
        started = time.perf_counter()
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        key = (request.method if request.method in _METHODS else "OTHER", route, response.status)
        child = self._children.get(key)
        if child is None:  # labels() validates and locks: once per label set, not per request
            child = self._children[key] = self.requests.labels(key[0], route, str(response.status))
        child.observe(time.perf_counter() - started)
        return response

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics: the Prometheus text exposition format."""
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
