"""Registration refuses URLs whose host is an address the workers may not call: the cloud metadata address and
its kin, and the networks of MACHINERY_DENY_NETWORKS."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from machinery.api import create_app
from machinery.bootstrap import Config, Machinery
from tests.api import error

SERVICE = {"name": "upper", "address": "http://upper.local:5000/event"}
MESSAGE = {"name": "message", "type": "string"}


def refused(response: Any, field: str, why: str) -> None:
    (problem,) = error(response, 422)["problems"]
    assert problem["field"] == field
    assert why in problem["message"]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is link-local"),
        ("http://[fe80::1]:8080/", "fe80::1 is link-local"),
        ("http://[::ffff:a9fe:a9fe]/", "::ffff:a9fe:a9fe (169.254.169.254) is link-local"),
        ("http://0.0.0.0:5000/event", "0.0.0.0 is the unspecified address"),
        ("http://[ff02::1]/", "ff02::1 is multicast"),
    ],
)
def test_a_service_at_a_refused_address_answers_422_naming_the_field(
    client: FlaskClient, address: str, why: str
) -> None:
    refused(client.post("/services", json=SERVICE | {"address": address}), "address", why)
    assert client.get("/services").json == []


def test_a_health_check_at_a_refused_address_answers_422_naming_the_field(client: FlaskClient) -> None:
    service = SERVICE | {"healthcheck": "http://169.254.169.254/healthcheck"}
    refused(client.post("/services", json=service), "healthcheck", "169.254.169.254 is link-local")


def test_replacing_a_service_with_a_refused_address_answers_422(client: FlaskClient) -> None:
    assert client.post("/services", json=SERVICE).status_code == 201
    response = client.put("/services/upper", json=SERVICE | {"address": "http://169.254.169.254/"})
    refused(response, "address", "link-local")
    assert client.get("/services/upper").json["address"] == SERVICE["address"]


def test_a_workflow_notifying_a_refused_address_answers_422_naming_the_field(client: FlaskClient) -> None:
    service = SERVICE | {"inputs": [MESSAGE], "outputs": [MESSAGE]}
    assert client.post("/services", json=service).status_code == 201
    workflow = {"name": "w", "services": ["upper"], "inputs": [MESSAGE], "notify": "http://169.254.169.254/hook"}
    refused(client.post("/workflows", json=workflow), "notify", "169.254.169.254 is link-local")
    assert client.get("/workflows").json == []


def test_loopback_private_addresses_and_names_are_registered(client: FlaskClient) -> None:
    for name, address in [("a", "http://127.0.0.1:5000/"), ("b", "http://10.0.0.7/"), ("c", "http://metadata/")]:
        assert client.post("/services", json={"name": name, "address": address}).status_code == 201


def test_denied_networks_are_refused_at_registration(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path, deny_networks=(ip_network("10.0.0.0/8"),)))
    client = create_app(machinery, {"TESTING": True}).test_client()
    try:
        response = client.post("/services", json=SERVICE | {"address": "http://10.0.0.7/"})
        refused(response, "address", "10.0.0.7 is in 10.0.0.0/8, denied by MACHINERY_DENY_NETWORKS")
    finally:
        machinery.store.close()


def test_denied_networks_are_read_from_the_environment() -> None:
    config = Config.from_env({"MACHINERY_DENY_NETWORKS": "10.0.0.0/8, fd00::/8"})
    assert config.deny_networks == (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))
