"""A schedule run by the schedulers of two real worker processes on Redis: one event per tick, none twice, and
none missing after one of the processes is killed."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from machinery.bootstrap import Machinery
from machinery.engine.model import Service
from machinery.engine.ports import every
from machinery.engine.state import Event
from machinery.engine.timetable import Overlap, key_prefix
from machinery.schedules import NewSchedule
from tests.integration.conftest import WorkerProcess
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def broker_url(redis_url: str) -> str:
    """Redis only: the schedulers share the store, not the broker, so one broker shows what there is to see."""
    return redis_url


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return env | {"MACHINERY_SCHEDULE_INTERVAL": "0.2"}


def runs(machinery: Machinery, schedule_id: str) -> list[int]:
    """The run times (epoch seconds) of the events the schedule made, in order, each as often as it was made."""
    events: list[Event] = list(every(lambda **page: machinery.schedules.events(schedule_id, **page)))
    prefix = key_prefix(schedule_id)
    return sorted(int((event.idempotency_key or prefix)[len(prefix) :]) for event in events)


def assert_one_event_per_tick(ticks: list[int]) -> None:
    assert ticks, "the schedule made no event"
    assert ticks == list(range(ticks[0], ticks[-1] + 1)), f"ticks missing or made twice: {ticks}"


def test_a_schedule_every_second_makes_one_event_per_tick_with_two_schedulers_and_after_one_is_killed(
    machinery: Machinery, example_services: dict[str, Service], start_worker: Callable[..., WorkerProcess]
) -> None:
    schedule = machinery.schedules.create(
        NewSchedule(
            name="every-second",
            workflow="process-text",
            data={"message": "tick tock"},
            interval=1,
            overlap=Overlap.ALLOW,
        )
    )
    first, second = start_worker(), start_worker()

    wait_for(lambda: len(runs(machinery, schedule.id)) >= 5, timeout=60, what="5 runs with two schedulers")
    assert_one_event_per_tick(runs(machinery, schedule.id))

    first.kill(signal.SIGKILL)
    killed_at = time.time()
    # Past the lease of a run the killed scheduler may have claimed (5 s), and a few ticks more.
    wait_for(lambda: max(runs(machinery, schedule.id)) >= killed_at + 8, timeout=60, what="runs after the kill")
    ticks = runs(machinery, schedule.id)
    assert_one_event_per_tick(ticks)

    paused = machinery.schedules.pause(schedule.id)
    record = wait_for(
        lambda: (s := machinery.schedules.get(schedule.id)).pending_run is None and s,
        timeout=30,
        what="the last run recorded",
    )
    ticks = runs(machinery, schedule.id)
    assert_one_event_per_tick(ticks)
    assert paused.paused and record.runs == len(ticks) and record.last_error is None
    assert second.process.poll() is None
    # Their events run through the surviving worker to their end.
    wait_for(
        lambda: all(
            machinery.events.get(e.id).status.terminal
            for e in every(lambda **page: machinery.schedules.events(schedule.id, **page))
        ),
        timeout=60,
        what="every event finished",
    )
