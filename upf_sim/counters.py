"""Counters of the simulated gNB and UPF: per reason and per session, summed over CPUs.

Both programs keep a per-CPU array of struct sim_count per reason
(ebpf/reasons.h) and of struct session_count per session slot
(ebpf/abi.h); ``read_counters`` sums them, ``format_counters`` prints them
the way ``upf-sim`` shows them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .bpf import Count, Program, percpu_counts
from .reasons import REASON_COUNT, REASONS, Reason
from .sessions import SessionTable

__all__ = ["SessionCount", "Counters", "read_counters", "format_counters"]


@dataclass(frozen=True)
class SessionCount:
    """One session's user packets and bytes, uplink and downlink."""

    ul: Count
    dl: Count


@dataclass(frozen=True)
class Counters:
    """What one program counted: per reason (by name) and per session (by index)."""

    reasons: dict[str, Count]
    sessions: tuple[SessionCount, ...]

    def total(self, direction: str) -> Count:
        """Summed over sessions: ``direction`` "ul" or "dl"."""
        return sum((getattr(s, direction) for s in self.sessions), Count())

    def dropped(self) -> Count:
        """Frames dropped, over every drop reason."""
        return sum((c for name, c in self.reasons.items() if "_DROP_" in name), Count())


def _reason(value: Any) -> tuple[Count, ...]:
    return (Count(value.packets, value.bytes),)


def _session(value: Any) -> tuple[Count, ...]:
    return (Count(value.ul.packets, value.ul.bytes), Count(value.dl.packets, value.dl.bytes))


def read_counters(program: Program, prefix: str, sessions: int, reasons: Sequence[Reason]) -> Counters:
    """Sum ``<prefix>_reasons`` (only ``reasons``) and the first ``sessions`` slots of ``<prefix>_sessions``."""
    by_number = percpu_counts(program.table(f"{prefix}_reasons"), REASON_COUNT, _reason)
    per_session = percpu_counts(program.table(f"{prefix}_sessions"), sessions, _session)
    return Counters(
        reasons={r.name: by_number[r.number][0] for r in reasons},
        sessions=tuple(SessionCount(ul, dl) for ul, dl in per_session),
    )


def format_counters(title: str, counters: Counters, table: SessionTable, *, sessions: int = 8,
                    verbose: bool = False) -> list[str]:
    """Lines for a terminal: nonzero reasons, then the busiest ``sessions`` sessions (-1: all, 0: none).

    ``verbose`` adds each reason's meaning.
    """
    lines = [f"{title}: uplink {_pb(counters.total('ul'))}, downlink {_pb(counters.total('dl'))}"]
    texts = {r.name: r.text for r in REASONS}
    for name, count in counters.reasons.items():
        if count.packets:
            lines.append(f"  {name:<26} {count.packets:>13,}" + (f"  {texts[name]}" if verbose else ""))
    if sessions == 0:
        return lines
    busy = sorted(range(len(counters.sessions)), reverse=True,
                  key=lambda i: counters.sessions[i].ul.packets + counters.sessions[i].dl.packets)
    shown = busy if sessions < 0 else busy[:sessions]
    lines.append(f"  {'UE':<15} {'TEID UL':>10} {'TEID DL':>10} {'QFI':>3} {'UL PKTS':>12} {'DL PKTS':>12}")
    for i in shown:
        s, seen = table.sessions[i], counters.sessions[i]
        lines.append(f"  {str(s.ue):<15} {s.teid_ul:>#10x} {s.teid_dl:>#10x} {s.qfi:>3} {seen.ul.packets:>12,} "
                     f"{seen.dl.packets:>12,}")
    if len(shown) < len(counters.sessions):
        lines.append(f"  ... {len(counters.sessions) - len(shown)} more sessions (-v shows all)")
    return lines


def _pb(c: Count) -> str:
    return f"{c.packets:,} packets, {c.bytes:,} bytes"
