"""Child workflows through the runtime: a ``workflow`` step's child event, its outcome, and what reaches it."""

from __future__ import annotations

import pytest

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.errors import InvalidState
from machinery.engine.state import EventStatus, StepStatus
from machinery.runtime import Runner
from tests.engine.builders import (
    PERMANENT,
    child,
    fail,
    from_context,
    from_input,
    graph,
    registry,
    service,
    step,
    succeed,
    wait,
)
from tests.runtime.harness import Runtime

SERVICES = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("reverse", ["message:string"], ["message:string"]),
)

SHOUT = graph(
    [step("upper")],
    inputs=["message:string"],
    outputs=["message:string"],
    name="shout",
)
"""The child: upper-cases its message."""

PARENT = graph(
    [
        child("kid", "shout", input={"message": from_input("text")}, output={"message": "loud"}),
        step("reverse", after=["kid"], input={"message": from_context("loud")}),
    ],
    inputs=["text:string"],
    outputs=["message:string", "loud:string"],
    name="parent",
)
"""Runs ``shout`` as a child, then reverses what it answered."""


def register(runtime: Runtime, child_workflow=SHOUT) -> None:
    runtime.register(SERVICES.values(), child_workflow)
    runtime.registry.add_workflow(PARENT)


def children_of(runtime: Runtime, name: str = "shout") -> list[str]:
    workflow_id = runtime.registry.get_workflow(name).id
    return [e.id for e in runtime.store.list_events(workflow_id=workflow_id, status=None, offset=0, limit=100).items]


def test_a_parent_completes_with_the_outputs_of_its_child_event_linked_both_ways(runtime: Runtime):
    register(runtime)
    event_id = runtime.send("parent", {"text": "abc"})

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "CBA", "loud": "ABC"}
    [child_id] = children_of(runtime)
    assert event.steps["kid"].child == child_id
    assert event.steps["kid"].outputs == {"message": "ABC"}
    kid = runtime.event(child_id)
    assert kid.status is EventStatus.COMPLETED
    assert kid.parent == {"event": event_id, "step": "kid", "depth": 1}
    assert kid.data == {"message": "abc"}
    assert kid.to_parent is not None and kid.to_parent.status is StepStatus.COMPLETED
    assert kid.due_at is None, "a child whose outcome was handed back is due no more"


def test_a_failed_child_fails_the_step_and_a_retry_of_the_parent_retries_that_child(runtime: Runtime):
    register(runtime)
    runtime.answers["upper"] = lambda inputs: PERMANENT
    event_id = runtime.send("parent", {"text": "abc"})

    event = runtime.run(event_id)

    [child_id] = children_of(runtime)
    assert event.status is EventStatus.FAILED
    assert event.steps["kid"].status is StepStatus.FAILED
    error = event.steps["kid"].error or {}
    assert error["child"] == child_id
    assert error["kind"] == "http", "the child's kind of error"
    assert error["message"] == f"child event '{child_id}' (shout) failed: step 'upper' failed: HTTP 400: bad request"
    assert runtime.event(child_id).status is EventStatus.FAILED

    runtime.answers["upper"] = lambda inputs: {"message": inputs["message"].upper()}
    retried = runtime.events.retry(event_id)

    assert retried.steps["kid"].status is StepStatus.WAITING
    event = runtime.run(event_id)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "CBA", "loud": "ABC"}
    assert children_of(runtime) == [child_id], "the same child, retried from where it failed"
    assert [unit for unit, _ in runtime.called()] == ["upper", "upper", "reverse"]


def test_a_child_failed_on_purpose_fails_its_parent_on_purpose_and_neither_is_retried(runtime: Runtime):
    refusing = graph([fail("no", "refused")], inputs=["message:string"], name="shout")
    runtime.register(SERVICES.values(), refusing)
    runtime.registry.add_workflow(
        graph([child("kid", "shout", input={"message": from_input("text")})], inputs=["text:string"], name="parent")
    )
    event_id = runtime.send("parent", {"text": "abc"})

    event = runtime.run(event_id)

    assert event.status is EventStatus.FAILED
    assert (event.error or {})["kind"] == ErrorKind.FAIL
    with pytest.raises(InvalidState):
        runtime.events.retry(event_id)


def waiting_child() -> object:
    """A child that waits for the signal ``go`` before it upper-cases."""
    return graph(
        [wait("hold", "go"), step("upper", after=["hold"])],
        inputs=["message:string"],
        outputs=["message:string"],
        name="shout",
    )


def waiting_for_its_child(runtime: Runtime) -> tuple[str, str]:
    """A parent event run as far as it goes: waiting for its child, which waits for its signal; their ids."""
    register(runtime, waiting_child())
    event_id = runtime.send("parent", {"text": "abc"})
    runtime.run(event_id)
    [child_id] = children_of(runtime)
    return event_id, child_id


def test_cancelling_a_parent_cancels_its_running_child(runtime: Runtime):
    event_id, child_id = waiting_for_its_child(runtime)
    assert runtime.event(child_id).status is EventStatus.WAITING

    cancelled = runtime.events.cancel(event_id)

    assert cancelled.status is EventStatus.CANCELLED
    assert runtime.event(child_id).status is EventStatus.CANCELLED
    assert runtime.run(event_id).status is EventStatus.CANCELLED


def test_pausing_a_parent_pauses_its_child_and_resuming_it_resumes_both(runtime: Runtime):
    event_id, child_id = waiting_for_its_child(runtime)

    runtime.events.pause(event_id)
    assert runtime.event(child_id).status is EventStatus.PAUSED
    runtime.events.signal(child_id, "go", {})
    runtime.run(event_id)
    assert runtime.called() == [], "a paused child starts nothing"

    runtime.events.resume(event_id)
    assert runtime.event(child_id).status is not EventStatus.PAUSED
    event = runtime.run(event_id)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "CBA", "loud": "ABC"}


def test_a_claim_taken_over_after_its_worker_was_lost_starts_no_second_child(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
):
    register(runtime)
    event_id = runtime.send("parent", {"text": "abc"})
    finish = Runner._finish
    crashed = []

    def crash_once(self, event_id, call, outputs, error):
        if call.step_id == "kid" and not crashed:
            crashed.append(outputs)
            raise RuntimeError("the worker died after it started the child")
        return finish(self, event_id, call, outputs, error)

    monkeypatch.setattr(Runner, "_finish", crash_once)
    with pytest.raises(RuntimeError):
        runtime.run(event_id)
    assert runtime.event(event_id).steps["kid"].status is StepStatus.RUNNING

    runtime.now += 60
    runtime.runner.sweep()
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert children_of(runtime) == crashed
    assert event.steps["kid"].child == crashed[0]
    assert event.steps["kid"].lost == 1


def test_a_child_nested_deeper_than_allowed_at_run_time_fails_its_step(runtime: Runtime):
    register(runtime)
    runtime.runner.settings = type(runtime.runner.settings)(max_workflow_depth=0)
    event_id = runtime.send("parent", {"text": "abc"})

    event = runtime.run(event_id)

    assert event.status is EventStatus.FAILED
    assert "nested 1 deep, more than the 0 allowed (MACHINERY_MAX_WORKFLOW_DEPTH)" in (event.error or {})["message"]
    assert children_of(runtime) == []


def test_a_transient_failure_of_the_childs_service_is_retried_inside_the_child(runtime: Runtime):
    register(runtime)
    answers = iter([CallFailure("refused", True, ErrorKind.CONNECTION)])
    runtime.answers["upper"] = lambda inputs: next(answers, {"message": inputs["message"].upper()})
    event_id = runtime.send("parent", {"text": "abc"})

    runtime.run(event_id)
    runtime.now += 5
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.steps["kid"].attempts == 1


def test_a_child_cancelled_on_its_own_fails_its_step_and_the_parent_cannot_be_retried(runtime: Runtime):
    event_id, child_id = waiting_for_its_child(runtime)

    runtime.events.cancel(child_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.FAILED
    assert (event.steps["kid"].error or {})["message"] == f"child event '{child_id}' (shout) cancelled"
    with pytest.raises(InvalidState, match=f"child event '{child_id}' of step 'kid' is cancelled"):
        runtime.events.retry(event_id)


def test_a_child_retried_on_its_own_is_taken_by_its_parent_once_the_parent_is_retried(runtime: Runtime):
    register(runtime)
    runtime.answers["upper"] = lambda inputs: PERMANENT
    event_id = runtime.send("parent", {"text": "abc"})
    runtime.run(event_id)
    [child_id] = children_of(runtime)
    runtime.answers["upper"] = lambda inputs: {"message": inputs["message"].upper()}

    runtime.events.retry(child_id)
    runtime.run(child_id)
    assert runtime.event(child_id).status is EventStatus.COMPLETED
    assert runtime.event(event_id).status is EventStatus.FAILED, "its step did not wait for it any more"

    runtime.events.retry(event_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "CBA", "loud": "ABC"}


def test_a_child_that_ended_while_its_parent_had_failed_is_taken_when_the_parent_is_retried(runtime: Runtime):
    """The parent fails on another branch while its child still runs; the child's outcome, which a failed parent
    cannot take, is handed back once the parent is retried."""
    runtime.register(SERVICES.values(), SHOUT)
    runtime.registry.add_service(service("count", ["text:string"], ["n:int"]))
    runtime.registry.add_workflow(
        graph(
            [child("kid", "shout", input={"message": from_input("text")}), step("count")],
            inputs=["text:string"],
            outputs=["message:string", "n:int"],
            name="branches",
        )
    )
    broken = [True]
    runtime.answers["count"] = lambda inputs: (
        CallFailure("HTTP 400", False, ErrorKind.HTTP) if broken[0] else {"n": len(inputs["text"])}
    )
    event_id = runtime.send("branches", {"text": "abc"})
    runtime.dispatcher.drop()
    runtime.runner.run(event_id, "kid")  # the child starts, its first step is sent
    runtime.runner.run(event_id, "count")  # the other branch fails, and the parent with it
    assert runtime.event(event_id).status is EventStatus.FAILED
    runtime.run(event_id)  # the child runs to its end; the failed parent does not take its outcome
    [child_id] = children_of(runtime)
    assert runtime.event(child_id).status is EventStatus.COMPLETED
    assert runtime.event(event_id).steps["kid"].status is StepStatus.WAITING
    broken[0] = False

    runtime.events.retry(event_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED, event.error
    assert event.outputs == {"message": "ABC", "n": 3}


def test_a_parent_that_succeeds_early_cancels_the_child_it_leaves_running(runtime: Runtime):
    runtime.register(SERVICES.values(), SHOUT)
    runtime.registry.add_service(service("count", ["text:string"], ["n:int"]))
    runtime.registry.add_workflow(
        graph(
            [
                child("kid", "shout", input={"message": from_input("text")}),
                step("count"),
                succeed("done", after=["count"]),
            ],
            inputs=["text:string"],
            name="early",
        )
    )
    runtime.answers["count"] = lambda inputs: {"n": len(inputs["text"])}
    event_id = runtime.send("early", {"text": "abc"})
    runtime.dispatcher.drop()
    runtime.runner.run(event_id, "kid")  # the child starts
    runtime.runner.run(event_id, "count")  # then the other branch ends the parent early

    event = runtime.event(event_id)
    [child_id] = children_of(runtime)
    assert event.status is EventStatus.COMPLETED
    assert event.steps["kid"].status is StepStatus.SKIPPED
    assert runtime.event(child_id).status is EventStatus.CANCELLED
