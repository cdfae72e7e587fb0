"""``service``: call a registered service, its inputs read through the step's references."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from machinery.engine.dataflow import call_inputs
from machinery.engine.errors import Problem
from machinery.engine.kinds.base import StepKind
from machinery.engine.model import Field, Service, Step
from machinery.engine.scope import Definitions, Scope, check_flow
from machinery.engine.state import Event, StepState
from machinery.engine.units import make_ready, retry_unit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from machinery.engine.plan import Plan


class ServiceKind(StepKind):
    name = "service"
    calls_service = True
    writes_context = True

    def callee(self, step: Step) -> str | None:
        return step.service

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        service = services.get(self.callee(step) or "")
        return service.outputs if service is not None else ()

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        service = definitions.services.get(self.callee(step) or "")
        if service is None:
            return []
        return self._check_mappings(step, service, definitions.services) + self._check_inputs(step, service, scope)

    def start(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        make_ready(state, now)

    def call_inputs(
        self, plan: Plan, event: Event, step: Step, service: Service
    ) -> tuple[dict[str, Any], list[Problem]]:
        return call_inputs(plan, event, step, service)

    def retry(self, plan: Plan, event: Event, step: Step, now: float) -> None:
        retry_unit(event.own(step.id), now)

    def _check_inputs(self, step: Step, service: Service, scope: Scope) -> list[Problem]:
        """Each input the service takes, as the step's reference (or the context, by name) gives it."""
        return [problem for f in service.inputs for problem in self._check_input(step, f, scope)]

    def _check_input(self, step: Step, f: Field, scope: Scope) -> list[Problem]:
        ref = step.input_ref(f.name)
        implicit = ref.source == "context" and f.name not in step.input
        if implicit and not f.always_present and not scope.sources.get(f.name):
            return []
        return check_flow(f, ref, scope, f"step '{step.id}' input '{f.name}'", step.id)

    def _check_mappings(self, step: Step, service: Service, services: Mapping[str, Service]) -> list[Problem]:
        """The step's ``input`` names inputs the service takes, its ``output`` outputs the step produces."""
        problems = []
        declared = {f.name for f in service.inputs}
        for name in step.input:
            if name not in declared:
                problems.append(
                    Problem(
                        f"step '{step.id}' maps input '{name}', which {self.callee_label(step)} does not take",
                        step=step.id,
                        field=name,
                    )
                )
        produced = {f.name for f in self.writes(step, services)}
        for name in step.output:
            if name not in produced:
                problems.append(
                    Problem(
                        f"step '{step.id}' renames output '{name}', which it does not produce", step=step.id, field=name
                    )
                )
        return problems
