"""``switch``: evaluate ``expression`` and take the route of the case it matches, else ``default``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.dataflow import evaluate
from machinery.engine.errors import Problem
from machinery.engine.kinds.base import StepKind
from machinery.engine.model import Step
from machinery.engine.scope import Definitions, Scope, check_expression
from machinery.engine.state import Event, StepState
from machinery.engine.units import complete, fail_step

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


class SwitchKind(StepKind):
    name = "switch"
    evaluates = True

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        return check_expression(step, "expression", step.expression or "", definitions.expressions)

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        ok, value = evaluate(plan, event, step, "expression", now)
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
            fail_step(event, step.id, error, now)
            return
        complete(state, {"value": value}, now)
        state.route = route
