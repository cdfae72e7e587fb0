"""Schedules through the API: created, read, listed, paused, resumed, previewed and deleted; their events listed."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask.testing import FlaskClient

from machinery.bootstrap import Machinery
from tests.api import error

TICKER = {"name": "ticker", "workflow": "process-text", "data": {"message": "tick tock"}, "interval": 60}


def create(client: FlaskClient, **changes: Any) -> dict[str, Any]:
    response = client.post("/schedules", json=TICKER | changes)
    assert response.status_code == 201, response.json
    return response.json


def test_a_schedule_is_created_and_read_by_id_or_name(client: FlaskClient, workflow: dict[str, Any]) -> None:
    response = client.post("/schedules", json=TICKER)
    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"] == f"/schedules/{body['id']}"
    assert body["workflow"] == {"id": workflow["id"], "name": "process-text"}
    assert (body["interval"], body["cron"], body["timezone"]) == (60, None, "UTC")
    assert (body["overlap"], body["catch_up"], body["paused"], body["runs"]) == ("skip", "none", False, 0)
    assert datetime.fromisoformat(body["next_run_at"]).timestamp() % 60 == 0
    assert client.get(f"/schedules/{body['id']}").json == body
    assert client.get("/schedules/ticker").json == body
    listed = client.get("/schedules")
    assert listed.json == [body] and listed.headers["X-Pagination"]


def test_a_cron_schedule_previews_its_next_runs_in_its_time_zone(client: FlaskClient, workflow: dict[str, Any]) -> None:
    create(client, interval=None, cron="30 9 * * 1-5", timezone="America/New_York", catch_up="last")
    runs = client.get("/schedules/ticker/next?count=3").json["runs"]
    assert len(runs) == 3
    for run in runs:
        local = datetime.fromisoformat(run).astimezone(ZoneInfo("America/New_York"))
        assert (local.hour, local.minute) == (9, 30) and local.weekday() < 5
    assert error(client.get("/schedules/ticker/next?count=0"), 422)


def test_what_does_not_hold_together_is_refused_with_its_problems(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    body = error(client.post("/schedules", json=TICKER | {"interval": None, "cron": "* * *"}), 422)
    assert body["problems"][0]["field"] == "cron"
    body = error(client.post("/schedules", json=TICKER | {"cron": "* * * * *"}), 422)
    assert "not both" in body["problems"][0]["message"]
    body = error(client.post("/schedules", json=TICKER | {"data": {"message": 7}}), 422)
    assert body["problems"][0]["field"] == "message"
    error(client.post("/schedules", json=TICKER | {"overlap": "sometimes"}), 422)
    error(client.post("/schedules", json=TICKER | {"interval": 1.5}), 422)
    error(client.post("/schedules", json=TICKER | {"workflow": "nowhere"}), 404)
    create(client)
    error(client.post("/schedules", json=TICKER), 409)


def test_a_schedule_is_paused_resumed_and_deleted(client: FlaskClient, workflow: dict[str, Any]) -> None:
    create(client)
    paused = client.post("/schedules/ticker/pause").json
    assert paused["paused"] is True and paused["next_run_at"] is None
    assert len(client.get("/schedules/ticker/next").json["runs"]) == 5
    resumed = client.post("/schedules/ticker/resume").json
    assert resumed["paused"] is False and resumed["next_run_at"]
    assert client.delete("/schedules/ticker").status_code == 204
    error(client.get("/schedules/ticker"), 404)
    error(client.delete("/schedules/ticker"), 404)


def test_the_events_a_schedule_made_are_listed_the_latest_run_first(
    client: FlaskClient, workflow: dict[str, Any], machinery: Machinery
) -> None:
    schedule = create(client, overlap="allow", interval=10)
    due = datetime.fromisoformat(schedule["next_run_at"]).timestamp()
    machinery.scheduler.clock = lambda: due + 10  # two runs due, both within the grace period
    assert machinery.scheduler.run_due() == 2
    events = client.get("/schedules/ticker/events")
    assert [event["idempotency_key"] for event in events.json] == [
        f"schedule:{schedule['id']}:{int(due + 10)}",
        f"schedule:{schedule['id']}:{int(due)}",
    ]
    assert events.json[0]["data"] == {"message": "tick tock"}
    assert client.get("/schedules/ticker").json["last_event_id"] == events.json[0]["id"]
    error(client.get("/schedules/nowhere/events"), 404)
