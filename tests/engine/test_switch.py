"""Switch steps at run time: the engine evaluates the expression, takes one route and skips the steps of the others.

A switch runs inside the transition that makes it ready; steps on the routes not taken are recorded ``skipped``,
skipping propagates to what runs only after them, and a join after the branches waits only for what can still run.
"""

from __future__ import annotations

import pytest

from machinery.engine import dataflow, decider
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import (
    Driver,
    fld,
    from_context,
    graph,
    registry,
    service,
    statuses,
    step,
    switch,
)

SERVICES = registry(
    service("left", ["message:string"], ["left:string"]),
    service("right", ["message:string"], ["right:string"]),
    service("after-left", ["left:string"], ["done:bool"]),
    service("join", ["message:string"], ["joined:string"]),
    service("measure", ["message:string"], ["size:int"]),
)


def by_value(value_type: str, cases: dict[str, str], *, default: str | None = None) -> Driver:
    """A switch over the input ``v`` (of ``value_type``) routing to ``left`` or ``right``."""
    steps = [
        switch("pick", "input.v", {value: [target] for value, target in cases.items()}, default=default or ()),
        step("left"),
        step("right"),
    ]
    return Driver(graph(steps, inputs=["message:string", f"v:{value_type}"]), SERVICES)


@pytest.mark.parametrize(
    ("value_type", "value", "route"),
    [
        ("bool", True, "true"),
        ("bool", False, "false"),
        ("int", 2, "2"),
        ("int", -7, "-7"),
        ("float", 2.5, "2.5"),
        ("string", "gold", "gold"),
    ],
)
def test_a_switch_takes_the_route_named_by_the_value_of_its_expression(value_type, value, route):
    other = {"true": "false", "false": "true"}.get(route, "nothing")
    driver = by_value(value_type, {route: "left", other: "right"})
    event = driver.accept({"message": "m", "v": value})
    assert event.steps["pick"].status is StepStatus.COMPLETED
    assert event.steps["pick"].route == route
    assert event.steps["pick"].outputs == {"value": value}
    assert statuses(event) == {"pick": "completed", "left": "ready", "right": "skipped"}
    assert decider.ready_units(event) == ["left"]


def test_a_switch_over_a_bool_routes_false_by_the_string_false():
    driver = by_value("bool", {"true": "left", "false": "right"})
    event = driver.accept({"message": "m", "v": False})
    assert statuses(event) == {"pick": "completed", "left": "skipped", "right": "ready"}


def test_a_string_value_is_matched_as_is_and_not_as_json():
    # "2" the string must not be confused with 2 the number, nor get quotes around it.
    driver = by_value("string", {"2": "left", '"2"': "right"})
    assert driver.accept({"message": "m", "v": "2"}).steps["pick"].route == "2"


def test_a_switch_takes_its_default_route_when_no_case_matches():
    driver = by_value("string", {"gold": "left"}, default="right")
    event = driver.accept({"message": "m", "v": "silver"})
    assert event.steps["pick"].route == "default"
    assert statuses(event) == {"pick": "completed", "left": "skipped", "right": "ready"}


def test_a_switch_prefers_a_matching_case_over_its_default():
    driver = by_value("string", {"gold": "left"}, default="right")
    assert statuses(driver.accept({"message": "m", "v": "gold"}))["right"] == "skipped"


def test_a_switch_without_a_matching_case_or_a_default_fails_the_event_with_a_clear_error():
    driver = by_value("string", {"gold": "left", "silver": "right"})
    event = driver.accept({"message": "m", "v": "bronze"})
    assert event.status is EventStatus.FAILED
    assert event.steps["pick"].status is StepStatus.FAILED
    assert event.steps["pick"].error == {
        "kind": "route",
        "message": "the value 'bronze' matches none of the cases ('gold', 'silver') and there is no default",
        "transient": False,
    }
    assert event.error["step"] == "pick"
    assert event.error["message"] == (
        "step 'pick' failed: the value 'bronze' matches none of the cases ('gold', 'silver') and there is no default"
    )
    assert decider.ready_units(event) == []
    assert event.due_at is None


def test_a_switch_whose_expression_fails_fails_the_event_naming_the_expression():
    driver = Driver(
        graph(
            [switch("pick", "input.v + 1", {"x": ["left"]}, default=["right"]), step("left"), step("right")],
            inputs=["message:string", "v:string"],
        ),
        SERVICES,
    )
    event = driver.accept({"message": "m", "v": "gold"})
    assert event.status is EventStatus.FAILED
    assert event.steps["pick"].error["kind"] == "expression"
    assert event.error["message"].startswith("step 'pick' failed: the expression for 'expression' failed: ")


def test_a_switch_whose_value_is_not_json_data_fails_the_step():
    driver = Driver(graph([switch("pick", "duration('1s')", {"1s": ["left"]}), step("left")]), SERVICES)
    event = driver.accept({})
    assert event.status is EventStatus.FAILED
    assert event.steps["pick"].status is StepStatus.FAILED


def test_a_switch_reads_the_context_its_upstream_steps_wrote():
    workflow = graph(
        [
            step("measure"),
            switch("size", "context.size > 3", {"true": ["left"], "false": ["right"]}, after=["measure"]),
            step("left"),
            step("right"),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.accept({"message": "a b c d"})
    assert statuses(event) == {"measure": "ready", "size": "pending", "left": "pending", "right": "pending"}
    event = driver.run(event, "measure", {"size": 7}, now=101)
    assert event.steps["size"].route == "true"
    assert statuses(event) == {"measure": "completed", "size": "completed", "left": "ready", "right": "skipped"}


def test_a_switch_reads_an_upstream_steps_outputs_by_id():
    workflow = graph(
        [
            step("measure"),
            switch("size", "steps.measure.size", {"1": ["left"]}, default=["right"], after=["measure"]),
            step("left"),
            step("right"),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m"}), "measure", {"size": 1}, now=101)
    assert event.steps["size"].route == "1"


# Skipping, joins and propagation


def branches(*, join_after: tuple[str, ...] = ("left", "right")) -> Driver:
    """``pick`` routes to ``left`` or ``right``; ``after-left`` runs after ``left``; ``join`` after ``join_after``."""
    workflow = graph(
        [
            switch("pick", "input.v", {"l": ["left"], "r": ["right"]}),
            step("left"),
            step("right"),
            step("after-left", after=["left"]),
            step("join", after=join_after),
        ],
        inputs=["message:string", "v:string"],
        outputs=[fld("joined:string")],
    )
    return Driver(workflow, SERVICES)


def test_the_steps_on_the_route_not_taken_are_recorded_skipped_with_the_time():
    event = branches().accept({"message": "m", "v": "l"}, now=100)
    assert event.steps["right"].status is StepStatus.SKIPPED
    assert event.steps["right"].ended_at == 100
    assert event.steps["right"].attempts == 0


def test_skipping_propagates_to_the_steps_that_run_only_after_a_skipped_step():
    event = branches().accept({"message": "m", "v": "r"})
    assert statuses(event) == {
        "pick": "completed",
        "left": "skipped",
        "right": "ready",
        "after-left": "skipped",
        "join": "pending",
    }


def test_a_join_after_a_completed_branch_and_a_skipped_branch_runs_once_the_branch_completes():
    driver = branches()
    event = driver.accept({"message": "m", "v": "r"})
    assert statuses(event)["join"] == "pending"
    event = driver.run(event, "right", {"right": "R"}, now=101)
    assert statuses(event)["join"] == "ready"
    event = driver.run(event, "join", {"joined": "J"}, now=103)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"joined": "J"}


def test_a_join_waits_for_every_branch_that_can_still_run():
    driver = branches(join_after=("right", "after-left"))
    event = driver.accept({"message": "m", "v": "l"})
    event = driver.run(event, "left", {"left": "L"}, now=101)
    assert statuses(event) == {
        "pick": "completed",
        "left": "completed",
        "right": "skipped",
        "after-left": "ready",
        "join": "pending",
    }
    event = driver.run(event, "after-left", {"done": True}, now=103)
    assert statuses(event)["join"] == "ready"


def test_an_event_whose_remaining_steps_are_all_skipped_completes():
    workflow = graph(
        [switch("pick", "input.v", {"l": ["left"], "r": ["right"]}), step("left"), step("right")],
        inputs=["message:string", "v:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m", "v": "l"}), "left", {"left": "L"}, now=101)
    assert event.status is EventStatus.COMPLETED
    assert statuses(event) == {"pick": "completed", "left": "completed", "right": "skipped"}
    assert event.due_at is None


def test_a_step_named_on_several_routes_runs_on_any_of_them():
    workflow = graph(
        [switch("pick", "input.v", {"a": ["left", "join"], "b": ["join"]}, default=["right"]), step("left")]
        + [step("right"), step("join")],
        inputs=["message:string", "v:string"],
    )
    driver = Driver(workflow, SERVICES)
    assert statuses(driver.accept({"message": "m", "v": "b"})) == {
        "pick": "completed",
        "left": "skipped",
        "right": "skipped",
        "join": "ready",
    }


def test_a_step_on_a_route_not_taken_is_skipped_even_when_another_step_it_runs_after_completed():
    workflow = graph(
        [
            switch("pick", "input.v", {"l": ["left"], "r": ["right"]}),
            step("measure"),
            step("left", after=["measure"]),
            step("right"),
        ],
        inputs=["message:string", "v:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m", "v": "r"}), "measure", {"size": 1}, now=101)
    assert statuses(event)["left"] == "skipped"


def test_the_switch_value_is_not_written_into_the_context():
    driver = by_value("string", {"gold": "left"}, default="right")
    event = driver.accept({"message": "m", "v": "gold"})
    assert dataflow.context(driver.plan, event) == {"message": "m", "v": "gold"}


def test_a_skipped_step_reads_nothing_and_a_later_step_reads_the_branch_that_ran():
    workflow = graph(
        [
            switch("pick", "input.v", {"l": ["left"], "r": ["right"]}),
            step("left"),
            step("right", output={"right": "left"}),
            step("after-left", after=["left", "right"], input={"left": from_context("left")}),
        ],
        inputs=["message:string", "v:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m", "v": "r"}), "right", {"right": "R"}, now=101)
    _, call = driver.call(event, "after-left", now=103)
    assert call.inputs == {"left": "R"}
