"""Fleet steps on real `machinery worker --fleets` processes, on Redis (and RabbitMQ): a workflow runs a fleet's
task once on every workload that is up, each on the host holding it, and skips the others; a host SIGKILLed
mid-task has its workloads' items run on the hosts that take them over."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from machinery.bootstrap import Machinery
from machinery.engine.fleets import Fleet, FleetSettings, FleetTask, Workload, WorkloadState
from machinery.engine.model import FLEET, Field, Ref, Step, Workflow
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import Event, EventStatus
from machinery.engine.types import FieldType
from tests.devices import Device
from tests.integration.conftest import WorkerProcess
from tests.support import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
SETTINGS = FleetSettings(ping_interval=1.0, ping_jitter=0.1, ping_timeout=0.5, dead_after=2, dead_cooldown=30)
ECHO = FleetTask(
    "echo",
    (Field("n", FieldType("int")),),
    (Field("n", FieldType("int")), Field("task", FieldType("string"))),
    timeout=2.0,
    retry=RetryPolicy(attempts=3, backoff=0.2, jitter=False),
)


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The workers run this checkout's code; their rounds and leases are short so that a lost host is seen at once."""
    return {**env, "PYTHONPATH": str(ROOT), "MACHINERY_FLEET_INTERVAL": "0.1", "MACHINERY_FLEET_LEASE": "0.6"}


@pytest.fixture
def device() -> Iterator[Device]:
    device = Device()
    yield device
    device.stop()


@pytest.fixture
def agents(machinery: Machinery, device: Device) -> list[str]:
    """A fleet of 30 agents on the device and one whose address answers nothing, and a workflow ``everywhere``
    running ``echo`` on each agent whose ``site`` is ``paris``, four at once; the names of the 30."""
    machinery.fleets.add_fleet(Fleet("agents", "http", SETTINGS, (ECHO,)))
    names = [f"agent-{i:02d}" for i in range(30)]
    agents = [Workload("agents", name, {"site": "paris"}, {"url": f"{device.url}/{name}"}) for name in names]
    dead = Workload("agents", "agent-99", {"site": "paris"}, {"url": "http://127.0.0.1:9/"})
    elsewhere = Workload("agents", "agent-lyon", {"site": "lyon"}, {"url": f"{device.url}/agent-lyon"})
    machinery.fleets.add_workloads("agents", [*agents, dead, elsewhere])
    step = Step(
        id="echo",
        kind=FLEET,
        fleet="agents",
        task="echo",
        selector={"site": "paris"},
        input={"n": Ref("input", ("n",))},
        concurrency=4,
    )
    machinery.registry.add_workflow(Workflow("everywhere", (step,), inputs=(Field("n", FieldType("int")),)))
    return names


def host(start_worker: Callable[..., WorkerProcess], name: str) -> WorkerProcess:
    return start_worker(2, ("--fleets", "--host-name", name))


def up(machinery: Machinery, hosts: set[str]) -> bool:
    """Whether every agent is up, spread over all of ``hosts``, and agent-99 dead."""
    workloads = machinery.store.list_workloads("agents", limit=100)
    alive = [w for w in workloads if w.name != "agent-99"]
    return (
        all(w.state is WorkloadState.UP for w in alive)
        and {w.host for w in alive} == hosts
        and machinery.store.get_workload("agents", "agent-99").state is WorkloadState.DEAD
    )


def ended(machinery: Machinery, event_id: str) -> Event | None:
    event = machinery.events.get(event_id)
    return event if event.status.terminal else None


@pytest.mark.parametrize("broker_url", ["redis", "rabbitmq"], indirect=True)
def test_a_fleet_step_runs_the_task_once_on_every_up_workload_and_skips_the_others(
    machinery: Machinery, device: Device, agents: list[str], start_worker: Callable[..., WorkerProcess]
) -> None:
    host(start_worker, "a"), host(start_worker, "b")
    wait_for(lambda: up(machinery, {"a", "b"}), timeout=30, what="the agents up over a and b, agent-99 dead")

    event, _ = machinery.events.submit("everywhere", {"n": 7})
    done = wait_for(lambda: ended(machinery, event.id), timeout=60, what="the event ended")

    assert done.status is EventStatus.COMPLETED
    outputs = done.steps["echo"].outputs or {}
    assert outputs["results"] == {name: {"n": 7, "task": "echo"} for name in agents}
    [skipped] = outputs["skipped"]
    assert skipped["workload"] == "agent-99"
    assert skipped["reason"].startswith("not up: dead (GET http://127.0.0.1:9/ping failed")
    assert outputs["failed"] == []
    assert Counter(device.tasks) == Counter(f"/{name}/tasks/echo" for name in agents)


@pytest.mark.parametrize("broker_url", ["redis"], indirect=True)
def test_the_items_of_a_host_killed_mid_task_run_on_the_hosts_that_take_its_workloads_over(
    machinery: Machinery, device: Device, agents: list[str], start_worker: Callable[..., WorkerProcess]
) -> None:
    a, _ = host(start_worker, "a"), host(start_worker, "b")
    wait_for(lambda: up(machinery, {"a", "b"}), timeout=30, what="the agents up over a and b, agent-99 dead")
    held_by_a = {w.name for w in machinery.store.list_workloads("agents", host="a", limit=100)}
    device.task_seconds = 0.3

    event, _ = machinery.events.submit("everywhere", {"n": 1})
    wait_for(lambda: len(device.tasks) >= 4, timeout=30, what="some tasks done")
    a.kill()
    done = wait_for(lambda: ended(machinery, event.id), timeout=90, what="the event ended")

    assert done.status is EventStatus.COMPLETED
    outputs = done.steps["echo"].outputs or {}
    assert sorted(outputs["results"]) == agents
    assert outputs["failed"] == []
    ran = Counter(path.split("/")[1] for path in device.tasks)
    assert set(ran) == set(agents)
    # Only a task cut by the kill runs twice: at most one per thread of the killed host's lanes.
    assert sum(n - 1 for n in ran.values()) <= 4
    assert held_by_a & set(ran)
