"""Importing the seeds' own examples: an Orchy workflow and gorchestrator's 8-node graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from machinery.cel import CelExpressions
from machinery.engine.checker import check_workflow
from machinery.engine.errors import ConversionError
from machinery.engine.flags import check_rules
from machinery.engine.graph import build
from machinery.importers import convert
from machinery.validation import ExecutableSchema, ServiceSchema, WorkflowSchema

FIXTURES = Path(__file__).parent / "fixtures"
SEED = FIXTURES / "seed"


def load(name: str) -> dict:
    return json.loads((SEED / name).read_text())


def test_gorchestrators_8_node_graph_keeps_every_edge() -> None:
    workflow, warnings = convert(load("gorchestrator-8-nodes.json"))

    graph, problems = build(WorkflowSchema().load(workflow))
    assert warnings == [] and problems == [] and graph is not None
    assert {step: set(deps) for step, deps in graph.deps.items() if deps} == {
        "a": {"f"},
        "b": {"a", "f"},
        "c": {"d", "f"},
        "e": {"a"},
        "g": {"b", "d", "h"},
    }


def test_gorchestrator_nodes_call_their_engine_with_their_artifact() -> None:
    workflow, _ = convert(load("gorchestrator-8-nodes.json"))

    first = workflow["steps"][0]
    assert first == {"id": "a", "service": "noop", "input": {"artifact": "true", "args": []}, "after": ["f"]}


def test_a_gorchestrator_matrix_of_the_wrong_size_is_refused() -> None:
    doc = load("gorchestrator-8-nodes.json")
    doc["digraph"] = doc["digraph"][:-1]

    with pytest.raises(ConversionError, match="63 cells; 8 nodes need 64"):
        convert(doc)


def test_orchys_example_becomes_a_graph_of_the_same_steps_and_routes() -> None:
    workflow, _ = convert(load("orchy-test-workflow.json"))

    steps = {s.id: s for s in WorkflowSchema().load(workflow).steps}
    assert {k: s.kind for k, s in steps.items()} == {
        "1": "service",
        "6": "transform",
        "7": "delay",
        "2": "switch",
        "3": "wait",
        "4": "service",
    }
    assert steps["7"].seconds == 10
    assert steps["2"].expression == "steps['1'].key1" and dict(steps["2"].cases) == {"200": ("3",)}
    assert steps["3"].signal == "test" and steps["4"].after == ("3",)
    assert {k: str(v) for k, v in steps["4"].input.items()} == {"k1": "23", "k2": "$.steps.1.key1", "k3": "$.steps.6.x"}


def test_orchys_javascript_is_flagged_and_the_checker_names_what_it_left_missing() -> None:
    workflow, warnings = convert(load("orchy-test-workflow.json"))
    services = {
        "add-params-action": ServiceSchema().load(
            {"name": "add-params-action", "address": "http://add:5000/", "inputs": [
                {"name": "key1", "type": "string"}, {"name": "key2", "type": "int"}],
             "outputs": [{"name": "key1", "type": "string"}]}
        ),
        "log-action": ServiceSchema().load(
            {"name": "log-action", "address": "http://log:5000/", "inputs": [
                {"name": "k1", "type": "int"}, {"name": "k2", "type": "string"}, {"name": "k3", "type": "any"}]}
        ),
    }  # fmt: skip

    problems = check_workflow(WorkflowSchema().load(workflow), services, CelExpressions())

    assert len(warnings) == 1 and "action 6 runs JavaScript" in warnings[0]
    assert [(p.step, p.field) for p in problems] == [("4", "k3")]
    assert "names no output of step '6'" in problems[0].message


def test_a_document_of_neither_format_is_refused() -> None:
    with pytest.raises(ConversionError, match="neither an Orchy workflow"):
        convert({"name": "x"})


def test_otos_parameters_become_an_executable_with_its_rules_and_warnings() -> None:
    executable, warnings = convert(json.loads((FIXTURES / "oto-parameters.json").read_text()))

    assert (executable["name"], executable["version"], executable["path"]) == ("nmap", "7.93", "/usr/bin/nmap")
    by_flag = {p["flag"]: p for p in executable["parameters"]}
    assert by_flag["-sS"] == {
        "flag": "-sS",
        "description": "TCP SYN scan",
        "value": None,
        "requires_root": True,
        "requires": [],
        "conflicts": ["-sT"],
    }
    assert by_flag["--version-intensity"]["requires"] == ["-sV"]
    assert (by_flag["-p"]["value"], by_flag["--top-ports"]["value"]) == ("string", "int")
    assert warnings == [
        "nmap - 7.93: OTO does not say where the program is; its path is guessed as /usr/bin/nmap",
        "nmap - 7.93: -p takes a tuple, which machinery reads as a string",
    ]
    loaded = ExecutableSchema().load(executable)
    assert check_rules(loaded) == []


def test_oto_parameters_of_several_executables_become_several() -> None:
    params = [
        {"flag": "-a", "executable_tag": "one - 1"},
        {"flag": "-b", "executable_tag": "two - 2"},
    ]
    converted, _ = convert(params, "oto")
    assert [e["name"] for e in converted["executables"]] == ["one", "two"]
