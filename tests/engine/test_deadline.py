"""A workflow's timeout: an event not over by its deadline starts no more steps and fails."""

from __future__ import annotations

from dataclasses import replace

from machinery.engine import decider
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import SETTINGS, Driver, chain, graph, registry, service, statuses, step, wait

SERVICES = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("reverse", ["message:string"], ["message:string"]),
)


def timed_chain(timeout: float = 60) -> Driver:
    workflow = chain(["upper", "reverse"], inputs=["message:string"], outputs=["message:string"])
    return Driver(replace(workflow, timeout=timeout), SERVICES)


def test_an_event_gets_its_deadline_from_its_workflows_timeout_and_is_due_by_then():
    event = timed_chain(timeout=10).accept({"message": "hi"}, now=100)

    assert event.deadline == 110
    assert event.due_at == 110
    assert Driver(chain(["upper"], inputs=["message:string"]), SERVICES).accept({"message": "hi"}).deadline is None


def test_a_unit_claimed_past_the_deadline_fails_the_event_instead_of_calling_and_keeps_the_steps():
    driver = timed_chain(timeout=10)
    event = driver.run(driver.accept({"message": "hi"}, now=100), "upper", {"message": "HI"}, now=101)

    claimed = driver.claim(event, "reverse", now=110)

    assert claimed is not None
    expired, call = claimed
    assert call is None
    assert expired.status is EventStatus.FAILED
    assert expired.error == {
        "kind": "timeout",
        "message": "the event did not end within its workflow's timeout of 10 s",
    }
    assert statuses(expired) == {"upper": "completed", "reverse": "ready"}
    assert expired.due_at is None


def test_before_the_deadline_a_claim_calls_as_usual():
    driver = timed_chain(timeout=10)
    claimed = driver.claim(driver.accept({"message": "hi"}, now=100), "upper", now=109.9)
    assert claimed is not None and claimed[1] is not None


def test_past_deadline_is_true_only_for_an_unfinished_event_at_or_after_its_deadline():
    driver = timed_chain(timeout=10)
    event = driver.accept({"message": "hi"}, now=100)

    assert not decider.past_deadline(event, 109.9)
    assert decider.past_deadline(event, 110)
    assert not decider.past_deadline(driver.cancel(event, 105), 200)


def test_a_wait_with_no_timeout_of_its_own_is_bounded_by_the_deadline():
    workflow = replace(
        graph([wait("w", "go", ["ok:bool"]), step("upper", after=["w"])], inputs=["message:string"]), timeout=30
    )
    driver = Driver(workflow, SERVICES)
    event = driver.accept({"message": "hi"}, now=100)

    assert event.status is EventStatus.WAITING
    assert event.due_at == 130
    assert decider.past_deadline(event, 130)
    assert decider.expire(driver.plan, event, 130, SETTINGS).status is EventStatus.FAILED


def test_the_due_time_is_the_sooner_of_the_units_and_the_deadline():
    event = timed_chain(timeout=1000).accept({"message": "hi"}, now=100)
    assert event.due_at == 100 + SETTINGS.stale_after


def test_a_paused_event_is_due_at_its_deadline():
    driver = timed_chain(timeout=10)
    assert driver.pause(driver.accept({"message": "hi"}, now=100), 101).due_at == 110


def test_retrying_a_timed_out_event_gives_it_a_new_deadline_and_goes_on_from_its_steps():
    driver = timed_chain(timeout=10)
    event = driver.run(driver.accept({"message": "hi"}, now=100), "upper", {"message": "HI"}, now=101)
    expired = decider.expire(driver.plan, event, 111, SETTINGS)

    retried = driver.retry(expired, 200)

    assert retried.status is EventStatus.RUNNING
    assert retried.deadline == 210
    assert retried.steps["reverse"].status is StepStatus.READY
    done = driver.run(retried, "reverse", {"message": "IH"}, now=201)
    assert (done.status, done.outputs) == (EventStatus.COMPLETED, {"message": "IH"})
