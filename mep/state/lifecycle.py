"""The application instance lifecycle (DESIGN.md section 6) as one transition table.

::

    NOT_INSTANTIATED --instantiate--> INSTANTIATED --confirm_ready--> READY
          |                              |  ^                           |
          |                              |  +----------start------- STOPPED
          |                              |                              ^
          |                              +--stop--> STOPPING --confirm/timeout
          |                              +--terminate--> TERMINATING --confirm/timeout--> TERMINATED
          +--terminate--> TERMINATED                 (READY has the same stop/terminate edges)

Only READY apps have their ACTIVE rules enforced. An app configured with
``confirm_ready_required = False`` goes straight from instantiate to READY.
"""
from __future__ import annotations

from enum import StrEnum

from ..errors import InvalidTransition

__all__ = ["AppState", "LifecycleEvent", "next_state", "ENFORCED_STATES"]


class AppState(StrEnum):
    NOT_INSTANTIATED = "NOT_INSTANTIATED"
    INSTANTIATED = "INSTANTIATED"
    READY = "READY"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"


class LifecycleEvent(StrEnum):
    INSTANTIATE = "instantiate"
    CONFIRM_READY = "confirm_ready"
    STOP = "stop"
    START = "start"
    TERMINATE = "terminate"
    # confirm_termination from the app, or the graceful timeout expiring:
    # both finish a STOPPING or TERMINATING app.
    CONFIRM_TERMINATION = "confirm_termination"
    GRACEFUL_TIMEOUT = "graceful_timeout"


ENFORCED_STATES = frozenset({AppState.READY})

_S, _E = AppState, LifecycleEvent
_TABLE: dict[tuple[AppState, LifecycleEvent], AppState] = {
    (_S.NOT_INSTANTIATED, _E.INSTANTIATE): _S.INSTANTIATED,
    (_S.NOT_INSTANTIATED, _E.TERMINATE): _S.TERMINATED,
    (_S.INSTANTIATED, _E.CONFIRM_READY): _S.READY,
    (_S.READY, _E.CONFIRM_READY): _S.READY,  # a repeated confirm_ready is harmless
    (_S.INSTANTIATED, _E.STOP): _S.STOPPING,
    (_S.READY, _E.STOP): _S.STOPPING,
    (_S.INSTANTIATED, _E.TERMINATE): _S.TERMINATING,
    (_S.READY, _E.TERMINATE): _S.TERMINATING,
    (_S.STOPPED, _E.TERMINATE): _S.TERMINATED,
    (_S.STOPPING, _E.TERMINATE): _S.TERMINATING,
    (_S.STOPPING, _E.CONFIRM_TERMINATION): _S.STOPPED,
    (_S.STOPPING, _E.GRACEFUL_TIMEOUT): _S.STOPPED,
    (_S.STOPPED, _E.START): _S.INSTANTIATED,
    (_S.TERMINATING, _E.CONFIRM_TERMINATION): _S.TERMINATED,
    (_S.TERMINATING, _E.GRACEFUL_TIMEOUT): _S.TERMINATED,
}


def next_state(current: AppState, event: LifecycleEvent, *, confirm_ready_required: bool = True) -> AppState:
    """The state after ``event``; raises InvalidTransition naming both when not allowed."""
    nxt = _TABLE.get((current, event))
    if nxt is None:
        allowed = sorted(e.value for (s, e) in _TABLE if s is current)
        raise InvalidTransition(
            f"{event.value} is not allowed in state {current.value}"
            + (f"; allowed: {', '.join(allowed)}" if allowed else "; the instance is final"),
            field="state",
        )
    if nxt is AppState.INSTANTIATED and not confirm_ready_required:
        return AppState.READY
    return nxt
