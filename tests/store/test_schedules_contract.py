"""The contract of ScheduleStore on every store (the ``store`` fixture of test_contract.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from machinery.engine.errors import Conflict, NotFound
from machinery.engine.ports import Store
from machinery.engine.timetable import CatchUp, Overlap, Schedule, run_key
from tests.store.test_contract import event, store

__all__ = ["store"]  # the fixture, for pytest: imported to be used, not to be read


def schedule(name: str = "nightly", *, next_run_at: float | None = 2000.0, **changes: object) -> Schedule:
    return Schedule(
        name=name,
        workflow_id="wf",
        workflow_name="shout",
        data={"text": "hello"},
        interval=60,
        created_at=1000.0,
        next_run_at=next_run_at,
        **changes,  # type: ignore[arg-type]
    )


def test_a_schedule_is_stored_with_a_fresh_id_and_read_by_id_or_name(store: Store) -> None:
    stored = store.add_schedule(schedule(cron="0 3 * * *", timezone="Europe/Paris", catch_up=CatchUp.LAST))
    assert stored.id and stored.version == 1
    assert store.get_schedule(stored.id) == stored
    assert store.get_schedule("nightly") == stored
    assert store.get_schedule("nightly").catch_up is CatchUp.LAST
    assert store.get_schedule("nightly").overlap is Overlap.SKIP


def test_a_taken_name_is_a_conflict_and_an_unknown_key_not_found(store: Store) -> None:
    store.add_schedule(schedule())
    with pytest.raises(Conflict, match="nightly"):
        store.add_schedule(schedule())
    with pytest.raises(NotFound):
        store.get_schedule("hourly")
    with pytest.raises(NotFound):
        store.delete_schedule("hourly")


def test_schedules_are_listed_by_name_a_page_at_a_time(store: Store) -> None:
    for name in ("c", "a", "b"):
        store.add_schedule(schedule(name))
    page = store.list_schedules(offset=1, limit=1)
    assert [s.name for s in page.items] == ["b"] and page.total == 3


def test_of_two_writers_from_the_same_version_one_only_wins(store: Store) -> None:
    stored = store.add_schedule(schedule())
    first, second = store.get_schedule(stored.id), store.get_schedule(stored.id)
    assert store.save_schedule(replace(first, next_run_at=2060.0, pending_run=2000.0, pending_until=2010.0))
    loser = replace(second, next_run_at=2060.0, pending_run=2000.0, pending_until=2010.0)
    assert not store.save_schedule(loser)
    assert loser.version == 1
    saved = store.get_schedule(stored.id)
    assert saved.version == 2 and saved.pending_run == 2000.0


def test_due_schedules_are_those_whose_due_time_has_come_earliest_first(store: Store) -> None:
    store.add_schedule(schedule("later", next_run_at=3000.0))
    store.add_schedule(schedule("soon", next_run_at=1500.0))
    store.add_schedule(schedule("paused", next_run_at=1000.0, paused=True))
    store.add_schedule(schedule("ended", next_run_at=None))
    store.add_schedule(schedule("claimed", next_run_at=1000.0, pending_run=1000.0, pending_until=2500.0))
    assert [s.name for s in store.due_schedules(2000.0, 10)] == ["soon"]
    assert [s.name for s in store.due_schedules(3000.0, 10)] == ["soon", "claimed", "later"]
    assert [s.name for s in store.due_schedules(3000.0, 1)] == ["soon"]


def test_a_save_moves_the_due_time(store: Store) -> None:
    stored = store.add_schedule(schedule(next_run_at=1500.0))
    assert store.save_schedule(replace(stored, paused=True))
    assert store.due_schedules(2000.0, 10) == []


def test_a_deleted_schedule_is_gone(store: Store) -> None:
    store.add_schedule(schedule())
    store.delete_schedule("nightly")
    with pytest.raises(NotFound):
        store.get_schedule("nightly")
    assert store.list_schedules(offset=0, limit=10).total == 0


def test_the_events_of_a_schedule_are_those_of_its_keys_the_latest_run_first(store: Store) -> None:
    mine = store.add_schedule(schedule())
    other = store.add_schedule(schedule("other"))
    for run_at in (960.0, 1020.0, 1080.0):
        store.create_event(event("wf", key=run_key(mine.id, run_at), created_at=run_at))
    store.create_event(event("wf", key=run_key(other.id, 1000.0)))
    store.create_event(event("wf", key=None))
    store.create_event(event("elsewhere", key=run_key(mine.id, 1140.0)))
    page = store.schedule_events(mine, offset=0, limit=2)
    assert [e.idempotency_key for e in page.items] == [run_key(mine.id, 1080.0), run_key(mine.id, 1020.0)]
    assert page.total == 3
