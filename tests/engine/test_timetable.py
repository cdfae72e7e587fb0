"""Schedules' pure decisions: the ticks of an interval, what a due tick does, late or on time, and the record."""

from __future__ import annotations

from machinery.engine import timetable
from machinery.engine.timetable import CatchUp, Interval, Overlap, Schedule, Tick

MINUTE = Interval(60, anchor=0.0)


def schedule(**changes: object) -> Schedule:
    return Schedule(name="nightly", workflow_id="wf", workflow_name="shout", data={}, interval=60, **changes)  # type: ignore[arg-type]


def test_an_interval_runs_on_multiples_of_its_seconds_from_its_anchor() -> None:
    assert MINUTE.after(0.0) == 60.0
    assert MINUTE.after(59.9) == 60.0
    assert MINUTE.after(60.0) == 120.0
    assert MINUTE.at_or_before(60.0) == 60.0
    assert MINUTE.at_or_before(119.9) == 60.0
    assert Interval(60, anchor=30.0).at_or_before(10.0) is None


def test_a_run_due_within_the_grace_period_is_started_and_the_next_one_follows_it() -> None:
    assert timetable.tick(MINUTE, 120.0, 125.0, grace=30.0, catch_up=CatchUp.NONE) == Tick(120.0, 180.0)


def test_missed_runs_are_dropped_without_catch_up() -> None:
    decision = timetable.tick(MINUTE, 120.0, 10_000.0, grace=30.0, catch_up=CatchUp.NONE)
    assert decision == Tick(None, 10_020.0, missed=True)  # the first run after those missed


def test_with_catch_up_last_only_the_last_missed_run_is_started_however_many_there_were() -> None:
    decision = timetable.tick(MINUTE, 120.0, 10_000_000.0, grace=30.0, catch_up=CatchUp.LAST)
    assert decision == Tick(9_999_960.0, 10_000_020.0, missed=True)


def test_a_claimed_run_is_pending_for_the_lease_then_recorded() -> None:
    claimed = timetable.claim(schedule(next_run_at=120.0), Tick(120.0, 180.0), now=121.0, lease=5.0)
    assert (claimed.next_run_at, claimed.pending_run, claimed.pending_until) == (180.0, 120.0, 126.0)
    assert claimed.due_at == 126.0
    recorded = timetable.record(claimed, "ev1")
    assert (recorded.pending_run, recorded.last_run_at, recorded.last_event_id, recorded.runs) == (
        None,
        120.0,
        "ev1",
        1,
    )
    assert recorded.due_at == 180.0


def test_a_run_that_cannot_make_an_event_is_recorded_as_an_error() -> None:
    claimed = timetable.claim(schedule(next_run_at=120.0), Tick(120.0, 180.0), now=121.0, lease=5.0)
    failed = timetable.fail(claimed, "no workflow 'shout'")
    assert (failed.pending_run, failed.last_run_at, failed.last_error, failed.runs) == (
        None,
        120.0,
        "no workflow 'shout'",
        0,
    )


def test_a_skipped_run_moves_on_and_is_counted() -> None:
    skipped = timetable.skip(schedule(next_run_at=120.0), Tick(120.0, 180.0))
    assert (skipped.next_run_at, skipped.pending_run, skipped.skipped) == (180.0, None, 1)


def test_a_paused_schedule_is_not_due_unless_a_run_is_pending_and_resumes_after_now() -> None:
    paused = timetable.pause(schedule(next_run_at=120.0))
    assert paused.due_at is None
    assert timetable.pause(schedule(next_run_at=120.0, pending_run=60.0, pending_until=70.0)).due_at == 70.0
    resumed = timetable.resume(paused, MINUTE, now=1000.0)
    assert (resumed.paused, resumed.next_run_at) == (False, 1020.0)


def test_upcoming_runs_start_at_the_first_run_from_the_start() -> None:
    assert timetable.upcoming(MINUTE, 120.0, 3) == [120.0, 180.0, 240.0]
    assert timetable.upcoming(MINUTE, 121.0, 2) == [180.0, 240.0]


def test_the_key_of_a_run_is_its_time_and_sorts_in_their_order() -> None:
    assert timetable.run_key("abc", 1_764_460_800.0) == "schedule:abc:1764460800"
    assert timetable.run_key("abc", 999.0) < timetable.run_key("abc", 1000.0)
    assert timetable.run_key("abc", 999.0).startswith(timetable.key_prefix("abc"))


def test_a_record_goes_to_plain_data_and_back() -> None:
    record = schedule(cron="0 3 * * *", timezone="Europe/Paris", overlap=Overlap.ALLOW, catch_up=CatchUp.LAST)
    assert Schedule.from_doc(record.to_doc()) == record
    assert record.to_doc()["overlap"] == "allow"
