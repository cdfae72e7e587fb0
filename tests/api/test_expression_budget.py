"""Expressions cannot hold the API or a worker: the API evaluates none, and a worker none over its budget."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from machinery.bootstrap import Machinery

PAIRS: dict[str, Any] = {
    "name": "pairs",
    "inputs": [{"name": "items", "type": "array", "items": "int"}],
    "steps": [
        {
            "id": "count",
            "kind": "transform",
            "compute": {"n": "size(input.items.map(x, input.items.map(y, x + y)))"},
            "outputs": [{"name": "n", "type": "int"}],
        }
    ],
    "outputs": [{"name": "n", "type": "int"}],
}


def test_an_event_whose_workflow_computes_much_is_accepted_without_evaluating_anything(client: FlaskClient) -> None:
    assert client.post("/workflows", json=PAIRS).status_code == 201

    ack = client.post("/e/pairs", json={"data": {"items": list(range(3000))}})

    assert ack.status_code == 202
    event = client.get(f"/events/{ack.json['event_id']}").json
    assert event["status"] == "accepted"
    assert [(s["id"], s["status"], s.get("outputs")) for s in event["steps"]] == [("count", "ready", None)]


def test_the_worker_fails_a_step_over_the_expression_budget_naming_the_output_and_the_budget(
    client: FlaskClient, machinery: Machinery
) -> None:
    assert client.post("/workflows", json=PAIRS).status_code == 201
    event_id = client.post("/e/pairs", json={"data": {"items": list(range(3000))}}).json["event_id"]

    machinery.runner.run(event_id, "count")

    event = client.get(f"/events/{event_id}").json
    assert event["status"] == "failed"
    error = event["steps"][0]["error"]
    assert error["kind"] == "budget"
    assert error["message"].startswith("the expression for 'n' was not evaluated: ")
    assert "MACHINERY_EXPRESSION_BUDGET" in error["message"]


def test_the_same_workflow_over_little_data_completes(client: FlaskClient, machinery: Machinery) -> None:
    assert client.post("/workflows", json=PAIRS).status_code == 201
    event_id = client.post("/e/pairs", json={"data": {"items": [1, 2, 3]}}).json["event_id"]

    machinery.runner.run(event_id, "count")

    event = client.get(f"/events/{event_id}").json
    assert (event["status"], event["outputs"]) == ("completed", {"n": 3})


def test_comprehensions_nested_too_deep_are_refused_at_registration_naming_the_step(client: FlaskClient) -> None:
    deep = {**PAIRS, "name": "deep"}
    deep["steps"] = [
        {**PAIRS["steps"][0], "compute": {"n": "size(input.items.map(x, [x].map(y, [y].map(z, z))))"}},
    ]

    response = client.post("/workflows", json=deep)

    assert response.status_code == 422
    [problem] = response.json["problems"]
    assert (problem["step"], problem["field"]) == ("count", "n")
    assert "nested 3 deep" in problem["message"]
