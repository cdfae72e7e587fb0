"""The management API of services."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.bootstrap import Machinery
from machinery.engine.model import SecretRef
from tests.api import error

UPPER = {"name": "upper", "address": "http://upper.local:5000/"}


def test_registering_a_service_answers_201_with_it_as_stored(client: FlaskClient) -> None:
    response = client.post("/services", json=UPPER)
    assert response.status_code == 201
    service = response.json
    assert service["id"]
    assert service["revision"] == 1
    assert service["name"] == "upper"
    assert service["retry"]["attempts"] == 3, "defaults are filled in"
    assert client.get("/services/upper").json == service


def test_a_service_reads_back_as_it_was_written(client: FlaskClient) -> None:
    inputs = [{"name": "message", "type": "string"}, {"name": "words", "type": "array", "items": "string"}]
    client.post("/services", json=UPPER | {"inputs": inputs})
    message, words = client.get("/services/upper").json["inputs"]
    assert message == {"name": "message", "type": "string", "description": ""}
    assert words == {"name": "words", "type": "array", "items": "string", "description": ""}


def test_registering_a_name_twice_answers_409(client: FlaskClient) -> None:
    client.post("/services", json=UPPER)
    body = error(client.post("/services", json=UPPER | {"address": "http://other.local/"}), 409)
    assert "upper" in body["message"]
    assert client.get("/services/upper").json["address"] == UPPER["address"]


def test_an_invalid_contract_answers_422_with_its_problems(client: FlaskClient) -> None:
    inputs = [{"name": "size", "type": "int", "default": "big"}]
    body = error(client.post("/services", json=UPPER | {"inputs": inputs}), 422)
    assert [p["field"] for p in body["problems"]] == ["size"]


def test_reading_an_unknown_service_answers_404(client: FlaskClient) -> None:
    body = error(client.get("/services/upper"), 404)
    assert "upper" in body["message"]


def test_services_are_listed_by_name_a_page_at_a_time(client: FlaskClient) -> None:
    for name in ("c", "a", "b"):
        client.post("/services", json=UPPER | {"name": name})
    response = client.get("/services?page=2&page_size=2")
    assert response.status_code == 200
    assert [s["name"] for s in response.json] == ["c"]
    assert json.loads(response.headers["X-Pagination"]) == {
        "total": 3,
        "total_pages": 2,
        "first_page": 1,
        "last_page": 2,
        "page": 2,
        "previous_page": 1,
    }


def test_a_page_past_the_last_is_empty(client: FlaskClient) -> None:
    client.post("/services", json=UPPER)
    response = client.get(f"/services?page={10**30}")
    assert response.status_code == 200
    assert response.json == []
    assert json.loads(response.headers["X-Pagination"])["total"] == 1


def test_an_invalid_page_size_answers_422_naming_it(client: FlaskClient) -> None:
    body = error(client.get("/services?page_size=0"), 422)
    assert list(body["errors"]) == ["page_size"]


def test_replacing_a_service_answers_200_with_its_next_revision(client: FlaskClient) -> None:
    created = client.post("/services", json=UPPER).json
    response = client.put("/services/upper", json=UPPER | {"timeout": 2})
    assert response.status_code == 200
    assert response.json["id"] == created["id"]
    assert response.json["revision"] == 2
    assert client.get("/services/upper").json["timeout"] == 2


def test_replacing_an_unknown_service_answers_404(client: FlaskClient) -> None:
    error(client.put("/services/upper", json=UPPER), 404)


def test_a_service_cannot_be_renamed(client: FlaskClient) -> None:
    client.post("/services", json=UPPER)
    body = error(client.put("/services/upper", json=UPPER | {"name": "shout"}), 422)
    assert body["problems"][0]["field"] == "name"


def test_a_change_that_would_break_a_workflow_answers_409_naming_it_and_what_breaks(
    client: FlaskClient, workflow: dict[str, Any], text_services: list[dict[str, Any]]
) -> None:
    space_counter = text_services[2]
    as_text = space_counter | {"outputs": [{"name": "space_count", "type": "string"}]}
    body = error(client.put("/services/space-counter", json=as_text), 409)
    assert "process-text" in body["message"]
    (problem,) = body["problems"]
    assert "process-text" in problem["message"]
    assert problem["field"] == "space_count"
    assert client.get("/services/space-counter").json["revision"] == 1


def test_deleting_a_service_answers_204_and_it_is_gone(client: FlaskClient) -> None:
    client.post("/services", json=UPPER)
    response = client.delete("/services/upper")
    assert response.status_code == 204
    assert response.data == b""
    error(client.get("/services/upper"), 404)


def test_deleting_a_service_a_workflow_uses_answers_409_naming_the_workflow(
    client: FlaskClient, workflow: dict[str, Any]
) -> None:
    body = error(client.delete("/services/reverse"), 409)
    assert "process-text" in body["message"] + json.dumps(body.get("problems", []))
    assert client.get("/services/reverse").status_code == 200


def test_deleting_an_unknown_service_answers_404(client: FlaskClient) -> None:
    error(client.delete("/services/upper"), 404)


CREDENTIALS = {
    "Authorization": "Bearer s3cr3t",
    "proxy-authorization": "Basic czNjcjN0",
    "Cookie": "session=s3cr3t",
    "X-Api-Key": "s3cr3t",
    "X-Auth-Token": "s3cr3t",
    "X-Client-Secret": "s3cr3t",
    "X-DB-PASSWORD": "s3cr3t",
}


def test_reads_redact_literal_credentials_and_show_secret_references_and_other_headers(
    client: FlaskClient, machinery: Machinery
) -> None:
    headers = CREDENTIALS | {"X-Upstream": {"secret": "UPSTREAM_TOKEN"}, "X-Tenant": "acme"}
    created = client.post("/services", json=UPPER | {"headers": headers})

    shown = dict.fromkeys(CREDENTIALS, "<redacted>") | {"X-Upstream": {"secret": "UPSTREAM_TOKEN"}, "X-Tenant": "acme"}
    assert created.json["headers"] == shown
    assert client.get("/services/upper").json["headers"] == shown
    assert client.get("/services").json[0]["headers"] == shown
    stored = machinery.store.get_service("upper").endpoint.headers
    assert stored == CREDENTIALS | {"X-Upstream": SecretRef("UPSTREAM_TOKEN"), "X-Tenant": "acme"}


def test_a_document_read_back_redacted_is_refused_rather_than_stored(client: FlaskClient, machinery: Machinery) -> None:
    client.post("/services", json=UPPER | {"headers": {"Authorization": "Bearer s3cr3t"}})
    read = {k: v for k, v in client.get("/services/upper").json.items() if k not in ("id", "revision")}

    body = error(client.put("/services/upper", json=read | {"timeout": 2}), 422)

    (message,) = body["errors"]["headers.Authorization"]
    assert "send the value" in message and "secret" in message
    assert machinery.store.get_service("upper").endpoint.headers == {"Authorization": "Bearer s3cr3t"}


@pytest.mark.parametrize(
    "value",
    [{"secret": "../../etc/passwd"}, {"secret": "a/b"}, {"secret": ""}, {"secret": 3}, {"name": "TOKEN"}, 3, None],
)
def test_a_header_neither_a_string_nor_a_secret_reference_to_a_safe_name_answers_422(
    client: FlaskClient, value: Any
) -> None:
    body = error(client.post("/services", json=UPPER | {"headers": {"Authorization": value}}), 422)
    assert list(body["errors"]) == ["headers.Authorization"]
    error(client.get("/services/upper"), 404)
