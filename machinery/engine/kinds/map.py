"""``map``: call a service once per element of an array, at most ``concurrency`` at once.

Each element is a unit of its own (``each[3]``), passed to the service as its
input ``item``; the step's output ``results`` lists the answers in order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.dataflow import call_inputs, lookup, step_context
from machinery.engine.errors import Problem
from machinery.engine.kinds.service import ServiceKind
from machinery.engine.model import Field, Service, Step
from machinery.engine.scope import Definitions, Scope, check_flow
from machinery.engine.state import ACTIVE, COMPLETED, FAILED, PENDING, RUNNING, Event, StepState
from machinery.engine.types import FieldType, type_of
from machinery.engine.units import complete, fail_step, make_ready, retry_unit

if TYPE_CHECKING:
    from collections.abc import Mapping

    from machinery.engine.plan import Plan

RESULTS = Field("results", FieldType("array", FieldType("object")), "The answers, in the order of the items")


class MapKind(ServiceKind):
    name = "map"

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        return (RESULTS,)

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        problems = super().check(step, scope, definitions)
        service = definitions.services.get(step.service or "")
        if service is not None and service.inputs and step.item not in {f.name for f in service.inputs}:
            problems.append(
                Problem(
                    f"map step '{step.id}' passes each item as '{step.item}', "
                    f"which service '{service.name}' does not take",
                    step=step.id,
                    field="item",
                )
            )
        return problems

    def start(self, plan: Plan, event: Event, step: Step, state: StepState, now: float) -> None:
        state.started_at = now
        present, items = lookup(step.items_ref, event, step_context(plan, event, step))
        if not present or not isinstance(items, list):
            error = CallFailure(
                f"map '{step.id}' needs an array of items, got {type_of(items)}", False, ErrorKind.INPUT
            )
            fail_step(event, step.id, error, now)
            return
        state.status = RUNNING
        state.items = [StepState() for _ in items]
        self.item_done(plan, event, step.id, now)

    def call_inputs(
        self, plan: Plan, event: Event, step: Step, service: Service, item: int | None
    ) -> tuple[dict[str, Any], list[Problem]]:
        if item is None:
            return call_inputs(plan, event, step, service)
        _, items = lookup(step.items_ref, event, step_context(plan, event, step))
        return call_inputs(plan, event, step, service, {step.item or "": items[item]})

    def item_done(self, plan: Plan, event: Event, step_id: str, now: float) -> None:
        """Keep up to the step's concurrency of items going; complete the map once every item has."""
        state = event.own(step_id)
        assert state.items is not None
        if all(item.status is COMPLETED for item in state.items):
            complete(state, {RESULTS.name: [item.outputs for item in state.items]}, now)
            return
        active = sum(item.status in ACTIVE for item in state.items)
        limit = plan.graph.steps[step_id].concurrency
        for i, item in enumerate(state.items):
            if active >= limit:
                break
            if item.status is PENDING:
                make_ready(event.own_item(step_id, i), now)
                active += 1

    def retry(self, plan: Plan, event: Event, step: Step, now: float) -> None:
        state = event.own(step.id)
        if state.items is None:
            super().retry(plan, event, step, now)
            return
        state.status = RUNNING
        for i, item in enumerate(state.items):
            if item.status is FAILED:
                retry_unit(event.own_item(step.id, i), now)
        self.item_done(plan, event, step.id, now)

    def _check_input(self, step: Step, f: Field, scope: Scope) -> list[Problem]:
        if f.name != step.item:
            return super()._check_input(step, f, scope)
        array = Field("items", FieldType("array", f.type))
        return check_flow(array, step.items_ref, scope, f"map step '{step.id}' items", step.id)
