"""What happens next to an event: pure transitions from one state to the next.

Each function takes the event as read from the store and returns a changed
copy (or None when there is nothing to do); the caller writes it back with a
conditional write and, on conflict, reads again and asks again. No function
here does I/O, reads a clock or draws a random number: time, randomness and
claim tokens come in as arguments.

Work is handed out in units: a step (``upper``), or one item of a map step
(``each[3]``). Service calls are claimed by workers; the engine runs every
other kind of step itself, inside the transition that makes it ready.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from heapq import heappop, heappush
from typing import Any

from machinery.engine.calls import Call, CallFailure, ErrorKind, unit_key
from machinery.engine.checker import MAP_RESULTS
from machinery.engine.errors import InvalidData, InvalidExpression, InvalidState, Problem
from machinery.engine.expressions import Expression, Expressions
from machinery.engine.graph import SIGNAL_ROUTE, TIMEOUT_ROUTE, Graph, build
from machinery.engine.model import (
    DELAY,
    FAIL,
    MAP,
    SERVICE,
    SWITCH,
    TRANSFORM,
    WAIT,
    Field,
    HttpEndpoint,
    Ref,
    Service,
    Step,
    Workflow,
)
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import TERMINAL_EVENT, TERMINAL_STEP, Event, EventStatus, StepState, StepStatus
from machinery.engine.types import conforms, describe_mismatch, epoch_seconds, type_of

# A transition looks statuses up dozens of times, and CPython 3.11 finds an enum member on its class ten times
# slower than a module global.
_PENDING, _READY, _RUNNING = StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING
_RETRYING, _WAITING, _COMPLETED = StepStatus.RETRYING, StepStatus.WAITING, StepStatus.COMPLETED
_SKIPPED, _FAILED, _CANCELLED = StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.CANCELLED
_EVENT_RUNNING, _EVENT_WAITING, _EVENT_COMPLETED = EventStatus.RUNNING, EventStatus.WAITING, EventStatus.COMPLETED
_EVENT_FAILED, _EVENT_CANCELLED, _EVENT_PAUSED = EventStatus.FAILED, EventStatus.CANCELLED, EventStatus.PAUSED
_IDLE = TERMINAL_EVENT | {_EVENT_PAUSED}
"""Event statuses in which no unit is claimed, nor sent, nor due."""
_CLAIMABLE = (_READY, _RETRYING, _RUNNING, _WAITING)
_ACTIVE = (_READY, _RUNNING, _RETRYING)
_OVER = (_COMPLETED, _SKIPPED)
_UNIT = re.compile(r"^(?P<step>.+)\[(?P<item>\d+)\]$")

NOTIFY_UNIT = "@notify"
"""The unit that sends an ended event to its workflow's ``notify`` URL; no step id starts with ``@``."""
NOTIFY_TIMEOUT = 10.0
NOTIFY_RETRY = RetryPolicy(attempts=6, backoff=1.0, multiplier=3.0, max_delay=300.0)
"""About six minutes of tries before a notification is given up."""


@dataclass(frozen=True)
class Settings:
    """Timing the decider needs; the composition root sets it from the configuration."""

    lease_grace: float = 5.0
    """Seconds a claim outlives its service's timeout before its worker is presumed lost."""
    stale_after: float = 30.0
    """Seconds a ready step may wait for a worker before the sweeper sends it again."""
    max_lost: int = 3
    """Lost claims a step survives; one more fails it instead of looping for ever."""


@dataclass(frozen=True)
class Plan:
    """A workflow compiled for running: its graph and its expressions."""

    workflow: Workflow
    graph: Graph
    expressions: Mapping[tuple[str, str], Expression]
    """By (step id, field): a switch's ``expression``, each ``compute`` of a transform."""

    @classmethod
    def of(cls, workflow: Workflow, expressions: Expressions) -> Plan:
        graph, problems = build(workflow)
        if graph is None:
            raise ValueError(problems[0].message)
        compiled = {}
        for step in workflow.steps:
            if step.kind == SWITCH:
                compiled[(step.id, "expression")] = expressions.compile(step.expression or "")
            for name, source in step.compute.items():
                compiled[(step.id, name)] = expressions.compile(source)
        return cls(workflow, graph, compiled)

    @property
    def order(self) -> tuple[Step, ...]:
        return self.graph.order


def parse_unit(unit: str) -> tuple[str, int | None]:
    if not unit.endswith("]"):
        return unit, None
    match = _UNIT.match(unit)
    return (match["step"], int(match["item"])) if match else (unit, None)


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
    accepted, wrong = _fill(workflow.inputs, data, "input", quote=False)
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
        deadline=_deadline(workflow, now),
    )
    _advance(plan, event, now)
    return _close(plan, event, now, settings)


def ready_units(event: Event) -> list[str]:
    """Units a worker may claim now."""
    if event.status in _IDLE:
        notification = event.notification
        return [NOTIFY_UNIT] if notification is not None and notification.status is _READY else []
    units = []
    for step_id, state in event.steps.items():
        if state.items is None:
            if state.status is _READY:
                units.append(step_id)
        else:
            units += [unit_key(step_id, i) for i, item in enumerate(state.items) if item.status is _READY]
    return units


def timers(event: Event) -> list[tuple[str, float]]:
    """Units that are due at a time: retries, delays, and waits with a timeout."""
    if event.status in _IDLE:
        notification = event.notification
        if notification is not None and notification.status is _RETRYING and notification.run_at is not None:
            return [(NOTIFY_UNIT, notification.run_at)]
        return []
    return [
        (unit_key(step_id, item), state.run_at)
        for step_id, item, state in _units(event)
        if (state.status is _RETRYING or state.status is _WAITING) and state.run_at is not None
    ]


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
    time has come is completed here, with no call. Those cases return the
    changed event and no call.
    """
    if unit == NOTIFY_UNIT:
        return _claim_notification(plan, event, now, token, settings)
    step_id, item = parse_unit(unit)
    state = _unit_state(event, step_id, item)
    if event.status in _IDLE or state is None or state.status not in _CLAIMABLE:
        return None
    if event.deadline is not None and now >= event.deadline:
        return expire(plan, event, now, settings), None
    if _too_soon(state, now):
        return None
    event = event.copy()
    event.status = _EVENT_RUNNING
    state = _own_unit(event, step_id, item)
    step = plan.graph.steps[step_id]
    if state.status is _WAITING:
        _wake(plan, event, step, state, now)
        return _close(plan, event, now, settings), None
    if state.status is _RUNNING:
        state.lost += 1
        _record_attempt(
            state, now, {"kind": ErrorKind.LOST.value, "message": "the worker was lost before it recorded a result"}
        )
        if state.lost > settings.max_lost:
            error = CallFailure(
                f"the worker running this step was lost {state.lost} times; giving up",
                transient=False,
                kind=ErrorKind.LOST,
            )
            _fail_unit(event, step_id, item, error, now)
            return _close(plan, event, now, settings), None
    service = services.get(step.service or "")
    if service is None:
        error = CallFailure(f"service '{step.service}' is no longer registered", transient=False, kind=ErrorKind.CONFIG)
        _fail_unit(event, step_id, item, error, now)
        return _close(plan, event, now, settings), None
    inputs, problems = _inputs(plan, event, step, service, item)
    if problems:
        error = CallFailure(
            f"step '{step_id}' cannot call '{service.name}': " + "; ".join(p.message for p in problems),
            transient=False,
            kind=ErrorKind.INPUT,
            details={"problems": [p.to_dict() for p in problems]},
        )
        _fail_unit(event, step_id, item, error, now)
        return _close(plan, event, now, settings), None
    state.status = _RUNNING
    state.attempts += 1
    state.budget_used += 1
    state.token = token
    state.started_at = now
    state.ended_at = None
    state.lease_until = now + service.timeout + settings.lease_grace
    state.nudged_at = None
    state.inputs = inputs
    call = Call(step_id, service, inputs, state.attempts, token, f"{event.id}/{unit}", item, state.lease_until)
    return _close(plan, event, now, settings), call


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
        return _finish_notification(event, call, error, now, random, settings)
    state = _unit_state(event, call.step_id, call.item)
    if state is None or state.status is not _RUNNING or state.token != call.token:
        return None
    event = event.copy()
    state = _own_unit(event, call.step_id, call.item)
    if error is None:
        checked, problems = check_outputs(call.service, outputs)
        if not problems:
            _complete(state, checked, now)
            if call.item is not None:
                _map_progress(plan, event, call.step_id, now)
            if event.steps[call.step_id].status is _COMPLETED:
                _advance(plan, event, now, ended=call.step_id)
            return _close(plan, event, now, settings)
        error = CallFailure(
            f"service '{call.service.name}' answered outside its contract: " + "; ".join(p.message for p in problems),
            transient=False,
            kind=ErrorKind.TYPE,
            details={"problems": [p.to_dict() for p in problems]},
        )
    _record_attempt(state, now, error.to_doc())
    budget_left = state.budget_used - state.lost < call.service.retry.attempts
    if error.transient and budget_left and event.status not in TERMINAL_EVENT:
        state.status = _RETRYING
        state.error = error.to_doc()
        state.ended_at = now
        state.run_at = now + call.service.retry.delay(state.budget_used - state.lost, random)
        state.lease_until = None
        state.token = None
        return _close(plan, event, now, settings)
    if error.transient and not budget_left:
        error = CallFailure(
            f"{error.message} (gave up after {state.attempts} attempts)", False, error.kind, error.details
        )
    _fail_unit(event, call.step_id, call.item, error, now)
    return _close(plan, event, now, settings)


def signal(plan: Plan, event: Event, name: str, payload: Any, *, now: float, settings: Settings) -> Event:
    """Deliver the signal ``name`` to the step waiting for it, or keep it for the step that will.

    InvalidData when ``payload`` does not fit the waiting step's outputs;
    InvalidState when the event is over or no step of it waits for ``name``.
    """
    if event.status in TERMINAL_EVENT:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; it takes no more signals")
    waits = [s for s in plan.order if s.kind == WAIT and s.signal == name]
    waiting = [s for s in waits if event.steps[s.id].status is _WAITING]
    coming = [s for s in waits if event.steps[s.id].status in (_PENDING, _READY)]
    if not waiting and not coming:
        raise InvalidState(f"no step of event '{event.id}' waits for signal '{name}' (any more)")
    target = (waiting or coming)[0]
    outputs, problems = _signal_outputs(target, payload)
    if problems:
        raise InvalidData(f"signal '{name}' does not match the outputs of step '{target.id}'", problems)
    event = event.copy()
    if waiting:
        if event.status is not _EVENT_PAUSED:
            event.status = _EVENT_RUNNING
        state = event.own(target.id)
        _complete(state, outputs, now)
        state.route = SIGNAL_ROUTE
        _advance(plan, event, now, ended=target.id)
    else:
        event.signals = [*event.signals, {"name": name, "payload": outputs, "at": now}]
    return _close(plan, event, now, settings)


def check_outputs(service: Service, outputs: Any) -> tuple[dict[str, Any], list[Problem]]:
    """The declared outputs of a service's answer, defaults filled, and what does not fit."""
    if not isinstance(outputs, dict):
        found = type_of(outputs)
        return {}, [Problem(f"the answer should be a JSON object, got {found}", expected="object", found=found)]
    return _fill(service.outputs, outputs, f"service '{service.name}' output")


def overdue_units(event: Event, now: float, settings: Settings) -> list[str]:
    """Units the sweeper should send to the workers again: their message is late or their worker gone."""
    if event.status in _IDLE:
        notification = event.notification
        due = _unit_due(notification, settings) if notification is not None else None
        return [NOTIFY_UNIT] if due is not None and due <= now else []
    return [
        unit_key(step_id, item)
        for step_id, item, state in _units(event)
        if (due := _unit_due(state, settings)) is not None and due <= now
    ]


def nudged(event: Event, units: list[str], now: float, settings: Settings) -> Event:
    """The event after the sweeper has sent ``units`` again; they are not due again before long."""
    event = event.copy()
    for unit in units:
        if unit == NOTIFY_UNIT and event.notification is not None:
            event.notification = event.notification.copy()
            event.notification.nudged_at = now
            continue
        step_id, item = parse_unit(unit)
        if _unit_state(event, step_id, item) is not None:
            _own_unit(event, step_id, item).nudged_at = now
    if event.status not in TERMINAL_EVENT:
        event.due_at = _until_deadline(event, _scan(event, settings)[3])
    elif event.notification is not None:
        event.due_at = _unit_due(event.notification, settings)
    return event


def cancel(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    if event.status in TERMINAL_EVENT:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only an unfinished event can be cancelled")
    event = event.copy()
    event.status = _EVENT_CANCELLED
    for state in _owned_units(event, lambda s: s.status not in TERMINAL_STEP):
        state.status = _CANCELLED
        state.ended_at = now
        state.token = None
        state.lease_until = None
    event.updated_at = now
    event.due_at = None
    _notify_end(plan, event, now, settings)
    return event


def past_deadline(event: Event, now: float) -> bool:
    """Whether ``event`` is unfinished at its deadline, and should be expired."""
    return event.deadline is not None and now >= event.deadline and event.status not in TERMINAL_EVENT


def expire(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Fail an event past its deadline; its steps stay as they are, so that a retry goes on from them."""
    event = event.copy()
    event.status = _EVENT_FAILED
    message = f"the event did not end within its workflow's timeout of {plan.workflow.timeout:g} s"
    event.error = {"kind": ErrorKind.TIMEOUT.value, "message": message}
    event.updated_at = now
    event.due_at = None
    _notify_end(plan, event, now, settings)
    return event


def pause(event: Event, now: float) -> Event:
    """Start nothing more until :func:`resume`: calls under way finish and are recorded, steps they make ready wait.

    A paused event is due only at its deadline, if it has one; a signal is still delivered.
    """
    if event.status in _IDLE:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only an event under way can be paused")
    event = event.copy()
    event.status = _EVENT_PAUSED
    event.updated_at = now
    event.due_at = event.deadline
    return event


def resume(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Go on with a paused event: its ready steps go to the workers, its timers run again."""
    if event.status is not _EVENT_PAUSED:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only a paused event can be resumed")
    event = event.copy()
    event.status = _EVENT_RUNNING
    for step_id, item, state in list(_units(event)):
        # What fell due during the pause is sent at once, as by the sweeper; a lease that ran out stays overdue.
        if state.status is not _RUNNING and (due := _unit_due(state, settings)) is not None and due <= now:
            _own_unit(event, step_id, item).nudged_at = now
    return _close(plan, event, now, settings)


def retry(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Retry a failed event from its failed steps; the completed ones keep their results.

    Steps the engine runs itself run again at once; calls go back to the workers.
    """
    if event.status is not _EVENT_FAILED:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only a failed event can be retried")
    if event.error and event.error.get("kind") == ErrorKind.FAIL:
        raise InvalidState(f"event '{event.id}' was failed on purpose by its step '{event.error['step']}'")
    event = event.copy()
    event.status = _EVENT_RUNNING
    event.error = None
    event.deadline = _deadline(plan.workflow, now)
    event.notification = None
    for step in plan.order:
        if event.steps[step.id].status is not _FAILED:
            continue
        state = event.own(step.id)
        if state.items is not None:
            state.status = _RUNNING
            for i, item in enumerate(state.items):
                if item.status is _FAILED:
                    _retry_unit(event.own_item(step.id, i), now)
            _map_progress(plan, event, step.id, now)
        elif step.calls_service:
            _retry_unit(state, now)
        else:
            state.status = _PENDING
            state.error = None
    _advance(plan, event, now)
    return _close(plan, event, now, settings)


def context(plan: Plan, event: Event, upto: frozenset[str] | None = None) -> dict[str, Any]:
    """The context: the event's data, then the outputs of completed steps in graph order.

    With ``upto``, only the outputs of those steps (a step's upstream) count.
    """
    ctx = dict(event.data)
    for step in plan.order:
        if upto is not None and step.id not in upto:
            continue
        state = event.steps[step.id]
        if state.status is _COMPLETED and state.outputs and _writes_context(step):
            for name, value in state.outputs.items():
                ctx[step.context_name(name)] = value
    return ctx


# Internal transitions, applied to a copy the caller owns.


def _units(event: Event) -> Iterator[tuple[str, int | None, StepState]]:
    """Every unit as step id, item and state: steps, and each item of a map step (in place of the step itself)."""
    for step_id, state in event.steps.items():
        if state.items is None:
            yield step_id, None, state
        else:
            for i, item in enumerate(state.items):
                yield step_id, i, item


def _own_unit(event: Event, step_id: str, item: int | None) -> StepState:
    return event.own(step_id) if item is None else event.own_item(step_id, item)


def _owned_units(event: Event, keep: Callable[[StepState], bool]) -> list[StepState]:
    """Every unit (map steps and their items alike) that ``keep`` keeps, taken to be changed."""
    found = []
    for step_id, state in list(event.steps.items()):
        if keep(state):
            found.append(event.own(step_id))
        for i, item in enumerate(state.items or ()):
            if keep(item):
                found.append(event.own_item(step_id, i))
    return found


def _unit_state(event: Event, step_id: str, item: int | None) -> StepState | None:
    state = event.steps.get(step_id)
    if state is None or item is None:
        return state if state is None or state.items is None else None
    if state.items is None or not 0 <= item < len(state.items):
        return None
    return state.items[item]


def _close(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """The end of a transition: the event's status follows from its steps', and ``due_at`` from its units'.

    An event whose steps are all over completes. One with nothing left but waits and delays is waiting, and a
    waiting one with work again is running; an accepted one stays so until a worker claims a step, and a paused
    one until it is resumed, due only at its deadline meanwhile.
    """
    event.updated_at = now
    event.due_at = None
    if event.status not in TERMINAL_EVENT:
        over, active, waiting, due = _scan(event, settings)
        if not over:
            if event.status is _EVENT_PAUSED:
                due = None
            elif waiting and not active:
                event.status = _EVENT_WAITING
            elif event.status is _EVENT_WAITING:
                event.status = _EVENT_RUNNING
            event.due_at = due if event.deadline is None else _until_deadline(event, due)
            return event
        _end(plan, event, _EVENT_COMPLETED)
    _notify_end(plan, event, now, settings)
    return event


def _notify_end(plan: Plan, event: Event, now: float, settings: Settings) -> None:
    """An event that has ended is sent to its workflow's ``notify`` URL, once for each time it ends."""
    if plan.workflow.notify is not None and event.notification is None:
        event.notification = StepState(status=_READY, run_at=now)
    if event.notification is not None:
        event.due_at = _unit_due(event.notification, settings)


def _too_soon(state: StepState, now: float) -> bool:
    """Whether a claimable unit must wait still: for its retry or its timer, or for its worker's lease to run out."""
    if state.status in (_RETRYING, _WAITING) and (state.run_at is None or now < state.run_at):
        return True
    return state.status is _RUNNING and state.lease_until is not None and now <= state.lease_until


def _claim_notification(
    plan: Plan, event: Event, now: float, token: str, settings: Settings
) -> tuple[Event, Call | None] | None:
    """Claim the sending of an ended event, as :func:`claim` claims a step's call."""
    state = event.notification
    if state is None or plan.workflow.notify is None or state.status not in _CLAIMABLE or _too_soon(state, now):
        return None
    event = event.copy()
    state = event.notification = state.copy()
    state.status = _RUNNING
    state.attempts += 1
    state.token = token
    state.started_at = now
    state.lease_until = now + NOTIFY_TIMEOUT + settings.lease_grace
    state.nudged_at = None
    event.due_at = state.lease_until
    service = Service(NOTIFY_UNIT, HttpEndpoint(plan.workflow.notify), timeout=NOTIFY_TIMEOUT, retry=NOTIFY_RETRY)
    inputs = {
        "event_id": event.id,
        "workflow": {"id": event.workflow_id, "name": event.workflow_name, "version": event.workflow_version},
        "status": event.status.value,
        "data": event.data,
        "outputs": event.outputs,
        "error": event.error,
        "created_at": event.created_at,
        "ended_at": event.updated_at,
    }
    key = f"{event.id}/{NOTIFY_UNIT}"
    return event, Call(NOTIFY_UNIT, service, inputs, state.attempts, token, key, None, state.lease_until)


def _finish_notification(
    event: Event, call: Call, error: CallFailure | None, now: float, random: float, settings: Settings
) -> Event | None:
    state = event.notification
    if state is None or state.status is not _RUNNING or state.token != call.token:
        return None
    event = event.copy()
    state = event.notification = state.copy()
    state.lease_until = None
    state.token = None
    state.ended_at = now
    # A 2xx whose body is not JSON (often "ok") is delivered all the same: the answer is not read.
    if error is None or error.kind is ErrorKind.JSON:
        state.status = _COMPLETED
        state.error = None
        event.due_at = None
        return event
    _record_attempt(state, now, error.to_doc())
    if error.transient and state.attempts < NOTIFY_RETRY.attempts:
        state.status = _RETRYING
        state.run_at = now + NOTIFY_RETRY.delay(state.attempts, random)
    else:
        state.status = _FAILED
    state.error = error.to_doc()
    event.due_at = _unit_due(state, settings)
    return event


def _deadline(workflow: Workflow, now: float) -> float | None:
    return None if workflow.timeout is None else now + workflow.timeout


def _until_deadline(event: Event, due: float | None) -> float | None:
    """The sooner of ``due`` and the event's deadline."""
    if event.deadline is None or (due is not None and due < event.deadline):
        return due
    return event.deadline


def _scan(event: Event, settings: Settings) -> tuple[bool, bool, bool, float | None]:
    """In one pass: whether every step is over, whether a unit is active, whether one waits, and the earliest due."""
    over, active, waiting, due = True, False, False, None
    for state in event.steps.values():
        status = state.status
        if status is _PENDING:
            over = False
            continue
        if status in _OVER:
            continue
        over = False
        for unit in (state,) if state.items is None else state.items:
            status = unit.status
            if status in _ACTIVE:
                active = True
            elif status is _WAITING:
                waiting = True
            else:
                continue
            unit_due = _unit_due(unit, settings)
            if unit_due is not None and (due is None or unit_due < due):
                due = unit_due
    return over, active, waiting, due


def _unit_due(state: StepState, settings: Settings) -> float | None:
    nudged = state.nudged_at or 0.0
    if state.status is _READY or state.status is _RETRYING:
        return (state.run_at if state.run_at is not None and state.run_at > nudged else nudged) + settings.stale_after
    if state.status is _RUNNING:
        return max(state.lease_until or 0.0, nudged + settings.stale_after)
    if state.status is _WAITING and state.run_at is not None:
        return max(state.run_at, nudged + settings.stale_after)
    return None


def _advance(plan: Plan, event: Event, now: float, ended: str | None = None) -> None:
    """Start every pending step whose dependencies are over, and skip those cut off.

    Steps the engine runs itself (switch, transform, fail, succeed) run here;
    delays and waits start waiting; service and map steps become ready for a worker.
    With ``ended``, only what follows that step (and what that sets off) is looked at.
    Steps are taken in graph order, so each is looked at once its dependencies have been.
    """
    graph = plan.graph
    steps = event.steps
    # Ascending positions are a heap already.
    queue = [*graph.dependent_positions[ended]] if ended is not None else [*range(len(graph.order))]
    while queue and event.status not in TERMINAL_EVENT:
        step = graph.order[heappop(queue)]
        if steps[step.id].status is not _PENDING:
            continue
        completed = _routes_taken(graph.deps[step.id], steps)
        if completed is None:
            continue
        state = event.own(step.id)
        if graph.runs_after(step.id, completed):
            _start(plan, event, step, state, now)
        else:
            state.status = _SKIPPED
            state.ended_at = now
        if state.status in _OVER:
            for position in graph.dependent_positions[step.id]:
                heappush(queue, position)


def _routes_taken(deps: tuple[str, ...], steps: Mapping[str, StepState]) -> dict[str, str | None] | None:
    """The route each completed dependency took, once every dependency is over; None before."""
    completed = {}
    for dep in deps:
        state = steps[dep]
        if state.status is _COMPLETED:
            completed[dep] = state.route
        elif state.status is not _SKIPPED:
            return None
    return completed


def _start(plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
    if step.kind == SERVICE:
        state.status = _READY
        state.run_at = now
        return
    state.started_at = now
    if step.kind == SWITCH:
        _run_switch(plan, event, step, state, now)
    elif step.kind == TRANSFORM:
        _run_transform(plan, event, step, state, now)
    elif step.kind == DELAY:
        _start_delay(plan, event, step, state, now)
    elif step.kind == WAIT:
        _start_wait(event, step, state, now)
    elif step.kind == MAP:
        _start_map(plan, event, step, state, now)
    else:
        _complete(state, None, now)
        if step.kind == FAIL:
            message = step.message or f"step '{step.id}' failed the event"
            _end(plan, event, _EVENT_FAILED, {"kind": ErrorKind.FAIL.value, "step": step.id, "message": message})
        else:
            _end(plan, event, _EVENT_COMPLETED)


def _end(plan: Plan, event: Event, status: EventStatus, error: dict[str, Any] | None = None) -> None:
    if status is _EVENT_COMPLETED:
        outputs, problems = _fill(plan.workflow.outputs, context(plan, event), "workflow output")
        if problems:
            status = _EVENT_FAILED
            error = {
                "kind": ErrorKind.TYPE.value,
                "message": "the workflow's outputs do not match its contract: "
                + "; ".join(p.message for p in problems),
                "problems": [p.to_dict() for p in problems],
            }
        else:
            event.outputs = outputs
    event.status = status
    event.error = error
    if status is _EVENT_COMPLETED:
        # A succeed step ends the event early: what has not run will not, and calls under way are abandoned.
        for state in _owned_units(event, lambda s: s.status not in TERMINAL_STEP):
            if state.status is _RUNNING:
                state.status = _CANCELLED
                state.token = None
                state.lease_until = None
            elif not state.status.terminal:
                state.status = _SKIPPED


def _complete(state: StepState, outputs: dict[str, Any] | None, now: float) -> None:
    state.status = _COMPLETED
    state.outputs = outputs
    state.error = None
    state.ended_at = now
    state.run_at = None
    state.lease_until = None
    state.token = None


def _fail_step(event: Event, step_id: str, error: CallFailure, now: float) -> None:
    _fail_state(event.own(step_id), error, now)
    if event.status not in TERMINAL_EVENT:
        event.status = _EVENT_FAILED
        event.error = {"step": step_id, **error.to_doc(), "message": f"step '{step_id}' failed: {error.message}"}


def _fail_unit(event: Event, step_id: str, item: int | None, error: CallFailure, now: float) -> None:
    if item is None:
        _fail_step(event, step_id, error, now)
        return
    _fail_state(event.own_item(step_id, item), error, now)
    _fail_step(event, step_id, CallFailure(f"item {item}: {error.message}", False, error.kind), now)


def _fail_state(state: StepState, error: CallFailure, now: float) -> None:
    state.status = _FAILED
    state.error = error.to_doc()
    state.ended_at = now
    state.lease_until = None
    state.token = None


def _record_attempt(state: StepState, now: float, error: dict[str, Any]) -> None:
    """Add the attempt under way, which ``error`` ended, to the state's history."""
    entry = {"attempt": state.attempts, "started_at": state.started_at, "ended_at": now, "error": error}
    state.history = [*state.history, entry]


def _retry_unit(state: StepState, now: float) -> None:
    state.status = _READY
    state.run_at = now
    state.budget_used = 0
    state.lost = 0
    state.error = None


def _activation(plan: Plan, event: Event, step: Step) -> dict[str, Any]:
    upstream = plan.graph.upstream[step.id]
    outputs = {s: event.steps[s].outputs or {} for s in upstream if event.steps[s].status is _COMPLETED}
    return {"input": event.data, "context": context(plan, event, upstream), "steps": outputs}


def _evaluate(plan: Plan, event: Event, step: Step, field: str, now: float) -> tuple[bool, Any]:
    try:
        return True, plan.expressions[(step.id, field)](_activation(plan, event, step))
    except InvalidExpression as e:
        error = CallFailure(f"the expression for '{field}' failed: {e}", transient=False, kind=ErrorKind.EXPRESSION)
        _fail_step(event, step.id, error, now)
        return False, None


def _run_switch(plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
    ok, value = _evaluate(plan, event, step, "expression", now)
    if not ok:
        return
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    key = value if isinstance(value, str) else json.dumps(value)
    route = key if key in step.cases else "default" if step.default else None
    if route is None:
        cases = ", ".join(repr(c) for c in step.cases)
        error = CallFailure(
            f"the value {key!r} matches none of the cases ({cases}) and there is no default", False, ErrorKind.ROUTE
        )
        _fail_step(event, step.id, error, now)
        return
    _complete(state, {"value": value}, now)
    state.route = route


def _run_transform(plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
    computed = {}
    for name in step.compute:
        ok, computed[name] = _evaluate(plan, event, step, name, now)
        if not ok:
            return
    outputs, problems = _fill(step.outputs, computed, f"transform '{step.id}' output")
    if problems:
        error = CallFailure(
            "; ".join(p.message for p in problems), False, ErrorKind.TYPE, {"problems": [p.to_dict() for p in problems]}
        )
        _fail_step(event, step.id, error, now)
        return
    _complete(state, outputs, now)


def _start_delay(plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
    if step.until is None:
        wake = now + (step.seconds or 0.0)
    else:
        present, value = _lookup(step.until, event, context(plan, event, plan.graph.upstream[step.id]))
        wake_at = epoch_seconds(value) if present else None
        if wake_at is None:
            error = CallFailure(f"delay '{step.id}' cannot wait until {value!r}: not a time", False, ErrorKind.INPUT)
            _fail_step(event, step.id, error, now)
            return
        wake = wake_at
    state.status = _WAITING
    state.run_at = wake


def _start_wait(event: Event, step: Step, state: StepState, now: float) -> None:
    for i, received in enumerate(event.signals):
        if received["name"] == step.signal:
            event.signals = event.signals[:i] + event.signals[i + 1 :]
            _complete(state, received["payload"], now)
            state.route = SIGNAL_ROUTE
            return
    state.status = _WAITING
    state.run_at = now + step.timeout if step.timeout is not None else None


def _wake(plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
    """A delay's time, or a wait's timeout, has come: a wait with no route for it fails."""
    if step.kind == WAIT and not step.on_timeout:
        error = CallFailure(f"no signal '{step.signal}' arrived within {step.timeout:g} s", False, ErrorKind.TIMEOUT)
        _fail_step(event, step.id, error, now)
        return
    _complete(state, None, now)
    if step.kind == WAIT:
        state.route = TIMEOUT_ROUTE
    _advance(plan, event, now, ended=step.id)


def _start_map(plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
    present, items = _lookup(step.items_ref, event, context(plan, event, plan.graph.upstream[step.id]))
    if not present or not isinstance(items, list):
        error = CallFailure(f"map '{step.id}' needs an array of items, got {type_of(items)}", False, ErrorKind.INPUT)
        _fail_step(event, step.id, error, now)
        return
    state.status = _RUNNING
    state.items = [StepState() for _ in items]
    _map_progress(plan, event, step.id, now)


def _map_progress(plan: Plan, event: Event, step_id: str, now: float) -> None:
    """Keep up to the step's concurrency of items going; complete the map once every item has."""
    state = event.own(step_id)
    assert state.items is not None
    if all(item.status is _COMPLETED for item in state.items):
        _complete(state, {MAP_RESULTS.name: [item.outputs for item in state.items]}, now)
        return
    active = sum(item.status in _ACTIVE for item in state.items)
    limit = plan.graph.steps[step_id].concurrency
    for i, item in enumerate(state.items):
        if active >= limit:
            break
        if item.status is _PENDING:
            promoted = event.own_item(step_id, i)
            promoted.status = _READY
            promoted.run_at = now
            active += 1


def _inputs(
    plan: Plan, event: Event, step: Step, service: Service, item: int | None
) -> tuple[dict[str, Any], list[Problem]]:
    if not service.inputs:
        return {}, []
    ctx = context(plan, event, plan.graph.upstream[step.id])
    found: dict[str, Any] = {}
    for f in service.inputs:
        if item is not None and f.name == step.item:
            present, items = _lookup(step.items_ref, event, ctx)
            found[f.name] = items[item]
            continue
        present, value = _lookup(step.input_ref(f.name), event, ctx)
        if present:
            found[f.name] = value
    return _fill(service.inputs, found, f"service '{service.name}' input")


def _lookup(ref: Ref, event: Event, ctx: dict[str, Any]) -> tuple[bool, Any]:
    if ref.source == "const":
        return True, ref.value
    if ref.source == "step":
        value: Any = event.steps[ref.step or ""].outputs or {}
    else:
        value = ctx if ref.source == "context" else event.data
    for part in ref.path:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _signal_outputs(step: Step, payload: Any) -> tuple[dict[str, Any], list[Problem]]:
    if not isinstance(payload, dict):
        found = type_of(payload)
        return {}, [Problem(f"a signal's body is a JSON object, not {found}", expected="object", found=found)]
    return _fill(step.outputs, payload, "signal field")


def _writes_context(step: Step) -> bool:
    return step.kind in (MAP, WAIT, TRANSFORM) or step.calls_service


def _fill(
    fields: tuple[Field, ...], values: Mapping[str, Any], what: str, quote: bool = True
) -> tuple[dict[str, Any], list[Problem]]:
    """The declared fields of ``values``: defaults filled, types checked, what is missing or wrong listed."""
    result: dict[str, Any] = {}
    problems = []
    for f in fields:
        label = f"{what} '{f.name}'" if quote else f"'{f.name}'"
        if f.name in values:
            value = values[f.name]
            if conforms(f.type, value):
                result[f.name] = value
            else:
                problems.append(
                    Problem(
                        f"{label} should be {f.type}: {describe_mismatch(f.type, value)}",
                        field=f.name,
                        expected=str(f.type),
                        found=type_of(value),
                    )
                )
        elif f.has_default:
            result[f.name] = f.default
        elif f.required:
            problems.append(
                Problem(
                    f"{label} is {'missing' if quote else 'required'}",
                    field=f.name,
                    expected=str(f.type),
                    found="nothing",
                )
            )
    return result, problems
