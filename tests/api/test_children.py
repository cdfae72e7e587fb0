"""Child workflows through the API: registered only when they fit and nest, and events linked both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from machinery.engine.plan import Settings
from tests.api import error

SHOUT = {
    "name": "shout",
    "inputs": [{"name": "message", "type": "string"}],
    "outputs": [{"name": "loud", "type": "string"}],
    "steps": [
        {
            "id": "exclaim",
            "kind": "transform",
            "compute": {"loud": "input.message + '!'"},
            "outputs": [{"name": "loud", "type": "string"}],
        }
    ],
}
"""A child that needs no service: its transform is run by whoever claims it."""


def runs(name: str, *children: str, inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A workflow ``name`` whose steps run each of ``children``, one after the other, passing nothing."""
    steps: list[dict[str, Any]] = []
    for child in children:
        steps.append(
            {"id": f"run-{child}", "kind": "workflow", "workflow": child, "after": [s["id"] for s in steps[-1:]]}
        )
    return {"name": name, "inputs": inputs or [], "steps": steps or [{"id": "stop", "kind": "succeed"}]}


PARENT = {
    "name": "parent",
    "inputs": [{"name": "text", "type": "string"}],
    "outputs": [{"name": "shouted", "type": "string"}],
    "steps": [
        {
            "id": "kid",
            "kind": "workflow",
            "workflow": "shout",
            "input": {"message": "$.input.text"},
            "output": {"loud": "shouted"},
        }
    ],
}


def test_a_workflow_step_is_registered_and_read_back_as_written(client: FlaskClient) -> None:
    assert client.post("/workflows", json=SHOUT).status_code == 201
    pinned = {**PARENT, "steps": [{**PARENT["steps"][0], "version": 1}]}
    response = client.post("/workflows", json=pinned)
    assert response.status_code == 201, response.json
    assert response.json["steps"][0] == {**pinned["steps"][0], "after": []}


def test_a_workflow_step_whose_inputs_do_not_fit_the_child_is_refused_with_422(client: FlaskClient) -> None:
    assert client.post("/workflows", json=SHOUT).status_code == 201
    wrong = {**PARENT, "inputs": [{"name": "text", "type": "int"}]}
    body = error(client.post("/workflows", json=wrong), 422)
    [problem] = body["problems"]
    assert problem["message"] == "step 'kid' input 'message' expects string, but workflow input 'text' is int"


def test_a_workflow_step_needs_its_workflow_and_takes_no_service(client: FlaskClient) -> None:
    body = error(client.post("/workflows", json=runs("a") | {"steps": [{"id": "s", "kind": "workflow"}]}), 422)
    assert "workflow" in str(body)
    step = {"id": "s", "kind": "workflow", "workflow": "shout", "service": "upper"}
    error(client.post("/workflows", json=runs("a") | {"steps": [step]}), 422)


def test_workflows_running_each_other_are_refused_with_422_naming_the_cycle(client: FlaskClient) -> None:
    body = error(client.post("/workflows", json=runs("a", "a")), 422)
    assert body["problems"][0]["message"] == "workflows may not run each other in a cycle: a → a"

    assert client.post("/workflows", json=runs("b")).status_code == 201
    assert client.post("/workflows", json=runs("a", "b")).status_code == 201
    body = error(client.put("/workflows/b", json=runs("b", "a")), 422)
    assert body["problems"][0]["message"] == "workflows may not run each other in a cycle: b → a → b"
    assert client.get("/workflows/b").json["version"] == 1


def test_replacing_a_child_so_that_its_parent_no_longer_fits_is_refused_with_409(client: FlaskClient) -> None:
    assert client.post("/workflows", json=SHOUT).status_code == 201
    assert client.post("/workflows", json=PARENT).status_code == 201
    quiet = {**SHOUT, "outputs": [{"name": "loud", "type": "int"}]}
    quiet["steps"] = [{**SHOUT["steps"][0], "compute": {"loud": "size(input.message)"}, "outputs": quiet["outputs"]}]

    body = error(client.put("/workflows/shout", json=quiet), 409)

    assert body["message"] == "changing workflow 'shout' would break workflow 'parent'"
    assert "workflow 'parent':" in body["problems"][0]["message"]


@pytest.fixture
def shallow(tmp_path: Path) -> Iterator[FlaskClient]:
    machinery = Machinery(Config(data_dir=tmp_path, engine=Settings(max_workflow_depth=1)))
    yield create_app(machinery, {"TESTING": True}).test_client()
    machinery.store.close()


def test_child_workflows_nested_deeper_than_configured_are_refused_with_422(shallow: FlaskClient) -> None:
    assert shallow.post("/workflows", json=runs("leaf")).status_code == 201
    assert shallow.post("/workflows", json=runs("mid", "leaf")).status_code == 201
    body = error(shallow.post("/workflows", json=runs("top", "mid")), 422)
    assert body["problems"][0]["message"] == (
        "child workflows would nest 2 deep (top → mid → leaf), more than the 1 allowed (MACHINERY_MAX_WORKFLOW_DEPTH)"
    )


def test_a_parent_and_its_child_event_name_each_other(client: FlaskClient, machinery: Machinery) -> None:
    assert client.post("/workflows", json=SHOUT).status_code == 201
    assert client.post("/workflows", json=PARENT).status_code == 201
    parent_id = client.post("/e/parent", json={"data": {"text": "hi"}}).json["event_id"]

    machinery.runner.run(parent_id, "kid")
    [child] = client.get(f"/events?parent={parent_id}").json
    machinery.runner.run(child["id"], "exclaim")
    machinery.runner.run(child["id"], "@parent")

    parent = client.get(f"/events/{parent_id}").json
    assert parent["status"] == "completed"
    assert parent["outputs"] == {"shouted": "hi!"}
    assert parent["parent"] is None
    [step] = parent["steps"]
    assert (step["kind"], step["workflow"], step["child"]) == ("workflow", "shout", child["id"])
    child = client.get(f"/events/{child['id']}").json
    assert child["parent"] == {"event": parent_id, "step": "kid", "depth": 1}
    assert child["status"] == "completed"
    assert client.get(f"/events?parent={child['id']}").json == []


def test_a_child_deleted_then_added_again_must_still_fit_the_workflows_running_it(client: FlaskClient) -> None:
    assert client.post("/workflows", json=SHOUT).status_code == 201
    assert client.post("/workflows", json=PARENT).status_code == 201
    assert client.delete("/workflows/shout").status_code == 204
    other = {**SHOUT, "inputs": [{"name": "message", "type": "int"}]}
    other["steps"] = [{**SHOUT["steps"][0], "compute": {"loud": "string(input.message)"}}]

    body = error(client.post("/workflows", json=other), 409)

    assert body["message"] == "changing workflow 'shout' would break workflow 'parent'"
