"""Data flow at run time: the context a step sees, references into it, and values checked against fields.

The static check (:mod:`machinery.engine.checker`) proves when a workflow is
registered that these lookups find what they need; here they are made, and
what still does not fit (an answer, a signal, a computed value) is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.errors import InvalidExpression, OverBudget, Problem
from machinery.engine.model import Field, Ref, Service, Step
from machinery.engine.state import COMPLETED, Event
from machinery.engine.types import conforms, describe_mismatch, type_of
from machinery.engine.units import fail_step

if TYPE_CHECKING:
    from machinery.engine.plan import Plan


def context(plan: Plan, event: Event, upto: frozenset[str] | None = None) -> dict[str, Any]:
    """The context: the event's data, then the outputs of completed steps in graph order.

    With ``upto``, only the outputs of those steps (a step's upstream) count.
    """
    ctx = dict(event.data)
    writers = plan.writers
    for step in plan.order:
        if upto is not None and step.id not in upto:
            continue
        state = event.steps[step.id]
        if state.status is COMPLETED and state.outputs and step.id in writers:
            for name, value in state.outputs.items():
                ctx[step.context_name(name)] = value
    return ctx


def step_context(plan: Plan, event: Event, step: Step) -> dict[str, Any]:
    """The context as ``step`` sees it: the outputs of the steps upstream of it only."""
    return context(plan, event, plan.graph.upstream[step.id])


def lookup(ref: Ref, event: Event, ctx: dict[str, Any]) -> tuple[bool, Any]:
    """Whether ``ref`` finds a value in the event (``ctx`` being the context it reads), and the value."""
    if ref.source == "const":
        return True, ref.value
    if ref.source == "step":
        value: Any = event.steps[ref.step or ""].outputs or {}
    else:
        value = ctx if ref.source == "context" else event.data
    for part in ref.path:
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def fill(
    fields: tuple[Field, ...], values: Mapping[str, Any], what: str, quote: bool = True
) -> tuple[dict[str, Any], list[Problem]]:
    """The declared fields of ``values``: defaults filled, types checked, what is missing or wrong listed."""
    result: dict[str, Any] = {}
    problems = []
    for f in fields:
        label = f"{what} '{f.name}'" if quote else f"'{f.name}'"
        if f.name in values:
            value = values[f.name]
            if conforms(f.type, value):
                result[f.name] = value
            else:
                problems.append(
                    Problem(
                        f"{label} should be {f.type}: {describe_mismatch(f.type, value)}",
                        field=f.name,
                        expected=str(f.type),
                        found=type_of(value),
                    )
                )
        elif f.has_default:
            result[f.name] = f.default
        elif f.required:
            problems.append(
                Problem(
                    f"{label} is {'missing' if quote else 'required'}",
                    field=f.name,
                    expected=str(f.type),
                    found="nothing",
                )
            )
    return result, problems


def contract_failure(message: str, problems: list[Problem], kind: ErrorKind = ErrorKind.TYPE) -> CallFailure:
    """The failure of values outside their contract: ``message``, then each problem, which are attached too."""
    details = {"problems": [p.to_dict() for p in problems]}
    return CallFailure(message + "; ".join(p.message for p in problems), False, kind, details)


def check_outputs(service: Service, outputs: Any) -> tuple[dict[str, Any], list[Problem]]:
    """The declared outputs of a service's answer, defaults filled, and what does not fit."""
    if not isinstance(outputs, dict):
        found = type_of(outputs)
        return {}, [Problem(f"the answer should be a JSON object, got {found}", expected="object", found=found)]
    return fill(service.outputs, outputs, f"service '{service.name}' output")


def call_inputs(
    plan: Plan, event: Event, step: Step, service: Service, given: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """The inputs of a call of ``service`` by ``step``, read through the step's references; ``given`` overrides
    those it names (a map step's item)."""
    if not service.inputs:
        return {}, []
    ctx = step_context(plan, event, step)
    found: dict[str, Any] = {}
    for f in service.inputs:
        if given and f.name in given:
            found[f.name] = given[f.name]
            continue
        present, value = lookup(step.input_ref(f.name), event, ctx)
        if present:
            found[f.name] = value
    return fill(service.inputs, found, f"service '{service.name}' input")


def evaluate(plan: Plan, event: Event, step: Step, field: str, now: float) -> tuple[bool, Any]:
    """The value of the step's expression for ``field``; an expression that fails fails the step."""
    upstream = plan.graph.upstream[step.id]
    outputs = {s: event.steps[s].outputs or {} for s in upstream if event.steps[s].status is COMPLETED}
    activation = {"input": event.data, "context": context(plan, event, upstream), "steps": outputs}
    try:
        return True, plan.expressions[(step.id, field)](activation)
    except OverBudget as e:
        error = CallFailure(f"the expression for '{field}' was not evaluated: {e}", False, ErrorKind.BUDGET)
        fail_step(event, step.id, error, now)
        return False, None
    except InvalidExpression as e:
        error = CallFailure(f"the expression for '{field}' failed: {e}", transient=False, kind=ErrorKind.EXPRESSION)
        fail_step(event, step.id, error, now)
        return False, None
