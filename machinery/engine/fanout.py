"""The items of map steps: each a record of its own, moved on without reading or writing its event.

A map step fans out into items when a worker first claims it (``MapKind.fan_out``), a fleet step into one
item per workload (``FleetKind.fan_out``). The items run in the step's ``concurrency`` lanes: item ``i`` is
released once item ``i - concurrency`` is over (:attr:`Item.over`), so that no more than ``concurrency`` are
under way and no count has to be kept anywhere. The event hears of its items twice only: when one of a map
fails for good (:func:`item_failed`), and when the last is over (:func:`items_completed`).

Like the decider, every function here takes records as read and returns changed copies, or None when there
is nothing to do; the caller writes them back conditionally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from machinery.engine.attempts import moved, record, start, take_over, unregistered
from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.model import Service
from machinery.engine.plan import Plan, Settings
from machinery.engine.progress import advance, close
from machinery.engine.schedule import too_soon, unit_due
from machinery.engine.state import (
    CLAIMABLE,
    FAILED,
    IDLE,
    PENDING,
    READY,
    RETRYING,
    RUNNING,
    TERMINAL_EVENT,
    Event,
    EventStatus,
    Item,
)
from machinery.engine.units import complete, fail_state, fail_step, make_ready, retry_unit


def claim_item(
    plan: Plan,
    services: Mapping[str, Service],
    status: EventStatus,
    item: Item,
    *,
    now: float,
    token: str,
    settings: Settings,
) -> tuple[Item, Call | None] | None:
    """Claim ``item`` for one call, its event being ``status``, as :func:`~machinery.engine.decider.claim` claims
    a step; the item failed and no call when its worker was lost too often or its service is gone."""
    state = item.state
    if status in IDLE or state.status not in CLAIMABLE or too_soon(state, now):
        return None
    item = item.copy()
    state = item.state
    step = plan.graph.steps[item.step_id]
    kind = plan.kinds[item.step_id]
    service = services.get(kind.callee(step) or "")
    failure = take_over(state, service, now, settings)
    if failure is not None or service is None:
        fail_state(state, failure or unregistered(kind.callee_label(step)), now)
        return settle(item, settings), None
    key = f"{item.event_id}/{item.unit}"
    call = start(
        state,
        item.step_id,
        service,
        item.inputs,
        token=token,
        key=key,
        item=item.index,
        now=now,
        settings=settings,
        target=item.key,
    )
    return settle(item, settings), call


def finish_item(
    item: Item,
    call: Call,
    *,
    status: EventStatus,
    outputs: Any = None,
    error: CallFailure | None = None,
    now: float,
    random: float,
    settings: Settings,
) -> Item | None:
    """Record the result of ``call`` in its item, as :func:`~machinery.engine.decider.finish` does in a step;
    None when the claim is no longer this call's."""
    if item.state.status is not RUNNING or item.state.token != call.token:
        return None
    item = item.copy()
    if error is not None and error.kind is ErrorKind.MOVED and status not in TERMINAL_EVENT:
        failure = moved(item.state, error, now, settings)
    else:
        failure = record(item.state, call.service, outputs, error, status=status, now=now, random=random)
    if failure is not None:
        fail_state(item.state, failure, now)
    return settle(item, settings)


def release(item: Item, now: float, settings: Settings) -> Item | None:
    """The next item of a lane, ready now that the one before it has completed; None if it was released already."""
    if item.state.status is not PENDING:
        return None
    item = item.copy()
    make_ready(item.state, now)
    return settle(item, settings)


def handed_on(item: Item, settings: Settings) -> Item | None:
    """A completed item once the next of its lane is released: nothing is left to do for it."""
    if item.handed_on:
        return None
    item = item.copy()
    item.handed_on = True
    return settle(item, settings)


def nudged_item(item: Item, now: float, settings: Settings) -> Item:
    """An item after the sweeper sent it again; it is not due again before long."""
    item = item.copy()
    item.state.nudged_at = now
    return settle(item, settings)


def parked(item: Item) -> Item:
    """An item of an event that is paused or over: due no more, until the event is resumed or retried."""
    item = item.copy()
    item.due_at = None
    return item


def rearm(item: Item, now: float, settings: Settings, *, retry: bool) -> Item | None:
    """An item of an event resumed (or, with ``retry``, retried), to send to the workers again: a ready one or
    one to retry, and on a retry a failed one too, with a fresh retry budget. None for the others."""
    item = item.copy()
    if retry and item.state.status is FAILED:
        retry_unit(item.state, now)
    elif item.state.status not in (READY, RETRYING):
        return None
    item.state.nudged_at = now
    return settle(item, settings)


def item_due(item: Item, settings: Settings) -> float | None:
    """When the sweeper should look at ``item`` if nothing moves it: as a step's unit, and an item over until it
    has handed its lane on."""
    state = item.state
    if item.over:
        if item.successor is None or item.handed_on:
            return None
        return (state.ended_at or 0.0) + settings.stale_after
    return unit_due(state, settings)


def settle(item: Item, settings: Settings) -> Item:
    item.due_at = item_due(item, settings)
    return item


def item_failed(plan: Plan, event: Event, item: Item, now: float, settings: Settings) -> Event | None:
    """The event once ``item`` has failed for good: its map step fails, and the event with it; None if the step
    is no longer running (the event was cancelled, or another item failed first)."""
    state = event.steps.get(item.step_id)
    if state is None or state.status is not RUNNING or event.status in TERMINAL_EVENT:
        return None
    error = item.state.error or {}
    event = event.copy()
    failure = CallFailure(
        f"item {item.index}: {error.get('message', 'failed')}",
        False,
        ErrorKind(error.get("kind", ErrorKind.ERROR.value)),
        {"item": item.index},
    )
    fail_step(event, item.step_id, failure, now)
    return close(plan, event, now, settings)


def items_completed(
    plan: Plan,
    event: Event,
    step_id: str,
    outputs: dict[str, Any],
    note: str | None,
    now: float,
    settings: Settings,
    failure: CallFailure | None = None,
) -> Event | None:
    """The event once every item of its step ``step_id`` is over: the step completes with ``outputs`` (its
    results, unless they were too large, as ``note`` then says) and the event moves on, or it fails with
    ``failure`` (a fleet step whose workloads failed beyond its bound); None if the step is no longer running."""
    state = event.steps.get(step_id)
    if state is None or state.status is not RUNNING or event.status in TERMINAL_EVENT:
        return None
    event = event.copy()
    if failure is not None:
        fail_step(event, step_id, failure, now)
        return close(plan, event, now, settings)
    state = event.own(step_id)
    complete(state, outputs, now)
    state.note = note
    advance(plan, event, now, ended=step_id)
    return close(plan, event, now, settings)
