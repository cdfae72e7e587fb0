"""Every example in the README runs: its definitions register, its error is the API's own, its curl calls work."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient

from examples.services import DEFINITIONS
from machinery.api import create_app
from machinery.api.blueprint import EXTENSION
from machinery.bootstrap import Config, Machinery

ROOT = Path(__file__).parents[1]
SEED = ROOT / "tests" / "fixtures" / "seed"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def documents() -> list[dict[str, Any]]:
    return [json.loads(block) for block in blocks("json")]


def definitions() -> list[dict[str, Any]]:
    return [doc for doc in documents() if "name" in doc]


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    machinery = Machinery(Config(data_dir=tmp_path))
    client = create_app(machinery).test_client()
    for name in ("upper", "reverse", "space-counter"):
        doc = json.loads((DEFINITIONS / f"service-{name}.json").read_text())
        assert client.post("/services", json=doc).status_code == 201
    return client


def test_the_readme_shows_a_service_and_workflows_of_both_forms() -> None:
    kinds = [("service" if "address" in d else "linear" if "services" in d else "graph") for d in definitions()]
    assert kinds.count("service") >= 1 and kinds.count("linear") >= 1 and kinds.count("graph") >= 2


def test_every_definition_in_the_readme_registers(client: FlaskClient) -> None:
    for doc in definitions():
        if "address" in doc:
            response = client.put(f"/services/{doc['name']}", json=doc)
            assert response.status_code == 200, response.json
        elif "services" in doc or "steps" in doc:
            if client.get(f"/workflows/{doc['name']}").status_code == 200:
                client.delete(f"/workflows/{doc['name']}")
            response = client.post("/workflows", json=doc)
            assert response.status_code == 201, (doc["name"], response.json)


def test_the_error_in_the_readme_is_the_one_the_api_gives_for_the_seeds_workflow(client: FlaskClient) -> None:
    shown = next(doc for doc in documents() if doc.get("code") == 422)
    client.put("/services/space-counter", json=json.loads((SEED / "service-space-counter.json").read_text()))

    response = client.post("/workflows", json=json.loads((SEED / "workflow-process-text.json").read_text()))

    assert response.json == shown


def test_the_readmes_review_example_waits_for_its_signal(client: FlaskClient) -> None:
    review = next(doc for doc in definitions() if doc["name"] == "review-text")
    assert client.post("/workflows", json=review).status_code == 201
    session = next(block for block in blocks("console") if "/e/review-text" in block).replace("\\\n", "")
    curls = re.findall(r"curl -s localhost:8080(\S+) .*?-d '(.*?)'", session)
    (submit, event), (signal, body) = curls

    ack = client.post(submit, json=json.loads(event)).json
    assert ack["status"] == "accepted"
    # A worker runs the switch a moment later; with none here, the test runs it.
    [switch] = [s["id"] for s in client.get(f"/events/{ack['event_id']}").json["steps"] if s["status"] == "ready"]
    client.application.extensions[EXTENSION].runner.run(ack["event_id"], switch)
    assert client.get(f"/events/{ack['event_id']}").json["status"] == "waiting"
    after = client.post(signal.replace("3f0c...", ack["event_id"]), json=json.loads(body))

    assert after.status_code == 202
    assert after.json["steps"][1]["outputs"] == {"reviewed_by": "ada"}
    assert after.json["status"] == "running"


def test_the_shipped_review_example_is_the_one_in_the_readme() -> None:
    shipped = json.loads((DEFINITIONS / "workflow-review-text.json").read_text())
    shown = next(doc for doc in definitions() if doc["name"] == "review-text")

    assert shown["steps"] == _without_descriptions(shipped["steps"])


def _without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    return value


def test_the_readmes_schedule_example_runs_at_half_past_nine_on_weekdays_in_paris(client: FlaskClient) -> None:
    process_text = json.loads((DEFINITIONS / "workflow-process-text.json").read_text())
    assert client.post("/workflows", json=process_text).status_code == 201
    session = next(block for block in blocks("console") if "localhost:8080/schedules" in block).replace("\\\n", "")
    [(path, body)] = re.findall(r"curl -s localhost:8080(/schedules) .*?-d '(.*?)'", session)
    created = client.post(path, json=json.loads(body))
    assert created.status_code == 201, created.json

    [preview] = re.findall(r"curl -s '?localhost:8080(/schedules/\S+/next\?count=\d+)'?", session)
    shown = json.loads(session.split(preview, 1)[1].split("\n", 2)[1])
    runs = client.get(preview).json["runs"]
    assert len(runs) == len(shown["runs"])
    for run in runs:
        local = datetime.fromisoformat(run).astimezone(ZoneInfo("Europe/Paris"))
        assert (local.hour, local.minute, local.weekday() < 5) == (9, 30, True)

    for path in re.findall(r"curl -s (?:-X POST )?localhost:8080(/schedules/\S+)", session):
        response = client.post(path) if path.endswith("/pause") else client.get(path)
        assert response.status_code == 200, (path, response.json)
    assert client.get("/schedules/morning-report").json["paused"] is True
