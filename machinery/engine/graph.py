"""The structure of a workflow graph: who runs after whom, on which route, and what is certain.

A step depends on the steps in its ``after`` and on every ``switch`` or
``wait`` step that names it on a route. Once every dependency is over, it is
skipped if a routing dependency took a route without it, or if all its
dependencies were skipped; otherwise it runs. So a join after branches waits
only for what can still run, and runs after whichever branch did.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from machinery.engine.errors import Problem
from machinery.engine.model import FAIL, SUCCEED, SWITCH, Step, Workflow

MAX_SCENARIOS = 4096
SIGNAL_ROUTE = "signal"
TIMEOUT_ROUTE = "timeout"


@dataclass(frozen=True)
class Graph:
    """A workflow's steps as a graph, worked out once when it is planned: order, dependencies, routes, and what
    runs together on each choice of routes."""

    steps: Mapping[str, Step]
    order: tuple[Step, ...]
    """Every step after those it depends on; ties keep the definition's order."""
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    dependent_positions: Mapping[str, tuple[int, ...]]
    """Where each step's dependents are in ``order``, in ascending order."""
    routes: Mapping[str, Mapping[str, frozenset[str]]]
    """For each routing step, its routes and the steps on each."""
    upstream: Mapping[str, frozenset[str]]
    """Every step some path leads from to the step."""
    skippable: frozenset[str]
    """Steps that are skipped on some choice of routes."""
    unreachable: frozenset[str]
    """Steps that run on no choice of routes."""
    runs: tuple[Run, ...]
    """For each choice of routes, what runs."""

    def runs_with(self, step: str | None) -> list[Run]:
        """The runs in which ``step`` runs; for None, those that complete the event (no ``fail`` step runs)."""
        if step is None:
            return [r for r in self.runs if not any(self.steps[s].kind == FAIL for s in r.steps)]
        return [r for r in self.runs if step in r.steps]

    def together(self, a: str, b: str) -> bool:
        """Whether some choice of routes runs both steps."""
        return any(a in run.steps and b in run.steps for run in self.runs)

    def runs_after(self, step: str, completed: Mapping[str, str | None]) -> bool:
        """Whether ``step`` runs once its dependencies are over.

        ``completed`` maps each completed step to the route it took; a dependency
        over but absent from it was skipped.
        """
        return _runs_after(step, self.deps[step], self.routes, completed)


@dataclass(frozen=True)
class Run:
    """What runs for one choice of routes: the steps, and the route each routing step takes."""

    steps: frozenset[str]
    routes: Mapping[str, str]

    def produced(self, step: str) -> bool:
        """Whether ``step`` ran and produced its outputs (a wait that timed out produced none)."""
        return step in self.steps and self.routes.get(step) != TIMEOUT_ROUTE


def build(workflow: Workflow) -> tuple[Graph | None, list[Problem]]:
    """The graph of ``workflow``, or None and every structural problem found."""
    problems: list[Problem] = []
    steps: dict[str, Step] = {}
    for step in workflow.steps:
        if step.id in steps:
            problems.append(Problem(f"step id '{step.id}' is used twice", step=step.id))
        steps[step.id] = step
    deps: dict[str, list[str]] = {s.id: [] for s in workflow.steps}
    for step in workflow.steps:
        for dep in step.after:
            problems += _edge(steps, dep, step.id, f"step '{step.id}' runs after '{dep}'")
            if dep in steps and dep not in deps[step.id]:
                deps[step.id].append(dep)
        for route, targets in step.routes.items():
            for target in targets:
                problems += _edge(steps, step.id, target, f"route '{route}' of step '{step.id}' leads to '{target}'")
                if target in steps and step.id not in deps[target] and target != step.id:
                    deps[target].append(step.id)
    if problems:
        return None, problems
    dependents: dict[str, list[str]] = {s: [] for s in steps}
    for step_id, step_deps in deps.items():
        for dep in step_deps:
            dependents[dep].append(step_id)
    order, problems = _order(workflow.steps, deps)
    if problems:
        return None, problems
    routes = {s.id: _routes(s, dependents[s.id]) for s in workflow.steps if s.routes}
    problems += _route_problems(steps, dependents, routes)
    upstream: dict[str, frozenset[str]] = {}
    for step in order:
        upstream[step.id] = frozenset().union(*(upstream[d] | {d} for d in deps[step.id]))
    runs = _runs(order, deps, routes)
    if runs is None:
        return None, problems + [
            Problem(f"the routes of this workflow combine in more than {MAX_SCENARIOS} ways; split it in two")
        ]
    every = frozenset(steps)
    position = {step.id: i for i, step in enumerate(order)}
    graph = Graph(
        steps=steps,
        order=tuple(order),
        deps={k: tuple(v) for k, v in deps.items()},
        dependents={k: tuple(v) for k, v in dependents.items()},
        dependent_positions={k: tuple(sorted(position[d] for d in v)) for k, v in dependents.items()},
        routes=routes,
        upstream=upstream,
        skippable=every - frozenset.intersection(*(r.steps for r in runs)),
        unreachable=every - frozenset().union(*(r.steps for r in runs)),
        runs=tuple(runs),
    )
    return graph, problems


def _runs(
    order: list[Step], deps: Mapping[str, list[str]], routes: Mapping[str, Mapping[str, frozenset[str]]]
) -> list[Run] | None:
    """For each choice of a route at every routing step, what runs; None if there are too many choices."""
    routing = [s.id for s in order if s.id in routes]
    if math.prod(len(routes[r]) for r in routing) > MAX_SCENARIOS:
        return None
    runs = []
    for choice in itertools.product(*(sorted(routes[r]) for r in routing)):
        chosen = dict(zip(routing, choice, strict=True))
        ran: dict[str, str | None] = {}
        for step in order:
            if _runs_after(step.id, deps[step.id], routes, ran):
                ran[step.id] = chosen.get(step.id)
        runs.append(Run(frozenset(ran), {k: v for k, v in ran.items() if v is not None}))
    return runs


def _runs_after(
    step: str,
    deps: Sequence[str],
    routes: Mapping[str, Mapping[str, frozenset[str]]],
    completed: Mapping[str, str | None],
) -> bool:
    """The rule of the module's docstring, for the planner and the decider alike."""
    if not deps:
        return True
    ran = False
    for dep in deps:
        if dep in completed:
            if dep in routes and step not in routes[dep].get(completed[dep] or "", ()):
                return False
            ran = True
    return ran


def _edge(steps: Mapping[str, Step], source: str, target: str, what: str) -> list[Problem]:
    if source == target:
        return [Problem(f"{what}: a step cannot run after itself", step=target)]
    missing = source if source not in steps else target if target not in steps else None
    if missing is not None:
        return [Problem(f"{what}, but there is no step '{missing}'", step=target if missing == source else source)]
    ender = steps[source]
    if ender.kind in (FAIL, SUCCEED):
        return [Problem(f"{what}, but '{source}' ends the event, so '{target}' can never run", step=target)]
    return []


def _order(steps: tuple[Step, ...], deps: Mapping[str, list[str]]) -> tuple[list[Step], list[Problem]]:
    order: list[Step] = []
    done: set[str] = set()
    remaining = list(steps)
    while remaining:
        ready = [s for s in remaining if all(d in done for d in deps[s.id])]
        if not ready:
            cycle = ", ".join(f"'{s.id}'" for s in _on_cycles(remaining, deps))
            return [], [Problem(f"steps {cycle} depend on each other in a cycle")]
        order += ready
        done |= {s.id for s in ready}
        remaining = [s for s in remaining if s.id not in done]
    return order, []


def _on_cycles(steps: list[Step], deps: Mapping[str, list[str]]) -> list[Step]:
    """Of steps that cannot be ordered, those on a cycle: the others merely run after one."""
    while True:
        needed = {dep for s in steps for dep in deps[s.id]}
        kept = [s for s in steps if s.id in needed]
        if len(kept) == len(steps):
            return steps
        steps = kept


def _routes(step: Step, dependents: list[str]) -> dict[str, frozenset[str]]:
    if step.kind == SWITCH:
        return {route: frozenset(targets) for route, targets in step.routes.items()}
    timeout = frozenset(step.on_timeout)
    return {SIGNAL_ROUTE: frozenset(d for d in dependents if d not in timeout), TIMEOUT_ROUTE: timeout}


def _route_problems(
    steps: Mapping[str, Step], dependents: Mapping[str, list[str]], routes: Mapping[str, Mapping[str, frozenset[str]]]
) -> list[Problem]:
    problems = []
    for step_id, step_routes in routes.items():
        if steps[step_id].kind != SWITCH:
            continue
        on_a_route = frozenset().union(*step_routes.values())
        for dependent in dependents[step_id]:
            if dependent not in on_a_route:
                problems.append(
                    Problem(
                        f"step '{dependent}' runs after switch '{step_id}' but is on none of its routes; "
                        "name it in a case or in 'default'",
                        step=dependent,
                    )
                )
    return problems
