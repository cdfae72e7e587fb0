"""What the runtime reports for metrics: each call with its outcome, each step and event that ended, timed."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.store.sqlite import SqliteStore
from machinery.telemetry import PrometheusTelemetry
from tests.engine.builders import seed_services, seed_workflow
from tests.runtime.harness import Runtime


def test_calls_steps_and_events_are_counted_and_timed_with_their_outcome(tmp_path: Path) -> None:
    telemetry = PrometheusTelemetry()
    runtime = Runtime(SqliteStore(tmp_path / "machinery.db"), telemetry)
    services = seed_services("space_count:int")
    runtime.register(services.values(), seed_workflow())
    failures = iter([CallFailure("busy", True, ErrorKind.HTTP)])
    upper = runtime.answers["upper"]
    runtime.answers["upper"] = lambda inputs: next(failures, None) or upper(inputs)
    event_id = runtime.send("process-text", {"message": "a b"})

    runtime.run(event_id)
    runtime.now += 5
    event = runtime.run(event_id)

    registry = CollectorRegistry()
    telemetry.register(registry)
    value = registry.get_sample_value
    assert event.status.value == "completed"
    assert value("machinery_attempts_total", {"workflow": "process-text", "service": "upper"}) == 2
    assert value("machinery_failures_total", {"workflow": "process-text", "service": "upper", "kind": "http"}) == 1
    assert value("machinery_call_duration_seconds_count", {"workflow": "process-text", "service": "reverse"}) == 1
    step = {"workflow": "process-text", "kind": "service", "service": "space-counter", "status": "completed"}
    assert value("machinery_step_duration_seconds_count", step) == 1
    ended = {"workflow": "process-text", "status": "completed"}
    assert value("machinery_event_duration_seconds_count", ended) == 1
    assert value("machinery_event_duration_seconds_sum", ended) == 5.0
