"""ETSI bodies and Mm5 configurations for the Mm5 and MEPM tests, on tests/packets.py's topology."""
from __future__ import annotations

import json
from typing import Any

from mep.credentials import hash_secret
from mep.mm5.rpc import pb
from tests.packets import APP1_IP, N6_MAC, SERVER, UE1, UPF_MAC

__all__ = ["forward_rule", "drop_rule", "dns_rule", "service", "required", "config", "udp_frame_hex", "SECRET_HASH"]

SECRET_HASH = hash_secret("s3cret-for-tests")


def forward_rule(rule_id: str = "to-app", *, dport: int = 8554, priority: int = 10) -> dict[str, Any]:
    """UDP to SERVER:dport goes to app1 (FORWARD_DECAPSULATED, destination rewritten to APP1_IP)."""
    return {
        "trafficRuleId": rule_id,
        "filterType": "FLOW",
        "priority": priority,
        "trafficFilter": [{"dstAddress": [f"{SERVER}/32"], "dstPort": [str(dport)], "protocol": ["UDP"]}],
        "action": "FORWARD_DECAPSULATED",
        "dstInterface": {"interfaceType": "IP", "dstIpAddress": APP1_IP},
        "state": "ACTIVE",
    }


def drop_rule(rule_id: str, dport: int, priority: int = 20) -> dict[str, Any]:
    """UDP to dport is dropped."""
    return {
        "trafficRuleId": rule_id,
        "filterType": "PACKET",
        "priority": priority,
        "trafficFilter": [{"protocol": ["UDP"], "dstPort": [str(dport)]}],
        "action": "DROP",
        "state": "ACTIVE",
    }


def dns_rule(rule_id: str = "name", name: str = "video.edge.example", ip: str = APP1_IP) -> dict[str, Any]:
    """An A record for ``name``."""
    return {"dnsRuleId": rule_id, "domainName": name, "ipAddressType": "IP_V4", "ipAddress": ip, "ttl": 30,
            "state": "ACTIVE"}


def service(name: str = "video-analytics") -> dict[str, Any]:
    """A REST service the app produces, at APP1_IP."""
    return {
        "serName": name,
        "version": "1.0",
        "state": "ACTIVE",
        "serializer": "JSON",
        "transportInfo": {
            "id": "rest", "name": "REST", "type": "REST_HTTP", "protocol": "HTTP", "version": "2.0",
            "endpoint": {"uris": [f"http://{APP1_IP}:8080/{name}/v1"]}, "security": {},
        },
    }


def required(name: str = "rnis") -> dict[str, Any]:
    """A MEC 010-2 ServiceDependency."""
    return {"serName": name, "version": "2.1.1", "requestedPermissions": ["GET_RADIO_INFO"]}


def config(
    *traffic_rules: dict[str, Any],
    dns: tuple[dict[str, Any], ...] = (),
    services: tuple[dict[str, Any], ...] = (),
    requires: tuple[dict[str, Any], ...] = (),
    client_id: str | None = None,
) -> pb.AppConfiguration:
    """An AppConfiguration message from plain bodies."""
    msg = pb.AppConfiguration(
        traffic_rules=[json.dumps(r) for r in traffic_rules],
        dns_rules=[json.dumps(r) for r in dns],
        services_produced=[json.dumps(s) for s in services],
        services_required=[json.dumps(s) for s in requires],
    )
    if client_id is not None:
        msg.credentials.client_id = client_id
        msg.credentials.client_secret_hash = SECRET_HASH
    return msg


def udp_frame_hex(dport: int = 8554) -> str:
    """A UE's UDP datagram to SERVER:dport as it arrives on N6, hex."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether(src=UPF_MAC, dst=N6_MAC) / IP(src=UE1, dst=SERVER) / UDP(sport=40000, dport=dport) / b"x").hex()
