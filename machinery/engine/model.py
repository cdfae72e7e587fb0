"""Definitions: fields, services and workflows, as frozen plain data.

A workflow is always held as a graph of steps. The linear form of the seed
(``services: [a, b, c]``) is a shorthand that :func:`linear_steps` expands:
each step depends on the one before it, takes its inputs from the context by
name and writes its outputs back into the context under their own names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from machinery.engine.retry import RetryPolicy
from machinery.engine.types import FieldType

_NO_DEFAULT = object()


@dataclass(frozen=True)
class Field:
    """A named, typed value in a contract: a service's or a workflow's input or output."""

    name: str
    type: FieldType
    description: str = ""
    required: bool = True
    default: Any = _NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not _NO_DEFAULT

    @property
    def always_present(self) -> bool:
        """Whether a value for this field exists once it has been accepted."""
        return self.required or self.has_default


@dataclass(frozen=True)
class HttpEndpoint:
    """How to call an HTTP service: the declared inputs go out as a JSON object."""

    address: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    kind: str = "http"


@dataclass(frozen=True)
class Service:
    """A registered microservice and its typed contract."""

    name: str
    endpoint: HttpEndpoint
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    description: str = ""
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    id: str | None = None
    revision: int = 0

    @property
    def kind(self) -> str:
        return self.endpoint.kind

    def output(self, name: str) -> Field | None:
        return next((f for f in self.outputs if f.name == name), None)


@dataclass(frozen=True)
class Ref:
    """Where a step input comes from.

    ``source`` is ``context`` (the running context), ``input`` (the event's
    data as accepted), ``step`` (an earlier step's outputs, ``step`` naming it)
    or ``const`` (``value`` itself). ``path`` goes into the value, field by field.
    """

    source: str
    path: tuple[str, ...] = ()
    step: str | None = None
    value: Any = None

    def __str__(self) -> str:
        if self.source == "const":
            return repr(self.value)
        root = f"$.steps.{self.step}" if self.source == "step" else f"$.{self.source}"
        return ".".join((root, *self.path))


@dataclass(frozen=True)
class Step:
    """One node of a workflow graph: a service call.

    ``input`` maps each service input to a :class:`Ref`; an input it does not
    name is read from the context under its own name. ``output`` renames
    service outputs on their way into the context; the others keep their names.
    """

    id: str
    service: str
    after: tuple[str, ...] = ()
    input: Mapping[str, Ref] = field(default_factory=dict)
    output: Mapping[str, str] = field(default_factory=dict)

    def input_ref(self, name: str) -> Ref:
        return self.input.get(name) or Ref("context", (name,))

    def context_name(self, output: str) -> str:
        return self.output.get(output, output)


@dataclass(frozen=True)
class Workflow:
    """A registered workflow: a typed contract and the graph of steps that fulfils it.

    ``linear`` remembers that it was written in the seed's linear form, so that
    it is exported the way it was written.
    """

    name: str
    steps: tuple[Step, ...]
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    description: str = ""
    linear: bool = False
    id: str | None = None
    version: int = 1

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.service for step in self.steps))


def linear_steps(services: list[str]) -> tuple[Step, ...]:
    """Expand the linear form: one step per service, each after the one before.

    A service named twice gets a numbered id the second time (``upper-2``).
    """
    steps: list[Step] = []
    seen: dict[str, int] = {}
    for name in services:
        seen[name] = seen.get(name, 0) + 1
        step_id = name if seen[name] == 1 else f"{name}-{seen[name]}"
        after = (steps[-1].id,) if steps else ()
        steps.append(Step(id=step_id, service=name, after=after))
    return tuple(steps)
