"""Child events: a ``workflow`` step waiting for the event it started, and that event's outcome handed back.

A worker claims a ``workflow`` step as it claims a service call, and starts the child event in place of the
call (with an idempotency key of the parent's id and the step's, so that a claim taken over starts no
second child); :func:`wait_for_child` records it, and the step waits. A child event carries ``parent``;
once it ends, its ``@parent`` unit is ready (see :func:`~machinery.engine.progress.notify_end`), and the
worker claiming it reads the parent and applies :func:`adopt`, then :func:`handed_back` on the child.
Both are idempotent: the step takes an outcome only while it waits for that child.
"""

from __future__ import annotations

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.dataflow import contract_failure, fill
from machinery.engine.model import Workflow
from machinery.engine.plan import Plan, Settings
from machinery.engine.progress import advance, close
from machinery.engine.schedule import ending_due
from machinery.engine.state import (
    COMPLETED,
    EVENT_COMPLETED,
    READY,
    TERMINAL_EVENT,
    WAITING,
    Event,
    StepState,
)
from machinery.engine.units import complete, drop_claim, fail_step

_KINDS = {kind.value: kind for kind in ErrorKind}


def wait_for_child(state: StepState, child_id: str) -> None:
    """A worker has started the child event ``child_id`` for the step: it waits for it, on no timer."""
    drop_claim(state)
    state.status = WAITING
    state.child = child_id
    state.run_at = None


def waiting_for(event: Event, child: Event) -> bool:
    """Whether ``event`` is the unfinished parent of ``child``, its step still waiting for it."""
    if child.parent is None or child.parent.get("event") != event.id or event.status in TERMINAL_EVENT:
        return False
    state = event.steps.get(child.parent.get("step", ""))
    return state is not None and state.status is WAITING and state.child == child.id


def adopt(
    plan: Plan,
    event: Event,
    child: Event,
    child_workflow: Workflow,
    *,
    now: float,
    settings: Settings,
    evaluate: bool = True,
) -> Event | None:
    """The parent ``event`` once its step has taken the outcome of the ended ``child`` (of ``child_workflow``):
    completed with the child's outputs, checked against that workflow's, or failed naming the child.

    None when there is nothing to do: the child has not ended, or the step waits for it no more. ``evaluate``
    as for :func:`~machinery.engine.progress.advance`.
    """
    if child.status not in TERMINAL_EVENT or not waiting_for(event, child):
        return None
    assert child.parent is not None
    step_id = child.parent["step"]
    event = event.copy()
    state = event.own(step_id)
    if child.status is EVENT_COMPLETED:
        outputs, problems = fill(
            child_workflow.outputs, child.outputs or {}, f"workflow '{child.workflow_name}' output"
        )
        if not problems:
            complete(state, outputs, now)
            advance(plan, event, now, ended=step_id, evaluate=evaluate)
            return close(plan, event, now, settings)
        error = contract_failure(f"child event '{child.id}' ended outside its workflow's contract: ", problems)
    else:
        error = child_failure(child)
    fail_step(event, step_id, error, now)
    return close(plan, event, now, settings)


def child_failure(child: Event) -> CallFailure:
    """The failure of a step whose child event failed or was cancelled, naming the child and its error.

    It keeps the child's kind of error, so that a child failed on purpose (by a ``fail`` step) fails its
    parent on purpose too, and the parent is not retried.
    """
    error = child.error or {}
    reason = f": {error['message']}" if error.get("message") else ""
    kind = _KINDS.get(error.get("kind", ""), ErrorKind.ERROR)
    message = f"child event '{child.id}' ({child.workflow_name}) {child.status.value}{reason}"
    return CallFailure(message, False, kind, {"child": child.id})


def hand_back_again(child: Event, now: float, settings: Settings) -> Event | None:
    """An ended child whose outcome its parent could not take when it was handed back (the parent had failed,
    and has been retried since): its ``@parent`` unit is ready again. None if it has not ended."""
    if child.parent is None or child.status not in TERMINAL_EVENT:
        return None
    child = child.copy()
    child.to_parent = StepState(status=READY, run_at=now)
    child.due_at = ending_due(child, settings)
    return child


def handed_back(child: Event, now: float, settings: Settings) -> Event | None:
    """The child once its outcome has been handed to its parent; None if that was done already."""
    state = child.to_parent
    if state is None or state.status is COMPLETED:
        return None
    child = child.copy()
    state = child.to_parent = state.copy()
    complete(state, None, now)
    child.due_at = ending_due(child, settings)
    return child
