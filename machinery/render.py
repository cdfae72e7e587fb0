"""Pictures of workflows and events, drawn with Graphviz.

:func:`workflow_graph` draws a workflow's steps, their typed contracts and the
data that flows between them; :func:`event_graph` draws the same graph painted
with how far an event has gone; :func:`render` writes either as SVG, PNG or DOT
source. Only SVG and PNG need Graphviz's ``dot`` binary. They draw the
definitions and events they are given: looking them up is the caller's job.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import graphviz

from machinery.engine.errors import GraphvizMissing, InvalidDefinition
from machinery.engine.graph import Graph, build
from machinery.engine.kinds import KINDS
from machinery.engine.model import (
    DELAY,
    FAIL,
    FLEET,
    MAP,
    SERVICE,
    SUCCEED,
    SWITCH,
    TRANSFORM,
    WAIT,
    WORKFLOW,
    CommandTarget,
    Executable,
    Field,
    Ref,
    Service,
    Step,
    Workflow,
)
from machinery.engine.state import Event, StepState, StepStatus

FORMATS: Mapping[str, str] = {"svg": "image/svg+xml", "png": "image/png", "dot": "text/vnd.graphviz"}
"""The formats :func:`render` writes, and their media types."""


@dataclass(frozen=True)
class Look:
    """How a node is painted: its fill and line colours, and whether its line is dashed."""

    fill: str
    line: str
    dashed: bool = False


STATE_LOOKS: Mapping[StepStatus, Look] = {
    StepStatus.PENDING: Look("#ffffff", "#adb5bd"),
    StepStatus.READY: Look("#ffffff", "#495057"),
    StepStatus.RUNNING: Look("#d0ebff", "#1c7ed6"),
    StepStatus.RETRYING: Look("#ffe8cc", "#e8590c"),
    StepStatus.WAITING: Look("#e5dbff", "#7048e8"),
    StepStatus.COMPLETED: Look("#d3f9d8", "#2f9e44"),
    StepStatus.SKIPPED: Look("#f1f3f5", "#adb5bd", dashed=True),
    StepStatus.FAILED: Look("#ffe3e3", "#e03131"),
    StepStatus.CANCELLED: Look("#e9ecef", "#868e96"),
}
"""The look of a step in an event graph, by its status."""

DEFINITION = Look("#f8f9fa", "#343a40")
"""The look of a step in a workflow graph, and of the workflow's inputs and outputs in every graph."""

SHAPES: Mapping[str, str] = {
    SERVICE: "box",
    MAP: "box3d",
    WORKFLOW: "box",
    FLEET: "component",
    TRANSFORM: "parallelogram",
    SWITCH: "diamond",
    DELAY: "hexagon",
    WAIT: "octagon",
    SUCCEED: "doublecircle",
    FAIL: "doubleoctagon",
}
"""The node shape of each kind of step."""

PERIPHERIES: Mapping[str, int] = {WORKFLOW: 2}
"""Kinds of step drawn with more than one line around them: a child workflow's box is doubled."""

# A step id has no space in it, so these node names never clash with a step's.
INPUTS = "workflow inputs"
OUTPUTS = "workflow outputs"

_FONT = "Helvetica"
_MUTED = "#6c757d"
_LONGEST_LINE = 48
"""Characters in a line of free text (an expression, an error) before it is cut short."""


def workflow_graph(workflow: Workflow, services: Mapping[str, Service]) -> graphviz.Digraph:
    """The steps of ``workflow`` with the typed contracts of their ``services``, and what flows between them.

    ``services`` are those the steps call, by name; a step's service left out is drawn as not registered.
    """
    return _draw(workflow, services, f"{workflow.name} v{workflow.version}", None)


def event_graph(
    workflow: Workflow,
    services: Mapping[str, Service],
    event: Event,
    counts: Mapping[str, Mapping[str, int]] | None = None,
) -> graphviz.Digraph:
    """The graph of ``workflow``, which ``event`` runs, each step painted with its state; ``counts`` gives each map
    step's items by status."""
    title = f"{workflow.name} v{workflow.version}, event {event.id}: {event.status}"
    return _draw(workflow, services, title, event.steps, counts or {})


def rules_graph(executable: Executable) -> graphviz.Digraph:
    """An executable's rules: a node per parameter, an arrow from each to each flag it requires, and a dashed red
    line between flags that conflict."""
    dot = graphviz.Digraph(
        executable.name,
        graph_attr={"rankdir": "LR", "label": f"{executable.name} {executable.version}".strip(), "labelloc": "t"},
        node_attr={"fontname": _FONT, "fontsize": "11", "shape": "box", "style": "rounded"},
        edge_attr={"fontname": _FONT, "fontsize": "9", "color": _MUTED, "fontcolor": _MUTED},
    )
    for p in executable.parameters:
        value = f" <{p.value}>" if p.value else ""
        dot.node(p.flag, f"{p.flag}{value}", _attributes={"id": f"flag-{p.flag}"})
    conflicts = set()
    for p in executable.parameters:
        for required in p.requires:
            dot.edge(p.flag, required, label="requires", _attributes={"class": "requires"})
        for other in p.conflicts:
            pair = tuple(sorted((p.flag, other)))
            if pair not in conflicts:
                conflicts.add(pair)
                attributes = {"class": "conflicts", "dir": "none", "style": "dashed", "color": "#c0392b"}
                dot.edge(p.flag, other, label="conflicts", constraint="false", _attributes=attributes)
    return dot


def render(graph: graphviz.Digraph, fmt: str) -> bytes:
    """``graph`` in ``fmt``, one of :data:`FORMATS`; GraphvizMissing when an image needs the absent binary."""
    if fmt == "dot":
        return graph.source.encode()
    try:
        return graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound as e:
        raise GraphvizMissing(
            f"the Graphviz binary 'dot' is missing, so no {fmt} image can be drawn: install Graphviz "
            "(apt-get install graphviz), or ask for the 'dot' format, which needs no binary"
        ) from e


def _draw(
    workflow: Workflow,
    services: Mapping[str, Service],
    title: str,
    states: Mapping[str, StepState] | None,
    counts: Mapping[str, Mapping[str, int]] | None = None,
) -> graphviz.Digraph:
    """The graph; ``states`` paints each step with its state, None draws the bare definition."""
    structure, problems = build(workflow)
    if structure is None:
        raise InvalidDefinition(f"workflow '{workflow.name}' cannot be drawn: {problems[0].message}")
    dot = graphviz.Digraph(
        workflow.name,
        graph_attr={"rankdir": "LR", "label": title, "labelloc": "t", "fontname": _FONT, "pad": "0.2"},
        node_attr={"fontname": _FONT, "fontsize": "11", "margin": "0.1"},
        edge_attr={"fontname": _FONT, "fontsize": "10", "fontcolor": _MUTED, "color": _MUTED},
    )
    _add_end(dot, INPUTS, "inputs", "the event's data", workflow.inputs)
    for step in structure.order:
        state = None if states is None else states.get(step.id, StepState())
        _add_step(dot, step, services, state, (counts or {}).get(step.id))
    _add_end(dot, OUTPUTS, "outputs", "once every step is over", workflow.outputs)
    dependencies = _dependencies(structure)
    for (tail, head), labels in _flows(workflow, structure, services, dependencies).items():
        dot.edge(tail, head, label="\n".join(labels), style="solid" if (tail, head) in dependencies else "dashed")
    return dot


def _add_end(dot: graphviz.Digraph, name: str, title: str, subtitle: str, fields: Iterable[Field]) -> None:
    """The workflow's inputs or outputs: a node listing its typed fields."""
    label = _table(_heading(title, subtitle) + _fields("", fields))
    dot.node(name, label, _attributes=_paint(DEFINITION, "box") | {"id": name.replace(" ", "-")})


def _add_step(
    dot: graphviz.Digraph,
    step: Step,
    services: Mapping[str, Service],
    state: StepState | None,
    counts: Mapping[str, int] | None,
) -> None:
    rows = _heading(step.id, _subtitle(step, services)) + [_row(_shorten(d), 10) for d in _details(step)]
    rows += _contract(step, services)
    if state is None:
        look, css = DEFINITION, "step"
    else:
        look, css = STATE_LOOKS[state.status], f"step {state.status}"
        rows += _progress(state, counts)
    attributes = _paint(look, SHAPES[step.kind]) | {"id": f"step-{step.id}", "class": css}
    if step.kind in PERIPHERIES:
        attributes["peripheries"] = str(PERIPHERIES[step.kind])
    dot.node(step.id, _table(rows), _attributes=attributes)


def _paint(look: Look, shape: str) -> dict[str, str]:
    style = ["filled", "rounded"] + (["dashed"] if look.dashed else [])
    return {"shape": shape, "style": ",".join(style), "fillcolor": look.fill, "color": look.line}


# Labels: Graphviz's HTML-like tables, one row per line.


def _table(rows: list[str]) -> str:
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">{"".join(rows)}</TABLE>>'


def _row(text: str, size: int, color: str = _MUTED, bold: bool = False) -> str:
    content = f"<B>{html.escape(text)}</B>" if bold else html.escape(text)
    return f'<TR><TD><FONT POINT-SIZE="{size}" COLOR="{color}">{content}</FONT></TD></TR>'


def _heading(title: str, subtitle: str) -> list[str]:
    return [_row(title, 12, "black", bold=True), _row(subtitle, 10)]


def _subtitle(step: Step, services: Mapping[str, Service]) -> str:
    """The step's kind unless it is a plain service call, then the service it calls, if any."""
    parts = [] if step.kind == SERVICE else [step.kind]
    if step.service is not None:
        parts.append(step.service if step.service in services else f"{step.service} (not registered)")
        target = services[step.service].endpoint if step.service in services else None
        if isinstance(target, CommandTarget):
            parts.append(f"$ {target.executable}")
    if step.workflow is not None:
        child = step.workflow + (f" v{step.version}" if step.version is not None else "")
        parts.append(child if _service_of(step, services) is not None else f"{child} (not registered)")
    if step.fleet is not None:
        task = f"{step.fleet}/{step.task}"
        parts.append(task if _service_of(step, services) is not None else f"{task} (not registered)")
    return " · ".join(parts)


def _details(step: Step) -> list[str]:
    """What a control step does, in a line or two."""
    if step.kind == SWITCH:
        return [f"on {step.expression}"]
    if step.kind == DELAY:
        return [f"until {step.until}" if step.until is not None else f"for {step.seconds:g} s"]
    if step.kind == WAIT:
        return [f"for signal '{step.signal}'"] + ([f"at most {step.timeout:g} s"] if step.timeout is not None else [])
    if step.kind == TRANSFORM:
        return [f"{name} = {source}" for name, source in step.compute.items()]
    if step.kind in (FAIL, SUCCEED) and step.message:
        return [step.message]
    if step.kind == FLEET:
        labels = (
            step.selector if isinstance(step.selector, Ref) else ", ".join(f"{k}={v}" for k, v in step.selector.items())
        )
        return [f"on the workloads {labels}" if labels else "on every workload", f"{step.concurrency} at once"]
    return []


def _fields(direction: str, fields: Iterable[Field], notes: Mapping[str, str] | None = None) -> list[str]:
    """One row per field, ``name: type`` and its note; an optional field's name ends with '?'."""
    prefix = f'<FONT COLOR="{_MUTED}">{direction}</FONT>' if direction else ""
    notes = notes or {}
    rows = []
    for f in fields:
        typed = f"{f.name}{'' if f.required else '?'}: {f.type}{notes.get(f.name, '')}"
        rows.append(
            f'<TR><TD ALIGN="LEFT"><FONT FACE="Courier" POINT-SIZE="10">{prefix}{html.escape(typed)}</FONT></TD></TR>'
        )
    return rows


def _contract(step: Step, services: Mapping[str, Service]) -> list[str]:
    """The inputs the step reads, with where each comes from when the step says, and the outputs it
    writes, with the names they take in the context."""
    service = _service_of(step, services)
    inputs = service.inputs if service is not None else ()
    outputs = KINDS[step.kind].writes(step, services)
    if not inputs and not outputs:
        return []
    sources = {name: f" ← {ref}" for name, ref in step.input.items()}
    if step.kind == MAP and step.item is not None:
        sources[step.item] = f" ← each of {_items(step)}"
    renames = {name: f" → {to}" for name, to in step.output.items()}
    return ["<HR/>", *_fields("in  ", inputs, sources), *_fields("out ", outputs, renames)]


def _progress(state: StepState, counts: Mapping[str, int] | None) -> list[str]:
    """The status, attempts and duration of a step's latest attempt, and its error if any."""
    parts = [str(state.status)]
    if state.fanout is not None:
        done = state.fanout if state.status is StepStatus.COMPLETED else (counts or {}).get(StepStatus.COMPLETED, 0)
        parts.append(f"{done}/{state.fanout} items")
    if state.attempts:
        parts.append(f"{state.attempts} attempt{'' if state.attempts == 1 else 's'}")
    if state.started_at is not None and state.ended_at is not None:
        parts.append(_duration(state.ended_at - state.started_at))
    rows = ["<HR/>", _row(" · ".join(parts), 10, "black", bold=True)]
    if state.error:
        rows.append(_row(_shorten(str(state.error.get("message", ""))), 9, STATE_LOOKS[StepStatus.FAILED].line))
    return rows


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def _shorten(text: str) -> str:
    return text if len(text) <= _LONGEST_LINE else text[: _LONGEST_LINE - 1] + "…"


# Edges: the dependencies, and the data that flows along them or past them.


def _dependencies(structure: Graph) -> dict[tuple[str, str], list[str]]:
    """The edges of the graph itself, each labelled with the route it is on if its step chooses one:
    from each step to those depending on it, from the inputs to the steps depending on none, and to
    the outputs from those none depends on, but a ``fail`` step, which ends the event in failure."""
    edges: dict[tuple[str, str], list[str]] = {}
    for step in structure.order:
        if not structure.deps[step.id]:
            edges[(INPUTS, step.id)] = []
        for target in structure.dependents[step.id]:
            edges[(step.id, target)] = [f"[{route}]" for route, on in step.routes.items() if target in on]
        if not structure.dependents[step.id] and step.kind != FAIL:
            edges[(step.id, OUTPUTS)] = []
    return edges


def _flows(
    workflow: Workflow,
    structure: Graph,
    services: Mapping[str, Service],
    dependencies: Mapping[tuple[str, str], list[str]],
) -> dict[tuple[str, str], list[str]]:
    """Every edge, labelled with its route and the fields that flow along it: the dependencies, and
    the edges data takes past them."""
    flows = {edge: list(labels) for edge, labels in dependencies.items()}
    data = _DataFlow(structure, services, frozenset(f.name for f in workflow.inputs))
    for step in structure.order:
        for name, ref in _reads(step, services):
            path = ".".join(ref.path)
            for source in data.sources(ref, step.id):
                flows.setdefault((source, step.id), []).append(path if path == name else f"{path} → {name}")
    every_step = frozenset(step.id for step in structure.order)
    for f in workflow.outputs:
        for source in data.writers(f.name, every_step):
            flows.setdefault((source, OUTPUTS), []).append(f.name)
    return flows


@dataclass(frozen=True)
class _DataFlow:
    """Where the values steps read come from, as the decider builds their context."""

    structure: Graph
    services: Mapping[str, Service]
    inputs: frozenset[str]

    def sources(self, ref: Ref, step_id: str) -> list[str]:
        """The nodes a value that step ``step_id`` reads may come from; none for a constant."""
        if ref.source == "const":
            return []
        if ref.source == "step":
            return [ref.step] if ref.step else []
        if ref.source == "input":
            return [INPUTS]
        return self.writers(ref.path[0], self.structure.upstream[step_id])

    def writers(self, name: str, upstream: frozenset[str]) -> list[str]:
        """The ``upstream`` steps that may have put ``name`` last in the context: those writing it that no
        other step writing it follows; and the event's data if it holds ``name`` and they may all be skipped."""
        writing = [s.id for s in self.structure.order if s.id in upstream and name in self._names_written(s)]
        last = [w for w in writing if not any(w in self.structure.upstream[other] for other in writing)]
        if name in self.inputs and all(w in self.structure.skippable for w in last):
            last.append(INPUTS)
        return last

    def _names_written(self, step: Step) -> set[str]:
        return {step.context_name(f.name) for f in KINDS[step.kind].writes(step, self.services)}


def _reads(step: Step, services: Mapping[str, Service]) -> list[tuple[str, Ref]]:
    """What the step reads that the graph can show: each service input and where it comes from, or a
    delay's time."""
    if step.kind == DELAY and step.until is not None:
        return [("until", step.until)]
    service = _service_of(step, services)
    if service is None:
        return []
    return [(f.name, _items(step) if f.name == step.item else step.input_ref(f.name)) for f in service.inputs]


def _service_of(step: Step, services: Mapping[str, Service]) -> Service | None:
    """The registered service that a step calls, or the contract of the workflow it runs, if it does either."""
    kind = KINDS[step.kind]
    return services.get(kind.callee(step) or "") if kind.calls_service else None


def _items(step: Step) -> Ref:
    """Where a map step finds its items."""
    return step.items or Ref("context", ("items",))
