"""Secret references: read from the environment or from files by the worker when it calls, and never shown."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from machinery.engine.errors import InvalidConfig, InvalidDefinition
from machinery.engine.health import UP
from machinery.engine.model import SecretRef
from machinery.services.prober import HealthProber
from machinery.services.secrets import Secrets

TOKEN = "Bearer from-a-file"
LITERAL = "literal-api-key"


class HeaderRecorder(ThreadingHTTPServer):
    """A service on loopback that keeps the headers of every request and answers ``{"message": "ok"}``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: HeaderRecorder

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        self.server.received.append(dict(self.headers))
        body = json.dumps({"message": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[HeaderRecorder]:
    server = HeaderRecorder()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def machinery(tmp_path: Path) -> Iterator[Machinery]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "UPPER_TOKEN").write_text(TOKEN + "\n")
    machinery = Machinery(Config(data_dir=tmp_path / "data", secrets_dir=secrets))
    yield machinery
    machinery.stop()
    machinery.store.close()


@pytest.fixture
def client(machinery: Machinery) -> FlaskClient:
    return create_app(machinery, {"TESTING": True}).test_client()


def run_one_step(client: FlaskClient, machinery: Machinery, url: str, headers: dict[str, Any]) -> dict[str, Any]:
    """Register ``upper`` with ``headers`` and a workflow calling it, send an event and run it; the event read."""
    message = [{"name": "message", "type": "string"}]
    service = {"name": "upper", "address": f"{url}/event", "headers": headers, "inputs": message, "outputs": message}
    assert client.post("/services", json=service).status_code == 201
    workflow = {"name": "shout", "services": ["upper"], "inputs": message, "outputs": message}
    assert client.post("/workflows", json=workflow).status_code == 201
    event_id = client.post("/e/shout", json={"data": {"message": "hi"}}).json["event_id"]
    machinery.runner.run(event_id, "upper")
    event: dict[str, Any] = client.get(f"/events/{event_id}").json
    return event


def test_a_call_carries_the_secret_read_from_its_file_and_no_record_holds_a_header_value(
    client: FlaskClient, machinery: Machinery, recorder: HeaderRecorder
) -> None:
    headers = {"Authorization": {"secret": "UPPER_TOKEN"}, "X-Api-Key": LITERAL}

    event = run_one_step(client, machinery, recorder.url, headers)

    assert event["status"] == "completed", event["error"]
    (received,) = recorder.received
    assert (received["Authorization"], received["X-Api-Key"]) == (TOKEN, LITERAL)
    assert "from-a-file" not in json.dumps(event) and LITERAL not in json.dumps(event)


def test_a_missing_secret_fails_the_step_at_once_naming_it_and_nothing_is_sent(
    client: FlaskClient, machinery: Machinery, recorder: HeaderRecorder
) -> None:
    headers = {"Authorization": {"secret": "UPPER_TOKEN"}, "X-Upstream-Token": {"secret": "NOT_THERE"}}

    event = run_one_step(client, machinery, recorder.url, headers)

    assert event["status"] == "failed"
    (step,) = event["steps"]
    assert (step["error"]["kind"], step["error"]["transient"]) == ("config", False)
    assert "NOT_THERE" in step["error"]["message"] and "MACHINERY_SECRET_NOT_THERE" in step["error"]["message"]
    assert "from-a-file" not in json.dumps(event)
    assert recorder.received == []


def probed_headers(machinery: Machinery, client: FlaskClient, recorder: HeaderRecorder, address: str) -> dict[str, str]:
    """Register ``upper`` at ``address`` with a secret and a plain header, its health check on ``recorder``, and
    probe it once: the headers the health check received."""
    service = {
        "name": "upper",
        "address": address,
        "healthcheck": f"{recorder.url}/healthcheck",
        "headers": {"Authorization": {"secret": "UPPER_TOKEN"}, "X-Tenant": "acme"},
    }
    assert client.post("/services", json=service).status_code == 201
    HealthProber(machinery.store, machinery.dispatcher, 2, 1.0, secrets=machinery.secrets).probe()
    assert machinery.store.health()["upper"].status == UP
    return recorder.received[0]


def test_the_health_check_carries_the_services_headers_with_its_secrets(
    machinery: Machinery, recorder: HeaderRecorder, client: FlaskClient
) -> None:
    headers = probed_headers(machinery, client, recorder, f"{recorder.url}/event")

    assert (headers["Authorization"], headers["X-Tenant"]) == (TOKEN, "acme")


def test_a_health_check_on_another_origin_is_asked_without_the_services_headers(
    machinery: Machinery, recorder: HeaderRecorder, client: FlaskClient
) -> None:
    headers = probed_headers(machinery, client, recorder, f"{recorder.url.replace('127.0.0.1', 'localhost')}/event")

    assert "Authorization" not in headers
    assert "X-Tenant" not in headers


def test_the_environment_is_read_before_the_directory_and_a_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "A").write_text("from-file\n\n")
    (tmp_path / "B").write_text("from-file")
    secrets = Secrets(tmp_path, env={"MACHINERY_SECRET_A": "from-env", "MACHINERY_SECRET_B": ""})

    assert secrets.value(SecretRef("A")) == "from-env"
    assert secrets.value(SecretRef("B")) == "from-file", "an empty variable counts as unset"
    assert Secrets(tmp_path, env={}).value(SecretRef("A")) == "from-file\n"
    assert Secrets(env={"MACHINERY_SECRET_A": "from-env"}).resolve({"X": SecretRef("A"), "Y": "y"}) == {
        "X": "from-env",
        "Y": "y",
    }


def test_a_missing_secret_is_named_and_no_value_is_said(tmp_path: Path) -> None:
    (tmp_path / "OTHER").write_text("s3cr3t")

    with pytest.raises(InvalidConfig, match="MISSING") as raised:
        Secrets(tmp_path, env={"MACHINERY_SECRET_OTHER": "s3cr3t"}).value(SecretRef("MISSING"))

    assert "s3cr3t" not in raised.value.message


@pytest.mark.parametrize("name", ["../secret", "..", "/etc/passwd", "a/../../b", ".hidden", "a b", "", "x" * 101])
def test_a_name_that_could_leave_the_directory_is_refused(name: str) -> None:
    with pytest.raises(InvalidDefinition, match="no secret's name"):
        SecretRef(name)


def test_the_secrets_directory_is_a_setting() -> None:
    assert Config.from_env({"MACHINERY_SECRETS_DIR": "/run/secrets"}).secrets_dir == Path("/run/secrets")
    assert Config.from_env({}).secrets_dir is None
