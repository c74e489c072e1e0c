"""Verdicts and reasons, read from ebpf/reasons.h: the numbers live there only.

``Verdict`` and ``Reason`` are IntEnums built at import from the X-macro lists;
``REASON_VERDICT`` maps each reason to the one verdict it belongs to and
``DESCRIPTION`` gives the operator-facing text for both.
"""
from __future__ import annotations

import re
from enum import EnumMeta, IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

__all__ = ["Verdict", "Reason", "REASON_VERDICT", "DESCRIPTION", "REASONS_H"]

REASONS_H = Path(__file__).with_name("ebpf") / "reasons.h"

_VERDICT = re.compile(r'X\((MEP_VERDICT_\w+),\s*(\d+),\s*"([^"]*)"\)')
_REASON = re.compile(r'X\((MEP_\w+),\s*(\d+),\s*(MEP_VERDICT_\w+),\s*"([^"]*)"\)')


def _parse() -> tuple[dict[str, int], dict[str, tuple[int, str]], dict[str, str]]:
    text = REASONS_H.read_text()
    verdicts = {name: int(num) for name, num, _ in _VERDICT.findall(text)}
    reasons = {name: (int(num), verdict) for name, num, verdict, _ in _REASON.findall(text)}
    desc = {name: d for name, _, d in _VERDICT.findall(text)}
    desc.update({name: d for name, _, _, d in _REASON.findall(text)})
    if not verdicts or not reasons:
        raise RuntimeError(f"no verdicts or reasons parsed from {REASONS_H}")
    return verdicts, {n: (v[0], v[1]) for n, v in reasons.items()}, desc


_verdicts, _reasons, _desc = _parse()

if TYPE_CHECKING:
    # mypy cannot see members created from the header: each is typed as its enum.
    class _VerdictMeta(EnumMeta):
        def __getattr__(cls, name: str) -> "Verdict": ...

    class Verdict(IntEnum, metaclass=_VerdictMeta): ...

    class _ReasonMeta(EnumMeta):
        def __getattr__(cls, name: str) -> "Reason": ...

    class Reason(IntEnum, metaclass=_ReasonMeta): ...

else:
    Verdict = IntEnum("Verdict", {n.removeprefix("MEP_VERDICT_"): v for n, v in _verdicts.items()})
    Reason = IntEnum("Reason", {n.removeprefix("MEP_"): v for n, (v, _) in _reasons.items()})

REASON_VERDICT: dict[Reason, Verdict] = {
    Reason[n.removeprefix("MEP_")]: Verdict[v.removeprefix("MEP_VERDICT_")] for n, (_, v) in _reasons.items()
}
DESCRIPTION: dict[IntEnum, str] = {
    **{Verdict[n.removeprefix("MEP_VERDICT_")]: d for n, d in _desc.items() if n.startswith("MEP_VERDICT_")},
    **{Reason[n.removeprefix("MEP_")]: d for n, d in _desc.items() if not n.startswith("MEP_VERDICT_")},
}
