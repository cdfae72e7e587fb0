"""A workflow's notify URL: an event that ends is sent there, as a call of its own, retried until it goes through."""

from __future__ import annotations

from dataclasses import replace

import pytest

from machinery.engine import decider
from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.notification import NOTIFY_RETRY
from machinery.engine.state import EventStatus, StepStatus
from machinery.engine.units import NOTIFY_UNIT
from tests.engine.builders import SETTINGS, Driver, chain, registry, service

SERVICES = registry(service("upper", ["message:string"], ["message:string"]))
URL = "http://127.0.0.1:9/ended"


def notifying() -> Driver:
    workflow = chain(["upper"], inputs=["message:string"], outputs=["message:string"])
    return Driver(replace(workflow, notify=URL), SERVICES)


def test_an_event_that_completes_has_its_notification_ready_and_is_due_for_it():
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)

    assert event.status is EventStatus.COMPLETED
    assert event.notification is not None and event.notification.status is StepStatus.READY
    assert decider.ready_units(event) == [NOTIFY_UNIT]
    assert event.due_at == 102 + SETTINGS.stale_after


def test_without_a_notify_url_an_ended_event_has_no_notification_and_is_never_due():
    driver = Driver(chain(["upper"], inputs=["message:string"]), SERVICES)
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)

    assert (event.notification, event.due_at, decider.ready_units(event)) == (None, None, [])


def test_the_notification_is_a_post_of_the_ended_event_to_the_url():
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)

    event, call = driver.call(event, NOTIFY_UNIT, now=103)

    assert call.service.endpoint.address == URL
    assert call.idempotency_key == f"{event.id}/{NOTIFY_UNIT}"
    assert call.inputs == {
        "event_id": event.id,
        "workflow": {"id": "chain", "name": "chain", "version": 1},
        "status": "completed",
        "data": {"message": "hi"},
        "outputs": {"message": "HI"},
        "error": None,
        "created_at": 100,
        "ended_at": 102,
    }
    assert event.notification.status is StepStatus.RUNNING
    assert event.due_at == event.notification.lease_until


def test_a_delivered_notification_is_not_sent_again_and_the_event_is_no_longer_due():
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)
    claimed, call = driver.call(event, NOTIFY_UNIT, now=103)

    delivered = driver.done(claimed, call, now=104, outputs={})

    assert delivered.notification.status is StepStatus.COMPLETED
    assert (delivered.due_at, decider.ready_units(delivered), delivered.updated_at) == (None, [], 102)
    assert driver.finish(delivered, call, now=105, outputs={}) is None
    assert driver.claim(delivered, NOTIFY_UNIT, now=106) is None


@pytest.mark.parametrize("kind", [ErrorKind.JSON, ErrorKind.SIZE])
def test_an_answer_that_is_not_json_or_too_large_to_read_still_delivers_it(kind):
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)
    claimed, call = driver.call(event, NOTIFY_UNIT, now=103)

    delivered = driver.done(claimed, call, now=104, error=CallFailure("not read", False, kind))

    assert delivered.notification.status is StepStatus.COMPLETED


def test_a_transient_failure_is_retried_later_and_a_permanent_one_gives_up():
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)
    claimed, call = driver.call(event, NOTIFY_UNIT, now=103)

    retrying = driver.done(claimed, call, now=104, error=CallFailure("answered 503", True, ErrorKind.HTTP))
    assert retrying.notification.status is StepStatus.RETRYING
    assert decider.timers(retrying) == [(NOTIFY_UNIT, retrying.notification.run_at)]
    assert driver.claim(retrying, NOTIFY_UNIT, now=104.1) is None

    claimed, call = driver.call(retrying, NOTIFY_UNIT, now=retrying.notification.run_at)
    failed = driver.done(claimed, call, now=200, error=CallFailure("answered 404", False, ErrorKind.HTTP))
    assert failed.notification.status is StepStatus.FAILED
    assert failed.notification.error["message"] == "answered 404"
    assert len(failed.notification.history) == 2
    assert failed.due_at is None


def test_transient_failures_give_up_after_the_policys_attempts():
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)
    now = 103.0
    for _ in range(NOTIFY_RETRY.attempts):
        event, call = driver.call(event, NOTIFY_UNIT, now=now)
        event = driver.done(event, call, now=now, error=CallFailure("refused", True, ErrorKind.CONNECTION))
        now = (event.notification.run_at or now) + 1

    assert event.notification.status is StepStatus.FAILED
    assert event.notification.attempts == NOTIFY_RETRY.attempts


@pytest.mark.parametrize("ending", ["cancel", "fail"])
def test_an_event_that_is_cancelled_or_fails_is_notified_too(ending: str):
    driver = notifying()
    event = driver.accept({"message": "hi"})
    if ending == "cancel":
        event = driver.cancel(event, 101)
    else:
        event, call = driver.call(event, "upper", now=101)
        event = driver.done(event, call, now=102, error=CallFailure("answered 400", False, ErrorKind.HTTP))

    assert event.status.terminal
    assert decider.ready_units(event) == [NOTIFY_UNIT]


def test_a_lost_notification_is_found_overdue_and_sent_again():
    driver = notifying()
    event = driver.run(driver.accept({"message": "hi"}), "upper", {"message": "HI"}, now=101)
    late = event.due_at

    assert decider.overdue_units(event, late, SETTINGS) == [NOTIFY_UNIT]
    nudged = decider.nudged(event, [NOTIFY_UNIT], late, SETTINGS)
    assert decider.overdue_units(nudged, late, SETTINGS) == []
    assert nudged.due_at == late + SETTINGS.stale_after


def test_a_retried_event_is_notified_again_when_it_ends_again():
    driver = notifying()
    event, call = driver.call(driver.accept({"message": "hi"}), "upper", now=101)
    failed = driver.done(event, call, now=102, error=CallFailure("answered 400", False, ErrorKind.HTTP))
    claimed, note = driver.call(failed, NOTIFY_UNIT, now=103)
    notified = driver.done(claimed, note, now=104, outputs={})

    retried = driver.retry(notified, 200)
    assert retried.notification is None
    done = driver.run(retried, "upper", {"message": "HI"}, now=201)
    assert decider.ready_units(done) == [NOTIFY_UNIT]
