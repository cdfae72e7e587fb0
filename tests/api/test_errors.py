"""Every error, whatever raised it, answers in one JSON shape, and a refused request stores nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from machinery.engine.errors import (
    Conflict,
    GraphvizMissing,
    InvalidData,
    InvalidDefinition,
    InvalidExpression,
    InvalidState,
    MachineryError,
    NotFound,
    Problem,
)
from tests.api import error

SERVICE = {"name": "upper", "address": "http://upper.local:5000/"}


def nothing_stored(client: FlaskClient) -> bool:
    return client.get("/services").json == []


def test_malformed_json_is_refused_with_400_and_nothing_is_stored(client: FlaskClient) -> None:
    body = error(client.post("/services", data='{"name": "upper",', content_type="application/json"), 400)
    assert body["message"] == "Invalid JSON body."
    assert nothing_stored(client)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_sent_as_json_is_refused_with_415_and_nothing_is_stored(
    client: FlaskClient, content_type: str | None
) -> None:
    body = error(client.post("/services", data='{"name": "upper"}', content_type=content_type), 415)
    assert "application/json" in body["message"]
    assert nothing_stored(client)


def test_an_unknown_field_is_refused_with_422_naming_it_and_nothing_is_stored(client: FlaskClient) -> None:
    body = error(client.post("/services", json=SERVICE | {"colour": "blue"}), 422)
    assert body["errors"] == {"colour": ["Unknown field."]}
    assert "colour" in body["message"]
    assert nothing_stored(client)


def test_a_field_of_the_wrong_type_is_refused_with_422_naming_it(client: FlaskClient) -> None:
    body = error(client.post("/services", json=SERVICE | {"timeout": "slow"}), 422)
    assert body["errors"] == {"timeout": ["Not a valid number."]}
    assert nothing_stored(client)


def test_a_wrong_nested_field_is_named_by_its_dotted_path(client: FlaskClient) -> None:
    inputs = [{"name": "message", "type": "string"}, {"name": "size", "type": "integer"}]
    body = error(client.post("/services", json=SERVICE | {"inputs": inputs}), 422)
    assert list(body["errors"]) == ["inputs.1.type"]


def test_a_body_that_is_no_object_is_refused_with_422(client: FlaskClient) -> None:
    body = error(client.post("/services", json=[SERVICE]), 422)
    assert body["message"] == "Invalid input type."
    assert "errors" not in body


def test_an_oversized_body_is_refused_with_413_and_nothing_is_stored(client: FlaskClient) -> None:
    big = SERVICE | {"description": "x" * (1024 * 1024)}
    error(client.post("/services", json=big), 413)
    assert nothing_stored(client)


def test_an_unknown_route_answers_404_in_json(client: FlaskClient) -> None:
    error(client.get("/nothing/here"), 404)


def test_a_wrong_method_answers_405_in_json_with_the_methods_allowed(client: FlaskClient) -> None:
    response = client.patch("/services")
    error(response, 405)
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (InvalidDefinition("bad definition", [Problem("no", step="a", field="b")]), 422),
        (InvalidData("bad data", [Problem("no", field="b", expected="int", found="string")]), 422),
        (NotFound("no such thing"), 404),
        (Conflict("taken"), 409),
        (InvalidState("too late"), 409),
        (InvalidExpression("does not compile"), 422),
        (GraphvizMissing("no dot"), 503),
    ],
)
def test_each_domain_error_answers_its_one_status_with_its_problems(
    app: Flask, client: FlaskClient, raised: MachineryError, code: int
) -> None:
    app.add_url_rule("/raise", view_func=lambda: _raise(raised))
    body = error(client.get("/raise"), code)
    assert body["message"] == raised.message
    assert body.get("problems", []) == [p.to_dict() for p in raised.problems]


def test_an_unexpected_exception_answers_500_in_json_and_is_logged_as_an_error(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/raise", view_func=lambda: _raise(RuntimeError("secret detail")))
    body = error(client.get("/raise"), 500)
    assert "secret detail" not in body["message"]
    assert any(r.levelno == logging.ERROR and r.name == "machinery.api.errors" for r in caplog.records)


def test_client_errors_are_logged_as_warnings(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "machinery.api.errors")
    client.get("/services/nothing")
    (record,) = [r for r in caplog.records if r.name == "machinery.api.errors"]
    assert record.levelno == logging.WARNING
    assert "404" in record.getMessage()


def _raise(exception: Exception) -> Any:
    raise exception
