"""Callback services through a real worker process on Redis and the API over HTTP: the service answers 202,
then posts its result to the callback URL it was given, from a thread of its own."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from machinery.api import create_app
from machinery.bootstrap import Machinery
from machinery.engine.state import EventStatus, StepStatus
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.integration.conftest import WorkerProcess
from tests.support import CallbackService, finished, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]

TEXT = [{"name": "message", "type": "string"}]


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def env(env: dict[str, str], api_port: int) -> dict[str, str]:
    return {**env, "MACHINERY_PUBLIC_URL": f"http://127.0.0.1:{api_port}"}


@pytest.fixture
def api(machinery: Machinery, api_port: int) -> Iterator[str]:
    """The API over HTTP on loopback, where the callbacks come."""
    server = make_server("127.0.0.1", api_port, create_app(machinery), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{api_port}"
    server.shutdown()


def register(machinery: Machinery, url: str, **options: Any) -> None:
    machinery.registry.add_service(
        ServiceSchema().load(
            {"name": "slow", "address": url, "inputs": TEXT, "outputs": TEXT, "mode": "callback", **options}
        )
    )
    machinery.registry.add_workflow(
        WorkflowSchema().load({"name": "later", "inputs": TEXT, "outputs": TEXT, "services": ["slow"]})
    )


def test_a_callback_service_completes_its_step_by_posting_to_the_api_from_another_thread(
    machinery: Machinery, api: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    answers: list[requests.Response] = []

    def answer(url: str, payload: dict[str, Any]) -> None:
        answers.append(requests.post(f"{url}/heartbeat", timeout=5))
        answers.append(requests.post(url, json={"outputs": {"message": payload["message"].upper()}}, timeout=5))

    service = CallbackService(answer)
    register(machinery, service.url, heartbeat=30)
    start_worker()

    done = finished(machinery.events, machinery.events.submit("later", {"message": "hi"})[0].id, timeout=60)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"message": "HI"}
    assert service.callbacks[0].startswith(f"{api}/callbacks/")
    assert [r.status_code for r in answers] == [204, 200]
    assert answers[1].json() == {"event_id": done.id, "step": "slow", "status": "completed"}
    repeated = requests.post(service.callbacks[0], json={"outputs": {"message": "AGAIN"}}, timeout=5)
    assert repeated.status_code == 409
    forged = requests.post(f"{api}/callbacks/{service.callbacks[0][-12:]}x", json={"outputs": {}}, timeout=5)
    assert forged.status_code == 404
    service.stop()


def test_a_callback_after_the_timeout_is_refused_and_the_services_retry_policy_applies(
    machinery: Machinery, api: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = CallbackService(lambda url, payload: None)  # never calls back by itself
    register(machinery, service.url, callback_timeout=1.0, retry={"attempts": 2, "backoff": 0.1})
    start_worker()
    event_id = machinery.events.submit("later", {"message": "hi"})[0].id

    wait_for(lambda: len(service.callbacks) >= 2, timeout=30, what="the second attempt, once the first timed out")
    late = requests.post(service.callbacks[0], json={"outputs": {"message": "LATE"}}, timeout=5)
    assert late.status_code == 404
    done = finished(machinery.events, event_id, timeout=30)

    assert done.status is EventStatus.FAILED
    assert done.steps["slow"].status is StepStatus.FAILED
    assert done.error["message"] == (
        "step 'slow' failed: service 'slow' sent no callback within 1 s (gave up after 2 attempts)"
    )
    service.stop()
