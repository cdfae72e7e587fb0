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
- :mod:`~machinery.engine.ending` and :mod:`~machinery.engine.notification`: how an event ends and is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.dataflow import check_outputs, contract_failure, fill
from machinery.engine.errors import InvalidData, Problem
from machinery.engine.model import Service
from machinery.engine.notification import claim_notification, finish_notification
from machinery.engine.operations import cancel, expire, nudged, pause, resume, retry, signal
from machinery.engine.plan import Plan, Settings
from machinery.engine.progress import advance, close
from machinery.engine.schedule import deadline, overdue_units, past_deadline, ready_units, timers, too_soon
from machinery.engine.state import (
    CLAIMABLE,
    COMPLETED,
    EVENT_RUNNING,
    IDLE,
    READY,
    RETRYING,
    RUNNING,
    TERMINAL_EVENT,
    WAITING,
    Event,
    StepState,
)
from machinery.engine.types import type_of
from machinery.engine.units import (
    NOTIFY_UNIT,
    complete,
    drop_claim,
    fail_unit,
    own_unit,
    parse_unit,
    record_attempt,
    start_attempt,
    unit_state,
)

__all__ = [
    "NOTIFY_UNIT",
    "accept",
    "await_worker",
    "cancel",
    "claim",
    "expire",
    "finish",
    "nudged",
    "overdue_units",
    "past_deadline",
    "pause",
    "ready_units",
    "resume",
    "retry",
    "signal",
    "timers",
]


def accept(
    plan: Plan,
    data: Mapping[str, Any],
    *,
    event_id: str,
    now: float,
    settings: Settings,
    idempotency_key: str | None = None,
) -> Event:
    """A new event for ``data``, its first steps ready; raises InvalidData listing every bad field."""
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
) -> tuple[Event, Call | None] | None:
    """Claim ``unit`` for one call: None when there is nothing to do for it now.

    A running unit whose lease ran out counts as lost and is claimed again;
    after ``settings.max_lost`` losses it fails instead. A delay or a wait whose
    time has come is completed here, with no call, and a step the API left for
    a worker to evaluate is run here. Those cases return the changed event and
    no call.
    """
    if unit == NOTIFY_UNIT:
        return claim_notification(plan, event, now, token, settings)
    step_id, item = parse_unit(unit)
    state = unit_state(event, step_id, item)
    if event.status in IDLE or state is None or state.status not in CLAIMABLE:
        return None
    if event.deadline is not None and now >= event.deadline:
        return expire(plan, event, now, settings), None
    if too_soon(state, now):
        return None
    event = event.copy()
    event.status = EVENT_RUNNING
    state = own_unit(event, step_id, item)
    step = plan.graph.steps[step_id]
    kind = plan.kinds[step_id]
    if state.status is WAITING or not kind.calls_service:
        if state.status is WAITING:
            kind.wake(plan, event, step, state, now)
        else:
            kind.start(plan, event, step, state, now)
        if state.status is COMPLETED:
            advance(plan, event, now, ended=step_id)
        return close(plan, event, now, settings), None
    service = services.get(step.service or "")
    if state.status is RUNNING:
        state.lost += 1
        record_attempt(
            state, now, {"kind": ErrorKind.LOST.value, "message": "the worker was lost before it recorded a result"}
        )
        message = None
        if state.lost > settings.max_lost:
            message = f"the worker running this step was lost {state.lost} times; giving up"
        elif service is not None and not service.idempotent:
            message = (
                f"the worker running this step was lost mid-call, and service '{service.name}' is not idempotent"
                " (idempotent: false): it is not called a second time"
            )
        if message is not None:
            fail_unit(event, step_id, item, CallFailure(message, False, ErrorKind.LOST), now)
            return close(plan, event, now, settings), None
    if service is None:
        error = CallFailure(f"service '{step.service}' is no longer registered", False, ErrorKind.CONFIG)
        fail_unit(event, step_id, item, error, now)
        return close(plan, event, now, settings), None
    inputs, problems = kind.call_inputs(plan, event, step, service, item)
    if problems:
        error = contract_failure(f"step '{step_id}' cannot call '{service.name}': ", problems, ErrorKind.INPUT)
        fail_unit(event, step_id, item, error, now)
        return close(plan, event, now, settings), None
    lease_until = now + service.timeout + settings.lease_grace
    if state.error is not None and state.error.get("kind") == ErrorKind.WORKER:
        state.error = None
    start_attempt(state, token, now, lease_until)
    state.budget_used += 1
    state.ended_at = None
    state.inputs = inputs
    call = Call(step_id, service, inputs, state.attempts, token, f"{event.id}/{unit}", item, lease_until)
    return close(plan, event, now, settings), call


def await_worker(event: Event, unit: str, message: str) -> Event | None:
    """Say in the state of ``unit``, ready but left by a worker that may not call its service, that it waits for
    one that may; None if it says so already or is no longer ready."""
    step_id, item = parse_unit(unit)
    state = unit_state(event, step_id, item)
    note = {"kind": ErrorKind.WORKER.value, "message": message, "transient": True}
    if state is None or state.status not in (READY, RETRYING) or state.error == note:
        return None
    event = event.copy()
    own_unit(event, step_id, item).error = note
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

    None when the claim is no longer this call's (another worker took the
    unit over, or the event was cancelled), so that a late or duplicate
    result changes nothing.
    """
    if call.step_id == NOTIFY_UNIT:
        return finish_notification(event, call, error, now, random, settings)
    state = unit_state(event, call.step_id, call.item)
    if state is None or state.status is not RUNNING or state.token != call.token:
        return None
    event = event.copy()
    state = own_unit(event, call.step_id, call.item)
    if error is None:
        checked, problems = check_outputs(call.service, outputs)
        if not problems:
            _complete_call(plan, event, call, state, checked, now)
            return close(plan, event, now, settings)
        error = contract_failure(f"service '{call.service.name}' answered outside its contract: ", problems)
    record_attempt(state, now, error.to_doc())
    budget_left = state.budget_used - state.lost < call.service.retry.attempts
    if error.transient and budget_left and event.status not in TERMINAL_EVENT:
        state.status = RETRYING
        state.error = error.to_doc()
        state.ended_at = now
        state.run_at = now + call.service.retry.delay(state.budget_used - state.lost, random)
        drop_claim(state)
        return close(plan, event, now, settings)
    if error.transient and not budget_left:
        error = CallFailure(
            f"{error.message} (gave up after {state.attempts} attempts)", False, error.kind, error.details
        )
    fail_unit(event, call.step_id, call.item, error, now)
    return close(plan, event, now, settings)


def _complete_call(plan: Plan, event: Event, call: Call, state: StepState, outputs: dict[str, Any], now: float) -> None:
    complete(state, outputs, now)
    if call.item is not None:
        plan.kinds[call.step_id].item_done(plan, event, call.step_id, now)
    if event.steps[call.step_id].status is COMPLETED:
        advance(plan, event, now, ended=call.step_id)
