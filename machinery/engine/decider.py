"""What happens next to an event: pure transitions from one state to the next.

Each function takes the event as read from the store and returns a changed
copy (or None when there is nothing to do); the caller writes it back with a
conditional write and, on conflict, reads again and asks again. No function
here does I/O, reads a clock or draws a random number: time, randomness and
claim tokens come in as arguments.

This module holds the workers' path (:func:`accept`, :func:`claim`,
:func:`finish`) and is the engine's one door: what users and the sweeper do
(:mod:`~machinery.engine.operations`) and what is due when
(:mod:`~machinery.engine.schedule`) are reached through it too. The rooms
behind it:

- :mod:`~machinery.engine.plan`: a workflow compiled for running, and the settings;
- :mod:`~machinery.engine.units`: units of work and the transitions of one unit's state;
- :mod:`~machinery.engine.dataflow`: the context, references, inputs and checked values;
- :mod:`~machinery.engine.kinds`: one handler per kind of step, found in one table;
- :mod:`~machinery.engine.progress`: starting what is ready, settling the event's status;
- :mod:`~machinery.engine.ending` and :mod:`~machinery.engine.notification`: how an event ends and is reported;
- :mod:`~machinery.engine.children`: a ``workflow`` step's child event, started, waited for and handed back;
- :mod:`~machinery.engine.fanout`: the items of map and fleet steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from machinery.engine.attempts import callback_missed, record, start, take_over, unregistered
from machinery.engine.callbacks import callback, heartbeat
from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.children import (
    adopt,
    child_failure,
    hand_back_again,
    handed_back,
    wait_for_child,
    waiting_for,
)
from machinery.engine.dataflow import contract_failure, fill
from machinery.engine.errors import InvalidData, Problem
from machinery.engine.fanout import (
    claim_item,
    finish_item,
    handed_on,
    item_failed,
    items_completed,
    nudged_item,
    parked,
    rearm,
    release,
    settle,
)
from machinery.engine.fleets import Workload
from machinery.engine.kinds.fleet import selector as fleet_selector
from machinery.engine.kinds.workflow import CHILD
from machinery.engine.model import Service, Workflow
from machinery.engine.notification import claim_notification, finish_notification
from machinery.engine.operations import cancel, expire, nudged, pause, resume, retry, signal
from machinery.engine.plan import Plan, Settings
from machinery.engine.progress import advance, close
from machinery.engine.schedule import deadline, overdue_units, past_deadline, ready_units, timers, too_soon
from machinery.engine.state import (
    CLAIMABLE,
    COMPLETED,
    EVENT_COMPLETED,
    EVENT_RUNNING,
    IDLE,
    READY,
    RETRYING,
    RUNNING,
    TERMINAL_EVENT,
    WAITING,
    Event,
    Item,
    StepState,
)
from machinery.engine.types import type_of
from machinery.engine.units import NOTIFY_UNIT, PARENT_UNIT, complete, fail_state, fail_step, unit_state

__all__ = [
    "NOTIFY_UNIT",
    "PARENT_UNIT",
    "accept",
    "adopt",
    "adopt_item",
    "await_worker",
    "callback",
    "cancel",
    "claim",
    "claim_item",
    "finish_item",
    "handed_on",
    "heartbeat",
    "item_failed",
    "item_child_started",
    "items_completed",
    "members_wanted",
    "nudged_item",
    "parked",
    "rearm",
    "release",
    "expire",
    "finish",
    "hand_back_again",
    "handed_back",
    "nudged",
    "overdue_units",
    "past_deadline",
    "pause",
    "ready_units",
    "resume",
    "retry",
    "signal",
    "timers",
    "waiting_for",
]


def accept(
    plan: Plan,
    data: Mapping[str, Any],
    *,
    event_id: str,
    now: float,
    settings: Settings,
    idempotency_key: str | None = None,
    parent: dict[str, Any] | None = None,
) -> Event:
    """A new event for ``data``, its first steps ready; raises InvalidData listing every bad field.

    A child event names the step that started it in ``parent`` (see :attr:`Event.parent`).
    """
    workflow = plan.workflow
    declared = {f.name for f in workflow.inputs}
    problems = [
        Problem(f"'{name}' is not an input of workflow '{workflow.name}'", field=name, found=type_of(value))
        for name, value in data.items()
        if name not in declared
    ]
    accepted, wrong = fill(workflow.inputs, data, "input", quote=False)
    problems += wrong
    if problems:
        raise InvalidData(f"the data does not match the inputs of workflow '{workflow.name}'", problems)
    event = Event(
        id=event_id,
        workflow_id=workflow.id or workflow.name,
        workflow_name=workflow.name,
        workflow_version=workflow.version,
        data=accepted,
        created_at=now,
        updated_at=now,
        idempotency_key=idempotency_key,
        parent=parent,
        steps={step.id: StepState() for step in plan.order},
        deadline=deadline(workflow, now),
    )
    advance(plan, event, now, evaluate=False)
    return close(plan, event, now, settings)


def claim(
    plan: Plan,
    services: Mapping[str, Service],
    event: Event,
    unit: str,
    *,
    now: float,
    token: str,
    settings: Settings,
    members: Sequence[Workload] = (),
) -> tuple[Event, Call | None] | None:
    """Claim ``unit`` for one call: None when there is nothing to do for it now. A fleet step is given the
    workloads its selector matches (see :func:`members_wanted`) as ``members``.

    A running unit whose lease ran out counts as lost and is claimed again;
    after ``settings.max_lost`` losses it fails instead. A delay or a wait whose
    time has come is completed here, with no call, and a step the API left for
    a worker to evaluate is run here. Those cases return the changed event and
    no call.
    """
    if unit == NOTIFY_UNIT:
        return claim_notification(plan, event, now, token, settings)
    state = unit_state(event, unit)
    if event.status in IDLE or state is None or state.status not in CLAIMABLE:
        return None
    if event.deadline is not None and now >= event.deadline:
        return expire(plan, event, now, settings), None
    if too_soon(state, now):
        return None
    event = event.copy()
    event.status = EVENT_RUNNING
    state = event.own(unit)
    step = plan.graph.steps[unit]
    kind = plan.kinds[unit]
    if state.status is WAITING and kind.calls_service:
        # A callback that did not come in time: a new attempt below, or the end.
        service = services.get(kind.callee(step) or "")
        failure = callback_missed(state, service, now) if service is not None else unregistered(kind.callee_label(step))
        if failure is not None:
            fail_step(event, unit, failure, now)
            return close(plan, event, now, settings), None
    if state.status is WAITING or not kind.calls_service:
        if state.status is WAITING:
            kind.wake(plan, event, step, state, now)
        else:
            kind.start(plan, event, step, state, now)
        if state.status is COMPLETED:
            advance(plan, event, now, ended=unit)
        return close(plan, event, now, settings), None
    service = services.get(kind.callee(step) or "")
    failure = take_over(state, service, now, settings)
    if failure is not None or service is None:
        fail_step(event, unit, failure or unregistered(kind.callee_label(step)), now)
        return close(plan, event, now, settings), None
    if kind.fans_out:
        event.spawned = [
            settle(item, settings) for item in kind.fan_out(plan, event, step, state, service, now, settings, members)
        ]
        if state.status is COMPLETED:
            advance(plan, event, now, ended=unit)
        return close(plan, event, now, settings), None
    inputs, problems = kind.call_inputs(plan, event, step, service)
    if problems:
        error = contract_failure(f"step '{unit}' cannot call '{service.name}': ", problems, ErrorKind.INPUT)
        fail_step(event, unit, error, now)
        return close(plan, event, now, settings), None
    call = start(
        state, unit, service, inputs, token=token, key=f"{event.id}/{unit}", item=None, now=now, settings=settings
    )
    return close(plan, event, now, settings), call


def members_wanted(plan: Plan, event: Event, unit: str) -> tuple[str, dict[str, str]] | None:
    """For a fleet step that a claim would fan out: its fleet and the labels its workloads must have, for the
    caller to list them; None for any other unit, and for one whose selector is no object of labels (it fails
    as it fans out, with no workload to list)."""
    step = plan.graph.steps.get(unit)
    state = unit_state(event, unit)
    if step is None or step.fleet is None or state is None or state.status not in (READY, RETRYING):
        return None
    labels = fleet_selector(plan, event, step)
    return (step.fleet, labels) if labels is not None else None


def await_worker(event: Event, unit: str, message: str) -> Event | None:
    """Say in the state of ``unit``, ready but left by a worker that may not call its service, that it waits for
    one that may; None if it says so already or is no longer ready."""
    state = unit_state(event, unit)
    note = {"kind": ErrorKind.WORKER.value, "message": message, "transient": True}
    if state is None or state.status not in (READY, RETRYING) or state.error == note:
        return None
    event = event.copy()
    event.own(unit).error = note
    return event


def finish(
    plan: Plan,
    event: Event,
    call: Call,
    *,
    outputs: Any = None,
    error: CallFailure | None = None,
    now: float,
    random: float,
    settings: Settings,
) -> Event | None:
    """Record the result of ``call``: its outputs (checked against the contract) or its error.

    The result of a ``workflow`` step's call is the id of the child event it started, for which the step waits.
    None when the claim is no longer this call's (another worker took the
    unit over, or the event was cancelled), so that a late or duplicate
    result changes nothing.
    """
    if call.step_id == NOTIFY_UNIT:
        return finish_notification(event, call, error, now, random, settings)
    state = unit_state(event, call.step_id)
    if state is None or state.status is not RUNNING or state.token != call.token:
        return None
    event = event.copy()
    state = event.own(call.step_id)
    if error is None and call.service.kind == CHILD:
        wait_for_child(state, outputs)
        return close(plan, event, now, settings)
    failure = record(state, call.service, outputs, error, status=event.status, now=now, random=random)
    if failure is not None:
        fail_step(event, call.step_id, failure, now)
    elif state.status is COMPLETED:
        advance(plan, event, now, ended=call.step_id)
    return close(plan, event, now, settings)


def item_child_started(item: Item, call: Call, child_id: str, settings: Settings) -> Item | None:
    """An item of a map over a workflow once its worker has started its child event: it waits for it, as a
    ``workflow`` step does; None when the claim is no longer this call's."""
    if item.state.status is not RUNNING or item.state.token != call.token:
        return None
    item = item.copy()
    wait_for_child(item.state, child_id)
    return settle(item, settings)


def adopt_item(item: Item, child: Event, child_workflow: Workflow, now: float, settings: Settings) -> Item | None:
    """An item of a map over a workflow once it has taken the outcome of its ended ``child``: completed with the
    child's outputs, checked against its workflow's, or failed naming it; None if it waits for it no more."""
    if child.status not in TERMINAL_EVENT or item.state.status is not WAITING or item.state.child != child.id:
        return None
    item = item.copy()
    if child.status is EVENT_COMPLETED:
        outputs, problems = fill(
            child_workflow.outputs, child.outputs or {}, f"workflow '{child.workflow_name}' output"
        )
        if not problems:
            complete(item.state, outputs, now)
            return settle(item, settings)
        error = contract_failure(f"child event '{child.id}' ended outside its workflow's contract: ", problems)
    else:
        error = child_failure(child)
    fail_state(item.state, error, now)
    return settle(item, settings)
