"""Moving an event on after a change: start what has become ready, and settle the event's status and due time.

Every transition ends with :func:`close`; one that completes a step first calls
:func:`advance` from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from heapq import heappop, heappush

from machinery.engine.ending import end
from machinery.engine.plan import Plan, Settings
from machinery.engine.schedule import ending_due, scan, until_deadline
from machinery.engine.state import (
    COMPLETED,
    EVENT_COMPLETED,
    EVENT_PAUSED,
    EVENT_RUNNING,
    EVENT_WAITING,
    OVER,
    PENDING,
    READY,
    SKIPPED,
    TERMINAL_EVENT,
    Event,
    StepState,
)
from machinery.engine.units import make_ready


def advance(plan: Plan, event: Event, now: float, ended: str | None = None, *, evaluate: bool = True) -> None:
    """Start every pending step whose dependencies are over, and skip those cut off.

    Steps the engine runs itself run here; service and map steps become ready for a worker, and so do steps
    that evaluate expressions unless ``evaluate``: the API's transitions pass False, so that whatever a workflow
    computes, its thread does not.
    With ``ended``, only what follows that step (and what that sets off) is looked at.
    Steps are taken in graph order, so each is looked at once its dependencies have been.
    """
    graph = plan.graph
    kinds = plan.kinds
    steps = event.steps
    # Ascending positions are a heap already.
    queue = [*graph.dependent_positions[ended]] if ended is not None else [*range(len(graph.order))]
    while queue and event.status not in TERMINAL_EVENT:
        step = graph.order[heappop(queue)]
        if steps[step.id].status is not PENDING:
            continue
        completed = _routes_taken(graph.deps[step.id], steps)
        if completed is None:
            continue
        state = event.own(step.id)
        if not graph.runs_after(step.id, completed):
            state.status = SKIPPED
            state.ended_at = now
        elif evaluate or not kinds[step.id].evaluates:
            kinds[step.id].start(plan, event, step, state, now)
        else:
            make_ready(state, now)
        if state.status in OVER:
            for position in graph.dependent_positions[step.id]:
                heappush(queue, position)


def _routes_taken(deps: tuple[str, ...], steps: Mapping[str, StepState]) -> dict[str, str | None] | None:
    """The route each completed dependency took, once every dependency is over; None before."""
    completed = {}
    for dep in deps:
        state = steps[dep]
        if state.status is COMPLETED:
            completed[dep] = state.route
        elif state.status is not SKIPPED:
            return None
    return completed


def close(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """The end of a transition: the event's status follows from its steps', and ``due_at`` from its units'.

    An event whose steps are all over completes. One with nothing left but waits and delays is waiting, and a
    waiting one with work again is running; an accepted one stays so until a worker claims a step, and a paused
    one until it is resumed, due only at its deadline meanwhile.
    """
    event.updated_at = now
    event.due_at = None
    if event.status not in TERMINAL_EVENT:
        over, active, waiting, due = scan(event, settings)
        if not over:
            if event.status is EVENT_PAUSED:
                due = None
            elif waiting and not active:
                event.status = EVENT_WAITING
            elif event.status is EVENT_WAITING:
                event.status = EVENT_RUNNING
            event.due_at = due if event.deadline is None else until_deadline(event, due)
            return event
        end(plan, event, EVENT_COMPLETED)
    notify_end(plan, event, now, settings)
    return event


def notify_end(plan: Plan, event: Event, now: float, settings: Settings) -> None:
    """An event that has ended is sent to its workflow's ``notify`` URL, and a child event's outcome handed to its
    parent's step, once for each time it ends."""
    if plan.workflow.notify is not None and event.notification is None:
        event.notification = StepState(status=READY, run_at=now)
    if event.parent is not None and event.to_parent is None:
        event.to_parent = StepState(status=READY, run_at=now)
    event.due_at = ending_due(event, settings)
