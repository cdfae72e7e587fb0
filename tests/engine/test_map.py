"""Map steps at run time: one unit per element of an array (``m[0]``, ``m[1]``, ...), a concurrency limit, and the
answers collected in order into the step's output ``results``.
"""

from __future__ import annotations

import json

import pytest

from machinery.engine import decider
from machinery.engine.calls import unit_key
from machinery.engine.state import Event, EventStatus, StepStatus
from machinery.engine.units import parse_unit
from tests.engine.builders import (
    PERMANENT,
    SETTINGS,
    TRANSIENT,
    Driver,
    from_input,
    graph,
    item_statuses,
    map_step,
    registry,
    service,
    statuses,
    step,
)

SERVICES = registry(
    service("square", ["n:int", "base:int"], ["square:int"]),
    service("report", ["results:array<object>"], ["total:int"]),
)


def mapping(concurrency: int = 2) -> Driver:
    """``squares`` maps ``square`` over the input ``ns`` (item as ``n``, ``base`` from the input); then ``report``."""
    workflow = graph(
        [
            map_step(
                "squares", "square", from_input("ns"), "n", concurrency=concurrency, input={"base": from_input("base")}
            ),
            step("report", after=["squares"]),
        ],
        inputs=["ns:array<int>", "base:int"],
        outputs=["results:array<object>", "total:int"],
    )
    return Driver(workflow, SERVICES)


def accepted(driver: Driver, ns: list[int]) -> Event:
    return driver.accept({"ns": ns, "base": 10}, now=100)


def test_each_item_becomes_a_unit_and_at_most_concurrency_of_them_are_ready():
    event = accepted(mapping(concurrency=2), [1, 2, 3, 4])
    assert event.steps["squares"].status is StepStatus.RUNNING
    assert item_statuses(event, "squares") == ["ready", "ready", "pending", "pending"]
    assert decider.ready_units(event) == ["squares[0]", "squares[1]"]
    assert statuses(event)["report"] == "pending"


def test_a_claim_of_an_item_calls_the_service_with_the_item_and_the_other_inputs():
    driver = mapping()
    event, call = driver.call(accepted(driver, [3, 4]), "squares[1]", now=101)
    assert (call.step_id, call.item, call.unit, call.service.name) == ("squares", 1, "squares[1]", "square")
    assert call.inputs == {"n": 4, "base": 10}
    assert call.idempotency_key == "ev-1/squares[1]"
    item = event.steps["squares"].items[1]
    assert (item.status, item.token, item.inputs, item.attempts) == (StepStatus.RUNNING, call.token, call.inputs, 1)
    assert item.lease_until == 101 + 10 + 5


def test_a_claim_of_the_map_step_itself_or_of_an_item_out_of_range_returns_none():
    driver = mapping()
    event = accepted(driver, [3, 4])
    assert driver.claim(event, "squares", now=101) is None
    assert driver.claim(event, "squares[2]", now=101) is None
    assert driver.claim(event, "squares[-1]", now=101) is None


def test_no_more_than_concurrency_items_run_at_once_and_the_next_is_made_ready_when_one_completes():
    driver = mapping(concurrency=2)
    event = accepted(driver, [1, 2, 3, 4])
    event, first = driver.call(event, "squares[0]", now=101)
    event, second = driver.call(event, "squares[1]", now=101)
    assert decider.ready_units(event) == []
    assert driver.claim(event, "squares[2]", now=101) is None
    event = driver.done(event, second, now=102, outputs={"square": 4})
    assert item_statuses(event, "squares") == ["running", "completed", "ready", "pending"]
    assert decider.ready_units(event) == ["squares[2]"]
    assert event.steps["squares"].items[2].run_at == 102


def test_a_retrying_item_still_counts_against_the_concurrency():
    driver = mapping(concurrency=1)
    event, call = driver.call(accepted(driver, [1, 2]), "squares[0]", now=101)
    event = driver.done(event, call, now=102, error=TRANSIENT)
    assert item_statuses(event, "squares") == ["retrying", "pending"]
    assert decider.timers(event) == [("squares[0]", 103.0)]
    assert decider.ready_units(event) == []


def test_the_results_are_collected_in_the_order_of_the_items_whatever_the_order_of_completion():
    driver = mapping(concurrency=4)
    event = accepted(driver, [1, 2, 3])
    calls = {}
    for i in range(3):
        event, calls[i] = driver.call(event, f"squares[{i}]", now=101)
    for i, now in ((2, 102), (0, 103), (1, 104)):
        event = driver.done(event, calls[i], now=now, outputs={"square": 10 + (i + 1) ** 2})
    state = event.steps["squares"]
    assert state.status is StepStatus.COMPLETED
    assert state.outputs == {"results": [{"square": 11}, {"square": 14}, {"square": 19}]}
    assert state.ended_at == 104
    assert statuses(event) == {"squares": "completed", "report": "ready"}
    _, report = driver.call(event, "report", now=105)
    assert report.inputs == {"results": [{"square": 11}, {"square": 14}, {"square": 19}]}


def test_every_item_is_run_with_a_concurrency_of_one():
    driver = mapping(concurrency=1)
    event = accepted(driver, [1, 2, 3])
    for i in range(3):
        assert decider.ready_units(event) == [f"squares[{i}]"]
        event = driver.run(event, f"squares[{i}]", {"square": i}, now=101 + 2 * i)
    assert event.steps["squares"].outputs == {"results": [{"square": 0}, {"square": 1}, {"square": 2}]}


def test_a_map_over_an_empty_array_completes_at_once_with_no_results():
    event = accepted(mapping(), [])
    assert event.steps["squares"].status is StepStatus.COMPLETED
    assert event.steps["squares"].outputs == {"results": []}
    assert event.steps["squares"].items == []
    assert decider.ready_units(event) == ["report"]


def test_a_failed_item_fails_the_map_step_and_the_event():
    driver = mapping()
    event = accepted(driver, [1, 2])
    event, first = driver.call(event, "squares[0]", now=101)
    event, second = driver.call(event, "squares[1]", now=101)
    event = driver.done(event, first, now=102, error=PERMANENT)
    assert event.status is EventStatus.FAILED
    assert item_statuses(event, "squares") == ["failed", "running"]
    assert event.steps["squares"].status is StepStatus.FAILED
    assert event.steps["squares"].items[0].error == {
        "kind": "http",
        "message": "HTTP 400: bad request",
        "transient": False,
    }
    assert event.error["step"] == "squares"
    assert event.error["message"] == "step 'squares' failed: item 0: HTTP 400: bad request"
    assert decider.ready_units(event) == []
    assert event.due_at is None


def test_an_item_whose_answer_is_outside_the_contract_fails_the_event():
    driver = mapping()
    event, call = driver.call(accepted(driver, [1]), "squares[0]", now=101)
    event = driver.done(event, call, now=102, outputs={"square": "one"})
    assert event.status is EventStatus.FAILED
    assert "item 0: service 'square' answered outside its contract" in event.error["message"]


def test_an_item_that_does_not_fit_the_service_input_fails_the_event_at_claim():
    workflow = graph([map_step("squares", "square", from_input("ns"), "n")], inputs=["ns:array", "base:int"])
    driver = Driver(workflow, SERVICES)
    event, call = driver.claim(driver.accept({"ns": ["x"], "base": 1}), "squares[0]", now=101)
    assert call is None
    assert event.status is EventStatus.FAILED
    assert event.steps["squares"].items[0].error["kind"] == "input"
    assert "service 'square' input 'n' should be int: got string 'x'" in event.error["message"]


def test_a_map_over_a_value_that_is_not_an_array_fails_the_step():
    workflow = graph([map_step("squares", "square", from_input("ns"), "n")], inputs=["ns:any", "base:int"])
    event = Driver(workflow, SERVICES).accept({"ns": 5, "base": 1})
    assert event.status is EventStatus.FAILED
    assert event.steps["squares"].error["kind"] == "input"
    assert event.error["message"] == "step 'squares' failed: map 'squares' needs an array of items, got int"


def test_the_late_result_of_another_item_after_a_failure_is_still_recorded_and_a_retry_runs_the_failed_item_again():
    driver = mapping()
    event = accepted(driver, [1, 2])
    event, first = driver.call(event, "squares[0]", now=101)
    event, second = driver.call(event, "squares[1]", now=101)
    event = driver.done(event, first, now=102, error=PERMANENT)
    event = driver.done(event, second, now=103, outputs={"square": 14})
    assert item_statuses(event, "squares") == ["failed", "completed"]
    event = driver.retry(event, 200)
    assert event.status is EventStatus.RUNNING
    assert event.steps["squares"].status is StepStatus.RUNNING
    assert item_statuses(event, "squares") == ["ready", "completed"]
    assert decider.ready_units(event) == ["squares[0]"]
    event, call = driver.call(event, "squares[0]", now=201)
    assert call.attempt == 2
    event = driver.done(event, call, now=202, outputs={"square": 11})
    assert event.steps["squares"].outputs == {"results": [{"square": 11}, {"square": 14}]}
    assert statuses(event) == {"squares": "completed", "report": "ready"}


def test_retry_keeps_the_concurrency_limit_of_a_map():
    driver = mapping(concurrency=1)
    event, call = driver.call(accepted(driver, [1, 2, 3]), "squares[0]", now=101)
    event = driver.retry(driver.done(event, call, now=102, error=PERMANENT), 200)
    assert item_statuses(event, "squares") == ["ready", "pending", "pending"]


def test_cancel_cancels_every_unfinished_item_and_a_late_result_changes_nothing():
    driver = mapping(concurrency=2)
    event = accepted(driver, [1, 2, 3])
    event, call = driver.call(event, "squares[0]", now=101)
    event = driver.run(event, "squares[1]", {"square": 14}, now=101)
    event = driver.cancel(event, 103)
    assert event.status is EventStatus.CANCELLED
    assert statuses(event) == {"squares": "cancelled", "report": "cancelled"}
    assert item_statuses(event, "squares") == ["cancelled", "completed", "cancelled"]
    assert event.steps["squares"].items[0].token is None
    assert decider.ready_units(event) == []
    assert driver.finish(event, call, now=104, outputs={"square": 11}) is None


def test_a_transient_error_of_an_item_retries_that_item_only():
    driver = mapping()
    event = accepted(driver, [1, 2])
    event, call = driver.call(event, "squares[0]", now=101)
    event = driver.done(event, call, now=102, error=TRANSIENT)
    assert item_statuses(event, "squares") == ["retrying", "ready"]
    assert driver.claim(event, "squares[0]", now=102.5) is None
    event, again = driver.call(event, "squares[0]", now=103)
    assert (again.attempt, again.idempotency_key) == (2, "ev-1/squares[0]")


def test_ready_and_running_items_are_overdue_like_steps_and_can_be_nudged():
    driver = mapping()
    event = accepted(driver, [1, 2])
    event, _ = driver.call(event, "squares[0]", now=101)  # lease until 116
    assert event.due_at == 116
    assert decider.overdue_units(event, 116, SETTINGS) == ["squares[0]"]
    assert decider.overdue_units(event, 130, SETTINGS) == ["squares[0]", "squares[1]"]
    event = decider.nudged(event, ["squares[1]"], 130, SETTINGS)
    assert event.steps["squares"].items[1].nudged_at == 130
    assert decider.overdue_units(event, 131, SETTINGS) == ["squares[0]"]


def test_a_lost_item_is_claimed_again():
    driver = mapping()
    event, first = driver.call(accepted(driver, [1]), "squares[0]", now=101)
    event, second = driver.call(event, "squares[0]", now=117)
    assert event.steps["squares"].items[0].lost == 1
    assert driver.finish(event, first, now=118, outputs={"square": 1}) is None
    assert driver.done(event, second, now=118, outputs={"square": 11}).steps["squares"].status is StepStatus.COMPLETED


def test_the_results_are_written_into_the_context_under_their_rename():
    workflow = graph(
        [
            map_step(
                "squares", "square", from_input("ns"), "n", input={"base": from_input("base")}, output={"results": "sq"}
            )
        ],
        inputs=["ns:array<int>", "base:int"],
        outputs=["sq:array<object>"],
    )
    driver = Driver(workflow, SERVICES)
    event = driver.run(driver.accept({"ns": [1], "base": 10}), "squares[0]", {"square": 11}, now=101)
    assert driver.context(event) == {"ns": [1], "base": 10, "sq": [{"square": 11}]}
    assert event.outputs == {"sq": [{"square": 11}]}


def test_a_map_event_survives_its_stored_form():
    driver = mapping()
    event, _ = driver.call(accepted(driver, [1, 2, 3]), "squares[0]", now=101)
    assert Event.from_doc(json.loads(json.dumps(event.to_doc()))) == event


@pytest.mark.parametrize("unit", ["squares[0]", "squares[1]"])
def test_unit_keys_name_the_step_and_the_item(unit):
    assert unit_key(*parse_unit(unit)) == unit
    assert parse_unit("report") == ("report", None)
