"""Roles: a reader's token reads, a producer's sends and acts on events too, an admin's does everything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from machinery.api import auth, create_app
from machinery.bootstrap import Config, Machinery, Role
from machinery.engine.errors import InvalidConfig
from tests.api.conftest import ROLE_TOKENS, ROLES_SETTING
from tests.api.test_auth import bearer

REQUESTS = [
    ("GET", "/services", Role.READER),
    ("GET", "/workflows/process-text", Role.READER),
    ("GET", "/workflows/process-text/graph.dot", Role.READER),
    ("GET", "/events", Role.READER),
    ("GET", "/health/services", Role.READER),
    ("GET", "/metrics", Role.READER),
    ("GET", "/whoami", Role.READER),
    ("GET", "/schedules", Role.READER),
    ("GET", "/schedules/no-such-schedule/next", Role.READER),
    ("GET", "/schedules/no-such-schedule/events", Role.READER),
    ("GET", "/fleets", Role.READER),
    ("GET", "/fleets/no-such-fleet/workloads", Role.READER),
    ("GET", "/fleets/no-such-fleet/events", Role.READER),
    ("GET", "/fleets/no-such-fleet/counts", Role.READER),
    ("GET", "/fleets/no-such-fleet/runs", Role.READER),
    ("GET", "/fleets/no-such-fleet/workloads/w1/events", Role.READER),
    ("GET", "/hosts", Role.READER),
    ("POST", "/e/process-text", Role.PRODUCER),
    ("POST", "/events/retry", Role.PRODUCER),
    ("POST", "/events/no-such-event/cancel", Role.PRODUCER),
    ("POST", "/events/no-such-event/signals/approve", Role.PRODUCER),
    ("POST", "/fleets/no-such-fleet/tasks", Role.PRODUCER),
    ("POST", "/services", Role.ADMIN),
    ("PUT", "/workflows/process-text", Role.ADMIN),
    ("DELETE", "/services/upper", Role.ADMIN),
    ("POST", "/schedules", Role.ADMIN),
    ("POST", "/schedules/no-such-schedule/pause", Role.ADMIN),
    ("POST", "/schedules/no-such-schedule/resume", Role.ADMIN),
    ("DELETE", "/schedules/no-such-schedule", Role.ADMIN),
    ("POST", "/fleets", Role.ADMIN),
    ("PUT", "/fleets/no-such-fleet", Role.ADMIN),
    ("DELETE", "/fleets/no-such-fleet", Role.ADMIN),
    ("POST", "/fleets/no-such-fleet/workloads", Role.ADMIN),
    ("DELETE", "/fleets/no-such-fleet/workloads", Role.ADMIN),
]
"""Representative requests and the role each needs; their bodies are empty, so those let through may be 4xx."""


@pytest.fixture
def app(app_with_roles: Flask) -> Flask:
    return app_with_roles


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("method", "path", "needed"), REQUESTS)
def test_a_token_may_make_the_requests_of_its_role_and_of_those_below_it_only(
    client: FlaskClient, role: Role, method: str, path: str, needed: Role
) -> None:
    response = client.open(path, method=method, headers=bearer(ROLE_TOKENS[role]))
    if role.includes(needed):
        assert response.status_code not in (401, 403), response.json
    else:
        assert response.status_code == 403
        assert response.json == {
            "code": 403,
            "status": "Forbidden",
            "message": f"the {role} token may not {method} {path}: that needs the {needed} role",
        }


def test_a_refused_request_changes_nothing_and_is_no_challenge_to_authenticate_again(client: FlaskClient) -> None:
    response = client.delete("/services/upper", headers=bearer(ROLE_TOKENS[Role.PRODUCER]))
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response.headers
    assert client.get("/services/upper", headers=bearer(ROLE_TOKENS[Role.READER])).status_code == 200


def test_a_producer_sends_and_cancels_events_that_a_reader_follows_but_may_not_touch(client: FlaskClient) -> None:
    producer, reader = bearer(ROLE_TOKENS[Role.PRODUCER]), bearer(ROLE_TOKENS[Role.READER])
    sent = client.post("/e/process-text", json={"data": {"message": "a b"}}, headers=producer)
    assert sent.status_code == 202
    event = f"/events/{sent.json['event_id']}"

    assert client.post(f"{event}/cancel", headers=reader).status_code == 403
    assert client.get(event, headers=reader).json["status"] == "accepted"
    assert client.post(f"{event}/cancel", headers=producer).json["status"] == "cancelled"
    assert client.get(event, headers=reader).json["status"] == "cancelled"


def test_a_bare_token_is_an_admins_so_that_configurations_without_roles_keep_working(client: FlaskClient) -> None:
    assert client.get("/whoami", headers=bearer("bare-token")).json["role"] == "admin"
    assert client.delete("/workflows/process-text", headers=bearer("bare-token")).status_code == 204


def test_a_token_that_contains_a_colon_is_written_after_its_role(client: FlaskClient) -> None:
    assert client.get("/whoami", headers=bearer("to:ken")).json["role"] == "reader"
    assert client.get("/whoami", headers=bearer("reader:to:ken")).status_code == 401


@pytest.mark.parametrize(
    ("role", "roles"),
    [
        (Role.ADMIN, ["reader", "producer", "admin"]),
        (Role.PRODUCER, ["reader", "producer"]),
        (Role.READER, ["reader"]),
    ],
)
def test_whoami_answers_the_tokens_role_and_those_it_includes(
    client: FlaskClient, role: Role, roles: list[str]
) -> None:
    assert client.get("/whoami", headers=bearer(ROLE_TOKENS[role])).json == {"role": role.value, "roles": roles}


def test_whoami_needs_a_token_like_the_rest_of_the_api(client: FlaskClient) -> None:
    assert client.get("/whoami").status_code == 401
    assert client.get("/whoami", headers=bearer("unknown")).status_code == 401


def test_without_tokens_whoami_answers_admin_as_the_api_is_open(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path))
    try:
        assert create_app(machinery).test_client().get("/whoami").json["role"] == "admin"
    finally:
        machinery.store.close()


def test_an_unknown_path_is_not_found_rather_than_forbidden_whatever_the_role(client: FlaskClient) -> None:
    assert client.post("/no-such-thing", headers=bearer(ROLE_TOKENS[Role.READER])).status_code == 404
    assert client.patch("/services", headers=bearer(ROLE_TOKENS[Role.READER])).status_code == 405


def unprotected(app: Flask) -> list[str]:
    """The methods of ``app``'s endpoints that ask a token but say no role, as ``METHOD endpoint``."""
    return [
        f"{method} {rule.endpoint}"
        for rule in app.url_map.iter_rules()
        if rule.endpoint.rpartition(".")[0] not in auth.OPEN_BLUEPRINTS and rule.endpoint not in auth.OPEN_ENDPOINTS
        # Flask answers HEAD with GET's view and OPTIONS itself.
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if auth.required_role(app.view_functions[rule.endpoint], method) is None
    ]


def test_every_endpoint_says_the_role_it_needs(app: Flask) -> None:
    assert unprotected(app) == []


def test_an_endpoint_that_says_no_role_is_found_and_needs_an_admins_token(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path, api_tokens={token: role for role, token in ROLE_TOKENS.items()}))
    app = create_app(machinery)
    app.add_url_rule("/forgotten", "forgotten", lambda: "", methods=["GET", "POST"])
    assert unprotected(app) == ["GET forgotten", "POST forgotten"]
    client = app.test_client()
    assert client.get("/forgotten", headers=bearer(ROLE_TOKENS[Role.PRODUCER])).status_code == 403
    assert client.get("/forgotten", headers=bearer(ROLE_TOKENS[Role.ADMIN])).status_code == 200
    machinery.store.close()


def test_the_openapi_document_says_the_role_each_operation_needs_but_the_open_probes(
    app: Flask, client: FlaskClient
) -> None:
    enforced = {
        (method.lower(), re.sub(r"<(?:[^>]*:)?([^>:]+)>", r"{\1}", rule.rule)): auth.required_role(
            app.view_functions[rule.endpoint], method
        )
        for rule in app.url_map.iter_rules()
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = 0
    for path, operations in client.get("/openapi.json").json["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            if operation.get("security") == []:
                assert "x-machinery-role" not in operation, path
                continue
            role = operation["x-machinery-role"]
            assert role == enforced[method, path], (method, path)
            assert f"this needs a token whose role is {role}" in operation["description"], (method, path)
            documented += 1
    assert documented == len([r for r in enforced.values() if r]) - 1  # all but /metrics, which is not documented


def test_a_role_joins_the_description_of_an_operation_that_has_one() -> None:
    def view() -> None:
        """Summary

        What it does.
        """

    description = auth.requires(Role.PRODUCER)(view)._apidoc["manual_doc"]["description"]  # type: ignore[attr-defined]
    assert description == "What it does.\n\nWith tokens configured, this needs a token whose role is producer or admin."


def test_roles_are_read_from_the_environment() -> None:
    assert Config.from_env({"MACHINERY_API_TOKENS": ROLES_SETTING}).api_tokens == {
        "admin-token": Role.ADMIN,
        "producer-token": Role.PRODUCER,
        "reader-token": Role.READER,
        "bare-token": Role.ADMIN,
        "to:ken": Role.READER,
    }


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "reader:a, raeder:secret",
            "MACHINERY_API_TOKENS, token 2: what comes before its first ':' is not a role (admin, producer or "
            "reader); a token that contains ':' is written after its role, as in admin:<token>",
        ),
        ("a, b, secret:part", "MACHINERY_API_TOKENS, token 3: what comes before its first ':' is not a role"),
        ("Admin:secret", "MACHINERY_API_TOKENS, token 1: what comes before its first ':' is not a role"),
        ("a,, reader: ", "MACHINERY_API_TOKENS, token 2: the role reader has no token after it"),
        ("admin:secret, reader:secret", "MACHINERY_API_TOKENS, token 2: the same token is listed before it"),
    ],
)
def test_a_setting_that_cannot_be_read_is_a_configuration_error_that_shows_no_token(setting: str, message: str) -> None:
    with pytest.raises(InvalidConfig) as raised:
        Config.from_env({"MACHINERY_API_TOKENS": setting})
    assert raised.value.message.startswith(message)
    assert "secret" not in raised.value.message
    assert raised.value.__context__ is None
