"""The static check: does a workflow's graph hold together, and do its types fit?

It runs when a workflow is registered and when a service it uses changes, and
reports every problem at once, each naming the step, the field, what was
expected and what was found. Every choice of routes is considered: a value
counts as present at a step only if, on every choice under which the step
runs, a step before it has produced it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from machinery.engine.errors import InvalidExpression, Problem
from machinery.engine.expressions import NAMES, Expressions
from machinery.engine.graph import Graph, Run, build
from machinery.engine.model import (
    DELAY,
    MAP,
    SUCCEED,
    SWITCH,
    TRANSFORM,
    WAIT,
    Field,
    Ref,
    Service,
    Step,
    Workflow,
)
from machinery.engine.types import ANY, FieldType, accepts, conforms, describe_mismatch, epoch_seconds, type_of

MAP_RESULTS = Field("results", FieldType("array", FieldType("object")), "The answers, in the order of the items")


@dataclass(frozen=True)
class _Source:
    """A value the context may hold under a name at some step, and who put it there."""

    type: FieldType
    origin: str
    writer: str | None = None
    """The step that wrote it; None for the event's data."""


@dataclass(frozen=True)
class _Scope:
    """What a step can read: the possible sources of each context name and whether one is always there."""

    sources: Mapping[str, list[_Source]]
    certain: Mapping[str, bool]
    inputs: Mapping[str, _Source]
    present_inputs: frozenset[str]
    outputs: Mapping[str, Mapping[str, Field]]
    upstream: frozenset[str]
    certain_steps: frozenset[str]
    """Upstream steps that have produced their outputs whenever the step runs."""


def check_fields(fields: Iterable[Field], what: str) -> list[Problem]:
    """Names are unique and every default fits its field's type."""
    problems = []
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            problems.append(Problem(f"{what} '{f.name}' is declared twice", field=f.name))
        seen.add(f.name)
        if f.has_default and not conforms(f.type, f.default):
            problems.append(
                Problem(
                    f"the default of {what} '{f.name}' should be {f.type}, not {type_of(f.default)}",
                    field=f.name,
                    expected=str(f.type),
                    found=type_of(f.default),
                )
            )
    return problems


def check_service(service: Service) -> list[Problem]:
    return check_fields(service.inputs, "input") + check_fields(service.outputs, "output")


def writes(step: Step, services: Mapping[str, Service]) -> tuple[Field, ...]:
    """The fields a step adds to the context (before renaming)."""
    if step.kind == MAP:
        return (MAP_RESULTS,)
    if step.kind in (WAIT, TRANSFORM):
        return step.outputs
    service = services.get(step.service or "")
    return service.outputs if service is not None and step.calls_service else ()


def check_workflow(workflow: Workflow, services: Mapping[str, Service], expressions: Expressions) -> list[Problem]:
    """Every problem of ``workflow`` given the registered ``services``; empty when it is sound."""
    problems = check_fields(workflow.inputs, "workflow input") + check_fields(workflow.outputs, "workflow output")
    if not workflow.steps:
        problems.append(Problem("a workflow needs at least one step"))
    for step in workflow.steps:
        if step.calls_service and step.service not in services:
            problems.append(
                Problem(
                    f"step '{step.id}' calls service '{step.service}', which is not registered",
                    step=step.id,
                    field="service",
                    found=step.service,
                )
            )
    graph, structure = build(workflow)
    problems += structure
    if graph is None:
        return problems
    for step_id in sorted(graph.unreachable, key=[s.id for s in graph.order].index):
        problems.append(Problem(f"step '{step_id}' can never run: no choice of routes leads to it", step=step_id))
    inputs = {f.name: _Source(f.type, f"workflow input '{f.name}'") for f in workflow.inputs}
    present = {f.name for f in workflow.inputs if f.always_present}
    outputs = {s.id: {f.name: f for f in writes(s, services)} for s in graph.order}
    for step in graph.order:
        if step.id in graph.unreachable:
            continue
        scope = _scope(graph, graph.runs_with(step.id), graph.upstream[step.id], inputs, present, outputs)
        problems += _check_step(step, services, scope, expressions)
        if step.kind == SUCCEED:
            problems += _check_outputs(workflow, scope, f"at step '{step.id}', ")
    problems += _parallel_writes(graph, outputs)
    end = _scope(graph, graph.runs_with(None), frozenset(graph.steps), inputs, present, outputs)
    problems += _check_outputs(workflow, end, "")
    return problems


def _scope(
    graph: Graph,
    runs: list[Run],
    upstream: frozenset[str],
    inputs: Mapping[str, _Source],
    present: set[str],
    outputs: Mapping[str, Mapping[str, Field]],
) -> _Scope:
    """What a step reads, given the ``runs`` in which it runs and the steps ``upstream`` of it.

    In each run, a name holds what its last writer wrote; an earlier writer
    (or the event's data) shows through only where later ones may leave it out.
    """
    writers: dict[str, list[tuple[str, Field]]] = {}
    for prior in graph.order:
        if prior.id in upstream:
            for f in outputs[prior.id].values():
                writers.setdefault(prior.context_name(f.name), []).append((prior.id, f))
    sources: dict[str, list[_Source]] = {}
    always: dict[str, bool] = {}
    for name in set(inputs) | set(writers):
        found: dict[str, _Source] = {}
        certain = bool(runs)
        # When no run reaches the step, every writer may have written the name, and none surely did.
        candidates: list[Run | None] = list(runs) or [None]
        for run in candidates:
            shown, covered = _final_writers(writers.get(name, []), run)
            for step_id, f in shown:
                found.setdefault(step_id, _Source(f.type, f"output '{f.name}' of step '{step_id}'", step_id))
            if not covered and name in inputs:
                found.setdefault("", inputs[name])
            certain = certain and run is not None and (covered or name in present)
        sources[name] = list(found.values())
        always[name] = certain
    produced = [frozenset(s for s in upstream if run.produced(s)) for run in runs]
    certain_steps = frozenset.intersection(*produced) if produced else frozenset()
    return _Scope(sources, always, inputs, frozenset(present), outputs, upstream, certain_steps)


def _final_writers(writers: list[tuple[str, Field]], run: Run | None) -> tuple[list[tuple[str, Field]], bool]:
    """The writers whose value a name may end up with in ``run``, latest first, and whether one always writes it."""
    shown = []
    for step_id, f in reversed(writers):
        if run is not None and not run.produced(step_id):
            continue
        shown.append((step_id, f))
        if f.always_present:
            return shown, True
    return shown, False


def _check_step(step: Step, services: Mapping[str, Service], scope: _Scope, expressions: Expressions) -> list[Problem]:
    if step.kind == SWITCH:
        return _check_expression(step, "expression", step.expression or "", expressions)
    if step.kind == TRANSFORM:
        return _check_transform(step, expressions)
    if step.kind == DELAY and step.until is not None:
        until = Field("until", ANY)
        what = f"delay '{step.id}' until"
        problems = _check_flow(until, step.until, scope, what, step.id, {"string", "int", "float"})
        if not problems and step.until.source == "const" and epoch_seconds(step.until.value) is None:
            problems.append(
                Problem(f"{what} {step.until} is no time: write ISO 8601 or epoch seconds", step=step.id, field="until")
            )
        return problems
    if not step.calls_service or step.service not in services:
        return []
    service = services[step.service or ""]
    problems = _check_mappings(step, service)
    for f in service.inputs:
        what = f"step '{step.id}' input '{f.name}'"
        if step.kind == MAP and f.name == step.item:
            problems += _check_items(step, f, scope)
            continue
        ref = step.input_ref(f.name)
        implicit = ref.source == "context" and f.name not in step.input
        if implicit and not f.always_present and not scope.sources.get(f.name):
            continue
        problems += _check_flow(f, ref, scope, what, step.id)
    if step.kind == MAP and service.inputs and step.item not in {f.name for f in service.inputs}:
        problems.append(
            Problem(
                f"map step '{step.id}' passes each item as '{step.item}', which service '{service.name}' does not take",
                step=step.id,
                field="item",
            )
        )
    return problems


def _check_mappings(step: Step, service: Service) -> list[Problem]:
    problems = []
    declared = {f.name for f in service.inputs}
    for name in step.input:
        if name not in declared:
            problems.append(
                Problem(
                    f"step '{step.id}' maps input '{name}', which service '{service.name}' does not take",
                    step=step.id,
                    field=name,
                )
            )
    produced = {f.name for f in (MAP_RESULTS,)} if step.kind == MAP else {f.name for f in service.outputs}
    for name in step.output:
        if name not in produced:
            problems.append(
                Problem(
                    f"step '{step.id}' renames output '{name}', which it does not produce", step=step.id, field=name
                )
            )
    return problems


def _check_items(step: Step, f: Field, scope: _Scope) -> list[Problem]:
    """The array a map step iterates over, and its items against the service input they feed."""
    array = Field("items", FieldType("array", f.type))
    return _check_flow(array, step.items_ref, scope, f"map step '{step.id}' items", step.id)


def _check_transform(step: Step, expressions: Expressions) -> list[Problem]:
    problems = []
    declared = {f.name for f in step.outputs}
    for name in step.compute:
        if name not in declared:
            problems.append(
                Problem(
                    f"transform '{step.id}' computes '{name}', which is not among its outputs", step=step.id, field=name
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
        problems += _check_expression(step, name, source, expressions)
    return problems


def _check_expression(step: Step, field: str, source: str, expressions: Expressions) -> list[Problem]:
    try:
        expression = expressions.compile(source)
    except InvalidExpression as e:
        return [
            Problem(f"step '{step.id}': the expression for '{field}' does not compile: {e}", step=step.id, field=field)
        ]
    unknown = sorted(expression.variables - NAMES)
    if unknown:
        names = ", ".join(f"'{n}'" for n in unknown)
        return [
            Problem(
                f"step '{step.id}': the expression for '{field}' reads {names}; expressions read only "
                "input, context and steps",
                step=step.id,
                field=field,
            )
        ]
    return []


def _check_flow(
    f: Field, ref: Ref, scope: _Scope, what: str, step: str | None, allowed: set[str] | None = None
) -> list[Problem]:
    """Whether ``ref`` always gives a value of ``f``'s type at the step whose ``scope`` this is."""
    expected = " or ".join(sorted(allowed)) if allowed else str(f.type)
    if ref.source == "const":
        if conforms(f.type, ref.value) and (allowed is None or type_of(ref.value) in allowed):
            return []
        return [
            Problem(
                f"{what} expects {expected}, but the constant {ref} does not fit: "
                + describe_mismatch(f.type if allowed is None else ANY, ref.value),
                step=step,
                field=f.name,
                expected=expected,
                found=type_of(ref.value),
            )
        ]
    sources, certain, missing = _resolve(ref, scope)
    if not sources:
        return [Problem(f"{what} needs {_a(f.type)}, but {missing}", step=step, field=f.name, expected=str(f.type))]
    problems = []
    for source in sources:
        fits = accepts(f.type, source.type) and (allowed is None or source.type.name in allowed | {"any"})
        if not fits:
            problems.append(
                Problem(
                    f"{what} expects {expected}, but {source.origin} is {source.type}",
                    step=step,
                    field=f.name,
                    expected=expected,
                    found=str(source.type),
                )
            )
    if not problems and not certain and f.required:
        origins = " or ".join(s.origin for s in sources)
        problems.append(
            Problem(
                f"{what} is required, but {origins} may be absent (an optional field, or a step on a route not taken)",
                step=step,
                field=f.name,
                expected=str(f.type),
                found="a value that may be absent",
            )
        )
    return problems


def _resolve(ref: Ref, scope: _Scope) -> tuple[list[_Source], bool, str]:
    """The possible static sources of a reference, whether one is always there, or why there is none."""
    head = ref.path[0] if ref.path else ""
    if ref.source == "step":
        if ref.step not in scope.upstream:
            return [], False, f"{ref} refers to step '{ref.step}', which does not run before this step"
        field = scope.outputs.get(ref.step or "", {}).get(head)
        if field is None:
            return [], False, f"{ref} names no output of step '{ref.step}'"
        sources = [_Source(field.type, f"output '{field.name}' of step '{ref.step}'", ref.step)]
        certain = field.always_present and ref.step in scope.certain_steps
    elif ref.source == "input":
        source = scope.inputs.get(head)
        if source is None:
            return [], False, f"{ref} is no workflow input"
        sources, certain = [source], head in scope.present_inputs
    else:
        sources, certain = scope.sources.get(head, []), scope.certain.get(head, False)
        if not sources:
            return [], False, f"nothing before it provides '{head}'"
    if len(ref.path) > 1:
        flat = [s for s in sources if s.type.name not in ("object", "any")]
        if flat:
            return [], False, f"{ref} reads a field of {flat[0].origin}, which is {flat[0].type}, not an object"
        sources = [_Source(ANY, str(ref), s.writer) for s in sources]
    return sources, certain, ""


def _check_outputs(workflow: Workflow, scope: _Scope, where: str) -> list[Problem]:
    problems = []
    for f in workflow.outputs:
        problems += _check_flow(f, Ref("context", (f.name,)), scope, f"{where}workflow output '{f.name}'".strip(), None)
    return problems


def _parallel_writes(graph: Graph, outputs: Mapping[str, Mapping[str, Field]]) -> list[Problem]:
    """Two steps that may run at once must not write the same name into the context."""
    problems = []
    writers: dict[str, list[str]] = {}
    for step in graph.order:
        for f in outputs[step.id].values():
            name = step.context_name(f.name)
            for other in writers.get(name, []):
                if other not in graph.upstream[step.id] and graph.together(other, step.id):
                    problems.append(
                        Problem(
                            f"steps '{other}' and '{step.id}' may run at the same time and both write "
                            f"'{name}' into the context; rename one of them with 'output'",
                            step=step.id,
                            field=name,
                        )
                    )
            writers.setdefault(name, []).append(step.id)
    return problems


def _a(t: FieldType) -> str:
    return f"{'an' if str(t)[0] in 'aeiou' else 'a'} {t}"
