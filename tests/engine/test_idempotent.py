"""A service that is not idempotent is never called again after its worker was lost mid-call."""

from __future__ import annotations

from dataclasses import replace

from machinery.engine import decider
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import Driver, corrected_seed_services, seed_workflow


def once_only() -> Driver:
    services = corrected_seed_services()
    services["upper"] = replace(services["upper"], idempotent=False)
    return Driver(seed_workflow(), services)


def test_a_lost_call_of_a_service_that_is_not_idempotent_fails_the_step_at_once() -> None:
    chain = once_only()
    event, _ = chain.call(chain.accept({"message": "a b"}), "upper", now=101)

    claimed = chain.claim(event, "upper", now=200)

    assert claimed is not None
    event, call = claimed
    assert call is None
    state = event.steps["upper"]
    assert (state.status, state.attempts, state.lost) == (StepStatus.FAILED, 1, 1)
    assert state.error is not None and state.error["kind"] == "lost"
    assert "service 'upper' is not idempotent" in state.error["message"]
    assert event.status is EventStatus.FAILED


def test_a_step_waiting_for_a_worker_says_so_once_and_forgets_it_when_claimed() -> None:
    chain = once_only()
    event = chain.accept({"message": "a b"})

    noted = decider.await_worker(event, "upper", "waiting for a worker that runs command services")

    assert noted is not None
    assert noted.steps["upper"].error == {
        "kind": "worker",
        "message": "waiting for a worker that runs command services",
        "transient": True,
    }
    assert event.steps["upper"].error is None, "the event read is left as it was"
    assert decider.await_worker(noted, "upper", "waiting for a worker that runs command services") is None
    claimed, call = chain.call(noted, "upper", now=101)
    assert call is not None and claimed.steps["upper"].error is None
