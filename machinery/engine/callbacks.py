"""Callbacks: the result of a call that a callback service took, posted later to its callback URL, and the
heartbeats it posts meanwhile.

A callback answers for one attempt of one step: the claim's token it carries must be the one the step waits
with. A late callback (the step no longer waits), a repeated one or a forged one changes nothing. A callback
may come before the worker has recorded the service's 202, while the step still runs: it counts all the same,
and the 202 recorded after it changes nothing.
"""

from __future__ import annotations

import hmac
from typing import Any

from machinery.engine.attempts import beat, record
from machinery.engine.calls import CallFailure
from machinery.engine.errors import InvalidState, NotFound
from machinery.engine.model import Service
from machinery.engine.plan import Plan, Settings
from machinery.engine.progress import advance, close
from machinery.engine.state import COMPLETED, RUNNING, WAITING, Event, StepState
from machinery.engine.units import fail_step


def callback(
    plan: Plan,
    service: Service,
    event: Event,
    step_id: str,
    claim: str,
    *,
    outputs: Any = None,
    error: CallFailure | None = None,
    now: float,
    random: float,
    settings: Settings,
) -> Event:
    """Record the result a callback service posted for ``step_id``, as :func:`~machinery.engine.decider.finish`
    records an answer; NotFound for a token the step does not wait with, InvalidState once it waits for none."""
    _awaiting(event, step_id, claim)
    event = event.copy()
    state = event.own(step_id)
    failure = record(state, service, outputs, error, status=event.status, now=now, random=random)
    if failure is not None:
        fail_step(event, step_id, failure, now)
    elif state.status is COMPLETED:
        advance(plan, event, now, ended=step_id)
    return close(plan, event, now, settings)


def heartbeat(
    plan: Plan, service: Service, event: Event, step_id: str, claim: str, *, now: float, settings: Settings
) -> Event:
    """A callback service still working on ``step_id``: the step waits until its next heartbeat is due."""
    if _awaiting(event, step_id, claim).status is RUNNING:
        return event  # before the 202 is recorded: the wait, and its heartbeat, start then
    event = event.copy()
    beat(event.own(step_id), service, now)
    return close(plan, event, now, settings)


def _awaiting(event: Event, step_id: str, claim: str) -> StepState:
    state = event.steps.get(step_id)
    if state is None or state.status not in (RUNNING, WAITING) or state.token is None:
        if state is not None and state.token is None:
            raise InvalidState(f"step '{step_id}' of event '{event.id}' awaits no callback (any more)")
        raise NotFound("no callback is awaited under this token")
    # Compared in constant time, so that timing does not tell how much of a guess was right.
    if not hmac.compare_digest(state.token, claim):
        raise NotFound("no callback is awaited under this token")
    return state
