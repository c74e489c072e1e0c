"""The DNS responder hosted by the daemon: store -> compiler -> rule set -> responder, in step with the engine.

A real Daemon (SQLite in tmp_path, reference engine) with ``dns.enabled`` on
127.0.0.1:0 and unbound as its upstream. DNS rules reach the responder only
for READY apps and ACTIVE rules; a rule set INACTIVE is forwarded from the
next query on; the admin API's /stats carries the responder's counters.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from dnslib import DNSRecord
from pydantic import ValidationError

from mep.admin import AdminClient
from mep.config import Config
from mep.daemon import Daemon
from mep.dataplane.reference import ReferenceEngine
from mep.dns import DnsServer
from mep.errors import MepError
from mep.models import DnsRule
from mep.state import AppInstance, LifecycleEvent
from tests.dns.dns_support import Unbound, query, udp_exchange
from tests.packets import PORTS

pytestmark = pytest.mark.asyncio
APP = "app-1"


def config(tmp_path: Path, **dns: Any) -> Config:
    data: dict[str, Any] = {
        "instance": "dnstest",
        "log": {"level": "info", "format": "text"},
        "store": {"sqlite": {"path": str(tmp_path / "state" / "mep.db")}},
        "dataplane": {"engine": "reference", "apply_batch_ms": 1, "ports": PORTS},
        "mp1": {"enabled": False},
        "mm5": {"enabled": False},
        "dns": {"enabled": True, "listen": "127.0.0.1:0", **dns},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }
    return Config(**data)


def dns_body(rule_id: str, name: str, ip: str, state: str = "ACTIVE") -> DnsRule:
    return DnsRule.model_validate({"dnsRuleId": rule_id, "domainName": name, "ipAddress": ip, "ttl": 30,
                                   "ipAddressType": "IP_V6" if ":" in ip else "IP_V4", "state": state})


@pytest_asyncio.fixture
async def daemon(tmp_path: Path, unbound: Unbound) -> AsyncIterator[Daemon]:
    running = Daemon(config(tmp_path, upstream=f"{unbound.host}:{unbound.port}"), engine=ReferenceEngine())
    try:
        await running.start()
        yield running
    finally:
        await running.close()


def dns_of(daemon: Daemon) -> DnsServer:
    server = next(s for s in daemon.services if isinstance(s, DnsServer))
    assert server.address is not None
    return server


async def ask(daemon: Daemon, name: str, qtype: str = "A") -> DNSRecord:
    address = dns_of(daemon).address
    assert address is not None
    return DNSRecord.parse(await asyncio.to_thread(udp_exchange, address, query(name, qtype)))


async def settle(daemon: Daemon) -> None:
    await daemon.settled(daemon.store.revision)


async def test_rules_of_ready_apps_are_answered_and_toggled_from_the_next_query(daemon: Daemon) -> None:
    store = daemon.store
    await store.create_app(AppInstance(appInstanceId=APP, confirm_ready_required=True))
    await store.transition_app(APP, LifecycleEvent.INSTANTIATE)
    await store.put_dns_rule(APP, dns_body("d1", "Video.Example.COM.", "198.19.1.10"))
    await settle(daemon)
    # Not READY yet: the name is the upstream's.
    assert [str(rr.rdata) for rr in (await ask(daemon, "video.example.com")).rr] == ["198.18.100.99"]
    await store.transition_app(APP, LifecycleEvent.CONFIRM_READY)
    await settle(daemon)
    answer = await ask(daemon, "video.example.com")
    assert [str(rr.rdata) for rr in answer.rr] == ["198.19.1.10"] and answer.header.aa == 1
    assert (await ask(daemon, "video.example.com", "AAAA")).rr == []  # NODATA
    await store.put_dns_rule(APP, dns_body("d1", "Video.Example.COM.", "198.19.1.10", state="INACTIVE"))
    await settle(daemon)  # the rule set without it is applied: the next query is forwarded
    assert [str(rr.rdata) for rr in (await ask(daemon, "video.example.com")).rr] == ["198.18.100.99"]
    await store.put_dns_rule(APP, dns_body("d1", "Video.Example.COM.", "198.19.1.10"))
    await settle(daemon)
    assert [str(rr.rdata) for rr in (await ask(daemon, "video.example.com")).rr] == ["198.19.1.10"]


async def test_admin_stats_carry_the_responder_counters(daemon: Daemon) -> None:
    store = daemon.store
    await store.create_app(AppInstance(appInstanceId=APP, confirm_ready_required=False))
    await store.transition_app(APP, LifecycleEvent.INSTANTIATE)
    stored = await store.put_dns_rule(APP, dns_body("d1", "cache.example", "198.19.1.11"))
    await settle(daemon)
    await ask(daemon, "cache.example")
    await ask(daemon, "cache.example")
    await ask(daemon, "up.example")
    stats = await asyncio.to_thread(AdminClient(daemon.config.admin_socket).get, "/stats")
    dns = stats["dns"]
    assert dns["rules"][str(stored.rule_id)] == {"app": APP, "dnsRuleId": "d1", "name": "cache.example",
                                                 "type": "A", "answers": 2}
    assert dns["outcomes"]["answer"] == 2 and dns["outcomes"]["forwarded"] == 1 and dns["queries"]["udp"] == 3


async def test_a_listener_added_later_gets_the_rule_set_in_force(daemon: Daemon) -> None:
    seen: list[int] = []
    daemon.add_ruleset_listener(lambda rs: seen.append(rs.generation))
    assert seen == [daemon.generation]
    await daemon.store.create_app(AppInstance(appInstanceId=APP, confirm_ready_required=False))
    await daemon.store.transition_app(APP, LifecycleEvent.INSTANTIATE)
    await settle(daemon)
    assert seen[-1] == daemon.generation and len(seen) >= 2


async def test_dns_is_built_only_when_enabled(tmp_path: Path) -> None:
    off = Daemon(config(tmp_path, enabled=False), engine=ReferenceEngine())
    try:
        await off.start()
        assert not any(isinstance(s, DnsServer) for s in off.services)
    finally:
        await off.close()


async def test_a_listen_address_in_use_stops_the_start(tmp_path: Path, unbound: Unbound) -> None:
    busy = Daemon(config(tmp_path, listen=f"{unbound.host}:{unbound.port}"), engine=ReferenceEngine())
    try:
        with pytest.raises(MepError, match="dns.listen: cannot listen"):
            await busy.start()
    finally:
        await busy.close()


@pytest.mark.parametrize("key,value,message", [
    ("listen", "localhost:53", "needs an IP address, not a name"),
    ("listen", "2001:db8::1:53", "write an IPv6 address in brackets"),
    ("upstream", "198.18.100.53:0", "a port other than 0"),
    ("udp_payload_bytes", 256, "greater than or equal to 512"),
])
async def test_dns_configuration_is_checked(tmp_path: Path, key: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(tmp_path, **{key: value})
