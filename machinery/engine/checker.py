"""The static check: does a workflow's graph hold together, and do its types fit?

It runs when a workflow is registered and when a service it uses changes, and
reports every problem at once, each naming the step, the field, what was
expected and what was found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from machinery.engine.errors import Problem
from machinery.engine.model import Field, Ref, Service, Step, Workflow
from machinery.engine.types import ANY, FieldType, accepts, conforms, describe_mismatch, type_of


@dataclass(frozen=True)
class _Source:
    """What the context holds under a name at some point of the graph, and who put it there."""

    type: FieldType
    origin: str
    certain: bool
    writer: str | None = None


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


def topological_order(workflow: Workflow) -> tuple[list[Step], list[Problem]]:
    """The steps in an order where each comes after those it depends on.

    Ties keep the order of the definition, so that the result is deterministic.
    """
    problems: list[Problem] = []
    ids: dict[str, Step] = {}
    for step in workflow.steps:
        if step.id in ids:
            problems.append(Problem(f"step id '{step.id}' is used twice", step=step.id))
        ids[step.id] = step
    for step in workflow.steps:
        for dep in step.after:
            if dep == step.id:
                problems.append(Problem(f"step '{step.id}' cannot run after itself", step=step.id))
            elif dep not in ids:
                problems.append(
                    Problem(f"step '{step.id}' runs after '{dep}', which is no step of this workflow", step=step.id)
                )
    if problems:
        return [], problems
    order: list[Step] = []
    done: set[str] = set()
    remaining = list(workflow.steps)
    while remaining:
        ready = [s for s in remaining if all(d in done for d in s.after)]
        if not ready:
            cycle = ", ".join(f"'{s.id}'" for s in _on_cycles(remaining))
            return [], [Problem(f"steps {cycle} depend on each other in a cycle")]
        for step in ready:
            order.append(step)
            done.add(step.id)
        remaining = [s for s in remaining if s.id not in done]
    return order, []


def _on_cycles(steps: list[Step]) -> list[Step]:
    """Of steps that cannot be ordered, those on a cycle: the others merely run after one."""
    while True:
        needed = {dep for s in steps for dep in s.after}
        kept = [s for s in steps if s.id in needed]
        if len(kept) == len(steps):
            return steps
        steps = kept


def ancestors(order: list[Step]) -> dict[str, set[str]]:
    """For each step, every step upstream of it: those that complete before it on every path."""
    result: dict[str, set[str]] = {}
    for step in order:
        up: set[str] = set()
        for dep in step.after:
            up |= result[dep] | {dep}
        result[step.id] = up
    return result


def check_workflow(workflow: Workflow, services: Mapping[str, Service]) -> list[Problem]:
    """Every problem of ``workflow`` given the registered ``services``; empty when it is sound."""
    problems = check_fields(workflow.inputs, "workflow input") + check_fields(workflow.outputs, "workflow output")
    if not workflow.steps:
        problems.append(Problem("a workflow needs at least one step"))
    for step in workflow.steps:
        if step.service not in services:
            problems.append(
                Problem(
                    f"step '{step.id}' calls service '{step.service}', which is not registered",
                    step=step.id,
                    field="service",
                    found=step.service,
                )
            )
    order, structure = topological_order(workflow)
    problems += structure
    if structure:
        return problems
    upstream = ancestors(order)
    initial = {f.name: _Source(f.type, f"workflow input '{f.name}'", f.always_present) for f in workflow.inputs}
    inputs = dict(initial)
    outputs: dict[str, dict[str, Field]] = {}
    writers: dict[str, dict[str, _Source]] = {}
    for step in order:
        context = dict(initial)
        for prior in order:
            if prior.id in upstream[step.id]:
                context.update(writers.get(prior.id, {}))
        service = services.get(step.service)
        if service is None:
            continue
        problems += _check_step(step, service, context, inputs, outputs, upstream[step.id])
        outputs[step.id] = {f.name: f for f in service.outputs}
        writers[step.id] = {}
        for f in service.outputs:
            target = step.context_name(f.name)
            origin = f"output '{f.name}' of step '{step.id}'"
            writers[step.id][target] = _Source(f.type, origin, f.always_present, step.id)
    final = dict(initial)
    for step in order:
        for name, source in writers.get(step.id, {}).items():
            previous = final.get(name)
            if previous and previous.writer and previous.writer not in upstream[step.id]:
                problems.append(
                    Problem(
                        f"steps '{previous.writer}' and '{step.id}' may run in parallel and both write "
                        f"'{name}' into the context; rename one of them with 'output'",
                        step=step.id,
                        field=name,
                    )
                )
            final[name] = source
    for f in workflow.outputs:
        problems += _check_flow(
            f, final.get(f.name), f"workflow output '{f.name}'", f"no step produces '{f.name}'", step=None
        )
    return problems


def _check_step(
    step: Step,
    service: Service,
    context: dict[str, _Source],
    inputs: dict[str, _Source],
    outputs: dict[str, dict[str, Field]],
    upstream: set[str],
) -> list[Problem]:
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
    for name in step.output:
        if service.output(name) is None:
            problems.append(
                Problem(
                    f"step '{step.id}' renames output '{name}', which service '{service.name}' does not produce",
                    step=step.id,
                    field=name,
                )
            )
    for f in service.inputs:
        ref = step.input_ref(f.name)
        what = f"step '{step.id}' input '{f.name}'"
        if ref.source == "const":
            if not conforms(f.type, ref.value):
                problems.append(
                    Problem(
                        f"{what} expects {f.type}, but the constant {ref} does not fit: "
                        + describe_mismatch(f.type, ref.value),
                        step=step.id,
                        field=f.name,
                        expected=str(f.type),
                        found=type_of(ref.value),
                    )
                )
            continue
        source, missing = _resolve(ref, context, inputs, outputs, upstream)
        if source is None and not f.always_present and ref.source == "context" and f.name not in step.input:
            continue
        problems += _check_flow(f, source, what, missing, step=step.id)
    return problems


def _resolve(
    ref: Ref,
    context: dict[str, _Source],
    inputs: dict[str, _Source],
    outputs: dict[str, dict[str, Field]],
    upstream: set[str],
) -> tuple[_Source | None, str]:
    """The static type a reference has at a step, or None and why it has none."""
    if ref.source == "step":
        if ref.step not in upstream:
            return None, f"{ref} refers to step '{ref.step}', which does not complete before this step on every path"
        field = outputs.get(ref.step or "", {}).get(ref.path[0]) if ref.path else None
        if field is None:
            return None, f"{ref} names no output of step '{ref.step}'"
        source = _Source(field.type, f"output '{field.name}' of step '{ref.step}'", field.always_present)
    else:
        scope = context if ref.source == "context" else inputs
        found = scope.get(ref.path[0]) if ref.path else None
        if found is None:
            return None, (
                f"nothing before it provides '{ref.path[0]}'"
                if ref.source == "context"
                else f"{ref} is no workflow input"
            )
        source = found
    if len(ref.path) > 1:
        if source.type.name not in ("object", "any"):
            return None, f"{ref} reads a field of {source.origin}, which is {source.type}, not an object"
        source = _Source(ANY, f"{ref}", source.certain)
    return source, ""


def _check_flow(f: Field, source: _Source | None, what: str, missing: str, step: str | None) -> list[Problem]:
    if source is None:
        return [Problem(f"{what} needs {_a(f.type)}, but {missing}", step=step, field=f.name, expected=str(f.type))]
    if not accepts(f.type, source.type):
        return [
            Problem(
                f"{what} expects {f.type}, but {source.origin} is {source.type}",
                step=step,
                field=f.name,
                expected=str(f.type),
                found=str(source.type),
            )
        ]
    if not source.certain and f.required:
        return [
            Problem(
                f"{what} is required, but {source.origin} is optional and may be absent",
                step=step,
                field=f.name,
                expected=str(f.type),
                found=f"optional {source.type}",
            )
        ]
    return []


def _a(t: FieldType) -> str:
    return f"{'an' if str(t)[0] in 'aeiou' else 'a'} {t}"
