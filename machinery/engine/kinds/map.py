"""``map``: call a service (or run a workflow) once per element of an array, at most ``concurrency`` at once.

A worker claiming the step fans it out into items, one per element: records of their own
(:mod:`machinery.engine.fanout`), each passing its element to the service as its input ``item``.
Once every item has completed, the step's output ``results`` lists the answers in order, unless the step
discards them (``"results": "discard"``) or they are too large to keep (the items keep them).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.dataflow import call_inputs, contract_failure, fill, lookup, step_context
from machinery.engine.errors import Problem
from machinery.engine.kinds.service import ServiceKind
from machinery.engine.kinds.workflow import WorkflowKind, contract_key
from machinery.engine.model import CALLBACK, DISCARD, Field, Service, Step
from machinery.engine.scope import Definitions, Scope, check_flow
from machinery.engine.state import RUNNING, Event, Item, StepState
from machinery.engine.types import FieldType, conforms, type_of
from machinery.engine.units import complete, fail_step, fanned_out, make_ready

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from machinery.engine.fleets import Workload
    from machinery.engine.plan import Plan, Settings

WORKFLOW_KIND = WorkflowKind()
RESULTS = Field("results", FieldType("array", FieldType("object")), "The answers, in the order of the items")


class MapKind(ServiceKind):
    name = "map"
    fans_out = True

    def callee(self, step: Step) -> str | None:
        return contract_key(step.workflow, step.version) if step.workflow is not None else step.service

    def callee_label(self, step: Step) -> str:
        return WORKFLOW_KIND.callee_label(step) if step.workflow is not None else super().callee_label(step)

    def callee_field(self, step: Step) -> str:
        return "workflow" if step.workflow is not None else "service"

    def writes(self, step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
        return () if step.results == DISCARD else (RESULTS,)

    def check(self, step: Step, scope: Scope, definitions: Definitions) -> list[Problem]:
        problems = super().check(step, scope, definitions)
        service = definitions.services.get(self.callee(step) or "")
        if service is not None and service.mode == CALLBACK:
            problems.append(
                Problem(
                    f"map step '{step.id}' calls callback service '{service.name}': "
                    "the items of a map call services that answer at once",
                    step=step.id,
                    field="service",
                )
            )
        if service is not None and service.inputs and step.item not in {f.name for f in service.inputs}:
            problems.append(
                Problem(
                    f"map step '{step.id}' passes each item as '{step.item}', "
                    f"which {self.callee_label(step)} does not take",
                    step=step.id,
                    field="item",
                )
            )
        return problems

    def fan_out(
        self,
        plan: Plan,
        event: Event,
        step: Step,
        state: StepState,
        service: Service,
        now: float,
        settings: Settings,
        members: Sequence[Workload] = (),
    ) -> list[Item]:
        present, values = lookup(step.items_ref, event, step_context(plan, event, step))
        if not present or not isinstance(values, list):
            self._fail(event, step, f"map '{step.id}' needs an array of items, got {type_of(values)}", now)
            return []
        if len(values) > settings.max_map_items:
            message = f"map '{step.id}' has {len(values)} items, more than the {settings.max_map_items} allowed"
            self._fail(event, step, message, now, ErrorKind.SIZE)
            return []
        if not values:
            complete(state, {} if step.results == DISCARD else {RESULTS.name: []}, now)
            return []
        name = step.item or ""
        common, problems = call_inputs(plan, event, step, service, {name: values[0]})
        item_field = next((f for f in service.inputs if f.name == name), None)
        if item_field is not None and not problems:
            bad = next((i for i, value in enumerate(values) if not conforms(item_field.type, value)), None)
            if bad is not None:
                problems = fill((item_field,), {name: values[bad]}, f"item {bad}: service '{service.name}' input")[1]
        if problems:
            error = contract_failure(f"step '{step.id}' cannot call '{service.name}': ", problems, ErrorKind.INPUT)
            fail_step(event, step.id, error, now)
            return []
        fanned_out(state, len(values), now)
        lanes = step.concurrency
        items = []
        for index, value in enumerate(values):
            item = Item(
                event.id,
                step.id,
                index,
                event.workflow_id,
                event.workflow_version,
                {**common, name: value} if item_field is not None else common,
                successor=index + lanes if index + lanes < len(values) else None,
            )
            if index < lanes:
                make_ready(item.state, now)
            items.append(item)
        return items

    def gather(
        self, step: Step, items: Iterable[Item], max_bytes: int
    ) -> tuple[dict[str, Any], str | None, CallFailure | None]:
        """Its items' answers in order, unless it discards them or they are larger than ``max_bytes``."""
        if step.results == DISCARD:
            return {}, None, None
        results, size = [], 0
        for item in items:
            size += len(json.dumps(item.state.outputs))
            if size > max_bytes:
                return {}, too_large(max_bytes), None
            results.append(item.state.outputs)
        return {RESULTS.name: results}, None, None

    def retry(self, plan: Plan, event: Event, step: Step, now: float) -> None:
        state = event.own(step.id)
        if state.fanout is None:
            super().retry(plan, event, step, now)
            return
        # Its failed items are retried by the runner, which holds them.
        state.status = RUNNING
        state.error = None

    def _fail(self, event: Event, step: Step, message: str, now: float, kind: ErrorKind = ErrorKind.INPUT) -> None:
        fail_step(event, step.id, CallFailure(message, False, kind), now)

    def _check_input(self, step: Step, f: Field, scope: Scope) -> list[Problem]:
        if f.name != step.item:
            return super()._check_input(step, f, scope)
        array = Field("items", FieldType("array", f.type))
        return check_flow(array, step.items_ref, scope, f"map step '{step.id}' items", step.id)


def too_large(max_bytes: int) -> str:
    """The note of a step whose items' results are left out of its outputs."""
    return (
        f"its results are larger than {max_bytes} bytes: each item keeps its own (GET /events/<id>/steps/<step>/items)"
    )
