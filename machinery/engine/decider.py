"""What happens next to an event: pure transitions from one state to the next.

Each function takes the event as read from the store and returns a changed
copy (or None when there is nothing to do); the caller writes it back with a
conditional write and, on conflict, reads again and asks again. No function
here does I/O, reads a clock or draws a random number: time, randomness and
claim tokens come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from machinery.engine.checker import ancestors, topological_order
from machinery.engine.errors import InvalidData, InvalidState, Problem
from machinery.engine.model import Field, Ref, Service, Step, Workflow
from machinery.engine.state import Event, EventStatus, StepState, StepStatus
from machinery.engine.types import conforms, describe_mismatch, type_of

_CLAIMABLE = (StepStatus.READY, StepStatus.RETRYING, StepStatus.RUNNING)


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
    """A workflow compiled for running: its steps in order and who precedes whom."""

    workflow: Workflow
    order: tuple[Step, ...]
    upstream: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, workflow: Workflow) -> Plan:
        order, problems = topological_order(workflow)
        if problems:
            raise ValueError(problems[0].message)
        up = ancestors(order)
        return cls(workflow, tuple(order), {k: frozenset(v) for k, v in up.items()})


@dataclass(frozen=True)
class Call:
    """A service call a worker has claimed and must now make."""

    step_id: str
    service: Service
    inputs: dict[str, Any]
    attempt: int
    token: str
    idempotency_key: str


@dataclass(frozen=True)
class StepError:
    """Why a call failed; ``transient`` errors are retried under the service's policy."""

    message: str
    transient: bool
    kind: str = "error"
    details: Mapping[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "message": self.message, "transient": self.transient}
        if self.details:
            doc.update(self.details)
        return doc


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
    problems = []
    accepted: dict[str, Any] = {}
    declared = {f.name for f in workflow.inputs}
    for name in data:
        if name not in declared:
            problems.append(
                Problem(
                    f"'{name}' is not an input of workflow '{workflow.name}'", field=name, found=type_of(data[name])
                )
            )
    for f in workflow.inputs:
        if f.name in data:
            if conforms(f.type, data[f.name]):
                accepted[f.name] = data[f.name]
            else:
                problems.append(
                    Problem(
                        f"'{f.name}' should be {f.type}: {describe_mismatch(f.type, data[f.name])}",
                        field=f.name,
                        expected=str(f.type),
                        found=type_of(data[f.name]),
                    )
                )
        elif f.has_default:
            accepted[f.name] = f.default
        elif f.required:
            problems.append(Problem(f"'{f.name}' is required", field=f.name, expected=str(f.type)))
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
    )
    _promote(plan, event, now)
    return _touch(event, now, settings)


def ready_steps(event: Event) -> list[str]:
    """Steps that a worker may claim now or once their retry time has come."""
    if event.status.terminal:
        return []
    return [k for k, s in event.steps.items() if s.status in (StepStatus.READY, StepStatus.RETRYING)]


def claim(
    plan: Plan,
    services: Mapping[str, Service],
    event: Event,
    step_id: str,
    *,
    now: float,
    token: str,
    settings: Settings,
) -> tuple[Event, Call | None] | None:
    """Claim ``step_id`` for one call: None when there is nothing to do for it now.

    A running step whose lease ran out counts as lost and is claimed again;
    after ``settings.max_lost`` losses the step fails instead. That case
    returns the failed event with no call.
    """
    state = event.steps.get(step_id)
    if event.status.terminal or state is None or state.status not in _CLAIMABLE:
        return None
    if state.status is StepStatus.RETRYING and state.run_at is not None and now < state.run_at:
        return None
    if state.status is StepStatus.RUNNING and state.lease_until is not None and now <= state.lease_until:
        return None
    event = event.copy()
    state = event.steps[step_id]
    if state.status is StepStatus.RUNNING:
        state.lost += 1
        state.history.append(
            {
                "attempt": state.attempts,
                "started_at": state.started_at,
                "ended_at": now,
                "error": {"kind": "lost", "message": "the worker was lost before it recorded a result"},
            }
        )
        if state.lost > settings.max_lost:
            error = StepError(
                f"the worker running this step was lost {state.lost} times; giving up", transient=False, kind="lost"
            )
            _fail_step(plan, event, step_id, error, now)
            return _touch(event, now, settings), None
    step = plan.workflow.step(step_id)
    service = services.get(step.service)
    if service is None:
        error = StepError(f"service '{step.service}' is no longer registered", transient=False, kind="config")
        _fail_step(plan, event, step_id, error, now)
        return _touch(event, now, settings), None
    inputs, problems = _inputs(plan, event, step, service)
    if problems:
        error = StepError(
            f"step '{step_id}' cannot call '{service.name}': " + "; ".join(p.message for p in problems),
            transient=False,
            kind="input",
            details={"problems": [p.to_dict() for p in problems]},
        )
        _fail_step(plan, event, step_id, error, now)
        return _touch(event, now, settings), None
    state.status = StepStatus.RUNNING
    state.attempts += 1
    state.budget_used += 1
    state.token = token
    state.started_at = now
    state.ended_at = None
    state.lease_until = now + service.timeout + settings.lease_grace
    state.nudged_at = None
    state.inputs = inputs
    event.status = EventStatus.RUNNING
    call = Call(step_id, service, inputs, state.attempts, token, f"{event.id}/{step_id}")
    return _touch(event, now, settings), call


def finish(
    plan: Plan,
    event: Event,
    call: Call,
    *,
    outputs: Any = None,
    error: StepError | None = None,
    now: float,
    random: float,
    settings: Settings,
) -> Event | None:
    """Record the result of ``call``: its outputs (checked against the contract) or its error.

    None when the claim is no longer this call's (another worker took the
    step over, or the event was cancelled and the step with it), so that a
    late or duplicate result changes nothing.
    """
    state = event.steps.get(call.step_id)
    if state is None or state.status is not StepStatus.RUNNING or state.token != call.token:
        return None
    event = event.copy()
    state = event.steps[call.step_id]
    if error is None:
        checked, problems = check_outputs(call.service, outputs)
        if problems:
            error = StepError(
                f"service '{call.service.name}' answered outside its contract: "
                + "; ".join(p.message for p in problems),
                transient=False,
                kind="type",
                details={"problems": [p.to_dict() for p in problems]},
            )
        else:
            state.status = StepStatus.COMPLETED
            state.outputs = checked
            state.error = None
            state.ended_at = now
            state.lease_until = None
            state.token = None
            _promote(plan, event, now)
            return _touch(event, now, settings)
    state.history.append(
        {"attempt": state.attempts, "started_at": state.started_at, "ended_at": now, "error": error.to_doc()}
    )
    budget_left = state.budget_used - state.lost < call.service.retry.attempts
    if error.transient and budget_left and not event.status.terminal:
        state.status = StepStatus.RETRYING
        state.error = error.to_doc()
        state.ended_at = now
        state.run_at = now + call.service.retry.delay(state.budget_used - state.lost, random)
        state.lease_until = None
        state.token = None
        return _touch(event, now, settings)
    if error.transient and not budget_left:
        error = StepError(
            f"{error.message} (gave up after {state.attempts} attempts)", False, error.kind, error.details
        )
    _fail_step(plan, event, call.step_id, error, now)
    return _touch(event, now, settings)


def check_outputs(service: Service, outputs: Any) -> tuple[dict[str, Any], list[Problem]]:
    """The declared outputs of a service's answer, defaults filled, and what does not fit."""
    if not isinstance(outputs, dict):
        problem = Problem(
            f"the answer should be a JSON object, got {type_of(outputs)}",
            step=None,
            expected="object",
            found=type_of(outputs),
        )
        return {}, [problem]
    return _fill(service.outputs, outputs, f"service '{service.name}' output")


def overdue_steps(event: Event, now: float, settings: Settings) -> list[str]:
    """Steps the sweeper should send to the workers again: their message is late or their worker gone."""
    if event.status.terminal:
        return []
    return [k for k, s in event.steps.items() if (d := _step_due(s, settings)) is not None and d <= now]


def nudged(event: Event, step_ids: list[str], now: float, settings: Settings) -> Event:
    """The event after the sweeper has sent ``step_ids`` again; they are not due again before long."""
    event = event.copy()
    for step_id in step_ids:
        event.steps[step_id].nudged_at = now
    return _touch(event, event.updated_at, settings)


def cancel(event: Event, now: float, settings: Settings) -> Event:
    if event.status.terminal:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only an unfinished event can be cancelled")
    event = event.copy()
    event.status = EventStatus.CANCELLED
    for state in event.steps.values():
        if not state.status.terminal:
            state.status = StepStatus.CANCELLED
            state.ended_at = now
            state.token = None
            state.lease_until = None
    return _touch(event, now, settings)


def resume(plan: Plan, event: Event, now: float, settings: Settings) -> Event:
    """Retry a failed event from its failed steps; the completed ones keep their results."""
    if event.status is not EventStatus.FAILED:
        raise InvalidState(f"event '{event.id}' is {event.status.value}; only a failed event can be retried")
    event = event.copy()
    event.status = EventStatus.RUNNING
    event.error = None
    for state in event.steps.values():
        if state.status is StepStatus.FAILED:
            state.status = StepStatus.READY
            state.run_at = now
            state.budget_used = 0
            state.lost = 0
            state.error = None
    _promote(plan, event, now)
    return _touch(event, now, settings)


def context(plan: Plan, event: Event, upto: frozenset[str] | None = None) -> dict[str, Any]:
    """The context: the event's data, then the outputs of completed steps in graph order.

    With ``upto``, only the outputs of those steps (a step's upstream) count.
    """
    ctx = dict(event.data)
    for step in plan.order:
        if upto is not None and step.id not in upto:
            continue
        state = event.steps[step.id]
        if state.status is StepStatus.COMPLETED and state.outputs:
            for name, value in state.outputs.items():
                ctx[step.context_name(name)] = value
    return ctx


# Internal transitions, applied to a copy the caller owns.


def _touch(event: Event, now: float, settings: Settings) -> Event:
    event.updated_at = now
    event.due_at = _due_at(event, settings)
    return event


def _step_due(state: StepState, settings: Settings) -> float | None:
    nudged = state.nudged_at or 0.0
    if state.status in (StepStatus.READY, StepStatus.RETRYING):
        return max(state.run_at or 0.0, nudged) + settings.stale_after
    if state.status is StepStatus.RUNNING:
        return max(state.lease_until or 0.0, nudged + settings.stale_after)
    return None


def _due_at(event: Event, settings: Settings) -> float | None:
    if event.status.terminal:
        return None
    dues = [d for s in event.steps.values() if (d := _step_due(s, settings)) is not None]
    return min(dues) if dues else None


def _promote(plan: Plan, event: Event, now: float) -> None:
    """Make ready every pending step whose dependencies completed; complete the event when all did."""
    if event.status.terminal:
        return
    steps = event.steps
    for step in plan.order:
        state = steps[step.id]
        if state.status is StepStatus.PENDING and all(steps[d].status is StepStatus.COMPLETED for d in step.after):
            state.status = StepStatus.READY
            state.run_at = now
    if all(s.status is StepStatus.COMPLETED for s in steps.values()):
        outputs, problems = _fill(plan.workflow.outputs, context(plan, event), "workflow output")
        if problems:
            event.status = EventStatus.FAILED
            event.error = {
                "kind": "type",
                "message": "the workflow's outputs do not match its contract: "
                + "; ".join(p.message for p in problems),
                "problems": [p.to_dict() for p in problems],
            }
        else:
            event.status = EventStatus.COMPLETED
            event.outputs = outputs


def _fail_step(plan: Plan, event: Event, step_id: str, error: StepError, now: float) -> None:
    state = event.steps[step_id]
    state.status = StepStatus.FAILED
    state.error = error.to_doc()
    state.ended_at = now
    state.lease_until = None
    state.token = None
    if not event.status.terminal:
        event.status = EventStatus.FAILED
        event.error = {"step": step_id, **error.to_doc(), "message": f"step '{step_id}' failed: {error.message}"}


def _inputs(plan: Plan, event: Event, step: Step, service: Service) -> tuple[dict[str, Any], list[Problem]]:
    ctx = context(plan, event, plan.upstream[step.id])
    found: dict[str, Any] = {}
    for f in service.inputs:
        ref = step.input_ref(f.name)
        present, value = _lookup(ref, event, ctx)
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


def _fill(fields: tuple[Field, ...], values: Mapping[str, Any], what: str) -> tuple[dict[str, Any], list[Problem]]:
    """The declared fields of ``values``: defaults filled, types checked, what is missing or wrong listed."""
    result: dict[str, Any] = {}
    problems = []
    for f in fields:
        if f.name in values:
            value = values[f.name]
            if conforms(f.type, value):
                result[f.name] = value
            else:
                problems.append(
                    Problem(
                        f"{what} '{f.name}' should be {f.type}: {describe_mismatch(f.type, value)}",
                        field=f.name,
                        expected=str(f.type),
                        found=type_of(value),
                    )
                )
        elif f.has_default:
            result[f.name] = f.default
        elif f.required:
            problems.append(
                Problem(f"{what} '{f.name}' is missing", field=f.name, expected=str(f.type), found="nothing")
            )
    return result, problems
