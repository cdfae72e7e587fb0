"""Graph workflows at run time: parallel branches and joins, explicit data mapping, the context, and cancelling or
retrying events whose steps are of every kind.
"""

from __future__ import annotations

import pytest

from machinery.engine import dataflow, decider
from machinery.engine.errors import InvalidDefinition, InvalidExpression, InvalidState
from machinery.engine.plan import Plan
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import (
    EXPRESSIONS,
    PERMANENT,
    Driver,
    Lanes,
    chain,
    check,
    const,
    delay,
    from_context,
    from_input,
    from_step,
    graph,
    map_step,
    registry,
    service,
    statuses,
    step,
    switch,
    transform,
    wait,
)

SERVICES = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("count", ["message:string"], ["n:int"]),
    service("profile", ["message:string"], ["info:object"]),
    service("pad", ["message:string", "width:int", "fill:string"], ["message:string"]),
    service("square", ["n:int"], ["square:int"]),
)


# Parallel branches and joins


def fan_out() -> Driver:
    """``upper`` and ``count`` have no dependency and run at once; ``pad`` joins them."""
    workflow = graph(
        [
            step("upper", output={"message": "shout"}),
            step("count"),
            step(
                "pad",
                after=["upper", "count"],
                input={"message": from_context("shout"), "width": from_context("n"), "fill": const("*")},
            ),
        ],
        inputs=["message:string"],
        outputs=["message:string"],
    )
    return Driver(workflow, SERVICES)


def test_independent_steps_are_all_ready_at_once():
    event = fan_out().accept({"message": "a b"})
    assert decider.ready_units(event) == ["upper", "count"]
    assert statuses(event) == {"upper": "ready", "count": "ready", "pad": "pending"}


def test_parallel_steps_can_be_claimed_and_run_at_the_same_time():
    driver = fan_out()
    event, upper = driver.call(driver.accept({"message": "a b"}), "upper", now=101)
    event, count = driver.call(event, "count", now=101)
    assert statuses(event) == {"upper": "running", "count": "running", "pad": "pending"}
    event = driver.done(event, count, now=102, outputs={"n": 1})
    assert statuses(event)["pad"] == "pending"
    event = driver.done(event, upper, now=103, outputs={"message": "A B"})
    assert decider.ready_units(event) == ["pad"]
    _, pad = driver.call(event, "pad", now=104)
    assert pad.inputs == {"message": "A B", "width": 1, "fill": "*"}


def test_an_engine_step_and_a_service_step_run_in_parallel_and_join():
    workflow = graph(
        [
            transform("width", {"width": "size(input.message) * 2"}, ["width:int"]),
            step("upper"),
            step("pad", after=["width", "upper"], input={"fill": const(".")}),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.accept({"message": "ab"})
    assert statuses(event) == {"width": "completed", "upper": "ready", "pad": "pending"}
    event = driver.run(event, "upper", {"message": "AB"}, now=101)
    _, pad = driver.call(event, "pad", now=103)
    assert pad.inputs == {"message": "AB", "width": 4, "fill": "."}


# Explicit data mapping


def test_an_input_reference_reads_the_events_data_even_after_a_step_overwrote_the_name():
    workflow = graph(
        [
            step("upper"),
            step(
                "pad", after=["upper"], input={"message": from_input("message"), "width": const(3), "fill": const("")}
            ),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "ab"}), "upper", {"message": "AB"}, now=101)
    _, call = driver.call(event, "pad", now=103)
    assert call.inputs == {"message": "ab", "width": 3, "fill": ""}


def test_a_step_reference_reads_an_earlier_steps_outputs_even_after_the_context_name_was_overwritten():
    workflow = graph(
        [
            step("upper"),
            step("count", after=["upper"]),
            step("again", "upper", after=["count"], input={"message": from_input("message")}),
            step(
                "pad",
                after=["again"],
                input={"message": from_step("upper", "message"), "width": from_step("count", "n"), "fill": const("-")},
            ),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "ab"}), "upper", {"message": "AB"}, now=101)
    event = driver.run(event, "count", {"n": 5}, now=103)
    event = driver.run(event, "again", {"message": "OTHER"}, now=105)
    assert driver.context(event)["message"] == "OTHER"
    _, call = driver.call(event, "pad", now=107)
    assert call.inputs == {"message": "AB", "width": 5, "fill": "-"}


def test_a_reference_goes_into_a_field_of_an_object_output():
    workflow = graph(
        [
            step("profile"),
            step(
                "pad",
                after=["profile"],
                input={
                    "width": from_step("profile", "info", "length"),
                    "fill": from_context("info", "fill"),
                },
            ),
        ],
        inputs=["message:string"],
    )
    assert check(workflow, SERVICES) == []
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "ab"}), "profile", {"info": {"length": 2, "fill": "#"}}, now=101)
    _, call = driver.call(event, "pad", now=103)
    assert call.inputs == {"message": "ab", "width": 2, "fill": "#"}


def test_a_reference_into_a_field_that_is_not_there_fails_the_step_at_claim():
    workflow = graph(
        [step("profile"), step("pad", after=["profile"], input={"width": from_step("profile", "info", "length")})],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "ab"}), "profile", {"info": {}}, now=101)
    event, call = driver.claim(event, "pad", now=103)
    assert call is None
    assert event.status is EventStatus.FAILED
    assert "service 'pad' input 'width' is missing" in event.error["message"]


# The context


def test_the_context_holds_the_data_and_every_completed_steps_outputs_under_their_renames():
    workflow = graph(
        [
            step("upper", output={"message": "shout"}),
            switch("route", "true", {"true": ["count"]}, after=["upper"]),
            step("count"),
            wait("w", "go", ["ok:bool"], output={"ok": "approved"}, after=["count"]),
            transform("t", {"twice": "context.n * 2"}, ["twice:int"], after=["w"]),
            map_step("m", "square", from_context("list"), "n", after=["t"], output={"results": "squares"}),
        ],
        inputs=["message:string", "list:array<int>"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "a b", "list": [2]}), "upper", {"message": "A B"}, now=101)
    event = driver.run(event, "count", {"n": 1}, now=103)
    event = driver.signal(event, "go", {"ok": True}, now=105)
    event, lanes = Lanes.fan_out(driver, event, "m", now=106)
    event = lanes.run(event, 0, {"square": 4}, now=106)
    assert event.status is EventStatus.COMPLETED
    assert driver.context(event) == {
        "message": "a b",
        "list": [2],
        "shout": "A B",
        "n": 1,
        "approved": True,
        "twice": 2,
        "squares": [{"square": 4}],
    }


def test_a_step_sees_the_context_of_its_upstream_steps_only():
    workflow = graph(
        [step("upper"), step("count"), step("again", "upper", after=["count"])],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "ab"}), "upper", {"message": "AB"}, now=101)
    event = driver.run(event, "count", {"n": 2}, now=103)
    _, call = driver.call(event, "again", now=105)
    assert call.inputs == {"message": "ab"}
    upto = driver.plan.graph.upstream["again"]
    assert dataflow.context(driver.plan, event, upto) == {"message": "ab", "n": 2}


# The seed's operations: copying a field before or after a service


def test_a_field_is_copied_before_a_service_by_a_transform_and_after_it_by_an_output_rename():
    workflow = graph(
        [
            transform("keep", {"original": "input.message"}, ["original:string"]),
            step("upper", after=["keep"], output={"message": "shout"}),
        ],
        inputs=["message:string"],
        outputs=["message:string", "original:string", "shout:string"],
    )
    assert check(workflow, SERVICES) == []
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "ab"}), "upper", {"message": "AB"}, now=101)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "ab", "original": "ab", "shout": "AB"}


def test_a_field_is_copied_into_a_services_input_by_an_input_mapping():
    workflow = graph(
        [step("upper", input={"message": from_input("text")})],
        inputs=["text:string"],
        outputs=["message:string", "text:string"],
    )
    assert check(workflow, SERVICES) == []
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"text": "ab"}), "upper", {"message": "AB"}, now=101)
    assert event.outputs == {"message": "AB", "text": "ab"}


# Cancelling and retrying events with control steps


def test_cancel_cancels_a_waiting_wait_and_its_timer():
    workflow = graph(
        [wait("w", "go", ["ok:bool"], timeout=60, on_timeout=["count"]), step("count")], inputs=["message:string"]
    )
    driver = Driver(workflow, SERVICES)
    event = driver.accept({"message": "m"})
    assert decider.timers(event) == [("w", 160)]
    event = driver.cancel(event, 101)
    assert event.status is EventStatus.CANCELLED
    assert statuses(event) == {"w": "cancelled", "count": "cancelled"}
    assert decider.timers(event) == []
    assert event.due_at is None
    assert driver.claim(event, "w", now=200) is None
    with pytest.raises(InvalidState, match="is cancelled; it takes no more signals"):
        driver.signal(event, "go", {"ok": True}, now=102)


def test_cancel_cancels_a_waiting_delay():
    driver = Driver(graph([delay("d", 60), step("upper", after=["d"])], inputs=["message:string"]), SERVICES)
    event = driver.cancel(driver.accept({"message": "m"}), 101)
    assert statuses(event) == {"d": "cancelled", "upper": "cancelled"}
    assert driver.claim(event, "d", now=500) is None


def test_cancel_of_a_waiting_event_is_allowed():
    driver = Driver(graph([wait("w", "go", ["ok:bool"])]), SERVICES)
    event = driver.accept({})
    assert event.status is EventStatus.WAITING
    assert driver.cancel(event, 101).status is EventStatus.CANCELLED


def test_retry_keeps_a_wait_waiting_with_its_timer_and_the_signal_then_completes_it():
    workflow = graph(
        [
            wait("w", "go", ["ok:bool"], timeout=600, on_timeout=["late"]),
            step("upper"),
            step("count", after=["w", "upper"]),
            step("late", "count"),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event, call = driver.call(driver.accept({"message": "m"}), "upper", now=101)
    event = driver.done(event, call, now=102, error=PERMANENT)
    assert event.status is EventStatus.FAILED
    assert decider.timers(event) == []
    event = driver.retry(event, 200)
    assert statuses(event) == {"w": "waiting", "upper": "ready", "count": "pending", "late": "pending"}
    assert decider.timers(event) == [("w", 700)]
    event = driver.signal(event, "go", {"ok": True}, now=201)
    event = driver.run(event, "upper", {"message": "M"}, now=202)
    assert statuses(event) == {"w": "completed", "upper": "completed", "count": "ready", "late": "skipped"}


def test_retry_runs_a_failed_switch_again_in_the_engine():
    workflow = graph(
        [step("count"), switch("route", "steps.count.n > 1", {"true": ["upper"]}, after=["count"]), step("upper")],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m"}), "count", {"n": 0}, now=101)
    assert event.status is EventStatus.FAILED
    event = driver.retry(event, 200)
    assert decider.ready_units(event) == []
    assert event.steps["route"].status is not StepStatus.READY
    assert "no longer registered" not in str(event.error)


def test_retry_runs_a_failed_transform_again_in_the_engine():
    workflow = graph([transform("t", {"n": "input.message"}, ["n:int"])], inputs=["message:string"])
    driver = Driver(workflow, SERVICES)
    event = driver.retry(driver.accept({"message": "m"}), 200)
    assert decider.ready_units(event) == []
    assert event.steps["t"].status is not StepStatus.READY


# Plans


def test_a_plan_compiles_every_expression_of_the_workflow_once():
    workflow = graph(
        [switch("s", "input.v", {"a": ["t"]}), transform("t", {"x": "1", "y": "input.v"}, ["x:int", "y:string"])],
        inputs=["v:string"],
    )
    plan = Plan.of(workflow, EXPRESSIONS)
    assert set(plan.expressions) == {("s", "expression"), ("t", "x"), ("t", "y")}
    assert [s.id for s in plan.order] == ["s", "t"]


def test_a_plan_cannot_be_made_of_a_workflow_whose_expression_does_not_compile():
    workflow = graph([transform("t", {"x": "1 +"}, ["x:int"])])
    with pytest.raises(InvalidExpression):
        Plan.of(workflow, EXPRESSIONS)


def test_a_plan_cannot_be_made_of_a_workflow_with_a_route_to_an_unknown_step():
    workflow = graph([switch("s", "1", {"1": ["ghost"]})])
    with pytest.raises(InvalidDefinition, match="there is no step 'ghost'"):
        Plan.of(workflow, EXPRESSIONS)


# The linear form


def test_the_linear_form_is_a_chain_of_service_steps_each_after_the_one_before():
    workflow = chain(["upper", "count", "upper"], inputs=["message:string"])
    assert [(s.id, s.kind, s.service, s.after) for s in workflow.steps] == [
        ("upper", "service", "upper", ()),
        ("count", "service", "count", ("upper",)),
        ("upper-2", "service", "upper", ("count",)),
    ]
    assert workflow.service_names == ("upper", "count")
    assert check(workflow, SERVICES) == []
