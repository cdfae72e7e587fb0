"""What a step can read when its workflow is registered, and the checks of what it reads.

The checker (:mod:`machinery.engine.checker`) works out each step's :class:`Scope`;
each kind of step (:mod:`machinery.engine.kinds`) checks its own references and
expressions against it with the functions here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from machinery.engine.errors import InvalidExpression, Problem
from machinery.engine.expressions import NAMES, Expressions
from machinery.engine.model import Field, Ref, Service, Step, Workflow
from machinery.engine.types import ANY, FieldType, accepts, conforms, describe_mismatch, type_of


@dataclass(frozen=True)
class Definitions:
    """What a workflow is checked against: itself, the registered services it uses, the expression language."""

    workflow: Workflow
    services: Mapping[str, Service]
    """By name; and the contract of each workflow its ``workflow`` steps run, by
    :func:`~machinery.engine.kinds.workflow.contract_key`."""
    expressions: Expressions


@dataclass(frozen=True)
class Source:
    """A value the context may hold under a name at some step, and who put it there."""

    type: FieldType
    origin: str
    writer: str | None = None
    """The step that wrote it; None for the event's data."""


@dataclass(frozen=True)
class Scope:
    """What a step can read: the possible sources of each context name and whether one is always there."""

    sources: Mapping[str, list[Source]]
    certain: Mapping[str, bool]
    inputs: Mapping[str, Source]
    present_inputs: frozenset[str]
    outputs: Mapping[str, Mapping[str, Field]]
    upstream: frozenset[str]
    certain_steps: frozenset[str]
    """Upstream steps that have produced their outputs whenever the step runs."""


def check_expression(step: Step, field: str, source: str, expressions: Expressions) -> list[Problem]:
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


def check_flow(
    f: Field, ref: Ref, scope: Scope, what: str, step: str | None, allowed: set[str] | None = None
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
    sources, certain, missing = resolve(ref, scope)
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


def resolve(ref: Ref, scope: Scope) -> tuple[list[Source], bool, str]:
    """The possible static sources of a reference, whether one is always there, or why there is none."""
    head = ref.path[0] if ref.path else ""
    if ref.source == "step":
        if ref.step not in scope.upstream:
            return [], False, f"{ref} refers to step '{ref.step}', which does not run before this step"
        field = scope.outputs.get(ref.step or "", {}).get(head)
        if field is None:
            return [], False, f"{ref} names no output of step '{ref.step}'"
        sources = [Source(field.type, f"output '{field.name}' of step '{ref.step}'", ref.step)]
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
        sources = [Source(ANY, str(ref), s.writer) for s in sources]
    return sources, certain, ""


def check_workflow_outputs(workflow: Workflow, scope: Scope, where: str) -> list[Problem]:
    """Whether the context holds the workflow's outputs, of their types, where ``scope`` was taken."""
    problems = []
    for f in workflow.outputs:
        problems += check_flow(f, Ref("context", (f.name,)), scope, f"{where}workflow output '{f.name}'".strip(), None)
    return problems


def _a(t: FieldType) -> str:
    return f"{'an' if str(t)[0] in 'aeiou' else 'a'} {t}"
