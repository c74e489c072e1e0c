"""The app lifecycle transition table (mep/state/lifecycle.py), written out here independently."""
from __future__ import annotations

import itertools

import pytest

from mep.errors import Conflict, InvalidTransition
from mep.state import ENFORCED_STATES, AppState, LifecycleEvent, next_state

S, E = AppState, LifecycleEvent

# Every allowed edge, as DESIGN.md section 6 and the lifecycle docstring draw them.
ALLOWED: dict[tuple[AppState, LifecycleEvent], AppState] = {
    (S.NOT_INSTANTIATED, E.INSTANTIATE): S.INSTANTIATED,
    (S.NOT_INSTANTIATED, E.TERMINATE): S.TERMINATED,
    (S.INSTANTIATED, E.CONFIRM_READY): S.READY,
    (S.INSTANTIATED, E.STOP): S.STOPPING,
    (S.INSTANTIATED, E.TERMINATE): S.TERMINATING,
    (S.READY, E.CONFIRM_READY): S.READY,
    (S.READY, E.STOP): S.STOPPING,
    (S.READY, E.TERMINATE): S.TERMINATING,
    (S.STOPPING, E.CONFIRM_TERMINATION): S.STOPPED,
    (S.STOPPING, E.GRACEFUL_TIMEOUT): S.STOPPED,
    (S.STOPPING, E.TERMINATE): S.TERMINATING,
    (S.STOPPED, E.START): S.INSTANTIATED,
    (S.STOPPED, E.TERMINATE): S.TERMINATED,
    (S.TERMINATING, E.CONFIRM_TERMINATION): S.TERMINATED,
    (S.TERMINATING, E.GRACEFUL_TIMEOUT): S.TERMINATED,
}
DISALLOWED = [pair for pair in itertools.product(S, E) if pair not in ALLOWED]


@pytest.mark.parametrize(("state", "event"), list(ALLOWED), ids=lambda v: v.value)
def test_allowed_edge(state: AppState, event: LifecycleEvent) -> None:
    assert next_state(state, event) is ALLOWED[(state, event)]


@pytest.mark.parametrize(("state", "event"), DISALLOWED, ids=lambda v: v.value)
def test_disallowed_edge_raises(state: AppState, event: LifecycleEvent) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    assert info.value.field == "state"
    assert info.value.detail.startswith(f"{event.value} is not allowed in state {state.value}")


@pytest.mark.parametrize(
    ("state", "event", "text"),
    [
        (
            S.NOT_INSTANTIATED,
            E.CONFIRM_READY,
            "confirm_ready is not allowed in state NOT_INSTANTIATED; allowed: instantiate, terminate",
        ),
        (
            S.READY,
            E.START,
            "start is not allowed in state READY; allowed: confirm_ready, stop, terminate",
        ),
        (
            S.STOPPED,
            E.CONFIRM_READY,
            "confirm_ready is not allowed in state STOPPED; allowed: start, terminate",
        ),
        (
            S.TERMINATING,
            E.STOP,
            "stop is not allowed in state TERMINATING; allowed: confirm_termination, graceful_timeout",
        ),
        (S.TERMINATED, E.INSTANTIATE, "instantiate is not allowed in state TERMINATED; the instance is final"),
        (S.TERMINATED, E.TERMINATE, "terminate is not allowed in state TERMINATED; the instance is final"),
    ],
)
def test_disallowed_edge_text(state: AppState, event: LifecycleEvent, text: str) -> None:
    with pytest.raises(InvalidTransition) as info:
        next_state(state, event)
    assert info.value.detail == text
    assert str(info.value) == f"state: {text}"


def test_invalid_transition_is_a_conflict() -> None:
    # Mp1 maps Conflict to 409 and Mm5 maps InvalidTransition to FAILED_PRECONDITION.
    assert issubclass(InvalidTransition, Conflict)
    assert InvalidTransition.http_status == 409
    assert InvalidTransition.grpc_code == "FAILED_PRECONDITION"


@pytest.mark.parametrize(
    ("state", "event"), [(S.NOT_INSTANTIATED, E.INSTANTIATE), (S.STOPPED, E.START)], ids=lambda v: v.value
)
def test_no_confirmation_needed_goes_straight_to_ready(state: AppState, event: LifecycleEvent) -> None:
    assert next_state(state, event, confirm_ready_required=False) is S.READY


@pytest.mark.parametrize(("state", "event"), list(ALLOWED), ids=lambda v: v.value)
def test_confirmation_flag_only_changes_the_instantiated_target(state: AppState, event: LifecycleEvent) -> None:
    expected = ALLOWED[(state, event)]
    if expected is S.INSTANTIATED:
        expected = S.READY
    assert next_state(state, event, confirm_ready_required=False) is expected


def test_disallowed_edges_stay_disallowed_without_confirmation() -> None:
    for state, event in DISALLOWED:
        with pytest.raises(InvalidTransition):
            next_state(state, event, confirm_ready_required=False)


def test_only_ready_is_enforced_and_terminated_is_final() -> None:
    assert ENFORCED_STATES == {S.READY}
    assert not [e for e in E if (S.TERMINATED, e) in ALLOWED]
