"""The management API of workflows: nothing is registered that does not type-check."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from tests.api import error


def register(client: FlaskClient, services: list[dict[str, Any]]) -> None:
    for service in services:
        assert client.post("/services", json=service).status_code == 201


def test_the_seeds_example_is_refused_with_422_because_no_service_produces_space_count(
    client: FlaskClient, seed_services: list[dict[str, Any]], seed_workflow: dict[str, Any]
) -> None:
    register(client, seed_services)
    body = error(client.post("/workflows", json=seed_workflow), 422)
    assert "process-text" in body["message"]
    (problem,) = body["problems"]
    assert problem["field"] == "space_count"
    assert problem["expected"] == "int"
    assert "space_count" in problem["message"]
    assert client.get("/workflows").json == []


def test_the_corrected_example_registers_with_201(
    client: FlaskClient, text_services: list[dict[str, Any]], process_text: dict[str, Any]
) -> None:
    register(client, text_services)
    response = client.post("/workflows", json=process_text)
    assert response.status_code == 201, response.json
    workflow = response.json
    assert workflow["id"]
    assert workflow["version"] == 1
    assert workflow["services"] == ["upper", "reverse", "space-counter"]
    assert [f["name"] for f in workflow["outputs"]] == ["message", "space_count"]


def test_unknown_services_are_refused_with_422_naming_each(client: FlaskClient, process_text: dict[str, Any]) -> None:
    body = error(client.post("/workflows", json=process_text), 422)
    for name in ("'upper'", "'reverse'", "'space-counter'"):
        assert name in body["message"]
    assert {p["found"] for p in body["problems"] if p.get("field") == "service"} == {
        "upper",
        "reverse",
        "space-counter",
    }


def test_a_workflow_in_both_forms_is_refused_with_422(client: FlaskClient, process_text: dict[str, Any]) -> None:
    both = process_text | {"steps": [{"id": "upper", "service": "upper"}]}
    body = error(client.post("/workflows", json=both), 422)
    assert "either" in body["message"]


def test_registering_a_name_twice_answers_409(
    client: FlaskClient, workflow: dict[str, Any], process_text: dict[str, Any]
) -> None:
    error(client.post("/workflows", json=process_text), 409)


def test_a_workflow_is_read_by_id_or_by_name(client: FlaskClient, workflow: dict[str, Any]) -> None:
    assert client.get(f"/workflows/{workflow['id']}").json == workflow
    assert client.get("/workflows/process-text").json == workflow


def test_reading_an_unknown_workflow_answers_404(client: FlaskClient) -> None:
    error(client.get("/workflows/process-text"), 404)


def test_workflows_are_listed_a_page_at_a_time(client: FlaskClient, workflow: dict[str, Any]) -> None:
    response = client.get("/workflows?page_size=1")
    assert response.json == [workflow]
    assert json.loads(response.headers["X-Pagination"])["total"] == 1


def test_replacing_a_workflow_answers_200_with_its_next_version(
    client: FlaskClient, workflow: dict[str, Any], process_text: dict[str, Any]
) -> None:
    shorter = process_text | {"services": ["upper", "space-counter"]}
    response = client.put(f"/workflows/{workflow['id']}", json=shorter)
    assert response.status_code == 200, response.json
    assert response.json["id"] == workflow["id"]
    assert response.json["version"] == 2
    assert client.get("/workflows/process-text").json["services"] == ["upper", "space-counter"]


def test_a_replacement_that_does_not_type_check_is_refused_with_422(
    client: FlaskClient, workflow: dict[str, Any], process_text: dict[str, Any]
) -> None:
    error(client.put("/workflows/process-text", json=process_text | {"services": ["upper"]}), 422)
    assert client.get("/workflows/process-text").json["version"] == 1


def test_replacing_an_unknown_workflow_answers_404(client: FlaskClient, process_text: dict[str, Any]) -> None:
    error(client.put("/workflows/process-text", json=process_text), 404)


def test_deleting_a_workflow_answers_204_and_frees_its_services(client: FlaskClient, workflow: dict[str, Any]) -> None:
    response = client.delete("/workflows/process-text")
    assert response.status_code == 204
    error(client.get(f"/workflows/{workflow['id']}"), 404)
    assert client.delete("/services/reverse").status_code == 204


def test_deleting_an_unknown_workflow_answers_404(client: FlaskClient) -> None:
    error(client.delete("/workflows/process-text"), 404)
