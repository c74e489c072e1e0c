"""Typed values parsed from the strings of MEC 011 traffic filters.

MEC 011 carries addresses, ports, protocols and VLAN tokens as strings. Each
annotated type below parses one such string into a frozen value the compiler
and the engines use directly, keeps the caller's text for serialisation (a
GET returns exactly what was PUT), and raises ``ValueError`` with a message
that pydantic places under the offending field (``trafficFilter.0.dstPort.1``).

Accepted forms (documented in docs/semantics.md):

- address: ``198.18.0.1``, ``198.18.0.0/24``, ``198.18.0.1-198.18.0.9``, and the
  IPv6 equivalents (``2001:db8::/64``, ``2001:db8::1-2001:db8::ff``). A prefix
  with host bits set is accepted and means its network (``10.1.1.7/24`` is
  ``10.1.1.0/24``), as MEC 011 describes "an IP address plus mask". A range
  whose two ends are prefixes spans from the first network to the last
  address of the second.
- port: ``80`` or ``1000-2000`` (inclusive, 0..65535).
- protocol: ``TCP``, ``UDP``, ``ICMP``, ``ICMPv6``, ``SCTP`` (any case), ``ANY``,
  or a number 0..255.
- token: an 802.1Q VLAN ID, 0..4095.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

__all__ = [
    "AddrRange",
    "PortRange",
    "Protocol",
    "VlanId",
    "AddressSpec",
    "PortSpec",
    "ProtocolSpec",
    "TokenSpec",
    "IpAddressText",
    "MacAddressText",
    "parse_address",
    "parse_port_range",
    "parse_protocol",
    "parse_vlan_id",
    "parse_ip",
    "parse_mac",
    "PROTOCOL_NUMBERS",
]

PROTOCOL_NUMBERS: dict[str, int] = {"ICMP": 1, "TCP": 6, "UDP": 17, "ICMPV6": 58, "SCTP": 132}

# Longest string accepted for any one filter element; bounds parsing work.
_MAX_TEXT = 128


def _text(value: Any, what: str) -> str:
    """The stripped string; ASCII only (no non-ASCII digits, no IPv6 zone ids)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError(f"{what} must not be empty")
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{what} is longer than {_MAX_TEXT} characters")
    if not text.isascii() or "%" in text:
        raise ValueError(f"{what} '{text}' has characters outside ASCII digits, letters and . : / -")
    return text


@dataclass(frozen=True, slots=True)
class AddrRange:
    """An inclusive range of addresses of one family, as integers."""

    family: int  # 4 or 6
    lo: int
    hi: int
    text: str

    def contains(self, family: int, value: int) -> bool:
        return family == self.family and self.lo <= value <= self.hi

    def __str__(self) -> str:
        return self.text


def _one_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address or prefix") from None


def parse_address(value: Any) -> AddrRange:
    """Parse one srcAddress/dstAddress/...TunnelAddress element."""
    if isinstance(value, AddrRange):
        return value
    text = _text(value, "address")
    if "-" in text:
        first, _, last = (part.strip() for part in text.partition("-"))
        lo_net, hi_net = _one_network(first), _one_network(last)
        if lo_net.version != hi_net.version:
            raise ValueError(f"range '{text}' mixes IPv4 and IPv6")
        lo, hi = int(lo_net.network_address), int(hi_net.broadcast_address)
        if lo > hi:
            raise ValueError(f"range '{text}' starts after it ends")
        return AddrRange(lo_net.version, lo, hi, text)
    net = _one_network(text)
    return AddrRange(net.version, int(net.network_address), int(net.broadcast_address), text)


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive port range; a single port has lo == hi."""

    lo: int
    hi: int
    text: str

    def contains(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def __str__(self) -> str:
        return self.text


def _port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise ValueError(f"'{whole}' is not a port or a port range lo-hi")
    port = int(text)
    if port > 65535:
        raise ValueError(f"port {port} in '{whole}' is above 65535")
    return port


def parse_port_range(value: Any) -> PortRange:
    """Parse one srcPort/dstPort/...TunnelPort element: ``80`` or ``1000-2000``."""
    if isinstance(value, PortRange):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, "port")
    first, sep, last = (part.strip() for part in text.partition("-"))
    lo = _port(first, text)
    hi = _port(last, text) if sep else lo
    if lo > hi:
        raise ValueError(f"port range '{text}' starts after it ends")
    return PortRange(lo, hi, text)


@dataclass(frozen=True, slots=True)
class Protocol:
    """An IP protocol number, or ``number is None`` for ANY."""

    number: int | None
    text: str

    def __str__(self) -> str:
        return self.text


def parse_protocol(value: Any) -> Protocol:
    if isinstance(value, Protocol):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, "protocol")
    upper = text.upper()
    if upper == "ANY":
        return Protocol(None, text)
    if upper in PROTOCOL_NUMBERS:
        return Protocol(PROTOCOL_NUMBERS[upper], text)
    if text.isdigit() and int(text) <= 255:
        return Protocol(int(text), text)
    raise ValueError(f"'{text}' is not a protocol: use TCP, UDP, ICMP, ICMPv6, SCTP, ANY or 0..255")


@dataclass(frozen=True, slots=True)
class VlanId:
    vid: int
    text: str

    def __str__(self) -> str:
        return self.text


def parse_vlan_id(value: Any) -> VlanId:
    if isinstance(value, VlanId):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, "token")
    if not text.isdigit() or int(text) > 4095:
        raise ValueError(f"token '{text}' is not a VLAN ID 0..4095")
    return VlanId(int(text), text)


def parse_ip(value: Any) -> str:
    """Validate a single IP address (no prefix, no range); returns it as given."""
    text = _text(value, "IP address")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 or IPv6 address") from None
    return text


def parse_mac(value: Any) -> str:
    """Validate a MAC address written with ``-`` (as in MEC 011 examples) or ``:``."""
    text = _text(value, "MAC address")
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise ValueError(f"'{text}' is not a MAC address like 02-00-00-00-00-01")
    return text


def _annotated(parser: Any, cls: type) -> Any:
    return Annotated[
        cls,
        BeforeValidator(parser),
        PlainSerializer(lambda v: v.text, return_type=str),
        WithJsonSchema({"type": "string"}),
    ]


AddressSpec = _annotated(parse_address, AddrRange)
PortSpec = _annotated(parse_port_range, PortRange)
ProtocolSpec = _annotated(parse_protocol, Protocol)
TokenSpec = _annotated(parse_vlan_id, VlanId)
IpAddressText = Annotated[str, BeforeValidator(parse_ip)]
MacAddressText = Annotated[str, BeforeValidator(parse_mac)]
