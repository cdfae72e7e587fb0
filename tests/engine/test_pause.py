"""Pausing an event: the calls under way finish, nothing new starts, and resuming goes on where it stopped."""

from __future__ import annotations

import pytest

from machinery.engine import decider
from machinery.engine.errors import InvalidState
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import SETTINGS, Driver, chain, delay, graph, registry, service, statuses, step, wait

SERVICES = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("reverse", ["message:string"], ["message:string"]),
)


def text_chain() -> Driver:
    return Driver(chain(["upper", "reverse"], inputs=["message:string"], outputs=["message:string"]), SERVICES)


def test_a_paused_event_hands_out_no_unit_and_has_no_due_time():
    driver = text_chain()
    event = driver.pause(driver.accept({"message": "hi"}), 101)

    assert event.status is EventStatus.PAUSED
    assert event.due_at is None
    assert decider.ready_units(event) == []
    assert driver.claim(event, "upper", now=102) is None
    assert statuses(event) == {"upper": "ready", "reverse": "pending"}


def test_a_call_under_way_when_the_event_is_paused_is_recorded_and_its_next_step_waits_for_resume():
    driver = text_chain()
    event, call = driver.call(driver.accept({"message": "hi"}), "upper", now=101)
    event = driver.pause(event, 102)

    event = driver.done(event, call, 103, outputs={"message": "HI"})

    assert event.status is EventStatus.PAUSED
    assert event.steps["upper"].outputs == {"message": "HI"}
    assert statuses(event) == {"upper": "completed", "reverse": "ready"}
    assert decider.ready_units(event) == []
    assert driver.claim(event, "reverse", now=104) is None


def test_resume_hands_out_the_ready_steps_again_and_the_event_completes():
    driver = text_chain()
    event, call = driver.call(driver.accept({"message": "hi"}), "upper", now=101)
    event = driver.done(driver.pause(event, 102), call, 103, outputs={"message": "HI"})

    event = driver.resume(event, 200)

    assert event.status is EventStatus.RUNNING
    assert decider.ready_units(event) == ["reverse"]
    assert event.due_at == 200 + SETTINGS.stale_after
    event = driver.run(event, "reverse", {"message": "IH"}, now=201)
    assert (event.status, event.outputs) == (EventStatus.COMPLETED, {"message": "IH"})


def test_a_delay_due_while_paused_is_not_woken_until_resume():
    driver = Driver(graph([delay("nap", 10), step("upper", after=["nap"])], inputs=["message:string"]), SERVICES)
    event = driver.pause(driver.accept({"message": "hi"}, now=100), 101)

    assert decider.timers(event) == []
    assert driver.claim(event, "nap", now=500) is None

    event = driver.resume(event, 600)
    assert event.status is EventStatus.WAITING
    assert decider.timers(event) == [("nap", 110)]
    event = driver.wake(event, "nap", now=601)
    assert statuses(event) == {"nap": "completed", "upper": "ready"}


def test_a_signal_reaches_a_paused_event_which_stays_paused():
    driver = Driver(
        graph([wait("w", "go", ["ok:bool"]), step("upper", after=["w"])], inputs=["message:string"]), SERVICES
    )
    event = driver.pause(driver.accept({"message": "hi"}), 101)

    event = driver.signal(event, "go", {"ok": True}, now=102)

    assert event.status is EventStatus.PAUSED
    assert statuses(event) == {"w": "completed", "upper": "ready"}
    assert decider.ready_units(driver.resume(event, 103)) == ["upper"]


def test_the_last_call_finishing_while_paused_completes_the_event():
    driver = text_chain()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)
    event, call = driver.call(event, "reverse", now=103)

    event = driver.done(driver.pause(event, 104), call, 105, outputs={"message": "IH"})

    assert (event.status, event.outputs) == (EventStatus.COMPLETED, {"message": "IH"})


def test_a_worker_lost_while_paused_is_found_once_the_event_is_resumed():
    driver = text_chain()
    event, _ = driver.call(driver.accept({"message": "hi"}), "upper", now=101)
    lease_over = event.steps["upper"].lease_until + 1
    event = driver.pause(event, 102)

    assert decider.overdue_units(event, lease_over, SETTINGS) == []
    event = driver.resume(event, lease_over)
    assert decider.overdue_units(event, lease_over, SETTINGS) == ["upper"]
    claimed = driver.claim(event, "upper", now=lease_over)
    assert claimed is not None and claimed[0].steps["upper"].lost == 1


def test_a_paused_event_can_be_cancelled():
    driver = text_chain()
    event = driver.cancel(driver.pause(driver.accept({"message": "hi"}), 101), 102)

    assert event.status is EventStatus.CANCELLED
    assert event.steps["upper"].status is StepStatus.CANCELLED


def test_only_an_event_under_way_can_be_paused_and_only_a_paused_one_resumed():
    driver = text_chain()
    event = driver.accept({"message": "hi"})
    paused = driver.pause(event, 101)

    with pytest.raises(InvalidState, match="is paused; only an event under way can be paused"):
        driver.pause(paused, 102)
    with pytest.raises(InvalidState, match="is cancelled; only an event under way can be paused"):
        driver.pause(driver.cancel(event, 102), 103)
    with pytest.raises(InvalidState, match="is accepted; only a paused event can be resumed"):
        driver.resume(event, 102)
    assert event.status is EventStatus.ACCEPTED
