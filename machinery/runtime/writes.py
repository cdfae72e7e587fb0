"""Writing an event back and following it up: the items it fanned out into, the units it made ready, the
timers it set, what it ended (for the metrics), and the outcome of a child handed to its parent.

Every write is conditional: on a conflict the event is read and changed again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator

from machinery.engine import decider
from machinery.engine.calls import Call
from machinery.engine.errors import NotFound
from machinery.engine.plan import Settings
from machinery.engine.ports import (
    Dispatcher,
    EventStore,
    Telemetry,
)
from machinery.engine.state import (
    COMPLETED,
    EVENT_COMPLETED,
    FAILED,
    READY,
    RETRYING,
    Event,
    Item,
    StepStatus,
)
from machinery.runtime.plans import Clock, Plans

log = logging.getLogger(__name__)


def save(
    store: EventStore,
    dispatcher: Dispatcher,
    before: Event,
    after: Event,
    claimed: Call | None = None,
    observe: Callable[[Event, Event], None] | None = None,
) -> bool:
    """Write ``after`` if nobody wrote ``before`` since it was read, with the items it fanned out into, and follow
    it up (and ``observe`` it); whether it was written."""
    if after.spawned:
        # Added first, and again if the write fails and is made again: they are the same items, kept once.
        store.add_items(after.spawned)
    if not store.save_event(after):
        return False
    follow_up(dispatcher, before, after, claimed)
    if observe is not None:
        observe(before, after)
    return True


class Observer:
    """What follows a write that ended something: ``telemetry`` hears of the steps that completed or failed and of
    the event if it ended, each with how long it took; ``completed`` is given the event if it completed."""

    def __init__(
        self, telemetry: Telemetry | None, plans: Plans, completed: Callable[[Event], None] | None = None
    ) -> None:
        self.telemetry = telemetry
        self.plans = plans
        self.completed = completed

    def __call__(self, before: Event, after: Event) -> None:
        if self.completed is not None and after.status is EVENT_COMPLETED and before.status is not EVENT_COMPLETED:
            self.completed(after)
        if self.telemetry is not None:
            self._report(self.telemetry, before, after)

    def _report(self, telemetry: Telemetry, before: Event, after: Event) -> None:
        ended = [
            (step_id, state)
            for step_id, state in after.steps.items()
            if state.status in (COMPLETED, FAILED) and before.steps[step_id].status is not state.status
        ]
        if ended:
            steps = self.plans.for_event(after).graph.steps
            for step_id, state in ended:
                step = steps[step_id]
                seconds = (state.ended_at or after.updated_at) - (state.started_at or after.updated_at)
                telemetry.step_ended(after.workflow_name, step.kind, step.service, state.status.value, seconds)
        if after.status.terminal and not before.status.terminal:
            telemetry.event_ended(after.workflow_name, after.status.value, after.updated_at - after.created_at)


def change_item(store: EventStore, item: Item, change: Callable[[Item], Item | None]) -> Item | None:
    """Write ``change(item)``, reading the item again and changing it again while others write it first; the item
    as written, or None once there is nothing to change."""
    while True:
        changed = change(item)
        if changed is None or store.save_item(changed):
            return changed
        item = store.get_item(item.event_id, item.step_id, item.index)


def every_item(store: EventStore, event_id: str, step_id: str, statuses: Collection[str] | None) -> Iterator[Item]:
    after = -1
    while page := store.list_items(event_id, step_id, statuses=statuses, after=after, limit=ITEM_PAGE):
        yield from page
        after = page[-1].index


def update(
    store: EventStore,
    dispatcher: Dispatcher,
    event_id: str,
    change: Callable[[Event], Event | None],
    observe: Callable[[Event, Event], None] | None = None,
) -> Event:
    """Read, change and write back ``event_id`` until no other write came between, then send what the change made
    ready (see :func:`save`); the event as written, or as read when ``change`` had nothing to do (None)."""
    while True:
        event = store.get_event(event_id)
        changed = change(event)
        if changed is None:
            return event
        if save(store, dispatcher, event, changed, observe=observe):
            return changed


def hand_back(
    store: EventStore,
    dispatcher: Dispatcher,
    plans: Plans,
    child: Event,
    clock: Clock,
    settings: Settings,
    *,
    evaluate: bool = True,
    observe: Callable[[Event, Event], None] | None = None,
) -> Event | None:
    """Apply the outcome of the ended ``child`` to its parent's step, if that still waits for it; the parent as
    it is then, None if it is gone. The API's thread passes ``evaluate=False`` (see ``decider.advance``)."""
    assert child.parent is not None
    child_workflow = plans.for_event(child).workflow

    def adopt(parent: Event) -> Event | None:
        plan = plans.for_event(parent)
        return decider.adopt(plan, parent, child, child_workflow, now=clock(), settings=settings, evaluate=evaluate)

    try:
        return update(store, dispatcher, child.parent["event"], adopt, observe)
    except NotFound:
        return None


def follow_up(dispatcher: Dispatcher, before: Event | None, after: Event, claimed: Call | None = None) -> None:
    """After a write: send what it made ready (but the unit this worker goes on with), and wake-ups for its timers."""
    for item in after.spawned:
        if item.state.status is READY:
            send(dispatcher, after.id, item.unit)
    ready = set(decider.ready_units(before)) if before is not None else set()
    skip = claimed.unit if claimed is not None else None
    for unit in decider.ready_units(after):
        if unit not in ready and unit != skip:
            send(dispatcher, after.id, unit)
    timers = dict(decider.timers(before)) if before is not None else {}
    for unit, at in decider.timers(after):
        if timers.get(unit) != at:
            send(dispatcher, after.id, unit, at - after.updated_at)


# Longer waits are left to the sweeper: Celery holds a countdown message in the worker's memory until it is due.
MAX_COUNTDOWN = 300.0
LANE_RUN = 100
"""Items of a lane one message runs in a row."""
ITEM_PAGE = 1000
UNFINISHED = tuple(status.value for status in StepStatus if status is not StepStatus.COMPLETED)
"""The statuses of a map step's items that are not over: a failed one too, as it fails its step."""
UNENDED = tuple(status.value for status in StepStatus if not status.terminal)
"""The statuses of a fleet step's items that are not over."""


def send_item(dispatcher: Dispatcher, item: Item, now: float) -> None:
    """Send ``item`` to the workers: now, or when its retry is due."""
    run_at = item.state.run_at if item.state.status is RETRYING else None
    send(dispatcher, item.event_id, item.unit, (run_at - now) if run_at is not None else 0.0)


def send(dispatcher: Dispatcher, event_id: str, unit: str, delay: float = 0.0) -> None:
    if delay > MAX_COUNTDOWN:
        return
    try:
        dispatcher.dispatch(event_id, unit, max(0.0, delay))
    except Exception:
        # The event is stored: the sweeper sends the unit again once it is overdue.
        log.exception("could not dispatch %s of event %s", unit, event_id)
