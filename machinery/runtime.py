"""Running events: accepting them, and advancing them one step at a time.

The store holds the truth; a dispatched message only says "look at step X of
event Y". Every change is read, decided by :mod:`machinery.engine.decider`,
and written back conditionally; on a conflict it is read and decided again,
so a duplicated, late or lost message changes nothing that matters and the
sweeper can always resume.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from machinery.engine import decider
from machinery.engine.decider import Call, Plan, Settings, StepError
from machinery.engine.model import Service, Workflow
from machinery.engine.ports import Dispatcher, EventStore, Page, RegistryStore, ServiceCaller
from machinery.engine.state import Event, StepStatus

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Plans:
    """Compiled workflow versions, by (id, version); versions never change, so they are cached for good."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self._plans: dict[tuple[str, int], Plan] = {}

    def of(self, workflow: Workflow) -> Plan:
        key = (workflow.id or workflow.name, workflow.version)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.of(workflow)
        return plan

    def for_event(self, event: Event) -> Plan:
        key = (event.workflow_id, event.workflow_version)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = Plan.of(self.store.get_workflow_version(*key))
        return plan


class ServiceCache:
    """Service definitions as a worker sees them, re-read from the store every ``ttl`` seconds."""

    def __init__(self, store: RegistryStore, ttl: float = 2.0, clock: Clock = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Service | None]] = {}

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
            except LookupError:
                service = None
            hit = self._cache[name] = (now, service)
        return hit[1]


class Events:
    """What users do with events: send, read, list, cancel, retry."""

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
            self._dispatch(stored, decider.ready_steps(stored))
        return stored, created

    def get(self, event_id: str) -> Event:
        return self.store.get_event(event_id)

    def list_events(self, *, workflow: str | None, status: str | None, offset: int, limit: int) -> Page[Event]:
        workflow_id = self.registry.get_workflow(workflow).id if workflow else None
        return self.store.list_events(workflow_id=workflow_id, status=status, offset=offset, limit=limit)

    def cancel(self, event_id: str) -> Event:
        return self._update(event_id, lambda e: decider.cancel(e, self.clock(), self.settings))

    def retry(self, event_id: str) -> Event:
        """Resume a failed event from its failed steps."""
        event = self._update(
            event_id, lambda e: decider.resume(self.plans.for_event(e), e, self.clock(), self.settings)
        )
        self._dispatch(event, decider.ready_steps(event))
        return event

    def _update(self, event_id: str, change: Callable[[Event], Event]) -> Event:
        while True:
            event = self.store.get_event(event_id)
            changed = change(event)
            if self.store.save_event(changed):
                return changed

    def _dispatch(self, event: Event, step_ids: list[str]) -> None:
        for step_id in step_ids:
            try:
                self.dispatcher.dispatch(event.id, step_id)
            except Exception:
                # The event is stored: the sweeper sends the step again once it is overdue.
                log.exception("could not dispatch step %s of event %s", step_id, event.id)


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
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.callers = callers
        self.settings = settings
        self.plans = plans
        self.services = services
        self.clock = clock
        self.rng = rng

    def run(self, event_id: str, step_id: str) -> None:
        """Handle the message "look at ``step_id`` of ``event_id``"."""
        event, call = self._claim(event_id, step_id)
        while call is not None:
            outputs, error = self._call(call, event.id)
            event, call = self._finish(event.id, call, outputs, error)

    def sweep(self, limit: int = 500) -> int:
        """Send again every step whose message is overdue or whose worker was lost; how many were sent."""
        sent = 0
        now = self.clock()
        for event in self.store.due_events(now, limit):
            overdue = decider.overdue_steps(event, now, self.settings)
            if overdue and self.store.save_event(decider.nudged(event, overdue, now, self.settings)):
                for step_id in overdue:
                    self.dispatcher.dispatch(event.id, step_id)
                    sent += 1
        return sent

    def _claim(self, event_id: str, step_id: str) -> tuple[Event, Call | None]:
        while True:
            event = self.store.get_event(event_id)
            plan = self.plans.for_event(event)
            claimed = decider.claim(
                plan,
                self.services.of(plan),
                event,
                step_id,
                now=self.clock(),
                token=uuid.uuid4().hex,
                settings=self.settings,
            )
            if claimed is None:
                return event, None
            changed, call = claimed
            if self.store.save_event(changed):
                return changed, call

    def _call(self, call: Call, event_id: str) -> tuple[Any, StepError | None]:
        caller = self.callers.get(call.service.kind)
        if caller is None:
            return None, StepError(f"no caller for services of kind '{call.service.kind}'", transient=False)
        return caller.call(call, event_id)

    def _finish(self, event_id: str, call: Call, outputs: Any, error: StepError | None) -> tuple[Event, Call | None]:
        """Record a call's result and, in the same write, claim the next step this worker will run."""
        while True:
            event = self.store.get_event(event_id)
            plan = self.plans.for_event(event)
            now = self.clock()
            finished = decider.finish(
                plan, event, call, outputs=outputs, error=error, now=now, random=self.rng(), settings=self.settings
            )
            if finished is None:
                return event, None
            ready = decider.ready_steps(finished)
            changed, next_call = finished, None
            for step_id in ready:
                claimed = decider.claim(
                    plan,
                    self.services.of(plan),
                    changed,
                    step_id,
                    now=now,
                    token=uuid.uuid4().hex,
                    settings=self.settings,
                )
                if claimed is not None:
                    changed, next_call = claimed
                    break
            if self.store.save_event(changed):
                break
        if changed.steps[call.step_id].status is StepStatus.RETRYING:
            delay = (changed.steps[call.step_id].run_at or now) - now
            self.dispatcher.dispatch(event_id, call.step_id, delay=max(0.0, delay))
        for step_id, state in changed.steps.items():
            newly_ready = state.status is StepStatus.READY and event.steps[step_id].status is not StepStatus.READY
            if newly_ready and (next_call is None or step_id != next_call.step_id):
                self.dispatcher.dispatch(event_id, step_id)
        return changed, next_call
