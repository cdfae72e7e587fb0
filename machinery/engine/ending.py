"""How an event ends: completed with its outputs checked against its workflow's, or failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from machinery.engine.calls import ErrorKind
from machinery.engine.dataflow import context, fill
from machinery.engine.state import (
    CANCELLED,
    EVENT_COMPLETED,
    EVENT_FAILED,
    RUNNING,
    SKIPPED,
    TERMINAL_STEP,
    Event,
    EventStatus,
)
from machinery.engine.units import drop_claim, owned_units

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


def end(plan: Plan, event: Event, status: EventStatus, error: dict[str, Any] | None = None) -> None:
    """End ``event`` with ``status``: a completed one fails instead if its outputs break the workflow's contract.

    A completed event may end early (a ``succeed`` step): what has not run will not, and calls under way
    are abandoned.
    """
    if status is EVENT_COMPLETED:
        outputs, problems = fill(plan.workflow.outputs, context(plan, event), "workflow output")
        if problems:
            status = EVENT_FAILED
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
    if status is EVENT_COMPLETED:
        for state in owned_units(event, lambda s: s.status not in TERMINAL_STEP):
            if state.status is RUNNING:
                state.status = CANCELLED
                drop_claim(state)
            elif not state.status.terminal:
                state.status = SKIPPED
