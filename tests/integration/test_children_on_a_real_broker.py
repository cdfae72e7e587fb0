"""Child workflows through real worker processes on Redis: a child's outputs, a failed child retried, a cancel."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from examples.services import DEFINITIONS
from machinery.bootstrap import Machinery
from machinery.engine.model import Service
from machinery.engine.state import Event, EventStatus, StepStatus
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.integration.conftest import WorkerProcess
from tests.support import ScriptedService, finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]

TEXT = [{"name": "message", "type": "string"}]
ROOT = Path(__file__).parents[2]


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The workers run this checkout's code, wherever the package is installed from."""
    return {**env, "PYTHONPATH": str(ROOT)}


def children(machinery: Machinery, event_id: str) -> list[Event]:
    return machinery.store.list_events(workflow_id=None, status=None, offset=0, limit=10, parent=event_id).items


def runs(name: str, child: str) -> dict[str, Any]:
    """A workflow ``name`` running ``child`` on its ``message``, and answering what the child answered."""
    return {
        "name": name,
        "inputs": TEXT,
        "outputs": TEXT,
        "steps": [{"id": "kid", "kind": "workflow", "workflow": child}],
    }


def test_a_parent_completes_with_the_outputs_of_its_child(
    machinery: Machinery, example_services: dict[str, Service], start_worker: Callable[..., WorkerProcess]
) -> None:
    summary = json.loads((DEFINITIONS / "workflow-shout-summary.json").read_text())
    machinery.registry.add_workflow(WorkflowSchema().load(summary))
    start_worker(concurrency=2)

    done = finished(machinery.events, machinery.events.submit("shout-summary", {"headline": "a big day"})[0].id)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"message": "YAD GIB A", "spaces": 2}
    [child] = children(machinery, done.id)
    assert child.workflow_name == "process-text"
    assert child.status is EventStatus.COMPLETED
    assert child.parent == {"event": done.id, "step": "process", "depth": 1}
    assert done.steps["process"].child == child.id


def test_a_failed_child_fails_its_parent_and_a_retry_of_the_parent_completes_it(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    flaky = ScriptedService([(400, {"message": "not now"}), (200, {"message": "now"})]).start()
    machinery.registry.add_service(
        ServiceSchema().load({"name": "flaky", "address": flaky.url, "inputs": TEXT, "outputs": TEXT})
    )
    machinery.registry.add_workflow(
        WorkflowSchema().load({"name": "fragile", "inputs": TEXT, "outputs": TEXT, "services": ["flaky"]})
    )
    machinery.registry.add_workflow(WorkflowSchema().load(runs("parent", "fragile")))
    start_worker(concurrency=2)

    failed = finished(machinery.events, machinery.events.submit("parent", {"message": "hi"})[0].id)

    assert failed.status is EventStatus.FAILED
    [child] = children(machinery, failed.id)
    assert child.status is EventStatus.FAILED
    error = failed.steps["kid"].error or {}
    assert error["child"] == child.id and f"child event '{child.id}' (fragile) failed" in error["message"]

    machinery.events.retry(failed.id)
    done = finished(machinery.events, failed.id)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"message": "now"}
    assert [c.id for c in children(machinery, done.id)] == [child.id], "the same child, retried"
    assert machinery.events.get(child.id).status is EventStatus.COMPLETED
    flaky.stop()


def test_cancelling_a_parent_cancels_its_running_child(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    machinery.registry.add_workflow(
        WorkflowSchema().load(
            {
                "name": "patient",
                "inputs": TEXT,
                "outputs": TEXT,
                "steps": [{"id": "hold", "kind": "wait", "signal": "go", "outputs": TEXT}],
            }
        )
    )
    machinery.registry.add_workflow(WorkflowSchema().load(runs("parent", "patient")))
    start_worker(concurrency=2)
    event_id = machinery.events.submit("parent", {"message": "hi"})[0].id

    child = wait_for(
        lambda: next((c for c in children(machinery, event_id) if c.status is EventStatus.WAITING), None),
        what="the child to wait for its signal",
    )
    wait_for(lambda: machinery.events.get(event_id).steps["kid"].status is StepStatus.WAITING)
    machinery.events.cancel(event_id)

    assert machinery.events.get(event_id).status is EventStatus.CANCELLED
    assert machinery.events.get(child.id).status is EventStatus.CANCELLED


def test_a_map_over_a_child_workflow_runs_each_items_chain(
    machinery: Machinery, example_services: dict[str, Service], start_worker: Callable[..., WorkerProcess]
) -> None:
    machinery.registry.add_workflow(
        WorkflowSchema().load(
            {
                "name": "each-text",
                "inputs": [{"name": "lines", "type": "array", "items": "string"}],
                "outputs": [{"name": "results", "type": "array", "items": "object"}],
                "steps": [
                    {"id": "each", "kind": "map", "workflow": "process-text", "items": "$.input.lines",
                     "item": "message", "concurrency": 3}
                ],
            }
        )
    )  # fmt: skip
    start_worker(concurrency=2)
    lines = [f"line {i} of text" for i in range(8)]

    done = finished(machinery.events, machinery.events.submit("each-text", {"lines": lines})[0].id, timeout=60)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.outputs == {"results": [{"message": line.upper()[::-1], "space_count": 3} for line in lines]}
    kids = children(machinery, done.id)
    assert sorted(kid.parent["item"] for kid in kids if kid.parent) == list(range(8))
    assert {kid.status for kid in kids} == {EventStatus.COMPLETED}
