"""DNS rules (MEC 011 DnsRule, DESIGN.md section 5): the user-space responder and the XDP responder's table.

::

    CompiledRuleSet.dns_rules ──> table.AnswerTable ──> responder.Responder <── server.DnsServer (UDP, TCP)
                                        │                     │  forward, cache          │
                                        │                     └── upstream.Upstream ─────┘
                                        └── xdp_entries() ──> mep/dataplane/maps/dns.py (the XDP map)
                                                              twin.XdpTwin: what the XDP path answers

    wire.py      bounded DNS wire reading and the responses built here
    table.py     names -> answers; the XDP map entries; DNS_NAME_BYTES
    responder.py every decision: rule answer, NODATA, cache, forward, FORMERR/NOTIMP/REFUSED/SERVFAIL
    cache.py     TTL-honouring cache of upstream answers
    upstream.py  one exchange with the upstream over UDP or TCP
    sockets.py   sockets created in dataplane.netns
    server.py    DnsServer: the daemon service
    twin.py      the XDP responder in Python (docs/dns-xdp.md), the oracle of the differential tests
    stats.py     counters; metrics.py: their Prometheus collector

docs/dns.md describes the behaviour; docs/dns-xdp.md the XDP map and answer format.
"""
from __future__ import annotations

from .metrics import DnsCollector
from .responder import Responder
from .server import DnsServer
from .table import DNS_NAME_BYTES, AnswerTable, XdpEntry
from .twin import XdpTwin

__all__ = ["DnsServer", "DnsCollector", "Responder", "AnswerTable", "XdpEntry", "XdpTwin", "DNS_NAME_BYTES"]
