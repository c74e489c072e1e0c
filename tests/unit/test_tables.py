"""The bit-vector tables classify exactly like the reference engine's linear scan."""
from __future__ import annotations

import ipaddress
from bisect import bisect_left

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mep.dataplane.packet import Parsed, parse
from mep.dataplane.reference import classify
from mep.dataplane.tables import (ADDR4_BUCKET_BITS, FAMILY_BITS, MAX_KEY_PAIRS, VALUE_DOMAIN, Field, FieldTable, Interval,
                                  build_tables, enabled_filters, filter_keys, ipv4_index, iter_value_classes, lookup,
                                  tables_of, word_mask)
from tests.rulesets import rule, ruleset
from tests.strategies import frame, rule_list


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_list(max_rules=20), frames=st.lists(frame(), min_size=1, max_size=8))
def test_tables_agree_with_the_linear_scan(rules: list[dict], frames: list[bytes]) -> None:  # type: ignore[type-arg]
    rs = ruleset(rules)
    tables = build_tables(rs)
    # What the XDP engine holds: the dormant (INACTIVE) rules' filters too, masked by the enabled ones.
    every = rs.kept
    kept = tables_of(every, rs.generation)
    enabled = enabled_filters(kept, [r in rs.rules for r in every])
    for data in frames:
        p = parse(data)
        if not isinstance(p, Parsed):
            continue
        hit = classify(rs, p)
        want = None if hit is None else (rs.rules.index(hit[0]), hit[1])
        assert lookup(tables, p) == want
        got = lookup(kept, p, enabled)
        assert (None if got is None else (every[got[0]], got[1])) == hit


def _words(mask: int, nwords: int) -> int:
    return sum(1 << w for w in range(nwords) if mask >> (64 * w) & (2**64 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_list(max_rules=80))
def test_key_and_pair_summaries_name_the_words_of_the_filters_keyed_on_each_class(rules: list[dict]) -> None:  # type: ignore[type-arg]
    rs = ruleset(rules)
    tables = build_tables(rs)
    keys, pairs = filter_keys([f for r in rs.rules for f in r.filters])
    assert tables.pairs == pairs and len(pairs) <= MAX_KEY_PAIRS

    def keyed(key: tuple[Field, ...]) -> int:
        return sum(1 << bit for bit, k in enumerate(keys) if k == key)

    for fld, table in tables.fields.items():
        assert table.key_summaries == [_words(mask & keyed((fld,)), tables.nwords) for mask in table.classes]
        for p, pair in enumerate(pairs):
            in_pair = keyed(pair) if fld in pair else 0
            assert table.pair_summaries[p] == [_words(mask & in_pair, tables.nwords) for mask in table.classes]
    assert tables.unkeyed == _words(keyed(()), tables.nwords)
    assert tables.keyed_fields == sum({1 << key[0] for key in keys if len(key) == 1})


KEYS = [
    ({"dstAddress": ["198.19.0.1/32"], "protocol": ["TCP"], "dstPort": ["443"]}, (Field.DST, Field.DPORT)),
    ({"srcAddress": ["198.18.0.0/15"], "dstPort": ["443"]}, (Field.SRC, Field.DPORT)),
    # a protocol keys alone only what sets nothing else (traffic is mostly TCP and UDP), but pairs
    ({"srcPort": ["1024-6000"], "protocol": ["UDP"]}, (Field.SPORT, Field.PROTO)),
    ({"dstPort": ["0-65535"], "dSCP": 10}, (Field.DSCP,)),  # no pair with a field it accepts whole
    ({"protocol": ["SCTP"]}, (Field.PROTO,)),
    ({"dSCP": 46}, (Field.DSCP,)),
    ({}, ()),
]


def test_each_filter_is_keyed_on_its_most_selective_fields() -> None:
    rs = ruleset([rule(f"r{i}", filters=[f]) for i, (f, _) in enumerate(KEYS)])
    keys, pairs = filter_keys([r.filters[0] for r in rs.rules])
    assert keys == [key for _, key in KEYS]
    assert pairs == ((Field.SRC, Field.DPORT), (Field.DST, Field.DPORT), (Field.SPORT, Field.PROTO))


def test_only_the_most_common_pairs_get_a_slot() -> None:
    """MAX_KEY_PAIRS slots: the pair the fewest filters want falls back to its most selective field (the
    lower id on a tie)."""
    wanted = [({"srcAddress": ["198.18.0.1"], "dstAddress": ["198.19.0.1"]}, (Field.SRC, Field.DST)),
              ({"dstAddress": ["198.19.1.1"], "dstPort": ["80"]}, (Field.DST, Field.DPORT)),
              ({"dstAddress": ["198.19.2.1"], "dSCP": 10}, (Field.DST, Field.DSCP)),
              ({"srcPort": ["5000-5010"], "protocol": ["UDP"]}, (Field.SPORT, Field.PROTO)),
              ({"dstPort": ["6000-6010"], "protocol": ["TCP"]}, (Field.DPORT, Field.PROTO)),
              ({"srcAddress": ["198.18.0.2"], "token": ["7"]}, (Field.SRC, Field.VLAN))]
    assert len(wanted) == MAX_KEY_PAIRS + 1
    filters = [f for n, (f, _) in enumerate(wanted) for _ in range(len(wanted) - n)]  # fewer of each next pair
    filters.append({"srcPort": ["5000"], "dstPort": ["80"]})
    rs = ruleset([rule(f"r{i}", filters=[f]) for i, f in enumerate(filters)])
    keys, pairs = filter_keys([r.filters[0] for r in rs.rules])
    assert pairs == tuple(sorted(pair for _, pair in wanted[:MAX_KEY_PAIRS]))
    assert keys == [pair for n, (_, pair) in enumerate(wanted[:MAX_KEY_PAIRS]) for _ in range(len(wanted) - n)] \
        + [(Field.SRC,), (Field.SPORT,)]


def test_word_mask_covers_the_named_words() -> None:
    assert word_mask(0b101, 3) == (2**64 - 1) | (2**64 - 1) << 128
    assert word_mask(0, 4) == 0


def test_value_runs_cover_the_domain_and_absent() -> None:
    tables = build_tables(ruleset([rule("a", filters=[{"dstPort": ["80", "90-100"]}, {"dstPort": ["95"]}])]))
    runs = list(iter_value_classes(tables.fields[Field.DPORT]))
    assert runs[0][0] == 0 and runs[-1] == (65536, 65536, 0)
    assert all(a[1] + 1 == b[0] for a, b in zip(runs, runs[1:]))
    classes = tables.fields[Field.DPORT].classes
    by_port = {lo: classes[c] for lo, _, c in runs}
    assert by_port[80] == 0b01 and by_port[95] == 0b11 and by_port[90] == 0b01 and by_port[0] == 0


def test_unused_fields_are_reported_unused() -> None:
    tables = build_tables(ruleset([rule("a", filters=[{"protocol": ["UDP"]}])]))
    assert tables.used_fields == 1 << Field.PROTO
    assert tables.nwords == 1 and VALUE_DOMAIN[Field.PROTO] == 256


@st.composite
def _address_range(draw: st.DrawFn) -> tuple[int, int, int]:
    family = draw(st.sampled_from([4, 6]))
    top = (1 << FAMILY_BITS[family]) - 1

    def end() -> int:
        if draw(st.booleans()):
            return draw(st.integers(0, top))
        # Near a power of two: where a decomposition into aligned blocks goes wrong if it does.
        return min(top, max(0, (1 << draw(st.integers(0, FAMILY_BITS[family]))) + draw(st.integers(-2, 2))))

    a, b = end(), end()
    return family, min(a, b), max(a, b)


@settings(max_examples=500, deadline=None)
@given(_address_range())
def test_interval_prefixes_are_what_ipaddress_summarises(r: tuple[int, int, int]) -> None:
    family, lo, hi = r
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    want = [(int(n.network_address), n.prefixlen) for n in ipaddress.summarize_address_range(make(lo), make(hi))]
    assert Interval(family, lo, hi, 1).prefixes() == want


def test_interval_prefixes_of_whole_spaces_and_single_addresses() -> None:
    assert Interval(4, 0, 2**32 - 1, 1).prefixes() == [(0, 0)]
    assert Interval(6, 0, 2**128 - 1, 1).prefixes() == [(0, 0)]
    assert Interval(4, 5, 5, 1).prefixes() == [(5, 32)]
    assert Interval(4, 1, 6, 1).prefixes() == [(1, 32), (2, 31), (4, 31), (6, 32)]


@given(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=400, unique=True), st.integers(0, 2**32 - 1),
       st.lists(st.integers(0, 2**32 - 1), max_size=50))
def test_the_ipv4_first_level_names_the_interval_that_holds_each_address(ends: list[int], seed: int,
                                                                         probes: list[int]) -> None:
    """ipv4_index: for any address, the bucket's range of intervals contains the one holding it (both engines
    search only there); the binary search over their ends, then its start, gives the class a scan gives."""
    ends.sort()
    intervals = [Interval(4, lo, hi, 1 + i) for i, (lo, hi) in enumerate(zip(ends[::2], ends[1::2]))]
    index = ipv4_index(FieldTable(Field.DST, [0] * (len(intervals) + 1), intervals, [0] * (len(intervals) + 1), []))
    assert len(index.starts) - 1 <= 1 << ADDR4_BUCKET_BITS
    edges = [v for iv in intervals for v in (iv.lo - 1, iv.lo, iv.hi, iv.hi + 1)]
    for v in [*probes, *edges, seed]:
        want = next((iv.cls for iv in intervals if iv.lo <= v <= iv.hi), 0)
        got = 0
        if intervals and index.lo[0] <= v <= index.hi[-1]:
            b = (v - index.lo[0]) >> index.shift
            first, last = index.starts[b], index.starts[b + 1]
            i = bisect_left(index.hi, v, first, last)
            if i < len(index.lo) and index.lo[i] <= v:
                got = index.cls[i]
        assert got == want, v
