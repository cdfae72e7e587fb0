"""Failed calls through the runtime: retried while transient, failing the event when not, and retried by hand."""

from __future__ import annotations

from machinery.engine.state import EventStatus
from tests.engine.builders import (
    PERMANENT,
    TRANSIENT,
    corrected_seed_services,
    graph,
    seed_workflow,
    service,
    statuses,
    step,
)
from tests.runtime.harness import TEXT, Runtime


def test_a_transient_failure_is_retried_after_the_backoff_and_the_event_completes(runtime: Runtime):
    runtime.register(corrected_seed_services().values(), seed_workflow())
    failures = [TRANSIENT]
    runtime.answers["reverse"] = lambda inputs: failures.pop() if failures else TEXT["reverse"](inputs)
    event_id = runtime.send("process-text", {"message": "a b"})

    retrying = runtime.run(event_id)
    runtime.now += 1  # the builders' retry policy waits 1 s before the second attempt
    event = runtime.run(event_id)

    assert statuses(retrying) == {"upper": "completed", "reverse": "retrying", "space-counter": "pending"}
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "B A", "space_count": 1}
    assert [(c.unit, c.attempt) for c in runtime.caller.calls] == [
        ("upper", 1),
        ("reverse", 1),
        ("reverse", 2),
        ("space-counter", 1),
    ]


def test_a_permanent_failure_fails_the_event_and_a_retry_resumes_it_from_the_failed_step(runtime: Runtime):
    runtime.register(corrected_seed_services().values(), seed_workflow())
    runtime.answers["reverse"] = lambda inputs: PERMANENT
    event_id = runtime.send("process-text", {"message": "a b"})

    failed = runtime.run(event_id)
    runtime.answers["reverse"] = TEXT["reverse"]
    runtime.events.retry(event_id)
    event = runtime.run(event_id)

    assert failed.status is EventStatus.FAILED
    assert failed.error is not None and failed.error["step"] == "reverse"
    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "B A", "space_count": 1}
    assert [unit for unit, _ in runtime.called()] == ["upper", "reverse", "reverse", "space-counter"]


def test_an_event_whose_service_was_deleted_after_it_was_sent_fails_naming_the_service(runtime: Runtime):
    echo = graph([step("echo", "a")], inputs=["message:string"], outputs=["message:string"], name="echo")
    runtime.register([service("a", ["message:string"], ["message:string"]), service("b", ["message:string"])], echo)
    event_id = runtime.send("echo", {"message": "m"})
    runtime.registry.replace_workflow("echo", graph([step("echo", "b")], inputs=["message:string"], name="echo"))
    runtime.registry.delete_service("a")

    event = runtime.run(event_id)

    assert event.workflow_version == 1
    assert event.status is EventStatus.FAILED
    assert event.error is not None
    assert (event.error["step"], event.error["kind"]) == ("echo", "config")
    assert event.error["message"].endswith("service 'a' is no longer registered")
    assert runtime.caller.calls == []
