"""Owner of the rule-set maps: mep_rules, mep_rule_index, mep_sets, mep_state.

A half is written completely (rules, the rule-id index, its header) before
``flip`` makes it the one in force: one 4-byte store in mep_state, so a
packet reads the old half or the new one, never a mix.
"""
from __future__ import annotations

import ctypes as ct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import MapWriteError
from ..ruleset import CompiledRule, CompiledRuleSet, IpAddr, Port, Target
from .abi import ACTION_CODE, Sizes, update_batch
from .classifier import Layout

__all__ = ["RulesetMaps", "HalfState"]


@dataclass(frozen=True)
class HalfState:
    """What mep_sets says about a half."""

    generation: int
    nrules: int


def _addr(dst: Any, addr: Optional[IpAddr]) -> None:
    if addr is None:
        return
    raw = addr.packed()
    ct.memmove(ct.addressof(dst), raw, len(raw))


def _mac(dst: Any, mac: bytes) -> None:
    ct.memmove(ct.addressof(dst), mac, 6)


class RulesetMaps:
    """The rule-set maps of one loaded program."""

    def __init__(self, bpf: Any, sizes: Sizes, *, contents_known: bool) -> None:
        self._rules = bpf["mep_rules"]
        self._index = bpf["mep_rule_index"]
        self._sets = bpf["mep_sets"]
        self._state = bpf["mep_state"]
        self._sizes = sizes
        self._active: Optional[int] = None  # mep_state's half, once read or written
        # What each half holds (None: unknown, adopted maps; read or rewritten whole): rule slot -> the
        # mep_rules value's bytes, and rule id -> slot (mep_rule_index).
        self._mirror: list[Optional[dict[int, bytes]]] = [{}, {}] if contents_known else [None, None]
        self._index_mirror: list[Optional[dict[int, int]]] = [{}, {}] if contents_known else [None, None]
        # rule id -> (the CompiledRule, its counter slot, its mep_rules value), encoded under _encoded_ports.
        self._encoded: dict[int, tuple[CompiledRule, int, bytes]] = {}
        self._encoded_ports: tuple[Port, ...] = ()
        # What each half's rule slots and index were last written from: (rules, counter slots, ports).
        self._written: list[Optional[tuple[tuple[CompiledRule, ...], dict[int, int], tuple[Port, ...]]]] = [None, None]

    # -- reading ------------------------------------------------------------------------
    def active(self) -> int:
        """The half in force (read once, then kept: this object is the only writer of mep_state)."""
        if self._active is None:
            self._active = int(self._state[ct.c_uint32(0)].active) & 1
        return self._active

    def half_state(self, half: int) -> HalfState:
        cfg = self._sets[ct.c_uint32(half)]
        return HalfState(int(cfg.generation), int(cfg.nrules))

    def counter_slots(self, half: int) -> dict[int, int]:
        """rule id -> counter slot of the rules a half holds (adoption after a restart)."""
        slots = {}
        for slot in range(self.half_state(half).nrules):
            rule = self._rules[ct.c_uint32(half * self._sizes.rules + slot)]
            slots[int(rule.rule_id)] = int(rule.counter)
        return slots

    # -- writing ------------------------------------------------------------------------
    def _encode_target(self, dst: Any, target: Target, rs: CompiledRuleSet) -> None:
        port = rs.port(target.port)
        dst.kind = int(target.kind)
        dst.port = target.port
        dst.mtu = port.mtu if port else 0xFFFF
        _mac(dst.src_mac, target.src_mac)
        _mac(dst.dst_mac, target.dst_mac)
        if target.new_dst_ip is not None:
            dst.rewrite = 1
            dst.family = target.new_dst_ip.family
            _addr(dst.new_dst, target.new_dst_ip)
        if target.tunnel_src is not None and target.tunnel_dst is not None:
            dst.family = target.tunnel_src.family
            _addr(dst.tun_src, target.tunnel_src)
            _addr(dst.tun_dst, target.tunnel_dst)

    def _encode_rule(self, rule: CompiledRule, counter: int, rs: CompiledRuleSet) -> Any:
        leaf = self._rules.Leaf()
        leaf.rule_id = rule.rule_id
        leaf.version = rule.version
        leaf.counter = counter
        leaf.action = int(ACTION_CODE[rule.action])
        leaf.flow = int(rule.flow)
        leaf.ntargets = len(rule.targets)
        for k, target in enumerate(rule.targets):
            self._encode_target(leaf.t[k], target, rs)
        return leaf

    def write(self, half: int, rs: CompiledRuleSet, slots: Sequence[CompiledRule], layout: Layout,
              counters: dict[int, int], generation: int, flow_state: bool) -> None:
        """Write ``rs`` into ``half``: ``slots`` are the rules of the classifier tables in match order (rule
        slot = match rank; those of ``rs.rules`` and, when the tables keep them, dormant ones, which the
        ENABLED vector masks out); the header last. ``flow_state``: a FLOW rule that forwards is enforced
        (replies are looked up in mep_flows)."""
        written = (tuple(slots), counters, rs.ports)
        if self._mirror[half] is not None and self._written[half] == written:  # the same rules, slots, ports
            self._write_header(half, rs, len(slots), layout, generation, flow_state)
            self._written[half] = written  # these objects: the next compare is by identity
            return
        self._written[half] = None
        old = self._mirror[half]
        new: dict[int, bytes] = {}
        keys, leaves = [], []
        if rs.ports != self._encoded_ports:  # a target's encoding holds its port's MTU
            self._encoded, self._encoded_ports = {}, rs.ports
        encoded, leaf_type = self._encoded, self._rules.Leaf
        try:
            for slot, rule in enumerate(slots):
                counter = counters[rule.rule_id]
                known = encoded.get(rule.rule_id)
                if known is not None and known[0] is rule and known[1] == counter:
                    raw = known[2]
                else:
                    raw = bytes(self._encode_rule(rule, counter, rs))
                    encoded[rule.rule_id] = (rule, counter, raw)
                new[slot] = raw
                if old is None or old.get(slot) != raw:
                    keys.append(self._rules.Key(half * self._sizes.rules + slot))
                    leaves.append(leaf_type.from_buffer_copy(raw))
            update_batch(self._rules, keys, leaves)
            if len(encoded) > 2 * len(slots) + 64:  # rules gone since: keep the cache to about the rule set
                self._encoded = {rule.rule_id: encoded[rule.rule_id] for rule in slots}
            self._write_index(half, slots)
            self._write_header(half, rs, len(slots), layout, generation, flow_state)
        except Exception as exc:
            self._mirror[half] = self._index_mirror[half] = None
            raise MapWriteError(f"rule-set maps, half {half}: {exc}") from exc
        self._mirror[half] = new
        self._written[half] = written

    def _write_index(self, half: int, slots: Sequence[CompiledRule]) -> None:
        want = {r.rule_id: slot for slot, r in enumerate(slots)}
        have = self._index_mirror[half]
        if have is None:
            have = {int(k.rule_id): int(v.value) for k, v in self._index.items() if k.half == half}
        self._index_mirror[half] = None  # until written
        key = self._index.Key
        for rule_id in have.keys() - want.keys():
            del self._index[key(half=half, rule_id=rule_id)]
        changed = [(rule_id, slot) for rule_id, slot in want.items() if have.get(rule_id) != slot]
        update_batch(self._index, [key(half=half, rule_id=r) for r, _ in changed],
                     [self._index.Leaf(slot) for _, slot in changed])
        self._index_mirror[half] = want

    def _write_header(self, half: int, rs: CompiledRuleSet, nrules: int, layout: Layout, generation: int,
                      flow_state: bool) -> None:
        cfg = self._sets.Leaf()
        cfg.generation = generation
        cfg.nwords = layout.nwords
        cfg.used_fields = layout.used_fields
        cfg.keyed_fields = layout.keyed_fields
        cfg.nrules = nrules
        cfg.enabled = 1  # maps/classifier.py writes vector ENABLED
        cfg.flow_vector = layout.flow_vector
        for f, base in enumerate(layout.vector_base):
            cfg.vector_base[f] = base
        cfg.npairs = len(layout.pairs)
        for p, (a, b) in enumerate(layout.pairs):
            cfg.pair_a[p], cfg.pair_b[p] = a, b
        for f, (n, lo, hi, shift, start) in enumerate(layout.addr4):
            cfg.addr4_n[f], cfg.addr4_lo[f], cfg.addr4_hi[f], cfg.addr4_shift[f] = n, lo, hi, shift
            cfg.addr4_start[f] = start
        cfg.default_drop = int(rs.default_verdict.name == "DROP")
        cfg.flow_state = int(flow_state)
        self._sets[ct.c_uint32(half)] = cfg

    def flip(self, half: int, *, meta_all: bool) -> None:
        """Put ``half`` in force: one aligned 4-byte store (with the meta_all switch)."""
        state = self._state.Leaf()
        state.active = half
        state.meta_all = int(meta_all)
        self._active = None  # unknown if the write fails
        self._state[ct.c_uint32(0)] = state
        self._active = half

    def meta_all(self) -> bool:
        return bool(self._state[ct.c_uint32(0)].meta_all)

    def set_meta_all(self, on: bool) -> None:
        """Make the program write struct mep_meta for every frame (test-run, explain) or only DUPLICATEs."""
        self.flip(self.active(), meta_all=on)
