"""The contract of FleetStore, which every store keeps: fleets, workloads in bulk, hosts, leases and events."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from machinery.engine.errors import Conflict, NotFound
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Host, Lifecycle, LifecycleEvent, Workload
from machinery.engine.fleets import WorkloadState as S
from machinery.engine.model import Field
from machinery.engine.ports import Store
from machinery.engine.types import FieldType
from machinery.store.mongo import MongoStore
from machinery.store.sqlite import SqliteStore
from tests.store import test_contract

store = test_contract.store
"""The fixture of the contract of every store: each test runs on SQLite and on MongoDB."""

REBOOT = FleetTask("reboot", (Field("delay", FieldType("int")),), (Field("uptime", FieldType("float")),))


def fleet(name: str = "routers") -> Fleet:
    return Fleet(name, "simulated", FleetSettings(ping_interval=1.0, max_spread=2), (REBOOT,), "edge routers")


def workloads(count: int, fleet: str = "routers", **labels: str) -> list[Workload]:
    return [Workload(fleet, f"w{i:05d}", labels=labels, config={"latency": 0}) for i in range(count)]


def names(workloads: list[Workload]) -> list[str]:
    return [w.name for w in workloads]


def test_a_fleet_is_added_read_listed_replaced_and_deleted(store: Store) -> None:
    added = store.add_fleet(fleet())
    assert added.version == 1 and store.get_fleet("routers") == added
    assert store.get_fleet("routers").tasks == (REBOOT,)
    store.add_fleet(fleet("switches"))
    assert [f.name for f in store.list_fleets()] == ["routers", "switches"]
    replaced = store.replace_fleet(Fleet("routers", "http"), version=1)
    assert replaced.version == 2 and store.get_fleet("routers").driver == "http"
    with pytest.raises(Conflict):
        store.replace_fleet(Fleet("routers", "http"), version=1)
    store.delete_fleet("switches")
    with pytest.raises(NotFound):
        store.get_fleet("switches")


def test_a_fleet_name_is_taken_once(store: Store) -> None:
    store.add_fleet(fleet())
    with pytest.raises(Conflict):
        store.add_fleet(fleet())


def test_a_fleet_with_workloads_cannot_be_deleted(store: Store) -> None:
    store.add_fleet(fleet())
    store.add_workloads(workloads(1))
    with pytest.raises(Conflict, match="still has workloads"):
        store.delete_fleet("routers")


def test_thousands_of_workloads_are_added_and_removed_in_one_call_each(store: Store) -> None:
    assert len(store.add_workloads(workloads(3000))) == 3000
    assert store.count_workloads("routers") == {("routers", None, "initializing"): 3000}
    removed = store.remove_workloads("routers", [f"w{i:05d}" for i in range(1000, 3000)] + ["nobody"])
    assert len(removed) == 2000 and removed[0].name == "w01000"
    assert store.count_workloads() == {("routers", None, "initializing"): 1000}


def test_adding_workloads_that_exist_leaves_them_and_says_which_were_added(store: Store) -> None:
    store.add_workloads(workloads(2))
    assert store.add_workloads(workloads(3)) == ["w00002"]


def test_workloads_are_listed_by_name_a_page_after_another(store: Store) -> None:
    store.add_workloads(workloads(25))
    first = store.list_workloads("routers", limit=10)
    second = store.list_workloads("routers", after=first[-1].name, limit=10)
    third = store.list_workloads("routers", after=second[-1].name, limit=10)
    assert [w.name for w in first + second + third] == [f"w{i:05d}" for i in range(25)]


def test_workloads_are_filtered_by_state_label_and_host(store: Store) -> None:
    store.add_workloads(workloads(3, site="lund") + [Workload("routers", "x1", labels={"site": "oslo"})])
    store.claim_workloads("routers", ["w00000", "x1"], "h1", now=100.0, until=110.0)
    up = store.get_workload("routers", "w00000")
    assert store.save_workload(Workload(**{**up.__dict__, "state": S.UP}))
    assert [w.name for w in store.list_workloads("routers", labels={"site": "lund"})] == ["w00000", "w00001", "w00002"]
    assert [w.name for w in store.list_workloads("routers", host="h1")] == ["w00000", "x1"]
    assert [w.name for w in store.list_workloads("routers", state=S.UP)] == ["w00000"]
    assert [w.name for w in store.list_workloads("routers", state=S.UP, labels={"site": "oslo"})] == []


def test_a_workload_is_saved_only_at_the_version_read(store: Store) -> None:
    store.add_workloads(workloads(1))
    read = store.get_workload("routers", "w00000")
    changed = Workload(**{**read.__dict__, "state": S.UNREACHABLE, "failed_pings": 1, "message": "timed out"})
    assert store.save_workload(changed)
    assert not store.save_workload(changed)
    stored = store.get_workload("routers", "w00000")
    assert (stored.state, stored.failed_pings, stored.message, stored.version) == (S.UNREACHABLE, 1, "timed out", 2)
    assert stored.config == {"latency": 0}


def test_unassigned_workloads_and_those_of_a_lapsed_lease_are_claimed_once(store: Store) -> None:
    store.add_workloads(workloads(4))
    assert names(store.unassigned_workloads("routers", now=100.0, limit=10)) == ["w00000", "w00001", "w00002", "w00003"]
    assert store.claim_workloads("routers", ["w00000", "w00001"], "h1", now=100.0, until=110.0) == ["w00000", "w00001"]
    assert store.claim_workloads("routers", ["w00001", "w00002"], "h2", now=100.0, until=110.0) == ["w00002"]
    assert names(store.unassigned_workloads("routers", now=105.0, limit=10)) == ["w00003"]
    assert store.renew_workloads("h1", 120.0) == 2
    # h2 stopped renewing: past its lease, its workload is unassigned again, and h1 may take it.
    lapsed = store.unassigned_workloads("routers", now=115.0, limit=10)
    assert [(w.name, w.host) for w in lapsed] == [("w00002", "h2"), ("w00003", None)]
    assert store.claim_workloads("routers", ["w00002"], "h1", now=115.0, until=125.0) == ["w00002"]
    assert store.get_workload("routers", "w00002").host == "h1"


def test_a_move_claims_only_what_the_source_still_holds(store: Store) -> None:
    store.add_workloads(workloads(2))
    store.claim_workloads("routers", ["w00000", "w00001"], "h1", now=100.0, until=110.0)
    assert store.claim_workloads("routers", ["w00000"], "h2", now=100.0, until=110.0) == []
    assert store.claim_workloads("routers", ["w00000"], "h2", now=100.0, until=110.0, source="h1") == ["w00000"]
    assert store.claim_workloads("routers", ["w00000"], "h3", now=100.0, until=110.0, source="h1") == []
    counts = store.count_workloads("routers")
    assert counts == {("routers", "h1", "initializing"): 1, ("routers", "h2", "initializing"): 1}


def test_a_workload_claimed_is_initializing_again_for_its_new_host(store: Store) -> None:
    store.add_workloads(workloads(1))
    store.claim_workloads("routers", ["w00000"], "h1", now=100.0, until=110.0)
    read = store.get_workload("routers", "w00000")
    store.save_workload(Workload(**{**read.__dict__, "state": S.UNREACHABLE, "failed_pings": 2}))
    store.claim_workloads("routers", ["w00000"], "h2", now=105.0, until=115.0, source="h1")
    moved = store.get_workload("routers", "w00000")
    assert (moved.state, moved.failed_pings, moved.since, moved.host) == (S.INITIALIZING, 0, 105.0, "h2")


def test_a_claim_bumps_the_version_so_a_stale_save_fails(store: Store) -> None:
    store.add_workloads(workloads(1))
    read = store.get_workload("routers", "w00000")
    store.claim_workloads("routers", ["w00000"], "h1", now=100.0, until=110.0)
    assert not store.save_workload(read)


def test_hosts_record_their_lease(store: Store) -> None:
    store.heartbeat(Host("h2", 110.0, 100.0))
    store.heartbeat(Host("h1", 110.0, 100.0))
    store.heartbeat(Host("h1", 120.0, 115.0))
    assert store.list_hosts() == [Host("h1", 120.0, 100.0), Host("h2", 110.0, 100.0)]


def test_hosts_whose_lease_lapsed_long_ago_are_forgotten(store: Store) -> None:
    store.heartbeat(Host("h1", 100.0, 50.0))
    store.heartbeat(Host("h2", 200.0, 50.0))
    assert store.forget_hosts(lapsed_before=150.0) == 1
    assert [h.name for h in store.list_hosts()] == ["h2"]


def test_a_lease_has_one_holder_until_it_lapses(store: Store) -> None:
    assert store.acquire_lease("assigner", "h1", now=100.0, until=110.0)
    assert not store.acquire_lease("assigner", "h2", now=105.0, until=115.0)
    assert store.acquire_lease("assigner", "h1", now=105.0, until=115.0)
    assert store.acquire_lease("assigner", "h2", now=116.0, until=126.0)
    assert not store.acquire_lease("assigner", "h1", now=117.0, until=127.0)


def test_lifecycle_events_are_listed_per_fleet_and_per_workload_newest_first(store: Store) -> None:
    store.add_lifecycle_events(
        [
            LifecycleEvent("routers", "w1", Lifecycle.ADDED, 100.0),
            LifecycleEvent("routers", "w2", Lifecycle.ADDED, 100.0),
            LifecycleEvent("routers", "w1", Lifecycle.INITIALIZED, 101.0, "h1"),
            LifecycleEvent("switches", "w1", Lifecycle.ADDED, 102.0),
        ]
    )
    store.add_lifecycle_events([LifecycleEvent("routers", "w1", Lifecycle.UNREACHABLE, 103.0, "h1", "timed out")])
    fleet_events = store.list_lifecycle_events("routers")
    assert [(e.workload, e.kind) for e in fleet_events] == [
        ("w1", Lifecycle.UNREACHABLE),
        ("w1", Lifecycle.INITIALIZED),
        ("w2", Lifecycle.ADDED),
        ("w1", Lifecycle.ADDED),
    ]
    assert fleet_events[0] == LifecycleEvent("routers", "w1", Lifecycle.UNREACHABLE, 103.0, "h1", "timed out")
    assert [e.kind for e in store.list_lifecycle_events("routers", "w1", limit=2)] == [
        Lifecycle.UNREACHABLE,
        Lifecycle.INITIALIZED,
    ]


def test_lifecycle_events_are_listed_by_the_time_of_their_change_not_the_order_they_were_recorded_in(
    store: Store,
) -> None:
    # A host records an init after writing it; the move another host made meanwhile may be recorded first.
    store.add_lifecycle_events([LifecycleEvent("routers", "w1", Lifecycle.MOVED, 101.0, "h2", "from h1 to h2")])
    store.add_lifecycle_events([LifecycleEvent("routers", "w1", Lifecycle.INITIALIZED, 100.5, "h1")])
    store.add_lifecycle_events([LifecycleEvent("routers", "w1", Lifecycle.INITIALIZED, 101.5, "h2")])

    for listed in (store.list_lifecycle_events("routers"), store.list_lifecycle_events("routers", "w1")):
        assert [(e.kind, e.host) for e in listed] == [
            (Lifecycle.INITIALIZED, "h2"),
            (Lifecycle.MOVED, "h2"),
            (Lifecycle.INITIALIZED, "h1"),
        ]


TASK_RUNS = ("fleet_task_runs", "fleet_task_items")
"""Where an older version kept the ad hoc task runs of fleets, which are gone."""


def test_sqlite_drops_the_tables_of_task_runs_an_older_version_made_and_starts(tmp_path: Path) -> None:
    path = tmp_path / "machinery.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE fleet_task_runs (id TEXT PRIMARY KEY, fleet TEXT, created_at REAL, doc TEXT)")
        db.execute("CREATE TABLE fleet_task_items (run_id TEXT, workload TEXT, fleet TEXT, status TEXT, doc TEXT)")
        db.execute("CREATE INDEX fleet_task_items_to_run ON fleet_task_items (fleet, workload, status)")
        db.execute("INSERT INTO fleet_task_runs VALUES ('run1', 'routers', 1.0, '{}')")
    db.close()

    reopened = SqliteStore(path)
    reopened.add_fleet(fleet())

    found = {row[0] for row in reopened._db().execute("SELECT name FROM sqlite_master")}
    assert not found & {*TASK_RUNS, "fleet_task_items_to_run"}
    assert reopened.get_fleet("routers").tasks == (REBOOT,)
    reopened.close()


def test_mongo_drops_the_collections_of_task_runs_an_older_version_made(mongo_database: Database[Any]) -> None:
    for name in TASK_RUNS:
        mongo_database[name].insert_one({"_id": "run1/w1", "fleet": "routers"})

    MongoStore(mongo_database).add_fleet(fleet())

    assert not set(mongo_database.list_collection_names()) & set(TASK_RUNS)
