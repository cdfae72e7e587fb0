"""Transform steps at run time: each declared output computed by an expression over input, context and steps.

The engine runs a transform inside the transition that makes it ready; its outputs are type-checked against
their declaration like a service's answer, and go into the context under their names (or renames).
"""

from __future__ import annotations

import pytest

from machinery.engine import dataflow, decider
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import (
    Driver,
    fld,
    graph,
    registry,
    service,
    statuses,
    step,
    transform,
    wait,
)

SERVICES = registry(
    service("count", ["message:string"], ["n:int"]),
    service("pad", ["message:string", "width:int"], ["message:string"]),
)


def computing(compute: dict[str, str], outputs: list, inputs: list | None = None, **options) -> Driver:
    workflow = graph([transform("t", compute, outputs, **options)], inputs=inputs or [])
    return Driver(workflow, SERVICES)


def test_a_transform_computes_its_outputs_from_the_input_the_context_and_upstream_steps():
    workflow = graph(
        [
            step("count"),
            transform(
                "t",
                {"width": "context.n * 2 + 1", "label": "input.message + '!'", "big": "steps.count.n > 1"},
                ["width:int", "label:string", "big:bool"],
                after=["count"],
            ),
            step("pad", after=["t"]),
        ],
        inputs=["message:string"],
        outputs=["message:string", "label:string", "big:bool"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "a b"}), "count", {"n": 1}, now=101)
    state = event.steps["t"]
    assert state.status is StepStatus.COMPLETED
    assert state.outputs == {"width": 3, "label": "a b!", "big": False}
    assert (state.started_at, state.ended_at, state.attempts) == (102, 102, 0)
    assert statuses(event) == {"count": "completed", "t": "completed", "pad": "ready"}
    _, call = driver.call(event, "pad", now=103)
    assert call.inputs == {"message": "a b", "width": 3}


def test_a_transform_at_the_start_is_left_to_a_worker_by_the_api_and_run_by_the_workers_claim():
    driver = computing({"n": "size(input.message)"}, ["n:int"], ["message:string"])
    accepted = decider.accept(driver.plan, {"message": "abc"}, event_id="e", now=100, settings=driver.settings)
    assert accepted.steps["t"].status is StepStatus.READY
    assert accepted.steps["t"].outputs is None
    assert decider.ready_units(accepted) == ["t"]
    claimed = driver.claim(accepted, "t", now=101)
    assert claimed is not None
    event, call = claimed
    assert call is None
    assert event.steps["t"].outputs == {"n": 3}
    assert event.status is EventStatus.COMPLETED


def test_a_transform_made_ready_by_a_signal_is_left_to_a_worker():
    workflow = graph(
        [wait("w", "go", ["n:int"]), transform("t", {"m": "context.n + 1"}, ["m:int"], after=["w"])],
        outputs=["m:int"],
    )
    driver = Driver(workflow, SERVICES)
    event = decider.signal(driver.plan, driver.accept({}), "go", {"n": 1}, now=101, settings=driver.settings)
    assert event.steps["t"].status is StepStatus.READY
    assert driver.evaluated(event, now=102).outputs == {"m": 2}


@pytest.mark.parametrize(
    ("expression", "declared", "value"),
    [
        ("[1, 2, 3]", "array<int>", [1, 2, 3]),
        ("{'a': 1}", "object", {"a": 1}),
        ("2.5", "float", 2.5),
        ("2", "float", 2),
        ("'x'", "string", "x"),
        ("true", "bool", True),
        ("input.data.map(x, x * 2)", "array<int>", [2, 4]),
        ("input.data.filter(x, x > 1)", "array<int>", [2]),
    ],
)
def test_a_transform_output_of_the_declared_type_is_kept(expression, declared, value):
    event = computing({"v": expression}, [f"v:{declared}"], ["data:array<int>"]).accept({"data": [1, 2]})
    assert event.status is EventStatus.COMPLETED
    assert event.steps["t"].outputs == {"v": value}


def test_a_transform_output_of_the_wrong_type_fails_the_step_naming_the_output_and_the_types():
    event = computing({"width": "input.message"}, ["width:int"], ["message:string"]).accept({"message": "x"})
    assert event.status is EventStatus.FAILED
    assert event.steps["t"].status is StepStatus.FAILED
    assert event.steps["t"].error["kind"] == "type"
    assert event.error["message"] == "step 't' failed: transform 't' output 'width' should be int: got string 'x'"
    [problem] = event.error["problems"]
    assert (problem["field"], problem["expected"], problem["found"]) == ("width", "int", "string")


def test_a_transform_whose_expression_fails_fails_the_step_naming_the_output():
    event = computing({"n": "input.nope + 1"}, ["n:int"], ["message:string"]).accept({"message": "x"})
    assert event.status is EventStatus.FAILED
    assert event.steps["t"].error == {
        "kind": "expression",
        "message": "the expression for 'n' failed: no field 'nope' in the data",
        "transient": False,
    }
    assert event.error["message"] == "step 't' failed: the expression for 'n' failed: no field 'nope' in the data"


def test_a_transform_whose_expression_mixes_types_fails_the_step():
    event = computing({"n": "input.message + 1"}, ["n:int"], ["message:string"]).accept({"message": "x"})
    assert event.status is EventStatus.FAILED
    assert event.steps["t"].error["kind"] == "expression"


@pytest.mark.parametrize(
    ("expression", "data"),
    [("10 / input.data[0]", [0]), ("input.data[3]", [1]), ("input.data[0] + 9223372036854775807", [1])],
    ids=["division by zero", "index out of range", "overflow"],
)
def test_a_transform_whose_expression_raises_an_arithmetic_or_index_error_fails_the_step(expression, data):
    event = computing({"n": expression}, ["n:int"], ["data:array<int>"]).accept({"data": data})
    assert event.status is EventStatus.FAILED
    assert event.steps["t"].error["kind"] == "expression"


def test_a_transform_output_of_a_cel_type_becomes_json_data():
    event = computing({"d": "duration('90s')", "t": "timestamp('2026-01-02T03:04:05Z')"}, ["d:any", "t:any"]).accept({})
    assert event.status is EventStatus.COMPLETED
    assert event.steps["t"].outputs == {"d": 90.0, "t": "2026-01-02T03:04:05+00:00"}


def test_a_transform_output_without_expression_takes_its_default():
    driver = computing({"a": "1"}, ["a:int", fld("b:int", default=7)])
    assert driver.accept({}).steps["t"].outputs == {"a": 1, "b": 7}


def test_a_transform_writes_its_outputs_into_the_context_under_their_renames():
    workflow = graph(
        [transform("t", {"a": "1", "b": "2"}, ["a:int", "b:int"], output={"a": "first"})], outputs=["first:int"]
    )
    driver = Driver(workflow, SERVICES)
    event = driver.accept({})
    assert event.steps["t"].outputs == {"a": 1, "b": 2}
    assert driver.context(event) == {"first": 1, "b": 2}
    assert event.outputs == {"first": 1}


def test_a_transform_sees_only_the_context_of_the_steps_upstream_of_it():
    # ``count`` runs in parallel with ``t``: t must not read what count wrote, even once count has completed.
    workflow = graph(
        [
            step("count"),
            step("pad", input={}),
            transform("t", {"seen": "has(context.n)"}, ["seen:bool"], after=["pad"]),
        ],
        inputs=["message:string", "width:int"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m", "width": 2}), "count", {"n": 5}, now=101)
    event = driver.run(event, "pad", {"message": "m "}, now=103)
    assert event.steps["t"].outputs == {"seen": False}


def test_the_context_after_a_transform_holds_its_outputs():
    driver = computing({"greeting": "'hello ' + input.name"}, ["greeting:string"], ["name:string"])
    event = driver.accept({"name": "ann"})
    assert dataflow.context(driver.plan, event) == {"name": "ann", "greeting": "hello ann"}
