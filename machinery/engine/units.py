"""Units of work and the transitions of one unit's state.

Work is handed out in units: a step (``upper``), or one item of a map step
(``each[3]``), which is a record of its own. The functions here find a step's
state in an event and change a unit's state; they know nothing of kinds of
step, nor of what runs next.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from machinery.engine.calls import CallFailure
from machinery.engine.state import (
    COMPLETED,
    EVENT_FAILED,
    FAILED,
    READY,
    RUNNING,
    TERMINAL_EVENT,
    Event,
    StepState,
)

_UNIT = re.compile(r"^(?P<step>.+)\[(?P<item>\d+)\]$")
NOTIFY_UNIT = "@notify"
"""The unit that sends an ended event to its workflow's ``notify`` URL; no step id starts with ``@``."""
PARENT_UNIT = "@parent"
"""The unit that hands an ended child event's outcome to its parent's ``workflow`` step."""


def ending_units(event: Event) -> Iterator[tuple[str, StepState]]:
    """The units an ended event still has: its notification, and for a child event the handing to its parent."""
    if event.notification is not None:
        yield NOTIFY_UNIT, event.notification
    if event.to_parent is not None:
        yield PARENT_UNIT, event.to_parent


def parse_unit(unit: str) -> tuple[str, int | None]:
    """The step id and item of a unit key; the inverse of :func:`~machinery.engine.calls.unit_key`."""
    if not unit.endswith("]"):
        return unit, None
    match = _UNIT.match(unit)
    return (match["step"], int(match["item"])) if match else (unit, None)


def units(event: Event) -> Iterator[tuple[str, StepState]]:
    """Every unit of the event's own: its steps but the map steps whose items are under way, each a unit of its own
    (an :class:`~machinery.engine.state.Item`) kept apart from the event."""
    for step_id, state in event.steps.items():
        if state.fanout is None:
            yield step_id, state


def unit_state(event: Event, step_id: str) -> StepState | None:
    """The state of a step to hand out as a unit, to read; None if the event has no such unit."""
    state = event.steps.get(step_id)
    return state if state is not None and state.fanout is None else None


def owned_units(event: Event, keep: Callable[[StepState], bool]) -> list[StepState]:
    """Every step that ``keep`` keeps, taken to be changed."""
    return [event.own(step_id) for step_id, state in list(event.steps.items()) if keep(state)]


def drop_claim(state: StepState) -> None:
    """Forget the worker's claim on a unit: its result, if it still comes, is no longer taken."""
    state.lease_until = None
    state.token = None


def complete(state: StepState, outputs: dict[str, Any] | None, now: float) -> None:
    state.status = COMPLETED
    state.outputs = outputs
    state.error = None
    state.ended_at = now
    state.run_at = None
    drop_claim(state)


def fail_state(state: StepState, error: CallFailure, now: float) -> None:
    state.status = FAILED
    state.error = error.to_doc()
    state.ended_at = now
    drop_claim(state)


def fail_step(event: Event, step_id: str, error: CallFailure, now: float) -> None:
    """Fail a step, and with it the event unless it has ended already."""
    fail_state(event.own(step_id), error, now)
    if event.status not in TERMINAL_EVENT:
        event.status = EVENT_FAILED
        event.error = {"step": step_id, **error.to_doc(), "message": f"step '{step_id}' failed: {error.message}"}


def record_attempt(state: StepState, now: float, error: dict[str, Any]) -> None:
    """Add the attempt under way, which ``error`` ended, to the state's history."""
    entry = {"attempt": state.attempts, "started_at": state.started_at, "ended_at": now, "error": error}
    state.history = [*state.history, entry]


def start_attempt(state: StepState, token: str, now: float, lease_until: float) -> None:
    """Claim a unit for one attempt by the worker holding ``token``, until ``lease_until``."""
    state.status = RUNNING
    state.attempts += 1
    state.token = token
    state.started_at = now
    state.lease_until = lease_until
    state.nudged_at = None


def fanned_out(state: StepState, items: int, now: float) -> None:
    """A step that has fanned out into ``items`` items: it runs until they are over."""
    state.status = RUNNING
    state.started_at = now
    state.fanout = items
    state.run_at = None


def make_ready(state: StepState, now: float) -> None:
    """Hand a unit to the workers now."""
    state.status = READY
    state.run_at = now


def retry_unit(state: StepState, now: float) -> None:
    """Ready a failed unit again with a fresh retry budget, for a retried event."""
    make_ready(state, now)
    state.budget_used = 0
    state.lost = 0
    state.error = None
