"""Property tests of the MEC 011 filter-string parsers (mep/models/types.py) and
of the value checks the models make on top of them.

The ``ipaddress`` module is the oracle for addresses; every parser either
returns a well-formed value or raises ``ValueError`` (never anything else), so
pydantic reports a bad element as a ValidationError at its exact location.
"""
from __future__ import annotations

import ipaddress
import string
from typing import Any, Literal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mep.models import (
    AppTerminationNotification,
    DnsRule,
    EndPointInfoAddress,
    TrafficFilter,
    TrafficRule,
)
from mep.models.types import (
    PROTOCOL_NUMBERS,
    AddrRange,
    PortRange,
    Protocol,
    VlanId,
    parse_address,
    parse_ip,
    parse_mac,
    parse_port_range,
    parse_protocol,
    parse_vlan_id,
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
BITS = {4: 32, 6: 128}

# Garbage: arbitrary text, and text made of the characters addresses, ports and
# MACs are written with, which reaches deeper into the parsers.
near_miss = st.text(alphabet="0123456789abcdefABCDEF.:/-% xX", max_size=60)
garbage = st.one_of(st.text(max_size=200), near_miss)
not_strings = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _fails_only_with_value_error(parser: Any, value: Any) -> Any:
    """The parser's result, or None if it raised ValueError; any other exception fails the test."""
    try:
        return parser(value)
    except ValueError:
        return None


@st.composite
def networks(draw: st.DrawFn, version: Literal[4, 6] | None = None) -> tuple[IpAddress, int]:
    """An address (host bits usually set) and a prefix length of its family."""
    addr = draw(st.ip_addresses(v=version) if version else st.ip_addresses())
    return addr, draw(st.integers(0, BITS[addr.version]))


@st.composite
def same_family_pairs(draw: st.DrawFn) -> tuple[IpAddress, IpAddress]:
    version: Literal[4, 6] = draw(st.sampled_from([4, 6]))
    return draw(st.ip_addresses(v=version)), draw(st.ip_addresses(v=version))


def _network(addr: IpAddress, prefix: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(f"{addr}/{prefix}", strict=False)


# --- parse_address -----------------------------------------------------------


@given(st.ip_addresses())
def test_single_address_is_a_one_address_range(addr: IpAddress) -> None:
    parsed = parse_address(str(addr))
    assert parsed == AddrRange(addr.version, int(addr), int(addr), str(addr))
    assert parsed.contains(addr.version, int(addr))
    assert not parsed.contains(10 - addr.version, int(addr))  # the other family
    assert str(parsed) == str(addr)


@given(networks())
def test_prefix_with_host_bits_means_its_network(net: tuple[IpAddress, int]) -> None:
    addr, prefix = net
    expected = _network(addr, prefix)
    parsed = parse_address(f"{addr}/{prefix}")
    assert (parsed.family, parsed.lo, parsed.hi) == (
        addr.version,
        int(expected.network_address),
        int(expected.broadcast_address),
    )
    assert parsed.hi - parsed.lo + 1 == expected.num_addresses
    assert parsed.contains(addr.version, int(addr))
    assert parsed.text == f"{addr}/{prefix}"


@given(same_family_pairs())
def test_address_range_is_inclusive_or_rejected_when_reversed(pair: tuple[IpAddress, IpAddress]) -> None:
    first, last = pair
    text = f"{first}-{last}"
    if int(first) <= int(last):
        assert parse_address(text) == AddrRange(first.version, int(first), int(last), text)
    else:
        with pytest.raises(ValueError, match="starts after it ends"):
            parse_address(text)


@given(st.ip_addresses(v=4), st.ip_addresses(v=4))
def test_whitespace_around_a_range_and_its_ends_is_ignored(first: IpAddress, last: IpAddress) -> None:
    first, last = min(first, last), max(first, last)
    parsed = parse_address(f"  {first} -\t{last} ")
    assert (parsed.lo, parsed.hi) == (int(first), int(last))
    assert parsed.text == f"{first} -\t{last}"


@given(networks(), st.data())
def test_prefix_to_prefix_range_spans_first_network_to_last_address(
    net: tuple[IpAddress, int], data: st.DataObject
) -> None:
    addr1, prefix1 = net
    addr2, prefix2 = data.draw(networks(version=addr1.version))
    lo = int(_network(addr1, prefix1).network_address)
    hi = int(_network(addr2, prefix2).broadcast_address)
    text = f"{addr1}/{prefix1}-{addr2}/{prefix2}"
    if lo <= hi:
        assert parse_address(text) == AddrRange(addr1.version, lo, hi, text)
    else:
        with pytest.raises(ValueError):
            parse_address(text)


@given(st.ip_addresses(v=4), st.ip_addresses(v=6), st.booleans())
def test_range_mixing_families_is_rejected(v4: IpAddress, v6: IpAddress, v4_first: bool) -> None:
    text = f"{v4}-{v6}" if v4_first else f"{v6}-{v4}"
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        parse_address(text)


@given(garbage)
def test_address_garbage_raises_only_value_error(text: str) -> None:
    parsed = _fails_only_with_value_error(parse_address, text)
    if parsed is not None:
        assert parsed.family in BITS
        assert 0 <= parsed.lo <= parsed.hi < 2 ** BITS[parsed.family]
        assert parsed.text == text.strip()


@given(garbage)
def test_address_without_dash_is_accepted_exactly_when_ipaddress_accepts_it(text: str) -> None:
    stripped = text.strip()
    assume("-" not in stripped and 0 < len(stripped) <= 128)
    try:
        expected = ipaddress.ip_network(stripped, strict=False)
    except ValueError:
        with pytest.raises(ValueError):
            parse_address(text)
    else:
        parsed = parse_address(text)
        assert (parsed.lo, parsed.hi) == (int(expected.network_address), int(expected.broadcast_address))


@given(not_strings)
def test_address_of_a_non_string_is_a_value_error(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_address(value)


@pytest.mark.parametrize("text", ["", "   ", "1" * 129, "10.0.0.1/33", "10.0.0.256", "::1/129", "10.0.0.1-", "-::1"])
def test_bad_addresses_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


# --- parse_port_range ---------------------------------------------------------

ports = st.integers(0, 65535)


@given(ports, st.booleans())
def test_single_port_as_text_or_int(port: int, as_int: bool) -> None:
    parsed = parse_port_range(port if as_int else str(port))
    assert parsed == PortRange(port, port, str(port))
    assert parsed.contains(port) and not parsed.contains(port + 1) and not parsed.contains(port - 1)


@given(ports, ports)
def test_port_range_is_inclusive_or_rejected_when_reversed(lo: int, hi: int) -> None:
    text = f"{lo}-{hi}"
    if lo <= hi:
        parsed = parse_port_range(text)
        assert parsed == PortRange(lo, hi, text)
        assert parsed.contains(lo) and parsed.contains(hi) and not parsed.contains(hi + 1)
    else:
        with pytest.raises(ValueError, match="starts after it ends"):
            parse_port_range(text)


@given(st.integers(65536, 10**12), ports, st.booleans())
def test_port_above_65535_is_rejected(big: int, other: int, big_first: bool) -> None:
    for value in (str(big), big, f"{big}-{big}", f"{other}-{big}" if not big_first else f"{big}-{other}"):
        with pytest.raises(ValueError):
            parse_port_range(value)


@given(st.one_of(garbage, st.integers(-(10**6), -1), not_strings))
def test_port_garbage_raises_only_value_error(value: Any) -> None:
    parsed = _fails_only_with_value_error(parse_port_range, value)
    if parsed is not None:
        assert 0 <= parsed.lo <= parsed.hi <= 65535


# --- parse_protocol -----------------------------------------------------------


@st.composite
def any_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.lower() if flip else c.upper() for c, flip in zip(word, flips, strict=True))


@given(st.sampled_from(sorted(PROTOCOL_NUMBERS)).flatmap(lambda name: st.tuples(st.just(name), any_case(name))))
def test_protocol_names_in_any_case(named: tuple[str, str]) -> None:
    name, text = named
    assert parse_protocol(text) == Protocol(PROTOCOL_NUMBERS[name], text)


@given(any_case("ANY"))
def test_protocol_any_has_no_number(text: str) -> None:
    assert parse_protocol(text) == Protocol(None, text)


@given(st.integers(0, 255), st.booleans())
def test_protocol_numbers_0_to_255(number: int, as_int: bool) -> None:
    assert parse_protocol(number if as_int else str(number)) == Protocol(number, str(number))


@given(st.integers(256, 10**9))
def test_protocol_number_above_255_is_rejected(number: int) -> None:
    with pytest.raises(ValueError):
        parse_protocol(str(number))
    with pytest.raises(ValueError):
        parse_protocol(number)


@given(st.one_of(garbage, st.integers(max_value=-1), not_strings))
def test_protocol_garbage_raises_only_value_error(value: Any) -> None:
    parsed = _fails_only_with_value_error(parse_protocol, value)
    if parsed is not None:
        assert parsed.number is None or 0 <= parsed.number <= 255


# --- parse_vlan_id ------------------------------------------------------------


@given(st.integers(0, 4095), st.booleans())
def test_vlan_id_0_to_4095(vid: int, as_int: bool) -> None:
    assert parse_vlan_id(vid if as_int else str(vid)) == VlanId(vid, str(vid))


@given(st.integers(4096, 10**9))
def test_vlan_id_above_4095_is_rejected(vid: int) -> None:
    with pytest.raises(ValueError, match="not a VLAN ID"):
        parse_vlan_id(str(vid))


@given(st.one_of(garbage, st.integers(max_value=-1), not_strings))
def test_vlan_garbage_raises_only_value_error(value: Any) -> None:
    parsed = _fails_only_with_value_error(parse_vlan_id, value)
    if parsed is not None:
        assert 0 <= parsed.vid <= 4095


# --- parse_mac ----------------------------------------------------------------


@given(st.binary(min_size=6, max_size=6), st.sampled_from("-:"), st.booleans())
def test_mac_with_dashes_or_colons_in_either_case(octets: bytes, sep: str, upper: bool) -> None:
    text = sep.join(f"{b:02X}" if upper else f"{b:02x}" for b in octets)
    assert parse_mac(text) == text


@pytest.mark.parametrize(
    "text",
    ["02-00-00-00-00", "02-00-00-00-00-00-00", "2-00-00-00-00-00", "02-00-00-00-00-0g", "020000000000", "02 00 00 00 00 00"],
)
def test_malformed_mac_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        parse_mac(text)


@given(st.one_of(garbage, not_strings))
def test_mac_garbage_raises_only_value_error(value: Any) -> None:
    parsed = _fails_only_with_value_error(parse_mac, value)
    if parsed is not None:
        octets = parsed.replace("-", ":").split(":")
        assert len(octets) == 6 and all(int(o, 16) <= 255 and len(o) == 2 for o in octets)


# --- parse_ip -----------------------------------------------------------------


@given(st.ip_addresses())
def test_ip_returns_the_address_as_given(addr: IpAddress) -> None:
    assert parse_ip(str(addr)) == str(addr)


@given(networks())
def test_ip_rejects_prefixes(net: tuple[IpAddress, int]) -> None:
    addr, prefix = net
    with pytest.raises(ValueError):
        parse_ip(f"{addr}/{prefix}")


@given(same_family_pairs())
def test_ip_rejects_ranges(pair: tuple[IpAddress, IpAddress]) -> None:
    with pytest.raises(ValueError):
        parse_ip(f"{pair[0]}-{pair[1]}")


@given(st.one_of(garbage, not_strings))
def test_ip_is_accepted_exactly_when_ipaddress_accepts_it(value: Any) -> None:
    parsed = _fails_only_with_value_error(parse_ip, value)
    if parsed is not None:
        ipaddress.ip_address(parsed)
    elif isinstance(value, str) and 0 < len(value.strip()) <= 128:
        with pytest.raises(ValueError):
            ipaddress.ip_address(value.strip())


# --- parse errors inside a TrafficRule -----------------------------------------

RULE: dict[str, Any] = {
    "trafficRuleId": "rule-1",
    "filterType": "FLOW",
    "priority": 1,
    "action": "DROP",
    "state": "ACTIVE",
}

# member -> (a good element, a bad element)
FILTER_ELEMENTS: dict[str, tuple[str, str]] = {
    "srcAddress": ("10.0.0.0/8", "10.0.0.256"),
    "dstAddress": ("2001:db8::1-2001:db8::ff", "2001:db8::ff-2001:db8::1"),
    "srcPort": ("80", "70000"),
    "dstPort": ("1000-2000", "2000-1000"),
    "protocol": ("TCP", "TCPX"),
    "token": ("100", "4096"),
    "srcTunnelAddress": ("192.0.2.1", "192.0.2.1-2001:db8::1"),
    "tgtTunnelAddress": ("192.0.2.0/24", ""),
    "srcTunnelPort": ("2152", "x"),
    "dstTunnelPort": ("2152", "-1"),
}


def _errors(cls: type[BaseModel], body: dict[str, Any]) -> list[Any]:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(body)
    return info.value.errors()


def test_bad_port_is_reported_at_its_element() -> None:
    body = {**RULE, "trafficFilter": [{"dstPort": ["80", "99999"]}]}
    errors = _errors(TrafficRule, body)
    assert [err["loc"] for err in errors] == [("trafficFilter", 0, "dstPort", 1)]
    assert "99999" in errors[0]["msg"]


@pytest.mark.parametrize("member", sorted(FILTER_ELEMENTS))
def test_bad_filter_element_is_reported_at_its_location(member: str) -> None:
    good, bad = FILTER_ELEMENTS[member]
    body = {**RULE, "trafficFilter": [{member: [good]}, {member: [good, good, bad]}]}
    errors = _errors(TrafficRule, body)
    assert [(err["loc"], err["type"]) for err in errors] == [(("trafficFilter", 1, member, 2), "value_error")]
    TrafficRule.model_validate({**RULE, "trafficFilter": [{member: [good, good]}]})  # the good one is fine


@given(st.sampled_from(sorted(FILTER_ELEMENTS)), st.integers(0, 8), st.integers(0, 8))
def test_bad_element_position_is_reported_exactly(member: str, before: int, after: int) -> None:
    good, bad = FILTER_ELEMENTS[member]
    elements = [good] * before + [bad] + [good] * after
    errors = _errors(TrafficRule, {**RULE, "trafficFilter": [{member: elements}]})
    assert [err["loc"] for err in errors] == [("trafficFilter", 0, member, before)]


@given(st.lists(networks(), min_size=1, max_size=4), ports, ports)
def test_filter_strings_serialise_as_given(nets: list[tuple[IpAddress, int]], lo: int, hi: int) -> None:
    lo, hi = min(lo, hi), max(lo, hi)
    body = {
        "srcAddress": [f"{addr}/{prefix}" for addr, prefix in nets],
        "dstPort": [f"{lo}-{hi}", str(lo)],
        "protocol": ["udp", "ANY", "132"],
        "token": ["0", "4095"],
    }
    assert TrafficFilter.model_validate(body).to_json() == body


# --- DnsRule ------------------------------------------------------------------

DNS: dict[str, Any] = {"dnsRuleId": "dns-1", "domainName": "www.example.com", "state": "ACTIVE"}


@given(st.ip_addresses(), st.sampled_from(["IP_V4", "IP_V6"]))
def test_dns_address_family_must_match_its_type(addr: IpAddress, kind: str) -> None:
    body = {**DNS, "ipAddress": str(addr), "ipAddressType": kind}
    if (addr.version == 4) == (kind == "IP_V4"):
        assert DnsRule.model_validate(body).to_json()["ipAddress"] == str(addr)
    else:
        errors = _errors(DnsRule, body)
        assert len(errors) == 1 and errors[0]["type"] == "value_error"
        assert "ipAddressType" in errors[0]["msg"]


@pytest.mark.parametrize("value", ["192.0.2.0/24", "192.0.2.1-192.0.2.9", "host.example", "", 3221225985])
def test_dns_address_must_be_one_ip(value: Any) -> None:
    errors = _errors(DnsRule, {**DNS, "ipAddress": value, "ipAddressType": "IP_V4"})
    assert [err["loc"] for err in errors] == [("ipAddress",)]


labels = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=63)


@given(st.lists(labels, min_size=1, max_size=4), st.booleans())
def test_dns_domain_names_of_valid_labels_are_accepted(parts: list[str], trailing_dot: bool) -> None:
    name = ".".join(parts) + ("." if trailing_dot else "")
    rule = DnsRule.model_validate({**DNS, "domainName": name, "ipAddressType": "IP_V4", "ipAddress": "192.0.2.1"})
    assert rule.domainName == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "a..example",
        ".example.com",
        "a" * 64 + ".com",
        ".".join(["a" * 63] * 4),  # 255 characters
        "www example.com",
        "wwW.exämple.com",
        "www.example.com/",
        "www@example.com",
    ],
)
def test_dns_bad_domain_names_are_rejected(name: str) -> None:
    errors = _errors(DnsRule, {**DNS, "domainName": name, "ipAddressType": "IP_V4", "ipAddress": "192.0.2.1"})
    assert [err["loc"] for err in errors] == [("domainName",)]


def test_dns_domain_name_length_boundary() -> None:
    longest = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters
    assert len(longest) == 253
    for name in (longest, longest + "."):
        DnsRule.model_validate({**DNS, "domainName": name, "ipAddressType": "IP_V4", "ipAddress": "192.0.2.1"})
    errors = _errors(DnsRule, {**DNS, "domainName": longest + "b", "ipAddressType": "IP_V4", "ipAddress": "192.0.2.1"})
    assert [err["loc"] for err in errors] == [("domainName",)]


# --- integer bounds ---------------------------------------------------------------

INT32 = (-(2**31), 2**31 - 1)
BOUNDED: list[tuple[type[BaseModel], dict[str, Any], str, int, int]] = [
    (TrafficRule, {**RULE, "trafficFilter": []}, "priority", 0, 255),
    (TrafficFilter, {}, "qCI", 0, 255),
    (TrafficFilter, {}, "dSCP", 0, 63),
    (TrafficFilter, {}, "tC", 0, 255),
    (DnsRule, {**DNS, "ipAddressType": "IP_V4", "ipAddress": "192.0.2.1"}, "ttl", 0, INT32[1]),
    (EndPointInfoAddress, {"host": "192.0.2.1"}, "port", 0, 65535),
    (
        AppTerminationNotification,
        {
            "notificationType": "AppTerminationNotification",
            "operationAction": "STOPPING",
            "_links": {"subscription": {"href": "/s"}},
        },
        "maxGracefulTimeout",
        *INT32,
    ),
]
BOUNDED_IDS = [f"{row[0].__name__}.{row[2]}" for row in BOUNDED]


@pytest.mark.parametrize(("cls", "body", "member", "lo", "hi"), BOUNDED, ids=BOUNDED_IDS)
@given(value=st.one_of(st.integers(-(2**40), 2**40), st.sampled_from([-1, 0, 63, 64, 255, 256, 65535, 65536])))
def test_integer_member_is_accepted_exactly_within_its_bounds(
    cls: type[BaseModel], body: dict[str, Any], member: str, lo: int, hi: int, value: int
) -> None:
    payload = {**body, member: value}
    if lo <= value <= hi:
        assert getattr(cls.model_validate(payload), member) == value
    else:
        assert [err["loc"] for err in _errors(cls, payload)] == [(member,)]


@pytest.mark.parametrize(("cls", "body", "member", "lo", "hi"), BOUNDED, ids=BOUNDED_IDS)
def test_integer_member_bounds_are_inclusive(
    cls: type[BaseModel], body: dict[str, Any], member: str, lo: int, hi: int
) -> None:
    for value in (lo, hi):
        assert getattr(cls.model_validate({**body, member: value}), member) == value
    for value in (lo - 1, hi + 1):
        assert [err["loc"] for err in _errors(cls, {**body, member: value})] == [(member,)]


@pytest.mark.parametrize("value", [True, "1", 1.0, None])
def test_priority_is_a_strict_integer(value: Any) -> None:
    errors = _errors(TrafficRule, {**RULE, "trafficFilter": [], "priority": value})
    assert [err["loc"] for err in errors] == [("priority",)]
