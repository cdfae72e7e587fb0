"""Callback services: a call taken with a 202 waits for the result posted under its token, or for a heartbeat,
until its deadline; late, repeated and forged callbacks change nothing."""

from __future__ import annotations

import pytest

from machinery.engine import decider
from machinery.engine.calls import ACCEPTED, CallFailure, ErrorKind, callback_token, parse_callback_token
from machinery.engine.errors import InvalidState, NotFound
from machinery.engine.model import CALLBACK
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import Event, EventStatus, StepStatus
from tests.engine.builders import (
    SETTINGS,
    Driver,
    chain,
    check,
    from_input,
    graph,
    map_step,
    registry,
    service,
    statuses,
)

SLOW = service("slow", ["message:string"], ["message:string"], mode=CALLBACK, callback_timeout=600.0)
BEATING = service("slow", ["message:string"], ["message:string"], mode=CALLBACK, callback_timeout=600.0, heartbeat=60.0)
NEXT = service("count", ["message:string"], ["n:int"])


def driver(slow=SLOW) -> Driver:
    return Driver(chain(["slow", "count"], inputs=["message:string"]), registry(slow, NEXT))


def taken(d: Driver) -> tuple[Event, str]:
    """An event whose ``slow`` step was called and answered 202 at 101; the claim's token."""
    event, call = d.call(d.accept({"message": "hi"}), "slow", now=101)
    return d.done(event, call, now=101, outputs=ACCEPTED), call.token


def posted(d: Driver, event: Event, claim: str, now: float, **result) -> Event:
    return decider.callback(
        d.plan, d.services["slow"], event, "slow", claim, now=now, random=0.0, settings=SETTINGS, **result
    )


def test_a_call_taken_by_a_callback_service_waits_for_its_callback_until_its_deadline():
    event, claim = taken(driver())
    state = event.steps["slow"]
    assert (state.status, state.token) == (StepStatus.WAITING, claim)
    assert state.lease_until == state.run_at == 101 + 600
    assert event.status is EventStatus.WAITING
    assert decider.timers(event) == [("slow", 701)]


def test_the_outputs_posted_complete_the_step_and_the_event_goes_on():
    d = driver()
    event, claim = taken(d)
    event = posted(d, event, claim, 150, outputs={"message": "HI"})
    assert event.steps["slow"].outputs == {"message": "HI"}
    assert event.steps["slow"].token is None
    assert statuses(event) == {"slow": "completed", "count": "ready"}
    assert event.status is EventStatus.RUNNING


def test_outputs_outside_the_contract_fail_the_step_as_an_answer_would():
    d = driver()
    event, claim = taken(d)
    event = posted(d, event, claim, 150, outputs={"message": 5})
    assert event.status is EventStatus.FAILED
    assert "service 'slow' answered outside its contract" in event.error["message"]


def test_a_transient_error_posted_is_retried_by_the_services_policy_and_a_permanent_one_fails_the_step():
    d = driver()
    event, claim = taken(d)
    retrying = posted(d, event, claim, 150, error=CallFailure("busy", True))
    assert retrying.steps["slow"].status is StepStatus.RETRYING
    assert retrying.steps["slow"].run_at == 151
    failed = posted(d, event, claim, 150, error=CallFailure("bad input", False))
    assert failed.status is EventStatus.FAILED
    assert failed.error["message"] == "step 'slow' failed: bad input"


def test_a_forged_token_is_not_found_and_a_repeated_callback_is_refused():
    d = driver()
    event, claim = taken(d)
    with pytest.raises(NotFound):
        posted(d, event, "guess", 150, outputs={"message": "HI"})
    done = posted(d, event, claim, 150, outputs={"message": "HI"})
    with pytest.raises(InvalidState, match="awaits no callback"):
        posted(d, done, claim, 151, outputs={"message": "AGAIN"})


def test_no_callback_by_the_deadline_makes_a_new_attempt_at_once_and_the_late_one_is_refused():
    d = driver()
    event, claim = taken(d)
    assert d.claim(event, "slow", now=700) is None
    event, again = d.call(event, "slow", now=701)
    assert again.attempt == 2 and again.token != claim
    history = event.steps["slow"].history
    assert history[-1]["error"] == {
        "kind": ErrorKind.TIMEOUT.value,
        "message": "service 'slow' sent no callback within 600 s",
        "transient": True,
    }
    with pytest.raises(NotFound):
        posted(d, event, claim, 702, outputs={"message": "HI"})


def test_no_callback_and_no_retry_left_fails_the_step():
    once = service(
        "slow", ["message:string"], ["message:string"], mode=CALLBACK, callback_timeout=600.0, retry=RetryPolicy(1)
    )
    d = driver(once)
    event, _ = taken(d)
    claimed = d.claim(event, "slow", now=701)
    assert claimed is not None and claimed[1] is None
    event = claimed[0]
    assert event.status is EventStatus.FAILED
    assert (
        event.error["message"]
        == "step 'slow' failed: service 'slow' sent no callback within 600 s (gave up after 1 attempts)"
    )


def test_heartbeats_keep_the_step_waiting_up_to_its_deadline_and_a_missed_one_times_it_out():
    d = driver(BEATING)
    event, claim = taken(d)
    assert event.steps["slow"].run_at == 161
    event = decider.heartbeat(d.plan, BEATING, event, "slow", claim, now=150, settings=SETTINGS)
    assert event.steps["slow"].run_at == 210
    event = decider.heartbeat(d.plan, BEATING, event, "slow", claim, now=690, settings=SETTINGS)
    assert event.steps["slow"].run_at == 701
    event, again = d.call(event, "slow", now=701)
    assert event.steps["slow"].history[-1]["error"]["message"] == "service 'slow' sent no callback within 600 s"
    event = d.done(event, again, now=702, outputs=ACCEPTED)
    event, _ = d.call(event, "slow", now=702 + 61)
    assert event.steps["slow"].history[-1]["error"]["message"] == "service 'slow' sent no heartbeat within 60 s"


def test_a_callback_token_names_the_event_the_step_and_the_claim():
    token = callback_token("e1", "slow", "abc123")
    assert parse_callback_token(token) == ("e1", "slow", "abc123")
    assert "/" not in token and "=" not in token
    assert parse_callback_token("not a token") is None
    assert parse_callback_token(callback_token("e1", "slow", "")) is None


def test_a_map_over_a_callback_service_is_refused_at_registration():
    workflow = graph([map_step("each", "slow", from_input("words"), "message")], inputs=["words:array<string>"])
    problems = check(workflow, registry(SLOW))
    assert [p.message for p in problems] == [
        "map step 'each' calls callback service 'slow': the items of a map call services that answer at once"
    ]


def test_a_callback_before_the_202_is_recorded_counts_and_the_202_then_changes_nothing():
    d = driver()
    event, call = d.call(d.accept({"message": "hi"}), "slow", now=101)
    assert decider.heartbeat(d.plan, SLOW, event, "slow", call.token, now=101, settings=SETTINGS) is event
    event = posted(d, event, call.token, 101, outputs={"message": "HI"})
    assert statuses(event) == {"slow": "completed", "count": "ready"}
    assert d.finish(event, call, now=102, outputs=ACCEPTED) is None
