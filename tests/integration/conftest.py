"""Real parts: a Redis or RabbitMQ broker, `machinery worker` processes, HTTP services on loopback.

Without a broker these tests skip on a laptop; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from examples.services import DEFINITIONS, EXAMPLES, JsonService
from machinery.bootstrap import Config, Machinery
from machinery.engine.model import HttpEndpoint, Service
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.support import free_port, reachable

BROKERS = {
    "redis": ("redis://127.0.0.1:6379/15", 6379),
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}
# Short timings so that lost workers, lost messages and services going down are noticed within seconds.
FAST_RECOVERY = {
    "MACHINERY_SWEEP_INTERVAL": "0.3",
    "MACHINERY_STALE_AFTER": "2",
    "MACHINERY_LEASE_GRACE": "0.5",
    "MACHINERY_HEALTH_INTERVAL": "0.3",
    "MACHINERY_HEALTH_DOWN_AFTER": "1",
}


def require_broker(name: str) -> str:
    url, port = BROKERS[name]
    if not reachable("127.0.0.1", port):
        message = f"{name} is not running on 127.0.0.1:{port}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the integration tests")
        pytest.skip(message)
    return url


@pytest.fixture(params=sorted(BROKERS))
def broker_url(request: pytest.FixtureRequest) -> str:
    return require_broker(request.param)


@pytest.fixture
def redis_url() -> str:
    return require_broker("redis")


@pytest.fixture
def env(tmp_path: Path, broker_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "MACHINERY_DATA_DIR": str(tmp_path / "data"),
        "MACHINERY_BROKER_URL": broker_url,
        **FAST_RECOVERY,
    }


@pytest.fixture
def machinery(env: dict[str, str]) -> Iterator[Machinery]:
    """The API side: registers definitions and sends events; its workers are separate processes."""
    machinery = Machinery(Config.from_env(env))
    machinery.celery.control.purge()
    yield machinery
    machinery.stop()


class WorkerProcess:
    """A `machinery worker` process (prefork: a main process and its children, one process group)."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 2, options: tuple[str, ...] = ()) -> None:
        self.log = log.open("ab")
        command = [sys.executable, "-m", "machinery", "worker", "-c", str(concurrency), "--loglevel", "WARNING"]
        command += options
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(15)

    def close(self) -> None:
        self.kill(signal.SIGTERM)
        self.log.close()


@pytest.fixture
def start_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(concurrency: int = 2, options: tuple[str, ...] = ()) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / "worker.log", concurrency, options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def example_services(machinery: Machinery) -> Iterator[dict[str, Service]]:
    """The three example services on free ports, registered with the example workflow."""
    servers = []
    registered = {}
    for name, (_, handle) in EXAMPLES.items():
        server = JsonService("127.0.0.1", free_port(), handle).start()
        servers.append(server)
        service = ServiceSchema().load(json.loads((DEFINITIONS / f"service-{name}.json").read_text()))
        service = replace(service, endpoint=HttpEndpoint(server.url))
        registered[name] = machinery.registry.add_service(service)
    workflow = WorkflowSchema().load(json.loads((DEFINITIONS / "workflow-process-text.json").read_text()))
    machinery.registry.add_workflow(workflow)
    yield registered
    for server in servers:
        server.stop()
