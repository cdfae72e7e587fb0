"""Events sent through the runtime and run to their end: chains, graphs, waits for signals and maps."""

from __future__ import annotations

from machinery.engine.state import EventStatus
from tests.engine.builders import (
    corrected_seed_services,
    diamond_services,
    diamond_workflow,
    from_input,
    graph,
    map_step,
    registry,
    seed_workflow,
    service,
    statuses,
    step,
    wait,
)
from tests.runtime.harness import Runtime


def test_an_event_runs_through_a_linear_workflow_each_step_on_the_previous_answer(runtime: Runtime):
    runtime.register(corrected_seed_services().values(), seed_workflow())
    event_id = runtime.send("process-text", {"message": "hello big world"})

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"message": "DLROW GIB OLLEH", "space_count": 2}
    assert runtime.called() == [
        ("upper", {"message": "hello big world"}),
        ("reverse", {"message": "HELLO BIG WORLD"}),
        ("space-counter", {"message": "DLROW GIB OLLEH"}),
    ]


def test_an_event_runs_through_a_graph_joining_its_parallel_branches(runtime: Runtime):
    runtime.register(diamond_services().values(), diamond_workflow())
    event_id = runtime.send("diamond", {"message": "a b"})

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"summary": "B A: 1 spaces", "reversed": "B A", "space_count": 1}
    assert statuses(event) == dict.fromkeys(["upper", "reverse", "space-counter", "join"], "completed")
    assert runtime.called()[-1] == ("join", {"reversed": "B A", "space_count": 1})


APPROVAL_SERVICES = registry(
    service("prepare", ["message:string"], ["ticket:string"]),
    service("approve", ["approved:bool"], ["approved_by:string"]),
    service("remind", ["ticket:string"], ["reminded:bool"]),
)


def approval(timeout: float | None = None):
    """``prepare``, then a wait for the signal ``approval``, then ``approve``; with a timeout, ``remind`` after it."""
    on_timeout = {"timeout": timeout, "on_timeout": "remind"} if timeout is not None else {}
    return graph(
        [
            step("prepare"),
            wait("wait-approval", "approval", ["approved:bool"], after=["prepare"], **on_timeout),
            step("approve", after=["wait-approval"]),
            *([step("remind")] if timeout is not None else []),
        ],
        inputs=["message:string"],
        name="approval",
    )


def answer_approvals(runtime: Runtime) -> None:
    runtime.answers |= {
        "prepare": lambda inputs: {"ticket": "T-1"},
        "approve": lambda inputs: {"approved_by": "ann" if inputs["approved"] else "nobody"},
        "remind": lambda inputs: {"reminded": True},
    }


def test_an_event_waits_for_its_signal_and_goes_on_with_the_signal_body_once_it_comes(runtime: Runtime):
    runtime.register(APPROVAL_SERVICES.values(), approval())
    answer_approvals(runtime)
    event_id = runtime.send("approval", {"message": "m"})

    waiting = runtime.run(event_id)
    runtime.events.signal(event_id, "approval", {"approved": True})
    event = runtime.run(event_id)

    assert waiting.status is EventStatus.WAITING
    assert statuses(waiting)["wait-approval"] == "waiting"
    assert event.status is EventStatus.COMPLETED
    assert event.steps["approve"].outputs == {"approved_by": "ann"}
    assert runtime.called() == [("prepare", {"message": "m"}), ("approve", {"approved": True})]


def test_a_wait_takes_its_timeout_route_once_the_clock_reaches_its_timeout_and_not_before(runtime: Runtime):
    runtime.register(APPROVAL_SERVICES.values(), approval(timeout=60))
    answer_approvals(runtime)
    event_id = runtime.send("approval", {"message": "m"})

    runtime.run(event_id)
    runtime.now += 59
    before = runtime.run(event_id)
    runtime.now += 1
    event = runtime.run(event_id)

    assert statuses(before)["wait-approval"] == "waiting"
    assert event.status is EventStatus.COMPLETED
    assert statuses(event) == {
        "prepare": "completed",
        "wait-approval": "completed",
        "approve": "skipped",
        "remind": "completed",
    }
    assert [unit for unit, _ in runtime.called()] == ["prepare", "remind"]


def test_a_map_step_calls_its_service_once_per_item_and_collects_the_answers_in_order(runtime: Runtime):
    services = registry(
        service("square", ["n:int", "base:int"], ["square:int"]),
        service("report", ["results:array<object>"], ["total:int"]),
    )
    workflow = graph(
        [
            map_step("squares", "square", from_input("ns"), "n", concurrency=2, input={"base": from_input("base")}),
            step("report", after=["squares"]),
        ],
        inputs=["ns:array<int>", "base:int"],
        outputs=["results:array<object>", "total:int"],
        name="squares",
    )
    runtime.register(services.values(), workflow)
    runtime.answers |= {
        "square": lambda inputs: {"square": inputs["base"] + inputs["n"] ** 2},
        "report": lambda inputs: {"total": sum(r["square"] for r in inputs["results"])},
    }
    event_id = runtime.send("squares", {"ns": [1, 2, 3], "base": 10})

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.outputs == {"results": [{"square": 11}, {"square": 14}, {"square": 19}], "total": 44}
    assert sorted(unit for unit, _ in runtime.called()) == ["report", "squares[0]", "squares[1]", "squares[2]"]
