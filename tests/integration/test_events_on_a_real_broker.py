"""Events through real worker processes on a real broker, and what happens when parts fail."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from machinery.api import create_app
from machinery.bootstrap import Machinery
from machinery.engine.model import Field, HttpEndpoint, Service, Workflow, linear_steps
from machinery.engine.retry import RetryPolicy
from machinery.engine.state import EventStatus, StepStatus
from machinery.engine.types import FieldType
from tests.integration.conftest import WorkerProcess
from tests.support import ScriptedService, finished, slow, wait_for

pytestmark = pytest.mark.integration

SEED_EVENT = {"message": "The Sun will rise in the morning !"}
STRING = FieldType("string")


def register_echo_chain(
    machinery: Machinery, url: str, *, timeout: float = 5.0, attempts: int = 3, output: str = "message"
) -> None:
    """A workflow of one service at ``url`` taking and giving a string ``message``."""
    machinery.registry.add_service(
        Service(
            name="echo",
            endpoint=HttpEndpoint(url),
            inputs=(Field("message", STRING),),
            outputs=(Field(output, STRING),),
            timeout=timeout,
            retry=RetryPolicy(attempts=attempts, backoff=0.1, max_delay=0.5),
        )
    )
    machinery.registry.add_workflow(
        Workflow(
            name="echo-chain",
            steps=linear_steps(["echo"]),
            inputs=(Field("message", STRING),),
            outputs=(Field(output, STRING),),
        )
    )


def echo(payload: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"message": payload["message"]}


def test_the_seed_example_event_completes_through_worker_processes(
    machinery: Machinery, example_services: dict[str, Service], start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    event, created = machinery.events.submit("process-text", SEED_EVENT)

    done = finished(machinery.events, event.id)

    assert created
    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT", "space_count": 7}
    assert [s.status for s in done.steps.values()] == [StepStatus.COMPLETED] * 3
    assert done.steps["space-counter"].inputs == {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT"}


def test_many_events_complete_and_each_step_is_called_once(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = ScriptedService([echo]).start()
    register_echo_chain(machinery, service.url)
    start_worker(concurrency=4)

    ids = [machinery.events.submit("echo-chain", {"message": f"m{i}"})[0].id for i in range(50)]

    results = [finished(machinery.events, event_id) for event_id in ids]
    assert {e.status for e in results} == {EventStatus.COMPLETED}
    assert sorted(call["message"] for call in service.calls) == sorted(f"m{i}" for i in range(50))
    service.stop()


def test_a_service_that_is_down_then_up_is_retried_until_the_event_completes(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = ScriptedService([echo])
    register_echo_chain(machinery, service.url, attempts=20)
    start_worker()
    event, _ = machinery.events.submit("echo-chain", {"message": "hello"})

    wait_for(lambda: machinery.events.get(event.id).steps["echo"].attempts >= 2, what="a failed attempt")
    service.start()
    done = finished(machinery.events, event.id)

    assert done.status is EventStatus.COMPLETED
    assert done.outputs == {"message": "hello"}
    step = done.steps["echo"]
    assert step.history and all(h["error"]["kind"] == "connection" for h in step.history)
    assert len(service.calls) == 1
    service.stop()


def test_a_service_answering_500_then_200_is_retried_and_completes(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = ScriptedService([(500, {"message": "busy"}), echo]).start()
    register_echo_chain(machinery, service.url)
    start_worker()

    done = finished(machinery.events, machinery.events.submit("echo-chain", {"message": "hi"})[0].id)

    assert done.status is EventStatus.COMPLETED
    step = done.steps["echo"]
    assert step.attempts == 2
    assert step.history[0]["error"]["status_code"] == 500
    service.stop()


def test_a_service_answering_the_wrong_type_fails_the_event_with_a_clear_error(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = ScriptedService([(200, {"message": 42})]).start()
    register_echo_chain(machinery, service.url)
    start_worker()

    done = finished(machinery.events, machinery.events.submit("echo-chain", {"message": "hi"})[0].id)

    assert done.status is EventStatus.FAILED
    assert done.steps["echo"].attempts == 1
    message = done.error["message"]
    assert "echo" in message and "'message'" in message and "string" in message and "int" in message
    service.stop()


def test_a_service_hanging_past_its_timeout_is_retried(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = ScriptedService([slow(2.0, echo), echo]).start()
    register_echo_chain(machinery, service.url, timeout=0.5)
    start_worker()

    done = finished(machinery.events, machinery.events.submit("echo-chain", {"message": "hi"})[0].id)

    assert done.status is EventStatus.COMPLETED
    assert done.steps["echo"].history[0]["error"]["kind"] == "timeout"
    assert done.steps["echo"].attempts == 2
    service.stop()


def test_a_worker_killed_in_the_middle_of_a_step_does_not_lose_the_event(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    first_call_hangs = ScriptedService([slow(30.0, echo), echo]).start()
    register_echo_chain(machinery, first_call_hangs.url, timeout=3.0)
    worker = start_worker()
    event, _ = machinery.events.submit("echo-chain", {"message": "survive"})
    wait_for(lambda: first_call_hangs.calls, what="the first call to start")

    worker.kill(signal.SIGKILL)
    start_worker()
    done = finished(machinery.events, event.id)

    assert done.status is EventStatus.COMPLETED
    assert done.outputs == {"message": "survive"}
    step = done.steps["echo"]
    assert step.attempts == 2
    assert step.lost == 1
    assert [h["error"]["kind"] for h in step.history] == ["lost"]
    assert len(first_call_hangs.calls) == 2
    first_call_hangs.stop()


def test_events_are_not_lost_when_the_broker_restarts_mid_run(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess], broker_url: str
) -> None:
    service = ScriptedService([slow(0.1, echo)]).start()
    register_echo_chain(machinery, service.url)
    start_worker()
    ids = [machinery.events.submit("echo-chain", {"message": f"before {i}"})[0].id for i in range(30)]
    wait_for(lambda: service.calls, what="the first events to start")

    (restart_redis if broker_url.startswith("redis") else restart_rabbitmq)()
    ids += [machinery.events.submit("echo-chain", {"message": f"after {i}"})[0].id for i in range(5)]

    results = [finished(machinery.events, event_id, timeout=60) for event_id in ids]
    assert {e.status for e in results} == {EventStatus.COMPLETED}
    assert len({call["message"] for call in service.calls}) == 35
    service.stop()


def restart_rabbitmq() -> None:
    """Stop and start the machine's RabbitMQ application: connections drop, durable queues stay."""
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True, timeout=60)


def restart_redis() -> None:
    """Restart the machine's Redis, which keeps nothing on disk: every queued message is gone."""
    subprocess.run(["redis-cli", "shutdown", "nosave"], check=False, capture_output=True)
    subprocess.run(
        [
            "redis-server",
            "--daemonize", "yes",
            "--bind", "127.0.0.1", "-::1",
            "--port", "6379",
            "--save", "",
            "--appendonly", "no",
            "--dir", "/var/lib/redis",
            "--logfile", "/var/log/redis/ci.log",
        ],
        check=True,
    )  # fmt: skip
    wait_for(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True).stdout.strip() == b"PONG", timeout=20)


def test_the_api_is_ready_once_it_reaches_the_real_broker(machinery: Machinery) -> None:
    response = create_app(machinery, {"TESTING": True}).test_client().get("/readiness")

    assert (response.status_code, response.json) == (200, {"store": "ok", "broker": "ok"})
