"""The notification unit: an ended event, POSTed to its workflow's ``notify`` URL.

It is claimed and finished like a step's call, by the same workers, with a
retry policy of its own; its answer is not read.
"""

from __future__ import annotations

from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.model import HttpEndpoint, Service
from machinery.engine.plan import Plan, Settings
from machinery.engine.retry import RetryPolicy
from machinery.engine.schedule import ending_due, too_soon
from machinery.engine.state import CLAIMABLE, COMPLETED, FAILED, RETRYING, RUNNING, Event
from machinery.engine.units import NOTIFY_UNIT, drop_claim, record_attempt, start_attempt

NOTIFY_TIMEOUT = 10.0
NOTIFY_RETRY = RetryPolicy(attempts=6, backoff=1.0, multiplier=3.0, max_delay=300.0)
"""About six minutes of tries before a notification is given up."""


def claim_notification(
    plan: Plan, event: Event, now: float, token: str, settings: Settings
) -> tuple[Event, Call | None] | None:
    """Claim the sending of an ended event, as :func:`~machinery.engine.decider.claim` claims a step's call."""
    state = event.notification
    if state is None or plan.workflow.notify is None or state.status not in CLAIMABLE or too_soon(state, now):
        return None
    event = event.copy()
    state = event.notification = state.copy()
    start_attempt(state, token, now, now + NOTIFY_TIMEOUT + settings.lease_grace)
    event.due_at = ending_due(event, settings)
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
    return event, Call(NOTIFY_UNIT, service, inputs, state.attempts, token, key, None, state.lease_until or 0.0)


def finish_notification(
    event: Event, call: Call, error: CallFailure | None, now: float, random: float, settings: Settings
) -> Event | None:
    """Record how a notification's POST went: delivered, to be tried again, or given up."""
    state = event.notification
    if state is None or state.status is not RUNNING or state.token != call.token:
        return None
    event = event.copy()
    state = event.notification = state.copy()
    drop_claim(state)
    state.ended_at = now
    # A 2xx whose body is not JSON (often "ok"), or is too large to read, is delivered all the same: the answer is
    # not read.
    if error is None or error.kind in (ErrorKind.JSON, ErrorKind.SIZE):
        state.status = COMPLETED
        state.error = None
        event.due_at = ending_due(event, settings)
        return event
    record_attempt(state, now, error.to_doc())
    if error.transient and state.attempts < NOTIFY_RETRY.attempts:
        state.status = RETRYING
        state.run_at = now + NOTIFY_RETRY.delay(state.attempts, random)
    else:
        state.status = FAILED
    state.error = error.to_doc()
    event.due_at = ending_due(event, settings)
    return event
