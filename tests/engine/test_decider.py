"""The decider: pure transitions of an event, from acceptance to completion, failure, cancellation and retries.

Times are plain numbers; the event is accepted at 100 unless a test says otherwise. A claim lasts the service's
timeout (10 s) plus the lease grace (5 s); a ready step is stale after 30 s (see ``SETTINGS`` in builders.py).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from machinery.engine import dataflow, decider
from machinery.engine.errors import InvalidData, InvalidDefinition, InvalidState
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import Event, EventStatus, StepState, StepStatus
from tests.engine.builders import (
    PERMANENT,
    SETTINGS,
    TRANSIENT,
    Driver,
    chain,
    const,
    corrected_seed_services,
    fld,
    from_input,
    from_step,
    graph,
    registry,
    seed_services,
    seed_workflow,
    service,
    statuses,
    step,
)

UPPER = {"message": "A B"}
REVERSE = {"message": "B A"}
COUNT = {"space_count": 1}


def failed(driver: Driver, outputs=None, error=None) -> Event:
    """An event of ``driver`` whose first step failed on its first call."""
    event = driver.accept({"message": "a b"})
    first = driver.plan.order[0].id
    event, call = driver.call(event, first, now=101)
    return driver.done(event, call, now=102, outputs=outputs, error=error)


def in_status(driver: Driver, status: str) -> Event:
    """An event of the text chain with ``status``: accepted, running, completed, failed or cancelled."""
    event = driver.accept({"message": "a b"})
    if status == "running":
        event, _ = driver.call(event, "upper", now=101)
    elif status == "completed":
        for i, (step_id, outputs) in enumerate([("upper", UPPER), ("reverse", REVERSE), ("space-counter", COUNT)]):
            event = driver.run(event, step_id, outputs, now=110 + 10 * i)
    elif status == "failed":
        event = failed(driver, error=PERMANENT)
    elif status == "cancelled":
        event = decider.cancel(driver.plan, event, 101, SETTINGS)
    assert event.status.value == status
    return event


def with_retry(driver: Driver, policy: RetryPolicy) -> Driver:
    """The same workflow, its services retried under ``policy``."""
    return Driver(driver.workflow, {k: replace(s, retry=policy) for k, s in driver.services.items()})


# A linear chain, step by step


def test_accepting_an_event_makes_only_the_first_step_ready(text_chain):
    event = text_chain.accept({"message": "a b"}, now=100)
    assert event.status is EventStatus.ACCEPTED
    assert statuses(event) == {"upper": "ready", "reverse": "pending", "space-counter": "pending"}
    assert decider.ready_units(event) == ["upper"]
    assert event.steps["upper"].run_at == 100
    assert (event.id, event.workflow_name, event.data) == ("ev-1", "process-text", {"message": "a b"})
    assert (event.created_at, event.updated_at) == (100, 100)


def test_accept_keeps_the_idempotency_key_it_is_given(text_chain):
    event = text_chain.accept({"message": "a b"}, idempotency_key="order-17")
    assert event.idempotency_key == "order-17"


def test_a_claim_gives_a_call_with_the_inputs_taken_from_the_context(text_chain):
    event = text_chain.accept({"message": "a b"}, now=100)
    event, call = text_chain.call(event, "upper", now=101)
    assert (call.step_id, call.service.name, call.inputs, call.attempt) == ("upper", "upper", {"message": "a b"}, 1)
    state = event.steps["upper"]
    assert state.status is StepStatus.RUNNING
    assert state.token == call.token
    assert state.lease_until == 101 + 10 + 5
    assert state.inputs == {"message": "a b"}
    assert event.status is EventStatus.RUNNING


def test_finishing_a_step_records_its_outputs_and_makes_the_next_step_ready(text_chain):
    event = text_chain.accept({"message": "a b"}, now=100)
    event = text_chain.run(event, "upper", UPPER, now=101)
    assert event.steps["upper"].status is StepStatus.COMPLETED
    assert event.steps["upper"].outputs == UPPER
    assert event.steps["upper"].ended_at == 102
    assert statuses(event) == {"upper": "completed", "reverse": "ready", "space-counter": "pending"}
    assert decider.ready_units(event) == ["reverse"]


def test_the_next_step_takes_its_inputs_from_the_previous_steps_outputs(text_chain):
    event = text_chain.run(text_chain.accept({"message": "a b"}), "upper", UPPER, now=101)
    _, call = text_chain.call(event, "reverse", now=103)
    assert call.inputs == {"message": "A B"}


def test_the_event_completes_with_the_workflow_outputs_read_from_the_final_context(text_chain):
    event = text_chain.accept({"message": "a b"})
    event = text_chain.run(event, "upper", UPPER, now=101)
    event = text_chain.run(event, "reverse", REVERSE, now=103)
    event = text_chain.run(event, "space-counter", COUNT, now=105)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "B A", "space_count": 1}
    assert event.error is None
    assert decider.ready_units(event) == []
    assert dataflow.context(text_chain.plan, event) == {"message": "B A", "space_count": 1}


def test_outputs_a_service_does_not_declare_are_dropped(text_chain):
    event = text_chain.run(text_chain.accept({"message": "a b"}), "upper", {"message": "A B", "debug": 1}, now=101)
    assert event.steps["upper"].outputs == {"message": "A B"}


def test_a_transition_leaves_the_event_it_was_given_unchanged(text_chain):
    accepted = text_chain.accept({"message": "a b"})
    before = accepted.to_doc()
    claimed, call = text_chain.call(accepted, "upper", now=101)
    text_chain.done(claimed, call, now=102, error=TRANSIENT)
    decider.cancel(text_chain.plan, claimed, 103, SETTINGS)
    assert accepted.to_doc() == before
    assert claimed.steps["upper"].status is StepStatus.RUNNING
    assert claimed.steps["upper"].history == []


# Accepting data


@pytest.fixture
def typed() -> Driver:
    workflow = chain(
        ["upper"],
        inputs=[
            "message:string",
            "count:int",
            fld("mode:string", required=False, default="loud"),
            fld("note:string", required=False),
            "weights:array<float>",
        ],
        outputs=["message:string"],
        name="typed",
    )
    return Driver(workflow, corrected_seed_services())


def test_accept_names_every_bad_field_at_once(typed):
    with pytest.raises(InvalidData) as raised:
        typed.accept({"count": "3", "colour": "red", "weights": [1, "x"]})
    problems = {p.field: p for p in raised.value.problems}
    assert set(problems) == {"message", "count", "colour", "weights"}
    assert problems["message"].message == "'message' is required"
    assert problems["message"].expected == "string"
    assert problems["count"].message == "'count' should be int: got string '3'"
    assert (problems["count"].expected, problems["count"].found) == ("int", "string")
    assert problems["colour"].message == "'colour' is not an input of workflow 'typed'"
    assert problems["weights"].message == "'weights' should be array<float>: item 1 is string 'x'"
    assert "workflow 'typed'" in raised.value.message


def test_accept_refuses_a_bool_where_an_int_is_expected(typed):
    with pytest.raises(InvalidData) as raised:
        typed.accept({"message": "m", "count": True, "weights": []})
    [problem] = raised.value.problems
    assert (problem.field, problem.expected, problem.found) == ("count", "int", "bool")


def test_accept_applies_defaults_and_leaves_optional_inputs_without_default_absent(typed):
    event = typed.accept({"message": "m", "count": 3, "weights": [1, 2.5]})
    assert event.data == {"message": "m", "count": 3, "mode": "loud", "weights": [1, 2.5]}


def test_accept_keeps_a_given_value_over_the_default(typed):
    event = typed.accept({"message": "m", "count": 3, "weights": [], "mode": "soft", "note": "n"})
    assert event.data["mode"] == "soft"
    assert event.data["note"] == "n"


# Answers outside the contract


def test_a_wrong_output_type_fails_the_step_and_the_event_naming_service_field_and_types(text_chain):
    event = failed(text_chain, outputs={"message": 42})
    assert event.status is EventStatus.FAILED
    assert statuses(event) == {"upper": "failed", "reverse": "pending", "space-counter": "pending"}
    assert event.error["step"] == "upper"
    assert event.error["kind"] == "type"
    assert event.error["message"] == (
        "step 'upper' failed: service 'upper' answered outside its contract: "
        "service 'upper' output 'message' should be string: got int 42"
    )
    [problem] = event.error["problems"]
    assert (problem["field"], problem["expected"], problem["found"]) == ("message", "string", "int")
    assert event.steps["upper"].error["kind"] == "type"
    assert decider.ready_units(event) == []
    assert event.due_at is None


def test_a_bool_output_where_an_int_is_declared_fails_the_step(text_chain):
    event = text_chain.accept({"message": "a b"})
    event = text_chain.run(event, "upper", UPPER, now=101)
    event = text_chain.run(event, "reverse", REVERSE, now=103)
    event, call = text_chain.call(event, "space-counter", now=105)
    event = text_chain.done(event, call, now=106, outputs={"space_count": True})
    assert event.status is EventStatus.FAILED
    assert "service 'space-counter' output 'space_count' should be int: got bool True" in event.error["message"]


def test_a_missing_output_fails_the_step_and_the_event_naming_service_and_field(text_chain):
    event = failed(text_chain, outputs={"text": "A B"})
    assert event.status is EventStatus.FAILED
    assert event.steps["upper"].status is StepStatus.FAILED
    assert "service 'upper' output 'message' is missing" in event.error["message"]
    [problem] = event.error["problems"]
    assert (problem["field"], problem["expected"], problem["found"]) == ("message", "string", "nothing")


@pytest.mark.parametrize(("answer", "kind"), [(["A B"], "array"), ("A B", "string"), (None, "null"), (3, "int")])
def test_an_answer_that_is_not_an_object_fails_the_step_and_the_event(text_chain, answer, kind):
    event = failed(text_chain, outputs=answer)
    assert event.status is EventStatus.FAILED
    assert event.steps["upper"].status is StepStatus.FAILED
    assert f"the answer should be a JSON object, got {kind}" in event.error["message"]
    assert event.error["problems"] == [
        {"message": f"the answer should be a JSON object, got {kind}", "expected": "object", "found": kind}
    ]


def test_a_missing_output_with_a_default_is_filled_in():
    services = registry(service("upper", ["message:string"], ["message:string", fld("level:int", default=1)]))
    driver = Driver(chain(["upper"], inputs=["message:string"], outputs=["message:string", "level:int"]), services)
    event = driver.run(driver.accept({"message": "a"}), "upper", {"message": "A"}, now=101)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "A", "level": 1}


def test_a_missing_optional_output_is_left_out():
    services = registry(service("upper", ["message:string"], ["message:string", fld("note:string", required=False)]))
    driver = Driver(chain(["upper"], inputs=["message:string"], outputs=["message:string"]), services)
    event = driver.run(driver.accept({"message": "a"}), "upper", {"message": "A"}, now=101)
    assert event.status is EventStatus.COMPLETED
    assert event.steps["upper"].outputs == {"message": "A"}


# Errors and retries


def test_a_transient_error_puts_the_step_in_retrying_until_now_plus_the_backoff(text_chain):
    event = failed(text_chain, error=TRANSIENT)  # claimed at 101, failed at 102
    state = event.steps["upper"]
    assert state.status is StepStatus.RETRYING
    assert state.run_at == 102 + 1.0
    assert state.error == {"kind": "connection", "message": "connection refused", "transient": True}
    assert state.token is None
    assert [h["error"]["message"] for h in state.history] == ["connection refused"]
    assert (state.history[0]["attempt"], state.history[0]["started_at"], state.history[0]["ended_at"]) == (1, 101, 102)
    assert event.status is EventStatus.RUNNING
    assert decider.ready_units(event) == []
    assert decider.timers(event) == [("upper", 103.0)]


def test_each_retry_waits_longer_by_the_policys_multiplier(text_chain):
    event = failed(text_chain, error=TRANSIENT)
    event, call = text_chain.call(event, "upper", now=103)
    assert call.attempt == 2
    event = text_chain.done(event, call, now=110, error=TRANSIENT)
    assert event.steps["upper"].status is StepStatus.RETRYING
    assert event.steps["upper"].run_at == 110 + 2.0


def test_the_retry_delay_takes_the_random_number_it_is_given_for_jitter(text_chain):
    driver = with_retry(text_chain, RetryPolicy(attempts=3, backoff=4.0, jitter=True))
    event = driver.accept({"message": "a b"})
    event, call = driver.call(event, "upper", now=101)
    event = driver.done(event, call, now=102, error=TRANSIENT, random=0.5)
    assert event.steps["upper"].run_at == 102 + 3.0


def test_a_transient_error_fails_the_event_once_the_attempts_are_exhausted(text_chain):
    event = failed(text_chain, error=TRANSIENT)
    for now in (110, 120):
        event, call = text_chain.call(event, "upper", now=now)
        event = text_chain.done(event, call, now=now + 1, error=TRANSIENT)
    state = event.steps["upper"]
    assert state.status is StepStatus.FAILED
    assert event.status is EventStatus.FAILED
    assert state.error["message"] == "connection refused (gave up after 3 attempts)"
    assert state.error["transient"] is False
    assert event.error["message"] == "step 'upper' failed: connection refused (gave up after 3 attempts)"
    assert len(state.history) == 3
    assert event.due_at is None


def test_a_service_with_a_single_attempt_is_not_retried(text_chain):
    driver = with_retry(text_chain, RetryPolicy(attempts=1))
    event = failed(driver, error=TRANSIENT)
    assert event.status is EventStatus.FAILED
    assert "gave up after 1 attempts" in event.error["message"]


def test_a_permanent_error_fails_the_step_and_the_event_at_once(text_chain):
    event = failed(text_chain, error=PERMANENT)
    state = event.steps["upper"]
    assert state.status is StepStatus.FAILED
    assert state.attempts == 1
    assert state.error == {"kind": "http", "message": "HTTP 400: bad request", "transient": False}
    assert event.status is EventStatus.FAILED
    assert event.error == {
        "step": "upper",
        "kind": "http",
        "transient": False,
        "message": "step 'upper' failed: HTTP 400: bad request",
    }
    assert statuses(event)["reverse"] == "pending"


def test_a_claim_of_a_retrying_step_before_its_run_at_returns_none(text_chain):
    event = failed(text_chain, error=TRANSIENT)  # retrying from 103
    assert text_chain.claim(event, "upper", now=102.5) is None
    claimed = text_chain.claim(event, "upper", now=103)
    assert claimed is not None
    assert claimed[1].attempt == 2


# Duplicate, stale and lost


def test_a_second_finish_of_the_same_call_returns_none_and_changes_nothing(text_chain):
    event, call = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event = text_chain.done(event, call, now=102, outputs=UPPER)
    before = event.to_doc()
    assert text_chain.finish(event, call, now=103, outputs={"message": "other"}) is None
    assert text_chain.finish(event, call, now=103, error=PERMANENT) is None
    assert event.to_doc() == before


def test_a_finish_with_a_token_that_is_not_the_claims_returns_none_and_changes_nothing(text_chain):
    event, call = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    before = event.to_doc()
    assert text_chain.finish(event, call._replace(token="someone-else"), now=102, outputs=UPPER) is None
    assert event.to_doc() == before


def test_a_finish_of_a_step_that_was_never_claimed_returns_none(text_chain):
    event, call = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    assert text_chain.finish(event, call._replace(step_id="reverse"), now=102, outputs=REVERSE) is None


@pytest.mark.parametrize("now", [101, 110, 116])
def test_a_claim_of_a_running_step_whose_lease_has_not_run_out_returns_none(text_chain, now):
    event, _ = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)  # lease until 116
    assert text_chain.claim(event, "upper", now=now) is None


def test_a_step_whose_lease_ran_out_is_claimed_again_and_counted_lost(text_chain):
    event, first = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event, second = text_chain.call(event, "upper", now=116.5)
    state = event.steps["upper"]
    assert state.status is StepStatus.RUNNING
    assert (state.lost, state.attempts, second.attempt) == (1, 2, 2)
    assert second.token != first.token
    assert state.token == second.token
    assert state.lease_until == 116.5 + 15
    assert state.history == [
        {
            "attempt": 1,
            "started_at": 101,
            "ended_at": 116.5,
            "error": {"kind": "lost", "message": "the worker was lost before it recorded a result"},
        }
    ]


def test_the_late_result_of_a_lost_worker_is_ignored_and_the_new_claim_is_recorded(text_chain):
    event, first = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event, second = text_chain.call(event, "upper", now=120)
    assert text_chain.finish(event, first, now=121, outputs={"message": "stale"}) is None
    event = text_chain.done(event, second, now=122, outputs=UPPER)
    assert event.steps["upper"].outputs == UPPER


def test_a_step_lost_more_than_max_lost_times_fails_with_a_clear_error(text_chain):
    event = text_chain.accept({"message": "a b"})
    event, _ = text_chain.call(event, "upper", now=101)
    event, _ = text_chain.call(event, "upper", now=200)  # lost once
    event, _ = text_chain.call(event, "upper", now=300)  # lost twice: max_lost is 2
    claimed = text_chain.claim(event, "upper", now=400)  # lost a third time
    assert claimed is not None
    event, call = claimed
    assert call is None
    state = event.steps["upper"]
    assert state.status is StepStatus.FAILED
    assert state.lost == 3
    assert state.error["kind"] == "lost"
    assert state.error["message"] == "the worker running this step was lost 3 times; giving up"
    assert event.status is EventStatus.FAILED
    assert event.error["message"] == "step 'upper' failed: the worker running this step was lost 3 times; giving up"
    assert len(state.history) == 3


def test_lost_claims_do_not_use_up_the_retry_budget(text_chain):
    event, _ = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event, call = text_chain.call(event, "upper", now=200)  # the first worker was lost
    for now in (201, 210):
        event = text_chain.done(event, call, now=now, error=TRANSIENT)
        assert event.steps["upper"].status is StepStatus.RETRYING
        event, call = text_chain.call(event, "upper", now=now + 5)
    event = text_chain.done(event, call, now=220, error=TRANSIENT)
    assert event.steps["upper"].status is StepStatus.FAILED
    assert "gave up after 4 attempts" in event.error["message"]


# Cancelling


def test_cancel_marks_the_unfinished_steps_cancelled_and_keeps_the_completed_ones(text_chain):
    event = text_chain.run(text_chain.accept({"message": "a b"}), "upper", UPPER, now=101)
    event, _ = text_chain.call(event, "reverse", now=103)
    event = decider.cancel(text_chain.plan, event, 104, SETTINGS)
    assert event.status is EventStatus.CANCELLED
    assert statuses(event) == {"upper": "completed", "reverse": "cancelled", "space-counter": "cancelled"}
    assert event.steps["upper"].outputs == UPPER
    assert event.steps["reverse"].token is None
    assert event.steps["reverse"].ended_at == 104
    assert event.due_at is None
    assert decider.ready_units(event) == []


def test_a_late_finish_after_cancel_changes_nothing(text_chain):
    event, call = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event = decider.cancel(text_chain.plan, event, 102, SETTINGS)
    before = event.to_doc()
    assert text_chain.finish(event, call, now=103, outputs=UPPER) is None
    assert text_chain.finish(event, call, now=103, error=TRANSIENT) is None
    assert event.to_doc() == before


def test_a_cancelled_event_cannot_be_claimed(text_chain):
    event = decider.cancel(text_chain.plan, text_chain.accept({"message": "a b"}), 101, SETTINGS)
    assert text_chain.claim(event, "upper", now=102) is None


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancelling_an_event_that_is_over_raises_invalid_state(text_chain, status):
    event = in_status(text_chain, status)
    with pytest.raises(InvalidState, match=f"event 'ev-1' is {status}; only an unfinished event can be cancelled"):
        decider.cancel(text_chain.plan, event, 200, SETTINGS)


# Resuming a failed event


def test_retry_makes_the_failed_step_ready_again_and_keeps_the_completed_steps_outputs(text_chain):
    event = text_chain.run(text_chain.accept({"message": "a b"}), "upper", UPPER, now=101)
    event, call = text_chain.call(event, "reverse", now=103)
    event = text_chain.done(event, call, now=104, error=PERMANENT)
    event = decider.retry(text_chain.plan, event, 200, SETTINGS)
    assert event.status is EventStatus.RUNNING
    assert event.error is None
    assert statuses(event) == {"upper": "completed", "reverse": "ready", "space-counter": "pending"}
    assert event.steps["upper"].outputs == UPPER
    assert event.steps["reverse"].error is None
    assert event.steps["reverse"].run_at == 200
    assert decider.ready_units(event) == ["reverse"]
    event, call = text_chain.call(event, "reverse", now=201)
    assert call.inputs == {"message": "A B"}
    assert call.attempt == 2
    event = text_chain.done(event, call, now=202, outputs=REVERSE)
    event = text_chain.run(event, "space-counter", COUNT, now=203)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "B A", "space_count": 1}


def test_retry_gives_the_failed_step_a_fresh_retry_budget(text_chain):
    event = failed(text_chain, error=TRANSIENT)
    for now in (110, 120):
        event, call = text_chain.call(event, "upper", now=now)
        event = text_chain.done(event, call, now=now + 1, error=TRANSIENT)
    assert event.status is EventStatus.FAILED
    event = decider.retry(text_chain.plan, event, 200, SETTINGS)
    event, call = text_chain.call(event, "upper", now=201)
    event = text_chain.done(event, call, now=202, error=TRANSIENT)
    assert event.steps["upper"].status is StepStatus.RETRYING
    assert event.steps["upper"].run_at == 202 + 1.0


def test_retry_after_too_many_lost_workers_gives_the_step_a_fresh_start(text_chain):
    event = text_chain.accept({"message": "a b"})
    for now in (101, 200, 300):
        event, _ = text_chain.call(event, "upper", now=now)
    event, _ = text_chain.claim(event, "upper", now=400)
    assert event.status is EventStatus.FAILED
    event = decider.retry(text_chain.plan, event, 500, SETTINGS)
    event, call = text_chain.call(event, "upper", now=501)
    assert event.steps["upper"].lost == 0
    assert text_chain.done(event, call, now=502, outputs=UPPER).steps["upper"].status is StepStatus.COMPLETED


@pytest.mark.parametrize("status", ["accepted", "running", "completed", "cancelled"])
def test_retry_of_an_event_that_has_not_failed_raises_invalid_state(text_chain, status):
    event = in_status(text_chain, status)
    with pytest.raises(InvalidState, match=f"event 'ev-1' is {status}; only a failed event can be retried"):
        decider.retry(text_chain.plan, event, 200, SETTINGS)


# The sweeper: overdue steps, nudges and due_at


def test_a_ready_step_becomes_overdue_after_stale_after(text_chain):
    event = text_chain.accept({"message": "a b"}, now=100)
    assert event.due_at == 130
    assert decider.overdue_units(event, 129.9, SETTINGS) == []
    assert decider.overdue_units(event, 130, SETTINGS) == ["upper"]


def test_a_nudged_step_is_not_overdue_again_before_stale_after(text_chain):
    event = text_chain.accept({"message": "a b"}, now=100)
    event = decider.nudged(event, ["upper"], 130, SETTINGS)
    assert event.steps["upper"].nudged_at == 130
    assert event.due_at == 160
    assert event.updated_at == 100
    assert decider.overdue_units(event, 159, SETTINGS) == []
    assert decider.overdue_units(event, 160, SETTINGS) == ["upper"]


def test_a_running_step_is_due_when_its_lease_runs_out(text_chain):
    event, _ = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    assert event.due_at == 116
    assert decider.overdue_units(event, 115.9, SETTINGS) == []
    assert decider.overdue_units(event, 116, SETTINGS) == ["upper"]


def test_a_retrying_step_is_due_stale_after_seconds_after_its_run_at(text_chain):
    event = failed(text_chain, error=TRANSIENT)  # retrying from 103
    assert event.due_at == 133
    assert decider.overdue_units(event, 133, SETTINGS) == ["upper"]


def test_pending_and_completed_steps_are_never_overdue(text_chain):
    event = text_chain.run(text_chain.accept({"message": "a b"}), "upper", UPPER, now=101)
    assert decider.overdue_units(event, 10_000, SETTINGS) == ["reverse"]


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_an_event_that_is_over_has_no_due_at_and_nothing_overdue(text_chain, status):
    event = in_status(text_chain, status)
    assert event.due_at is None
    assert decider.overdue_units(event, 10_000, SETTINGS) == []


# Stored form


def test_an_event_survives_to_doc_and_from_doc_unchanged(text_chain):
    event = text_chain.run(text_chain.accept({"message": "a b"}, idempotency_key="k"), "upper", UPPER, now=101)
    event, call = text_chain.call(event, "reverse", now=103)
    event = text_chain.done(event, call, now=104, error=TRANSIENT)
    event.version = 7
    assert Event.from_doc(event.to_doc()) == event
    assert Event.from_doc(json.loads(json.dumps(event.to_doc()))) == event


def test_a_finished_event_survives_to_doc_and_from_doc_unchanged(text_chain):
    event = failed(text_chain, outputs={"message": 42})
    assert Event.from_doc(json.loads(json.dumps(event.to_doc()))) == event


def test_the_stored_form_holds_plain_strings_and_leaves_out_what_is_unset(text_chain):
    doc = text_chain.accept({"message": "a b"}).to_doc()
    assert type(doc["status"]) is str
    assert doc["status"] == "accepted"
    assert doc["steps"]["upper"]["status"] == "ready"
    assert "outputs" not in doc
    assert "error" not in doc
    assert "token" not in doc["steps"]["upper"]


def test_a_step_state_survives_to_doc_and_from_doc_unchanged():
    state = StepState(status=StepStatus.RETRYING, attempts=2, run_at=5.0, history=[{"attempt": 1}])
    assert StepState.from_doc(state.to_doc()) == state


# Parallel steps in a graph


def test_two_steps_after_one_root_become_ready_together(diamond):
    event = diamond.accept({"message": "a b"})
    assert decider.ready_units(event) == ["upper"]
    event = diamond.run(event, "upper", UPPER, now=101)
    assert sorted(decider.ready_units(event)) == ["reverse", "space-counter"]
    assert statuses(event)["join"] == "pending"


def test_a_join_becomes_ready_only_after_both_branches_complete(diamond):
    event = diamond.run(diamond.accept({"message": "a b"}), "upper", UPPER, now=101)
    event, reverse = diamond.call(event, "reverse", now=103)
    event, count = diamond.call(event, "space-counter", now=103)
    event = diamond.done(event, count, now=104, outputs=COUNT)
    assert statuses(event) == {
        "upper": "completed",
        "reverse": "running",
        "space-counter": "completed",
        "join": "pending",
    }
    event = diamond.done(event, reverse, now=105, outputs=REVERSE)
    assert statuses(event)["join"] == "ready"
    _, join = diamond.call(event, "join", now=106)
    assert join.inputs == {"reversed": "B A", "space_count": 1}


def test_a_graph_completes_with_outputs_gathered_from_every_branch(diamond):
    event = diamond.run(diamond.accept({"message": "a b"}), "upper", UPPER, now=101)
    event = diamond.run(event, "space-counter", COUNT, now=103)
    event = diamond.run(event, "reverse", REVERSE, now=105)
    event = diamond.run(event, "join", {"summary": "B A (1)"}, now=107)
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"summary": "B A (1)", "reversed": "B A", "space_count": 1}


def test_a_branch_reads_its_inputs_from_its_upstream_only(diamond):
    event = diamond.run(diamond.accept({"message": "a b"}), "upper", UPPER, now=101)
    event = diamond.run(event, "reverse", {"message": "B A"}, now=103)
    _, call = diamond.call(event, "space-counter", now=105)
    assert call.inputs == {"message": "A B"}


def test_a_failing_branch_fails_the_event_and_the_other_branchs_late_result_is_still_recorded(diamond):
    event = diamond.run(diamond.accept({"message": "a b"}), "upper", UPPER, now=101)
    event, reverse = diamond.call(event, "reverse", now=103)
    event, count = diamond.call(event, "space-counter", now=103)
    event = diamond.done(event, count, now=104, error=PERMANENT)
    assert event.status is EventStatus.FAILED
    event = diamond.done(event, reverse, now=105, outputs=REVERSE)
    assert event.status is EventStatus.FAILED
    assert event.error["step"] == "space-counter"
    assert statuses(event) == {
        "upper": "completed",
        "reverse": "completed",
        "space-counter": "failed",
        "join": "pending",
    }
    event = decider.retry(diamond.plan, event, 200, SETTINGS)
    assert decider.ready_units(event) == ["space-counter"]


def test_a_transient_error_of_a_branch_after_the_event_failed_does_not_claim_the_attempts_ran_out(diamond):
    event = diamond.run(diamond.accept({"message": "a b"}), "upper", UPPER, now=101)
    event, reverse = diamond.call(event, "reverse", now=103)
    event, count = diamond.call(event, "space-counter", now=103)
    event = diamond.done(event, count, now=104, error=PERMANENT)
    event = diamond.done(event, reverse, now=105, error=TRANSIENT)
    assert event.steps["reverse"].attempts == 1
    assert "gave up" not in event.steps["reverse"].error["message"]


# Explicit references and contract problems found at claim time


def test_a_claim_resolves_input_step_and_constant_references():
    services = registry(
        service("upper", ["message:string"], ["message:string"]),
        service("pad", ["message:string", "width:int", "fill:string"], ["message:string"]),
    )
    workflow = graph(
        [
            step("upper", input={"message": from_input("text")}),
            step(
                "pad",
                after=["upper"],
                input={"message": from_step("upper", "message"), "width": from_input("width"), "fill": const("*")},
            ),
        ],
        inputs=["text:string", "width:int"],
        outputs=["message:string"],
    )
    driver = Driver(workflow, services)
    event = driver.run(driver.accept({"text": "ab", "width": 4}), "upper", {"message": "AB"}, now=101)
    _, call = driver.call(event, "pad", now=103)
    assert call.inputs == {"message": "AB", "width": 4, "fill": "*"}


def test_a_step_whose_inputs_cannot_be_found_at_run_time_fails_at_claim():
    services = registry(service("pad", ["message:string", "width:int"], ["message:string"]))
    workflow = graph(
        [step("pad", input={"width": from_input("width")})],
        inputs=["message:string", fld("width:int", required=False)],
    )
    driver = Driver(workflow, services)
    claimed = driver.claim(driver.accept({"message": "a"}), "pad", now=101)
    assert claimed is not None
    event, call = claimed
    assert call is None
    assert event.status is EventStatus.FAILED
    assert event.steps["pad"].error["kind"] == "input"
    assert "step 'pad' cannot call 'pad': service 'pad' input 'width' is missing" in event.error["message"]


def test_a_step_whose_service_is_no_longer_registered_fails_at_claim(text_chain):
    driver = Driver(text_chain.workflow, {})
    event, call = driver.claim(driver.accept({"message": "a"}), "upper", now=101)
    assert call is None
    assert event.steps["upper"].error["kind"] == "config"
    assert event.error["message"] == "step 'upper' failed: service 'upper' is no longer registered"


def test_a_workflow_output_outside_its_contract_fails_the_event_when_the_last_step_completes():
    # The seed as shipped: space-counter answers a message, and nothing gives the space_count.
    driver = Driver(seed_workflow(), seed_services())
    event = driver.accept({"message": "a b"})
    for step_id, outputs in [("upper", UPPER), ("reverse", REVERSE), ("space-counter", {"message": "1"})]:
        event = driver.run(event, step_id, outputs, now=110)
    assert event.status is EventStatus.FAILED
    assert event.error["kind"] == "type"
    assert "workflow output 'space_count' is missing" in event.error["message"]


# Idempotency keys


def test_the_idempotency_key_of_a_call_is_the_same_for_every_attempt_of_a_step(text_chain):
    event, first = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event = text_chain.done(event, first, now=102, error=TRANSIENT)
    event, retried = text_chain.call(event, "upper", now=103)
    event, reclaimed = text_chain.call(event, "upper", now=200)  # the retry's worker was lost
    assert first.idempotency_key == retried.idempotency_key == reclaimed.idempotency_key == "ev-1/upper"
    assert (first.attempt, retried.attempt, reclaimed.attempt) == (1, 2, 3)


def test_the_idempotency_key_of_a_call_differs_between_steps_and_events(text_chain):
    event, upper = text_chain.call(text_chain.accept({"message": "a b"}), "upper", now=101)
    event = text_chain.done(event, upper, now=102, outputs=UPPER)
    _, reverse = text_chain.call(event, "reverse", now=103)
    _, other = text_chain.call(text_chain.accept({"message": "a b"}, event_id="ev-2"), "upper", now=101)
    assert len({upper.idempotency_key, reverse.idempotency_key, other.idempotency_key}) == 3


# The retry policy


def test_the_retry_delay_grows_exponentially_from_the_backoff():
    policy = RetryPolicy(backoff=0.5, multiplier=2.0, max_delay=30.0, jitter=False)
    assert [policy.delay(attempt, 0.0) for attempt in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_the_retry_delay_is_capped_at_max_delay():
    policy = RetryPolicy(backoff=0.5, multiplier=2.0, max_delay=30.0, jitter=False)
    assert policy.delay(7, 0.0) == 30.0  # 0.5 * 2**6 = 32
    assert policy.delay(20, 0.99) == 30.0


@pytest.mark.parametrize("attempt", [1, 3, 10])
@pytest.mark.parametrize("random", [0.0, 0.25, 0.5, 0.999999])
def test_a_jittered_delay_lies_between_half_the_delay_and_the_delay(attempt, random):
    plain = RetryPolicy(backoff=0.5, max_delay=30.0, jitter=False).delay(attempt, random)
    jittered = RetryPolicy(backoff=0.5, max_delay=30.0, jitter=True).delay(attempt, random)
    assert plain / 2 <= jittered <= plain
    assert jittered == pytest.approx(plain / 2 + plain / 2 * random)


def test_jitter_spreads_the_capped_delay():
    policy = RetryPolicy(backoff=0.5, max_delay=30.0, jitter=True)
    assert policy.delay(20, 0.0) == 15.0


def test_a_very_late_attempt_is_still_capped_at_max_delay():
    assert RetryPolicy(attempts=5000, max_delay=30.0, jitter=False).delay(2000, 0.0) == 30.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"backoff": -1}, "delays cannot be negative"),
        ({"max_delay": -1}, "delays cannot be negative"),
        ({"multiplier": 0.5}, "multiplier must be at least 1"),
    ],
)
def test_a_retry_policy_refuses_impossible_settings(options, message):
    with pytest.raises(InvalidDefinition, match=message):
        RetryPolicy(**options)
