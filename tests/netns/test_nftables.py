"""The nftables emission loads into nft, and refuses what nftables cannot express."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from pyroute2 import netns

from bench.rulegen import generate_rules
from mep.config import Capacity
from mep.dataplane.nftables import NftUnsupported, emit
from tests.dataplane.cases import GTP_TUNNEL, TO_APP1_MAC
from tests.rulesets import rule, ruleset

pytestmark = pytest.mark.needs_root


def test_a_generated_rule_set_loads_into_nft() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces); CI runs as root")
    rs = ruleset(generate_rules(300, seed=7) + [rule("flow", "PASSTHROUGH", flow=True,
                                                      filters=[{"dstAddress": ["2001:db8::/64"], "tC": 184}])],
                 capacity=Capacity(rules=400, filters=1024))
    text = emit(rs)
    name = f"mep-nft-{uuid.uuid4().hex[:6]}"
    netns.create(name)
    try:
        load = subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=text, text=True,
                              capture_output=True)
        assert load.returncode == 0, load.stderr
        listed = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "chain", "inet", "mep", "steer"],
                                text=True, capture_output=True).stdout
    finally:
        netns.remove(name)
    filters = sum(len(r.filters) for r in rs.rules)
    assert listed.count("comment") >= filters  # one line per filter, FLOW rules twice
    assert "@nh,4,8 184" in listed or "ip6 dscp" in listed or "@nh,4,8" in listed


@pytest.mark.parametrize("body,field", [
    (rule("t", "DROP", filters=[{"srcTunnelAddress": ["198.18.200.1"]}]), "trafficFilter"),
    (rule("v", "DROP", filters=[{"token": ["7"]}]), "token"),
    (rule("f", "FORWARD_DECAPSULATED", dst=TO_APP1_MAC), "action"),
    (rule("e", "DUPLICATE_ENCAPSULATED", dst=GTP_TUNNEL), "action"),
], ids=["tunnel", "vlan", "forward", "duplicate"])
def test_what_nft_cannot_express_is_refused(body: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(NftUnsupported) as info:
        emit(ruleset([body]))
    assert info.value.field == field
