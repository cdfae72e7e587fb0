"""Scheduling: which units may be claimed now, which are due at a time, and which are overdue.

An event's ``due_at`` is when the sweeper must look at it if no message moves
it first: the earliest time one of its units is due, or its deadline.
"""

from __future__ import annotations

from machinery.engine.model import Workflow
from machinery.engine.plan import Settings
from machinery.engine.state import (
    ACTIVE,
    IDLE,
    OVER,
    PENDING,
    READY,
    RETRYING,
    RUNNING,
    TERMINAL_EVENT,
    WAITING,
    Event,
    StepState,
)
from machinery.engine.units import ending_units, units


def ready_units(event: Event) -> list[str]:
    """Units a worker may claim now."""
    if event.status in IDLE:
        return [unit for unit, state in ending_units(event) if state.status is READY]
    return [step_id for step_id, state in event.steps.items() if state.status is READY]


def timers(event: Event) -> list[tuple[str, float]]:
    """Units that are due at a time: retries, delays, and waits with a timeout."""
    if event.status in IDLE:
        return [
            (unit, state.run_at)
            for unit, state in ending_units(event)
            if state.status is RETRYING and state.run_at is not None
        ]
    return [
        (step_id, state.run_at)
        for step_id, state in units(event)
        if (state.status is RETRYING or state.status is WAITING) and state.run_at is not None
    ]


def overdue_units(event: Event, now: float, settings: Settings) -> list[str]:
    """Units the sweeper should send to the workers again: their message is late or their worker gone."""
    if event.status in IDLE:
        return [
            unit for unit, state in ending_units(event) if (due := unit_due(state, settings)) is not None and due <= now
        ]
    return [step_id for step_id, state in units(event) if (due := unit_due(state, settings)) is not None and due <= now]


def past_deadline(event: Event, now: float) -> bool:
    """Whether ``event`` is unfinished at its deadline, and should be expired."""
    return event.deadline is not None and now >= event.deadline and event.status not in TERMINAL_EVENT


def scan(event: Event, settings: Settings) -> tuple[bool, bool, bool, float | None]:
    """In one pass: whether every step is over, whether a unit is active, whether one waits, and the earliest due."""
    over, active, waiting, due = True, False, False, None
    for state in event.steps.values():
        status = state.status
        if status is PENDING:
            over = False
            continue
        if status in OVER:
            continue
        over = False
        if state.fanout is not None:
            # A map step whose items are under way, each due on its own.
            active = active or status is RUNNING
            continue
        if status in ACTIVE:
            active = True
        elif status is WAITING:
            waiting = True
        else:
            continue
        due_at = unit_due(state, settings)
        if due_at is not None and (due is None or due_at < due):
            due = due_at
    return over, active, waiting, due


def unit_due(state: StepState, settings: Settings) -> float | None:
    """When the sweeper should send a unit again if nothing moved it: a late message, a lost worker, a timer."""
    nudged = state.nudged_at or 0.0
    if state.status is READY or state.status is RETRYING:
        return (state.run_at if state.run_at is not None and state.run_at > nudged else nudged) + settings.stale_after
    if state.status is RUNNING:
        return max(state.lease_until or 0.0, nudged + settings.stale_after)
    if state.status is WAITING and state.run_at is not None:
        return max(state.run_at, nudged + settings.stale_after)
    return None


def ending_due(event: Event, settings: Settings) -> float | None:
    """When the sweeper should look at an ended event again: the earliest its units still to do are due."""
    dues = [due for _, state in ending_units(event) if (due := unit_due(state, settings)) is not None]
    return min(dues, default=None)


def too_soon(state: StepState, now: float) -> bool:
    """Whether a claimable unit must wait still: for its retry or its timer, or for its worker's lease to run out."""
    if state.status in (RETRYING, WAITING) and (state.run_at is None or now < state.run_at):
        return True
    return state.status is RUNNING and state.lease_until is not None and now <= state.lease_until


def deadline(workflow: Workflow, now: float) -> float | None:
    """When an event of ``workflow`` accepted (or retried) at ``now`` must have ended."""
    return None if workflow.timeout is None else now + workflow.timeout


def until_deadline(event: Event, due: float | None) -> float | None:
    """The sooner of ``due`` and the event's deadline."""
    if event.deadline is None or (due is not None and due < event.deadline):
        return due
    return event.deadline
