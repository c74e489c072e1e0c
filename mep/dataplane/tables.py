"""Bit-vector classifier tables: a CompiledRuleSet as per-field classes and filter vectors.

The XDP and Cython engines classify with the same tables (the reference
engine keeps its linear scan, which is the spec they are tested against).

Every traffic filter of the rule set gets a bit, in match order: rules in
(priority, rule id) order, a rule's filters in their given order. For each
of the thirteen packet fields a filter can constrain, the field's value
domain is cut into elementary intervals, and every interval is labelled with
a *class*: the set of filters whose constraint on that field the interval
satisfies (filters that leave the field open are in every class). A packet's
matching filters are the AND of its thirteen classes' bit vectors; the lowest
set bit is the first matching filter, whose rule wins. docs/classifier.md
explains the design, its costs and its worst case.

Domains: addresses per family (IPv4 32 bits, IPv6 128 bits), ports 0..65535,
protocol 0..255, VLAN ID 0..4095, DSCP 0..63, traffic class 0..255, QFI
0..63; each field also has an ``absent`` value (no ports, untagged, not IPv4,
not tunnelled, ...) whose class holds only the filters open on that field,
because a filter that sets a field never matches a packet without it.

Scanning every word of that AND costs the same for a packet that matches
nothing as for one that matches the last filter. So every filter is also
*keyed*, on the fields it constrains whose accepted values are the smallest
share of their domain (a /32 before a port, a port before a protocol): a
filter matches only where its key fields' classes hold it. Most filters are
keyed on a *pair* of fields, their two most selective (a server address and
a port, a source and a destination, a port range and a protocol): the rule
set's most common pairs, at most ``MAX_KEY_PAIRS``, each get a slot. A
filter whose pair has no slot, or that constrains one field (or a second
one whole), is keyed on its most selective field alone, and a protocol
keys alone only a filter that constrains nothing else. Each class carries a
*key summary*, one bit per vector word holding a filter keyed on the field
alone and in the class, and per pair slot the field is in a *pair summary*,
the words holding a filter keyed on that pair and in the class. The OR of
a packet's key summaries, of the AND of each pair's two pair summaries,
and of the words of filters that constrain no field names every word that
can hold a match; the engines AND only those words. A pair prunes what
one field cannot: at 10,000 rules of bench/rulegen.py's mix, a packet
whose first match is in the middle of the order had 11 candidate words
before it keyed on single fields, ~1 keyed on pairs (docs/classifier.md).

FLOW rules also match with source and destination swapped: the engines run a
second AND with the source-field classes looked up with the destination
values (and vice versa), masked by ``flow_mask``, the filters of FLOW rules.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Iterable, Sequence

from .packet import Parsed
from .ruleset import CompiledFilter, CompiledRule, CompiledRuleSet

__all__ = [
    "Field",
    "ADDRESS_FIELDS",
    "VALUE_FIELDS",
    "VALUE_DOMAIN",
    "Interval",
    "FieldTable",
    "ClassifierTables",
    "build_tables",
    "tables_of",
    "filter_keys",
    "MAX_KEY_PAIRS",
    "enabled_filters",
    "iter_value_classes",
    "ADDR4_BUCKET_BITS",
    "Ipv4Index",
    "ipv4_index",
    "word_mask",
    "packet_values",
    "class_of",
    "lookup",
]


class Field(IntEnum):
    """The thirteen matchable fields; the number is the field's id in the BPF maps."""

    SRC = 0
    DST = 1
    TUN_SRC = 2
    TUN_DST = 3
    SPORT = 4
    DPORT = 5
    TUN_SPORT = 6
    TUN_DPORT = 7
    PROTO = 8
    VLAN = 9
    DSCP = 10
    TC = 11
    QFI = 12


ADDRESS_FIELDS = (Field.SRC, Field.DST, Field.TUN_SRC, Field.TUN_DST)
VALUE_FIELDS = tuple(f for f in Field if f not in ADDRESS_FIELDS)

# Size of each value field's domain; the value ``VALUE_DOMAIN[f]`` itself means absent.
VALUE_DOMAIN: dict[Field, int] = {
    Field.SPORT: 65536,
    Field.DPORT: 65536,
    Field.TUN_SPORT: 65536,
    Field.TUN_DPORT: 65536,
    Field.PROTO: 256,
    Field.VLAN: 4096,
    Field.DSCP: 64,
    Field.TC: 256,
    Field.QFI: 64,
}
FAMILY_BITS = {4: 32, 6: 128}


@dataclass(frozen=True, slots=True)
class Interval:
    """Values lo..hi (inclusive) of one family (0 for value fields) belong to class ``cls``."""

    family: int
    lo: int
    hi: int
    cls: int

    def prefixes(self) -> list[tuple[int, int]]:
        """The interval as (network, prefix length) CIDR blocks, fewest and in address order (what
        ipaddress.summarize_address_range gives, in integers: that costs 3 us a block); address fields only."""
        bits = FAMILY_BITS[self.family]
        out = []
        lo = self.lo
        while lo <= self.hi:
            size = lo & -lo if lo else 1 << bits  # the largest block lo is aligned to ...
            while size > self.hi - lo + 1:  # ... that fits what is left
                size >>= 1
            out.append((lo, bits + 1 - size.bit_length()))
            lo += size
        return out


@dataclass(slots=True)
class FieldTable:
    """One field: its classes (filter bitmasks) and which values map to which class.

    Class 0 is the *default* class, the filters open on this field: values no
    interval covers belong to it, and so does the absent value (a filter that
    constrains a field never matches a packet without it). ``intervals``
    lists only values outside the default class, disjoint and sorted.
    """

    field: Field
    classes: list[int]  # class id -> bitmask of filters (bit i = filter i)
    intervals: list[Interval]
    # class id -> bitmask of vector words (bit w = word w) holding filters keyed on this field alone in the class
    key_summaries: list[int]
    # pair slot -> class id -> the same for the filters keyed on that pair (all 0 unless the field is in it)
    pair_summaries: list[list[int]]

    @property
    def used(self) -> bool:
        """False when no filter constrains the field: every value is in class 0."""
        return bool(self.intervals) or self.classes[0] != self.all_filters

    all_filters: int = 0


@dataclass(slots=True)
class ClassifierTables:
    generation: int
    nfilters: int
    filter_rule: list[int]  # filter bit -> index of its rule in the rules the tables hold (tables_of)
    flow_mask: int  # filters of FLOW rules
    fields: dict[Field, FieldTable] = field(default_factory=dict)
    unkeyed: int = 0  # bitmask of the vector words holding filters that constrain no field
    keyed_fields: int = 0  # bitmask of the fields some filter is keyed on alone (bit = Field value)
    pairs: tuple[tuple[Field, Field], ...] = ()  # pair slot -> its two fields, lower id first

    @property
    def nwords(self) -> int:
        """64-bit words a vector needs for this rule set (at least 1)."""
        return max(1, (self.nfilters + 63) // 64)

    @property
    def used_fields(self) -> int:
        """Bitmask of fields some filter constrains (bit = Field value)."""
        return sum(1 << f for f, t in self.fields.items() if t.used)


# Per field, the (family, lo, hi) ranges a filter accepts on it; empty: the field is open (the shared empty
# tuple: most filters leave most fields open, and tables_of holds every field's at once).
Ranges = Sequence[tuple[int, int, int]]
_ACCEPTED: dict[Field, Callable[[CompiledFilter], Ranges]] = {
    Field.SRC: lambda f: [(r.family, r.lo, r.hi) for r in f.src] if f.src else (),
    Field.DST: lambda f: [(r.family, r.lo, r.hi) for r in f.dst] if f.dst else (),
    Field.TUN_SRC: lambda f: [(r.family, r.lo, r.hi) for r in f.tun_src] if f.tun_src else (),
    Field.TUN_DST: lambda f: [(r.family, r.lo, r.hi) for r in f.tun_dst] if f.tun_dst else (),
    Field.SPORT: lambda f: [(0, p.lo, p.hi) for p in f.sport] if f.sport else (),
    Field.DPORT: lambda f: [(0, p.lo, p.hi) for p in f.dport] if f.dport else (),
    Field.TUN_SPORT: lambda f: [(0, p.lo, p.hi) for p in f.tun_sport] if f.tun_sport else (),
    Field.TUN_DPORT: lambda f: [(0, p.lo, p.hi) for p in f.tun_dport] if f.tun_dport else (),
    Field.PROTO: lambda f: [(0, p, p) for p in f.protocols] if f.protocols else (),
    Field.VLAN: lambda f: [(0, v, v) for v in f.vlans] if f.vlans else (),
    Field.DSCP: lambda f: () if f.dscp is None else ((0, f.dscp, f.dscp),),
    Field.TC: lambda f: () if f.tc is None else ((0, f.tc, f.tc),),
    Field.QFI: lambda f: () if f.qfi is None else ((0, f.qfi, f.qfi),),
}


def _share(fld: Field, ranges: Ranges) -> float:
    """The share of the field's domain (per family for addresses) that ``ranges`` accept; a protocol counts
    as all of its domain, since traffic is mostly TCP and UDP (a filter keyed on UDP would make every UDP
    packet's words candidates)."""
    if fld is Field.PROTO:
        return 1.0
    return sum((hi - lo + 1) / ((1 << FAMILY_BITS[family]) if family else VALUE_DOMAIN[fld])
               for family, lo, hi in ranges)


# Pair slots: the vectors of the XDP engine hold this many pair summaries (ebpf/abi.h struct vec);
# bench/rulegen.py's mix has five pairs (server + port, source + server, server + DSCP, source port +
# protocol, port + protocol).
MAX_KEY_PAIRS = 5

Key = tuple[Field, ...]  # a filter's key fields: none, one, or a pair, lower id first


def _keys(accepted: dict[Field, list[Ranges]], n: int) -> tuple[list[Key], tuple[tuple[Field, Field], ...]]:
    """Each of ``n`` filters' key, from what each accepts on each field (``accepted[field][filter]``), and
    the pair slots (see the module docstring)."""
    ranked: list[list[tuple[float, Field]]] = [[] for _ in range(n)]
    for fld in Field:  # in id order: the lower id wins a tie
        for bit, ranges in enumerate(accepted[fld]):
            if ranges:
                ranked[bit].append((_share(fld, ranges), fld))
    wanted: list[tuple[Field, Field] | None] = []
    for fields in ranked:
        fields.sort()
        pair = None
        # the second may be the protocol, which never keys alone (a filter on a source port range and
        # UDP prunes every TCP packet), not a field the filter accepts whole
        if len(fields) > 1 and (fields[1][0] < 1.0 or fields[1][1] is Field.PROTO):
            a, b = sorted((fields[0][1], fields[1][1]))
            pair = (a, b)
        wanted.append(pair)
    counts = Counter(pair for pair in wanted if pair is not None)
    pairs = tuple(sorted(sorted(counts, key=lambda p: (-counts[p], p))[:MAX_KEY_PAIRS]))
    keys: list[Key] = [pair if pair in pairs else tuple(f for _, f in fields[:1])
                       for pair, fields in zip(wanted, ranked)]
    return keys, pairs


def filter_keys(filters: Sequence[CompiledFilter]) -> tuple[list[Key], tuple[tuple[Field, Field], ...]]:
    """Each filter's key fields (none: it constrains none) and the pair slots, as ``tables_of`` keys them."""
    return _keys({fld: [accepted(f) for f in filters] for fld, accepted in _ACCEPTED.items()}, len(filters))


def word_mask(summary: int, nwords: int) -> int:
    """The filter bitmask of every filter in the words ``summary`` names (bit w: filters 64w..64w+63)."""
    return int.from_bytes(b"".join(b"\xff" * 8 if summary >> w & 1 else bytes(8) for w in range(nwords)),
                          "little")


def _mask(bits: Iterable[int], nbits: int) -> int:
    """The bitmask with ``bits`` set: built in a bytearray, since or-ing one bit at a time into an
    int of thousands of bits copies the whole int each time."""
    buf = bytearray((nbits + 7) // 8)
    for bit in bits:
        buf[bit >> 3] |= 1 << (bit & 7)
    return int.from_bytes(buf, "little")


def _field_table(fld: Field, accepted: list[Ranges], keys: Sequence[Key],
                 pairs: Sequence[tuple[Field, Field]]) -> FieldTable:
    """Cut the field's domain into elementary intervals, each labelled with its class and the class's key
    and pair summaries (``accepted``: what each filter accepts on the field; ``keys``: each filter's key
    fields; ``pairs``: the pair slots)."""
    # the summary each filter keyed here counts in: 0 the key summary, 1 + p pair slot p
    summary_of: dict[Key, int] = {(fld,): 0, **{pair: 1 + p for p, pair in enumerate(pairs) if fld in pair}}
    nsummaries = 1 + len(pairs)
    open_bits: list[int] = []
    events: dict[int, dict[int, list[tuple[int, int]]]] = {}  # family -> point -> [(bit, +1/-1)]
    for bit, ranges in enumerate(accepted):
        if not ranges:
            open_bits.append(bit)
        for family, lo, hi in ranges:
            at = events.setdefault(family, {})
            at.setdefault(lo, []).append((bit, 1))
            at.setdefault(hi + 1, []).append((bit, -1))
    all_filters = (1 << len(accepted)) - 1
    if not events:  # no filter constrains the field
        return FieldTable(fld, [all_filters], [], [0], [[0] for _ in pairs], all_filters=all_filters)
    open_mask = _mask(open_bits, len(accepted))
    classes: dict[int, int] = {open_mask: 0}
    # class id -> its summaries; class 0 holds no filter keyed here (they constrain the field)
    summaries = [(0,) * nsummaries]
    intervals: list[Interval] = []
    for family in sorted(events):
        cover: dict[int, int] = {}  # bit -> how many of its ranges cover the current point
        keyed_in_word: dict[tuple[int, int], int] = {}  # (summary, word) -> filters keyed here covering the point
        mask = 0
        current = [0] * nsummaries
        points = sorted(events[family])
        for i, point in enumerate(points[:-1]):
            for bit, delta in events[family][point]:
                was = cover.get(bit, 0)
                cover[bit] = was + delta
                if cover[bit]:
                    mask |= 1 << bit
                else:
                    mask &= ~(1 << bit)
                k = summary_of.get(keys[bit])
                if k is not None and (was == 0) != (cover[bit] == 0):  # a filter keyed here entered or left
                    word = bit >> 6
                    n = keyed_in_word[(k, word)] = keyed_in_word.get((k, word), 0) + delta
                    current[k] = current[k] | 1 << word if n else current[k] & ~(1 << word)
            if not mask:
                continue
            cls = classes.setdefault(open_mask | mask, len(classes))
            if cls == len(summaries):
                summaries.append(tuple(current))
            lo, hi = point, points[i + 1] - 1
            last = intervals[-1] if intervals else None
            if last and (last.family, last.cls, last.hi + 1) == (family, cls, lo):
                intervals[-1] = Interval(family, last.lo, hi, cls)
            else:
                intervals.append(Interval(family, lo, hi, cls))
    by_id = sorted(classes, key=classes.__getitem__)
    return FieldTable(fld, by_id, intervals, [c[0] for c in summaries],
                      [[c[1 + p] for c in summaries] for p in range(len(pairs))], all_filters=all_filters)


def build_tables(rs: CompiledRuleSet) -> ClassifierTables:
    """The classifier tables of ``rs`` (see the module docstring)."""
    return tables_of(rs.rules, rs.generation)


def tables_of(rules: Sequence[CompiledRule], generation: int) -> ClassifierTables:
    """The classifier tables of ``rules``, in match order (``filter_rule`` indexes them): an engine that keeps
    dormant rules in its tables (CompiledRuleSet.kept) passes them with the enforced ones, and ANDs
    ``enabled_filters`` into every match."""
    filters: list[CompiledFilter] = []
    filter_rule: list[int] = []
    flow_bits: list[int] = []
    for slot, rule in enumerate(rules):
        for f in rule.filters:
            if rule.flow:
                flow_bits.append(len(filters))
            filters.append(f)
            filter_rule.append(slot)
    accepted = {fld: [ranges(f) for f in filters] for fld, ranges in _ACCEPTED.items()}
    keys, pairs = _keys(accepted, len(filters))
    tables = ClassifierTables(generation, len(filters), filter_rule, _mask(flow_bits, len(filters)), pairs=pairs)
    for fld in Field:
        tables.fields[fld] = _field_table(fld, accepted[fld], keys, pairs)
    tables.unkeyed = sum({1 << (bit >> 6) for bit, key in enumerate(keys) if not key})
    tables.keyed_fields = sum({1 << key[0] for key in keys if len(key) == 1})
    return tables


_BINARY = bytes.maketrans(b"\x00\x01", b"01")


def enabled_filters(tables: ClassifierTables, enforced: Iterable[bool]) -> int:
    """The mask of the filters whose rule (``filter_rule``'s index into ``enforced``) is enforced.

    Built from byte strings, loops in C (an XDP apply runs it for every rule set: ~0.5 ms at 12,904
    filters, where a Python loop over them took ~4 ms)."""
    per_rule = bytes(enforced)
    per_filter = bytes(map(per_rule.__getitem__, tables.filter_rule))
    return int(per_filter.translate(_BINARY)[::-1], 2) if per_filter else 0


# An address field's IPv4 first level: at most 2^ADDR4_BUCKET_BITS buckets over the span of its intervals.
ADDR4_BUCKET_BITS = 10


@dataclass(frozen=True, slots=True)
class Ipv4Index:
    """An address field's IPv4 intervals (``lo``, ``hi``, ``cls``: sorted, disjoint) and their first level,
    as both engines search them (docs/classifier.md).

    Bucket b covers ``lo[0] + (b << shift)`` up to the next bucket's start. The
    interval holding a value of bucket b, if any, is one of ``starts[b]`` ..
    ``starts[b + 1]`` (the first interval ending at or after the bucket's start,
    through the first ending at or after the next one's): a binary search over
    their ends finds the first ending at or after the value, which holds it when
    it starts at or before it (and is not past the last).
    """

    lo: list[int]
    hi: list[int]
    cls: list[int]
    shift: int
    starts: list[int]  # one per bucket, then len(lo)


def ipv4_index(table: FieldTable) -> Ipv4Index:
    """``table``'s IPv4 intervals with their first level (no intervals: no buckets)."""
    v4 = [iv for iv in table.intervals if iv.family == 4]
    if not v4:
        return Ipv4Index([], [], [], 0, [0])
    span = v4[-1].hi - v4[0].lo
    shift = max(0, span.bit_length() - ADDR4_BUCKET_BITS)
    his = [iv.hi for iv in v4]
    starts = [bisect_left(his, v4[0].lo + (b << shift)) for b in range((span >> shift) + 1)]
    return Ipv4Index([iv.lo for iv in v4], his, [iv.cls for iv in v4], shift, starts + [len(v4)])


def iter_value_classes(table: FieldTable) -> Iterable[tuple[int, int, int]]:
    """(lo, hi, class) runs covering a value field's whole domain plus its absent value."""
    domain = VALUE_DOMAIN[table.field]
    nxt = 0
    for iv in table.intervals:
        if iv.lo > nxt:
            yield nxt, iv.lo - 1, 0
        yield iv.lo, iv.hi, iv.cls
        nxt = iv.hi + 1
    if nxt < domain:
        yield nxt, domain - 1, 0
    yield domain, domain, 0


def packet_values(p: Parsed, reverse: bool = False) -> dict[Field, tuple[int, int] | None]:
    """The (family, value) a packet presents to each field; None when absent.

    ``reverse`` swaps sources and destinations (addresses, ports, tunnel
    addresses and ports) for the FLOW lookup. Value fields use family 0.
    """
    src, dst = (p.dst, p.src) if reverse else (p.src, p.dst)
    sport, dport = (p.dport, p.sport) if reverse else (p.sport, p.dport)
    tsrc, tdst = (p.tun_dst, p.tun_src) if reverse else (p.tun_src, p.tun_dst)
    tsport, tdport = (p.tun_dport, p.tun_sport) if reverse else (p.tun_sport, p.tun_dport)
    tunnel = p.tunnel
    return {
        Field.SRC: (p.family, src),
        Field.DST: (p.family, dst),
        Field.TUN_SRC: (p.tun_family, tsrc) if tunnel else None,
        Field.TUN_DST: (p.tun_family, tdst) if tunnel else None,
        Field.SPORT: None if sport is None else (0, sport),
        Field.DPORT: None if dport is None else (0, dport),
        Field.TUN_SPORT: (0, tsport) if tunnel else None,
        Field.TUN_DPORT: (0, tdport) if tunnel else None,
        Field.PROTO: (0, p.proto),
        Field.VLAN: None if p.vlan is None else (0, p.vlan),
        Field.DSCP: (0, p.dscp) if p.family == 4 and p.dscp is not None else None,
        Field.TC: (0, p.tc) if p.family == 6 and p.tc is not None else None,
        Field.QFI: None if p.qfi is None else (0, p.qfi),
    }


def class_of(table: FieldTable, value: tuple[int, int] | None) -> int:
    """The class a field value falls in (binary search over the sorted intervals)."""
    if value is None:
        return 0
    ivs = table.intervals
    lo, hi = 0, len(ivs)
    while lo < hi:
        mid = (lo + hi) // 2
        iv = ivs[mid]
        if (iv.family, iv.hi) < value:
            lo = mid + 1
        else:
            hi = mid
    if lo < len(ivs) and ivs[lo].family == value[0] and ivs[lo].lo <= value[1] <= ivs[lo].hi:
        return ivs[lo].cls
    return 0


def lookup(tables: ClassifierTables, p: Parsed, enabled: int | None = None) -> tuple[int, bool] | None:
    """(rule index, reverse) of the first matching filter among ``enabled`` (default: all), as the engines
    compute it.

    A pure-Python model of the native classifiers, tested against
    ``reference.classify``; never on a hot path. Like XDP's, it ANDs only the
    words the key summaries name.
    """
    def first(values: dict[Field, tuple[int, int] | None], mask: int) -> int | None:
        candidates = tables.unkeyed
        cls: dict[Field, int] = {}
        for fld, table in tables.fields.items():
            cls[fld] = class_of(table, values[fld])
            mask &= table.classes[cls[fld]]
            candidates |= table.key_summaries[cls[fld]]
        for p, (a, b) in enumerate(tables.pairs):
            candidates |= tables.fields[a].pair_summaries[p][cls[a]] & tables.fields[b].pair_summaries[p][cls[b]]
        mask &= word_mask(candidates, tables.nwords)
        return (mask & -mask).bit_length() - 1 if mask else None

    everything = (1 << tables.nfilters) - 1 if enabled is None else enabled
    fwd = first(packet_values(p), everything)
    flows = tables.flow_mask & everything
    rev = first(packet_values(p, reverse=True), flows) if flows else None
    if fwd is None and rev is None:
        return None
    if rev is None or (fwd is not None and tables.filter_rule[fwd] <= tables.filter_rule[rev]):
        assert fwd is not None
        return tables.filter_rule[fwd], False
    return tables.filter_rule[rev], True
