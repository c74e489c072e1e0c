"""Two apps claiming one name is a conflict reported when the rule is configured (DESIGN.md section 5).

The store refuses it (Conflict, 409 / ALREADY_EXISTS, field ``domainName``,
naming the app and DNS rule that hold the name), whichever way the rule
arrives: the admin API here, Mp1 in tests/mp1/test_mp1_app_support.py
(``test_dns_name_claimed_by_another_app_is_a_conflict``), Mm5 in
tests/mm5/test_mm5_rpc.py (the task fails with the store's detail and is
reverted). The compiler refuses a snapshot that holds one anyway
(tests/unit/test_compiler.py). So the responder never sees two owners.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mep.admin import AdminClient
from mep.config import Config
from mep.daemon import Daemon
from mep.dataplane.reference import ReferenceEngine
from mep.errors import Conflict, MepError
from mep.models import DnsRule
from mep.state import AppInstance, LifecycleEvent
from tests.packets import PORTS

pytestmark = pytest.mark.asyncio


def rule(rule_id: str, name: str, state: str = "ACTIVE") -> DnsRule:
    return DnsRule.model_validate({"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4",
                                   "ipAddress": "198.19.1.10", "ttl": 30, "state": state})


def wire(rule_id: str, name: str, state: str = "ACTIVE") -> dict[str, object]:
    return rule(rule_id, name, state).model_dump(mode="json", exclude_none=True)


async def test_a_second_app_claiming_a_name_is_refused_at_configuration(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "instance": "dnsconflict",
        "store": {"sqlite": {"path": str(tmp_path / "state" / "mep.db")}},
        "dataplane": {"engine": "reference", "apply_batch_ms": 1, "ports": PORTS},
        "mp1": {"enabled": False}, "mm5": {"enabled": False},
        "dns": {"enabled": True, "listen": "127.0.0.1:0"},
        "admin": {"socket": str(tmp_path / "admin.sock")},
    }
    config = Config(**data)
    daemon = Daemon(config, engine=ReferenceEngine())
    try:
        await daemon.start()
        store = daemon.store
        for app in ("owner", "other"):
            await store.create_app(AppInstance(appInstanceId=app, confirm_ready_required=False))
            await store.transition_app(app, LifecycleEvent.INSTANTIATE)
        await store.put_dns_rule("owner", rule("o1", "video.example.com"))
        # Case and a trailing dot do not make another name.
        for name in ("VIDEO.example.com", "video.example.com."):
            with pytest.raises(Conflict) as info:
                await store.put_dns_rule("other", rule("x1", name))
            assert info.value.field == "domainName"
            assert "'owner'" in info.value.detail and "'o1'" in info.value.detail
        # An INACTIVE claim is stored; activating it is the conflict.
        await store.put_dns_rule("other", rule("x1", "video.example.com", "INACTIVE"))
        with pytest.raises(Conflict):
            await store.put_dns_rule("other", rule("x1", "video.example.com"))
        # Over the admin API (POST /apps): 409 with the same detail; nothing of the app is stored.
        admin = AdminClient(config.admin_socket)
        with pytest.raises(MepError, match="already claimed by app instance 'owner'"):
            await asyncio.to_thread(admin.post, "/apps", {"app_instance_id": "third", "dns_rules": [
                wire("t1", "Video.Example.Com")]})
        assert sorted(a.appInstanceId for a in store.list_apps()) == ["other", "owner"]
        await daemon.settled(store.revision)
        rs = daemon.engine.ruleset
        assert rs is not None and [(d.app_instance_id, d.dns_rule_id) for d in rs.dns_rules] == [("owner", "o1")]
    finally:
        await daemon.close()
