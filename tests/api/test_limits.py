"""The bounds on what a request may hold: its size and how deeply its JSON nests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from tests.api import error
from tests.support import ScriptedService

SERVICE = {"name": "upper", "address": "http://upper.local:5000/"}


def nested(depth: int) -> str:
    """A JSON array holding an array, ``depth`` deep, written by hand: ``json.dumps`` would recurse."""
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [65, 50_000])
def test_an_event_nested_deeper_than_the_limit_answers_400_naming_it(
    client: FlaskClient, workflow: dict[str, Any], depth: int
) -> None:
    body = f'{{"data": {{"message": {nested(depth - 2)}}}}}'
    response = client.post("/e/process-text", data=body, content_type="application/json")
    assert "64" in error(response, 400)["message"]
    assert client.get("/events").json == []


def test_a_service_nested_deeper_than_the_limit_answers_400_and_nothing_is_stored(client: FlaskClient) -> None:
    body = '{"name": "upper", "address": "http://upper.local/", "headers": ' + '{"a": ' * 50_000 + "{}" + "}" * 50_001
    assert (
        "nests deeper than 64"
        in error(client.post("/services", data=body, content_type="application/json"), 400)["message"]
    )
    assert client.get("/services").json == []


def test_brackets_inside_strings_do_not_count_as_nesting(client: FlaskClient) -> None:
    text = '[{\\"' * 100
    body = f'{{"name": "upper", "address": "http://upper.local/", "description": "{text}"}}'
    assert client.post("/services", data=body, content_type="application/json").status_code == 201


def test_json_nested_as_deep_as_the_limit_is_read(client: FlaskClient, workflow: dict[str, Any]) -> None:
    body = f'{{"data": {{"message": {nested(62)}}}}}'
    response = client.post("/e/process-text", data=body, content_type="application/json")
    assert response.status_code == 422, response.json  # read, and found to be no string


def test_the_depth_limit_and_the_body_limit_come_from_the_configuration(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path, max_json_depth=3, max_request_bytes=100))
    client = create_app(machinery, {"TESTING": True}).test_client()
    try:
        deep = '{"name": "upper", "address": "http://upper.local/", "headers": {"a": {"b": {}}}}'
        assert (
            "nests deeper than 3"
            in error(client.post("/services", data=deep, content_type="application/json"), 400)["message"]
        )
        big = SERVICE | {"description": "x" * 100}
        assert "100 bytes" in error(client.post("/services", json=big), 413)["message"]
    finally:
        machinery.store.close()


def test_the_limits_are_read_from_the_environment() -> None:
    config = Config.from_env(
        {"MACHINERY_MAX_REQUEST_BYTES": "2048", "MACHINERY_MAX_JSON_DEPTH": "8", "MACHINERY_MAX_RESPONSE_BYTES": "10"}
    )
    assert (config.max_request_bytes, config.max_json_depth, config.max_response_bytes) == (2048, 8, 10)
    assert Config.from_env({}).max_request_bytes == 1024 * 1024


def test_a_data_filter_nested_deeper_than_the_limit_answers_422(client: FlaskClient) -> None:
    body = error(client.get("/events", query_string={"data": '{"a": ' + nested(50_000) + "}"}), 422)
    assert body["errors"] == {"data": ["nests deeper than 64 levels (MACHINERY_MAX_JSON_DEPTH)"]}


def test_a_service_answering_more_than_the_limit_fails_its_step_naming_the_limit(tmp_path: Path) -> None:
    service = ScriptedService([(200, {"message": "x" * 2000})]).start()
    machinery = Machinery(Config(data_dir=tmp_path, max_response_bytes=1000))
    client = create_app(machinery, {"TESTING": True}).test_client()
    message = {"name": "message", "type": "string"}
    try:
        definition = {"name": "big", "address": service.url, "inputs": [message], "outputs": [message]}
        assert client.post("/services", json=definition).status_code == 201
        workflow = {"name": "big", "services": ["big"], "inputs": [message], "outputs": [message]}
        assert client.post("/workflows", json=workflow).status_code == 201
        event_id = client.post("/e/big", json={"data": {"message": "hi"}}).json["event_id"]
        machinery.runner.run(event_id, "big")
        event = client.get(f"/events/{event_id}").json
    finally:
        machinery.store.close()
        service.stop()
    assert event["status"] == "failed"
    (step,) = event["steps"]
    assert (step["error"]["kind"], step["error"]["transient"], step["attempts"]) == ("size", False, 1)
    assert "over the limit of 1000 bytes (MACHINERY_MAX_RESPONSE_BYTES)" in step["error"]["message"]
