"""Messages that come twice, late, or for an event that was cancelled change nothing."""

from __future__ import annotations

from machinery.engine.state import EventStatus
from tests.engine.builders import corrected_seed_services, seed_workflow, statuses
from tests.runtime.harness import Runtime


def test_a_unit_run_again_after_the_event_completed_calls_nothing_and_changes_nothing(runtime: Runtime):
    runtime.register(corrected_seed_services().values(), seed_workflow())
    event_id = runtime.send("process-text", {"message": "a b"})
    completed = runtime.run(event_id)

    runtime.runner.run(event_id, "upper")

    assert runtime.event(event_id) == completed
    assert [unit for unit, _ in runtime.called()] == ["upper", "reverse", "space-counter"]


def test_a_message_sent_twice_for_the_same_unit_calls_its_service_once(runtime: Runtime):
    runtime.register(corrected_seed_services().values(), seed_workflow())
    event_id = runtime.send("process-text", {"message": "a b"})
    runtime.dispatcher.dispatch(event_id, "upper")

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert [unit for unit, _ in runtime.called()] == ["upper", "reverse", "space-counter"]


def test_a_cancelled_event_runs_none_of_its_steps_when_their_messages_arrive(runtime: Runtime):
    runtime.register(corrected_seed_services().values(), seed_workflow())
    event_id = runtime.send("process-text", {"message": "a b"})

    runtime.events.cancel(event_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.CANCELLED
    assert set(statuses(event).values()) == {"cancelled"}
    assert runtime.caller.calls == []
