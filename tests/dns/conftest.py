"""Fixtures of the DNS tests: real servers on loopback, a real unbound upstream.

``dns_server``: starts ``DnsServer`` objects in the test's event loop on
127.0.0.1 (a free port each) and stops them at the end. ``unbound``
(session): unbound on 127.0.0.1 with ``UPSTREAM_DATA`` as local-data.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from mep.config import DnsConfig
from mep.dataplane.ruleset import CompiledDnsRule
from mep.dns import DnsServer
from tests.fixtures.etcd import free_port
from tests.dns.dns_support import Unbound, ruleset

# What the upstream holds. video.example.com is also a DNS rule's name in the
# tests: once the rule goes, the upstream's address shows.
UPSTREAM_DATA = [
    "up.example. 300 IN A 198.18.100.10",
    "up.example. 300 IN AAAA 2001:db8:100::10",
    "short.example. 1 IN A 198.18.100.11",
    "video.example.com. 300 IN A 198.18.100.99",
    *[f'big.example. 300 IN TXT "{str(i) * 250}"' for i in range(6)],
]

StartDns = Callable[..., Awaitable[DnsServer]]


@pytest_asyncio.fixture
async def dns_server() -> AsyncIterator[StartDns]:
    """``await dns_server(*rules, **dns_config)``: a started DnsServer on 127.0.0.1:0 answering ``rules``."""
    servers: list[DnsServer] = []

    async def start(*rules: CompiledDnsRule, **config: Any) -> DnsServer:
        server = DnsServer(DnsConfig(enabled=True, listen="127.0.0.1:0", **config))
        await server.start()
        servers.append(server)
        server.update(ruleset(*rules))
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture(scope="session")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    """unbound on 127.0.0.1 serving UPSTREAM_DATA (NXDOMAIN with an SOA for everything else)."""
    server = Unbound(tmp_path_factory.mktemp("unbound"), "127.0.0.1", free_port(), UPSTREAM_DATA).start()
    try:
        yield server
    finally:
        server.stop()
