"""The API over a real machinery: the embedded SQLite store under tmp_path, and no worker.

Events stay where the API leaves them unless a test runs a step itself with
``machinery.runner.run``, against a scripted service on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from examples.services import DEFINITIONS, EXAMPLES
from machinery.api import create_app
from machinery.bootstrap import Config, Machinery, Role
from tests.support import ScriptedService

SEED = Path(__file__).parents[1] / "fixtures" / "seed"
SERVICES = ("upper", "reverse", "space-counter")
ROLE_TOKENS = {Role.ADMIN: "admin-token", Role.PRODUCER: "producer-token", Role.READER: "reader-token"}
ROLES_SETTING = "admin:admin-token, producer:producer-token, reader:reader-token, bare-token, reader:to:ken"
"""``MACHINERY_API_TOKENS`` with ``ROLE_TOKENS``, a bare token and a reader's token that contains ':'."""


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture
def machinery(tmp_path: Path) -> Iterator[Machinery]:
    machinery = Machinery(Config(data_dir=tmp_path))
    yield machinery
    machinery.stop()
    machinery.store.close()


@pytest.fixture
def app(machinery: Machinery) -> Flask:
    return create_app(machinery, {"TESTING": True})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def seed_services() -> list[dict[str, Any]]:
    """The seed's services as its README gave them: space-counter answers its count as a string ``message``."""
    return [read(SEED / f"service-{name}.json") for name in SERVICES]


@pytest.fixture
def seed_workflow() -> dict[str, Any]:
    """The seed's ``process-text``, which promises a ``space_count`` no service produces."""
    return read(SEED / "workflow-process-text.json")


@pytest.fixture(scope="session")
def serve() -> Iterator[Callable[[list[Any]], str]]:
    """Start a :class:`ScriptedService` on loopback from its script and give its URL; all stop with the session."""
    started: list[ScriptedService] = []

    def start(script: list[Any]) -> str:
        started.append(ScriptedService(script).start())
        return started[-1].url

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def example_addresses(serve: Callable[[list[Any]], str]) -> dict[str, str]:
    """The example services, answering on loopback as ``examples.services`` does."""
    return {name: serve([EXAMPLES[name][1]]) for name in SERVICES}


@pytest.fixture
def text_services(example_addresses: dict[str, str]) -> list[dict[str, Any]]:
    """The corrected example services: space-counter declares ``space_count: int``."""
    return [read(DEFINITIONS / f"service-{name}.json") | {"address": example_addresses[name]} for name in SERVICES]


@pytest.fixture
def process_text() -> dict[str, Any]:
    """The corrected example workflow: outputs ``message: string`` and ``space_count: int``."""
    return read(DEFINITIONS / "workflow-process-text.json")


@pytest.fixture
def workflow(client: FlaskClient, text_services: list[dict[str, Any]], process_text: dict[str, Any]) -> dict[str, Any]:
    """``process-text`` registered with its three services; what the API answered for it."""
    for service in text_services:
        assert client.post("/services", json=service).status_code == 201
    response = client.post("/workflows", json=process_text)
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def app_with_roles(
    tmp_path: Path, text_services: list[dict[str, Any]], process_text: dict[str, Any]
) -> Iterator[Flask]:
    """An app whose tokens are read from ``ROLES_SETTING``, where an admin registered ``process-text``."""
    machinery = Machinery(Config.from_env({"MACHINERY_DATA_DIR": str(tmp_path), "MACHINERY_API_TOKENS": ROLES_SETTING}))
    app = create_app(machinery, {"TESTING": True})
    admin = {"Authorization": f"Bearer {ROLE_TOKENS[Role.ADMIN]}"}
    client = app.test_client()
    for service in text_services:
        assert client.post("/services", json=service, headers=admin).status_code == 201
    assert client.post("/workflows", json=process_text, headers=admin).status_code == 201
    yield app
    machinery.stop()
    machinery.store.close()
