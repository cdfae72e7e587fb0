"""Hosts of fleets in one process, on one SQLite store: assignment, health, spread and take-over."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from machinery.bootstrap import Config, Machinery
from machinery.engine.errors import InvalidConfig, InvalidDefinition
from machinery.engine.fleets import Fleet, FleetSettings, Host, Lifecycle, Workload, WorkloadState
from machinery.fleets.drivers import DriverContext, DriverError, SimulatedDriver
from machinery.fleets.host import FleetHost
from machinery.store.sqlite import SqliteStore
from machinery.telemetry import PrometheusTelemetry
from tests.support import wait_for

SETTINGS = FleetSettings(ping_interval=0.2, ping_jitter=0.1, dead_after=3, dead_cooldown=0.3, max_spread=2)
FAILING: set[str] = set()
"""The workloads whose pings and inits fail, for the driver of these tests."""
HANGING: set[str] = set()
"""The workloads whose pings never end while ``RELEASE`` is not set, whatever the timeout."""
RELEASE = threading.Event()


class Flaky(SimulatedDriver):
    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self.stopped: list[str] = []

    def init(self, workload: Workload) -> None:
        if workload.name in FAILING:
            raise DriverError("no route to host")

    def ping(self, workload: Workload) -> None:
        if workload.name in HANGING:
            RELEASE.wait(30)
        if workload.name in FAILING:
            raise DriverError("timed out")

    def stop(self, workload: Workload) -> None:
        self.stopped.append(workload.name)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "machinery.db")
    store.add_fleet(Fleet("routers", "flaky", SETTINGS))
    FAILING.clear()
    HANGING.clear()
    RELEASE.clear()
    yield store
    RELEASE.set()
    store.close()


@pytest.fixture
def hosts(store: SqliteStore) -> Iterator[list[FleetHost]]:
    started: list[FleetHost] = []
    yield started
    for host in started:
        host.stop()


def start(store: SqliteStore, hosts: list[FleetHost], name: str) -> FleetHost:
    host = FleetHost(store, name, interval=0.05, lease=0.4, drivers=lambda _: Flaky)
    host.start()
    hosts.append(host)
    return host


def add(store: SqliteStore, count: int) -> None:
    store.add_workloads([Workload("routers", f"r{i:03d}") for i in range(count)])


def by_host(store: SqliteStore, state: str = "up") -> Mapping[str | None, int]:
    counts: dict[str | None, int] = {}
    for (_, host, in_state), count in store.count_workloads("routers").items():
        if in_state == state:
            counts[host] = counts.get(host, 0) + count
    return counts


def history(store: SqliteStore, workload: str) -> list[Lifecycle]:
    """The kinds of a workload's lifecycle events, oldest first."""
    return [e.kind for e in reversed(store.list_lifecycle_events("routers", workload))]


def all_up(store: SqliteStore, count: int, hosts: set[str]) -> Any:
    loads = by_host(store)
    return loads if sum(loads.values()) == count and set(loads) == hosts else None


def test_workloads_are_spread_over_the_hosts_and_initialized_once_each(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    start(store, hosts, "a"), start(store, hosts, "b")
    add(store, 40)
    loads = wait_for(lambda: all_up(store, 40, {"a", "b"}), timeout=10, what="every workload up")
    assert abs(loads["a"] - loads["b"]) <= SETTINGS.max_spread
    # A state is written just before its event: the last events may trail the states by a moment.
    events = wait_for(
        lambda: (
            (found := store.list_lifecycle_events("routers", limit=1000))
            and len({e.workload for e in found if e.kind is Lifecycle.INITIALIZED}) == 40
            and found
        ),
        timeout=5,
    )
    assert sorted(e.workload for e in events if e.kind is Lifecycle.INITIALIZED) == [f"r{i:03d}" for i in range(40)]
    assert {e.kind for e in events} <= {Lifecycle.INITIALIZED, Lifecycle.MOVED}


def test_a_host_that_joins_takes_workloads_until_the_spread_is_within_the_bound(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    start(store, hosts, "a")
    add(store, 30)
    wait_for(lambda: all_up(store, 30, {"a"}), timeout=10)
    start(store, hosts, "b")
    loads = wait_for(
        lambda: (loads := all_up(store, 30, {"a", "b"})) and abs(loads["a"] - loads["b"]) <= 2 and loads,
        timeout=10,
        what="the spread within the bound",
    )
    assert loads["b"] >= 14
    moved = [e for e in store.list_lifecycle_events("routers", limit=1000) if e.kind is Lifecycle.MOVED]
    assert len(moved) == loads["b"] and all(e.message == "from a to b" for e in moved)


def test_the_workloads_of_a_host_that_stops_renewing_are_taken_over(store: SqliteStore, hosts: list[FleetHost]) -> None:
    a, _ = start(store, hosts, "a"), start(store, hosts, "b")
    add(store, 20)
    wait_for(lambda: all_up(store, 20, {"a", "b"}), timeout=10)
    hosts.remove(a)
    a.stop()
    wait_for(lambda: all_up(store, 20, {"b"}), timeout=10, what="b holding every workload")
    assert all(w.host == "b" for w in store.list_workloads("routers", limit=100))


def test_a_workload_whose_pings_fail_is_unreachable_then_dead_then_up_again(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    start(store, hosts, "a")
    add(store, 2)
    wait_for(lambda: all_up(store, 2, {"a"}), timeout=10)
    FAILING.add("r001")

    def state() -> WorkloadState:
        return store.get_workload("routers", "r001").state

    wait_for(lambda: state() is WorkloadState.DEAD, timeout=10, what="r001 dead")
    assert store.get_workload("routers", "r001").message == "timed out"
    FAILING.clear()
    wait_for(lambda: state() is WorkloadState.UP, timeout=10, what="r001 up again")
    kinds = wait_for(lambda: (found := history(store, "r001")) and found[-1] is Lifecycle.UP and found, timeout=5)
    assert kinds == [Lifecycle.INITIALIZED, Lifecycle.UNREACHABLE, Lifecycle.DEAD, Lifecycle.UP]
    assert store.get_workload("routers", "r000").state is WorkloadState.UP


def test_a_ping_the_driver_never_ends_counts_as_failed_and_its_late_answer_is_dropped(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    store.replace_fleet(Fleet("routers", "flaky", replace(SETTINGS, ping_timeout=0.1)), version=1)
    start(store, hosts, "a")
    add(store, 2)
    wait_for(lambda: all_up(store, 2, {"a"}), timeout=10)
    HANGING.add("r001")
    wait_for(lambda: store.get_workload("routers", "r001").state is WorkloadState.UNREACHABLE, timeout=10)
    assert store.get_workload("routers", "r001").message == "ping did not end within 0.1 s"
    HANGING.clear()
    RELEASE.set()  # the hung ping returns now, succeeding: too late to count; the next ping brings it up
    wait_for(lambda: store.get_workload("routers", "r001").state is WorkloadState.UP, timeout=10)
    kinds = wait_for(lambda: (found := history(store, "r001")) and found[-1] is Lifecycle.UP and found, timeout=5)
    assert kinds[:2] == [Lifecycle.INITIALIZED, Lifecycle.UNREACHABLE]
    assert store.get_workload("routers", "r000").state is WorkloadState.UP


def test_a_workload_whose_init_fails_says_so_once_and_is_up_once_it_answers(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    FAILING.add("r000")
    start(store, hosts, "a")
    add(store, 1)
    wait_for(lambda: store.list_lifecycle_events("routers", "r000"), timeout=10)
    FAILING.clear()
    wait_for(lambda: store.get_workload("routers", "r000").state is WorkloadState.UP, timeout=10)
    up = (Lifecycle.INITIALIZED, Lifecycle.UP)
    kinds = wait_for(lambda: (found := history(store, "r000")) and found[-1] in up and found, timeout=5)
    assert kinds[0] is Lifecycle.INIT_FAILED
    assert kinds.count(Lifecycle.INIT_FAILED) == 1


def test_removed_workloads_are_stopped_by_their_host(store: SqliteStore, hosts: list[FleetHost]) -> None:
    host = start(store, hosts, "a")
    add(store, 3)
    wait_for(lambda: all_up(store, 3, {"a"}), timeout=10)
    store.remove_workloads("routers", ["r001"])
    driver = host._fleets["routers"].driver
    assert isinstance(driver, Flaky)
    wait_for(lambda: "r001" in driver.stopped, timeout=10, what="r001 stopped")


def test_the_fleet_settings_are_read_from_the_environment_and_a_lease_outlasts_a_round() -> None:
    config = Config.from_env(
        {"MACHINERY_FLEET_INTERVAL": "0.5", "MACHINERY_FLEET_LEASE": "3", "MACHINERY_FLEET_THREADS": "4"}
    )
    assert (config.fleet_interval, config.fleet_lease, config.fleet_threads) == (0.5, 3.0, 4)
    with pytest.raises(InvalidConfig, match="MACHINERY_FLEET_LEASE should be longer"):
        Config.from_env({"MACHINERY_FLEET_INTERVAL": "5", "MACHINERY_FLEET_LEASE": "5"})


def test_a_machinery_hosts_fleets_under_the_name_it_is_given(tmp_path: Path) -> None:
    machinery = Machinery(Config(data_dir=tmp_path, fleet_interval=0.05, fleet_lease=1.0))
    try:
        machinery.start_fleet_host("h1")
        wait_for(lambda: machinery.fleets.hosts(), timeout=5)
        assert [(h.name, h.alive) for h in machinery.fleets.hosts()] == [("h1", True)]
    finally:
        machinery.stop()


def test_every_ping_is_timed_for_the_metrics_with_its_outcome(store: SqliteStore, hosts: list[FleetHost]) -> None:
    telemetry = PrometheusTelemetry()
    host = FleetHost(store, "a", interval=0.05, lease=0.4, drivers=lambda _: Flaky, on_ping=telemetry.ping_done)
    host.start()
    hosts.append(host)
    add(store, 2)
    registry = CollectorRegistry()
    telemetry.register(registry)

    def count(outcome: str) -> float:
        labels = {"fleet": "routers", "host": "a", "outcome": outcome}
        return registry.get_sample_value("machinery_fleet_ping_duration_seconds_count", labels) or 0

    wait_for(lambda: count("up") >= 2, timeout=10, what="two pings answered")
    assert count("failed") == 0
    FAILING.add("r001")
    wait_for(lambda: count("failed") >= 1, timeout=10, what="a ping failed")


def test_a_fleet_whose_driver_cannot_be_made_does_not_stop_the_others(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    store.add_fleet(Fleet("switches", "gone", SETTINGS))
    store.add_workloads([Workload("switches", "s1")])

    def drivers(name: str) -> type[Flaky]:
        if name == "gone":
            raise InvalidDefinition("no driver 'gone'")
        return Flaky

    host = FleetHost(store, "a", interval=0.05, lease=0.4, drivers=drivers)
    host.start()
    hosts.append(host)
    add(store, 3)
    wait_for(lambda: all_up(store, 3, {"a"}), timeout=10, what="the routers up")
    assert store.get_workload("switches", "s1").state is WorkloadState.INITIALIZING


def test_the_assigner_leaves_a_late_renewed_workload_with_its_host_while_that_host_is_alive(
    store: SqliteStore,
) -> None:
    add(store, 2)
    now = 1000.0
    for host in ("a", "b"):
        store.heartbeat(Host(host, now + 10))
    store.claim_workloads("routers", ["r000"], "a", now=now - 20, until=now - 1)  # a was late to renew it
    store.claim_workloads("routers", ["r001"], "gone", now=now - 20, until=now - 1)  # its host is gone
    before = store.get_workload("routers", "r000")

    FleetHost(store, "b", interval=0.05, lease=0.4, drivers=lambda _: Flaky).assign(store.list_fleets(), now)

    assert store.get_workload("routers", "r000") == before, "not claimed again, so not initialised again"
    assert store.get_workload("routers", "r001").host in ("a", "b")


def test_a_page_of_workloads_read_before_the_hosts_own_last_write_does_not_start_a_second_init(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    add(store, 1)
    host = FleetHost(store, "a", interval=0.05, lease=0.4, drivers=lambda _: Flaky)
    hosts.append(host)
    host.tick()  # claims r000 for itself and initialises it
    up = wait_for(
        lambda: (w := store.get_workload("routers", "r000")).state is WorkloadState.UP and w, timeout=5, what="r000 up"
    )
    # The page a round read just before the init's write: claimed, not yet up.
    stale = replace(up, state=WorkloadState.INITIALIZING, version=up.version - 1)
    store.list_workloads = lambda fleet, **filters: [] if filters.get("after") else [stale]  # type: ignore[method-assign]

    host.sync(store.list_fleets())

    del store.list_workloads
    with pytest.raises(AssertionError):
        wait_for(lambda: history(store, "r000").count(Lifecycle.INITIALIZED) > 1, timeout=0.5)
    assert history(store, "r000") == [Lifecycle.INITIALIZED]


class Sessions(SimulatedDriver):
    """A driver that holds a session per workload it initialised: a ping of any other fails."""

    made: list[Sessions] = []

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self.sessions: set[str] = set()
        self.stopped: list[str] = []
        Sessions.made.append(self)

    def init(self, workload: Workload) -> None:
        self.sessions.add(workload.name)

    def ping(self, workload: Workload) -> None:
        if workload.name not in self.sessions:
            raise DriverError("no session")

    def stop(self, workload: Workload) -> None:
        self.sessions.discard(workload.name)
        self.stopped.append(workload.name)


def test_a_replaced_fleets_workloads_are_initialised_again_by_its_new_driver_and_stopped_on_the_old(
    store: SqliteStore, hosts: list[FleetHost]
) -> None:
    Sessions.made.clear()
    host = FleetHost(store, "a", interval=0.05, lease=0.4, drivers=lambda _: Sessions)
    host.start()
    hosts.append(host)
    add(store, 3)
    wait_for(lambda: all_up(store, 3, {"a"}), timeout=5, what="every workload up")

    fleet = store.get_fleet("routers")
    store.replace_fleet(replace(fleet, settings=replace(SETTINGS, ping_interval=0.1)), version=fleet.version)

    wait_for(lambda: len(Sessions.made) == 2 and len(Sessions.made[1].sessions) == 3, timeout=5, what="new sessions")
    old, _ = Sessions.made
    assert sorted(old.stopped) == ["r000", "r001", "r002"]
    with pytest.raises(AssertionError):  # pinged by the new driver all along: never unreachable
        wait_for(lambda: any(Lifecycle.UNREACHABLE in history(store, f"r00{i}") for i in range(3)), timeout=0.5)
