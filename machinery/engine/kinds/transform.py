"""``transform``: compute each of its ``outputs`` with an expression (``compute``), no service called."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from machinery.engine.dataflow import contract_failure, evaluate, fill
from machinery.engine.errors import Problem
from machinery.engine.kinds.base import StepKind
from machinery.engine.model import Field, Service, Step
from machinery.engine.scope import Definitions, Scope, check_expression
from machinery.engine.state import Event, StepState
from machinery.engine.units import complete, fail_step

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


class TransformKind(StepKind):
    name = "transform"
    evaluates = True
    writes_context = True

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        return step.outputs

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        problems = []
        declared = {f.name for f in step.outputs}
        for name in step.compute:
            if name not in declared:
                problems.append(
                    Problem(
                        f"transform '{step.id}' computes '{name}', which is not among its outputs",
                        step=step.id,
                        field=name,
                    )
                )
        for f in step.outputs:
            if f.name not in step.compute and not f.has_default:
                problems.append(
                    Problem(
                        f"transform '{step.id}' declares output '{f.name}' but no expression for it",
                        step=step.id,
                        field=f.name,
                    )
                )
        for name, source in step.compute.items():
            problems += check_expression(step, name, source, definitions.expressions)
        return problems

    def run(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        computed = {}
        for name in step.compute:
            ok, computed[name] = evaluate(plan, event, step, name, now)
            if not ok:
                return
        outputs, problems = fill(step.outputs, computed, f"transform '{step.id}' output")
        if problems:
            fail_step(event, step.id, contract_failure("", problems), now)
            return
        complete(state, outputs, now)
