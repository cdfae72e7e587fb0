"""Fail and succeed steps at run time: they end the event at once, failed or completed, saying their message."""

from __future__ import annotations

import pytest

from machinery.engine import decider
from machinery.engine.errors import InvalidState
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import (
    Driver,
    fail,
    graph,
    registry,
    service,
    statuses,
    step,
    succeed,
    switch,
    wait,
)

SERVICES = registry(
    service("check", ["message:string"], ["score:int"]),
    service("ship", ["message:string"], ["shipped:bool"]),
    service("audit", ["message:string"], ["audited:bool"]),
)


def gate(end, *, end_first: bool = True) -> Driver:
    """``check``, then ``decide``: a score of 1 goes on to ``ship``, any other to the ending step ``end``."""
    steps = [
        step("check"),
        switch("decide", "steps.check.score", {"1": ["ship"]}, default=[end.id], after=["check"]),
        step("ship"),
    ]
    steps.insert(2 if end_first else 3, end)
    return Driver(graph(steps, inputs=["message:string"], outputs=["score:int"]), SERVICES)


# Fail


def test_a_fail_step_ends_the_event_failed_with_its_message():
    driver = gate(fail("reject", "the score is too low"))
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 0}, now=101)
    assert event.status is EventStatus.FAILED
    assert event.error == {"kind": "fail", "step": "reject", "message": "the score is too low"}
    assert event.outputs is None
    assert event.steps["reject"].status is StepStatus.COMPLETED
    assert event.steps["reject"].ended_at == 102
    assert decider.ready_units(event) == []
    assert event.due_at is None


def test_a_fail_step_without_a_message_says_which_step_failed_the_event():
    driver = gate(fail("reject"))
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 0}, now=101)
    assert event.error == {"kind": "fail", "step": "reject", "message": "step 'reject' failed the event"}


def test_a_fail_step_on_a_route_not_taken_is_skipped_and_the_event_completes():
    driver = gate(fail("reject", "too low"))
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 1}, now=101)
    assert statuses(event)["reject"] == "skipped"
    event = driver.run(event, "ship", {"shipped": True}, now=103)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"score": 1}


def test_a_fail_step_last_in_the_definition_ends_the_event_failed():
    driver = gate(fail("reject", "the score is too low"), end_first=False)
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 0}, now=101)
    assert event.status is EventStatus.FAILED
    assert event.error == {"kind": "fail", "step": "reject", "message": "the score is too low"}


def test_a_workflow_of_a_single_fail_step_fails_every_event():
    event = Driver(graph([fail("no", "closed")]), SERVICES).accept({})
    assert event.status is EventStatus.FAILED
    assert event.error == {"kind": "fail", "step": "no", "message": "closed"}


def test_a_fail_step_ends_the_event_while_a_parallel_step_is_still_running():
    workflow = graph(
        [step("audit"), step("check"), fail("stop", "stopped", after=["check"])],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event, audit = driver.call(driver.accept({"message": "m"}), "audit", now=101)
    event = driver.run(event, "check", {"score": 0}, now=101)
    assert event.status is EventStatus.FAILED
    assert event.error["step"] == "stop"
    assert decider.ready_units(event) == []


def test_an_event_a_fail_step_ended_cannot_be_retried():
    driver = gate(fail("reject", "the score is too low"))
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 0}, now=101)
    with pytest.raises(InvalidState, match="failed on purpose by its step 'reject'"):
        driver.retry(event, 200)


# Succeed


def test_a_succeed_step_ends_the_event_completed_with_the_outputs_available_then():
    driver = gate(succeed("done", "nothing to ship"))
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 0}, now=101)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"score": 0}
    assert event.error is None
    assert statuses(event) == {"check": "completed", "decide": "completed", "done": "completed", "ship": "skipped"}
    assert event.due_at is None


@pytest.mark.parametrize("end_first", [True, False])
def test_a_succeed_step_ends_the_event_wherever_it_stands_in_the_definition(end_first):
    driver = gate(succeed("done"), end_first=end_first)
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 0}, now=101)
    assert event.status is EventStatus.COMPLETED


def test_a_succeed_step_skips_what_was_pending_ready_or_waiting():
    workflow = graph(
        [
            step("check"),
            step("audit"),
            wait("approval", "approve", ["ok:bool"]),
            step("ship", after=["audit"]),
            succeed("done", after=["check"]),
        ],
        inputs=["message:string"],
        outputs=["score:int"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m"}), "check", {"score": 3}, now=101)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"score": 3}
    assert statuses(event) == {
        "check": "completed",
        "audit": "skipped",
        "approval": "skipped",
        "ship": "skipped",
        "done": "completed",
    }
    assert decider.ready_units(event) == []
    assert decider.timers(event) == []
    assert driver.claim(event, "audit", now=103) is None
    with pytest.raises(InvalidState):
        driver.signal(event, "approve", {"ok": True}, now=103)


def test_a_succeed_step_whose_workflow_outputs_are_not_there_yet_fails_the_event():
    workflow = graph([succeed("done"), step("check")], inputs=["message:string"], outputs=["score:int"])
    event = Driver(workflow, SERVICES).accept({"message": "m"})
    assert event.status is EventStatus.FAILED
    assert event.error["kind"] == "type"
    assert "workflow output 'score' is missing" in event.error["message"]


def test_a_succeed_step_at_the_start_completes_the_event_on_acceptance():
    driver = Driver(graph([succeed("done"), step("ship")], inputs=["message:string"]), SERVICES)
    event = driver.accept({"message": "m"})
    assert event.status is EventStatus.COMPLETED
    assert statuses(event) == {"done": "completed", "ship": "skipped"}
