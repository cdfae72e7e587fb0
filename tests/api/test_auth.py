"""Bearer tokens: with MACHINERY_API_TOKENS set, the API answers only requests carrying one of them."""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask.testing import FlaskClient

from machinery.api import create_app, dashboard
from machinery.bootstrap import Config, Machinery, Role

TOKENS = ("first-token", "second-token")
CHALLENGE = 'Bearer realm="machinery"'
SERVICE = {
    "name": "upper",
    "address": "http://127.0.0.1:5001/event",
    "inputs": [{"name": "message", "type": "string"}],
    "outputs": [{"name": "message", "type": "string"}],
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[FlaskClient]:
    """A client of an app whose machinery is configured with ``TOKENS``."""
    machinery = Machinery(Config(data_dir=tmp_path, api_tokens=dict.fromkeys(TOKENS, Role.ADMIN)))
    yield create_app(machinery, {"TESTING": True}).test_client()
    machinery.store.close()


def assert_refused(response: Any, message: str) -> None:
    assert response.status_code == 401
    assert response.json == {"code": 401, "status": "Unauthorized", "message": message}
    assert response.headers["WWW-Authenticate"] == CHALLENGE


def test_a_request_without_a_token_is_refused_with_401_in_the_apis_error_shape(secured: FlaskClient) -> None:
    assert_refused(secured.get("/services"), "no bearer token: send Authorization: Bearer <token>")


def test_a_token_that_is_not_configured_is_refused(secured: FlaskClient) -> None:
    assert_refused(secured.get("/services", headers=bearer("third-token")), "the bearer token is not valid")


@pytest.mark.parametrize("token", TOKENS)
def test_each_configured_token_is_accepted_so_that_tokens_can_be_rotated(secured: FlaskClient, token: str) -> None:
    assert secured.get("/services", headers=bearer(token)).status_code == 200


def test_every_token_is_compared_even_after_one_matches(secured: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return a == b

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    assert secured.get("/services", headers=bearer(TOKENS[0])).status_code == 200
    assert compared == [token.encode() for token in TOKENS]


def test_the_bearer_scheme_is_case_insensitive(secured: FlaskClient) -> None:
    for scheme in ("bearer", "BEARER", "BeArEr"):
        response = secured.get("/services", headers={"Authorization": f"{scheme} {TOKENS[1]}"})
        assert response.status_code == 200, scheme


@pytest.mark.parametrize(
    "authorization", ["Basic Zmlyc3QtdG9rZW46", f"Token {TOKENS[0]}", TOKENS[0], "Bearer", "Bearer  "]
)
def test_other_schemes_and_empty_tokens_are_refused_as_no_bearer_token(
    secured: FlaskClient, authorization: str
) -> None:
    response = secured.get("/services", headers={"Authorization": authorization})
    assert_refused(response, "no bearer token: send Authorization: Bearer <token>")


def test_an_unknown_path_is_refused_without_a_token_rather_than_found_missing(secured: FlaskClient) -> None:
    assert secured.get("/no-such-thing").status_code == 401
    assert secured.get("/no-such-thing", headers=bearer(TOKENS[0])).status_code == 404


def test_the_probes_documentation_and_dashboard_shell_answer_without_a_token(secured: FlaskClient) -> None:
    assert secured.get("/healthcheck").status_code == 204
    assert secured.get("/readiness").status_code == 200
    assert secured.get("/openapi.json").status_code == 200
    docs = secured.get("/docs", follow_redirects=True)
    assert docs.status_code == 200
    for asset in re.findall(r'(?:src|href)="(/docs/[^"]+\.(?:js|css))"', docs.get_data(as_text=True)):
        assert secured.get(asset).status_code == 200, asset
    modules = [f"/ui/static/{path.name}" for path in Path(str(dashboard.bp.static_folder)).glob("*.js")]
    for path in ("/", "/ui", "/ui/static/app.css", *modules):
        assert secured.get(path).status_code == 200, path


def test_the_dashboards_data_and_the_metrics_are_protected(secured: FlaskClient) -> None:
    for path in ("/workflows", "/events", "/workflows/process-text/graph.svg", "/metrics"):
        assert secured.get(path).status_code == 401, path
    assert secured.get("/metrics", headers=bearer(TOKENS[0])).status_code == 200


def test_a_refused_request_stores_nothing(secured: FlaskClient) -> None:
    assert secured.post("/services", json=SERVICE).status_code == 401
    assert secured.post("/services", json=SERVICE, headers=bearer("wrong")).status_code == 401

    listed = secured.get("/services", headers=bearer(TOKENS[0]))

    assert listed.status_code == 200
    assert listed.json == []


def test_an_authorised_request_is_processed(secured: FlaskClient) -> None:
    assert secured.post("/services", json=SERVICE, headers=bearer(TOKENS[1])).status_code == 201
    assert [s["name"] for s in secured.get("/services", headers=bearer(TOKENS[0])).json] == ["upper"]


def test_without_tokens_the_api_is_open(client: FlaskClient) -> None:
    assert client.post("/services", json=SERVICE).status_code == 201
    assert client.get("/services").status_code == 200
    assert client.get("/services", headers=bearer("anything")).status_code == 200
    assert "security" not in client.get("/openapi.json").json


def test_the_tokens_are_read_from_the_environment_without_blanks_or_empty_items() -> None:
    config = Config.from_env({"MACHINERY_API_TOKENS": " first-token , second-token,, ,"})
    assert list(config.api_tokens) == list(TOKENS)


@pytest.mark.parametrize("env", [{}, {"MACHINERY_API_TOKENS": ""}, {"MACHINERY_API_TOKENS": " , "}])
def test_an_empty_or_missing_token_list_means_no_tokens(env: dict[str, str]) -> None:
    assert Config.from_env(env).api_tokens == {}


def test_the_tokens_do_not_show_in_the_configs_repr() -> None:
    assert "first-token" not in repr(Config(api_tokens=dict.fromkeys(TOKENS, Role.ADMIN)))


def test_the_openapi_document_declares_the_bearer_scheme_and_requires_it_but_for_the_probes(
    secured: FlaskClient,
) -> None:
    document = secured.get("/openapi.json").json
    assert document["components"]["securitySchemes"] == {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/healthcheck"]["get"]["security"] == []
    assert document["paths"]["/readiness"]["get"]["security"] == []
    assert "security" not in document["paths"]["/services"]["get"]
    schemathesis.openapi.from_dict(document).validate()


def test_without_tokens_the_openapi_document_still_declares_the_scheme(client: FlaskClient) -> None:
    document = client.get("/openapi.json").json
    assert document["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
