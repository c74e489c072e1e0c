"""The PDU session table shared by the simulated gNB, UPF and traffic generator.

A session ties a UE's IPv4 address to two tunnel endpoint ids: ``teid_ul``,
allocated by the UPF (the gNB sends the UE's uplink G-PDUs with it) and
``teid_dl``, allocated by the gNB (the UPF sends downlink G-PDUs with it),
plus the QFI of its one QoS flow. PFCP is not simulated: the gNB and the UPF
read the same table.

A table comes from YAML (``SessionTable.load``)::

    gnb: 198.18.200.1          # the gNB's N3 address (default shown)
    upf: 198.18.200.2          # the UPF's N3 address (default shown)
    qfi: 9                     # QFI of sessions that name none (default 9)
    sessions:                  # single sessions
      - {ue: 198.18.64.1, teid_ul: 0x1001, teid_dl: 0x2001}
      - {ue: 198.18.64.2, teid_ul: 0x1002, teid_dl: 0x2002, qfi: 5}
    ranges:                    # count sessions with consecutive addresses and TEIDs
      - {first_ue: 198.18.65.1, count: 1000, first_teid_ul: 0x10000, first_teid_dl: 0x20000}

or from the command line (``SessionTable.generate``: ``upf-sim ... --ues N``).
UE addresses, uplink TEIDs and downlink TEIDs are each unique; TEID 0 is
reserved (TS 29.281). Sessions are numbered in file order (single sessions
first, then ranges); the number is the session's counter slot.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mep.config import explain_errors, read_config_file
from mep.errors import ConfigError

from .topology import ADDR

__all__ = ["Session", "SessionTable", "MAX_SESSIONS", "DEFAULT_QFI", "FIRST_TEID_UL", "FIRST_TEID_DL"]

# Sessions per table (each program's session maps are sized to its table:
# -DSIM_MAX_SESSIONS); the simulator's UE pool (topology.py, 198.18.64.0/18)
# holds 16382 addresses.
MAX_SESSIONS = 16384
DEFAULT_QFI = 9  # 5QI 9: the default non-GBR flow of an internet PDU session
FIRST_TEID_UL = 0x1000
FIRST_TEID_DL = 0x2000_0000
_TEID = Field(ge=1, le=0xFFFF_FFFF)
_QFI = Field(default=None, ge=0, le=63)


@dataclass(frozen=True, slots=True)
class Session:
    """One PDU session: UE address, the two TEIDs, the QFI; ``index`` is its counter slot."""

    index: int
    ue: ipaddress.IPv4Address
    teid_ul: int
    teid_dl: int
    qfi: int


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _SessionSpec(_Spec):
    ue: ipaddress.IPv4Address
    teid_ul: int = _TEID
    teid_dl: int = _TEID
    qfi: int | None = _QFI


class _RangeSpec(_Spec):
    first_ue: ipaddress.IPv4Address
    count: int = Field(ge=1, le=MAX_SESSIONS)
    first_teid_ul: int = _TEID
    first_teid_dl: int = _TEID
    qfi: int | None = _QFI

    @model_validator(mode="after")
    def _fits(self) -> "_RangeSpec":
        if int(self.first_ue) + self.count - 1 > 0xFFFF_FFFF:
            raise ValueError("the range runs past 255.255.255.255")
        for name in ("first_teid_ul", "first_teid_dl"):
            if getattr(self, name) + self.count - 1 > 0xFFFF_FFFF:
                raise ValueError(f"{name} + count runs past 0xffffffff")
        return self


class _TableSpec(_Spec):
    gnb: ipaddress.IPv4Address = ipaddress.IPv4Address(ADDR.gnb)
    upf: ipaddress.IPv4Address = ipaddress.IPv4Address(ADDR.upf_n3)
    qfi: int = Field(default=DEFAULT_QFI, ge=0, le=63)
    sessions: list[_SessionSpec] = Field(default_factory=list)
    ranges: list[_RangeSpec] = Field(default_factory=list)


class SessionTable:
    """Validated sessions plus the two N3 addresses; build with ``load``, ``generate`` or ``from_dict``."""

    def __init__(self, gnb: ipaddress.IPv4Address, upf: ipaddress.IPv4Address, sessions: Iterable[Session]) -> None:
        self.gnb = gnb
        self.upf = upf
        self.sessions: tuple[Session, ...] = tuple(sessions)
        _check_unique(self.sessions)

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(self.sessions)

    def by_ue(self, ue: str) -> Session:
        """The session of UE address ``ue``; KeyError if none."""
        want = ipaddress.IPv4Address(ue)
        for s in self.sessions:
            if s.ue == want:
                return s
        raise KeyError(ue)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "session table") -> "SessionTable":
        """Validate a mapping in the YAML layout; ConfigError naming each bad field."""
        try:
            spec = _TableSpec.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source} is invalid:\n  " + "\n  ".join(explain_errors(exc))) from None
        sessions: list[Session] = []
        for s in spec.sessions:
            sessions.append(Session(len(sessions), s.ue, s.teid_ul, s.teid_dl, spec.qfi if s.qfi is None else s.qfi))
        for r in spec.ranges:
            qfi = spec.qfi if r.qfi is None else r.qfi
            for i in range(r.count):
                sessions.append(Session(len(sessions), r.first_ue + i, r.first_teid_ul + i, r.first_teid_dl + i, qfi))
        try:
            return cls(spec.gnb, spec.upf, sessions)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "SessionTable":
        """Read a YAML session table; ConfigError with the file and field when it is wrong."""
        return cls.from_dict(read_config_file(Path(path)), source=str(path))

    @classmethod
    def generate(
        cls,
        ues: int,
        *,
        first_ue: str = ADDR.sim_first_ue,
        first_teid_ul: int = FIRST_TEID_UL,
        first_teid_dl: int = FIRST_TEID_DL,
        qfi: int = DEFAULT_QFI,
        gnb: str = ADDR.gnb,
        upf: str = ADDR.upf_n3,
    ) -> "SessionTable":
        """``ues`` sessions with consecutive UE addresses and TEIDs (``upf-sim ... --ues N``)."""
        return cls.from_dict(
            {"gnb": gnb, "upf": upf, "qfi": qfi, "ranges": [
                {"first_ue": first_ue, "count": ues, "first_teid_ul": first_teid_ul, "first_teid_dl": first_teid_dl}]},
            source="--ues",
        )

    def to_dict(self) -> dict[str, Any]:
        """The table in the YAML layout, one entry per session (``upf-sim sessions --yaml``)."""
        return {"gnb": str(self.gnb), "upf": str(self.upf), "sessions": [
            {"ue": str(s.ue), "teid_ul": s.teid_ul, "teid_dl": s.teid_dl, "qfi": s.qfi} for s in self.sessions]}


def _check_unique(sessions: tuple[Session, ...]) -> None:
    if not sessions:
        raise ValueError("the table has no sessions")
    if len(sessions) > MAX_SESSIONS:
        raise ValueError(f"{len(sessions)} sessions; at most {MAX_SESSIONS}")
    for what in ("ue", "teid_ul", "teid_dl"):
        seen: dict[object, int] = {}
        for s in sessions:
            value = getattr(s, what)
            if value in seen:
                shown = hex(value) if isinstance(value, int) else str(value)
                raise ValueError(f"sessions {seen[value]} and {s.index} have the same {what} {shown}")
            seen[value] = s.index
