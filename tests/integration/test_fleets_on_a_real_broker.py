"""Fleets hosted by real `machinery worker --fleets` processes on Redis: spread, a host joining, a host
SIGKILLed, a workload going unreachable, dead and up again, each change recorded once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machinery.bootstrap import Machinery
from machinery.engine.fleets import Fleet, FleetSettings, Lifecycle, Workload, WorkloadState
from tests.devices import Device
from tests.integration.conftest import WorkerProcess
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]

ROOT = Path(__file__).parents[2]
PING = 1.0
SPREAD = 2
SETTINGS = FleetSettings(
    ping_interval=PING, ping_jitter=0.1, ping_timeout=0.5, dead_after=2, dead_cooldown=0.5, max_spread=SPREAD
)


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The workers run this checkout's code; their rounds and leases are short so that a lost host is seen at once."""
    return {**env, "PYTHONPATH": str(ROOT), "MACHINERY_FLEET_INTERVAL": "0.1", "MACHINERY_FLEET_LEASE": "0.6"}


@pytest.fixture
def fleet(machinery: Machinery) -> Fleet:
    return machinery.store.add_fleet(Fleet("devices", "simulated", SETTINGS))


@pytest.fixture
def device() -> Iterator[Device]:
    device = Device()
    yield device
    device.stop()


def host(start_worker: Callable[..., WorkerProcess], name: str) -> WorkerProcess:
    return start_worker(1, ("--fleets", "--host-name", name))


def up_by_host(machinery: Machinery, count: int) -> dict[str, int] | None:
    """The workloads by host once every one of ``count`` is up, else None."""
    loads: dict[str, int] = {}
    for (_, holder, state), n in machinery.store.count_workloads("devices").items():
        if state != WorkloadState.UP or holder is None:
            return None
        loads[holder] = loads.get(holder, 0) + n
    return loads if sum(loads.values()) == count else None


def spread_within(machinery: Machinery, count: int, hosts: set[str]) -> dict[str, int] | None:
    loads = up_by_host(machinery, count)
    if loads is None or set(loads) != hosts or max(loads.values()) - min(loads.values()) > SPREAD:
        return None
    return loads


def test_workloads_spread_a_host_joins_and_a_host_killed_is_taken_over(
    machinery: Machinery, fleet: Fleet, start_worker: Callable[..., WorkerProcess]
) -> None:
    host(start_worker, "a"), host(start_worker, "b")
    machinery.store.add_workloads([Workload("devices", f"d{i:03d}") for i in range(60)])

    wait_for(lambda: spread_within(machinery, 60, {"a", "b"}), timeout=30, what="60 workloads up over a and b")

    c = host(start_worker, "c")
    loads = wait_for(lambda: spread_within(machinery, 60, {"a", "b", "c"}), timeout=30, what="the spread over a, b, c")
    assert loads["c"] >= 60 // 3 - SPREAD

    c.kill()
    killed = time.monotonic()
    wait_for(lambda: spread_within(machinery, 60, {"a", "b"}), timeout=30, what="c's workloads up on a and b")
    assert time.monotonic() - killed < 2 * PING, "a killed host's workloads are up elsewhere within two pings"

    events = machinery.store.list_lifecycle_events("devices", limit=10_000)
    moved = [e for e in events if e.kind is Lifecycle.MOVED]
    taken_over = [e for e in moved if e.message in ("from c to a", "from c to b")]
    assert len(taken_over) >= loads["c"]
    # Each workload is initialised once per host it was given, never twice there: a change is recorded once.
    history: dict[str, list[Lifecycle]] = {}
    for event in reversed(events):
        history.setdefault(event.workload, []).append(event.kind)
    assert len(history) == 60
    for kinds in history.values():
        assert kinds[0] is Lifecycle.INITIALIZED or kinds[0] is Lifecycle.MOVED
        assert all(kinds[i : i + 2] != [Lifecycle.INITIALIZED] * 2 for i in range(len(kinds)))
    assert not [e for e in events if e.kind in (Lifecycle.UNREACHABLE, Lifecycle.DEAD)]


def test_a_workload_whose_pings_fail_is_unreachable_then_dead_and_up_again_when_it_answers(
    machinery: Machinery, fleet: Fleet, device: Device, start_worker: Callable[..., WorkerProcess]
) -> None:
    machinery.store.add_fleet(Fleet("agents", "http", SETTINGS))
    host(start_worker, "a")
    machinery.store.add_workloads([Workload("agents", "agent-1", config={"url": device.url})])

    def state() -> WorkloadState:
        return machinery.store.get_workload("agents", "agent-1").state

    wait_for(lambda: state() is WorkloadState.UP, timeout=30, what="agent-1 up")
    device.healthy = False
    wait_for(lambda: state() is WorkloadState.DEAD, timeout=30, what="agent-1 dead")
    assert "answered 503" in machinery.store.get_workload("agents", "agent-1").message
    time.sleep(2 * PING)  # dead: tried again after the cooldown, and still failing, nothing more is said
    device.healthy = True
    wait_for(lambda: state() is WorkloadState.UP, timeout=30, what="agent-1 up again")
    time.sleep(2 * PING)  # up: pinged, and nothing more is said

    kinds = [e.kind for e in reversed(machinery.store.list_lifecycle_events("agents", "agent-1"))]
    assert kinds == [Lifecycle.INITIALIZED, Lifecycle.UNREACHABLE, Lifecycle.DEAD, Lifecycle.UP]
    assert all(e.host == "a" for e in machinery.store.list_lifecycle_events("agents", "agent-1"))
