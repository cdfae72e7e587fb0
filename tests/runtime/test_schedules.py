"""Schedules through the runtime on a real SQLite store, with a clock the tests move: each due run makes one
event, whatever the schedulers running and wherever one of them dies."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from machinery.bootstrap import Config
from machinery.engine.errors import InvalidConfig, InvalidData, InvalidDefinition, NotFound
from machinery.engine.state import EventStatus
from machinery.engine.timetable import CatchUp, Overlap, Schedule, run_key
from machinery.runtime import Plans
from machinery.schedules import NewSchedule, Scheduler, Schedules
from tests.engine.builders import EXPRESSIONS, SETTINGS, corrected_seed_services, seed_workflow
from tests.runtime.harness import Runtime

START = 1_764_460_800.0
"""2025-11-30 00:00:00 UTC: a whole minute, and a whole hour."""


class Crash(Exception):
    """A scheduler's process dying at that line."""


@pytest.fixture
def schedules(runtime: Runtime) -> Iterator[Schedules]:
    runtime.now = START
    runtime.register(corrected_seed_services().values(), seed_workflow())
    yield Schedules(runtime.store, runtime.store, Plans(runtime.store, EXPRESSIONS), SETTINGS, runtime.clock)


def scheduler(runtime: Runtime, submit: Any = None, grace: float = 30.0) -> Scheduler:
    return Scheduler(runtime.store, submit or runtime.events.submit, grace=grace, lease=5.0, clock=runtime.clock)


def every(seconds: int, **options: Any) -> NewSchedule:
    return NewSchedule(name="ticker", workflow="process-text", data={"message": "tick"}, interval=seconds, **options)


def keys(runtime: Runtime) -> list[str | None]:
    page = runtime.store.list_events(workflow_id=None, status=None, offset=0, limit=1000)
    return sorted(event.idempotency_key or "" for event in page.items)


def test_each_due_run_makes_one_event_keyed_by_its_time_with_two_schedulers(runtime: Runtime, schedules: Schedules):
    created = schedules.create(every(10, overlap=Overlap.ALLOW))
    assert created.next_run_at == START + 10
    first, second = scheduler(runtime), scheduler(runtime)
    for _ in range(6):
        runtime.now += 5
        first.run_due()
        second.run_due()
    assert keys(runtime) == [run_key(created.id, START + seconds) for seconds in (10, 20, 30)]
    record = schedules.get("ticker")
    assert (record.runs, record.next_run_at, record.last_run_at) == (3, START + 40, START + 30)


def test_a_run_claimed_by_a_scheduler_that_died_before_sending_it_is_sent_by_another_after_the_lease(
    runtime: Runtime, schedules: Schedules
):
    created = schedules.create(every(10))

    def dies(*args: Any) -> Any:
        raise Crash

    runtime.now = START + 10
    with pytest.raises(Crash):
        scheduler(runtime, dies).run_due()
    survivor = scheduler(runtime)
    assert survivor.run_due() == 0  # its claim still holds
    runtime.now += 5
    assert survivor.run_due() == 1
    assert keys(runtime) == [run_key(created.id, START + 10)]


def test_a_scheduler_that_died_between_sending_a_run_and_recording_it_makes_no_second_event(
    runtime: Runtime, schedules: Schedules
):
    created = schedules.create(every(10))

    def sends_then_dies(*args: Any) -> Any:
        runtime.events.submit(*args)
        raise Crash

    runtime.now = START + 10
    with pytest.raises(Crash):
        scheduler(runtime, sends_then_dies).run_due()
    runtime.now += 5
    assert scheduler(runtime).run_due() == 0  # sent again: the same event
    assert keys(runtime) == [run_key(created.id, START + 10)]
    record = schedules.get("ticker")
    assert (record.runs, record.pending_run, record.last_event_id) == (
        1,
        None,
        schedules.events("ticker", offset=0, limit=1).items[0].id,
    )


def test_a_run_is_skipped_while_the_event_made_before_is_unfinished(runtime: Runtime, schedules: Schedules):
    schedules.create(every(10))
    runs = scheduler(runtime)
    runtime.now = START + 10
    runs.run_due()  # its event is not run: it stays unfinished
    runtime.now = START + 20
    assert runs.run_due() == 0
    assert schedules.get("ticker").skipped == 1
    runtime.dispatcher.drain(runtime.runner)  # now it completes
    runtime.now = START + 30
    assert runs.run_due() == 1
    assert [e.status for e in schedules.events("ticker", offset=0, limit=10).items] == [
        EventStatus.ACCEPTED,
        EventStatus.COMPLETED,
    ]


def test_with_overlap_allowed_a_run_starts_beside_the_unfinished_one(runtime: Runtime, schedules: Schedules):
    schedules.create(every(10, overlap=Overlap.ALLOW))
    runs = scheduler(runtime)
    for seconds in (10, 20):
        runtime.now = START + seconds
        runs.run_due()
    assert schedules.events("ticker", offset=0, limit=10).total == 2


@pytest.mark.parametrize(("catch_up", "started"), [(CatchUp.NONE, []), (CatchUp.LAST, [START + 3590])])
def test_after_an_hour_down_at_most_the_last_missed_run_starts(
    runtime: Runtime, schedules: Schedules, catch_up: CatchUp, started: list[float]
):
    created = schedules.create(every(10, catch_up=catch_up, overlap=Overlap.ALLOW))
    runtime.now = START + 3600 + 25  # every run before START + 3595 is past the grace period of 30 s
    runs = scheduler(runtime)
    runs.run_due()
    # The missed runs as the catch-up asks, then those within the grace period, each once.
    on_time = [START + 3600, START + 3610, START + 3620]
    assert keys(runtime) == [run_key(created.id, at) for at in (*started, *on_time)]
    record = schedules.get("ticker")
    assert (record.missed, record.next_run_at) == (1, START + 3630)


def test_a_paused_schedule_starts_nothing_and_resumes_from_its_next_run_after_now(
    runtime: Runtime, schedules: Schedules
):
    schedules.create(every(10, overlap=Overlap.ALLOW))
    schedules.pause("ticker")
    runtime.now = START + 100
    assert scheduler(runtime).run_due() == 0
    resumed = schedules.resume("ticker")
    assert (resumed.paused, resumed.next_run_at) == (False, START + 110)
    assert schedules.resume("ticker") == resumed  # resuming a running schedule changes nothing


def test_a_run_whose_workflow_is_gone_is_recorded_as_an_error_and_the_schedule_goes_on(
    runtime: Runtime, schedules: Schedules
):
    schedules.create(every(10))
    runtime.registry.delete_workflow("process-text")
    runtime.now = START + 10
    scheduler(runtime).run_due()
    record = schedules.get("ticker")
    assert record.last_error is not None and record.last_error.startswith("workflow 'process-text': no workflow")
    assert (record.pending_run, record.next_run_at, record.runs) == (None, START + 20, 0)


def test_the_data_is_checked_against_the_workflows_inputs_when_the_schedule_is_created(schedules: Schedules):
    with pytest.raises(InvalidData):
        schedules.create(NewSchedule(name="bad", workflow="process-text", data={"message": 7}, interval=10))
    with pytest.raises(NotFound):
        schedules.create(NewSchedule(name="bad", workflow="nowhere", data={}, interval=10))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval": 0}, "interval"),
        ({"interval": 10, "timezone": "UTC"}, "timezone"),
        ({"interval": 10, "cron": "* * * * *"}, None),
        ({}, None),
    ],
)
def test_a_schedule_needs_a_cron_expression_in_a_time_zone_or_an_interval(
    schedules: Schedules, options: dict[str, Any], field: str | None
):
    with pytest.raises(InvalidDefinition) as raised:
        schedules.create(NewSchedule(name="bad", workflow="process-text", data={"message": "a"}, **options))
    assert field in [problem.field for problem in raised.value.problems]


def test_the_next_runs_of_a_cron_schedule_are_read_in_its_time_zone_across_daylight_saving_time(
    runtime: Runtime, schedules: Schedules
):
    paris = ZoneInfo("Europe/Paris")
    runtime.now = datetime(2025, 3, 28, 12, tzinfo=paris).timestamp()
    spec = NewSchedule(
        name="night", workflow="process-text", data={"message": "a"}, cron="30 2 * * *", timezone="Europe/Paris"
    )
    schedules.create(spec)
    runs = [datetime.fromtimestamp(at, paris).isoformat() for at in schedules.next_runs("night", 3)]
    # 02:30 does not exist on the 30th, when clocks go from 02:00 to 03:00: cron runs it at 03:00.
    assert runs == ["2025-03-29T02:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]


def test_the_next_runs_of_a_paused_schedule_are_those_after_now(runtime: Runtime, schedules: Schedules):
    schedules.create(every(60, paused=True))
    runtime.now = START + 125
    assert schedules.next_runs("ticker", 2) == [START + 180, START + 240]
    assert isinstance(schedules.get("ticker"), Schedule)


def test_the_scheduler_is_configured_from_the_environment() -> None:
    config = Config.from_env({"MACHINERY_SCHEDULE_INTERVAL": "0.5", "MACHINERY_SCHEDULE_GRACE": "120"})
    assert (config.schedule_interval, config.schedule_grace) == (0.5, 120.0)
    assert (Config.from_env({}).schedule_interval, Config.from_env({}).schedule_grace) == (1.0, 60.0)
    with pytest.raises(InvalidConfig, match="MACHINERY_SCHEDULE_GRACE"):
        Config.from_env({"MACHINERY_SCHEDULE_GRACE": "0"})
