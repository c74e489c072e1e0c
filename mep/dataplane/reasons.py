"""Verdicts and reasons, read from ebpf/reasons.h: the numbers live there only.

``Verdict`` and ``Reason`` are IntEnums built at import from the X-macro lists;
``REASON_VERDICT`` maps each reason to the one verdict it belongs to and
``DESCRIPTION`` gives the operator-facing text for both. ``FibOutcome``
lists what became of a PASS frame offered to the kernel's FIB in XDP
(dataplane.fib_forward, ebpf/fib.h), with its text in ``DESCRIPTION`` too;
``FIB_SENT`` names the outcomes of frames XDP sent to their next hop itself.
"""
from __future__ import annotations

import re
from enum import EnumMeta, IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

__all__ = ["Verdict", "Reason", "FibOutcome", "FIB_SENT", "REASON_VERDICT", "DESCRIPTION", "REASONS_H"]

REASONS_H = Path(__file__).with_name("ebpf") / "reasons.h"

_VERDICT = re.compile(r'X\((MEP_VERDICT_\w+),\s*(\d+),\s*"([^"]*)"\)')
_REASON = re.compile(r'X\((MEP_\w+),\s*(\d+),\s*(MEP_VERDICT_\w+),\s*"([^"]*)"\)')
_FIB = re.compile(r'X\((MEP_FIB_\w+),\s*(\d+),\s*"([^"]*)"\)')


def _parse() -> tuple[dict[str, int], dict[str, tuple[int, str]], dict[str, str], dict[str, tuple[int, str]]]:
    text = REASONS_H.read_text()
    verdicts = {name: int(num) for name, num, _ in _VERDICT.findall(text)}
    reasons = {name: (int(num), verdict) for name, num, verdict, _ in _REASON.findall(text)}
    desc = {name: d for name, _, d in _VERDICT.findall(text)}
    desc.update({name: d for name, _, _, d in _REASON.findall(text)})
    fib = {name: (int(num), d) for name, num, d in _FIB.findall(text)}
    if not verdicts or not reasons or not fib:
        raise RuntimeError(f"no verdicts, reasons or FIB outcomes parsed from {REASONS_H}")
    return verdicts, {n: (v[0], v[1]) for n, v in reasons.items()}, desc, fib


_verdicts, _reasons, _desc, _fib = _parse()

if TYPE_CHECKING:
    # mypy cannot see members created from the header: each is typed as its enum.
    class _VerdictMeta(EnumMeta):
        def __getattr__(cls, name: str) -> "Verdict": ...

    class Verdict(IntEnum, metaclass=_VerdictMeta): ...

    class _ReasonMeta(EnumMeta):
        def __getattr__(cls, name: str) -> "Reason": ...

    class Reason(IntEnum, metaclass=_ReasonMeta): ...

    class _FibOutcomeMeta(EnumMeta):
        def __getattr__(cls, name: str) -> "FibOutcome": ...

    class FibOutcome(IntEnum, metaclass=_FibOutcomeMeta): ...

else:
    Verdict = IntEnum("Verdict", {n.removeprefix("MEP_VERDICT_"): v for n, v in _verdicts.items()})
    Reason = IntEnum("Reason", {n.removeprefix("MEP_"): v for n, (v, _) in _reasons.items()})
    FibOutcome = IntEnum("FibOutcome", {n.removeprefix("MEP_FIB_"): v for n, (v, _) in _fib.items()})

REASON_VERDICT: dict[Reason, Verdict] = {
    Reason[n.removeprefix("MEP_")]: Verdict[v.removeprefix("MEP_VERDICT_")] for n, (_, v) in _reasons.items()
}
DESCRIPTION: dict[IntEnum, str] = {
    **{Verdict[n.removeprefix("MEP_VERDICT_")]: d for n, d in _desc.items() if n.startswith("MEP_VERDICT_")},
    **{Reason[n.removeprefix("MEP_")]: d for n, d in _desc.items() if not n.startswith("MEP_VERDICT_")},
    **{FibOutcome[n.removeprefix("MEP_FIB_")]: d for n, (_, d) in _fib.items()},
}
# Sent to the next hop from XDP: looked up in the kernel's FIB, or the answer cached from a lookup.
FIB_SENT = (FibOutcome.FORWARDED, FibOutcome.CACHED)
