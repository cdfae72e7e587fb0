"""The consumer API: sending events, reading them, listing, cancelling, pausing, resuming and retrying them.

No worker runs: an event stays as the API left it unless a test runs its
first step with ``machinery.runner.run``, which carries it as far as it goes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.bootstrap import Machinery
from machinery.store import sqlite
from tests.api import error

TEXT = {"message": "The Sun will rise in the morning !"}
MESSAGE = {"name": "message", "type": "string"}


def utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0), text
    return moment


def written(workflow: dict[str, Any]) -> dict[str, Any]:
    """A workflow as the API answered it, without the id and version it gave: what a PUT takes."""
    return {key: value for key, value in workflow.items() if key not in ("id", "version")}


def send(client: FlaskClient, workflow: str = "process-text") -> dict[str, Any]:
    response = client.post(f"/e/{workflow}", json={"data": TEXT})
    assert response.status_code == 202, response.json
    return response.json


@pytest.fixture
def one_step(client: FlaskClient, serve: Callable[[list[Any]], str]) -> Callable[..., str]:
    """Register a workflow of one service answering ``answer``; its name."""

    def register(name: str, answer: tuple[int, Any], retry: dict[str, Any] | None = None) -> str:
        service = {"name": name, "address": serve([answer]), "inputs": [MESSAGE], "outputs": [MESSAGE]}
        service["retry"] = retry or {"attempts": 1}
        assert client.post("/services", json=service).status_code == 201
        definition = {"name": name, "services": [name], "inputs": [MESSAGE], "outputs": [MESSAGE]}
        assert client.post("/workflows", json=definition).status_code == 201
        return name

    return register


def test_sending_an_event_answers_202_with_its_id_ack_date_status_and_location(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    response = client.post("/e/process-text", json={"data": TEXT})
    assert response.status_code == 202
    ack = response.json
    assert set(ack) == {"event_id", "ack_date", "status"}
    assert ack["status"] == "accepted"
    assert response.headers["Location"] == f"/events/{ack['event_id']}"
    event = client.get(response.headers["Location"]).json
    assert utc(ack["ack_date"]) == utc(event["created_at"])


def test_an_event_is_sent_to_a_workflow_by_its_id_too(client: FlaskClient, workflow: dict[str, Any]) -> None:
    ack = send(client, workflow["id"])
    assert client.get(f"/events/{ack['event_id']}").json["workflow"]["name"] == "process-text"


def test_the_same_idempotency_key_makes_one_event_and_replays_its_answer_with_200(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    first = client.post("/e/process-text", json={"data": TEXT}, headers={"Idempotency-Key": "k-1"})
    again = client.post("/e/process-text", json={"data": TEXT}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert again.headers["Location"] == first.headers["Location"]
    events = client.get("/events").json
    assert [e["id"] for e in events] == [first.json["event_id"]]
    assert events[0]["idempotency_key"] == "k-1"


def test_an_empty_idempotency_key_answers_422_naming_it(client: FlaskClient, workflow: dict[str, Any]) -> None:
    body = error(client.post("/e/process-text", json={"data": TEXT}, headers={"Idempotency-Key": ""}), 422)
    assert list(body["errors"]) == ["Idempotency-Key"]


def test_an_event_for_an_unknown_workflow_answers_404(client: FlaskClient) -> None:
    body = error(client.post("/e/process-text", json={"data": TEXT}), 404)
    assert "process-text" in body["message"]


def test_data_not_matching_the_inputs_answers_422_naming_each_field_and_stores_nothing(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    body = error(client.post("/e/process-text", json={"data": {"message": 3, "colour": "blue"}}), 422)
    problems = {p["field"]: p for p in body["problems"]}
    assert set(problems) == {"message", "colour"}
    assert problems["message"]["expected"] == "string"
    assert problems["message"]["found"] == "int"
    assert client.get("/events").json == []


def test_a_body_without_data_answers_422_naming_it(client: FlaskClient, workflow: dict[str, Any]) -> None:
    body = error(client.post("/e/process-text", json={"message": "hi"}), 422)
    assert set(body["errors"]) == {"data", "message"}


def test_an_accepted_event_shows_its_steps_in_the_workflows_order(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    ack = send(client)
    event = client.get(f"/events/{ack['event_id']}").json
    assert event["id"] == ack["event_id"]
    assert event["workflow"] == {"id": workflow["id"], "name": "process-text", "version": 1}
    assert event["status"] == "accepted"
    assert event["data"] == TEXT
    assert event["outputs"] is None
    assert event["error"] is None
    assert event["idempotency_key"] is None
    assert utc(event["updated_at"]) >= utc(event["created_at"])
    assert [(s["id"], s["service"], s["status"]) for s in event["steps"]] == [
        ("upper", "upper", "ready"),
        ("reverse", "reverse", "pending"),
        ("space-counter", "space-counter", "pending"),
    ]
    assert event["steps"][0] == {
        "id": "upper",
        "kind": "service",
        "service": "upper",
        "workflow": None,
        "fleet": None,
        "task": None,
        "child": None,
        "route": None,
        "wakes_at": None,
        "items": None,
        "status": "ready",
        "attempts": 0,
        "started_at": None,
        "ended_at": None,
        "inputs": None,
        "outputs": None,
        "error": None,
        "history": [],
        "next_attempt_at": None,
        "note": None,
    }


def test_a_completed_event_shows_its_outputs_and_what_each_step_was_sent_and_answered(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    ack = send(client)
    machinery.runner.run(ack["event_id"], "upper")
    event = client.get(f"/events/{ack['event_id']}").json
    assert event["status"] == "completed", event["error"]
    assert event["outputs"] == {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT", "space_count": 7}
    upper, reverse, counter = event["steps"]
    assert upper["inputs"] == TEXT
    assert upper["outputs"] == {"message": "THE SUN WILL RISE IN THE MORNING !"}
    assert reverse["inputs"] == upper["outputs"]
    assert counter["outputs"] == {"space_count": 7}
    for step in event["steps"]:
        assert step["status"] == "completed"
        assert step["attempts"] == 1
        assert utc(step["started_at"]) <= utc(step["ended_at"])


def test_a_failed_step_shows_its_error_and_the_history_of_its_attempts(
    client: FlaskClient, machinery: Machinery, one_step: Callable[..., str]
) -> None:
    one_step("refuse", (400, {"message": "no"}))
    ack = send(client, "refuse")
    machinery.runner.run(ack["event_id"], "refuse")
    event = client.get(f"/events/{ack['event_id']}").json
    assert event["status"] == "failed"
    assert event["error"]["step"] == "refuse"
    (step,) = event["steps"]
    assert step["status"] == "failed"
    assert step["error"]["status_code"] == 400
    (attempt,) = step["history"]
    assert attempt["attempt"] == 1
    assert attempt["error"] == step["error"]
    assert utc(attempt["started_at"]) <= utc(attempt["ended_at"])


def test_a_retrying_step_shows_when_it_will_be_called_again(
    client: FlaskClient, machinery: Machinery, one_step: Callable[..., str]
) -> None:
    one_step("busy", (503, {}), retry={"attempts": 3, "backoff": 20, "jitter": False})
    ack = send(client, "busy")
    machinery.runner.run(ack["event_id"], "busy")
    (step,) = client.get(f"/events/{ack['event_id']}").json["steps"]
    assert step["status"] == "retrying"
    assert utc(step["next_attempt_at"]) - utc(step["ended_at"]) == timedelta(seconds=20)


def test_reading_an_unknown_event_answers_404(client: FlaskClient) -> None:
    error(client.get("/events/nothing"), 404)


def test_events_are_listed_newest_first_a_page_at_a_time(client: FlaskClient, workflow: dict[str, Any]) -> None:
    sent = [send(client)["event_id"] for _ in range(3)]
    response = client.get("/events?page_size=2")
    assert [e["id"] for e in response.json] == sent[::-1][:2]
    assert json.loads(response.headers["X-Pagination"])["total"] == 3


def test_events_are_listed_by_workflow_and_by_status(
    client: FlaskClient, workflow: dict[str, Any], one_step: Callable[..., str]
) -> None:
    one_step("refuse", (400, {"message": "no"}))
    kept = send(client)["event_id"]
    cancelled = send(client)["event_id"]
    client.post(f"/events/{cancelled}/cancel")
    send(client, "refuse")

    def ids(query: str) -> list[str]:
        response = client.get(f"/events?{query}")
        assert response.status_code == 200, response.json
        return [e["id"] for e in response.json]

    assert ids("workflow=process-text") == [cancelled, kept]
    assert ids(f"workflow={workflow['id']}&status=accepted") == [kept]
    assert ids("status=cancelled") == [cancelled]


def test_events_are_found_by_values_in_their_data(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    sent = {}
    for message in ("hello world", "good night", "hello world"):
        sent.setdefault(message, []).append(client.post("/e/process-text", json={"data": {"message": message}}).json)
    machinery.runner.run(sent["hello world"][0]["event_id"], "upper")

    def found(query: dict[str, Any], **filters: str) -> list[str]:
        response = client.get("/events", query_string={"data": json.dumps(query), **filters})
        assert response.status_code == 200, response.json
        return [e["id"] for e in response.json]

    assert found({"message": "hello world"}) == [ack["event_id"] for ack in reversed(sent["hello world"])]
    assert found({"message": "hello world"}, status="completed") == [sent["hello world"][0]["event_id"]]
    assert found({"message": "good night"}, workflow="process-text") == [sent["good night"][0]["event_id"]]
    assert found({"message": "HELLO WORLD"}) == []


def test_events_are_listed_a_page_after_another_by_cursor_while_others_arrive(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    sent = [send(client)["event_id"] for _ in range(5)]
    seen: list[str] = []
    query = "page_size=2"
    while True:
        response = client.get(f"/events?{query}")
        assert response.status_code == 200, response.json
        seen += [e["id"] for e in response.json]
        send(client)  # comes before the first page: never in the next ones
        pagination = json.loads(response.headers["X-Pagination"])
        assert pagination["total_exact"] and pagination["complete"]
        if "X-Next-Cursor" not in response.headers:
            break
        assert "page" not in pagination or query == "page_size=2"
        query = f"page_size=2&cursor={response.headers['X-Next-Cursor']}"

    assert seen == sent[::-1]


def test_a_search_counted_past_its_limit_says_so_in_x_pagination(
    client: FlaskClient, workflow: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        send(client)
    monkeypatch.setattr(sqlite, "COUNT_LIMIT", 1)
    monkeypatch.setattr(sqlite, "_OVER", 2)
    search = {"data": json.dumps(TEXT), "page_size": 1}

    counted = json.loads(client.get("/events", query_string=search).headers["X-Pagination"])
    assert (counted["total"], counted["total_exact"], counted["complete"]) == (1, False, True)


@pytest.mark.parametrize("cursor", ["nonsense!", "WzEsMl0", "e30"])
def test_a_cursor_the_api_did_not_give_answers_422(client: FlaskClient, cursor: str) -> None:
    body = error(client.get("/events", query_string={"cursor": cursor}), 422)
    assert body["errors"]["cursor"][0].startswith("is no cursor this API gave")


def test_a_workflow_may_declare_searchable_inputs_and_its_events_are_found_by_them(
    client: FlaskClient, workflow: dict[str, Any], process_text: dict[str, Any]
) -> None:
    searchable = process_text | {"name": "searchable-text"}
    searchable["inputs"] = [field | {"searchable": True} for field in process_text["inputs"]]
    response = client.post("/workflows", json=searchable)
    assert response.status_code == 201, response.json
    assert all(field["searchable"] for field in response.json["inputs"])
    sent = client.post("/e/searchable-text", json={"data": {"message": "order 17"}}).json["event_id"]
    send(client)

    response = client.get("/events", query_string={"data": json.dumps({"message": "order 17"})})

    assert [e["id"] for e in response.json] == [sent]
    assert json.loads(response.headers["X-Pagination"])["total"] == 1


def test_an_input_of_an_object_type_cannot_be_searchable(
    client: FlaskClient, workflow: dict[str, Any], process_text: dict[str, Any]
) -> None:
    searchable = process_text | {"name": "searchable-text"}
    searchable["inputs"] = [
        *process_text["inputs"],
        {"name": "extra", "type": "object", "required": False, "searchable": True},
    ]

    body = error(client.post("/workflows", json=searchable), 422)

    assert "workflow input 'extra' cannot be searchable" in json.dumps(body)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("{not json", "is not JSON"),
        ("[1]", "should be a JSON object, not array"),
        ('{"a b": 1}', "'a b' is no field name"),
        ('{"customer": {"$gt": 1}}', "'$gt' is no field name"),
    ],
)
def test_a_data_filter_that_is_not_an_object_of_field_names_answers_422(
    client: FlaskClient, data: str, reason: str
) -> None:
    body = error(client.get("/events", query_string={"data": data}), 422)
    assert list(body["errors"]) == ["data"]
    assert body["errors"]["data"][0].startswith(reason)


def test_an_invalid_status_filter_answers_422_naming_it(client: FlaskClient) -> None:
    body = error(client.get("/events?status=lost"), 422)
    assert list(body["errors"]) == ["status"]


def test_listing_the_events_of_an_unknown_workflow_answers_404(client: FlaskClient) -> None:
    error(client.get("/events?workflow=process-text"), 404)


def test_cancelling_an_event_answers_200_with_it_cancelled(client: FlaskClient, workflow: dict[str, Any]) -> None:
    event_id = send(client)["event_id"]
    response = client.post(f"/events/{event_id}/cancel")
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert {s["status"] for s in response.json["steps"]} == {"cancelled"}


def test_cancelling_a_finished_event_answers_409(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    completed = send(client)["event_id"]
    machinery.runner.run(completed, "upper")
    cancelled = send(client)["event_id"]
    client.post(f"/events/{cancelled}/cancel")
    for event_id, status in ((completed, "completed"), (cancelled, "cancelled")):
        body = error(client.post(f"/events/{event_id}/cancel"), 409)
        assert status in body["message"]
        assert client.get(f"/events/{event_id}").json["status"] == status


def test_retrying_a_failed_event_answers_202_with_it_running_again(
    client: FlaskClient, machinery: Machinery, one_step: Callable[..., str]
) -> None:
    one_step("refuse", (400, {"message": "no"}))
    event_id = send(client, "refuse")["event_id"]
    machinery.runner.run(event_id, "refuse")
    response = client.post(f"/events/{event_id}/retry")
    assert response.status_code == 202
    assert response.json["status"] == "running"
    assert response.json["error"] is None
    assert response.json["steps"][0]["status"] == "ready"


def test_retrying_an_event_that_has_not_failed_answers_409(client: FlaskClient, workflow: dict[str, Any]) -> None:
    event_id = send(client)["event_id"]
    body = error(client.post(f"/events/{event_id}/retry"), 409)
    assert "accepted" in body["message"]


def test_pausing_an_event_answers_200_and_no_worker_takes_a_step_of_it_until_it_is_resumed(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    event_id = send(client)["event_id"]
    response = client.post(f"/events/{event_id}/pause")
    assert response.status_code == 200
    assert response.json["status"] == "paused"
    assert [e["id"] for e in client.get("/events?status=paused").json] == [event_id]

    machinery.runner.run(event_id, "upper")
    assert [s["status"] for s in client.get(f"/events/{event_id}").json["steps"]] == ["ready", "pending", "pending"]

    response = client.post(f"/events/{event_id}/resume")
    assert response.status_code == 202
    assert response.json["status"] == "running"
    machinery.runner.run(event_id, "upper")
    assert client.get(f"/events/{event_id}").json["status"] == "completed"


def test_pausing_a_finished_or_paused_event_and_resuming_one_not_paused_answer_409(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    completed = send(client)["event_id"]
    machinery.runner.run(completed, "upper")
    paused = send(client)["event_id"]
    client.post(f"/events/{paused}/pause")

    assert "completed" in error(client.post(f"/events/{completed}/pause"), 409)["message"]
    assert "paused" in error(client.post(f"/events/{paused}/pause"), 409)["message"]
    assert "completed" in error(client.post(f"/events/{completed}/resume"), 409)["message"]


@pytest.mark.parametrize("action", ["cancel", "retry", "pause", "resume"])
def test_acting_on_an_unknown_event_answers_404(client: FlaskClient, action: str) -> None:
    error(client.post(f"/events/nothing/{action}"), 404)


def test_retrying_the_failed_events_of_a_workflow_answers_202_with_the_newest_first_up_to_the_limit(
    client: FlaskClient, machinery: Machinery, one_step: Callable[..., str], workflow: dict[str, Any]
) -> None:
    one_step("refuse", (400, {"message": "no"}))
    failed = [send(client, "refuse")["event_id"] for _ in range(3)]
    for event_id in failed:
        machinery.runner.run(event_id, "refuse")
    completed = send(client)["event_id"]
    machinery.runner.run(completed, "upper")

    response = client.post("/events/retry", json={"workflow": "refuse", "limit": 2})

    assert response.status_code == 202
    assert response.json == {"retried": failed[:0:-1], "skipped": []}
    statuses = {event_id: client.get(f"/events/{event_id}").json["status"] for event_id in failed + [completed]}
    assert statuses == {failed[0]: "failed", failed[1]: "running", failed[2]: "running", completed: "completed"}


def test_retrying_the_events_that_failed_at_one_step_leaves_the_others_failed(
    client: FlaskClient, machinery: Machinery, serve: Callable[[list[Any]], str]
) -> None:
    addresses = {"first": serve([(400, {"message": "no"}), (200, TEXT)]), "second": serve([(400, {"message": "no"})])}
    for name, address in addresses.items():
        service = {
            "name": name,
            "address": address,
            "inputs": [MESSAGE],
            "outputs": [MESSAGE],
            "retry": {"attempts": 1},
        }
        assert client.post("/services", json=service).status_code == 201
    definition = {"name": "pair", "services": ["first", "second"], "inputs": [MESSAGE], "outputs": [MESSAGE]}
    assert client.post("/workflows", json=definition).status_code == 201
    at_first, at_second = send(client, "pair")["event_id"], send(client, "pair")["event_id"]
    for event_id in (at_first, at_second):
        machinery.runner.run(event_id, "first")

    response = client.post("/events/retry", json={"workflow": "pair", "step": "second"})

    assert response.json == {"retried": [at_second], "skipped": []}
    assert client.get(f"/events/{at_first}").json["error"]["step"] == "first"


def test_retrying_failed_events_skips_one_a_fail_step_ended_and_says_why(client: FlaskClient) -> None:
    definition = {"name": "refused", "steps": [{"id": "stop", "kind": "fail", "message": "not today"}]}
    assert client.post("/workflows", json=definition).status_code == 201
    event_id = client.post("/e/refused", json={"data": {}}).json["event_id"]

    response = client.post("/events/retry", json={"workflow": "refused"})

    assert response.status_code == 202
    assert response.json["retried"] == []
    [skipped] = response.json["skipped"]
    assert skipped["event_id"] == event_id
    assert "failed on purpose by its step 'stop'" in skipped["reason"]


@pytest.mark.parametrize(
    ("body", "field"), [({}, "workflow"), ({"workflow": "x", "limit": 0}, "limit"), ({"workflow": 3}, "workflow")]
)
def test_a_bulk_retry_with_a_bad_field_answers_422_naming_it(
    client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    assert list(error(client.post("/events/retry", json=body), 422)["errors"]) == [field]


def test_retrying_the_failed_events_of_an_unknown_workflow_answers_404(client: FlaskClient) -> None:
    error(client.post("/events/retry", json={"workflow": "nothing"}), 404)


def test_an_event_of_a_workflow_with_a_timeout_shows_its_deadline_and_fails_once_past_it(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    timed = written(workflow) | {"timeout": 0.001}
    assert client.put("/workflows/process-text", json=timed).status_code == 200
    ack = send(client)
    event = client.get(f"/events/{ack['event_id']}").json
    assert (utc(event["deadline"]) - utc(event["created_at"])).total_seconds() == pytest.approx(0.001, abs=1e-5)

    machinery.runner.run(ack["event_id"], "upper")

    event = client.get(f"/events/{ack['event_id']}").json
    assert event["status"] == "failed"
    assert event["error"] == {
        "kind": "timeout",
        "message": "the event did not end within its workflow's timeout of 0.001 s",
    }
    assert [s["attempts"] for s in event["steps"]] == [0, 0, 0]


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_a_workflow_timeout_that_is_not_a_positive_number_answers_422(
    client: FlaskClient, workflow: dict[str, Any], timeout: Any
) -> None:
    timed = written(workflow) | {"timeout": timeout}
    assert list(error(client.put("/workflows/process-text", json=timed), 422)["errors"]) == ["timeout"]


def test_rerunning_an_event_sends_its_data_again_to_the_current_version_of_its_workflow(
    client: FlaskClient, machinery: Machinery, workflow: dict[str, Any]
) -> None:
    first = send(client)["event_id"]
    machinery.runner.run(first, "upper")
    definition = written(workflow)
    assert client.put("/workflows/process-text", json=definition | {"description": "fixed"}).status_code == 200

    response = client.post(f"/events/{first}/rerun")

    assert response.status_code == 202
    again = response.json
    assert response.headers["Location"] == f"/events/{again['id']}"
    assert again["id"] != first
    assert (again["data"], again["workflow"]["version"], again["status"]) == (TEXT, 2, "accepted")
    machinery.runner.run(again["id"], "upper")
    assert client.get(f"/events/{again['id']}").json["outputs"] == client.get(f"/events/{first}").json["outputs"]


def test_rerunning_an_event_whose_data_no_longer_fits_its_workflow_answers_422_and_stores_nothing(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    first = send(client)["event_id"]
    definition = written(workflow)
    stricter = definition | {"inputs": [*definition["inputs"], {"name": "lang", "type": "string"}]}
    assert client.put("/workflows/process-text", json=stricter).status_code == 200

    body = error(client.post(f"/events/{first}/rerun"), 422)

    assert [p["field"] for p in body["problems"]] == ["lang"]
    assert [e["id"] for e in client.get("/events").json] == [first]


def test_rerunning_an_unknown_event_answers_404(client: FlaskClient) -> None:
    error(client.post("/events/nothing/rerun"), 404)
