"""Large maps through real worker processes on Redis: every item called once, and a worker killed mid-map."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from machinery.bootstrap import Machinery
from machinery.engine.state import EventStatus
from machinery.validation import ServiceSchema, WorkflowSchema
from tests.integration.conftest import WorkerProcess
from tests.support import ScriptedService, finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_url", ["redis"], indirect=True)]


def upper(payload: dict[str, Any]) -> tuple[int, Any]:
    if "message" not in payload:
        return 400, {"message": "no message"}
    return 200, {"message": payload["message"].upper()}


def fan(machinery: Machinery, url: str, *, lanes: int, results: str = "keep") -> None:
    text = [{"name": "message", "type": "string"}]
    machinery.registry.add_service(
        ServiceSchema().load({"name": "upper", "address": url, "inputs": text, "outputs": text})
    )
    step = {"id": "each", "kind": "map", "service": "upper", "items": "$.input.words", "item": "message"}
    machinery.registry.add_workflow(
        WorkflowSchema().load(
            {
                "name": "fan",
                "inputs": [{"name": "words", "type": "array", "items": "string"}],
                "steps": [step | {"concurrency": lanes, "results": results}],
            }
        )
    )


def test_a_map_of_10000_items_completes_with_each_item_called_once(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = ScriptedService([upper]).start()
    fan(machinery, service.url, lanes=16)
    start_worker(concurrency=4)
    words = [f"w{i}" for i in range(10_000)]

    done = finished(machinery.events, machinery.events.submit("fan", {"words": words})[0].id, timeout=240)

    assert done.status is EventStatus.COMPLETED, done.error
    assert done.steps["each"].outputs == {"results": [{"message": w.upper()} for w in words]}
    assert Counter(call["message"] for call in service.calls) == Counter(words)
    assert machinery.events.item_counts(done) == {"each": {"completed": 10_000}}
    service.stop()


def test_a_worker_killed_during_a_large_map_loses_no_item_and_runs_none_twice_without_a_recorded_loss(
    machinery: Machinery, start_worker: Callable[..., WorkerProcess]
) -> None:
    def slowly(payload: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(0.002)
        return upper(payload)

    service = ScriptedService([slowly]).start()
    fan(machinery, service.url, lanes=8, results="discard")
    worker = start_worker(concurrency=4)
    words = [f"w{i}" for i in range(3000)]
    event_id = machinery.events.submit("fan", {"words": words})[0].id
    wait_for(lambda: len(service.calls) >= 500, timeout=120, what="a sixth of the items to be called")

    worker.kill(signal.SIGKILL)
    called_before = len(service.calls)
    start_worker(concurrency=4)
    done = finished(machinery.events, event_id, timeout=240)

    assert done.status is EventStatus.COMPLETED, done.error
    assert called_before < len(words)
    # A request cut short by the kill may arrive with its headers and no body: it was never a call.
    calls = Counter(call["message"] for call in service.calls if "message" in call)
    assert set(calls) == set(words)
    twice = {word for word, count in calls.items() if count > 1}
    items, after = {}, -1
    while page := machinery.events.items(event_id, "each", limit=1000, after=after):
        items |= {f"w{item.index}": item for item in page}
        after = page[-1].index
    assert len(items) == len(words)
    assert all(items[word].state.lost >= 1 for word in twice), "an item ran twice with no loss recorded"
    service.stop()
