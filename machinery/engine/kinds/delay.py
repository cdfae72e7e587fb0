"""``delay``: wait ``seconds``, or ``until`` a time read from the event (ISO 8601 or epoch seconds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.dataflow import lookup, step_context
from machinery.engine.errors import Problem
from machinery.engine.kinds.base import StepKind
from machinery.engine.model import Field, Step
from machinery.engine.scope import Definitions, Scope, check_flow
from machinery.engine.state import WAITING, Event, StepState
from machinery.engine.types import ANY, epoch_seconds
from machinery.engine.units import fail_step

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


class DelayKind(StepKind):
    name = "delay"

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        if step.until is None:
            return []
        what = f"delay '{step.id}' until"
        problems = check_flow(Field("until", ANY), step.until, scope, what, step.id, {"string", "int", "float"})
        if not problems and step.until.source == "const" and epoch_seconds(step.until.value) is None:
            problems.append(
                Problem(f"{what} {step.until} is no time: write ISO 8601 or epoch seconds", step=step.id, field="until")
            )
        return problems

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        if step.until is None:
            wake = now + (step.seconds or 0.0)
        else:
            present, value = lookup(step.until, event, step_context(plan, event, step))
            wake_at = epoch_seconds(value) if present else None
            if wake_at is None:
                error = CallFailure(
                    f"delay '{step.id}' cannot wait until {value!r}: not a time", False, ErrorKind.INPUT
                )
                fail_step(event, step.id, error, now)
                return
            wake = wake_at
        state.status = WAITING
        state.run_at = wake
