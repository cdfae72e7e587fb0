"""Signals to waiting events: POST /events/<id>/signals/<name>."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from examples.services import DEFINITIONS
from machinery.bootstrap import Machinery
from tests.api import error

APPROVAL = json.loads((DEFINITIONS / "workflow-approval.json").read_text())


@pytest.fixture
def waiting(client: FlaskClient) -> dict[str, Any]:
    """An event of ``approval`` waiting for its review."""
    assert client.post("/workflows", json=APPROVAL).status_code == 201
    ack = client.post("/e/approval", json={"data": {"document": "plan"}}).json
    event: dict[str, Any] = client.get(f"/events/{ack['event_id']}").json
    return event


def test_an_event_waiting_for_a_signal_says_so(waiting: dict[str, Any]) -> None:
    assert waiting["status"] == "waiting"
    assert [(s["id"], s["kind"], s["status"]) for s in waiting["steps"]] == [
        ("review", "wait", "waiting"),
        ("verdict", "transform", "pending"),
    ]


def test_a_signal_becomes_the_waiting_steps_output_and_the_event_goes_on(
    client: FlaskClient, machinery: Machinery, waiting: dict[str, Any]
) -> None:
    response = client.post(f"/events/{waiting['id']}/signals/reviewed", json={"approved": True})

    assert response.status_code == 202
    # The API evaluates no expression: the transform after the wait is left to a worker.
    assert [(s["id"], s["status"]) for s in response.json["steps"]] == [("review", "completed"), ("verdict", "ready")]
    machinery.runner.run(waiting["id"], "verdict")
    event = client.get(f"/events/{waiting['id']}").json
    assert event["status"] == "completed"
    assert event["outputs"] == {"verdict": "plan approved"}
    review = event["steps"][0]
    assert (review["status"], review["route"], review["outputs"]) == ("completed", "signal", {"approved": True})


def test_a_signal_whose_body_does_not_fit_is_refused_naming_the_field(
    client: FlaskClient, waiting: dict[str, Any]
) -> None:
    body = error(client.post(f"/events/{waiting['id']}/signals/reviewed", json={"approved": "yes"}), 422)

    assert body["problems"][0]["field"] == "approved"
    assert body["problems"][0]["expected"] == "bool"
    assert client.get(f"/events/{waiting['id']}").json["status"] == "waiting"


def test_a_signal_nobody_waits_for_is_a_conflict(client: FlaskClient, waiting: dict[str, Any]) -> None:
    body = error(client.post(f"/events/{waiting['id']}/signals/unknown", json={}), 409)

    assert "unknown" in body["message"]


def test_a_second_signal_to_a_finished_event_is_a_conflict(client: FlaskClient, waiting: dict[str, Any]) -> None:
    assert client.post(f"/events/{waiting['id']}/signals/reviewed", json={"approved": False}).status_code == 202

    error(client.post(f"/events/{waiting['id']}/signals/reviewed", json={"approved": True}), 409)


def test_a_signal_to_an_unknown_event_is_not_found(client: FlaskClient) -> None:
    error(client.post("/events/nope/signals/reviewed", json={}), 404)
