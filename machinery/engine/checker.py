"""The static check: does a workflow's graph hold together, and do its types fit?

It runs when a workflow is registered and when a service it uses changes, and
reports every problem at once, each naming the step, the field, what was
expected and what was found. Every choice of routes is considered: a value
counts as present at a step only if, on every choice under which the step
runs, a step before it has produced it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from machinery.engine.errors import Problem
from machinery.engine.expressions import Expressions
from machinery.engine.graph import Graph, Run, build
from machinery.engine.kinds import KINDS
from machinery.engine.model import Field, Service, Workflow
from machinery.engine.scope import Definitions, Scope, Source, check_workflow_outputs
from machinery.engine.types import SEARCHABLE, conforms, type_of


def check_fields(fields: Iterable[Field], what: str) -> list[Problem]:
    """Names are unique, every default fits its field's type, and only a workflow's scalar inputs are searchable."""
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
        if f.searchable and what != "workflow input":
            problems.append(
                Problem(f"{what} '{f.name}' cannot be searchable: only a workflow's inputs are", field=f.name)
            )
        elif f.searchable and f.type.name not in SEARCHABLE:
            problems.append(
                Problem(
                    f"workflow input '{f.name}' cannot be searchable: it should be {' or '.join(SEARCHABLE)}, "
                    f"not {f.type}",
                    field=f.name,
                    expected=" or ".join(SEARCHABLE),
                    found=str(f.type),
                )
            )
    return problems


def check_service(service: Service) -> list[Problem]:
    return check_fields(service.inputs, "input") + check_fields(service.outputs, "output")


def check_workflow(workflow: Workflow, services: Mapping[str, Service], expressions: Expressions) -> list[Problem]:
    """Every problem of ``workflow`` given the registered ``services``; empty when it is sound.

    ``services`` holds too the contract of each workflow its ``workflow`` steps run, under its
    :func:`~machinery.engine.kinds.workflow.contract_key`.
    """
    problems = check_fields(workflow.inputs, "workflow input") + check_fields(workflow.outputs, "workflow output")
    if not workflow.steps:
        problems.append(Problem("a workflow needs at least one step"))
    for step in workflow.steps:
        problems += [
            Problem(f"step '{step.id}' output '{f.name}' cannot be searchable: only a workflow's inputs are",
                    step=step.id, field=f.name)
            for f in step.outputs
            if f.searchable
        ]  # fmt: skip
        if step.kind not in KINDS:
            known = ", ".join(KINDS)
            problems.append(
                Problem(
                    f"step '{step.id}' is of no known kind: '{step.kind}' (known: {known})",
                    step=step.id,
                    field="kind",
                    found=step.kind,
                )
            )
        elif KINDS[step.kind].calls_service and KINDS[step.kind].callee(step) not in services:
            kind = KINDS[step.kind]
            problems.append(
                Problem(
                    f"step '{step.id}' calls {kind.callee_label(step)}, which is not registered",
                    step=step.id,
                    field=kind.callee_field(step),
                    found=getattr(step, kind.callee_field(step)),
                )
            )
    graph, structure = build(workflow)
    problems += structure
    if graph is None or any(step.kind not in KINDS for step in workflow.steps):
        return problems
    for step_id in sorted(graph.unreachable, key=[s.id for s in graph.order].index):
        problems.append(Problem(f"step '{step_id}' can never run: no choice of routes leads to it", step=step_id))
    inputs = {f.name: Source(f.type, f"workflow input '{f.name}'") for f in workflow.inputs}
    present = {f.name for f in workflow.inputs if f.always_present}
    outputs = {s.id: {f.name: f for f in KINDS[s.kind].writes(s, services)} for s in graph.order}
    definitions = Definitions(workflow, services, expressions)
    for step in graph.order:
        if step.id in graph.unreachable:
            continue
        scope = _scope(graph, graph.runs_with(step.id), graph.upstream[step.id], inputs, present, outputs)
        problems += KINDS[step.kind].check(step, scope, definitions)
    problems += _parallel_writes(graph, outputs)
    end = _scope(graph, graph.runs_with(None), frozenset(graph.steps), inputs, present, outputs)
    problems += check_workflow_outputs(workflow, end, "")
    return problems


def _scope(
    graph: Graph,
    runs: list[Run],
    upstream: frozenset[str],
    inputs: Mapping[str, Source],
    present: set[str],
    outputs: Mapping[str, Mapping[str, Field]],
) -> Scope:
    """What a step reads, given the ``runs`` in which it runs and the steps ``upstream`` of it.

    In each run, a name holds what its last writer wrote; an earlier writer
    (or the event's data) shows through only where later ones may leave it out.
    """
    writers: dict[str, list[tuple[str, Field]]] = {}
    for prior in graph.order:
        if prior.id in upstream:
            for f in outputs[prior.id].values():
                writers.setdefault(prior.context_name(f.name), []).append((prior.id, f))
    sources: dict[str, list[Source]] = {}
    always: dict[str, bool] = {}
    for name in set(inputs) | set(writers):
        found: dict[str, Source] = {}
        certain = bool(runs)
        # When no run reaches the step, every writer may have written the name, and none surely did.
        candidates: list[Run | None] = list(runs) or [None]
        for run in candidates:
            shown, covered = _final_writers(writers.get(name, []), run)
            for step_id, f in shown:
                found.setdefault(step_id, Source(f.type, f"output '{f.name}' of step '{step_id}'", step_id))
            if not covered and name in inputs:
                found.setdefault("", inputs[name])
            certain = certain and run is not None and (covered or name in present)
        sources[name] = list(found.values())
        always[name] = certain
    produced = [frozenset(s for s in upstream if run.produced(s)) for run in runs]
    certain_steps = frozenset.intersection(*produced) if produced else frozenset()
    return Scope(sources, always, inputs, frozenset(present), outputs, upstream, certain_steps)


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


Node = tuple[str, int | None]
"""A workflow as a step runs it: its name, and the version pinned (None: its current one)."""


def check_nesting(workflow: Workflow, registered: Mapping[Node, Workflow], max_depth: int) -> list[Problem]:
    """Workflows running each other in a cycle (a workflow running itself included), and child workflows
    nested deeper than ``max_depth``, counting the callers of ``workflow`` above it and its children below.

    ``registered`` holds every registered workflow by name (and None), and the versions pinned by their
    steps; ``workflow`` takes the place of its current version.
    """
    known = {**registered, (workflow.name, None): workflow}
    start: Node = (workflow.name, None)
    below: dict[Node, list[Node]] = {}
    cycle = _deepest_below(start, known, below, [])
    if cycle is not None:
        ring = " → ".join(_label(node) for node in cycle)
        return [Problem(f"workflows may not run each other in a cycle: {ring}", field="steps")]
    callers: dict[Node, list[Node]] = {}
    for node, definition in known.items():
        for child in definition.children:
            callers.setdefault(child, []).append(node)
    chain = _deepest_above(start, callers, {}) + below[start][1:]
    depth = len(chain) - 1
    if depth <= max_depth:
        return []
    path = " → ".join(_label(node) for node in chain)
    return [
        Problem(
            f"child workflows would nest {depth} deep ({path}), more than the {max_depth} allowed "
            "(MACHINERY_MAX_WORKFLOW_DEPTH)",
            field="steps",
        )
    ]


def _deepest_below(
    node: Node, known: Mapping[Node, Workflow], memo: dict[Node, list[Node]], path: list[Node]
) -> list[Node] | None:
    """Fill ``memo`` with the longest chain of children from ``node`` down; a cycle met on the way instead."""
    if node in path:
        return [*path[path.index(node) :], node]
    if node in memo:
        return None
    deepest: list[Node] = []
    definition = known.get(node)
    for child in definition.children if definition is not None else ():
        cycle = _deepest_below(child, known, memo, [*path, node])
        if cycle is not None:
            return cycle
        if len(memo[child]) > len(deepest):
            deepest = memo[child]
    memo[node] = [node, *deepest]
    return None


def _deepest_above(node: Node, callers: Mapping[Node, list[Node]], memo: dict[Node, list[Node]]) -> list[Node]:
    """The longest chain of callers down to ``node``, ``node`` last."""
    if node not in memo:
        memo[node] = [node]  # a guard: the graph is acyclic once the cycles are refused
        chains = [_deepest_above(caller, callers, memo) for caller in callers.get(node, ())]
        memo[node] = [*max(chains, key=len, default=[]), node]
    return memo[node]


def _label(node: Node) -> str:
    return node[0] if node[1] is None else f"{node[0]}@{node[1]}"
