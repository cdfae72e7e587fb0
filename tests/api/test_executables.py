"""The management API of executables, the check of a combination, and command services registered against them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from examples.services import DEFINITIONS
from machinery.bootstrap import Config, Machinery
from tests.api import error

COMMANDS = DEFINITIONS / "commands"


def read(name: str) -> dict[str, Any]:
    return dict(json.loads((COMMANDS / name).read_text()))


SORT = read("executable-sort.json")
SORT_LINES = read("service-sort-lines.json")


@pytest.fixture
def machinery(tmp_path: Path) -> Iterator[Machinery]:
    machinery = Machinery(Config(data_dir=tmp_path, commands_allowed=(Path("/usr/bin"),)))
    yield machinery
    machinery.stop()
    machinery.store.close()


@pytest.fixture
def sort(client: FlaskClient) -> dict[str, Any]:
    response = client.post("/executables", json=SORT)
    assert response.status_code == 201, response.json
    return dict(response.json)


def test_an_executable_registers_and_reads_back_as_written(client: FlaskClient, sort: dict[str, Any]) -> None:
    assert sort["revision"] == 1
    assert {k: v for k, v in sort.items() if k not in ("id", "revision")} == json.loads(
        json.dumps(SORT | {"parameters": [p | _defaults(p) for p in SORT["parameters"]]})
    )
    assert client.get("/executables/sort").json == sort
    assert client.get("/executables").json == [sort]


def _defaults(parameter: dict[str, Any]) -> dict[str, Any]:
    return {
        k: parameter.get(k, v)
        for k, v in {"value": None, "requires_root": False, "requires": [], "conflicts": []}.items()
    }


def test_a_program_outside_the_allowed_paths_is_refused(client: FlaskClient) -> None:
    body = error(client.post("/executables", json=SORT | {"path": "/bin/../usr/sbin/nologin"}), 422)
    assert body["problems"] == [
        {"message": "/bin/../usr/sbin/nologin is not under MACHINERY_COMMANDS_ALLOWED (/usr/bin)", "field": "path"}
    ]


def test_rules_that_cannot_be_used_are_refused_with_every_problem(client: FlaskClient) -> None:
    parameters = [
        {"flag": "-a", "requires": ["-b"]},
        {"flag": "-b", "requires": ["-a"]},
        {"flag": "-c", "conflicts": ["-c", "-z"]},
        {"flag": "-d", "requires": ["-e", "-f"]},
        {"flag": "-e", "conflicts": ["-f"]},
        {"flag": "-f"},
        {"flag": "-g", "requires": ["-e"], "conflicts": ["-e"]},
    ]
    body = error(client.post("/executables", json=SORT | {"parameters": parameters}), 422)
    assert [p["message"] for p in body["problems"]] == [
        "-c conflicts with -z, which is no parameter of sort",
        "-c conflicts with itself",
        "a cycle of requirements: -a requires -b, which requires -a",
        "-d can never be used: -d requires -e and -d requires -f, and -e conflicts with -f",
        "-g contradicts itself: -g requires -e, and -g conflicts with -e",
    ]


def test_a_combination_is_answered_in_argv_order_or_refused_with_its_reasons(
    client: FlaskClient, sort: dict[str, Any]
) -> None:
    ok = client.post("/executables/sort/check", json={"flags": ["--stable", "--reverse", "--key", "--field-separator"]})
    assert ok.status_code == 200
    assert ok.json == {"argv": ["--field-separator", "--key", "--stable", "--reverse"]}

    body = error(
        client.post(
            "/executables/sort/check",
            json={"flags": ["--stable", "--field-separator", "--numeric-sort", "--month-sort"]},
        ),
        422,
    )
    assert [p["message"] for p in body["problems"]] == [
        "--key is missing: --stable requires --key",
        "--numeric-sort conflicts with --month-sort",
    ]
    error(client.post("/executables/nothing/check", json={"flags": []}), 404)


def test_a_command_service_registers_against_its_executable(client: FlaskClient, sort: dict[str, Any]) -> None:
    response = client.post("/services", json=SORT_LINES)
    assert response.status_code == 201, response.json
    assert response.json["kind"] == "command"
    assert response.json["arguments"] == SORT_LINES["arguments"]
    assert client.get("/services/sort-lines").json == response.json


def test_a_command_service_that_does_not_fit_its_executable_is_refused_with_every_problem(
    client: FlaskClient, sort: dict[str, Any]
) -> None:
    arguments = [
        {"flag": "--stable"},
        {"flag": "--key", "value": 2},
        {"flag": "--numeric-sort"},
        {"flag": "--month-sort", "value": "x"},
        {"flag": "--field-separator", "input": "count"},
    ]
    inputs = [{"name": "message", "type": "string"}, {"name": "count", "type": "int"}]
    outputs = [{"name": "lines", "type": "array"}]
    body = error(
        client.post("/services", json=SORT_LINES | {"arguments": arguments, "inputs": inputs, "outputs": outputs}), 422
    )
    assert [p["message"] for p in body["problems"]] == [
        "--numeric-sort conflicts with --month-sort",
        "--key takes a string, not int 2",
        "--month-sort takes no value",
        "--field-separator takes a string: input 'count' should be string, not int",
        "a command's output 'lines' is none of exit_code, stdout, stderr, truncated (or read stdout as JSON)",
    ]


def test_a_command_service_needs_a_registered_executable_and_no_http_keys(client: FlaskClient) -> None:
    body = error(client.post("/services", json=SORT_LINES), 422)
    assert body["problems"] == [{"message": "no executable 'sort' is registered", "field": "executable"}]
    body = error(client.post("/services", json=SORT_LINES | {"address": "http://x.local/"}), 422)
    assert body["errors"] == {"address": ["does not apply to a command service"]}


def test_changing_an_executable_under_a_command_service_is_refused_if_it_breaks_it(
    client: FlaskClient, sort: dict[str, Any]
) -> None:
    client.post("/services", json=SORT_LINES)
    parameters = [p for p in SORT["parameters"] if p["flag"] != "--ignore-case"]

    body = error(client.put("/executables/sort", json=SORT | {"parameters": parameters}), 409)

    assert body["message"] == "changing executable 'sort' would break service 'sort-lines'"
    assert body["problems"] == [
        {"message": "service 'sort-lines': --ignore-case is no parameter of sort", "field": "--ignore-case"}
    ]
    assert client.put("/executables/sort", json=SORT | {"version": "9.2"}).json["revision"] == 2


def test_an_executable_in_use_is_not_deleted(client: FlaskClient, sort: dict[str, Any]) -> None:
    client.post("/services", json=SORT_LINES)
    assert error(client.delete("/executables/sort"), 409)["problems"] == [
        {"message": "service 'sort-lines' runs executable 'sort'"}
    ]
    client.delete("/services/sort-lines")
    assert client.delete("/executables/sort").status_code == 204
    error(client.get("/executables/sort"), 404)


def test_the_rules_are_drawn_with_two_kinds_of_edges(client: FlaskClient, sort: dict[str, Any]) -> None:
    response = client.get("/executables/sort/rules.svg")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    svg = response.get_data(as_text=True)
    assert svg.count('class="edge requires"') == 2
    assert svg.count('class="edge conflicts"') == 6


def test_the_openapi_document_describes_executables(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert {"/executables", "/executables/{name}", "/executables/{name}/check", "/executables/{name}/rules.svg"} <= set(
        paths
    )
