"""Delay and wait steps at run time: durable timers, signals, timeouts and the event's ``waiting`` status.

A delay or a wait is ``waiting`` with its wake-up time in ``run_at`` (a wait without timeout has none);
``timers()`` reports it so that the runtime sends it at that time, and a claim once the time has come
completes it with no call. A signal completes a wait with its body as outputs.
"""

from __future__ import annotations

import pytest

from machinery.engine import decider
from machinery.engine.errors import InvalidData, InvalidState
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import (
    PERMANENT,
    SETTINGS,
    Driver,
    const,
    delay,
    fld,
    from_input,
    from_step,
    graph,
    registry,
    service,
    statuses,
    step,
    wait,
)

SERVICES = registry(
    service("prepare", ["message:string"], ["ticket:string"]),
    service("ship", ["message:string"], ["shipped:bool"]),
    service("approve", ["approved:bool"], ["approved_by:string"]),
    service("remind", ["message:string"], ["reminded:bool"]),
    service("schedule", ["message:string"], ["at:string"]),
)

# Delays


def delayed(**delay_options) -> Driver:
    """``pause`` (a delay with ``delay_options``), then ``ship``."""
    workflow = graph(
        [delay("pause", **delay_options), step("ship", after=["pause"])],
        inputs=["message:string", fld("at:any", required=False)],
        outputs=["shipped:bool"],
    )
    return Driver(workflow, SERVICES)


def test_a_delay_waits_until_now_plus_its_seconds():
    event = delayed(seconds=30).accept({"message": "m"}, now=100)
    state = event.steps["pause"]
    assert state.status is StepStatus.WAITING
    assert state.run_at == 130
    assert state.started_at == 100
    assert statuses(event) == {"pause": "waiting", "ship": "pending"}
    assert event.status is EventStatus.WAITING


def test_a_waiting_delay_is_reported_by_timers_and_not_as_ready():
    event = delayed(seconds=30).accept({"message": "m"}, now=100)
    assert decider.timers(event) == [("pause", 130)]
    assert decider.ready_units(event) == []
    assert event.due_at == 130


def test_a_claim_of_a_delay_before_its_time_returns_none():
    driver = delayed(seconds=30)
    event = driver.accept({"message": "m"}, now=100)
    assert driver.claim(event, "pause", now=129.9) is None


def test_a_claim_of_a_delay_once_its_time_has_come_completes_it_with_no_call_and_moves_on():
    driver = delayed(seconds=30)
    event = driver.accept({"message": "m"}, now=100)
    claimed = driver.claim(event, "pause", now=130)
    assert claimed is not None
    event, call = claimed
    assert call is None
    state = event.steps["pause"]
    assert (state.status, state.ended_at, state.outputs, state.run_at, state.attempts) == (
        StepStatus.COMPLETED,
        130,
        None,
        None,
        0,
    )
    assert statuses(event) == {"pause": "completed", "ship": "ready"}
    assert event.status is EventStatus.RUNNING
    assert decider.timers(event) == []
    assert decider.ready_units(event) == ["ship"]
    event = driver.run(event, "ship", {"shipped": True}, now=131)
    assert event.status is EventStatus.COMPLETED


def test_a_delay_that_has_completed_cannot_be_claimed_again():
    driver = delayed(seconds=30)
    event = driver.wake(driver.accept({"message": "m"}, now=100), "pause", now=130)
    assert driver.claim(event, "pause", now=140) is None


def test_a_late_wake_up_completes_the_delay_at_the_time_it_is_claimed():
    driver = delayed(seconds=30)
    event = driver.wake(driver.accept({"message": "m"}, now=100), "pause", now=500)
    assert event.steps["pause"].ended_at == 500


def test_a_delay_of_zero_seconds_is_due_at_once():
    event = delayed(seconds=0).accept({"message": "m"}, now=100)
    assert decider.timers(event) == [("pause", 100)]


def test_a_waiting_delay_is_overdue_for_the_sweeper_once_its_time_has_come():
    event = delayed(seconds=60).accept({"message": "m"}, now=100)
    assert decider.overdue_units(event, 159, SETTINGS) == []
    assert decider.overdue_units(event, 160, SETTINGS) == ["pause"]


@pytest.mark.parametrize(
    ("until", "wake"),
    [
        ("2030-01-01T00:00:00Z", 1893456000.0),
        ("2030-01-01T00:00:00+00:00", 1893456000.0),
        ("2030-01-01T01:00:00+01:00", 1893456000.0),
        ("2030-01-01T00:00:00", 1893456000.0),  # no zone: UTC
        (1893456000, 1893456000.0),
        (1893456000.5, 1893456000.5),
    ],
)
def test_a_delay_until_a_time_wakes_at_that_time(until, wake):
    event = delayed(until=const(until)).accept({"message": "m"}, now=100)
    assert event.steps["pause"].status is StepStatus.WAITING
    assert event.steps["pause"].run_at == wake
    assert decider.timers(event) == [("pause", wake)]


def test_a_delay_until_a_time_read_from_the_event_data_wakes_at_that_time():
    event = delayed(until=from_input("at")).accept({"message": "m", "at": "2030-01-01T00:00:00Z"}, now=100)
    assert event.steps["pause"].run_at == 1893456000.0


def test_a_delay_until_a_time_an_earlier_step_gave_wakes_at_that_time():
    workflow = graph(
        [step("schedule"), delay("pause", until=from_step("schedule", "at"), after=["schedule"])],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m"}), "schedule", {"at": "2030-01-01T00:00:00Z"}, now=101)
    assert event.steps["pause"].status is StepStatus.WAITING
    assert event.steps["pause"].run_at == 1893456000.0


def test_a_delay_until_a_time_already_past_is_due_at_once():
    driver = delayed(until=const(50))
    event = driver.accept({"message": "m"}, now=100)
    assert decider.timers(event) == [("pause", 50.0)]
    assert statuses(driver.wake(event, "pause", now=100)) == {"pause": "completed", "ship": "ready"}


@pytest.mark.parametrize(
    ("value", "shown"),
    [("next tuesday", "'next tuesday'"), (True, "True"), ([1], "[1]"), ({"at": 1}, "{'at': 1}"), (None, "None")],
)
def test_a_delay_until_something_that_is_not_a_time_fails_the_step_and_the_event(value, shown):
    event = delayed(until=from_input("at")).accept({"message": "m", "at": value})
    assert event.status is EventStatus.FAILED
    assert event.steps["pause"].status is StepStatus.FAILED
    assert event.steps["pause"].error == {
        "kind": "input",
        "message": f"delay 'pause' cannot wait until {shown}: not a time",
        "transient": False,
    }
    assert event.error["message"] == f"step 'pause' failed: delay 'pause' cannot wait until {shown}: not a time"
    assert decider.timers(event) == []


def test_a_delay_until_an_absent_value_fails_the_step():
    event = delayed(until=from_input("at")).accept({"message": "m"})
    assert event.status is EventStatus.FAILED
    assert "cannot wait until None: not a time" in event.error["message"]


# Waits and signals


def approval(**wait_options) -> Driver:
    """``prepare``, then ``wait-approval`` for the signal ``approval``, then ``approve`` on its answer."""
    workflow = graph(
        [
            step("prepare"),
            wait(
                "wait-approval",
                "approval",
                ["approved:bool", fld("note:string", required=False)],
                after=["prepare"],
                **wait_options,
            ),
            step("approve", after=["wait-approval"]),
        ],
        inputs=["message:string"],
        outputs=[fld("approved_by:string", required=False)],
    )
    return Driver(workflow, SERVICES)


def waiting(driver: Driver):
    """An event of ``driver`` whose ``prepare`` completed at 102: its wait is waiting."""
    return driver.run(driver.accept({"message": "m"}), "prepare", {"ticket": "T-1"}, now=101)


def test_a_wait_step_waits_for_its_signal_with_no_timer_when_it_has_no_timeout():
    event = waiting(approval())
    state = event.steps["wait-approval"]
    assert state.status is StepStatus.WAITING
    assert state.run_at is None
    assert state.started_at == 102
    assert decider.timers(event) == []
    assert decider.ready_units(event) == []
    assert event.due_at is None


def test_an_event_that_starts_with_a_wait_is_waiting_at_once():
    driver = Driver(graph([wait("w", "go", ["approved:bool"]), step("approve", after=["w"])]), SERVICES)
    event = driver.accept({})
    assert event.status is EventStatus.WAITING


@pytest.mark.parametrize("kind", ["wait", "delay"])
def test_the_event_is_waiting_once_only_waits_and_delays_are_left(kind):
    if kind == "wait":
        pause = wait("pause", "go", ["approved:bool"], after=["prepare"])
    else:
        pause = delay("pause", 60, after=["prepare"])
    workflow = graph([step("prepare"), pause], inputs=["message:string"])
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"message": "m"}), "prepare", {"ticket": "T-1"}, now=101)
    assert event.steps["pause"].status is StepStatus.WAITING
    assert event.status is EventStatus.WAITING


def test_the_event_is_not_waiting_while_a_service_step_can_still_run():
    workflow = graph(
        [wait("w", "approval", ["approved:bool"]), step("prepare"), step("approve", after=["w"])],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.accept({"message": "m"})
    assert event.status is not EventStatus.WAITING
    event, _ = driver.call(event, "prepare", now=101)
    assert event.status is EventStatus.RUNNING


def test_a_signal_completes_the_wait_with_its_body_as_outputs_and_moves_on():
    driver = approval()
    event = driver.signal(waiting(driver), "approval", {"approved": True, "note": "fine"}, now=110)
    state = event.steps["wait-approval"]
    assert state.status is StepStatus.COMPLETED
    assert state.outputs == {"approved": True, "note": "fine"}
    assert state.route == "signal"
    assert state.ended_at == 110
    assert statuses(event) == {"prepare": "completed", "wait-approval": "completed", "approve": "ready"}
    assert event.status is EventStatus.RUNNING
    _, call = driver.call(event, "approve", now=111)
    assert call.inputs == {"approved": True}


def test_a_signal_keeps_only_the_fields_the_wait_declares_and_fills_defaults():
    workflow = graph([wait("w", "go", ["approved:bool", fld("level:int", default=1)])], outputs=["level:int"])
    driver = Driver(workflow, SERVICES)
    event = driver.signal(driver.accept({}), "go", {"approved": False, "debug": "x"}, now=101)
    assert event.steps["w"].outputs == {"approved": False, "level": 1}
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"level": 1}


def test_a_signal_body_that_does_not_fit_raises_invalid_data_naming_the_field_and_changes_nothing():
    driver = approval()
    event = waiting(driver)
    before = event.to_doc()
    with pytest.raises(InvalidData) as raised:
        driver.signal(event, "approval", {"approved": "yes"}, now=110)
    assert raised.value.message == "signal 'approval' does not match the outputs of step 'wait-approval'"
    [problem] = raised.value.problems
    assert (problem.field, problem.expected, problem.found) == ("approved", "bool", "string")
    assert problem.message == "signal field 'approved' should be bool: got string 'yes'"
    assert event.to_doc() == before


def test_a_signal_body_missing_a_required_field_raises_invalid_data():
    driver = approval()
    with pytest.raises(InvalidData) as raised:
        driver.signal(waiting(driver), "approval", {"note": "no verdict"}, now=110)
    [problem] = raised.value.problems
    assert (problem.field, problem.found) == ("approved", "nothing")


@pytest.mark.parametrize(("body", "found"), [([True], "array"), ("yes", "string"), (None, "null")])
def test_a_signal_body_that_is_not_an_object_raises_invalid_data(body, found):
    driver = approval()
    with pytest.raises(InvalidData) as raised:
        driver.signal(waiting(driver), "approval", body, now=110)
    [problem] = raised.value.problems
    assert (problem.expected, problem.found) == ("object", found)


def test_a_signal_that_arrives_before_the_wait_is_reached_is_kept_and_consumed_when_it_is():
    driver = approval()
    event = driver.accept({"message": "m"})
    event = driver.signal(event, "approval", {"approved": True}, now=100.5)
    assert statuses(event) == {"prepare": "ready", "wait-approval": "pending", "approve": "pending"}
    assert event.signals == [{"name": "approval", "payload": {"approved": True}, "at": 100.5}]
    event = driver.run(event, "prepare", {"ticket": "T-1"}, now=101)
    assert event.signals == []
    assert event.steps["wait-approval"].status is StepStatus.COMPLETED
    assert event.steps["wait-approval"].outputs == {"approved": True}
    assert event.steps["wait-approval"].route == "signal"
    assert statuses(event)["approve"] == "ready"


def test_a_signal_that_arrives_early_is_checked_against_the_wait_at_once():
    driver = approval()
    event = driver.accept({"message": "m"})
    with pytest.raises(InvalidData):
        driver.signal(event, "approval", {"approved": 1}, now=100.5)


def test_a_signal_with_a_name_no_step_waits_for_raises_invalid_state():
    driver = approval()
    with pytest.raises(InvalidState, match="no step of event 'ev-1' waits for signal 'refund'"):
        driver.signal(waiting(driver), "refund", {}, now=110)


def test_a_second_signal_for_a_wait_that_completed_raises_invalid_state():
    driver = approval()
    event = driver.signal(waiting(driver), "approval", {"approved": True}, now=110)
    with pytest.raises(InvalidState, match="waits for signal 'approval'"):
        driver.signal(event, "approval", {"approved": False}, now=111)


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
def test_a_signal_to_an_event_that_is_over_raises_invalid_state(end):
    driver = approval()
    event = waiting(driver)
    if end == "cancelled":
        event = driver.cancel(event, 103)
    else:
        event = driver.signal(event, "approval", {"approved": True}, now=110)
        outputs, error = ({"approved_by": "ann"}, None) if end == "completed" else (None, PERMANENT)
        event, call = driver.call(event, "approve", now=111)
        event = driver.done(event, call, now=112, outputs=outputs, error=error)
    assert event.status.value == end
    with pytest.raises(InvalidState, match=f"event 'ev-1' is {end}; it takes no more signals"):
        driver.signal(event, "approval", {"approved": True}, now=120)


# Timeouts


def with_timeout() -> Driver:
    """``wait-approval`` times out after 60 s and then takes the route ``remind``."""
    workflow = graph(
        [
            step("prepare"),
            wait("wait-approval", "approval", ["approved:bool"], after=["prepare"], timeout=60, on_timeout=["remind"]),
            step("approve", after=["wait-approval"]),
            step("remind"),
        ],
        inputs=["message:string"],
    )
    return Driver(workflow, SERVICES)


def test_a_wait_with_a_timeout_has_a_timer_at_its_start_plus_the_timeout():
    event = waiting(with_timeout())
    assert event.steps["wait-approval"].run_at == 102 + 60
    assert decider.timers(event) == [("wait-approval", 162)]
    assert event.due_at == 162


def test_a_claim_of_a_wait_before_its_timeout_returns_none():
    driver = with_timeout()
    assert driver.claim(waiting(driver), "wait-approval", now=161) is None


def test_a_wait_without_timeout_is_never_claimed():
    driver = approval()
    assert driver.claim(waiting(driver), "wait-approval", now=10_000) is None


def test_a_timeout_takes_the_timeout_route_and_skips_the_signal_route():
    driver = with_timeout()
    event = driver.wake(waiting(driver), "wait-approval", now=162)
    state = event.steps["wait-approval"]
    assert (state.status, state.route, state.outputs, state.ended_at) == (StepStatus.COMPLETED, "timeout", None, 162)
    assert statuses(event) == {
        "prepare": "completed",
        "wait-approval": "completed",
        "approve": "skipped",
        "remind": "ready",
    }
    assert decider.timers(event) == []
    event = driver.run(event, "remind", {"reminded": True}, now=163)
    assert event.status is EventStatus.COMPLETED


def test_a_signal_before_the_timeout_takes_the_signal_route_and_skips_the_timeout_route():
    driver = with_timeout()
    event = driver.signal(waiting(driver), "approval", {"approved": True}, now=150)
    assert statuses(event) == {
        "prepare": "completed",
        "wait-approval": "completed",
        "approve": "ready",
        "remind": "skipped",
    }
    assert decider.timers(event) == []
    assert driver.claim(event, "wait-approval", now=162) is None


def test_a_signal_after_the_timeout_raises_invalid_state():
    driver = with_timeout()
    event = driver.wake(waiting(driver), "wait-approval", now=162)
    with pytest.raises(InvalidState, match="no step of event 'ev-1' waits for signal 'approval'"):
        driver.signal(event, "approval", {"approved": True}, now=163)


def test_a_step_on_the_timeout_route_is_skipped_when_the_signal_came_even_if_it_runs_after_another_step():
    workflow = graph(
        [
            wait("w", "approval", ["approved:bool"], timeout=60, on_timeout=["remind"]),
            step("prepare"),
            step("remind", after=["prepare"]),
        ],
        inputs=["message:string"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.signal(driver.accept({"message": "m"}), "approval", {"approved": True}, now=101)
    event = driver.run(event, "prepare", {"ticket": "T"}, now=102)
    assert statuses(event)["remind"] == "skipped"


def test_the_outputs_of_a_wait_are_written_into_the_context_under_their_names_or_renames():
    workflow = graph([wait("w", "go", ["approved:bool", "by:string"], output={"by": "approver"})])
    driver = Driver(workflow, SERVICES)
    event = driver.signal(driver.accept({}), "go", {"approved": True, "by": "ann"}, now=101)
    assert driver.context(event) == {"approved": True, "approver": "ann"}


def test_two_waits_for_the_same_signal_take_one_signal_each_in_order():
    workflow = graph([wait("first", "go", ["n:int"]), wait("second", "go", ["n:int"], after=["first"])])
    driver = Driver(workflow, SERVICES)
    event = driver.signal(driver.accept({}), "go", {"n": 1}, now=101)
    assert statuses(event) == {"first": "completed", "second": "waiting"}
    assert event.status is EventStatus.WAITING
    event = driver.signal(event, "go", {"n": 2}, now=102)
    assert (event.steps["first"].outputs, event.steps["second"].outputs) == ({"n": 1}, {"n": 2})
    assert event.status is EventStatus.COMPLETED
