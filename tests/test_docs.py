"""Every example in the README runs: its definitions register, its error is the API's own, its curl calls work."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from examples.services import DEFINITIONS, EXAMPLES, JsonService
from machinery.api import create_app
from machinery.api.blueprint import EXTENSION
from machinery.bootstrap import Config, Machinery
from machinery.cli import main
from machinery.client import Client
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.served import example_services, machinery_serve
from tests.support import CallbackService, free_port

ROOT = Path(__file__).parents[1]
SEED = ROOT / "tests" / "fixtures" / "seed"
COMMANDS = DEFINITIONS / "commands"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def documents() -> list[dict[str, Any]]:
    return [json.loads(block) for block in blocks("json")]


def definitions() -> list[dict[str, Any]]:
    return [doc for doc in documents() if "name" in doc]


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    machinery = Machinery(Config(data_dir=tmp_path, commands_allowed=(Path("/usr/bin"),), run_commands=True))
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
        if "driver" in doc:
            response = client.post("/fleets", json=doc)
            assert response.status_code == 201, response.json
        elif "path" in doc and "parameters" in doc:
            response = client.post("/executables", json=doc)
            assert response.status_code == 201, response.json
        elif "address" in doc or doc.get("kind") == "command":
            if client.get(f"/services/{doc['name']}").status_code == 200:
                response = client.put(f"/services/{doc['name']}", json=doc)
            else:
                response = client.post("/services", json=doc)
            assert response.status_code in (200, 201), response.json
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


def test_the_readmes_commands_are_the_shipped_ones_and_sort_as_it_shows(client: FlaskClient) -> None:
    shipped = [
        json.loads((COMMANDS / name).read_text()) for name in ("executable-sort.json", "service-sort-lines.json")
    ]
    assert shipped == [doc for doc in definitions() if doc["name"] in ("sort", "sort-lines")]
    session = next(block for block in blocks("console") if "/e/sort-text" in block).replace("\\\n", "")
    (submit, event), *_ = re.findall(r"curl -s localhost:8080(\S+) .*?-d '(.*?)'", session)
    shown = json.loads(session.strip().splitlines()[-1])
    machinery = client.application.extensions[EXTENSION]
    servers = []
    for name in ("upper", "space-counter"):
        servers.append(JsonService("127.0.0.1", free_port(), EXAMPLES[name][1]).start())
        service = json.loads((DEFINITIONS / f"service-{name}.json").read_text()) | {"address": servers[-1].url}
        assert client.put(f"/services/{name}", json=service).status_code == 200
    for doc in shipped:
        assert client.post("/executables" if "path" in doc else "/services", json=doc).status_code == 201
    workflow = json.loads((COMMANDS / "workflow-sort-text.json").read_text())
    assert client.post("/workflows", json=workflow).status_code == 201

    ack = client.post(submit, json=json.loads(event)).json
    machinery.runner.run(ack["event_id"], "shout")  # with no worker here, the test runs the chain

    done = client.get(f"/events/{ack['event_id']}").json
    assert done["status"] == "completed", done
    assert done["outputs"] == shown
    for server in servers:
        server.stop()


def test_the_readmes_check_of_a_combination_is_what_the_api_answers(client: FlaskClient) -> None:
    client.post("/executables", json=json.loads((COMMANDS / "executable-sort.json").read_text()))
    session = next(block for block in blocks("console") if "/check" in block).replace("\\\n", "")
    (path, body), *_ = re.findall(r"curl -s localhost:8080(\S+) .*?-d '(.*?)'", session)
    shown = [json.loads(line) for line in session.strip().splitlines()[1:]]

    response = client.post(path, json=json.loads(body))

    assert response.json["problems"] == shown


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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``machinery serve``, the examples registered, their services running: the README's server."""
    tmp = tmp_path_factory.mktemp("readme")
    with machinery_serve(tmp / "data") as url, example_services(tmp / "definitions") as definitions:
        with Client(url) as client:
            for file in sorted(definitions.glob("service-*.json")):
                client.add_service(ServiceSchema().load(json.loads(file.read_text())))
            client.add_workflow(
                WorkflowSchema().load(json.loads(file.with_name("workflow-process-text.json").read_text()))
            )
        yield url


def test_the_readmes_python_client_example_runs_against_a_server(served: str) -> None:
    (example,) = blocks("python")
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(compile(example.replace("http://127.0.0.1:8080", served), "README.md", "exec"), {})

    completed, refused, upper = printed.getvalue().splitlines()
    assert completed == "completed {'message': '! GNINROM EHT NI ESIR LLIW NUS EHT', 'space_count': 7}"
    assert refused == "the data does not match the inputs of workflow 'process-text' [('message', 'string', 'int')]"
    assert upper == "upper ['message'] 1"


def test_the_readmes_remote_commands_run_against_a_server(served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    session = next(block for block in blocks("console") if "MACHINERY_URL=" in block)
    # Those naming an event or a file of their own are shown with placeholders.
    commands = [shlex.split(line[2:], comments=True) for line in session.splitlines() if line.startswith("$ machinery")]
    runnable = [args for args in commands if not any(arg.endswith("...") or arg.startswith("@") for arg in args)]
    monkeypatch.chdir(ROOT)

    results = {args[1]: CliRunner().invoke(main, args[1:], env={"MACHINERY_URL": served}) for args in runnable}

    assert sorted(results) == ["apply", "events", "send"]
    assert all(result.exit_code == 0 for result in results.values()), {k: r.output for k, r in results.items()}
    assert '"space_count": 7' in results["send"].stdout
    assert "would be" in results["apply"].stdout


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


def test_the_readmes_callback_service_takes_the_result_its_curl_posts(tmp_path: Path) -> None:
    service = CallbackService(lambda url, payload: None)
    doc = next(d for d in definitions() if d.get("mode") == "callback")
    machinery = Machinery(Config(data_dir=tmp_path, public_url="http://machinery.test"))
    client = create_app(machinery).test_client()
    assert client.post("/services", json=doc | {"address": service.url}).status_code == 201
    chain = {"name": "later", "inputs": doc["inputs"], "outputs": doc["outputs"], "services": [doc["name"]]}
    assert client.post("/workflows", json=chain).status_code == 201
    event_id = client.post("/e/later", json={"data": {"video": "1.mp4"}}).json["event_id"]
    machinery.runner.run(event_id, doc["name"])  # as a worker would: the service answers 202
    [callback] = service.callbacks
    session = next(block for block in blocks("console") if "$CALLBACK" in block)
    posts = re.findall(r'curl -s -X POST "\$CALLBACK(\S*)"(?: .*?-d \'(.*?)\')?$', session, re.M)
    path = callback.removeprefix("http://machinery.test")
    answers = {
        suffix or ("outputs" if "outputs" in body else "error"): client.post(
            path + suffix, json=json.loads(body) if body else None
        )
        for suffix, body in sorted(posts, key=lambda p: p[0] != "/heartbeat")  # the heartbeat first
    }

    assert answers["/heartbeat"].status_code == 204
    assert answers["outputs"].status_code == 200
    assert answers["error"].status_code == 409, "a second result for the same call changes nothing"
    event = client.get(f"/events/{event_id}").json
    assert (event["status"], event["outputs"]) == ("completed", {"url": "s3://out/1.mp4"})
    service.stop()
    machinery.stop()


def test_the_readmes_ad_hoc_task_answers_an_event_of_the_tasks_workflow(client: FlaskClient) -> None:
    fleet = next(d for d in definitions() if "driver" in d)
    assert client.post("/fleets", json=fleet | {"driver": "simulated"}).status_code == 201
    session = next(block for block in blocks("console") if "/fleets/routers/tasks" in block)
    body = re.search(r"-d '(.*?)'", session, re.S)
    assert body is not None

    sent = client.post("/fleets/routers/tasks", json=json.loads(body.group(1)))

    shown = json.loads(session.splitlines()[2].replace("...", ""))
    assert sent.status_code == 202 and sorted(sent.json) == sorted(shown)
    assert sent.json["status"] == shown["status"]
    event = client.get(f"/events/{sent.json['event_id']}").json
    assert event["workflow"]["name"] == "routers:reboot"
    assert event["data"] == {"delay": 5, "selector": {"site": "lund"}}
