"""The Engine interface every engine implements, and what an engine returns.

Three engines (DESIGN.md section 3) take the same CompiledRuleSet and, for any
frame, return the same Result: verdict, reason, rule id and output frames.

Contract:

- ``apply(ruleset)`` swaps the whole rule set at once. A packet is processed
  entirely under the old set or entirely under the new one, and none is
  lost by the swap. Flow state survives a swap (it is validated per rule,
  see docs/semantics.md). ``cheap(ruleset)`` says whether that apply,
  now, costs so little that the daemon makes it on its event loop.
- ``process(frame, ingress)`` runs one frame that arrived on port
  ``ingress`` (a Port.index) and returns its Result. It never raises for
  any byte string: malformed input gets a defined verdict and reason.
  Engines that attach to real interfaces implement it by test-run.
- ``counters()`` returns per-rule, per-verdict and per-reason packet and byte
  counts since the engine started (bytes = input frame length).
- ``describe()`` reports what an operator needs to know: engine, mode,
  capacity, generation.
"""
from __future__ import annotations

import abc
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .reasons import REASON_VERDICT, FibOutcome, Reason, Verdict
from .ruleset import CompiledRuleSet

__all__ = ["Output", "Result", "PacketBytes", "Counters", "Engine"]


@dataclass(frozen=True, slots=True)
class Output:
    port: int  # PORT_STACK (0) or a Port.index
    frame: bytes


@dataclass(frozen=True, slots=True)
class Result:
    verdict: Verdict
    reason: Reason
    rule_id: int = 0  # 0: no rule
    outputs: tuple[Output, ...] = ()
    reverse: bool = False  # matched in the reverse direction of a FLOW rule

    def __post_init__(self) -> None:
        if REASON_VERDICT[self.reason] != self.verdict:
            raise ValueError(f"reason {self.reason.name} does not belong to verdict {self.verdict.name}")


@dataclass(slots=True)
class PacketBytes:
    packets: int = 0
    bytes: int = 0

    def add(self, length: int) -> None:
        self.packets += 1
        self.bytes += length


@dataclass
class Counters:
    rules: dict[int, PacketBytes] = field(default_factory=lambda: defaultdict(PacketBytes))
    verdicts: dict[Verdict, PacketBytes] = field(default_factory=lambda: defaultdict(PacketBytes))
    reasons: dict[Reason, PacketBytes] = field(default_factory=lambda: defaultdict(PacketBytes))
    # PASS frames the XDP engine offered to the kernel's FIB (dataplane.fib_forward), by
    # outcome: counted besides their reason; empty for the other engines.
    fib: dict[FibOutcome, PacketBytes] = field(default_factory=dict)

    def record(self, result: Result, length: int) -> None:
        self.verdicts[result.verdict].add(length)
        self.reasons[result.reason].add(length)
        if result.rule_id:
            self.rules[result.rule_id].add(length)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, verdicts and reasons by name, zero rows left out."""
        return {
            "rules": {rid: (c.packets, c.bytes) for rid, c in sorted(self.rules.items()) if c.packets},
            "verdicts": {v.name: (c.packets, c.bytes) for v, c in sorted(self.verdicts.items()) if c.packets},
            "reasons": {r.name: (c.packets, c.bytes) for r, c in sorted(self.reasons.items()) if c.packets},
            "fib": {o.name: (c.packets, c.bytes) for o, c in sorted(self.fib.items()) if c.packets},
        }


class Engine(abc.ABC):
    """One data-plane engine. See the module docstring for the contract."""

    name: str = "engine"
    # Shortest frame the engine can be handed (the kernel never runs XDP on a
    # frame shorter than an Ethernet header, nor does test-run accept one).
    min_frame_bytes: int = 0

    @abc.abstractmethod
    def apply(self, ruleset: CompiledRuleSet) -> None:
        """Swap in ``ruleset`` atomically."""

    def cheap(self, ruleset: CompiledRuleSet) -> bool:
        """True when ``apply(ruleset)`` now would take well under a millisecond and wait for nothing: the
        daemon then applies it on the event loop, sparing a worker thread's hand-off and GIL contention."""
        return False

    @property
    @abc.abstractmethod
    def ruleset(self) -> CompiledRuleSet | None:
        """The rule set in force, None before the first apply."""

    @abc.abstractmethod
    def process(self, frame: bytes, ingress: int) -> Result:
        """Run one frame that arrived on port ``ingress``."""

    @abc.abstractmethod
    def counters(self) -> Counters:
        """Per-rule, per-verdict and per-reason counters since start."""

    def describe(self) -> dict[str, Any]:
        rs = self.ruleset
        return {
            "engine": self.name,
            "generation": rs.generation if rs else None,
            "rules": len(rs.rules) if rs else 0,
        }

    def close(self) -> None:
        """Release what the engine holds (attached programs stay pinned for XDP)."""
