"""Owner of the classifier maps: mep_addr4, mep_addr_class, mep_value_class, mep_vectors,
mep_vec_blocks, mep_filter_rule.

``ClassifierMaps.write(half, tables)`` makes one half of the double buffer
hold ``tables`` (mep/dataplane/tables.py), writing only what differs from
what that half held before (a Python mirror per half). A half whose contents
are unknown (maps adopted from a previous control plane) is rewritten whole.

Vector layout within a half: index 0 is the all-ones vector (fields no
filter uses point there), index 1 the filters of the rules enforced
(ENABLED: the tables may hold dormant rules' filters too, ANDed out by it),
then the FLOW filters' mask (enforced ones only) when there are FLOW rules,
then each used field's classes in field order. A vector's ``key`` words hold
its key summary (tables.py): a class's, the all-ones vector's the words of
the filters that constrain no field, 0 for the others; its ``pair`` words a
class's pair summaries, one per key pair slot (``Layout.pairs``). ``Layout`` records it for
mep_sets (maps/ruleset.py). The classes depend on the filters only, so a
change of which rules are enforced writes vectors 1 and the FLOW mask.

Blocks: mep_vectors holds, per vector, the indexes of its summaries'
blocks (a block each) and of its own in the half's pool (mep_vec_blocks,
BLOCK_WORDS words a block). A half holds each distinct block once
(``_Pool``): a class vector is its field's open filters but for a block or
two, and most summaries repeat, so the notes' 10,000-rule mix needs 34,623
blocks (2.1 MiB) where its dense vectors took 29 MiB a half. The pools and
the vectors are each one map value a half, written through a shared
memory mapping of the map (BPF_F_MMAPABLE), a block or a vector at a
time. A block is rewritten only while no vector of the half names it, and
a half only while it is not in force: a packet never reads a block under
change.

Address classes: IPv4 as each address field's sorted intervals with their
first level (tables.ipv4_index) in mep_addr4, the counts
and bounds in ``Layout.addr4`` (mep_sets); IPv6 as prefixes in the LPM trie
mep_addr_class.
"""
from __future__ import annotations

import collections
import ctypes as ct
import dataclasses
import itertools
import mmap
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional

from ...errors import CapacityError, MapWriteError, RuleProblem
from ..tables import (ADDRESS_FIELDS, MAX_KEY_PAIRS, VALUE_DOMAIN, VALUE_FIELDS, ClassifierTables, Field,
                      Ipv4Index, ipv4_index)
from .abi import ADDR4_BUCKETS, BLOCK_WORDS, VALUE_BASE, VALUE_SPACE, Sizes, update_batch

__all__ = ["Layout", "ClassifierMaps", "Prepared", "NO_VECTOR"]

NO_VECTOR = 0xFFFF_FFFF
ALL_ONES = 0
ENABLED = 1  # consts.h MEP_ENABLED_VECTOR
_serials = itertools.count(1)

AddrEntry = tuple[int, int, int, int]  # (field, family, network, prefix length): IPv6
# (intervals, first start, last end, shift, first row in mep_addr4) of a field's IPv4 index
Addr4Header = tuple[int, int, int, int, int]
Addr4Entry = tuple[int, int, int]  # (lo, hi, class): one IPv4 interval
# (filter bitmask, summaries): one mep_vectors value; the summaries are the key summary, then one per
# key pair slot (missing ones are 0)
Vector = tuple[int, tuple[int, ...]]
Block = bytes  # BLOCK_WORDS little-endian words: of a vector (word 0 = filters 0..63 of the block) or a summary
# A mep_vectors value by content: its blocks in use (the rest name the zero block), then its summaries' blocks
# (the key summary, then one per pair slot)
Encoded = tuple[Block, ...]
_BLOCK_BYTES = 8 * BLOCK_WORDS
_ZERO = bytes(_BLOCK_BYTES)
_ROW = struct.Struct("<III")  # struct addr4_iv: lo, hi, class
_FIRST = struct.Struct("<I")  # an entry of struct addr4_index's first level
_ROWS_AT = len(ADDRESS_FIELDS) * (ADDR4_BUCKETS + 1) * _FIRST.size  # offsetof(struct addr4_index, bytes)


@dataclass(frozen=True)
class Layout:
    """Where a half's vectors are: copied into mep_sets by maps/ruleset.py."""

    nwords: int
    used_fields: int
    keyed_fields: int
    vector_base: tuple[int, ...]  # per field
    flow_vector: int  # NO_VECTOR when there are no FLOW rules
    vectors: int
    pairs: tuple[tuple[int, int], ...] = ()  # key pair slot -> its two fields (tables.pairs)
    addr4: tuple[Addr4Header, ...] = ((0, 0, 0, 0, 0),) * len(ADDRESS_FIELDS)  # per address field


@dataclass
class _Half:
    source: int = 0  # the Prepared.serial written whole into the half, 0: none (or since changed)
    addr: dict[AddrEntry, int] = field(default_factory=dict)
    values: dict[int, int] = field(default_factory=dict)  # index -> class, the non-zero entries only
    vectors: dict[int, Encoded] = field(default_factory=dict)
    blocks: "_Pool" = field(default_factory=lambda: _Pool())
    filter_rule: list[int] = field(default_factory=list)
    addr4: dict[int, Addr4Entry] = field(default_factory=dict)  # mep_addr4 index in the half -> entry
    addr4_first: dict[int, int] = field(default_factory=dict)  # first-level entry in the half -> first interval


@dataclass(frozen=True)
class Prepared:
    """Tables checked against the maps' sizes, in the form the maps take: ``write`` them."""

    tables: ClassifierTables
    layout: Layout
    vectors: dict[int, Encoded]
    addr: dict[AddrEntry, int]
    addr4: dict[int, Addr4Entry]  # mep_addr4 index within a half -> IPv4 interval (used address fields)
    addr4_first: dict[int, int]  # first-level entry (field's, then bucket) within a half -> its first interval
    serial: int = field(default_factory=lambda: next(_serials))  # names it for ``write``'s shortcut


def _layout(tables: ClassifierTables, sizes: Sizes) -> tuple[Layout, dict[int, Vector]]:
    """The half's vector layout and every vector; ``write`` replaces those that depend on which rules are
    enforced (ENABLED and the FLOW mask)."""
    all_filters = (1 << tables.nfilters) - 1
    vectors: dict[int, Vector] = {ALL_ONES: (all_filters, (tables.unkeyed,)), ENABLED: (all_filters, ())}
    flow_vector = NO_VECTOR
    if tables.flow_mask:
        flow_vector = len(vectors)
        vectors[flow_vector] = (tables.flow_mask, ())
    base = []
    used = tables.used_fields
    for f in Field:
        if not used & (1 << f):
            base.append(ALL_ONES)
            continue
        base.append(len(vectors))
        table = tables.fields[f]
        for cls, mask in enumerate(table.classes):
            vectors[len(vectors)] = (mask, (table.key_summaries[cls], *(p[cls] for p in table.pair_summaries)))
    layout = Layout(tables.nwords, used, tables.keyed_fields, tuple(base), flow_vector, len(vectors),
                    pairs=tuple((int(a), int(b)) for a, b in tables.pairs))
    return layout, vectors


def _encode(vector: Vector, nwords: int) -> Encoded:
    """``vector`` as the contents of its blocks: the ``nwords`` words in use, then its summaries."""
    mask, summaries = vector
    raw = mask.to_bytes(-(-nwords // BLOCK_WORDS) * _BLOCK_BYTES, "little")
    return (*(raw[i:i + _BLOCK_BYTES] for i in range(0, len(raw), _BLOCK_BYTES)),
            *(s.to_bytes(_BLOCK_BYTES, "little") for s in summaries), *(_ZERO,) * (1 + MAX_KEY_PAIRS - len(summaries)))


@dataclass
class _Pool:
    """The blocks of a half: the index of each distinct content, and how many vector slots name it.

    Indexes a write frees (no vector names their block any more) are reused
    by the next write of the half, whose new blocks are written before the
    vectors that name them."""

    ids: dict[Block, int] = field(default_factory=dict)
    refs: collections.Counter[Block] = field(default_factory=collections.Counter)
    free: list[int] = field(default_factory=list)  # popped from the end: lowest index first

    @classmethod
    def of(cls, vectors: Iterable[Encoded], capacity: int, old: Optional["_Pool"]) -> tuple["_Pool", dict[int, Block]]:
        """The pool for ``vectors``, keeping the index of every block ``old`` held too; and the blocks to write."""
        refs = collections.Counter(block for encoded in vectors for block in encoded)
        ids = {block: old.ids[block] for block in refs if block in old.ids} if old else {}
        kept = set(ids.values())
        pool = cls(ids, refs, [i for i in range(capacity - 1, -1, -1) if i not in kept])
        return pool, {pool.place(block): block for block in refs if block not in ids}

    def place(self, block: Block) -> int:
        """A free index for a new block."""
        if not self.free:  # prepare() counted the blocks against the capacity
            raise MapWriteError("mep_vec_blocks: no free block (prepare() let a rule set past its capacity)")
        self.ids[block] = index = self.free.pop()
        return index

    def replace(self, old: Encoded, new: Encoded) -> dict[int, Block]:
        """One vector's slots change from ``old`` to ``new``; returns the blocks to write."""
        written = {}
        for block in new:
            if not self.refs[block]:
                written[self.place(block)] = block
            self.refs[block] += 1
        for block in old:
            self.refs[block] -= 1
            if not self.refs[block]:
                del self.refs[block]
                self.free.append(self.ids.pop(block))
        return written


def _mapped(table: Any) -> tuple[mmap.mmap, int]:
    """A two-entry array map of one half a value, memory-mapped (BPF_F_MMAPABLE), and the offset of the second
    half (an array map's elements are 8-byte aligned)."""
    stride = -(-ct.sizeof(table.Leaf) // 8) * 8
    return mmap.mmap(table.get_fd(), 2 * stride), stride


def _addr_entries(tables: ClassifierTables, layout: Layout) -> dict[AddrEntry, int]:
    entries: dict[AddrEntry, int] = {}
    for f in ADDRESS_FIELDS:
        if not layout.used_fields & (1 << f):
            continue
        for iv in tables.fields[f].intervals:
            if iv.family == 6:  # IPv4: mep_addr4
                for net, plen in iv.prefixes():
                    entries[(int(f), iv.family, net, plen)] = iv.cls
    return entries


def _addr4_entries(indexes: dict[Field, Ipv4Index], starts: dict[Field, int]) -> tuple[dict[int, Addr4Entry],
                                                                                       dict[int, int]]:
    """A half's mep_addr4 rows and first-level entries (index within the half -> value) for these fields,
    each field's intervals from its row in ``starts``."""
    entries: dict[int, Addr4Entry] = {}
    firsts: dict[int, int] = {}
    for f, index in indexes.items():
        row, first = starts[f], f * (ADDR4_BUCKETS + 1)
        entries.update((row + i, e) for i, e in enumerate(zip(index.lo, index.hi, index.cls)))
        firsts.update((first + b, start) for b, start in enumerate(index.starts))
    return entries, firsts


def _value_entries(tables: ClassifierTables, layout: Layout) -> dict[int, int]:
    """The non-zero entries of a half's value-class array (index within the half -> class).

    Sparse on purpose: comparing two whole 266,889-entry arrays in Python
    cost 54 ms per apply; a rule set touches a few thousand entries."""
    values: dict[int, int] = {}
    for f in VALUE_FIELDS:
        if not layout.used_fields & (1 << f):
            continue
        base = VALUE_BASE[f]
        for iv in tables.fields[f].intervals:
            for v in range(iv.lo, min(iv.hi, VALUE_DOMAIN[f] - 1) + 1):
                values[base + v] = iv.cls
    return values


class ClassifierMaps:
    """The classifier maps of one loaded program."""

    MAPS = ("mep_addr4", "mep_addr_class", "mep_value_class", "mep_vectors", "mep_vec_blocks",
            "mep_filter_rule")

    def __init__(self, bpf: Any, sizes: Sizes, *, contents_known: bool) -> None:
        self._addr = bpf["mep_addr_class"]
        self._addr4, self._addr4_stride = _mapped(bpf["mep_addr4"])
        self._values, self._values_stride = _mapped(bpf["mep_value_class"])
        self._vectors, self._vectors_stride = _mapped(bpf["mep_vectors"])
        # struct vec: the indexes of its summaries' blocks padded to whole words, then of its own blocks, in
        # whole words; two bytes an index while they suffice
        index = 2 if sizes.blocks <= 1 << 16 else 4
        sums = -(-(1 + MAX_KEY_PAIRS) * index // 8) * 8 // index
        self._vec_blocks = -(-sizes.words // BLOCK_WORDS)
        self._vec = struct.Struct(f"<{sums + self._vec_blocks}{'H' if index == 2 else 'I'}"
                                  f"{-(sums + self._vec_blocks) * index % 8}x")
        self._vec_padding = sums - 1 - MAX_KEY_PAIRS
        self._pools, self._pool_stride = _mapped(bpf["mep_vec_blocks"])
        self._filter_rule = bpf["mep_filter_rule"]
        self._sizes = sizes
        # None: what the half holds is unknown (adopted maps); rewrite it whole.
        self._halves: list[Optional[_Half]] = [_Half(), _Half()] if contents_known else [None, None]

    def close(self) -> None:
        """Unmap the maps written through memory (a mapping holds its map, as a file descriptor does)."""
        for mapped in (self._addr4, self._values, self._vectors, self._pools):
            mapped.close()

    def prepare(self, tables: ClassifierTables) -> Prepared:
        """``tables`` laid out for the maps; CapacityError when they do not fit the loaded program's."""
        layout, logical = _layout(tables, self._sizes)
        vectors = {i: _encode(v, tables.nwords) for i, v in logical.items()}
        # The two vectors write() replaces (ENABLED, FLOW) name blocks of filters of their own (their summaries
        # are the zero block); replaced one at a time, a vector's new blocks are placed before its old ones are
        # freed: three vectors' worth at most
        blocks = (len({block for encoded in vectors.values() for block in encoded})
                  + 3 * -(-tables.nwords // BLOCK_WORDS))
        addr = _addr_entries(tables, layout)
        addr4 = {f: ipv4_index(tables.fields[f]) for f in ADDRESS_FIELDS if layout.used_fields & (1 << f)}
        headers = [(0, 0, 0, 0, 0)] * len(ADDRESS_FIELDS)
        starts, rows = {}, 0
        for f, index in addr4.items():
            starts[f], rows = rows, rows + len(index.lo)
            if index.lo:
                headers[f] = (len(index.lo), index.lo[0], index.hi[-1], index.shift, starts[f])
        layout = dataclasses.replace(layout, addr4=tuple(headers))
        problems = []
        for what, have, limit in (
            ("traffic filters", tables.nfilters, self._sizes.filters),
            ("classifier vectors", len(vectors), self._sizes.vectors),
            ("classifier vector blocks", blocks, self._sizes.blocks),
            ("IPv6 address prefixes", len(addr), self._sizes.prefixes // 2),
            ("IPv4 address intervals (" + ", ".join(f"{len(addr4[f].lo)} of field {f.name}" for f in addr4) + ")",
             rows, self._sizes.addr4),
        ):
            if have > limit:
                problems.append(RuleProblem("*", "*", "dataplane.capacity",
                                            f"{have} {what} exceed the loaded program's {limit}"))
        if problems:
            raise CapacityError(problems)
        entries, firsts = _addr4_entries(addr4, starts)
        return Prepared(tables, layout, vectors, addr, entries, firsts)

    def holds(self, half: int, prepared: Prepared) -> bool:
        """``half`` was last written from ``prepared`` (a write of it then changes two vectors at most)."""
        old = self._halves[half]
        return old is not None and old.source == prepared.serial

    def write(self, half: int, prepared: Prepared, enabled: int) -> Layout:
        """Make ``half`` hold the prepared tables with ``enabled`` (the filters of the rules enforced);
        only the differences are written (just the ENABLED and FLOW vectors when the half was last
        written from this very ``prepared``)."""
        tables, layout = prepared.tables, prepared.layout
        dynamic = {ENABLED: _encode((enabled, ()), layout.nwords)}
        if layout.flow_vector != NO_VECTOR:
            dynamic[layout.flow_vector] = _encode((tables.flow_mask & enabled, ()), layout.nwords)
        old = self._halves[half]
        try:
            if self.holds(half, prepared):
                assert old is not None
                changed = {i: e for i, e in dynamic.items() if old.vectors[i] != e}
                written: dict[int, Block] = {}
                for i, encoded in changed.items():
                    written |= old.blocks.replace(old.vectors[i], encoded)
                self._write_vectors(half, written, changed, old.blocks)
                old.vectors.update(changed)
                return layout
            new = _Half(source=prepared.serial, addr=prepared.addr, values=_value_entries(tables, layout),
                        vectors=prepared.vectors | dynamic, filter_rule=list(tables.filter_rule))
            new.addr4, new.addr4_first = prepared.addr4, prepared.addr4_first
            self._write_addr4(half, old.addr4 if old else None, new.addr4, old.addr4_first if old else None,
                              new.addr4_first)
            self._write_addr(half, old.addr if old else None, new.addr)
            self._write_values(half, old.values if old else None, new.values)
            new.blocks, written = _Pool.of(new.vectors.values(), self._sizes.blocks, old.blocks if old else None)
            self._write_vectors(half, written, {i: e for i, e in new.vectors.items()
                                                if old is None or old.vectors.get(i) != e}, new.blocks)
            self._write_filter_rule(half, old.filter_rule if old else None, new.filter_rule)
        except OSError as exc:
            self._halves[half] = None  # partly written: unknown until rewritten whole
            raise MapWriteError(f"classifier maps, half {half}: {exc}") from exc
        self._halves[half] = new
        return layout

    # -- per map ----------------------------------------------------------------------
    def _addr_key(self, half: int, entry: AddrEntry) -> Any:
        f, family, net, plen = entry
        key = self._addr.Key()
        key.prefixlen = 24 + plen
        key.half, key.field, key.family = half, f, family
        raw = net.to_bytes(4 if family == 4 else 16, "big")
        ct.memmove(ct.addressof(key.addr), raw, len(raw))
        return key

    def _write_addr(self, half: int, old: Optional[dict[AddrEntry, int]], new: dict[AddrEntry, int]) -> None:
        if old is None:
            stale = [k for k in self._addr.keys() if k.half == half]
            for k in stale:
                del self._addr[k]
            old = {}
        for entry in old.keys() - new.keys():
            del self._addr[self._addr_key(half, entry)]
        leaf = self._addr.Leaf
        for entry, cls in new.items():
            if old.get(entry) != cls:
                self._addr[self._addr_key(half, entry)] = leaf(cls)

    def _write_addr4(self, half: int, old: Optional[dict[int, Addr4Entry]], new: dict[int, Addr4Entry],
                     old_first: Optional[dict[int, int]], new_first: dict[int, int]) -> None:
        """The half's IPv4 intervals and first levels that changed; entries past a field's count are never read
        (its header in mep_sets bounds the search), so stale ones stay."""
        base = half * self._addr4_stride
        for i, entry in new.items():
            if old is None or old.get(i) != entry:
                _ROW.pack_into(self._addr4, base + _ROWS_AT + i * _ROW.size, *entry)
        for i, start in new_first.items():
            if old_first is None or old_first.get(i) != start:
                _FIRST.pack_into(self._addr4, base + i * _FIRST.size, start)

    @staticmethod
    def _batch(table: Any, indexes: list[int], leaves: list[Any]) -> None:
        update_batch(table, [table.Key(i) for i in indexes], leaves)

    def _write_values(self, half: int, old: Optional[dict[int, int]], new: dict[int, int]) -> None:
        if old is None:  # unknown contents: every entry of the half
            changed = list(range(VALUE_SPACE))
        else:
            changed = sorted(i for i in old.keys() | new.keys() if old.get(i, 0) != new.get(i, 0))
        classes = memoryview(self._values).cast("I")  # the two halves' u32 classes, in key order
        base = half * (self._values_stride // 4)
        for i in changed:
            classes[base + i] = new.get(i, 0)
        classes.release()

    def _write_vectors(self, half: int, blocks: dict[int, Block], vectors: dict[int, Encoded], pool: _Pool) -> None:
        """The new ``blocks`` first, then the ``vectors`` that name them (a vector of the same contents as before
        names the same blocks: ``_Pool`` keeps the index of a block both hold)."""
        base = half * self._pool_stride
        for i, block in blocks.items():
            self._pools[base + i * _BLOCK_BYTES:base + (i + 1) * _BLOCK_BYTES] = block
        zero = pool.ids.get(_ZERO, 0)  # the blocks past the rule set's words: never read
        base = half * self._vectors_stride
        for i, encoded in vectors.items():
            nblocks = len(encoded) - 1 - MAX_KEY_PAIRS
            self._vec.pack_into(self._vectors, base + i * self._vec.size,
                                *[pool.ids[b] for b in encoded[nblocks:]], *[0] * self._vec_padding,
                                *[pool.ids[b] for b in encoded[:nblocks]], *[zero] * (self._vec_blocks - nblocks))

    def _write_filter_rule(self, half: int, old: Optional[list[int]], new: list[int]) -> None:
        changed = [i for i, slot in enumerate(new) if old is None or i >= len(old) or old[i] != slot]
        base = half * self._sizes.filters
        leaf = self._filter_rule.Leaf
        self._batch(self._filter_rule, [base + i for i in changed], [leaf(new[i]) for i in changed])
