"""Map steps through the runtime: items stored one record each, run in lanes, retried, paused, swept."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from machinery.engine.calls import CallFailure, ErrorKind
from machinery.engine.plan import Settings
from machinery.engine.state import EventStatus, StepStatus
from machinery.runtime import LANE_RUN, Runner, ServiceCache
from tests.engine.builders import SETTINGS, from_input, graph, map_step, registry, service, step
from tests.runtime.harness import Runtime

SERVICES = registry(
    service("square", ["n:int", "base:int"], ["square:int"]),
    service("report", ["results:array<object>"], ["total:int"]),
)


def squares(runtime: Runtime, *, concurrency: int = 3, results: str = "keep") -> None:
    """The workflow ``squares``: ``square`` over the input ``ns``, then ``report`` of the results (if kept)."""
    steps = [
        map_step(
            "squares",
            "square",
            from_input("ns"),
            "n",
            concurrency=concurrency,
            input={"base": from_input("base")},
            results=results,
        )
    ]
    if results == "keep":
        steps.append(step("report", after=["squares"]))
    workflow = graph(steps, inputs=["ns:array<int>", "base:int"], name="squares")
    runtime.register(SERVICES.values(), workflow)
    runtime.answers |= {
        "square": lambda inputs: {"square": inputs["base"] + inputs["n"] ** 2},
        "report": lambda inputs: {"total": sum(r["square"] for r in inputs["results"])},
    }


def item_calls(runtime: Runtime) -> Counter[str]:
    return Counter(unit for unit, _ in runtime.called() if unit.startswith("squares["))


def test_a_map_of_many_items_calls_each_once_in_lanes_and_collects_the_answers_in_order(runtime: Runtime):
    squares(runtime, concurrency=3)
    event_id = runtime.send("squares", {"ns": list(range(250)), "base": 1})

    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.steps["squares"].outputs == {"results": [{"square": 1 + n * n} for n in range(250)]}
    assert event.steps["report"].outputs == {"total": sum(1 + n * n for n in range(250))}
    assert item_calls(runtime) == Counter({f"squares[{i}]": 1 for i in range(250)})
    assert runtime.events.item_counts(event) == {"squares": {"completed": 250}}
    assert "items" not in str(runtime.store.get_event(event_id).to_doc()["steps"])


def test_no_more_items_are_under_way_than_the_maps_concurrency(runtime: Runtime):
    squares(runtime, concurrency=2)
    running: list[int] = []

    def square(inputs: dict[str, Any]) -> dict[str, Any]:
        event = runtime.events.get(event_id)
        counts = runtime.events.item_counts(event)["squares"]
        running.append(counts.get("running", 0) + counts.get("ready", 0))
        return {"square": inputs["n"]}

    runtime.answers["square"] = square
    event_id = runtime.send("squares", {"ns": list(range(20)), "base": 1})
    assert runtime.run(event_id).status is EventStatus.COMPLETED
    assert max(running) <= 2


def test_a_lane_goes_back_to_the_broker_after_a_run_of_items(runtime: Runtime):
    squares(runtime, concurrency=1)
    event_id = runtime.send("squares", {"ns": list(range(LANE_RUN + 5)), "base": 1})
    assert [m.unit for m in runtime.dispatcher.drop()] == ["squares"]
    runtime.runner.run(event_id, "squares")
    assert [m.unit for m in runtime.dispatcher.drop()] == ["squares[0]"]
    runtime.runner.run(event_id, "squares[0]")
    assert item_calls(runtime) == Counter({f"squares[{i}]": 1 for i in range(LANE_RUN)})
    assert [m.unit for m in runtime.dispatcher.queued] == [f"squares[{LANE_RUN}]"]
    assert runtime.run(event_id).status is EventStatus.COMPLETED


def test_a_failed_item_fails_the_event_and_a_retry_runs_only_the_failed_items(runtime: Runtime):
    squares(runtime, concurrency=4)
    broken = {3, 7}
    runtime.answers["square"] = lambda inputs: (
        CallFailure("HTTP 400", False, ErrorKind.HTTP) if inputs["n"] in broken else {"square": inputs["n"]}
    )
    event_id = runtime.send("squares", {"ns": list(range(10)), "base": 1})

    event = runtime.run(event_id)

    assert event.status is EventStatus.FAILED
    assert event.error["message"].startswith("step 'squares' failed: item ")
    failed = runtime.events.items(event_id, "squares", statuses=["failed"], limit=10)
    assert {item.index for item in failed} <= broken
    broken.clear()
    calls_before = item_calls(runtime)

    event = runtime.events.retry(event_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.steps["squares"].outputs == {"results": [{"square": n} for n in range(10)]}
    again = item_calls(runtime) - calls_before
    assert set(again) >= {f"squares[{item.index}]" for item in failed}
    assert all(count == 1 for count in (item_calls(runtime) - Counter(set(again))).values())


def sent_then(runtime: Runtime, at: int, act: Callable[[str], object]) -> str:
    """An event of ``squares`` over 0..9, whose service does ``act(event_id)`` when it is called with ``at``."""
    squares(runtime, concurrency=2)
    event_id = runtime.send("squares", {"ns": list(range(10)), "base": 1})

    def square(inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs["n"] == at:
            act(event_id)
        return {"square": inputs["n"]}

    runtime.answers["square"] = square
    return event_id


def test_a_paused_map_starts_no_more_items_and_goes_on_when_resumed(runtime: Runtime):
    event_id = sent_then(runtime, 3, runtime.events.pause)
    event = runtime.run(event_id)
    assert event.status is EventStatus.PAUSED
    done = sum(item_calls(runtime).values())
    assert done < 10

    runtime.answers["square"] = lambda inputs: {"square": inputs["n"]}
    runtime.events.resume(event_id)
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert item_calls(runtime) == Counter({f"squares[{i}]": 1 for i in range(10)})


def test_a_cancelled_map_calls_no_more_items_and_the_sweeper_parks_the_rest(runtime: Runtime):
    event_id = sent_then(runtime, 2, runtime.events.cancel)
    assert runtime.run(event_id).status is EventStatus.CANCELLED
    calls = sum(item_calls(runtime).values())
    runtime.now += SETTINGS.stale_after + 1
    assert runtime.runner.sweep() == 0
    assert runtime.store.due_items(runtime.now + 10_000, 100) == []
    runtime.run(event_id)
    assert sum(item_calls(runtime).values()) == calls


def test_the_sweeper_sends_again_an_item_whose_message_was_lost(runtime: Runtime):
    squares(runtime, concurrency=2)
    event_id = runtime.send("squares", {"ns": [1, 2, 3], "base": 1})
    runtime.dispatcher.drop()
    runtime.runner.run(event_id, "squares")
    assert [m.unit for m in runtime.dispatcher.drop()] == ["squares[0]", "squares[1]"]

    runtime.now += SETTINGS.stale_after + 1
    assert runtime.runner.sweep() == 2
    assert runtime.run(event_id).status is EventStatus.COMPLETED


def test_a_worker_lost_between_completing_an_item_and_releasing_the_next_stalls_no_lane(runtime: Runtime):
    squares(runtime, concurrency=1)
    event_id = runtime.send("squares", {"ns": [1, 2], "base": 1})
    runtime.runner.run(event_id, "squares")
    runtime.dispatcher.drop()
    first = runtime.store.get_item(event_id, "squares", 0)
    # As a worker that recorded item 0's answer, and died before it released item 1.
    first.state.status = StepStatus.COMPLETED
    first.state.outputs = {"square": 2}
    first.state.ended_at = runtime.now
    first.due_at = runtime.now + SETTINGS.stale_after
    assert runtime.store.save_item(first)

    runtime.now += SETTINGS.stale_after + 1
    assert runtime.runner.sweep() == 1
    event = runtime.run(event_id)

    assert event.status is EventStatus.COMPLETED
    assert event.steps["squares"].outputs == {"results": [{"square": 2}, {"square": 5}]}
    assert runtime.store.get_item(event_id, "squares", 0).handed_on


def test_results_too_large_to_keep_are_left_to_the_items_and_the_step_says_so(runtime: Runtime):
    squares(runtime, concurrency=2, results="keep")
    runtime.runner = Runner(
        runtime.store,
        runtime.dispatcher,
        {"http": runtime.caller},
        Settings(max_map_results=100),
        runtime.runner.plans,
        ServiceCache(runtime.store, clock=runtime.clock),
        runtime.clock,
    )
    runtime.answers["report"] = lambda inputs: {"total": 0}
    event_id = runtime.send("squares", {"ns": list(range(20)), "base": 1})

    event = runtime.run(event_id)

    state = event.steps["squares"]
    assert state.status is StepStatus.COMPLETED
    assert state.outputs == {}
    assert state.note is not None and "larger than 100 bytes" in state.note
    assert event.steps["report"].status is StepStatus.FAILED
    items = runtime.events.items(event_id, "squares", after=17, limit=10)
    assert [item.state.outputs for item in items] == [{"square": 1 + n * n} for n in (18, 19)]


def test_a_map_that_discards_its_results_completes_with_its_counts_only(runtime: Runtime):
    squares(runtime, concurrency=5, results="discard")
    event_id = runtime.send("squares", {"ns": list(range(30)), "base": 1})
    event = runtime.run(event_id)
    assert event.status is EventStatus.COMPLETED
    assert event.steps["squares"].outputs == {}
    assert runtime.events.item_counts(event) == {"squares": {"completed": 30}}


@pytest.mark.parametrize("delivered", [1, 2])
def test_a_map_step_fanned_out_twice_by_a_redelivered_message_keeps_one_set_of_items(runtime: Runtime, delivered):
    squares(runtime, concurrency=2)
    event_id = runtime.send("squares", {"ns": [1, 2, 3], "base": 1})
    for _ in range(delivered):
        runtime.runner.run(event_id, "squares")
    assert runtime.store.count_items(event_id, "squares") == {"ready": 2, "pending": 1}
    assert runtime.run(event_id).status is EventStatus.COMPLETED
    assert item_calls(runtime) == Counter({f"squares[{i}]": 1 for i in range(3)})
