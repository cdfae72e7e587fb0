"""Map steps at run time: a worker claiming the step fans it out into items, records of their own (``m[0]``,
``m[1]``, ...) run in ``concurrency`` lanes, and the answers are collected in order into the step's output
``results``. :class:`~tests.engine.builders.Lanes` holds the items as a store would and moves them as the runtime
does.
"""

from __future__ import annotations

import json

import pytest

from machinery.engine import decider
from machinery.engine.calls import unit_key
from machinery.engine.plan import Settings
from machinery.engine.state import Event, EventStatus, Item, StepStatus
from machinery.engine.units import parse_unit
from tests.engine.builders import (
    PERMANENT,
    SETTINGS,
    TRANSIENT,
    Driver,
    Lanes,
    from_input,
    graph,
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


def fanned(driver: Driver, ns: list[int]) -> tuple[Event, Lanes]:
    return Lanes.fan_out(driver, accepted(driver, ns), "squares", now=100.5)


def test_the_map_step_is_ready_for_a_worker_which_fans_it_out_into_items_in_lanes():
    driver = mapping(concurrency=2)
    event = accepted(driver, [1, 2, 3, 4, 5])
    assert decider.ready_units(event) == ["squares"]
    event, lanes = Lanes.fan_out(driver, event, "squares", now=101)
    state = event.steps["squares"]
    assert (state.status, state.fanout) == (StepStatus.RUNNING, 5)
    assert lanes.statuses() == ["ready", "ready", "pending", "pending", "pending"]
    assert [item.successor for item in lanes.items.values()] == [2, 3, 4, None, None]
    assert [item.inputs for item in lanes.items.values()][3] == {"n": 4, "base": 10}
    assert lanes.items[0].due_at == 101 + SETTINGS.stale_after
    assert lanes.items[2].due_at is None
    assert decider.ready_units(event) == []
    assert event.due_at is None


def test_the_events_document_holds_the_number_of_items_not_the_items():
    driver = mapping()
    event, _ = fanned(driver, list(range(1000)))
    doc = event.to_doc()
    assert doc["steps"]["squares"]["fanout"] == 1000
    assert "spawned" not in doc
    assert len(json.dumps(doc)) < 5000 + len(json.dumps(event.data))
    assert Event.from_doc(json.loads(json.dumps(doc))) == event.copy()


def test_an_item_survives_its_stored_form():
    driver = mapping()
    event, lanes = fanned(driver, [1, 2, 3])
    lanes.claim(event, 0, now=101)
    item = lanes.items[0]
    assert Item.from_doc(json.loads(json.dumps(item.to_doc()))) == item


def test_a_claim_of_an_item_calls_the_service_with_the_item_and_the_other_inputs():
    driver = mapping()
    event, lanes = fanned(driver, [3, 4])
    call = lanes.claim(event, 1, now=101)
    assert call is not None
    assert (call.step_id, call.item, call.unit, call.service.name) == ("squares", 1, "squares[1]", "square")
    assert call.inputs == {"n": 4, "base": 10}
    assert call.idempotency_key == "ev-1/squares[1]"
    item = lanes.items[1].state
    assert (item.status, item.token, item.inputs, item.attempts) == (StepStatus.RUNNING, call.token, call.inputs, 1)
    assert item.lease_until == lanes.items[1].due_at == 101 + 10 + 5


def test_a_pending_item_or_an_item_of_an_idle_event_is_not_claimed():
    driver = mapping(concurrency=1)
    event, lanes = fanned(driver, [3, 4])
    assert lanes.claim(event, 1, now=101) is None
    assert lanes.claim(driver.pause(event, 101), 0, now=101) is None
    assert lanes.claim(driver.cancel(event, 101), 0, now=101) is None


def test_an_item_completed_releases_the_next_of_its_lane_and_hands_it_on():
    driver = mapping(concurrency=2)
    event, lanes = fanned(driver, [1, 2, 3, 4])
    first = lanes.claim(event, 0, now=101)
    lanes.claim(event, 1, now=101)
    assert first is not None
    event = lanes.finish(event, first, now=102, outputs={"square": 11})
    assert lanes.statuses() == ["completed", "running", "ready", "pending"]
    assert lanes.items[2].state.run_at == 102
    assert lanes.items[0].handed_on and lanes.items[0].due_at is None
    assert decider.release(lanes.items[2], 103, SETTINGS) is None


def test_a_completed_item_is_due_until_it_has_handed_its_lane_on():
    driver = mapping(concurrency=1)
    event, lanes = fanned(driver, [1, 2])
    call = lanes.claim(event, 0, now=101)
    assert call is not None
    finished = decider.finish_item(
        lanes.items[0], call, status=event.status, outputs={"square": 11}, now=102, random=0.0, settings=SETTINGS
    )
    assert finished is not None and finished.due_at == 102 + SETTINGS.stale_after
    assert decider.handed_on(finished, SETTINGS).due_at is None


def test_a_retrying_item_still_holds_its_lane():
    driver = mapping(concurrency=1)
    event, lanes = fanned(driver, [1, 2])
    call = lanes.claim(event, 0, now=101)
    assert call is not None
    lanes.finish(event, call, now=102, error=TRANSIENT)
    assert lanes.statuses() == ["retrying", "pending"]
    assert lanes.items[0].state.run_at == 103.0
    assert lanes.claim(event, 0, now=102.5) is None
    again = lanes.claim(event, 0, now=103)
    assert again is not None and (again.attempt, again.idempotency_key) == (2, "ev-1/squares[0]")


def test_the_results_are_collected_in_the_order_of_the_items_whatever_the_order_of_completion():
    driver = mapping(concurrency=4)
    event, lanes = fanned(driver, [1, 2, 3])
    calls = {i: lanes.claim(event, i, now=101) for i in range(3)}
    for i, now in ((2, 102), (0, 103), (1, 104)):
        call = calls[i]
        assert call is not None
        event = lanes.finish(event, call, now=now, outputs={"square": 10 + (i + 1) ** 2})
    state = event.steps["squares"]
    assert state.status is StepStatus.COMPLETED
    assert state.outputs == {"results": [{"square": 11}, {"square": 14}, {"square": 19}]}
    assert state.ended_at == 104
    assert statuses(event) == {"squares": "completed", "report": "ready"}
    _, report = driver.call(event, "report", now=105)
    assert report.inputs == {"results": [{"square": 11}, {"square": 14}, {"square": 19}]}


def test_every_item_is_run_in_turn_with_a_concurrency_of_one():
    driver = mapping(concurrency=1)
    event, lanes = fanned(driver, [1, 2, 3])
    for i in range(3):
        assert lanes.statuses()[i] == "ready"
        event = lanes.run(event, i, {"square": i}, now=101 + 2 * i)
    assert event.steps["squares"].outputs == {"results": [{"square": 0}, {"square": 1}, {"square": 2}]}


def test_a_map_over_an_empty_array_completes_with_no_results_when_it_is_claimed():
    driver = mapping()
    event, lanes = fanned(driver, [])
    assert event.steps["squares"].status is StepStatus.COMPLETED
    assert event.steps["squares"].outputs == {"results": []}
    assert lanes.items == {}
    assert decider.ready_units(event) == ["report"]


def test_a_map_that_discards_its_results_completes_with_no_outputs():
    workflow = graph(
        [map_step("squares", "square", from_input("ns"), "n", input={"base": from_input("base")}, results="discard")],
        inputs=["ns:array<int>", "base:int"],
    )
    driver = Driver(workflow, SERVICES)
    event, lanes = Lanes.fan_out(driver, driver.accept({"ns": [1, 2], "base": 1}), "squares", now=101)
    for i in range(2):
        event = lanes.run(event, i, {"square": i}, now=102)
    assert event.status is EventStatus.COMPLETED
    assert event.steps["squares"].outputs == {}


def test_a_failed_item_fails_the_map_step_and_the_event_naming_the_item():
    driver = mapping()
    event, lanes = fanned(driver, [1, 2])
    first, second = lanes.claim(event, 0, now=101), lanes.claim(event, 1, now=101)
    assert first is not None and second is not None
    event = lanes.finish(event, first, now=102, error=PERMANENT)
    assert event.status is EventStatus.FAILED
    assert lanes.statuses() == ["failed", "running"]
    assert event.steps["squares"].status is StepStatus.FAILED
    assert lanes.items[0].state.error == {"kind": "http", "message": "HTTP 400: bad request", "transient": False}
    assert lanes.items[0].due_at is None
    assert event.error["step"] == "squares"
    assert event.error["item"] == 0
    assert event.error["message"] == "step 'squares' failed: item 0: HTTP 400: bad request"
    assert event.due_at is None
    assert decider.item_failed(driver.plan, event, lanes.items[0], 103, SETTINGS) is None


def test_an_item_whose_answer_is_outside_the_contract_fails_the_event():
    driver = mapping()
    event, lanes = fanned(driver, [1])
    call = lanes.claim(event, 0, now=101)
    assert call is not None
    event = lanes.finish(event, call, now=102, outputs={"square": "one"})
    assert event.status is EventStatus.FAILED
    assert "item 0: service 'square' answered outside its contract" in event.error["message"]


def test_an_item_that_does_not_fit_the_service_input_fails_the_map_when_it_fans_out():
    workflow = graph([map_step("squares", "square", from_input("ns"), "n")], inputs=["ns:array", "base:int"])
    driver = Driver(workflow, SERVICES)
    claimed = driver.claim(driver.accept({"ns": [1, "x"], "base": 1}), "squares", now=101)
    assert claimed is not None
    event, call = claimed
    assert call is None and event.spawned == []
    assert event.status is EventStatus.FAILED
    assert event.steps["squares"].error["kind"] == "input"
    assert "item 1: service 'square' input 'n' should be int: got string 'x'" in event.error["message"]


def test_a_map_over_a_value_that_is_not_an_array_fails_the_step():
    workflow = graph([map_step("squares", "square", from_input("ns"), "n")], inputs=["ns:any", "base:int"])
    driver = Driver(workflow, SERVICES)
    claimed = driver.claim(driver.accept({"ns": 5, "base": 1}), "squares", now=101)
    assert claimed is not None
    event = claimed[0]
    assert event.status is EventStatus.FAILED
    assert event.steps["squares"].error["kind"] == "input"
    assert event.error["message"] == "step 'squares' failed: map 'squares' needs an array of items, got int"


def test_a_map_with_more_items_than_allowed_fails_before_it_fans_out():
    driver = Driver(mapping().workflow, SERVICES, settings=Settings(max_map_items=3))
    claimed = driver.claim(accepted(driver, [1, 2, 3, 4]), "squares", now=101)
    assert claimed is not None
    event = claimed[0]
    assert event.spawned == []
    assert event.steps["squares"].error["kind"] == "size"
    assert "map 'squares' has 4 items, more than the 3 allowed" in event.error["message"]


def test_a_retried_map_runs_again_from_its_failed_items_which_get_a_fresh_budget():
    driver = mapping()
    event, lanes = fanned(driver, [1, 2])
    first, second = lanes.claim(event, 0, now=101), lanes.claim(event, 1, now=101)
    assert first is not None and second is not None
    event = lanes.finish(event, first, now=102, error=PERMANENT)
    event = lanes.finish(event, second, now=103, outputs={"square": 14})
    assert lanes.statuses() == ["failed", "completed"]
    event = driver.retry(event, 200)
    assert event.status is EventStatus.RUNNING
    assert event.steps["squares"].status is StepStatus.RUNNING
    assert decider.rearm(lanes.items[1], 200, SETTINGS, retry=True) is None
    rearmed = decider.rearm(lanes.items[0], 200, SETTINGS, retry=True)
    assert rearmed is not None and rearmed.state.status is StepStatus.READY and rearmed.state.budget_used == 0
    lanes.items[0] = rearmed
    event = lanes.run(event, 0, {"square": 11}, now=201)
    assert event.steps["squares"].outputs == {"results": [{"square": 11}, {"square": 14}]}
    assert statuses(event) == {"squares": "completed", "report": "ready"}


def test_a_resumed_event_sends_its_ready_items_again_but_not_its_failed_ones():
    driver = mapping()
    event, lanes = fanned(driver, [1])
    assert decider.rearm(lanes.items[0], 200, SETTINGS, retry=False) is not None
    lanes.items[0] = decider.parked(lanes.items[0])
    assert lanes.items[0].due_at is None
    failed = lanes.items[0].copy()
    failed.state.status = StepStatus.FAILED
    assert decider.rearm(failed, 200, SETTINGS, retry=False) is None


def test_cancel_cancels_the_map_step_and_a_late_result_of_an_item_changes_nothing():
    driver = mapping(concurrency=2)
    event, lanes = fanned(driver, [1, 2, 3])
    call = lanes.claim(event, 0, now=101)
    assert call is not None
    event = driver.cancel(event, 103)
    assert event.status is EventStatus.CANCELLED
    assert statuses(event) == {"squares": "cancelled", "report": "cancelled"}
    event = lanes.finish(event, call, now=104, outputs={"square": 11})
    assert event.status is EventStatus.CANCELLED
    assert decider.items_completed(driver.plan, event, "squares", {}, None, 105, SETTINGS) is None


def test_a_sent_item_is_not_due_again_before_long():
    driver = mapping()
    event, lanes = fanned(driver, [1, 2])
    nudged = decider.nudged_item(lanes.items[1], 130, SETTINGS)
    assert nudged.state.nudged_at == 130
    assert nudged.due_at == 130 + SETTINGS.stale_after


def test_a_lost_item_is_claimed_again_and_its_first_worker_result_is_refused():
    driver = mapping()
    event, lanes = fanned(driver, [1])
    first = lanes.claim(event, 0, now=101)
    assert lanes.claim(event, 0, now=116) is None
    second = lanes.claim(event, 0, now=117)
    assert first is not None and second is not None
    assert lanes.items[0].state.lost == 1
    stale = decider.finish_item(
        lanes.items[0], first, status=event.status, outputs={"square": 1}, now=118, random=0.0, settings=SETTINGS
    )
    assert stale is None
    assert lanes.finish(event, second, now=118, outputs={"square": 11}).steps["squares"].status is StepStatus.COMPLETED


def test_an_item_lost_too_often_fails():
    driver = mapping()
    event, lanes = fanned(driver, [1])
    for attempt in range(SETTINGS.max_lost + 1):
        assert lanes.claim(event, 0, now=101 + 20 * attempt) is not None
    assert lanes.claim(event, 0, now=101 + 20 * (SETTINGS.max_lost + 1)) is None
    assert lanes.items[0].state.status is StepStatus.FAILED
    assert lanes.items[0].state.error["kind"] == "lost"


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
    event, lanes = Lanes.fan_out(driver, driver.accept({"ns": [1], "base": 10}), "squares", now=101)
    event = lanes.run(event, 0, {"square": 11}, now=101)
    assert driver.context(event) == {"ns": [1], "base": 10, "sq": [{"square": 11}]}
    assert event.outputs == {"sq": [{"square": 11}]}


@pytest.mark.parametrize("unit", ["squares[0]", "squares[1]"])
def test_unit_keys_name_the_step_and_the_item(unit):
    assert unit_key(*parse_unit(unit)) == unit
    assert parse_unit("report") == ("report", None)
