"""The callback routes: their answers to tokens nobody waits with, to bodies they cannot take, and that they ask
for no bearer token, the URL being the credential."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery, Role
from machinery.engine.calls import callback_token


@pytest.mark.parametrize(
    "token",
    ["garbage", callback_token("no-such-event", "slow", "claim")],
)
def test_a_callback_under_a_token_nobody_waits_with_is_not_found(client: FlaskClient, token: str) -> None:
    response = client.post(f"/callbacks/{token}", json={"outputs": {}})
    assert response.status_code == 404
    assert client.post(f"/callbacks/{token}/heartbeat").status_code == 404


@pytest.mark.parametrize("body", [{}, {"outputs": {}, "error": {"message": "no"}}, {"error": {"transient": True}}])
def test_a_callback_needs_its_outputs_or_its_error(client: FlaskClient, body: dict[str, object]) -> None:
    response = client.post(f"/callbacks/{callback_token('e', 's', 'c')}", json=body)
    assert response.status_code == 422


def test_the_callback_routes_ask_for_no_bearer_token_while_the_others_do(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path, api_tokens={"s3cr3t": Role.ADMIN}))
    client = create_app(machinery, {"TESTING": True}).test_client()
    assert client.post(f"/callbacks/{callback_token('e', 's', 'c')}", json={"outputs": {}}).status_code == 404
    assert client.get("/events").status_code == 401
    document = client.get("/openapi.json").json
    assert document["paths"]["/callbacks/{token}"]["post"]["security"] == []
    machinery.stop()
