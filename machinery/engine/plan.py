"""A workflow compiled for running, and the timing the decider needs.

A :class:`Plan` is made once per workflow version and shared by every event of
it: its graph, its compiled expressions, and the kind of each of its steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from machinery.engine.errors import InvalidDefinition
from machinery.engine.expressions import Expression, Expressions
from machinery.engine.graph import Graph, build
from machinery.engine.kinds import KINDS, StepKind
from machinery.engine.model import Step, Workflow


@dataclass(frozen=True)
class Settings:
    """Timing and limits the decider needs; the composition root sets it from the configuration."""

    lease_grace: float = 5.0
    """Seconds a claim outlives its service's timeout before its worker is presumed lost."""
    stale_after: float = 30.0
    """Seconds a ready step may wait for a worker before the sweeper sends it again."""
    max_lost: int = 3
    """Lost claims a step survives; one more fails it instead of looping for ever."""
    max_map_items: int = 1_000_000
    """Items a map step may have; one with more fails."""
    max_map_results: int = 10 * 2**20
    """Bytes of answers a map step keeps in its ``results``; past them, only its items keep them."""
    max_workflow_depth: int = 10
    """How deep child workflows may nest: a top-level event's children are 1 deep, theirs 2, and so on."""


@dataclass(frozen=True)
class Plan:
    """A workflow compiled for running: its graph, its expressions and the kind of each step."""

    workflow: Workflow
    graph: Graph
    expressions: Mapping[tuple[str, str], Expression]
    """By (step id, field): a switch's ``expression``, each ``compute`` of a transform."""
    kinds: Mapping[str, StepKind]
    """The handler of each step, by step id."""
    writers: frozenset[str]
    """The steps whose outputs go into the context."""

    @classmethod
    def of(cls, workflow: Workflow, expressions: Expressions) -> Plan:
        """Compile ``workflow``, which must have passed the static check; InvalidDefinition if its graph does not
        hold together."""
        graph, problems = build(workflow)
        if graph is None:
            raise InvalidDefinition(problems[0].message, problems)
        compiled = {}
        for step in workflow.steps:
            if step.expression is not None:
                compiled[(step.id, "expression")] = expressions.compile(step.expression)
            for name, source in step.compute.items():
                compiled[(step.id, name)] = expressions.compile(source)
        kinds = {step.id: KINDS[step.kind] for step in workflow.steps}
        writers = frozenset(step.id for step in workflow.steps if kinds[step.id].writes_context)
        return cls(workflow, graph, compiled, kinds, writers)

    @property
    def order(self) -> tuple[Step, ...]:
        return self.graph.order
