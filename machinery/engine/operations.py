"""What users and the sweeper do to an event, as pure transitions: signal, cancel, pause, resume, retry,
expire, and the sweeper's nudges.

Each takes the event as read and returns a changed copy, or raises InvalidState
when the event cannot do that now.
"""

from __future__ import annotations

from typing import Any

from machinery.engine.calls import ErrorKind
from machinery.engine.dataflow import fill
from machinery.engine.errors import InvalidData, InvalidState, Problem
from machinery.engine.graph import SIGNAL_ROUTE
from machinery.engine.model import WAIT, Step
from machinery.engine.plan import Plan, Settings
from machinery.engine.progress import advance, close, notify_end
from machinery.engine.schedule import deadline, ending_due, scan, unit_due, until_deadline
from machinery.engine.state import (
    CANCELLED,
    EVENT_CANCELLED,
    EVENT_FAILED,
    EVENT_PAUSED,
    EVENT_RUNNING,
    FAILED,
    IDLE,
    PENDING,
    READY,
    RUNNING,
    TERMINAL_EVENT,
    TERMINAL_STEP,
    WAITING,
    Event,
)
from machinery.engine.types import type_of
from machinery.engine.units import (
    NOTIFY_UNIT,
    PARENT_UNIT,
    complete,
    drop_claim,
    owned_units,
    unit_state,
    units,
)


def signal(plan: Plan, event: Event, name: str, payload: Any, *, now: float, settings: Settings) -> Event:
    """Deliver the signal ``name`` to the step waiting for it, or keep it for the step that will.

    InvalidData when ``payload`` does not fit the waiting step's outputs;
    InvalidState when the event is over or no step of it waits for ``name``.
    """
    if event.status in TERMINAL_EVENT:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; it takes no more signals")
    waits = [s for s in plan.order if s.kind == WAIT and s.signal == name]
    waiting = [s for s in waits if event.steps[s.id].status is WAITING]
    coming = [s for s in waits if event.steps[s.id].status in (PENDING, READY)]
    if not waiting and not coming:
        raise InvalidState(f"no step of event '{event.id}' waits for signal '{name}' (any more)")
    target = (waiting or coming)[0]
    outputs, problems = _signal_outputs(target, payload)
    if problems:
        raise InvalidData(f"signal '{name}' does not match the outputs of step '{target.id}'", problems)
    event = event.copy()
    if waiting:
        if event.status is not EVENT_PAUSED:
            event.status = EVENT_RUNNING
        state = event.own(target.id)
        complete(state, outputs, now)
        state.route = SIGNAL_ROUTE
        advance(plan, event, now, ended=target.id, evaluate=False)
    else:
        event.signals = [*event.signals, {"name": name, "payload": outputs, "at": now}]
    return close(plan, event, now, settings)


def _signal_outputs(step: Step, payload: Any) -> tuple[dict[str, Any], list[Problem]]:
    if not isinstance(payload, dict):
        found = type_of(payload)
        return {}, [Problem(f"a signal's body is a JSON object, not {found}", expected="object", found=found)]
    return fill(step.outputs, payload, "signal field")


def cancel(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Cancel an unfinished event: every unit not over is cancelled, and results still to come are dropped."""
    if event.status in TERMINAL_EVENT:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only an unfinished event can be cancelled")
    event = event.copy()
    event.status = EVENT_CANCELLED
    for state in owned_units(event, lambda s: s.status not in TERMINAL_STEP):
        state.status = CANCELLED
        state.ended_at = now
        drop_claim(state)
    event.updated_at = now
    event.due_at = None
    notify_end(plan, event, now, settings)
    return event


def expire(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Fail an event past its deadline; its steps stay as they are, so that a retry goes on from them."""
    event = event.copy()
    event.status = EVENT_FAILED
    message = f"the event did not end within its workflow's timeout of {plan.workflow.timeout:g} s"
    event.error = {"kind": ErrorKind.TIMEOUT.value, "message": message}
    event.updated_at = now
    event.due_at = None
    notify_end(plan, event, now, settings)
    return event


def pause(event: Event, now: float) -> Event:
    """Start nothing more until :func:`resume`: calls under way finish and are recorded, steps they make ready wait.

    A paused event is due only at its deadline, if it has one; a signal is still delivered.
    """
    if event.status in IDLE:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only an event under way can be paused")
    event = event.copy()
    event.status = EVENT_PAUSED
    event.updated_at = now
    event.due_at = event.deadline
    return event


def resume(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Go on with a paused event: its ready steps go to the workers, its timers run again."""
    if event.status is not EVENT_PAUSED:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only a paused event can be resumed")
    event = event.copy()
    event.status = EVENT_RUNNING
    for step_id, state in list(units(event)):
        # What fell due during the pause is sent at once, as by the sweeper; a lease that ran out stays overdue.
        if state.status is not RUNNING and (due := unit_due(state, settings)) is not None and due <= now:
            event.own(step_id).nudged_at = now
    return close(plan, event, now, settings)


def retry(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Retry a failed event from its failed steps; the completed ones keep their results.

    Steps the engine runs itself run again at once; calls go back to the workers.
    """
    if event.status is not EVENT_FAILED:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only a failed event can be retried")
    if event.error and event.error.get("kind") == ErrorKind.FAIL:
        raise InvalidState(f"event '{event.id}' was failed on purpose by its step '{event.error['step']}'")
    event = event.copy()
    event.status = EVENT_RUNNING
    event.error = None
    event.deadline = deadline(plan.workflow, now)
    event.notification = None
    event.to_parent = None
    for step in plan.order:
        if event.steps[step.id].status is FAILED:
            plan.kinds[step.id].retry(plan, event, step, now)
    advance(plan, event, now, evaluate=False)
    return close(plan, event, now, settings)


def nudged(event: Event, sent: list[str], now: float, settings: Settings) -> Event:
    """The event after the sweeper has sent the units ``sent`` again; they are not due again before long."""
    event = event.copy()
    for unit in sent:
        if unit == NOTIFY_UNIT and event.notification is not None:
            event.notification = event.notification.copy()
            event.notification.nudged_at = now
            continue
        if unit == PARENT_UNIT and event.to_parent is not None:
            event.to_parent = event.to_parent.copy()
            event.to_parent.nudged_at = now
            continue
        if unit_state(event, unit) is not None:
            event.own(unit).nudged_at = now
    if event.status not in TERMINAL_EVENT:
        event.due_at = until_deadline(event, scan(event, settings)[3])
    else:
        event.due_at = ending_due(event, settings)
    return event
