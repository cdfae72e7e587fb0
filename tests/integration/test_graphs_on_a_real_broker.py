"""Graph workflows through real worker processes on Redis: branches, routes, timers, signals, fan-out."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from machinery.bootstrap import Machinery
from machinery.engine.errors import InvalidState
from machinery.engine.state import EventStatus, StepStatus
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.integration.conftest import WorkerProcess
from tests.support import ScriptedService, finished, free_port, slow, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]

TEXT = [{"name": "message", "type": "string"}]


def register(machinery: Machinery, services: dict[str, str], workflow: dict[str, Any]) -> None:
    """Register services (name -> address) taking and giving a string ``message``, then the workflow."""
    for name, address in services.items():
        machinery.registry.add_service(
            ServiceSchema().load({"name": name, "address": address, "inputs": TEXT, "outputs": TEXT})
        )
    machinery.registry.add_workflow(WorkflowSchema().load(workflow))


def echo(payload: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"message": payload["message"]}


class InFlight:
    """A service's handler that answers with ``answer`` after ``seconds``, counting the calls under way at once."""

    def __init__(self, seconds: float, answer: Callable[[dict[str, Any]], tuple[int, Any]]) -> None:
        self.seconds = seconds
        self.answer = answer
        self.now = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, payload: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(self.seconds)
        with self._lock:
            self.now -= 1
        return self.answer(payload)


def test_parallel_branches_run_at_the_same_time(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    left, right = ScriptedService([slow(0.5, echo)]).start(), ScriptedService([slow(0.5, echo)]).start()
    register(
        machinery,
        {"left": left.url, "right": right.url},
        {
            "name": "fork",
            "inputs": TEXT,
            "steps": [
                {"id": "left", "service": "left", "output": {"message": "from_left"}},
                {"id": "right", "service": "right", "output": {"message": "from_right"}},
            ],
        },
    )
    start_worker(concurrency=2)

    done = finished(machinery.events, machinery.events.submit("fork", {"message": "hi"})[0].id)

    assert done.status is EventStatus.COMPLETED
    a, b = done.steps["left"], done.steps["right"]
    assert a.started_at is not None and b.started_at is not None and a.ended_at and b.ended_at
    assert max(a.started_at, b.started_at) < min(a.ended_at, b.ended_at), "the branches did not overlap"
    for service in (left, right):
        service.stop()


def test_a_switch_takes_each_of_its_routes(machinery: Machinery, start_worker: Callable[..., WorkerProcess]) -> None:
    loud, quiet = (
        ScriptedService([lambda p: (200, {"message": p["message"].upper()})]).start(),
        ScriptedService([echo]).start(),
    )
    register(
        machinery,
        {"loud": loud.url, "quiet": quiet.url},
        {
            "name": "route",
            "inputs": TEXT,
            "outputs": TEXT,
            "steps": [
                {
                    "id": "pick",
                    "kind": "switch",
                    "expression": "input.message.endsWith('!')",
                    "cases": {"true": ["loud"]},
                    "default": ["quiet"],
                },
                {"id": "loud", "service": "loud"},
                {"id": "quiet", "service": "quiet"},
            ],
        },
    )
    start_worker()

    shout = finished(machinery.events, machinery.events.submit("route", {"message": "hey!"})[0].id)
    whisper = finished(machinery.events, machinery.events.submit("route", {"message": "hey"})[0].id)

    assert (shout.outputs, shout.steps["pick"].route) == ({"message": "HEY!"}, "true")
    assert (shout.steps["loud"].status, shout.steps["quiet"].status) == (StepStatus.COMPLETED, StepStatus.SKIPPED)
    assert (whisper.outputs, whisper.steps["pick"].route) == ({"message": "hey"}, "default")
    assert (whisper.steps["loud"].status, whisper.steps["quiet"].status) == (StepStatus.SKIPPED, StepStatus.COMPLETED)
    for service in (loud, quiet):
        service.stop()


def test_a_delay_survives_a_worker_restart(machinery: Machinery, start_worker: Callable[..., WorkerProcess]) -> None:
    after = ScriptedService([echo]).start()
    register(
        machinery,
        {"after": after.url},
        {
            "name": "later",
            "inputs": TEXT,
            "steps": [
                {"id": "pause", "kind": "delay", "seconds": 2},
                {"id": "after", "service": "after", "after": ["pause"]},
            ],
        },
    )
    worker = start_worker()
    event, _ = machinery.events.submit("later", {"message": "tick"})
    time.sleep(0.3)  # the worker has taken the countdown message, and holds it until it is due

    worker.kill(signal.SIGKILL)
    start_worker()
    done = finished(machinery.events, event.id)

    assert done.status is EventStatus.COMPLETED
    pause = done.steps["pause"]
    assert pause.ended_at is not None and pause.started_at is not None
    assert pause.ended_at - pause.started_at >= 2
    assert len(after.calls) == 1
    after.stop()


def approval(timeout: float) -> dict[str, Any]:
    return {
        "name": "approval",
        "inputs": TEXT,
        "outputs": [{"name": "verdict", "type": "string"}],
        "steps": [
            {
                "id": "review",
                "kind": "wait",
                "signal": "reviewed",
                "timeout": timeout,
                "on_timeout": ["expire"],
                "outputs": [{"name": "verdict", "type": "string"}],
            },
            {
                "id": "expire",
                "kind": "transform",
                "compute": {"verdict": "'expired'"},
                "outputs": [{"name": "verdict", "type": "string"}],
            },
        ],
    }


def test_a_wait_survives_a_worker_restart_and_takes_the_signal(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    register(machinery, {}, approval(timeout=60))
    worker = start_worker()
    event, _ = machinery.events.submit("approval", {"message": "doc"})
    assert event.status is EventStatus.WAITING

    worker.kill(signal.SIGKILL)
    start_worker()
    machinery.events.signal(event.id, "reviewed", {"verdict": "approved"})
    done = finished(machinery.events, event.id)

    assert (done.status, done.outputs) == (EventStatus.COMPLETED, {"verdict": "approved"})
    assert done.steps["expire"].status is StepStatus.SKIPPED


def test_a_signal_before_the_timeout_wins_and_one_after_it_is_refused(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    register(machinery, {}, approval(timeout=1.0))
    start_worker()
    early, _ = machinery.events.submit("approval", {"message": "on time"})
    late, _ = machinery.events.submit("approval", {"message": "too late"})

    machinery.events.signal(early.id, "reviewed", {"verdict": "approved"})
    expired = finished(machinery.events, late.id)

    assert finished(machinery.events, early.id).outputs == {"verdict": "approved"}
    assert (expired.status, expired.outputs) == (EventStatus.COMPLETED, {"verdict": "expired"})
    assert expired.steps["review"].route == "timeout"
    with pytest.raises(InvalidState):
        machinery.events.signal(late.id, "reviewed", {"verdict": "approved"})


def test_a_map_of_1000_items_completes_in_order_within_its_concurrency_limit(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    limit = 4
    in_flight = InFlight(0.002, lambda payload: (200, {"message": payload["message"].upper()}))
    service = ScriptedService([in_flight]).start()
    register(
        machinery,
        {"upper": service.url},
        {
            "name": "each",
            "inputs": [{"name": "words", "type": "array", "items": "string"}],
            "outputs": [{"name": "results", "type": "array", "items": "object"}],
            "steps": [
                {"id": "each", "kind": "map", "service": "upper", "items": "$.input.words", "item": "message",
                 "concurrency": limit}
            ],
        },
    )  # fmt: skip
    start_worker(concurrency=4)
    words = [f"w{i}" for i in range(1000)]

    done = finished(machinery.events, machinery.events.submit("each", {"words": words})[0].id, timeout=240)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"results": [{"message": w.upper()} for w in words]}
    assert len(service.calls) == 1000
    assert 1 < in_flight.most <= limit
    service.stop()


def test_a_paused_event_finishes_the_call_under_way_and_starts_nothing_more_until_it_is_resumed(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    first, second = ScriptedService([slow(0.5, echo)]).start(), ScriptedService([echo]).start()
    register(
        machinery,
        {"first": first.url, "second": second.url},
        {"name": "two", "inputs": TEXT, "outputs": TEXT, "services": ["first", "second"]},
    )
    start_worker(concurrency=2)
    event_id = machinery.events.submit("two", {"message": "hi"})[0].id
    wait_for(lambda: first.calls, what="the first call to start")

    machinery.events.pause(event_id)
    paused = wait_for(
        lambda: (e := machinery.events.get(event_id)).steps["first"].status is StepStatus.COMPLETED and e,
        what="the first call to be recorded",
    )

    # The worker that recorded the first call would have claimed the second in the same write.
    assert paused.status is EventStatus.PAUSED
    assert paused.steps["second"].status is StepStatus.READY
    machinery.events.resume(event_id)
    done = finished(machinery.events, event_id)
    assert (done.status, done.outputs) == (EventStatus.COMPLETED, {"message": "hi"})
    assert (len(first.calls), len(second.calls)) == (1, 1)
    first.stop()
    second.stop()


def test_a_service_limited_to_two_calls_at_once_gets_at_most_two_over_every_event_and_worker(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    in_flight = InFlight(0.05, echo)
    service = ScriptedService([in_flight]).start()
    machinery.registry.add_service(
        ServiceSchema().load(
            {"name": "narrow", "address": service.url, "inputs": TEXT, "outputs": TEXT, "concurrency": 2}
        )
    )
    machinery.registry.add_workflow(WorkflowSchema().load({"name": "one", "inputs": TEXT, "services": ["narrow"]}))
    machinery.registry.add_workflow(
        WorkflowSchema().load(
            {"name": "many", "inputs": [{"name": "words", "type": "array", "items": "string"}],
             "steps": [{"id": "each", "kind": "map", "service": "narrow", "items": "$.input.words", "item": "message",
                        "concurrency": 4}]}
        )
    )  # fmt: skip
    start_worker(concurrency=6)

    ids = [machinery.events.submit("one", {"message": f"m{i}"})[0].id for i in range(12)]
    ids.append(machinery.events.submit("many", {"words": [f"w{i}" for i in range(12)]})[0].id)

    assert {finished(machinery.events, event_id).status for event_id in ids} == {EventStatus.COMPLETED}
    assert len(service.calls) == 24
    assert in_flight.most == 2
    service.stop()


def test_an_event_waiting_past_its_workflows_timeout_is_failed_by_the_sweeper(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    machinery.registry.add_workflow(
        WorkflowSchema().load({"name": "bounded", "timeout": 1, "steps": [{"id": "w", "kind": "wait", "signal": "go"}]})
    )
    start_worker()
    event = machinery.events.submit("bounded", {})[0]
    assert event.status is EventStatus.WAITING

    done = finished(machinery.events, event.id, timeout=10)

    assert (done.status, done.error["kind"]) == (EventStatus.FAILED, "timeout")
    assert done.updated_at >= event.deadline


def test_calls_to_a_service_found_down_wait_for_it_to_be_up_instead_of_using_up_their_retries(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    machinery.registry.add_service(
        ServiceSchema().load(
            {"name": "late", "address": f"{address}/event", "healthcheck": f"{address}/healthcheck",
             "inputs": TEXT, "outputs": TEXT, "retry": {"attempts": 2, "backoff": 0.05}}
        )
    )  # fmt: skip
    machinery.registry.add_workflow(WorkflowSchema().load({"name": "wait-up", "inputs": TEXT, "services": ["late"]}))
    start_worker()
    wait_for(lambda: machinery.store.health().get("late", None), what="a first probe")
    assert machinery.store.health()["late"].status == "down"

    event = machinery.events.submit("wait-up", {"message": "hi"})[0]
    wait_for(lambda: machinery.store.statistics(time.time()).slots.get("late") == (0, 1), what="the call to be held")
    assert machinery.events.get(event.id).steps["late"].attempts == 0
    service = ScriptedService([echo], port=port).start()

    done = finished(machinery.events, event.id)

    assert done.status is EventStatus.COMPLETED
    assert (done.steps["late"].attempts, len(service.calls)) == (1, 1)
    service.stop()


def test_an_ended_event_is_posted_once_to_its_workflows_notify_url_and_retried_until_it_goes_through(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    echoing = ScriptedService([echo]).start()
    receiver = ScriptedService([(503, {"busy": True}), (200, {"ok": True})]).start()
    register(
        machinery,
        {"echo": echoing.url},
        {"name": "told", "inputs": TEXT, "outputs": TEXT, "services": ["echo"], "notify": receiver.url},
    )
    start_worker()
    event = machinery.events.submit("told", {"message": "hi"})[0]

    notified = wait_for(
        lambda: (
            (e := machinery.events.get(event.id)).notification is not None
            and e.notification.status is StepStatus.COMPLETED
            and e
        ),
        what="the notification to be delivered",
    )

    assert notified.status is EventStatus.COMPLETED
    assert notified.notification.attempts == 2
    assert [(call["event_id"], call["status"], call["outputs"]) for call in receiver.calls] == [
        (event.id, "completed", {"message": "hi"})
    ] * 2
    echoing.stop()
    receiver.stop()
