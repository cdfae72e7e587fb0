"""Workflow and event graphs: what they draw, how they paint each state, and the endpoints serving them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import graphviz
import pytest
from flask.testing import FlaskClient

from examples.services import DEFINITIONS
from machinery.api import create_app, dashboard
from machinery.bootstrap import Config, Machinery
from machinery.engine.errors import GraphvizMissing
from machinery.engine.fleets import Fleet, FleetTask
from machinery.engine.kinds import KINDS
from machinery.engine.kinds import fleet as fleet_kind
from machinery.engine.kinds.workflow import contract, contract_key
from machinery.engine.model import FLEET, WORKFLOW, Field, Service, Workflow
from machinery.engine.state import Event, EventStatus, StepState, StepStatus
from machinery.engine.types import FieldType
from machinery.render import (
    DEFINITION,
    FORMATS,
    SHAPES,
    STATE_LOOKS,
    event_graph,
    render,
    workflow_graph,
)
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.api import error

SVG = "{http://www.w3.org/2000/svg}"
STEPS = ("upper", "reverse", "space-counter")

MODERATE = {
    "name": "moderate",
    "inputs": [{"name": "message", "type": "string"}, {"name": "texts", "type": "array", "items": "string"}],
    "outputs": [{"name": "verdict", "type": "string"}],
    "steps": [
        {"id": "shout", "service": "upper"},
        {
            "id": "each",
            "kind": "map",
            "service": "upper",
            "items": "$.input.texts",
            "item": "message",
            "after": ["shout"],
        },
        {
            "id": "route",
            "kind": "switch",
            "expression": "size(context.message) > 20",
            "cases": {"true": ["review"]},
            "default": ["reject"],
            "after": ["each"],
        },
        {
            "id": "review",
            "kind": "wait",
            "signal": "reviewed",
            "timeout": 60,
            "on_timeout": ["reject"],
            "outputs": [{"name": "approved", "type": "bool"}],
        },
        {"id": "pause", "kind": "delay", "seconds": 2, "after": ["review"]},
        {
            "id": "verdict",
            "kind": "transform",
            "compute": {"verdict": "context.approved ? 'yes' : 'no'"},
            "outputs": [{"name": "verdict", "type": "string"}],
            "after": ["pause"],
        },
        {"id": "done", "kind": "succeed", "after": ["verdict"]},
        {"id": "reject", "kind": "fail", "message": "too short"},
    ],
}
"""A workflow with a step of every kind."""


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture
def services() -> dict[str, Service]:
    return {name: ServiceSchema().load(read(DEFINITIONS / f"service-{name}.json")) for name in STEPS}


@pytest.fixture
def process_text() -> Workflow:
    workflow: Workflow = WorkflowSchema().load(read(DEFINITIONS / "workflow-process-text.json"))
    return workflow


def event_of(workflow: Workflow, **states: StepState) -> Event:
    """An event of ``workflow`` whose steps are in ``states``, the others pending."""
    return Event(
        id="e1",
        workflow_id="w1",
        workflow_name=workflow.name,
        workflow_version=workflow.version,
        data={"message": "a b"},
        created_at=1000.0,
        updated_at=1001.0,
        status=EventStatus.RUNNING,
        steps={step.id: states.get(step.id.replace("-", "_"), StepState()) for step in workflow.steps},
    )


def svg_of(graph: graphviz.Digraph) -> ET.Element:
    return ET.fromstring(render(graph, "svg"))


def node(svg: ET.Element, node_id: str) -> ET.Element:
    found = svg.find(f".//{SVG}g[@id='{node_id}']")
    assert found is not None, f"no node {node_id} in the SVG"
    return found


def lines(element: ET.Element) -> list[str]:
    """The text of an SVG element, line by line: a line that changes font is several texts at one height."""
    rows: dict[str | None, list[str]] = {}
    for text in element.iter(f"{SVG}text"):
        rows.setdefault(text.get("y"), []).append(text.text or "")
    return [" ".join(" ".join(parts).split()) for parts in rows.values()]


def outline(element: ET.Element) -> ET.Element:
    """The shape of a node: its first path (a rounded box) or polygon."""
    return next(e for e in element.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon"))


def edges(graph: graphviz.Digraph) -> dict[str, str]:
    """Each edge of the DOT source, as ``tail -> head``, with its attributes."""
    found = re.findall(r'^\t"?([^"]+?)"? -> "?([^"]+?)"? \[(.*)\]$', graph.source, re.MULTILINE)
    return {f"{tail} -> {head}": attributes for tail, head, attributes in found}


# Workflow graphs


def test_a_workflow_graph_shows_each_step_with_its_service_and_its_typed_inputs_and_outputs(
    process_text: Workflow, services: dict[str, Service]
) -> None:
    svg = svg_of(workflow_graph(process_text, services))
    assert lines(node(svg, "step-upper")) == ["upper", "upper", "in message: string", "out message: string"]
    assert lines(node(svg, "step-space-counter")) == [
        "space-counter",
        "space-counter",
        "in message: string",
        "out space_count: int",
    ]
    assert lines(node(svg, "workflow-inputs")) == ["inputs", "the event's data", "message: string"]
    assert lines(node(svg, "workflow-outputs"))[2:] == ["message: string", "space_count: int"]


def test_a_workflow_graph_paints_every_step_alike_and_says_its_name_and_version(
    process_text: Workflow, services: dict[str, Service]
) -> None:
    svg = svg_of(workflow_graph(process_text, services))
    for step in STEPS:
        assert outline(node(svg, f"step-{step}")).get("fill") == DEFINITION.fill
        assert node(svg, f"step-{step}").get("class") == "node step"
    assert "process-text v1" in lines(svg)


def test_data_flows_along_the_dependencies_and_past_them_on_dashed_edges(
    process_text: Workflow, services: dict[str, Service]
) -> None:
    assert edges(workflow_graph(process_text, services)) == {
        "workflow inputs -> upper": "label=message style=solid",
        "upper -> reverse": "label=message style=solid",
        "reverse -> space-counter": "label=message style=solid",
        "space-counter -> workflow outputs": "label=space_count style=solid",
        "reverse -> workflow outputs": "label=message style=dashed",
    }


def test_a_step_names_where_its_inputs_come_from_and_what_its_outputs_become(services: dict[str, Service]) -> None:
    workflow = WorkflowSchema().load(
        {
            "name": "renamed",
            "inputs": [{"name": "text", "type": "string"}],
            "steps": [
                {"id": "shout", "service": "upper", "input": {"message": "$.input.text"}, "output": {"message": "loud"}}
            ],
            "outputs": [{"name": "loud", "type": "string"}],
        }
    )
    graph = workflow_graph(workflow, services)
    assert "in message: string ← $.input.text" in lines(node(svg_of(graph), "step-shout"))
    assert "out message: string → loud" in lines(node(svg_of(graph), "step-shout"))
    assert edges(graph)["workflow inputs -> shout"] == 'label="text → message" style=solid'


def test_each_kind_of_step_has_its_own_shape_and_routes_label_their_edges(services: dict[str, Service]) -> None:
    graph = workflow_graph(WorkflowSchema().load(MODERATE), services)
    kinds = {step["id"]: step.get("kind", "service") for step in MODERATE["steps"]}
    assert set(kinds.values()) | {WORKFLOW, FLEET} == set(SHAPES) == set(KINDS)
    for step_id, kind in kinds.items():
        assert re.search(rf"^\t{step_id} \[.* shape={SHAPES[kind]} ", graph.source, re.MULTILINE), step_id
    routes = edges(graph)
    assert routes["route -> review"] == 'label="[true]" style=solid'
    assert routes["route -> reject"] == 'label="[default]" style=solid'
    assert routes["review -> reject"] == 'label="[timeout]" style=solid'
    assert "reject -> workflow outputs" not in routes, "a fail step does not lead to the outputs"


def test_control_steps_say_what_they_do(services: dict[str, Service]) -> None:
    svg = svg_of(workflow_graph(WorkflowSchema().load(MODERATE), services))
    assert lines(node(svg, "step-route"))[1:] == ["switch", "on size(context.message) > 20"]
    assert lines(node(svg, "step-review"))[1:] == [
        "wait",
        "for signal 'reviewed'",
        "at most 60 s",
        "out approved: bool",
    ]
    assert lines(node(svg, "step-pause"))[1:] == ["delay", "for 2 s"]
    assert lines(node(svg, "step-each"))[1:] == [
        "map · upper",
        "in message: string ← each of $.input.texts",
        "out results: array<object>",
    ]
    assert lines(node(svg, "step-reject"))[1:] == ["fail", "too short"]


def test_a_service_no_longer_registered_is_named_so_without_a_contract(process_text: Workflow) -> None:
    svg = svg_of(workflow_graph(process_text, {}))
    assert lines(node(svg, "step-upper")) == ["upper", "upper (not registered)"]


# Event graphs


@pytest.mark.parametrize("status", list(StepStatus))
def test_an_event_graph_paints_each_step_with_the_colours_of_its_state(
    status: StepStatus, process_text: Workflow, services: dict[str, Service]
) -> None:
    event = event_of(process_text, upper=StepState(status))
    upper = node(svg_of(event_graph(process_text, services, event)), "step-upper")
    look = STATE_LOOKS[status]
    assert outline(upper).get("fill") == look.fill
    assert outline(upper).get("stroke") == look.line
    assert upper.get("class") == f"node step {status}"
    assert lines(upper)[-1] == str(status)


def test_the_states_have_the_colours_users_expect() -> None:
    greens, reds, blues = ("#d3f9d8", "#2f9e44"), ("#ffe3e3", "#e03131"), ("#d0ebff", "#1c7ed6")
    assert (STATE_LOOKS[StepStatus.COMPLETED].fill, STATE_LOOKS[StepStatus.COMPLETED].line) == greens
    assert (STATE_LOOKS[StepStatus.FAILED].fill, STATE_LOOKS[StepStatus.FAILED].line) == reds
    assert (STATE_LOOKS[StepStatus.RUNNING].fill, STATE_LOOKS[StepStatus.RUNNING].line) == blues
    assert STATE_LOOKS[StepStatus.PENDING].fill == "#ffffff"
    assert [s for s, look in STATE_LOOKS.items() if look.dashed] == [StepStatus.SKIPPED]


def test_a_skipped_step_is_drawn_dashed(process_text: Workflow, services: dict[str, Service]) -> None:
    graph = event_graph(process_text, services, event_of(process_text, reverse=StepState(StepStatus.SKIPPED)))
    assert re.search(r'^\treverse \[.* style="filled,rounded,dashed"', graph.source, re.MULTILINE)
    assert re.search(r'^\tupper \[.* style="filled,rounded"', graph.source, re.MULTILINE)


def test_a_step_says_its_attempts_how_long_the_latest_took_and_its_error(
    process_text: Workflow, services: dict[str, Service]
) -> None:
    event = event_of(
        process_text,
        upper=StepState(StepStatus.COMPLETED, attempts=1, started_at=10.0, ended_at=10.012),
        reverse=StepState(
            StepStatus.RETRYING,
            attempts=2,
            started_at=11.0,
            ended_at=12.5,
            error={"message": "could not connect to http://127.0.0.1:5002/event: connection refused"},
        ),
    )
    svg = svg_of(event_graph(process_text, services, event))
    assert lines(node(svg, "step-upper"))[-1] == "completed · 1 attempt · 12 ms"
    assert lines(node(svg, "step-reverse"))[-2:] == [
        "retrying · 2 attempts · 1.5 s",
        "could not connect to http://127.0.0.1:5002/even…",
    ]
    assert lines(node(svg, "step-space-counter"))[-1] == "pending"
    assert "process-text v1, event e1: running" in lines(svg)


def test_a_map_step_says_how_many_of_its_items_are_done(services: dict[str, Service]) -> None:
    workflow = WorkflowSchema().load(MODERATE)
    event = event_of(workflow, each=StepState(StepStatus.RUNNING, fanout=3))
    counts = {"each": {"completed": 1, "running": 1, "pending": 1}}
    assert lines(node(svg_of(event_graph(workflow, services, event, counts)), "step-each"))[-1] == "running · 1/3 items"


# Formats


def test_a_graph_renders_as_svg_png_and_dot(process_text: Workflow, services: dict[str, Service]) -> None:
    graph = workflow_graph(process_text, services)
    assert render(graph, "svg").lstrip().startswith(b"<?xml")
    assert render(graph, "png").startswith(b"\x89PNG")
    assert render(graph, "dot") == graph.source.encode()


def test_without_the_graphviz_binary_dot_source_is_still_rendered(
    process_text: Workflow, services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    assert render(workflow_graph(process_text, services), "dot").startswith(b'digraph "process-text" {')


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_without_the_graphviz_binary_an_image_fails_saying_so_and_suggesting_dot(
    fmt: str, process_text: Workflow, services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphvizMissing, match=f"Graphviz binary 'dot' is missing, so no {fmt} image") as raised:
        render(workflow_graph(process_text, services), fmt)
    assert "ask for the 'dot' format, which needs no binary" in str(raised.value)


# The endpoints


@pytest.fixture
def machinery(tmp_path: Path) -> Iterator[Machinery]:
    machinery = Machinery(Config(data_dir=tmp_path))
    yield machinery
    machinery.stop()
    machinery.store.close()


@pytest.fixture
def client(machinery: Machinery, services: dict[str, Service], process_text: Workflow) -> FlaskClient:
    """The API over ``process-text`` and its services, registered; no worker runs its events."""
    for service in services.values():
        machinery.registry.add_service(service)
    machinery.registry.add_workflow(process_text)
    return create_app(machinery, {"TESTING": True}).test_client()


@pytest.fixture
def event_id(client: FlaskClient) -> str:
    """An event of ``process-text``, its first step ready."""
    response = client.post("/e/process-text", json={"data": {"message": "a b"}})
    assert response.status_code == 202
    return str(response.json["event_id"])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_workflow_graph_is_served_in_the_format_asked_for_by_query_or_suffix(client: FlaskClient, fmt: str) -> None:
    by_query = client.get(f"/workflows/process-text/graph?format={fmt}")
    by_suffix = client.get(f"/workflows/process-text/graph.{fmt}")
    for response in (by_query, by_suffix):
        assert response.status_code == 200
        assert response.mimetype == FORMATS[fmt]
    assert by_query.data == by_suffix.data


def test_a_graph_is_svg_unless_asked_otherwise_and_dot_source_is_utf8_text(client: FlaskClient) -> None:
    svg = client.get("/workflows/process-text/graph")
    assert svg.content_type == "image/svg+xml; charset=utf-8"
    assert b"<svg" in svg.data
    assert client.get("/workflows/process-text/graph.dot").content_type == "text/vnd.graphviz; charset=utf-8"


def test_the_suffix_wins_over_the_query(client: FlaskClient) -> None:
    assert client.get("/workflows/process-text/graph.png?format=dot").mimetype == "image/png"


def test_an_event_graph_is_served_with_each_step_in_its_state(client: FlaskClient, event_id: str) -> None:
    response = client.get(f"/events/{event_id}/graph.svg")
    assert response.status_code == 200
    svg = ET.fromstring(response.data)
    assert node(svg, "step-upper").get("class") == "node step ready"
    assert node(svg, "step-reverse").get("class") == "node step pending"
    assert client.get(f"/events/{event_id}/graph?format=png").mimetype == "image/png"


def test_an_event_is_drawn_on_its_version_with_a_service_removed_since_named_so(
    client: FlaskClient, machinery: Machinery, event_id: str
) -> None:
    shorter = read(DEFINITIONS / "workflow-process-text.json") | {
        "services": ["upper", "reverse"],
        "outputs": [{"name": "message", "type": "string"}],
    }
    machinery.registry.replace_workflow("process-text", WorkflowSchema().load(shorter))
    machinery.registry.delete_service("space-counter")
    svg = ET.fromstring(client.get(f"/events/{event_id}/graph.svg").data)
    assert lines(node(svg, "step-space-counter"))[:2] == ["space-counter", "space-counter (not registered)"]
    assert lines(node(svg, "step-reverse"))[:2] == ["reverse", "reverse"]


def test_a_workflow_is_found_by_its_id_too(client: FlaskClient) -> None:
    workflow_id = client.get("/workflows/process-text").json["id"]
    assert client.get(f"/workflows/{workflow_id}/graph.dot").data.startswith(b'digraph "process-text"')


@pytest.mark.parametrize("path", ["/workflows/nope/graph", "/workflows/nope/graph.png", "/events/nope/graph.svg"])
def test_the_graph_of_an_unknown_workflow_or_event_is_a_404(client: FlaskClient, path: str) -> None:
    assert "nope" in error(client.get(path), 404)["message"]


def test_an_unknown_format_is_refused(client: FlaskClient) -> None:
    assert error(client.get("/workflows/process-text/graph?format=gif"), 422)["errors"] == {
        "format": ["Must be one of: svg, png, dot."]
    }
    assert client.get("/workflows/process-text/graph.gif").status_code == 404


def test_without_the_graphviz_binary_images_are_a_503_that_says_so_and_dot_still_works(
    client: FlaskClient, event_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    for path in ("/workflows/process-text/graph", f"/events/{event_id}/graph.png"):
        message = error(client.get(path), 503)["message"]
        assert "the Graphviz binary 'dot' is missing" in message
        assert "'dot' format, which needs no binary" in message
    assert client.get("/workflows/process-text/graph?format=dot").status_code == 200


def test_the_graph_endpoints_are_in_the_openapi_document_and_the_dashboard_is_not(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert {"/workflows/{key}/graph", "/workflows/{key}/graph.{suffix}", "/events/{event_id}/graph"} <= set(paths)
    assert set(paths["/workflows/{key}/graph"]["get"]["responses"]["200"]["content"]) == set(FORMATS.values())
    assert "/" not in paths
    assert "/ui" not in paths


# The dashboard's files


@pytest.mark.parametrize("path", ["/", "/ui"])
def test_the_dashboard_page_is_served_at_the_root_and_at_ui(client: FlaskClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert b'<main id="main">' in page.data


def test_the_dashboard_loads_its_script_and_style_from_the_app_itself(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html)
    assert sorted(assets) == ["/ui/static/app.css", "/ui/static/app.js"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html), "nothing is fetched from elsewhere"
    assert client.get("/ui/static/app.js").mimetype == "text/javascript"
    assert client.get("/ui/static/app.css").mimetype == "text/css"


def test_the_dashboards_modules_import_one_another_by_relative_paths_and_are_all_served(client: FlaskClient) -> None:
    """app.js imports one module per page and shared.js, as the browser finds them: no build step, no bundler."""
    sources = {path.name: path.read_text() for path in Path(str(dashboard.bp.static_folder)).glob("*.js")}
    imports = [target for text in sources.values() for target in re.findall(r'\bfrom "([^"]+)"', text)]
    assert all(re.fullmatch(r"\./[\w-]+\.js", target) for target in imports), imports
    assert {target.removeprefix("./") for target in imports} == set(sources) - {"app.js"}
    for name in sources:
        assert client.get(f"/ui/static/{name}").mimetype == "text/javascript", name


def test_a_workflow_step_is_a_double_box_naming_its_child_with_the_childs_contract(
    services: dict[str, Service],
) -> None:
    child = WorkflowSchema().load(
        {
            "name": "shout",
            "inputs": [{"name": "message", "type": "string"}],
            "outputs": [{"name": "message", "type": "string"}],
            "services": ["upper"],
        }
    )
    parent = WorkflowSchema().load(
        {
            "name": "parent",
            "inputs": [{"name": "text", "type": "string"}],
            "steps": [
                {"id": "kid", "kind": "workflow", "workflow": "shout", "version": 2,
                 "input": {"message": "$.input.text"}, "output": {"message": "loud"}},
                {"id": "gone", "kind": "workflow", "workflow": "nobody", "after": ["kid"]},
            ],
        }
    )  # fmt: skip
    key = contract_key("shout", 2)
    graph = workflow_graph(parent, {**services, key: contract(child, key)})

    [kid] = re.findall(r"^\tkid \[.*$", graph.source, re.MULTILINE)
    assert "shape=box " in kid and "peripheries=2" in kid, "a box, doubled"
    svg = svg_of(graph)
    assert lines(node(svg, "step-kid"))[1:] == [
        "workflow · shout v2",
        "in message: string ← $.input.text",
        "out message: string → loud",
    ]
    assert lines(node(svg, "step-gone"))[1:] == ["workflow · nobody (not registered)"]
    assert edges(graph)["workflow inputs -> kid"] == 'label="text → message" style=solid'


def test_a_command_step_is_drawn_with_the_executable_it_runs() -> None:
    commands = DEFINITIONS / "commands"
    services = {
        name: ServiceSchema().load(json.loads(path.read_text()))
        for name, path in (
            ("upper", DEFINITIONS / "service-upper.json"),
            ("space-counter", DEFINITIONS / "service-space-counter.json"),
            ("sort-lines", commands / "service-sort-lines.json"),
        )
    }
    workflow = WorkflowSchema().load(json.loads((commands / "workflow-sort-text.json").read_text()))

    source = workflow_graph(workflow, services).source

    assert "sort-lines · $ sort" in source
    assert "stdout: string" in source


def test_a_fleet_step_names_its_fleets_task_its_selector_and_what_it_gives() -> None:
    task = FleetTask("reboot", (Field("delay", FieldType("int")),), (Field("uptime", FieldType("int")),))
    workflow = WorkflowSchema().load(
        {
            "name": "reboots",
            "inputs": [{"name": "delay", "type": "int"}],
            "steps": [
                {"id": "reboot", "kind": "fleet", "fleet": "routers", "task": "reboot",
                 "selector": {"site": "lund"}, "input": {"delay": "$.input.delay"}, "concurrency": 5},
            ],
        }
    )  # fmt: skip
    key = fleet_kind.contract_key("routers", "reboot")
    graph = workflow_graph(workflow, {key: fleet_kind.contract(Fleet("routers", "http", tasks=(task,)), task)})

    assert re.search(r"^\treboot \[.* shape=component ", graph.source, re.MULTILINE)
    assert lines(node(svg_of(graph), "step-reboot"))[1:] == [
        "fleet · routers/reboot",
        "on the workloads site=lund",
        "5 at once",
        "in delay: int ← $.input.delay",
        "out results: object",
        "out skipped: array<object>",
        "out failed: array<object>",
    ]
