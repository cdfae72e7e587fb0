"""``workflow`` steps: checked against the child workflow's contract, no cycles nor nesting too deep, and a child's
outcome handed back to its parent's step."""

from __future__ import annotations

from typing import Any

from machinery.engine import decider
from machinery.engine.checker import check_nesting, check_workflow
from machinery.engine.kinds.workflow import contract, contract_key
from machinery.engine.model import Workflow
from machinery.engine.plan import Plan
from machinery.engine.state import Event, EventStatus, StepStatus
from tests.engine.builders import (
    EXPRESSIONS,
    SETTINGS,
    Driver,
    child,
    const,
    from_context,
    from_input,
    graph,
    registry,
    service,
    step,
)

UPPER = registry(service("upper", ["message:string"], ["message:string"]))
SHOUT = graph([step("upper")], inputs=["message:string", "times:int"], outputs=["message:string"], name="shout")


def callees(*workflows: Workflow, version: int | None = None) -> dict:
    """The services, and the contract of each workflow under the key a step running it finds it by."""
    found = dict(UPPER)
    for w in workflows:
        key = contract_key(w.name, version)
        found[key] = contract(w, key)
    return found


def check(workflow: Workflow, services: dict) -> list[str]:
    return [p.message for p in check_workflow(workflow, services, EXPRESSIONS)]


def parent(*steps, inputs=("text:string",), outputs=()) -> Workflow:
    return graph(steps, inputs=inputs, outputs=outputs, name="parent")


# The static check


def test_a_workflow_step_whose_inputs_fit_the_childs_and_whose_outputs_flow_on_type_checks():
    workflow = parent(
        child("kid", "shout", input={"message": from_input("text"), "times": const(2)}, output={"message": "loud"}),
        step("upper", after=["kid"], input={"message": from_context("loud")}),
        outputs=["loud:string"],
    )
    assert check(workflow, callees(SHOUT)) == []


def test_mapped_inputs_that_do_not_fit_the_childs_inputs_are_refused_each_named():
    workflow = parent(
        child("kid", "shout", input={"message": const(3), "colour": const("red")}),
        inputs=["text:string"],
    )
    assert check(workflow, callees(SHOUT)) == [
        "step 'kid' maps input 'colour', which workflow 'shout' does not take",
        "step 'kid' input 'message' expects string, but the constant 3 does not fit: got int 3",
        "step 'kid' input 'times' needs an int, but nothing before it provides 'times'",
    ]


def test_the_childs_outputs_type_what_follows_it():
    workflow = parent(
        child("kid", "shout", input={"message": from_input("text"), "times": const(1)}),
        outputs=["message:int"],
    )
    assert check(workflow, callees(SHOUT)) == [
        "workflow output 'message' expects int, but output 'message' of step 'kid' is string"
    ]


def test_a_child_workflow_not_registered_or_a_version_not_registered_is_named():
    workflow = parent(child("kid", "nobody"), child("old", "shout", version=7))
    problems = check(workflow, callees(SHOUT))
    assert problems == [
        "step 'kid' calls workflow 'nobody', which is not registered",
        "step 'old' calls workflow 'shout' version 7, which is not registered",
    ]


# Cycles and depth


def calling(name: str, *children: str | tuple[str, int]) -> Workflow:
    steps = []
    for i, c in enumerate(children):
        name_, version = c if isinstance(c, tuple) else (c, None)
        steps.append(child(f"s{i}", name_, version=version))
    return graph(steps or [step("upper")], name=name)


def known(*workflows: Workflow) -> dict:
    return {(w.name, None): w for w in workflows}


def test_a_workflow_running_itself_is_a_cycle():
    [problem] = check_nesting(calling("a", "a"), {}, 10)
    assert problem.message == "workflows may not run each other in a cycle: a → a"


def test_workflows_running_each_other_are_refused_naming_the_cycle():
    registered = known(calling("a", "b"), calling("b", "c"), calling("c"))
    [problem] = check_nesting(calling("c", "a"), registered, 10)
    assert problem.message == "workflows may not run each other in a cycle: c → a → b → c"


def test_a_pinned_version_is_followed_as_it_was_registered():
    registered = known(calling("a", ("b", 1)), calling("b", "a")) | {("b", 1): calling("b")}
    assert check_nesting(calling("c", "a"), registered, 10) == []
    [problem] = check_nesting(calling("b", "a"), registered | {("b", 1): calling("b", "a")}, 10)
    assert problem.message.endswith("a → b@1 → a")


def test_nesting_deeper_than_allowed_counts_callers_above_and_children_below():
    registered = known(calling("top", "mid"), calling("mid", "new"), calling("leaf"))
    assert check_nesting(calling("new", "leaf"), registered, 3) == []
    [problem] = check_nesting(calling("new", "leaf"), registered, 2)
    assert problem.message == (
        "child workflows would nest 3 deep (top → mid → new → leaf), more than the 2 allowed "
        "(MACHINERY_MAX_WORKFLOW_DEPTH)"
    )


# Running: the claim, the child's start, and its outcome


def driver() -> Driver:
    workflow = parent(
        child("kid", "shout", input={"message": from_input("text"), "times": const(1)}),
        outputs=["message:string"],
    )
    return Driver(workflow, callees(SHOUT))


def started(d: Driver) -> tuple:
    event = d.accept({"text": "abc"})
    event, call = d.call(event, "kid", 101.0)
    assert call.service.kind == "workflow"
    assert call.inputs == {"message": "abc", "times": 1}
    assert call.idempotency_key == "ev-1/kid", "the same for every claim of the step: one child"
    event = d.done(event, call, 102.0, outputs="child-1")
    return event, call


def ended_child(status: EventStatus, **fields: Any) -> Event:
    child_event = decider.accept(
        decider_plan(),
        {"message": "abc", "times": 1},
        event_id="child-1",
        now=101.5,
        settings=SETTINGS,
        parent={"event": "ev-1", "step": "kid", "depth": 1},
    )
    child_event.status = status
    for name, value in fields.items():
        setattr(child_event, name, value)
    return child_event


def decider_plan() -> Plan:
    return Plan.of(SHOUT, EXPRESSIONS)


def test_a_started_child_leaves_its_step_waiting_and_the_event_waiting_on_no_timer():
    event, _ = started(driver())
    state = event.steps["kid"]
    assert (state.status, state.child, state.run_at, state.token) == (StepStatus.WAITING, "child-1", None, None)
    assert event.status is EventStatus.WAITING
    assert decider.timers(event) == [] and event.due_at is None


def test_a_completed_child_completes_the_step_with_its_outputs():
    d = driver()
    event, _ = started(d)
    kid = ended_child(EventStatus.COMPLETED, outputs={"message": "ABC"})

    adopted = decider.adopt(d.plan, event, kid, SHOUT, now=110.0, settings=SETTINGS)

    assert adopted is not None
    assert adopted.status is EventStatus.COMPLETED
    assert adopted.outputs == {"message": "ABC"}
    assert decider.adopt(d.plan, adopted, kid, SHOUT, now=111.0, settings=SETTINGS) is None, "once only"


def test_a_failed_child_fails_the_step_naming_the_child_and_its_error():
    d = driver()
    event, _ = started(d)
    kid = ended_child(EventStatus.FAILED, error={"kind": "timeout", "message": "too slow"})

    adopted = decider.adopt(d.plan, event, kid, SHOUT, now=110.0, settings=SETTINGS)

    assert adopted is not None and adopted.status is EventStatus.FAILED
    assert adopted.steps["kid"].error == {
        "kind": "timeout",
        "message": "child event 'child-1' (shout) failed: too slow",
        "transient": False,
        "child": "child-1",
    }


def test_a_child_not_ended_or_not_waited_for_changes_nothing():
    d = driver()
    event, _ = started(d)
    running = ended_child(EventStatus.RUNNING)
    assert decider.adopt(d.plan, event, running, SHOUT, now=110.0, settings=SETTINGS) is None
    stranger = ended_child(EventStatus.COMPLETED, outputs={"message": "X"}, id="child-2")
    assert decider.adopt(d.plan, event, stranger, SHOUT, now=110.0, settings=SETTINGS) is None


def test_an_ended_child_has_its_parent_unit_ready_and_due_until_handed_back():
    kid = ended_child(EventStatus.RUNNING)
    kid.status = EventStatus.ACCEPTED
    cancelled = decider.cancel(decider_plan(), kid, 105.0, SETTINGS)
    assert decider.ready_units(cancelled) == [decider.PARENT_UNIT]
    assert cancelled.due_at == 105.0 + SETTINGS.stale_after
    assert decider.overdue_units(cancelled, 200.0, SETTINGS) == [decider.PARENT_UNIT]

    handed = decider.handed_back(cancelled, 106.0, SETTINGS)

    assert handed is not None and handed.to_parent is not None
    assert handed.to_parent.status is StepStatus.COMPLETED
    assert decider.ready_units(handed) == [] and handed.due_at is None
    assert decider.handed_back(handed, 107.0, SETTINGS) is None


def test_retrying_a_parent_waits_again_for_the_child_it_started():
    d = driver()
    event, _ = started(d)
    failed = decider.adopt(
        d.plan, event, ended_child(EventStatus.FAILED, error={"message": "x"}), SHOUT, now=110.0, settings=SETTINGS
    )
    assert failed is not None

    retried = d.retry(failed, 120.0)

    state = retried.steps["kid"]
    assert (state.status, state.child, state.error) == (StepStatus.WAITING, "child-1", None)
    assert decider.ready_units(retried) == []
