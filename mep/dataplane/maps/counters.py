"""Owner of mep_rule_counters and mep_reason_counters: slot allocation and per-CPU sums.

Rules count into a slot that stays theirs while they exist, across rule-set
generations, so a rule's counters survive updates. A removed rule's slot is
kept out of use for two more generations (the old half may still point at
it until the grace period after the next flip), its final totals are kept
for ``read()``, and it is zeroed before reuse. Per-CPU slots need no atomics;
sums happen here, in user space.
"""
from __future__ import annotations

import ctypes as ct
from typing import Any

from ...errors import CapacityError, RuleProblem
from ..engine import Counters, PacketBytes
from ..reasons import REASON_VERDICT, Reason

__all__ = ["CounterMaps"]


class CounterMaps:
    """Counter slots of one loaded program."""

    def __init__(self, bpf: Any, max_rules: int, slots: dict[int, int] | None = None) -> None:
        self._rules = bpf["mep_rule_counters"]
        self._reasons = bpf["mep_reason_counters"]
        self._max = max_rules
        self._slots: dict[int, int] = dict(slots or {})  # rule id -> slot
        self._retiring: list[set[int]] = [set(), set()]  # slots freed one and two generations ago
        self._finals: dict[int, PacketBytes] = {}  # totals of removed rules

    @property
    def slots(self) -> dict[int, int]:
        return dict(self._slots)

    def assign(self, rule_ids: list[int]) -> dict[int, int]:
        """Slots for the rules of the next generation: existing ones kept, new ones zeroed."""
        wanted = set(rule_ids)
        for rule_id in [r for r in self._slots if r not in wanted]:
            slot = self._slots.pop(rule_id)
            self._finals[rule_id] = self._sum(slot)
            self._retiring[0].add(slot)
        busy = set(self._slots.values()) | self._retiring[0] | self._retiring[1]
        free = (s for s in range(self._max) if s not in busy)
        for rule_id in rule_ids:
            if rule_id in self._slots:
                continue
            found = next(free, None)
            if found is None:
                raise CapacityError([RuleProblem("*", "*", "dataplane.capacity.rules",
                                                 f"no free counter slot among {self._max}")])
            self._zero(found)
            self._slots[rule_id] = found
            self._finals.pop(rule_id, None)
        self._retiring = [set(), self._retiring[0]]
        return dict(self._slots)

    def _zero(self, slot: int) -> None:
        leaf = self._rules.Leaf
        ncpu = len(self._rules.getvalue(ct.c_uint32(slot)))
        values = (leaf * ncpu)()
        self._rules[ct.c_uint32(slot)] = values

    def _sum(self, slot: int) -> PacketBytes:
        total = PacketBytes()
        for per_cpu in self._rules.getvalue(ct.c_uint32(slot)):
            total.packets += per_cpu.packets
            total.bytes += per_cpu.bytes
        return total

    def read(self) -> Counters:
        counters = Counters()
        for rule_id, totals in self._finals.items():
            counters.rules[rule_id] = PacketBytes(totals.packets, totals.bytes)
        for rule_id, slot in self._slots.items():
            counters.rules[rule_id] = self._sum(slot)
        for reason in Reason:
            pb = PacketBytes()
            for per_cpu in self._reasons.getvalue(ct.c_uint32(int(reason))):
                pb.packets += per_cpu.packets
                pb.bytes += per_cpu.bytes
            if pb.packets:
                counters.reasons[reason] = pb
                v = counters.verdicts[REASON_VERDICT[reason]]
                v.packets += pb.packets
                v.bytes += pb.bytes
        return counters
