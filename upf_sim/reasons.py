"""What the simulator's programs did with each frame: the reasons of ebpf/reasons.h.

The header is the one list (STYLE.md section 3: numbers written once);
this module parses its ``#define SIM_<NAME> <n> /* text */`` lines at import.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .bpf import EBPF_DIR

__all__ = ["Reason", "REASONS", "REASON_COUNT", "UPF_REASONS", "GNB_REASONS"]

_LINE = re.compile(r"^#define SIM_(\w+)\s+(\d+)\s+/\* (.*?) \*/\s*$")


@dataclass(frozen=True)
class Reason:
    """One reason: its number (the counter index), name (UPF_*/GNB_*) and meaning."""

    number: int
    name: str
    text: str

    @property
    def dropped(self) -> bool:
        """True for reasons whose frames were dropped."""
        return "_DROP_" in self.name


def _parse() -> tuple[tuple[Reason, ...], int]:
    reasons, count = [], None
    for line in (EBPF_DIR / "reasons.h").read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        name, number, text = m.group(1), int(m.group(2)), m.group(3)
        if name == "REASONS":
            count = number
        else:
            reasons.append(Reason(number, name, text))
    if count is None or sorted(r.number for r in reasons) != list(range(count)):
        raise RuntimeError(f"{EBPF_DIR / 'reasons.h'}: reasons must be numbered 0..SIM_REASONS-1")
    return tuple(sorted(reasons, key=lambda r: r.number)), count


REASONS, REASON_COUNT = _parse()
UPF_REASONS = tuple(r for r in REASONS if r.name.startswith("UPF_"))
GNB_REASONS = tuple(r for r in REASONS if r.name.startswith("GNB_"))
