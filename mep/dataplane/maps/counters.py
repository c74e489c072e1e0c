"""Owner of mep_rule_counters, mep_reason_counters and mep_fib_counters: slot allocation and per-CPU sums.

Rules count into a slot that stays theirs while they exist, across rule-set
generations, so a rule's counters survive updates. A removed rule's slot is
kept out of use for two more generations (the old half may still point at
it until the grace period after the next flip), its final totals are kept
for ``read()``, and it is zeroed before reuse. So an array serving up to N
rules at once has ``slots_for(N)`` = 3N slots (ebpf/maps.h sizes it so):
the rules in force plus two generations of retiring ones, whatever the
sequence of rule sets. A rule removed and added again continues from its
totals (as in the reference engine). Per-CPU slots need no atomics; sums
happen here, in user space. ``SlotCounters`` is that policy for any per-CPU
``{packets, bytes}`` array; the DNS answer counters use it too.
"""
from __future__ import annotations

import ctypes as ct
from typing import Any

from ...errors import CapacityError, RuleProblem
from ..engine import Counters, PacketBytes
from ..reasons import REASON_VERDICT, FibOutcome, Reason

__all__ = ["CounterMaps", "SlotCounters", "per_cpu_sum", "slots_for", "HELD_GENERATIONS"]

# Generations a removed rule's slot stays out of use (see the module docstring).
HELD_GENERATIONS = 2


def slots_for(capacity: int) -> int:
    """Counter slots an array needs to serve ``capacity`` rules at once through any sequence of swaps."""
    return capacity * (1 + HELD_GENERATIONS)


def per_cpu_sum(table: Any, index: int) -> PacketBytes:
    """Sum of the per-CPU ``{packets, bytes}`` values at ``index`` of a BPF_PERCPU_ARRAY."""
    total = PacketBytes()
    for per_cpu in table.getvalue(ct.c_uint32(index)):
        total.packets += per_cpu.packets
        total.bytes += per_cpu.bytes
    return total


class SlotCounters:
    """Rule id -> slot in a per-CPU counter array, slots ``first .. first + slots_for(capacity) - 1``.

    ``capacity_field`` names the configuration limit a CapacityError points at."""

    def __init__(self, table: Any, first: int, capacity: int, capacity_field: str,
                 slots: dict[int, int] | None = None) -> None:
        self._table = table
        self._capacity = capacity
        self._range = range(first, first + slots_for(capacity))
        self._field = capacity_field
        self._slots: dict[int, int] = dict(slots or {})  # rule id -> slot
        self._retiring: list[set[int]] = [set(), set()]  # slots freed one and two generations ago
        self._finals: dict[int, PacketBytes] = {}  # totals of rules while they had no slot

    @property
    def slots(self) -> dict[int, int]:
        return dict(self._slots)

    def adopt(self, slots: dict[int, int]) -> None:
        """Take over the slots a previous process gave out (restart adoption)."""
        self._slots.update(slots)

    def assign(self, rule_ids: list[int]) -> dict[int, int]:
        """Slots for the rules of the next generation: existing ones kept, new ones zeroed."""
        wanted = set(rule_ids)
        if len(wanted) > self._capacity:
            raise CapacityError([RuleProblem("*", "*", self._field,
                                             f"{len(wanted)} rules need a counter; the data plane was loaded "
                                             f"for {self._capacity}")])
        for rule_id in [r for r in self._slots if r not in wanted]:
            slot = self._slots.pop(rule_id)
            self._finals[rule_id] = self._plus_final(rule_id, per_cpu_sum(self._table, slot))
            self._retiring[0].add(slot)
        busy = set(self._slots.values()) | self._retiring[0] | self._retiring[1]
        free = (s for s in self._range if s not in busy)
        for rule_id in rule_ids:
            if rule_id in self._slots:
                continue
            found = next(free)  # never exhausted: at most capacity in force + 2 x capacity retiring
            self._zero(found)
            self._slots[rule_id] = found
        self._retiring = [set(), self._retiring[0]]
        return dict(self._slots)

    def _plus_final(self, rule_id: int, counted: PacketBytes) -> PacketBytes:
        before = self._finals.get(rule_id, PacketBytes())
        return PacketBytes(before.packets + counted.packets, before.bytes + counted.bytes)

    def _zero(self, slot: int) -> None:
        ncpu = len(self._table.getvalue(ct.c_uint32(slot)))
        self._table[ct.c_uint32(slot)] = (self._table.Leaf * ncpu)()

    def read(self) -> dict[int, PacketBytes]:
        """Totals per rule id; removed rules keep their final totals."""
        out = {rule_id: PacketBytes(t.packets, t.bytes) for rule_id, t in self._finals.items()}
        for rule_id, slot in self._slots.items():
            out[rule_id] = self._plus_final(rule_id, per_cpu_sum(self._table, slot))
        return out


class CounterMaps:
    """Counter slots of one loaded program."""

    def __init__(self, bpf: Any, max_rules: int, slots: dict[int, int] | None = None) -> None:
        self._rules = SlotCounters(bpf["mep_rule_counters"], 0, max_rules, "dataplane.capacity.rules", slots)
        self._reasons = bpf["mep_reason_counters"]
        self._fib = bpf["mep_fib_counters"]

    @property
    def slots(self) -> dict[int, int]:
        return self._rules.slots

    def assign(self, rule_ids: list[int]) -> dict[int, int]:
        return self._rules.assign(rule_ids)

    def read(self) -> Counters:
        counters = Counters()
        counters.rules.update(self._rules.read())
        for reason in Reason:
            pb = per_cpu_sum(self._reasons, int(reason))
            if pb.packets:
                counters.reasons[reason] = pb
                v = counters.verdicts[REASON_VERDICT[reason]]
                v.packets += pb.packets
                v.bytes += pb.bytes
        for outcome in FibOutcome:
            pb = per_cpu_sum(self._fib, int(outcome))
            if pb.packets:
                counters.fib[outcome] = pb
        return counters
