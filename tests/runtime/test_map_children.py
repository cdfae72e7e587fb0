"""A map over a workflow: each item runs the workflow as a child event of its own, a chain per item."""

from __future__ import annotations

from dataclasses import replace

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.model import Step
from machinery.engine.state import EventStatus, StepStatus
from tests.engine.builders import check, from_input, graph, map_step, registry, service, step
from tests.runtime.harness import Runtime

SERVICES = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("reverse", ["message:string"], ["message:string"]),
)

CHAIN = graph(
    [step("upper"), step("reverse", after=["upper"])],
    inputs=["message:string"],
    outputs=["message:string"],
    name="chain",
)
"""Each item's chain: upper-cases, then reverses, its message."""


def over_chain(concurrency: int = 2) -> Step:
    return replace(
        map_step("each", "", from_input("words"), "message", concurrency=concurrency), service=None, workflow="chain"
    )


PARENT = graph([over_chain()], inputs=["words:array<string>"], outputs=["results:array<object>"], name="fan")


def register(runtime: Runtime) -> None:
    runtime.register(SERVICES.values(), CHAIN)
    runtime.registry.add_workflow(PARENT)


def children(runtime: Runtime) -> list[str]:
    workflow_id = runtime.registry.get_workflow("chain").id
    return [e.id for e in runtime.store.list_events(workflow_id=workflow_id, status=None, offset=0, limit=100).items]


def test_each_item_runs_its_own_chain_as_a_child_event_and_the_results_are_its_outputs_in_order(runtime: Runtime):
    register(runtime)
    words = ["ab", "cd", "ef", "gh", "ij"]
    event_id = runtime.send("fan", {"words": words})

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"results": [{"message": w.upper()[::-1]} for w in words]}
    assert len(children(runtime)) == 5
    kids = {runtime.event(c).parent["item"]: runtime.event(c) for c in children(runtime)}  # type: ignore[index]
    assert sorted(kids) == [0, 1, 2, 3, 4]
    assert kids[3].parent == {"event": event_id, "step": "each", "depth": 1, "item": 3}
    assert kids[3].data == {"message": "gh"}
    assert runtime.store.get_item(event_id, "each", 3).state.child == kids[3].id
    assert sorted(unit for unit, _ in runtime.called()) == sorted(["upper", "reverse"] * 5)


def test_a_failed_child_fails_the_map_and_a_retry_of_the_parent_retries_that_child_only(runtime: Runtime):
    register(runtime)
    broken = {"cd"}
    runtime.answers["upper"] = lambda inputs: (
        CallFailure("HTTP 400", False, ErrorKind.HTTP)
        if inputs["message"] in broken
        else {"message": inputs["message"].upper()}
    )
    event_id = runtime.send("fan", {"words": ["ab", "cd", "ef"]})

    event = runtime.run(event_id)

    assert event.status is EventStatus.FAILED
    assert event.error["message"].startswith("step 'each' failed: item 1: child event ")
    failed = runtime.store.get_item(event_id, "each", 1)
    assert failed.state.status is StepStatus.FAILED
    broken.clear()

    runtime.events.retry(event_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"results": [{"message": "BA"}, {"message": "DC"}, {"message": "FE"}]}
    assert len(children(runtime)) == 3, "the failed child was retried, not replaced"
    assert runtime.event(failed.state.child or "").status is EventStatus.COMPLETED


def test_cancelling_the_parent_cancels_the_children_its_items_wait_for(runtime: Runtime):
    register(runtime)
    event_id = runtime.send("fan", {"words": ["ab", "cd", "ef"]})
    runtime.dispatcher.drop()
    runtime.runner.run(event_id, "each")  # the map fans out, and sends its two lanes
    for message in runtime.dispatcher.drop():
        runtime.runner.run(message.event_id, message.unit)  # each lane starts its child
    assert len(children(runtime)) == 2

    runtime.events.cancel(event_id)
    runtime.run(event_id)

    statuses = {runtime.event(c).status for c in children(runtime)}
    assert statuses == {EventStatus.CANCELLED}
    assert runtime.event(event_id).status is EventStatus.CANCELLED


def test_a_map_over_a_workflow_is_checked_against_the_workflows_inputs() -> None:
    wrong = replace(over_chain(), item="text")
    problems = check(graph([wrong], inputs=["words:array<string>"]), {**SERVICES, "workflow:chain": contract()})
    assert "map step 'each' passes each item as 'text', which workflow 'chain' does not take" in [
        p.message for p in problems
    ]


def contract():
    from machinery.engine.kinds.workflow import contract as of

    return of(CHAIN, "workflow:chain")
