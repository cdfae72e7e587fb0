"""Fleet steps through the runtime: the workloads a selector matches, each item sent to the queue of the host
holding its workload and run by that host's runner, skipped when not up, retried under the task's policy, sent
on to the new host when its workload moved, and the results gathered by workload."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import mongomock
import pytest

from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.errors import InvalidDefinition
from machinery.engine.fleets import Fleet, FleetTask, Workload, WorkloadState
from machinery.engine.kinds.fleet import TASK
from machinery.engine.model import FLEET, Ref, Step
from machinery.engine.ports import Store
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import Event, EventStatus, StepStatus
from machinery.registry import Registry
from machinery.runtime import Events, Plans, Runner, ServiceCache
from machinery.runtime.routes import FleetRoutes
from machinery.store.mongo import MongoStore
from machinery.store.sqlite import SqliteStore
from machinery.stubs import StubCaller, StubDispatcher
from tests.engine.builders import EXPRESSIONS, SETTINGS, fld, from_input, graph

ECHO = FleetTask(
    "echo",
    inputs=(fld("n:int"),),
    outputs=(fld("n:int"), fld("workload:string")),
    retry=RetryPolicy(attempts=2, backoff=1.0, jitter=False),
)
Answer = Callable[[str, Call], Any]
"""A host's answer to a call: the host's name and the call; outputs, or a CallFailure."""


def echo(host: str, call: Call) -> Any:
    return {"n": call.inputs["n"], "workload": call.target}


class Fleets:
    """A fleet ``agents`` of workloads held by hosts ``h1`` and ``h2``, a runner for the shared queue and one per
    host (its own queue, and its own caller of the fleet's tasks), on a store and a clock the tests move."""

    def __init__(self, store: Store) -> None:
        self.now = 1000.0
        self.store = store
        self.answer: Answer = echo
        self.calls: list[tuple[str, str | None]] = []
        store.add_fleet(Fleet("agents", "simulated", tasks=(ECHO,)))
        self.registry = Registry(store, EXPRESSIONS, fleets=store)
        plans = Plans(store, EXPRESSIONS)
        self.shared = StubDispatcher(self.clock)
        self.queues = {host: StubDispatcher(self.clock) for host in ("h1", "h2")}
        self.events = Events(store, store, self.shared, SETTINGS, plans, self.clock)

        def runner(here: str | None) -> Runner:
            callers = {TASK: StubCaller(lambda call: self._call(here or "", call))} if here else {}
            routes = FleetRoutes(store, self.queues.__getitem__, here)
            services = ServiceCache(store, clock=self.clock, fleets=store)
            return Runner(store, self.shared, callers, SETTINGS, plans, services, self.clock, routes=routes)

        self.runner = runner(None)
        self.hosts = {host: runner(host) for host in self.queues}

    def clock(self) -> float:
        return self.now

    def _call(self, host: str, call: Call) -> Any:
        self.calls.append((host, call.target))
        return self.answer(host, call)

    def workloads(self, held: dict[str, str | None], state: WorkloadState = WorkloadState.UP, **labels: str) -> None:
        """Add a workload per name of ``held``, held by the host given (None: by none), in ``state``."""
        self.store.add_workloads([Workload("agents", name, dict(labels)) for name in held])
        for name, host in held.items():
            if host is not None:
                self.store.claim_workloads("agents", [name], host, now=self.now, until=self.now + 10**6)
            self.set(name, state=state)

    def set(self, name: str, **changes: Any) -> None:
        workload = self.store.get_workload("agents", name)
        assert self.store.save_workload(replace(workload, **changes))

    def move(self, name: str, host: str) -> None:
        source = self.store.get_workload("agents", name).host
        self.store.claim_workloads("agents", [name], host, now=self.now, until=self.now + 10**6, source=source)
        self.set(name, state=WorkloadState.UP)

    def register(self, *, selector: dict[str, str] | Ref | None = None, **options: Any) -> None:
        fleet_step = Step(
            id="echo",
            kind=FLEET,
            fleet="agents",
            task="echo",
            selector=selector if selector is not None else {},
            input={"n": from_input("n")},
            **options,
        )
        inputs = ["n:int"] + (["site:object"] if isinstance(selector, Ref) else [])
        self.registry.add_workflow(graph([fleet_step], inputs=inputs, name="everywhere"))

    def send(self, **data: Any) -> str:
        return self.events.submit("everywhere", data)[0].id

    def run(self, event_id: str) -> Event:
        """Run every message due, on the shared queue and the hosts', until none is left; then the event."""
        while self.shared.drain(self.runner) + sum(q.drain(self.hosts[h]) for h, q in self.queues.items()):
            pass
        return self.events.get(event_id)

    def items(self, event_id: str) -> dict[str, tuple[str, Any]]:
        """Each item's workload, with its status and its outputs, error or note."""
        found = {}
        for item in self.store.list_items(event_id, "echo", limit=1000):
            state = item.state
            found[item.key or ""] = (state.status.value, state.outputs or state.error or state.note)
        return found


@pytest.fixture(params=["sqlite", "mongo"])
def fleets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleets]:
    """On each store: SQLite, and MongoDB through mongomock."""
    if request.param == "mongo":
        yield Fleets(MongoStore(mongomock.MongoClient().db))
        return
    store = SqliteStore(tmp_path / "machinery.db")
    yield Fleets(store)
    store.close()


def test_a_fleet_step_runs_its_task_once_on_each_up_workload_on_its_host_and_skips_the_others(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": "h2", "a3": "h1"}, site="x")
    fleets.workloads({"b1": "h2"}, WorkloadState.UNREACHABLE, site="x")
    fleets.set("b1", message="ping timed out")
    fleets.workloads({"c1": None}, WorkloadState.INITIALIZING, site="x")
    fleets.workloads({"z1": "h1"}, site="y")
    fleets.register(selector={"site": "x"}, concurrency=2)

    event = fleets.run(fleets.send(n=7))

    assert event.status is EventStatus.COMPLETED
    assert sorted(fleets.calls) == [("h1", "a1"), ("h1", "a3"), ("h2", "a2")]
    assert event.steps["echo"].outputs == {
        "results": {name: {"n": 7, "workload": name} for name in ("a1", "a2", "a3")},
        "skipped": [
            {"workload": "b1", "reason": "not up: unreachable (ping timed out)"},
            {"workload": "c1", "reason": "not up: initializing"},
        ],
        "failed": [],
    }
    assert event.outputs == {}


def test_no_more_items_run_at_once_than_the_steps_concurrency(fleets: Fleets):
    fleets.workloads({f"a{i}": "h1" for i in range(7)})
    fleets.register(concurrency=3)
    event_id = fleets.send(n=1)

    fleets.shared.drain(fleets.runner)

    statuses = [status for status, _ in fleets.items(event_id).values()]
    assert statuses.count("ready") == 3
    assert statuses.count("pending") == 4
    assert [m.unit for m in fleets.queues["h1"].queued] == ["echo[0]", "echo[1]", "echo[2]"]
    assert fleets.run(event_id).status is EventStatus.COMPLETED


def test_a_failing_workload_is_retried_under_the_tasks_policy_then_listed_as_failed(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": "h2", "a3": "h2"})
    fleets.register()
    flaky = {"a2": [CallFailure("busy", True)], "a3": [CallFailure("busy", True), CallFailure("busy again", True)]}
    fleets.answer = lambda host, call: flaky[call.target].pop(0) if flaky.get(call.target) else echo(host, call)
    event_id = fleets.send(n=2)

    fleets.run(event_id)
    fleets.now += 1.0
    event = fleets.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert sorted(event.steps["echo"].outputs["results"]) == ["a1", "a2"]
    assert event.steps["echo"].outputs["failed"] == [
        {"workload": "a3", "error": "busy again (gave up after 2 attempts)"}
    ]
    assert sorted(fleets.calls) == [("h1", "a1"), ("h2", "a2"), ("h2", "a2"), ("h2", "a3"), ("h2", "a3")]


def test_more_workloads_failed_than_max_failed_allows_fail_the_step(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": "h1", "a3": "h2"})
    fleets.register(max_failed=1)
    fleets.answer = lambda host, call: CallFailure("refused", False) if call.target != "a1" else echo(host, call)

    event = fleets.run(fleets.send(n=2))

    assert event.status is EventStatus.FAILED
    error = event.steps["echo"].error or {}
    assert error["message"] == "the task failed on 2 workloads, more than the 1 allowed (first a2: refused)"
    assert fleets.items(event.id)["a1"] == ("completed", {"n": 2, "workload": "a1"})


def test_a_result_outside_the_tasks_contract_fails_that_workload_naming_the_field(fleets: Fleets):
    fleets.workloads({"a1": "h1"})
    fleets.register()
    fleets.answer = lambda host, call: {"n": "seven", "workload": call.target}

    event = fleets.run(fleets.send(n=2))

    [failed] = event.steps["echo"].outputs["failed"]
    assert failed["workload"] == "a1"
    assert "'n'" in failed["error"] and "int" in failed["error"]


def test_a_workload_that_moved_is_run_on_its_new_host_without_using_up_its_retries(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": "h1"})
    fleets.register()

    def moving(host: str, call: Call) -> Any:
        if call.target == "a2" and host == "h1":
            fleets.move("a2", "h2")
            return CallFailure("workload 'a2' is not held by host h1 (any more)", True, ErrorKind.MOVED)
        return echo(host, call)

    fleets.answer = moving
    event_id = fleets.send(n=5)
    fleets.run(event_id)
    fleets.now += 1.0
    event = fleets.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert fleets.calls.count(("h2", "a2")) == 1
    assert event.steps["echo"].outputs["results"]["a2"] == {"n": 5, "workload": "a2"}
    item = next(i for i in fleets.store.list_items(event_id, "echo", limit=10) if i.key == "a2")
    assert (item.state.lost, item.state.budget_used - item.state.lost) == (1, 1)


def test_a_workload_removed_before_its_item_runs_is_listed_as_failed(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": "h1"})
    fleets.register(concurrency=1)
    event_id = fleets.send(n=1)
    fleets.shared.drain(fleets.runner)
    fleets.store.remove_workloads("agents", ["a2"])

    event = fleets.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.steps["echo"].outputs["failed"] == [
        {"workload": "a2", "error": "workload 'a2' was removed from its fleet"}
    ]
    assert fleets.calls == [("h1", "a1")]


def test_an_item_sent_to_the_shared_queue_is_passed_on_to_the_host_holding_its_workload(fleets: Fleets):
    fleets.workloads({"a1": "h2"})
    fleets.register()
    event_id = fleets.send(n=1)
    fleets.shared.drain(fleets.runner)
    fleets.queues["h2"].drop()

    fleets.shared.dispatch(event_id, "echo[0]")
    fleets.shared.drain(fleets.runner)

    assert [m.unit for m in fleets.queues["h2"].queued] == ["echo[0]"]
    assert fleets.run(event_id).status is EventStatus.COMPLETED


def test_the_selector_may_come_from_the_event_and_must_be_an_object_of_strings(fleets: Fleets):
    fleets.workloads({"a1": "h1"}, site="x")
    fleets.workloads({"b1": "h1"}, site="y")
    fleets.register(selector=from_input("site"))

    done = fleets.run(fleets.send(n=1, site={"site": "y"}))
    wrong = fleets.run(fleets.send(n=1, site={"site": 3}))

    assert list(done.steps["echo"].outputs["results"]) == ["b1"]
    assert wrong.status is EventStatus.FAILED
    assert "needs an object of labels (strings) as its selector" in (wrong.steps["echo"].error or {})["message"]


def test_a_step_matching_no_workload_completes_with_nothing(fleets: Fleets):
    fleets.register(selector={"site": "nowhere"})

    event = fleets.run(fleets.send(n=1))

    assert event.status is EventStatus.COMPLETED
    assert event.steps["echo"].outputs == {"results": {}, "skipped": [], "failed": []}


def test_a_workflow_running_an_unknown_task_or_giving_it_the_wrong_types_is_refused(fleets: Fleets):
    unknown = Step(id="x", kind=FLEET, fleet="agents", task="reboot")
    wrong = Step(id="x", kind=FLEET, fleet="agents", task="echo", input={"n": from_input("n")})

    with pytest.raises(InvalidDefinition) as refused:
        fleets.registry.add_workflow(graph([unknown], name="unknown"))
    with pytest.raises(InvalidDefinition) as mistyped:
        fleets.registry.add_workflow(graph([wrong], inputs=["n:string"], name="mistyped"))

    assert "task 'reboot' of fleet 'agents', which is not registered" in str(refused.value.problems)
    assert "expects int" in str(mistyped.value.problems)


def test_the_step_state_of_a_fleet_step_counts_its_workloads(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": None}, site="x")
    fleets.register()

    event = fleets.run(fleets.send(n=1))

    assert event.steps["echo"].fanout == 2
    assert event.steps["echo"].status is StepStatus.COMPLETED


def test_a_retried_event_runs_its_failed_workloads_again_and_the_step_completes(fleets: Fleets):
    fleets.workloads({"a1": "h1", "a2": "h1", "a3": "h2"})
    fleets.register(max_failed=0, concurrency=2)
    broken = {"a2"}
    fleets.answer = lambda host, call: CallFailure("refused", False) if call.target in broken else echo(host, call)
    failed = fleets.run(fleets.send(n=4))
    assert failed.status is EventStatus.FAILED

    broken.clear()
    fleets.events.retry(failed.id)
    event = fleets.run(failed.id)

    assert event.status is EventStatus.COMPLETED
    assert sorted(event.steps["echo"].outputs["results"]) == ["a1", "a2", "a3"]
    assert sorted(fleets.calls) == [("h1", "a1"), ("h1", "a2"), ("h1", "a2"), ("h2", "a3")]
