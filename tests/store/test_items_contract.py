"""The contract of ItemStore, and what EventStore does for items, on every store (the ``store`` fixture of
test_contract.py)."""

from __future__ import annotations

import random

import pytest

from machinery.engine.errors import NotFound
from machinery.engine.ports import Store
from machinery.engine.state import EventStatus, Item, StepState, StepStatus
from tests.store.test_contract import event, store

__all__ = ["store"]  # the fixture, for pytest: imported to be used, not to be read

READY, RUNNING, COMPLETED, FAILED = StepStatus.READY, StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED


def item(
    index: int,
    *,
    event_id: str = "ev",
    step_id: str = "each",
    status: StepStatus = READY,
    due_at: float | None = None,
) -> Item:
    return Item(
        event_id=event_id,
        step_id=step_id,
        index=index,
        workflow_id="wf",
        workflow_version=1,
        inputs={"item": index},
        state=StepState(status=status),
        due_at=due_at,
    )


def items(count: int, *, event_id: str = "ev", step_id: str = "each", due_at: float | None = None) -> list[Item]:
    return [item(index, event_id=event_id, step_id=step_id, due_at=due_at) for index in range(count)]


def indexes(found: list[Item]) -> list[int]:
    return [i.index for i in found]


def test_an_item_is_stored_and_read_back(store: Store) -> None:
    new = item(3, status=RUNNING, due_at=12.5)
    new.state.attempts = 2
    new.state.history = [{"attempt": 1, "error": {"message": "timed out"}}]
    new.handed_on = True

    store.add_items([new])

    assert store.get_item("ev", "each", 3) == new


def test_an_unknown_item_is_not_found(store: Store) -> None:
    store.add_items([item(0)])

    for key in [("ev", "each", 1), ("ev", "other", 0), ("other", "each", 0)]:
        with pytest.raises(NotFound):
            store.get_item(*key)


def test_items_added_again_are_kept_as_they_were_and_the_new_ones_added(store: Store) -> None:
    first = items(3)
    store.add_items(first)

    again = items(5)
    for changed in again:
        changed.inputs = {"item": "changed"}
        changed.state.status = FAILED
    store.add_items(again)
    store.add_items([])

    assert store.list_items("ev", "each", limit=10) == first + again[3:]


def test_saving_an_item_bumps_its_version(store: Store) -> None:
    store.add_items([item(0)])
    mine = store.get_item("ev", "each", 0)
    mine.state.status = RUNNING

    assert store.save_item(mine)
    assert mine.version == 1
    assert store.get_item("ev", "each", 0) == mine
    assert store.count_items("ev", "each") == {"running": 1}


def test_an_item_read_before_another_write_is_not_saved(store: Store) -> None:
    store.add_items([item(0)])
    mine, theirs = store.get_item("ev", "each", 0), store.get_item("ev", "each", 0)
    theirs.state.status = COMPLETED
    store.save_item(theirs)

    mine.state.status = FAILED
    mine.due_at = 5.0
    assert not store.save_item(mine)
    assert mine.version == 0
    assert store.get_item("ev", "each", 0) == theirs
    assert store.count_items("ev", "each") == {"completed": 1}
    assert store.due_items(10.0, limit=10) == []


def test_an_unknown_item_is_not_saved(store: Store) -> None:
    assert not store.save_item(item(0))
    with pytest.raises(NotFound):
        store.get_item("ev", "each", 0)


def test_items_are_listed_by_index_those_of_the_step_only(store: Store) -> None:
    mine = items(20)
    shuffled = list(mine)
    random.Random(4).shuffle(shuffled)
    store.add_items(shuffled)
    store.add_items([item(0, step_id="other"), item(1, event_id="other")])

    assert store.list_items("ev", "each", limit=100) == mine
    assert store.list_items("ev", "each", limit=5) == mine[:5]
    assert store.list_items("ev", "each", after=16, limit=5) == mine[17:]
    assert store.list_items("ev", "each", after=19, limit=5) == []
    assert store.list_items("ev", "nothing", limit=5) == []


def test_pages_after_the_last_index_seen_cover_every_item_once(store: Store) -> None:
    statuses = [READY, RUNNING, COMPLETED, FAILED]
    store.add_items([item(i, status=statuses[i * 7 % 4]) for i in range(50)])

    def all_pages(wanted: list[str] | None) -> list[int]:
        seen: list[int] = []
        while page := store.list_items("ev", "each", statuses=wanted, after=seen[-1] if seen else -1, limit=6):
            assert len(page) <= 6
            seen += indexes(page)
        return seen

    assert all_pages(None) == list(range(50))
    assert all_pages(["completed"]) == [i for i in range(50) if statuses[i * 7 % 4] == COMPLETED]
    several = [i for i in range(50) if statuses[i * 7 % 4] in (READY, FAILED)]
    assert all_pages(["failed", "ready"]) == several
    assert all_pages([FAILED, READY, FAILED]) == several


def test_items_are_listed_in_any_of_several_statuses(store: Store) -> None:
    store.add_items([item(0, status=FAILED), item(1), item(2, status=COMPLETED), item(3, status=FAILED), item(4)])

    assert indexes(store.list_items("ev", "each", statuses=["failed"], limit=10)) == [0, 3]
    assert indexes(store.list_items("ev", "each", statuses=["failed", "ready"], limit=10)) == [0, 1, 3, 4]
    assert indexes(store.list_items("ev", "each", statuses=["failed", "ready"], after=0, limit=2)) == [1, 3]
    assert store.list_items("ev", "each", statuses=["running"], limit=10) == []
    assert store.list_items("ev", "each", statuses=[], limit=10) == []


def test_items_are_counted_by_status_for_their_step_only(store: Store) -> None:
    store.add_items([item(0, status=FAILED), item(1), item(2, status=COMPLETED), item(3, status=FAILED), item(4)])
    store.add_items([item(0, step_id="other", status=RUNNING), item(0, event_id="other", status=RUNNING)])

    assert store.count_items("ev", "each") == {"failed": 2, "ready": 2, "completed": 1}
    assert store.count_items("ev", "nothing") == {}


def test_due_items_are_those_whose_time_has_come_earliest_first(store: Store) -> None:
    later = item(0, due_at=20.0)
    sooner = item(1, due_at=10.0, step_id="other")
    not_yet = item(2, due_at=40.0)
    never = item(3)
    elsewhere = item(0, event_id="other", due_at=15.0, status=COMPLETED)
    store.add_items([later, sooner, not_yet, never, elsewhere])

    assert store.due_items(30.0, limit=10) == [sooner, elsewhere, later]
    assert store.due_items(30.0, limit=2) == [sooner, elsewhere]
    assert store.due_items(20.0, limit=10) == [sooner, elsewhere, later]
    assert store.due_items(5.0, limit=10) == []


def test_an_item_saved_without_a_due_time_is_no_longer_due(store: Store) -> None:
    store.add_items([item(0, due_at=10.0), item(1, due_at=11.0)])
    done = store.get_item("ev", "each", 0)

    done.due_at = None
    done.state.status = COMPLETED
    assert store.save_item(done)

    assert indexes(store.due_items(30.0, limit=10)) == [1]
    assert store.get_item("ev", "each", 0).due_at is None


def test_the_status_of_an_event_is_read_alone(store: Store) -> None:
    new = event(status=EventStatus.RUNNING)
    store.create_event(new)
    assert store.event_status(new.id) == EventStatus.RUNNING

    new.status = EventStatus.COMPLETED
    store.save_event(new)
    assert store.event_status(new.id) == EventStatus.COMPLETED

    with pytest.raises(NotFound):
        store.event_status("nope")


def test_deleting_old_events_deletes_their_items_and_no_others(store: Store) -> None:
    old = event(status=EventStatus.COMPLETED, created_at=1.0)
    kept = event(status=EventStatus.RUNNING, created_at=1.0)
    for e in (old, kept):
        store.create_event(e)
    store.add_items(items(5, event_id=old.id) + items(3, event_id=old.id, step_id="other", due_at=1.0))
    store.add_items(items(4, event_id=kept.id, due_at=2.0))

    assert store.delete_events(created_before=10.0, limit=10) == 1

    assert store.count_items(old.id, "each") == {}
    assert store.count_items(old.id, "other") == {}
    assert store.count_items(kept.id, "each") == {"ready": 4}
    assert {i.event_id for i in store.due_items(30.0, limit=100)} == {kept.id}
