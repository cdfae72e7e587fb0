"""Command services through real worker processes: only workers started with --commands run them, safely."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from examples.services import DEFINITIONS
from machinery.bootstrap import Machinery
from machinery.engine.model import Service
from machinery.engine.state import EventStatus, StepStatus
from machinery.validation import ExecutableSchema, ServiceSchema, WorkflowSchema
from tests.integration.conftest import WorkerProcess
from tests.support import finished, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
COMMANDS = DEFINITIONS / "commands"
WITH_COMMANDS = ("--commands",)


@pytest.fixture
def env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The workers run this worktree's code, and may run the programs in ``tmp_path/bin`` and ``/usr/bin``."""
    (tmp_path / "bin").mkdir()
    return {**env, "MACHINERY_COMMANDS_ALLOWED": f"{tmp_path / 'bin'}:/usr/bin", "PYTHONPATH": str(ROOT)}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((COMMANDS / name).read_text()))


def script(machinery: Machinery, tmp_path: Path, body: str, **service: Any) -> Path:
    """Register the shell script ``body`` as executable and service ``job``, in a workflow ``job`` of one step;
    the script's environment holds ``OUT``, a directory it may write in."""
    program = tmp_path / "bin" / "job.sh"
    program.write_text(f"#!/bin/sh\n{body}\n")
    program.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    machinery.registry.add_executable(ExecutableSchema().load({"name": "job", "path": str(program)}))
    doc = {"name": "job", "kind": "command", "executable": "job", "environment": {"OUT": str(out)}} | service
    machinery.registry.add_service(ServiceSchema().load(doc))
    machinery.registry.add_workflow(WorkflowSchema().load({"name": "job", "services": ["job"]}))
    return out


def runs(out: Path) -> int:
    runs = out / "runs"
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def test_a_command_step_completes_between_two_http_services(
    machinery: Machinery, example_services: dict[str, Service], start_worker: Callable[..., WorkerProcess]
) -> None:
    machinery.registry.add_executable(ExecutableSchema().load(load("executable-sort.json")))
    machinery.registry.add_service(ServiceSchema().load(load("service-sort-lines.json")))
    machinery.registry.add_workflow(WorkflowSchema().load(load("workflow-sort-text.json")))
    start_worker(options=WITH_COMMANDS)

    event, _ = machinery.events.submit("sort-text", load("event-lines.json")["data"])
    done = finished(machinery.events, event.id)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"sorted": "2 APPLES\n3 FIGS\n1 PEARS\n", "space_count": 3}
    assert done.steps["sort"].outputs == {"stdout": "2 APPLES\n3 FIGS\n1 PEARS\n", "exit_code": 0}


def test_a_worker_without_commands_never_runs_one_and_says_the_step_waits_for_one(
    machinery: Machinery, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    out = script(machinery, tmp_path, 'echo run >> "$OUT/runs"', outputs=[{"name": "exit_code", "type": "int"}])
    plain = start_worker()
    event, _ = machinery.events.submit("job", {})

    waiting = wait_for(
        lambda: (step := machinery.events.get(event.id).steps["job"]).error and step, what="the note on the step"
    )
    time.sleep(2)

    assert waiting.status is StepStatus.READY
    assert waiting.error is not None and waiting.error["kind"] == "worker"
    assert "machinery worker --commands" in waiting.error["message"]
    assert runs(out) == 0
    assert machinery.events.get(event.id).steps["job"].attempts == 0

    plain.close()  # one worker at a time: on RabbitMQ two would share one hostname
    start_worker(options=WITH_COMMANDS)
    done = finished(machinery.events, event.id)
    assert done.status is EventStatus.COMPLETED, done.error
    assert done.steps["job"].error is None
    assert runs(out) == 1


def test_a_timeout_kills_the_whole_process_group_and_leaves_no_orphan(
    machinery: Machinery, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    body = '/bin/sleep 60 &\necho $! >> "$OUT/pids"\necho $$ >> "$OUT/pids"\n/bin/sleep 60'
    out = script(machinery, tmp_path, body, timeout=1, retry={"attempts": 1})
    start_worker(options=WITH_COMMANDS)

    done = finished(machinery.events, machinery.events.submit("job", {})[0].id)

    assert done.status is EventStatus.FAILED
    assert done.steps["job"].error is not None and done.steps["job"].error["kind"] == "timeout"
    pids = [int(pid) for pid in (out / "pids").read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=5, what="the script and its child to be gone")


def test_a_transient_exit_code_is_retried_until_the_command_succeeds(
    machinery: Machinery, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    body = "\n".join(
        ['echo run >> "$OUT/runs"', '[ "$(/usr/bin/wc -l < "$OUT/runs")" -ge 2 ] && echo done && exit 0']
        + ["echo busy >&2", "exit 75"]
    )
    service = {
        "transient_exit_codes": [75],
        "retry": {"attempts": 3, "backoff": 0.1},
        "outputs": [{"name": "stdout", "type": "string"}],
    }
    out = script(machinery, tmp_path, body, **service)
    start_worker(options=WITH_COMMANDS)

    done = finished(machinery.events, machinery.events.submit("job", {})[0].id)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.steps["job"].outputs == {"stdout": "done\n"}
    step = done.steps["job"]
    assert step.attempts == 2 and runs(out) == 2
    assert step.history[0]["error"] | {"message": ""} == {
        "kind": "exit",
        "message": "",
        "transient": True,
        "exit_code": 75,
        "stderr": "busy\n",
    }


def test_a_non_idempotent_command_whose_worker_is_killed_fails_and_is_not_run_again(
    machinery: Machinery, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    out = script(machinery, tmp_path, 'echo run >> "$OUT/runs"\n/bin/sleep 30', idempotent=False, timeout=3)
    worker = start_worker(options=WITH_COMMANDS)
    event, _ = machinery.events.submit("job", {})
    wait_for(lambda: runs(out) == 1, what="the command to start")

    worker.kill(signal.SIGKILL)
    start_worker(options=WITH_COMMANDS)
    done = finished(machinery.events, event.id)
    time.sleep(1)

    assert done.status is EventStatus.FAILED
    error = done.steps["job"].error
    assert error is not None and error["kind"] == "lost"
    assert "not idempotent" in error["message"]
    assert done.steps["job"].attempts == 1
    assert runs(out) == 1


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
