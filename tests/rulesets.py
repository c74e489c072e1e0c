"""Build CompiledRuleSets from plain rule dicts, through the real compiler."""
from __future__ import annotations

from typing import Any, Iterable

from mep.config import DataplaneConfig
from mep.dataplane.compiler import StaticResolver, compile_ruleset
from mep.dataplane.ruleset import CompiledRuleSet
from mep.models import TrafficRule
from mep.state.lifecycle import AppState
from mep.state.records import AppInstance, Snapshot, StoredTrafficRule

from .packets import PORTS


def rule(rule_id: str, action: str = "DROP", priority: int = 10, filters: Iterable[dict[str, Any]] = ({},),
         flow: bool = False, dst: Any = None, state: str = "ACTIVE") -> dict[str, Any]:
    body: dict[str, Any] = {
        "trafficRuleId": rule_id,
        "filterType": "FLOW" if flow else "PACKET",
        "priority": priority,
        "trafficFilter": list(filters),
        "action": action,
        "state": state,
    }
    if dst is not None:
        body["dstInterface"] = dst
    return body


def dataplane_config(default_action: str = "PASSTHROUGH", **kw: Any) -> DataplaneConfig:
    return DataplaneConfig(ports=PORTS, default_action=default_action, **kw)


def ruleset(rules: Iterable[dict[str, Any]], *, default_action: str = "PASSTHROUGH", generation: int = 1,
            app: str = "app1", first_id: int = 1, **cfg: Any) -> CompiledRuleSet:
    """Rules become stored rules of one READY app with ids first_id, first_id+1, ... in list order."""
    stored = tuple(
        StoredTrafficRule(app_instance_id=app, rule_id=first_id + i, rule=TrafficRule.model_validate(r))
        for i, r in enumerate(rules)
    )
    snap = Snapshot(revision=1, apps={app: AppInstance(appInstanceId=app, state=AppState.READY)},
                    traffic_rules=stored, dns_rules=())
    config = dataplane_config(default_action, **cfg)
    return compile_ruleset(snap, config=config, resolver=StaticResolver.from_config(config), generation=generation)
