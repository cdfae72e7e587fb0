"""One attempt at a unit's call, whether the unit is a step or an item of a map step: taking it over from a
lost worker, starting it, and recording what came of it."""

from __future__ import annotations

from typing import Any

from machinery.engine.calls import ACCEPTED, Call, CallFailure, ErrorKind
from machinery.engine.dataflow import check_outputs, contract_failure
from machinery.engine.model import Service
from machinery.engine.plan import Settings
from machinery.engine.state import READY, RETRYING, RUNNING, TERMINAL_EVENT, WAITING, EventStatus, StepState
from machinery.engine.units import complete, drop_claim, record_attempt, start_attempt

MOVED_DELAY = 1.0
"""Seconds before a call that went to the wrong host is sent again: one round of the hosts."""


def take_over(state: StepState, service: Service | None, now: float, settings: Settings) -> CallFailure | None:
    """Count a running unit's claim as lost, its lease having run out; the failure once it was lost too often, or
    at once for a service that may not be called twice."""
    if state.status is not RUNNING:
        return None
    state.lost += 1
    record_attempt(
        state, now, {"kind": ErrorKind.LOST.value, "message": "the worker was lost before it recorded a result"}
    )
    if state.lost > settings.max_lost:
        message = f"the worker running this step was lost {state.lost} times; giving up"
        return CallFailure(message, False, ErrorKind.LOST)
    if service is not None and not service.idempotent:
        message = (
            f"the worker running this step was lost mid-call, and service '{service.name}' is not idempotent"
            " (idempotent: false): it is not called a second time"
        )
        return CallFailure(message, False, ErrorKind.LOST)
    return None


def unregistered(callee: str) -> CallFailure:
    """The failure of a call whose ``callee`` (``service 'upper'``) is no longer registered."""
    return CallFailure(f"{callee} is no longer registered", False, ErrorKind.CONFIG)


def start(
    state: StepState,
    step_id: str,
    service: Service,
    inputs: dict[str, Any],
    *,
    token: str,
    key: str,
    item: int | None,
    now: float,
    settings: Settings,
    target: str | None = None,
) -> Call:
    """Claim the unit for one call by the worker holding ``token``; ``key`` names the unit for the service, and
    ``target`` the workload a fleet step's item runs on."""
    lease_until = now + service.timeout + settings.lease_grace
    if state.error is not None and state.error.get("kind") == ErrorKind.WORKER:
        state.error = None  # the note that it waited for a worker that may call its service
    start_attempt(state, token, now, lease_until)
    state.budget_used += 1
    state.ended_at = None
    state.inputs = inputs
    return Call(step_id, service, inputs, state.attempts, token, key, item, lease_until, target)


def record(
    state: StepState,
    service: Service,
    outputs: Any,
    error: CallFailure | None,
    *,
    status: EventStatus,
    now: float,
    random: float,
) -> CallFailure | None:
    """Record the result of a call of ``service`` in its unit's state: completed with its checked outputs, waiting
    for its callback, or to be tried again at ``run_at``; the failure, with the unit left as it was, when it
    fails for good."""
    if error is None and outputs is ACCEPTED:
        _await_callback(state, service, now)
        return None
    if error is None:
        checked, problems = check_outputs(service, outputs)
        if not problems:
            complete(state, checked, now)
            return None
        error = contract_failure(f"service '{service.name}' answered outside its contract: ", problems)
    record_attempt(state, now, error.to_doc())
    budget_left = _budget_left(state, service)
    if error.transient and budget_left and status not in TERMINAL_EVENT:
        state.status = RETRYING
        state.error = error.to_doc()
        state.ended_at = now
        state.run_at = now + service.retry.delay(state.budget_used - state.lost, random)
        drop_claim(state)
        return None
    if error.transient and not budget_left:
        return _gave_up(state, error)
    return error


def moved(state: StepState, error: CallFailure, now: float, settings: Settings) -> CallFailure | None:
    """Record a call that found its workload held by another host than the one it was sent to: lost, not
    counted against the retry policy, and tried again after :data:`MOVED_DELAY` (by then the host it is sent to
    has taken the workload up); the failure once it was lost too often."""
    record_attempt(state, now, error.to_doc())
    drop_claim(state)
    state.lost += 1
    if state.lost > settings.max_lost:
        return CallFailure(f"{error.message}; lost {state.lost} times, giving up", False, ErrorKind.LOST)
    state.status = RETRYING
    state.error = error.to_doc()
    state.ended_at = now
    state.run_at = now + MOVED_DELAY
    return None


def _budget_left(state: StepState, service: Service) -> bool:
    return state.budget_used - state.lost < service.retry.attempts


def _gave_up(state: StepState, error: CallFailure) -> CallFailure:
    return CallFailure(f"{error.message} (gave up after {state.attempts} attempts)", False, error.kind, error.details)


def _await_callback(state: StepState, service: Service, now: float) -> None:
    """A call a callback service took: the unit waits for its callback until ``lease_until``, and for its next
    heartbeat until ``run_at``; the claim's token stays, as the callback's proof."""
    state.status = WAITING
    state.lease_until = now + service.callback_timeout
    beat(state, service, now)


def beat(state: StepState, service: Service, now: float) -> None:
    """A heartbeat of the callback service working on the unit: it has until the next one, or its deadline."""
    deadline = state.lease_until or now
    state.run_at = deadline if service.heartbeat is None else min(deadline, now + service.heartbeat)


def callback_missed(state: StepState, service: Service, now: float) -> CallFailure | None:
    """A unit whose callback (or heartbeat) did not come in time: ready for another attempt at once while its
    retry budget lasts, the long wait having been its backoff; else the failure."""
    deadline = state.lease_until or now
    late = "callback" if service.heartbeat is None or now >= deadline else "heartbeat"
    waited = service.callback_timeout if late == "callback" else service.heartbeat
    error = CallFailure(f"service '{service.name}' sent no {late} within {waited:g} s", True, ErrorKind.TIMEOUT)
    record_attempt(state, now, error.to_doc())
    drop_claim(state)
    if not _budget_left(state, service):
        return _gave_up(state, error)
    state.status = READY
    state.error = error.to_doc()
    state.run_at = now
    return None
