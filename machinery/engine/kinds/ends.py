"""``fail`` and ``succeed``: end the event at once, saying ``message``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from machinery.engine.calls import ErrorKind
from machinery.engine.ending import end
from machinery.engine.errors import Problem
from machinery.engine.kinds.base import StepKind
from machinery.engine.model import Step
from machinery.engine.scope import Definitions, Scope, check_workflow_outputs
from machinery.engine.state import EVENT_COMPLETED, EVENT_FAILED, Event, StepState
from machinery.engine.units import complete

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


class FailKind(StepKind):
    """Fails the event on purpose: such an event is not retried."""

    name = "fail"

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        complete(state, None, now)
        message = step.message or f"step '{step.id}' failed the event"
        end(plan, event, EVENT_FAILED, {"kind": ErrorKind.FAIL.value, "step": step.id, "message": message})


class SucceedKind(StepKind):
    """Completes the event early: the workflow's outputs must be there already."""

    name = "succeed"

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        return check_workflow_outputs(definitions.workflow, scope, f"at step '{step.id}', ")

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        complete(state, None, now)
        end(plan, event, EVENT_COMPLETED)
