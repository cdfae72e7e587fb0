"""The contract of RegistryStore and EventStore, which every store keeps; then what only SQLite promises."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from pymongo.errors import ExecutionTimeout

from machinery.engine.errors import Conflict, NotFound
from machinery.engine.health import DOWN, UNREACHABLE, UP, Health
from machinery.engine.model import (
    CommandTarget,
    Executable,
    Field,
    HttpEndpoint,
    Parameter,
    Ref,
    Service,
    Step,
    Workflow,
    linear_steps,
)
from machinery.engine.ports import Page, Store
from machinery.engine.state import Event, EventStatus, StepState, StepStatus
from machinery.engine.types import FieldType
from machinery.store import sqlite as sqlite_store
from machinery.store.mongo import MongoStore
from machinery.store.sqlite import SqliteStore

TEXT = Field("text", FieldType("string"))


@pytest.fixture(params=["sqlite", "mongo"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "machinery.db")
        yield sqlite
        sqlite.close()
    else:
        # Built as machinery.bootstrap builds it, on a database: so it creates its indexes, as in production.
        yield MongoStore(request.getfixturevalue("mongo_database"))


def service(name: str = "upper", **changes: Any) -> Service:
    endpoint = HttpEndpoint(f"http://{name}:8000/run")
    return Service(name=name, endpoint=endpoint, inputs=(TEXT,), outputs=(TEXT,), **changes)


def workflow(name: str = "shout", services: tuple[str, ...] = ("upper",)) -> Workflow:
    return Workflow(name=name, steps=linear_steps(list(services)), inputs=(TEXT,), outputs=(TEXT,), linear=True)


def register(store: Store, name: str = "shout", services: tuple[str, ...] = ("upper",)) -> Workflow:
    """Register the workflow, and first each of its services not registered yet."""
    for service_name in services:
        with suppress(Conflict):
            store.add_service(service(service_name))
    revisions = {service_name: store.get_service(service_name).revision for service_name in services}
    return store.add_workflow(workflow(name, services), services=revisions)


def event(
    workflow_id: str = "wf",
    *,
    created_at: float = 1000.0,
    status: EventStatus = EventStatus.ACCEPTED,
    due_at: float | None = None,
    key: str | None = None,
) -> Event:
    return Event(
        id=uuid4().hex,
        workflow_id=workflow_id,
        workflow_name="shout",
        workflow_version=1,
        data={"text": "hello"},
        created_at=created_at,
        updated_at=created_at,
        status=status,
        steps={"upper": StepState()},
        idempotency_key=key,
        due_at=due_at,
    )


# Services


def test_a_new_service_gets_an_id_and_revision_1(store: Store) -> None:
    added = store.add_service(service())

    assert added.id and added.revision == 1
    assert store.get_service("upper") == added


def test_a_service_name_can_be_registered_once(store: Store) -> None:
    store.add_service(service())

    with pytest.raises(Conflict):
        store.add_service(service(description="another"))
    assert store.get_service("upper").description == ""


def test_an_unknown_service_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_service("upper")
    with pytest.raises(NotFound):
        store.service_users("upper")
    with pytest.raises(NotFound):
        store.replace_service(service(), revision=1, users=[])
    with pytest.raises(NotFound):
        store.delete_service("upper")


def test_services_are_listed_by_name_a_page_at_a_time(store: Store) -> None:
    for name in ("delta", "alpha", "charlie", "bravo"):
        store.add_service(service(name))

    page = store.list_services(offset=1, limit=2)

    assert [s.name for s in page.items] == ["bravo", "charlie"]
    assert page.total == 4


def test_replacing_a_service_keeps_its_id_and_bumps_its_revision(store: Store) -> None:
    added = store.add_service(service())

    replaced = store.replace_service(service(timeout=2.0), revision=1, users=[])

    assert (replaced.id, replaced.revision, replaced.timeout) == (added.id, 2, 2.0)
    assert store.get_service("upper") == replaced


def test_a_service_is_not_replaced_over_a_newer_revision(store: Store) -> None:
    store.add_service(service())
    store.replace_service(service(timeout=2.0), revision=1, users=[])

    with pytest.raises(Conflict):
        store.replace_service(service(timeout=3.0), revision=1, users=[])
    assert store.get_service("upper").timeout == 2.0


def test_a_deleted_service_is_gone(store: Store) -> None:
    store.add_service(service())

    store.delete_service("upper")

    with pytest.raises(NotFound):
        store.get_service("upper")


# Workflows


def test_a_new_workflow_gets_an_id_and_version_1(store: Store) -> None:
    added = register(store)

    assert added.id and added.version == 1
    assert store.get_workflow(added.id) == added


def test_a_workflow_is_found_by_id_or_by_name(store: Store) -> None:
    added = register(store)

    assert store.get_workflow(added.id) == store.get_workflow("shout") == added
    with pytest.raises(NotFound):
        store.get_workflow("whisper")


def test_a_workflow_keeps_its_graph(store: Store) -> None:
    store.add_service(service())
    second = Step(
        "second",
        service="upper",
        after=("first",),
        input={"text": Ref("step", ("text",), step="first")},
        output={"text": "loud"},
    )
    graph = replace(workflow(), steps=(Step("first", service="upper"), second), linear=False)

    added = store.add_workflow(graph, services={"upper": 1})

    assert store.get_workflow("shout") == added


def test_a_workflow_name_can_be_registered_once(store: Store) -> None:
    register(store, services=("upper",))
    store.add_service(service("lower"))

    with pytest.raises(Conflict):
        store.add_workflow(workflow(services=("upper", "lower")), services={"upper": 1, "lower": 1})
    assert store.service_users("upper") == ["shout"]
    assert store.service_users("lower") == []


def test_a_workflow_is_refused_when_a_service_changed_since_it_was_checked(store: Store) -> None:
    store.add_service(service("upper"))
    store.add_service(service("lower"))
    store.replace_service(service("lower", timeout=2.0), revision=1, users=[])

    with pytest.raises(Conflict) as refused:
        store.add_workflow(workflow(services=("upper", "lower")), services={"upper": 1, "lower": 1})
    assert ["lower" in problem.message for problem in refused.value.problems] == [True]
    with pytest.raises(NotFound):
        store.get_workflow("shout")
    assert store.service_users("upper") == store.service_users("lower") == []


def test_a_workflow_is_refused_when_a_service_went_away(store: Store) -> None:
    store.add_service(service())
    store.delete_service("upper")

    with pytest.raises(Conflict):
        store.add_workflow(workflow(), services={"upper": 1})


def test_workflows_are_listed_by_name_a_page_at_a_time(store: Store) -> None:
    for name in ("delta", "alpha", "charlie", "bravo"):
        register(store, name)

    page = store.list_workflows(offset=2, limit=5)

    assert [w.name for w in page.items] == ["charlie", "delta"]
    assert page.total == 4


def test_replacing_a_workflow_bumps_its_version_and_keeps_the_one_before(store: Store) -> None:
    added = register(store)
    new = replace(workflow(services=("upper", "upper")), id=added.id, description="twice")

    replaced = store.replace_workflow(new, version=1, services={"upper": 1})

    assert (replaced.id, replaced.version) == (added.id, 2)
    assert store.get_workflow("shout") == replaced
    assert store.get_workflow_version(added.id, 1) == added
    assert store.get_workflow_version(added.id, 2) == replaced


def test_a_workflow_is_not_replaced_over_a_newer_version(store: Store) -> None:
    added = register(store)
    store.replace_workflow(replace(added, description="second"), version=1, services={"upper": 1})

    with pytest.raises(Conflict):
        store.replace_workflow(replace(added, description="stale"), version=1, services={"upper": 1})
    assert store.get_workflow("shout").description == "second"


def test_a_workflow_is_not_replaced_when_a_service_changed_since_it_was_checked(store: Store) -> None:
    added = register(store, services=("upper",))
    store.add_service(service("lower"))
    store.replace_service(service("lower", timeout=2.0), revision=1, users=[])

    with pytest.raises(Conflict):
        store.replace_workflow(
            replace(workflow(services=("upper", "lower")), id=added.id), version=1, services={"upper": 1, "lower": 1}
        )
    assert store.get_workflow("shout") == added
    assert store.service_users("upper") == ["shout"]
    assert store.service_users("lower") == []


def test_a_workflow_is_not_renamed_to_a_taken_name(store: Store) -> None:
    added = register(store, "shout")
    register(store, "yell")

    with pytest.raises(Conflict):
        store.replace_workflow(replace(added, name="yell"), version=1, services={"upper": 1})
    assert store.get_workflow(added.id) == added
    assert store.service_users("upper") == ["shout", "yell"]


def test_replacing_a_workflow_moves_its_uses_to_its_new_services(store: Store) -> None:
    added = register(store, services=("upper",))
    store.add_service(service("lower"))

    store.replace_workflow(replace(workflow(services=("lower",)), id=added.id), version=1, services={"lower": 1})

    assert store.service_users("upper") == []
    assert store.service_users("lower") == ["shout"]


def test_replacing_an_unknown_workflow_is_not_found(store: Store) -> None:
    store.add_service(service())

    with pytest.raises(NotFound):
        store.replace_workflow(replace(workflow(), id="nope"), version=1, services={"upper": 1})


def test_a_deleted_workflow_is_gone_but_its_versions_stay(store: Store) -> None:
    added = register(store)

    store.delete_workflow("shout")

    with pytest.raises(NotFound):
        store.get_workflow(added.id)
    with pytest.raises(NotFound):
        store.delete_workflow(added.id)
    assert store.get_workflow_version(added.id, 1) == added


def test_an_unknown_workflow_version_is_not_found(store: Store) -> None:
    added = register(store)

    with pytest.raises(NotFound):
        store.get_workflow_version(added.id, 2)


# Services and the workflows that use them


def test_the_users_of_a_service_are_the_sorted_names_of_its_workflows(store: Store) -> None:
    for name in ("shout", "bellow", "yell"):
        register(store, name)

    assert store.service_users("upper") == ["bellow", "shout", "yell"]


def test_a_service_is_not_deleted_while_a_workflow_uses_it(store: Store) -> None:
    register(store)

    with pytest.raises(Conflict) as refused:
        store.delete_service("upper")
    assert ["shout" in problem.message for problem in refused.value.problems] == [True]
    assert store.get_service("upper").revision == 1


def test_a_service_is_deleted_once_the_workflows_using_it_are_gone(store: Store) -> None:
    added = register(store)

    store.delete_workflow(added.id)
    store.delete_service("upper")

    with pytest.raises(NotFound):
        store.get_service("upper")


def test_a_service_is_replaced_only_while_its_users_are_the_ones_checked(store: Store) -> None:
    register(store)

    with pytest.raises(Conflict):
        store.replace_service(service(timeout=2.0), revision=1, users=[])
    assert store.replace_service(service(timeout=2.0), revision=1, users=["shout"]).revision == 2


# Events


def test_an_event_is_stored_and_read_back(store: Store) -> None:
    new = event(key="k1", due_at=1005.0)

    assert store.create_event(new) == (new, True)
    assert store.get_event(new.id) == new


def test_an_unknown_event_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_event("nope")


def test_an_idempotency_key_used_again_returns_the_first_event_and_stores_nothing(store: Store) -> None:
    first = event(key="k1")
    store.create_event(first)

    assert store.create_event(event(key="k1")) == (first, False)
    assert store.list_events(workflow_id=None, status=None, offset=0, limit=10).total == 1


def test_an_idempotency_key_is_per_workflow(store: Store) -> None:
    store.create_event(event("wf-1", key="k1"))

    assert store.create_event(event("wf-2", key="k1"))[1]


def test_events_without_an_idempotency_key_are_all_stored(store: Store) -> None:
    for _ in range(3):
        assert store.create_event(event())[1]

    assert store.list_events(workflow_id="wf", status=None, offset=0, limit=10).total == 3


def test_saving_an_event_bumps_its_version(store: Store) -> None:
    new = event()
    store.create_event(new)
    new.status = EventStatus.RUNNING

    assert store.save_event(new)
    assert new.version == 1
    assert store.get_event(new.id) == new
    assert store.list_events(workflow_id=None, status="running", offset=0, limit=10).items == [new]


def test_an_event_read_before_another_write_is_not_saved(store: Store) -> None:
    new = event()
    store.create_event(new)
    mine, theirs = store.get_event(new.id), store.get_event(new.id)
    theirs.data["text"] = "theirs"
    store.save_event(theirs)

    mine.data["text"] = "mine"
    assert not store.save_event(mine)
    assert mine.version == 0
    assert store.get_event(new.id) == theirs


def test_events_are_listed_newest_first_a_page_at_a_time(store: Store) -> None:
    events = [event(created_at=1000.0 + i) for i in range(5)]
    for e in events:
        store.create_event(e)

    page = store.list_events(workflow_id=None, status=None, offset=1, limit=2)

    assert page.items == [events[3], events[2]]
    assert page.total == 5


def test_events_are_listed_by_workflow_and_by_status(store: Store) -> None:
    a_done = event("a", status=EventStatus.COMPLETED, created_at=1.0)
    a_running = event("a", status=EventStatus.RUNNING, created_at=2.0)
    b_done = event("b", status=EventStatus.COMPLETED, created_at=3.0)
    for e in (a_done, a_running, b_done):
        store.create_event(e)

    def listed(workflow_id: str | None, status: str | None) -> tuple[list[Event], int]:
        page = store.list_events(workflow_id=workflow_id, status=status, offset=0, limit=10)
        return page.items, page.total

    assert listed("a", None) == ([a_running, a_done], 2)
    assert listed(None, "completed") == ([b_done, a_done], 2)
    assert listed("a", "completed") == ([a_done], 1)
    assert listed("c", None) == ([], 0)


def test_child_events_are_listed_by_their_parent_with_their_link_to_it_kept(store: Store) -> None:
    parent = event(created_at=1.0)
    children = [event("child", created_at=2.0 + i) for i in range(2)]
    for i, child in enumerate(children):
        child.parent = {"event": parent.id, "step": f"kid-{i}", "depth": 1}
        child.to_parent = StepState(status=StepStatus.READY, run_at=5.0)
    for e in (parent, *children):
        store.create_event(e)

    page = store.list_events(workflow_id=None, status=None, offset=0, limit=10, parent=parent.id)

    assert (page.items, page.total) == ([children[1], children[0]], 2)
    assert store.get_event(children[0].id) == children[0]
    assert store.list_events(workflow_id=None, status=None, offset=0, limit=10, parent=children[0].id).total == 0


SEARCHED = {
    "plain": {"customer": "acme", "total": 12, "paid": True, "tags": ["a", "b"], "address": {"city": "Lyon"}},
    "other": {"customer": "acme", "total": 12.5, "paid": 1, "tags": "a", "address": {"city": "Nice"}, "note": None},
    "third": {"customer": ["acme"], "total": "12", "paid": "true", "address": "Lyon"},
    "lists": {"customer": "lists", "lines": [{"sku": "x"}], "matrix": [["a", "b"]]},
}


@pytest.mark.parametrize(
    ("data", "found"),
    [
        ({}, {"plain", "other", "third", "lists"}),
        ({"customer": "acme"}, {"plain", "other"}),
        ({"customer": "acme", "total": 12}, {"plain"}),
        ({"total": 12.0}, {"plain"}),
        ({"total": 12.5}, {"other"}),
        ({"paid": True}, {"plain"}),
        ({"paid": 1}, {"other"}),
        ({"tags": ["a", "b"]}, {"plain"}),
        ({"tags": "a"}, {"other"}),
        ({"address": {"city": "Lyon"}}, {"plain"}),
        ({"note": None}, {"plain", "other", "third", "lists"}),
        # A path goes through objects, never into an array's elements; an array is compared whole.
        ({"lines": {"sku": "x"}}, set()),
        ({"lines": {"sku": None}}, {"plain", "other", "third", "lists"}),
        ({"matrix": ["a", "b"]}, set()),
        ({"matrix": [["a", "b"]]}, {"lists"}),
        ({"customer": "nobody"}, set()),
    ],
)
def test_events_are_found_by_the_values_in_their_data_of_the_same_json_type(
    store: Store, data: dict[str, Any], found: set[str]
) -> None:
    page = search_searched(store, data, found)
    assert page.total == len(found)


def search_searched(store: Store, data: dict[str, Any], found: set[str]) -> Page[Event]:
    """Store the events of SEARCHED, search them by ``data``, and check that those ``found`` are."""
    ids = {}
    for name, values in SEARCHED.items():
        stored = replace(event(), data=values)
        store.create_event(stored)
        ids[stored.id] = name

    page = store.list_events(workflow_id="wf", status=None, offset=0, limit=10, data=data)

    assert {ids[e.id] for e in page.items} == found
    return page


def register_searchable(store: Store, *names: str) -> None:
    """A workflow (of its own name) declaring inputs of SEARCHED searchable: the store indexes them."""
    types = {"customer": "string", "total": "float", "paid": "bool", "order": "string"}
    inputs = tuple(Field(name, FieldType(types[name]), searchable=True) for name in names)
    store.add_service(service())
    flow = replace(workflow("searched"), inputs=(TEXT, *inputs))
    store.add_workflow(flow, services={"upper": 1})


@pytest.mark.parametrize(
    ("data", "found"),
    [
        ({"customer": "acme"}, {"plain", "other"}),
        ({"customer": "acme", "total": 12}, {"plain"}),
        ({"total": 12}, {"plain"}),
        ({"total": 12.5}, {"other"}),
        ({"paid": True}, {"plain"}),
        ({"paid": 1}, {"other"}),
        ({"customer": ["acme"]}, {"third"}),
        ({"customer": None}, set()),
        ({"total": "12"}, {"third"}),
    ],
)
def test_a_search_by_searchable_fields_finds_what_any_search_finds(
    store: Store, data: dict[str, Any], found: set[str]
) -> None:
    # Declared by one workflow, the fields are indexed in every event, of whatever workflow and JSON type.
    register_searchable(store, "customer", "total", "paid")
    page = search_searched(store, data, found)
    assert (page.total, page.exact, page.complete) == (len(found), True, True)


def test_events_stored_before_a_field_is_declared_searchable_are_found_by_it(store: Store) -> None:
    before = replace(event(created_at=1.0), data={"order": "A-1"})
    store.create_event(before)
    register_searchable(store, "order")
    after = replace(event("other", created_at=2.0), data={"order": "A-1"})
    store.create_event(after)
    store.create_event(replace(event(created_at=3.0), data={"order": "A-2"}))

    assert store.list_events(workflow_id=None, status=None, offset=0, limit=10, data={"order": "A-1"}).items == [
        after,
        before,
    ]
    assert store.list_events(workflow_id="wf", status=None, offset=0, limit=10, data={"order": "A-1"}).items == [before]


def test_a_search_counts_its_events_up_to_a_limit_and_then_says_more(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sys.modules[type(store).__module__]
    monkeypatch.setattr(module, "COUNT_LIMIT", 3)
    monkeypatch.setattr(module, "_OVER", 4)
    for at in range(6):
        store.create_event(replace(event(created_at=float(at)), data={"text": "x"}))

    page = store.list_events(workflow_id=None, status=None, offset=0, limit=2, data={"text": "x"})
    assert (len(page.items), page.total, page.exact) == (2, 3, False)
    # Without data, the counters give every total exactly.
    assert store.list_events(workflow_id=None, status=None, offset=0, limit=2).total == 6


@pytest.mark.parametrize(("workflow_id", "status"), [(None, None), ("a", None), (None, "running"), ("a", "running")])
def test_pages_after_a_position_neither_skip_nor_repeat_an_event_while_others_arrive(
    store: Store, workflow_id: str | None, status: str | None
) -> None:
    # Several events at the same instant: the id orders them.
    at = [1000.0 + i // 3 for i in range(20)]
    listed = [event(workflow_id or "a", status=EventStatus(status or "running"), created_at=t) for t in at]
    others = [event("b", status=EventStatus.COMPLETED, created_at=t + 0.5) for t in at[::2]]
    for e in listed + others:
        store.create_event(e)
    expected = sorted(listed if workflow_id or status else listed + others, key=lambda e: (e.created_at, e.id))

    seen: list[Event] = []
    after = None
    for round_ in range(100):
        page = store.list_events(workflow_id=workflow_id, status=status, offset=0, limit=3, after=after)
        if not page.items:
            break
        seen += page.items
        after = (page.items[-1].created_at, page.items[-1].id)
        # New events, of every filter, arrive between pages: they come before the first page, not in later ones.
        store.create_event(event("a", status=EventStatus.RUNNING, created_at=2000.0 + round_))
        store.create_event(event("b", status=EventStatus.COMPLETED, created_at=2000.0 + round_))

    assert [e.id for e in seen] == [e.id for e in reversed(expected)]


def test_totals_and_statistics_follow_each_change_of_status_and_each_deletion(store: Store) -> None:
    events = [event("a", status=EventStatus.RUNNING, created_at=float(i)) for i in range(4)]
    for e in events:
        store.create_event(e)
    for e in events[:3]:
        e.status = EventStatus.COMPLETED
        assert store.save_event(e)
    events[0].data = {"text": "changed, same status"}
    assert store.save_event(events[0])
    stale = replace(events[1], status=EventStatus.FAILED, version=0)
    assert not store.save_event(stale)
    store.delete_events(created_before=1.5, limit=10)

    def total(workflow_id: str | None, status: str | None) -> int:
        return store.list_events(workflow_id=workflow_id, status=status, offset=0, limit=1).total

    assert store.statistics(now=0.0).events == {("a", "completed"): 1, ("a", "running"): 1}
    assert [total(None, None), total("a", None), total(None, "completed"), total("a", "running")] == [2, 2, 1, 1]
    assert [total("b", None), total(None, "failed")] == [0, 0]


def test_events_recounted_give_the_same_counts(store: Store) -> None:
    for status in (EventStatus.RUNNING, EventStatus.RUNNING, EventStatus.FAILED):
        store.create_event(event(status=status))

    store.recount_events()

    assert store.statistics(now=0.0).events == {("wf", "running"): 2, ("wf", "failed"): 1}


def test_old_finished_events_are_deleted_oldest_first_a_batch_at_a_time(store: Store) -> None:
    kept = [event(status=EventStatus.RUNNING, created_at=1.0), event(status=EventStatus.COMPLETED, created_at=50.0)]
    old = [event(status=status, created_at=at) for status, at in [
        (EventStatus.FAILED, 3.0), (EventStatus.COMPLETED, 2.0), (EventStatus.CANCELLED, 4.0)
    ]]  # fmt: skip
    for e in kept + old:
        store.create_event(e)

    assert store.delete_events(created_before=10.0, limit=2) == 2
    remaining = {e.id for e in store.list_events(workflow_id=None, status=None, offset=0, limit=10).items}
    assert remaining == {kept[0].id, kept[1].id, old[2].id}
    assert store.delete_events(created_before=10.0, limit=2) == 1
    assert store.delete_events(created_before=10.0, limit=2) == 0


def test_due_events_are_those_whose_time_has_come_earliest_first_ended_ones_included(store: Store) -> None:
    later = event(status=EventStatus.RUNNING, due_at=20.0)
    sooner = event(status=EventStatus.WAITING, due_at=10.0)
    not_yet = event(due_at=40.0)
    to_notify = event(status=EventStatus.COMPLETED, due_at=5.0)
    over = event(status=EventStatus.FAILED)
    never = event()
    for e in (later, sooner, not_yet, to_notify, over, never):
        store.create_event(e)

    assert store.due_events(30.0, limit=10) == [to_notify, sooner, later]
    assert store.due_events(30.0, limit=1) == [to_notify]


def test_an_event_saved_without_a_due_time_is_no_longer_due(store: Store) -> None:
    new = event(status=EventStatus.RUNNING, due_at=10.0)
    store.create_event(new)

    new.due_at = None
    store.save_event(new)

    assert store.due_events(30.0, limit=10) == []
    assert store.get_event(new.id).due_at is None


# Slots: how many calls of a service may be under way at once


def take(store: Store, holder: str, *, limit: int = 1, now: float = 10.0, until: float = 100.0) -> bool:
    """A slot of ``upper`` for ``holder``, who waits as unit ``holder`` of event ``ev``."""
    return store.acquire_slot("upper", limit, holder, until=until, now=now, waiter=("ev", holder))


def test_a_service_gives_out_as_many_slots_as_its_limit(store: Store) -> None:
    assert [take(store, holder, limit=2) for holder in ("a", "b", "c")] == [True, True, False]
    assert store.acquire_slot("reverse", 2, "c", until=100.0, now=10.0, waiter=("ev", "c"))


def test_a_slot_given_back_wakes_the_waiters_one_at_a_time_in_the_order_they_came(store: Store) -> None:
    take(store, "a")
    take(store, "b", now=11.0)
    take(store, "c", now=12.0)
    take(store, "b", now=13.0)

    assert store.release_slot("upper", "a") == ("ev", "b")
    assert take(store, "b", now=14.0)
    assert store.release_slot("upper", "b") == ("ev", "c")
    assert store.release_slot("upper", "b") is None


def test_a_waiter_that_gets_a_slot_is_no_longer_woken(store: Store) -> None:
    take(store, "a", limit=2)
    take(store, "b", limit=2)
    assert not take(store, "c", limit=2)

    store.release_slot("upper", "a")
    assert take(store, "c", limit=2)
    assert store.release_slot("upper", "b") is None


def test_a_slot_whose_holder_never_gave_it_back_is_free_once_its_time_is_over(store: Store) -> None:
    take(store, "lost")

    assert not take(store, "b", now=99.0, until=200.0)
    assert take(store, "b", now=100.0, until=200.0)
    assert store.release_slot("upper", "lost") is None
    assert not take(store, "c", now=150.0, until=300.0)
    assert store.release_slot("upper", "b") == ("ev", "c")


def test_held_waiters_are_noted_once_and_taken_all_at_once_in_the_order_they_came(store: Store) -> None:
    store.hold("upper", ("ev", "b"), since=12.0)
    store.hold("upper", ("ev", "a"), since=11.0)
    store.hold("upper", ("ev", "b"), since=13.0)
    store.hold("reverse", ("ev", "c"), since=10.0)
    take(store, "holder")
    assert not take(store, "d", now=14.0)

    assert store.take_waiters("upper") == [("ev", "a"), ("ev", "b"), ("ev", "d")]
    assert store.take_waiters("upper") == []
    assert store.take_waiters("reverse") == [("ev", "c")]


def test_the_health_of_each_service_is_kept_last_probe_only(store: Store) -> None:
    store.save_health("upper", Health(UNREACHABLE, since=10.0, checked_at=10.0, failures=1, error="refused"))
    store.save_health("upper", Health(DOWN, since=20.0, checked_at=20.0, failures=2, error="timed out"))
    store.save_health("reverse", Health(UP, since=5.0, checked_at=20.0))

    assert store.health() == {
        "upper": Health(DOWN, since=20.0, checked_at=20.0, failures=2, error="timed out"),
        "reverse": Health(UP, since=5.0, checked_at=20.0),
    }


def test_the_statistics_count_events_by_workflow_and_status_the_overdue_ones_and_the_slots(store: Store) -> None:
    for workflow_id, status, due_at in [
        ("wf", EventStatus.RUNNING, 10.0),
        ("wf", EventStatus.RUNNING, 50.0),
        ("wf", EventStatus.COMPLETED, None),
        ("other", EventStatus.FAILED, 5.0),
    ]:
        store.create_event(event(workflow_id, status=status, due_at=due_at))
    take(store, "a", limit=2)
    take(store, "b", limit=2, until=15.0)
    take(store, "c", limit=2)
    take(store, "d", limit=2)

    statistics = store.statistics(now=20.0)

    assert statistics.events == {("wf", "running"): 2, ("wf", "completed"): 1, ("other", "failed"): 1}
    assert statistics.overdue == 1
    assert statistics.slots == {"upper": (1, 2)}


# SQLite only: a real database on disk, shared by processes


def test_sqlite_data_survives_reopening_the_store(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "machinery.db")
    added = register(first)
    stored = event(added.id, key="k1")
    first.create_event(stored)
    first.close()

    reopened = SqliteStore(tmp_path / "machinery.db")

    assert reopened.get_workflow("shout") == added
    assert reopened.service_users("upper") == ["shout"]
    assert reopened.get_event(stored.id) == stored
    assert reopened.create_event(event(added.id, key="k1")) == (stored, False)


def test_sqlite_loses_no_update_when_processes_write_one_event_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "machinery.db")
    counter = replace(event(), data={"count": 0})
    store.create_event(counter)

    # The store is used in this process first, so each child must open connections of its own.
    fork = multiprocessing.get_context("fork")
    writers = [fork.Process(target=_increment, args=(store, counter.id, 50)) for _ in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=30)

    assert [writer.exitcode for writer in writers] == [0] * 4
    stored = store.get_event(counter.id)
    assert stored.data["count"] == 200
    assert stored.version == 200


def test_sqlite_lets_one_of_two_processes_register_a_name(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "machinery.db")
    fork = multiprocessing.get_context("fork")
    start, outcomes = fork.Barrier(2), fork.Queue()
    racers = [fork.Process(target=_add_service, args=(store, start, outcomes)) for _ in range(2)]
    for racer in racers:
        racer.start()

    assert sorted(outcomes.get(timeout=30) for _ in racers) == ["added", "conflict"]
    for racer in racers:
        racer.join(timeout=30)
    assert store.list_services(offset=0, limit=10).total == 1


def test_sqlite_gives_a_slot_to_one_process_at_a_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "machinery.db")
    fork = multiprocessing.get_context("fork")
    start, outcomes = fork.Barrier(4), fork.Queue()
    racers = [fork.Process(target=_take_slot, args=(store, f"p{i}", start, outcomes)) for i in range(4)]
    for racer in racers:
        racer.start()

    assert sorted(outcomes.get(timeout=30) for _ in racers) == [False, False, True, True]
    for racer in racers:
        racer.join(timeout=30)


def _take_slot(store: SqliteStore, holder: str, start: Any, outcomes: Any) -> None:
    start.wait(timeout=30)
    outcomes.put(store.acquire_slot("upper", 2, holder, until=100.0, now=10.0, waiter=("ev", holder)))


def _increment(store: SqliteStore, event_id: str, times: int) -> None:
    for _ in range(times):
        saved = False
        while not saved:
            current = store.get_event(event_id)
            current.data["count"] += 1
            saved = store.save_event(current)


def _add_service(store: SqliteStore, start: Any, outcomes: Any) -> None:
    start.wait(timeout=30)
    try:
        store.add_service(service())
        outcomes.put("added")
    except Conflict:
        outcomes.put("conflict")


def test_a_search_on_mongodb_stopped_at_its_time_answers_what_it_found_and_says_so(
    mongo_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MongoStore(mongo_database)
    found = replace(event(), data={"text": "x"})
    store.create_event(found)
    real = store._events.find

    def timed_out(*args: Any, **kwargs: Any) -> Any:
        """A cursor that gives the first event, then runs out of time, as MongoDB's under max_time_ms."""
        return StoppedCursor(real(*args, **kwargs))

    class StoppedCursor:
        def __init__(self, cursor: Any) -> None:
            self.cursor = cursor

        def __getattr__(self, name: str) -> Any:
            inner = getattr(self.cursor, name)
            return lambda *a, **k: StoppedCursor(inner(*a, **k))

        def __iter__(self) -> Iterator[Any]:
            yield next(iter(self.cursor))
            raise ExecutionTimeout("operation exceeded time limit")

    monkeypatch.setattr(store._events, "find", timed_out)

    page = store.list_events(workflow_id=None, status=None, offset=0, limit=10, data={"text": "x"})

    assert (page.items, page.total, page.exact, page.complete) == ([found], 1, False, False)


def test_sqlite_counts_the_events_of_a_database_made_before_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "machinery.db"
    store = SqliteStore(path)
    for status in (EventStatus.RUNNING, EventStatus.RUNNING, EventStatus.FAILED):
        store.create_event(event(status=status))
    db = store._db()
    for statement in ("DROP TRIGGER event_counted", "DROP TRIGGER event_recounted", "DROP TRIGGER event_uncounted"):
        db.execute(statement)
    db.execute("DROP TABLE event_counts")
    store.close()

    reopened = SqliteStore(path)
    reopened.create_event(event(status=EventStatus.FAILED))

    assert reopened.statistics(now=0.0).events == {("wf", "running"): 2, ("wf", "failed"): 2}


def test_sqlite_serves_every_listing_and_a_search_by_a_searchable_field_from_an_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "machinery.db")
    register_searchable(store, "order")
    plans: list[str] = []
    db = store._db()
    real = db.execute

    def explained(query: str, params: Any = ()) -> Any:
        if query.startswith("SELECT doc FROM events"):
            plans.extend(row[3] for row in real("EXPLAIN QUERY PLAN " + query, params))
        return real(query, params)

    store._local.db = Spy(db, explained)
    for workflow_id, status in [(None, None), ("wf", None), (None, "running"), ("wf", "running")]:
        store.list_events(workflow_id=workflow_id, status=status, offset=0, limit=10, after=(5.0, "x"))
    store.list_events(workflow_id="wf", status=None, offset=0, limit=10, data={"order": "A-1"})

    assert len(plans) == 5
    assert all(plan.startswith("SEARCH events USING INDEX") for plan in plans), plans
    assert "events_data_order" in plans[-1]
    assert not any("TEMP B-TREE" in plan for plan in plans)


class Spy:
    """A connection whose execute is ``execute``, the rest the real one's."""

    def __init__(self, db: Any, execute: Any) -> None:
        self._db, self.execute = db, execute

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_sqlite_stops_a_search_by_undeclared_fields_at_its_time_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(tmp_path / "machinery.db")
    db = store._db()
    rows = [(uuid4().hex, "wf", "running", float(i), None, None, 0, f'{{"data": {{"n": {i}}}}}') for i in range(50_000)]
    with store._transaction():
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    monkeypatch.setattr(sqlite_store, "SEARCH_SECONDS", 0.0)

    page = store.list_events(workflow_id=None, status=None, offset=0, limit=10, data={"n": -1})

    assert (page.items, page.exact, page.complete) == ([], False, False)


# Executables

SORT = Executable(
    "sort",
    "/usr/bin/sort",
    "9.4",
    "sort lines",
    (Parameter("-r"), Parameter("-k", value="int", requires=("-t",)), Parameter("-t", value="string")),
)


def test_an_executable_is_stored_read_listed_and_replaced_at_the_next_revision(store: Store) -> None:
    stored = store.add_executable(SORT)
    assert stored.revision == 1 and stored.id
    assert store.get_executable("sort") == stored
    assert store.list_executables(offset=0, limit=10).items == [stored]

    changed = store.replace_executable(replace(SORT, version="9.5"), revision=1, users=[])

    assert (changed.revision, changed.id) == (2, stored.id)
    assert store.get_executable("sort").version == "9.5"


def test_a_name_is_taken_once_and_a_stale_revision_is_refused(store: Store) -> None:
    store.add_executable(SORT)
    with pytest.raises(Conflict):
        store.add_executable(SORT)
    store.replace_executable(SORT, revision=1, users=[])
    with pytest.raises(Conflict):
        store.replace_executable(SORT, revision=1, users=[])


def test_a_deleted_executable_is_gone(store: Store) -> None:
    store.add_executable(SORT)
    store.delete_executable("sort")
    with pytest.raises(NotFound):
        store.get_executable("sort")
    with pytest.raises(NotFound):
        store.delete_executable("sort")


def sorter(name: str = "sorter", executable: str = "sort") -> Service:
    """A command service running ``executable``."""
    return Service(name, CommandTarget(executable))


def test_a_command_service_is_refused_if_its_executable_changed_since_it_was_checked(store: Store) -> None:
    store.add_executable(SORT)
    store.replace_executable(SORT, revision=1, users=[])
    with pytest.raises(Conflict, match="executable 'sort' changed"):
        store.add_service(sorter(), executable_revision=1)
    with pytest.raises(NotFound):
        store.get_service("sorter")
    store.add_service(sorter(), executable_revision=2)


def test_an_executable_replaced_is_refused_if_a_command_service_came_to_run_it_since_the_check(store: Store) -> None:
    store.add_executable(SORT)
    store.add_service(sorter(), executable_revision=1)
    with pytest.raises(Conflict):
        store.replace_executable(SORT, revision=1, users=[])
    assert store.replace_executable(SORT, revision=1, users=["sorter"]).revision == 2


def test_an_executable_is_deleted_only_once_no_command_service_runs_it(store: Store) -> None:
    store.add_executable(SORT)
    store.add_executable(replace(SORT, name="tac"))
    store.add_service(sorter(), executable_revision=1)
    with pytest.raises(Conflict) as refused:
        store.delete_executable("sort")
    assert [p.message for p in refused.value.problems] == ["service 'sorter' runs executable 'sort'"]
    store.replace_service(sorter(executable="tac"), revision=1, users=[], executable_revision=1)
    store.delete_executable("sort")
    store.delete_service("sorter")
    store.delete_executable("tac")
