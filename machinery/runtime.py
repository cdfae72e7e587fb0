"""Running events: accepting them, and advancing them one step at a time.

The store holds the truth; a dispatched message only says "look at step X of
event Y". Every change is read, decided by :mod:`machinery.engine.decider`,
and written back conditionally; on a conflict it is read and decided again,
so a duplicated, late or lost message changes nothing that matters and the
sweeper can always resume.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from machinery import logs
from machinery.engine import decider
from machinery.engine.calls import Call, CallFailure
from machinery.engine.errors import InvalidState, NotFound
from machinery.engine.expressions import Expressions
from machinery.engine.health import DOWN, Health
from machinery.engine.model import Service, Workflow
from machinery.engine.plan import Plan, Settings
from machinery.engine.ports import Dispatcher, EventStore, Page, RegistryStore, ServiceCaller, every
from machinery.engine.state import Event
from machinery.engine.units import parse_unit

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Plans:
    """Compiled workflow versions, by (id, version); versions never change, so they are cached for good."""

    def __init__(self, store: RegistryStore, expressions: Expressions) -> None:
        self.store = store
        self.expressions = expressions
        self._plans: dict[tuple[str, int], Plan] = {}

    def of(self, workflow: Workflow) -> Plan:
        return self._plan((workflow.id or workflow.name, workflow.version), lambda: workflow)

    def for_event(self, event: Event) -> Plan:
        key = (event.workflow_id, event.workflow_version)
        return self._plan(key, lambda: self.store.get_workflow_version(*key))

    def _plan(self, key: tuple[str, int], load: Callable[[], Workflow]) -> Plan:
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.of(load(), self.expressions)
        return plan


class ServiceCache:
    """Service definitions and health as a worker sees them, re-read from the store every ``ttl`` seconds."""

    def __init__(self, store: RegistryStore, ttl: float = 2.0, clock: Clock = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Service | None]] = {}
        self._health: tuple[float, dict[str, Health]] | None = None

    def down(self, name: str) -> bool:
        """Whether the latest probe of the service ``name`` found it down."""
        now = self.clock()
        if self._health is None or now - self._health[0] > self.ttl:
            self._health = (now, self.store.health())
        health = self._health[1].get(name)
        return health is not None and health.status == DOWN

    def of(self, plan: Plan) -> dict[str, Service]:
        found = {}
        for name in plan.workflow.service_names:
            service = self.get(name)
            if service is not None:
                found[name] = service
        return found

    def get(self, name: str) -> Service | None:
        now = self.clock()
        hit = self._cache.get(name)
        if hit is None or now - hit[0] > self.ttl:
            try:
                service: Service | None = self.store.get_service(name)
            except NotFound:
                service = None
            hit = self._cache[name] = (now, service)
        return hit[1]


class Events:
    """What users do with events: send, read, list, cancel, pause, resume, retry, signal."""

    def __init__(
        self,
        registry: RegistryStore,
        store: EventStore,
        dispatcher: Dispatcher,
        settings: Settings,
        plans: Plans,
        clock: Clock = time.time,
    ) -> None:
        self.registry = registry
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.plans = plans
        self.clock = clock

    def submit(
        self, workflow_key: str, data: Mapping[str, Any], idempotency_key: str | None = None
    ) -> tuple[Event, bool]:
        """Accept an event once it is durably stored; False with the existing event for a repeated key."""
        plan = self.plans.of(self.registry.get_workflow(workflow_key))
        event = decider.accept(
            plan,
            data,
            event_id=uuid.uuid4().hex,
            now=self.clock(),
            settings=self.settings,
            idempotency_key=idempotency_key,
        )
        stored, created = self.store.create_event(event)
        if created:
            follow_up(self.dispatcher, None, stored)
        return stored, created

    def get(self, event_id: str) -> Event:
        return self.store.get_event(event_id)

    def list_events(
        self,
        *,
        workflow: str | None,
        status: str | None,
        offset: int,
        limit: int,
        data: Mapping[str, Any] | None = None,
    ) -> Page[Event]:
        workflow_id = self.registry.get_workflow(workflow).id if workflow else None
        return self.store.list_events(workflow_id=workflow_id, status=status, offset=offset, limit=limit, data=data)

    def cancel(self, event_id: str) -> Event:
        return self._update(event_id, lambda e: decider.cancel(self.plans.for_event(e), e, self.clock(), self.settings))

    def pause(self, event_id: str) -> Event:
        """Start nothing more of an event; the calls under way finish."""
        return self._update(event_id, lambda e: decider.pause(e, self.clock()))

    def resume(self, event_id: str) -> Event:
        """Go on with a paused event."""
        return self._update(event_id, lambda e: decider.resume(self.plans.for_event(e), e, self.clock(), self.settings))

    def retry(self, event_id: str) -> Event:
        """Run a failed event again from its failed steps."""
        return self._update(event_id, lambda e: decider.retry(self.plans.for_event(e), e, self.clock(), self.settings))

    def rerun(self, event_id: str) -> Event:
        """A new event with the data of ``event_id``, on its workflow's current version (after a fix, say)."""
        event = self.store.get_event(event_id)
        return self.submit(event.workflow_id, event.data)[0]

    def retry_failed(self, workflow_key: str, *, step: str | None = None, limit: int = 1000) -> BulkRetry:
        """Retry the failed events of a workflow (those that failed at ``step``, with one), newest first.

        The events to retry are listed first, then retried one by one: an event that cannot be retried
        (failed by a ``fail`` step, or retried by somebody else meanwhile) is skipped, with the reason.
        """
        workflow_id = self.registry.get_workflow(workflow_key).id
        listed = every(functools.partial(self.store.list_events, workflow_id=workflow_id, status="failed"))
        # Listed before any is retried: a retried event leaves the list, which would shift its pages.
        failed = list(
            itertools.islice((e.id for e in listed if step is None or (e.error or {}).get("step") == step), limit)
        )
        report = BulkRetry()
        for event_id in failed:
            try:
                self.retry(event_id)
            except InvalidState as e:
                report.skipped.append((event_id, str(e)))
            else:
                report.retried.append(event_id)
        return report

    def purge(self, older_than: float, batch: int = 1000) -> int:
        """Delete the finished events created more than ``older_than`` seconds ago; how many."""
        created_before = self.clock() - older_than
        deleted = 0
        while count := self.store.delete_events(created_before=created_before, limit=batch):
            deleted += count
        return deleted

    def signal(self, event_id: str, name: str, payload: Any) -> Event:
        """Deliver a signal to the step waiting for it, or keep it for the step that will wait for it."""
        return self._update(
            event_id,
            lambda e: decider.signal(
                self.plans.for_event(e), e, name, payload, now=self.clock(), settings=self.settings
            ),
        )

    def _update(self, event_id: str, change: Callable[[Event], Event]) -> Event:
        while True:
            event = self.store.get_event(event_id)
            changed = change(event)
            if self.store.save_event(changed):
                follow_up(self.dispatcher, event, changed)
                return changed


@dataclass
class BulkRetry:
    """What :meth:`Events.retry_failed` did."""

    retried: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Event id and the reason it was not retried."""


class Runner:
    """Advances an event from a step a message pointed at, as far as this worker can take it.

    After a step completes, the runner claims the next ready step in the same
    write and calls it at once, so a chain costs one broker message, not one
    per step; any further ready steps (parallel branches) go to the other workers.
    """

    def __init__(
        self,
        store: EventStore,
        dispatcher: Dispatcher,
        callers: Mapping[str, ServiceCaller],
        settings: Settings,
        plans: Plans,
        services: ServiceCache,
        clock: Clock = time.time,
        rng: Callable[[], float] = random.random,
        elsewhere: Mapping[str, Dispatcher] | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.callers = callers
        self.elsewhere = elsewhere or {}
        """By kind of service this runner has no caller for: where to send its units, for workers that have one."""
        self.settings = settings
        self.plans = plans
        self.services = services
        self.clock = clock
        self.rng = rng

    def run(self, event_id: str, unit: str) -> None:
        """Handle the message "look at ``unit`` of ``event_id``"."""
        with logs.context(event_id=event_id, step=unit):
            event, call = self._claim(event_id, unit)
            while call is not None:
                with logs.context(step=call.unit, attempt=call.attempt):
                    try:
                        outputs, error = self._call(call, event.id)
                    finally:
                        self._release(call)
                    event, call = self._finish(event.id, call, outputs, error)

    def sweep(self, limit: int = 500) -> int:
        """Fail the events past their deadline, and send again every unit whose message is overdue or whose
        worker was lost; how many were sent."""
        sent = 0
        now = self.clock()
        for event in self.store.due_events(now, limit):
            if decider.past_deadline(event, now):
                self.store.save_event(decider.expire(self.plans.for_event(event), event, now, self.settings))
                continue
            overdue = decider.overdue_units(event, now, self.settings)
            if overdue and self.store.save_event(decider.nudged(event, overdue, now, self.settings)):
                for unit in overdue:
                    _send(self.dispatcher, event.id, unit)
                sent += len(overdue)
        return sent

    def _claim(self, event_id: str, unit: str) -> tuple[Event, Call | None]:
        while True:
            event = self.store.get_event(event_id)
            plan = self.plans.for_event(event)
            kind = self._kind_elsewhere(plan, unit)
            if kind is not None:
                self._pass_on(event, unit, kind)
                return event, None
            claimed = self._try_claim(plan, event, unit, self.clock())
            if claimed is None:
                return event, None
            changed, call = claimed
            if self.store.save_event(changed):
                follow_up(self.dispatcher, event, changed, call)
                return changed, call
            self._release(call)

    def _try_claim(self, plan: Plan, event: Event, unit: str, now: float) -> tuple[Event, Call | None] | None:
        """The claim of ``unit``; None when there is nothing to do, or when its service is down or has no slot
        free for it.

        In those cases the unit is noted as waiting, and sent again once the service is up or a slot is given back.
        """
        if self._kind_elsewhere(plan, unit) is not None:
            return None
        claimed = decider.claim(
            plan, self.services.of(plan), event, unit, now=now, token=uuid.uuid4().hex, settings=self.settings
        )
        call = claimed[1] if claimed is not None else None
        if call is not None and call.service.healthcheck is not None and self.services.down(call.service.name):
            # Held, not claimed: a call now would only use up its retries. The prober sends it once it is up.
            self.store.hold(call.service.name, (event.id, unit), since=now)
            return None
        limit = call.service.concurrency if call is not None else None
        if call is None or limit is None:
            return claimed
        taken = self.store.acquire_slot(
            call.service.name, limit, call.token, until=call.lease_until, now=now, waiter=(event.id, unit)
        )
        return claimed if taken else None

    def _kind_elsewhere(self, plan: Plan, unit: str) -> str | None:
        """The kind of the service ``unit`` calls, if this runner has no caller for it; else None."""
        step = plan.graph.steps.get(parse_unit(unit)[0])
        if step is None or step.service is None or not plan.kinds[step.id].calls_service:
            return None
        service = self.services.get(step.service)
        if service is None or service.kind in self.callers:
            return None
        return service.kind

    def _pass_on(self, event: Event, unit: str, kind: str) -> None:
        """Leave ``unit`` to the workers that run services of ``kind``, saying so in its state."""
        message = f"waiting for a worker that runs {kind} services (machinery worker --{kind}s)"
        noted = decider.await_worker(event, unit, message)
        if noted is not None:
            # Lost to a concurrent write, the note is made again when the unit is sent again.
            self.store.save_event(noted)
        dispatcher = self.elsewhere.get(kind)
        if dispatcher is not None:
            try:
                dispatcher.dispatch(event.id, unit)
            except Exception:
                log.exception("could not pass %s of event %s on to the %s workers", unit, event.id, kind)

    def _release(self, call: Call | None) -> None:
        """Give back the slot ``call`` held, if its service limits its calls, and wake the unit waiting longest."""
        if call is None or call.service.concurrency is None:
            return
        waiter = self.store.release_slot(call.service.name, call.token)
        if waiter is not None:
            _send(self.dispatcher, *waiter)

    def _call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        caller = self.callers.get(call.service.kind)
        if caller is None:
            return None, CallFailure(f"no caller for services of kind '{call.service.kind}'", transient=False)
        return caller.call(call, event_id)

    def _finish(self, event_id: str, call: Call, outputs: Any, error: CallFailure | None) -> tuple[Event, Call | None]:
        """Record a call's result and, in the same write, claim the next unit this worker will run."""
        while True:
            event = self.store.get_event(event_id)
            plan = self.plans.for_event(event)
            now = self.clock()
            finished = decider.finish(
                plan, event, call, outputs=outputs, error=error, now=now, random=self.rng(), settings=self.settings
            )
            if finished is None:
                return event, None
            changed, next_call = finished, None
            for unit in decider.ready_units(finished):
                claimed = self._try_claim(plan, changed, unit, now)
                if claimed is not None:
                    changed, next_call = claimed
                    break
            if self.store.save_event(changed):
                follow_up(self.dispatcher, event, changed, next_call)
                return changed, next_call
            self._release(next_call)


def follow_up(dispatcher: Dispatcher, before: Event | None, after: Event, claimed: Call | None = None) -> None:
    """After a write: send what it made ready (but the unit this worker goes on with), and wake-ups for its timers."""
    ready = set(decider.ready_units(before)) if before is not None else set()
    skip = claimed.unit if claimed is not None else None
    for unit in decider.ready_units(after):
        if unit not in ready and unit != skip:
            _send(dispatcher, after.id, unit)
    timers = dict(decider.timers(before)) if before is not None else {}
    for unit, at in decider.timers(after):
        if timers.get(unit) != at:
            _send(dispatcher, after.id, unit, at - after.updated_at)


# Longer waits are left to the sweeper: Celery holds a countdown message in the worker's memory until it is due.
MAX_COUNTDOWN = 300.0


def _send(dispatcher: Dispatcher, event_id: str, unit: str, delay: float = 0.0) -> None:
    if delay > MAX_COUNTDOWN:
        return
    try:
        dispatcher.dispatch(event_id, unit, max(0.0, delay))
    except Exception:
        # The event is stored: the sweeper sends the unit again once it is overdue.
        log.exception("could not dispatch %s of event %s", unit, event_id)
