"""The numbers the BPF program and Python share, and the cflags that carry them.

Written once, here or in the module named beside each group, and passed to
the C as -D flags (consts.h refuses to compile without them):

- capacities: from ``dataplane.capacity`` (mep/config.py);
- field ids and value-domain bases: from mep/dataplane/tables.py;
- action and target codes: ``ActionCode`` below and ruleset.TargetKind;
- reason count: from ebpf/reasons.h (via reasons.py).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from ...config import Capacity, PortRole
from ...models import TrafficRuleAction
from ..reasons import FibOutcome, Reason
from ..ruleset import TargetKind
from ..tables import ADDR4_BUCKET_BITS, ADDRESS_FIELDS, MAX_KEY_PAIRS, VALUE_DOMAIN, VALUE_FIELDS, Field
from .counters import slots_for

__all__ = ["ActionCode", "ACTION_CODE", "ROLE_CODE", "ROLE_MIRROR", "MAX_IFINDEX", "Sizes", "VALUE_BASE",
           "VALUE_SPACE", "cflags", "update_batch"]

# mep_port_of is an array indexed by ifindex; a larger ifindex cannot be a port.
MAX_IFINDEX = 65536


class ActionCode(IntEnum):
    DROP = 1
    PASSTHROUGH = 2
    FORWARD = 3
    DUPLICATE = 4


ACTION_CODE: dict[TrafficRuleAction, ActionCode] = {
    TrafficRuleAction.DROP: ActionCode.DROP,
    TrafficRuleAction.PASSTHROUGH: ActionCode.PASSTHROUGH,
    TrafficRuleAction.FORWARD_DECAPSULATED: ActionCode.FORWARD,
    TrafficRuleAction.FORWARD_ENCAPSULATED: ActionCode.FORWARD,
    TrafficRuleAction.DUPLICATE_DECAPSULATED: ActionCode.DUPLICATE,
    TrafficRuleAction.DUPLICATE_ENCAPSULATED: ActionCode.DUPLICATE,
}

# Port roles as consts.h numbers them (MEP_ROLE_*; MIRROR is the engine's own).
ROLE_CODE: dict[PortRole, int] = {PortRole.N6: 1, PortRole.DN: 2, PortRole.APP: 3}
ROLE_MIRROR = 4

# Layout of mep_value_class within one half: each value field's domain plus its absent value.
VALUE_BASE: dict[Field, int] = {}
_next = 0
for _f in VALUE_FIELDS:
    VALUE_BASE[_f] = _next
    _next += VALUE_DOMAIN[_f] + 1
VALUE_SPACE = _next
# Words of a block of mep_vec_blocks (a cache line): class vectors and their summaries are stored as blocks
BLOCK_WORDS = 8
# Buckets of an address field's IPv4 first level (mep_addr4 holds one more entry a field).
ADDR4_BUCKETS = 1 << ADDR4_BUCKET_BITS


@dataclass(frozen=True)
class Sizes:
    """Every map size, derived from the configured capacity."""

    rules: int
    filters: int
    vectors: int  # classes of all fields together, per half
    blocks: int  # distinct blocks of vector and summary words, per half (mep_vec_blocks): a power of two
    prefixes: int  # LPM entries (IPv6 addresses), both halves
    addr4: int  # IPv4 intervals of the address fields together, in one half (mep_addr4)
    flows: int
    flow_cache_sets: int  # per CPU, a power of two; two flows a set
    dns_names: int = 64
    ports: int = 64
    fib_cache_slots: int = 1  # per CPU (mep_fib_cache, ebpf/fib.h); one unless dataplane.fib_forward

    @classmethod
    def from_capacity(cls, capacity: Capacity, *, fib_forward: bool = False) -> "Sizes":
        # Classes of all thirteen fields together: 1.54 per filter for the
        # notes' 10,000-rule mix (19,940 for 12,991 filters); 1.5 per filter
        # plus a margin, and a rule set that needs more is refused (CapacityError).
        vectors = capacity.filters + capacity.filters // 2 + 1024
        flow_cache_sets = max(512, 1 << (max(1, capacity.flows // 2 // possible_cpus()).bit_length() - 1))
        return cls(
            rules=capacity.rules,
            filters=capacity.filters,
            vectors=vectors,
            # A class vector shares all but a block or two with its field's
            # other classes, and most summaries repeat: the notes' 10,000-rule
            # mix holds 34,623 distinct blocks for its 19,091 vectors (1.8 a
            # vector); two a vector, rounded up to a power of two (the program
            # masks a block's index).
            blocks=1 << (2 * vectors - 1).bit_length(),
            prefixes=2 * (4 * capacity.filters + 1024),
            # two interval ends a filter address on two address fields,
            # and a margin (the four fields share them)
            addr4=2 * (2 * capacity.filters + 1024),
            flows=capacity.flows,
            # The flow cache is per CPU: the configured flows spread over the
            # possible CPUs, two a set, rounded down to a power of two.
            flow_cache_sets=flow_cache_sets,
            dns_names=capacity.dns_names,
            # The FIB cache holds a forwarded flow's next hop (80 bytes): one slot per flow cache set,
            # so a slot two flows share costs one of them a lookup now and then.
            fib_cache_slots=flow_cache_sets if fib_forward else 1,
        )

    @property
    def words(self) -> int:
        return (self.filters + 63) // 64


def possible_cpus() -> int:
    """CPUs the kernel sizes per-CPU maps for (/sys/devices/system/cpu/possible, e.g. "0-1")."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


# + a load's id: the pin of that load's tail-call table (maps.h mep_progs); bpffs refuses dots in names
PROGS_PIN_PREFIX = "mep_progs_"


def progs_pin(pin_dir: Path, load_id: str) -> Path:
    """Where the load ``load_id`` pins its tail-call table (maps.h mep_progs, MEP_PIN_PROGS)."""
    return pin_dir / (PROGS_PIN_PREFIX + load_id)


def cflags(sizes: Sizes, pin_dir: Path, *, load_id: str = "0", debug: bool = False) -> list[str]:
    """The -D and -I flags the program is compiled with; `mep doctor -v` prints them.

    ``load_id`` names this load's pinned tail-call table (XdpEngine gives each load its own)."""
    defs: dict[str, object] = {
        "MEP_MAX_RULES": sizes.rules,
        "MEP_RULE_COUNTER_SLOTS": slots_for(sizes.rules),  # maps/counters.py: in force + two retiring generations
        "MEP_MAX_FILTERS": sizes.filters,
        "MEP_MAX_VECTORS": sizes.vectors,
        "MEP_MAX_BLOCKS": sizes.blocks,
        "MEP_BLOCK_WORDS": BLOCK_WORDS,
        "MEP_MAX_PREFIXES": sizes.prefixes,
        "MEP_MAX_ADDR4": sizes.addr4,
        "MEP_ADDR4_BUCKETS": ADDR4_BUCKETS,
        "MEP_ADDR4_STEPS": sizes.addr4.bit_length(),  # a binary search over at most addr4 intervals
        "MEP_FLOW_CAPACITY": sizes.flows,
        "MEP_FLOW_CACHE_BUCKETS": sizes.flow_cache_sets,
        "MEP_FIB_CACHE_SLOTS": sizes.fib_cache_slots,
        "MEP_MAX_PORTS": sizes.ports,
        "MEP_VALUE_SPACE": VALUE_SPACE,
        "MEP_MAX_IFINDEX": MAX_IFINDEX,
        "MEP_NFIELDS": len(Field),
        "MEP_KEY_PAIRS": MAX_KEY_PAIRS,
        "MEP_NREASONS": max(Reason) + 1,
        "MEP_NFIB_OUTCOMES": max(FibOutcome) + 1,
        "MEP_PIN_DIR": f'"{pin_dir}"',
        "MEP_PIN_PROGS": f'"{progs_pin(pin_dir, load_id)}"',
    }
    for f in Field:
        defs[f"MEP_F_{f.name}"] = int(f)
    for f in VALUE_FIELDS:
        defs[f"MEP_VBASE_{f.name}"] = VALUE_BASE[f]
        defs[f"MEP_VDOM_{f.name}"] = VALUE_DOMAIN[f]
    for code in ActionCode:
        defs[f"MEP_ACTION_{code.name}"] = int(code)
    for kind in TargetKind:
        defs[f"MEP_TARGET_{kind.name}"] = int(kind)
    if debug:
        defs["MEP_DEBUG"] = 1
    from .dns import dns_cflags  # imported here: maps/dns.py depends on mep.dns, which needs the config
    assert len(ADDRESS_FIELDS) == 4 and all(f < 4 for f in ADDRESS_FIELDS)  # classify.h: f < 4 are addresses
    ebpf = Path(__file__).resolve().parent.parent / "ebpf"
    return [f"-I{ebpf}"] + [f"-D{k}={v}" for k, v in defs.items()] + dns_cflags(sizes.dns_names)


# Entries per BPF_MAP_UPDATE_BATCH call: bounds the ctypes arrays built for one call.
_BATCH = 4096


def update_batch(table: Any, keys: Sequence[Any], leaves: Sequence[Any]) -> None:
    """Write ``leaves`` at ``keys`` (the table's Key and Leaf instances), thousands an update call;
    OSError if the kernel refuses."""
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start:start + _BATCH]
        ckeys = (table.Key * len(chunk))(*chunk)
        cvals = (table.Leaf * len(chunk))(*leaves[start:start + _BATCH])
        try:
            table.items_update_batch(ckeys, cvals)
        except Exception as exc:  # bcc raises a bare Exception with strerror
            raise OSError(str(exc)) from exc
