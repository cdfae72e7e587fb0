"""Running events: accepting them, and advancing them one step at a time.

The store holds the truth; a dispatched message only says "look at step X of
event Y". Every change is read, decided by :mod:`machinery.engine.decider`,
and written back conditionally; on a conflict it is read and decided again,
so a duplicated, late or lost message changes nothing that matters and the
sweeper can always resume.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from machinery import logs
from machinery.engine import decider
from machinery.engine.calls import Call, CallFailure, ErrorKind, parse_callback_token
from machinery.engine.dataflow import contract_failure
from machinery.engine.errors import InvalidData, InvalidState, NotFound
from machinery.engine.expressions import Expressions
from machinery.engine.health import DOWN, Health
from machinery.engine.kinds import MAP_RESULTS
from machinery.engine.kinds.workflow import CHILD, contract, contract_key
from machinery.engine.model import DISCARD, Service, Step, Workflow
from machinery.engine.plan import Plan, Settings
from machinery.engine.ports import (
    Dispatcher,
    EventStore,
    Page,
    Position,
    RegistryStore,
    ServiceCaller,
    Telemetry,
    every,
)
from machinery.engine.state import (
    CANCELLED,
    COMPLETED,
    EVENT_COMPLETED,
    EVENT_FAILED,
    EVENT_PAUSED,
    FAILED,
    IDLE,
    READY,
    RETRYING,
    RUNNING,
    TERMINAL_EVENT,
    WAITING,
    Event,
    Item,
    StepStatus,
)
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
        return self.for_version(event.workflow_id, event.workflow_version)

    def for_version(self, workflow_id: str, version: int) -> Plan:
        key = (workflow_id, version)
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
        """The services the plan's steps call, and the contracts of the workflows they run, by their key."""
        found = {}
        for name in plan.workflow.service_names:
            service = self.get(name)
            if service is not None:
                found[name] = service
        for name, version in plan.workflow.children:
            key = contract_key(name, version)
            child = self._cached(key, functools.partial(self._child, name, version))
            if child is not None:
                found[key] = child
        return found

    def _child(self, name: str, version: int | None) -> Service | None:
        """The contract of workflow ``name`` at ``version`` (None: its current one); None if it is gone."""
        try:
            workflow = self.store.get_workflow(name)
            if version is not None and workflow.id is not None:
                workflow = self.store.get_workflow_version(workflow.id, version)
        except NotFound:
            return None
        return contract(workflow, contract_key(name, version))

    def get(self, name: str) -> Service | None:
        return self._cached(name, lambda: self._service(name))

    def _service(self, name: str) -> Service | None:
        try:
            return self.store.get_service(name)
        except NotFound:
            return None

    def _cached(self, key: str, load: Callable[[], Service | None]) -> Service | None:
        now = self.clock()
        hit = self._cache.get(key)
        if hit is None or now - hit[0] > self.ttl:
            hit = self._cache[key] = (now, load())
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
        telemetry: Telemetry | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.plans = plans
        self.clock = clock
        self.observe = Observer(telemetry, plans) if telemetry is not None else None

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
        parent: str | None = None,
        after: Position | None = None,
    ) -> Page[Event]:
        """Newest first, from ``offset`` or past ``after`` (see :meth:`EventStore.list_events`)."""
        workflow_id = self.registry.get_workflow(workflow).id if workflow else None
        return self.store.list_events(
            workflow_id=workflow_id,
            status=status,
            offset=offset,
            limit=limit,
            data=data,
            parent=parent,
            after=after,
        )

    def cancel(self, event_id: str) -> Event:
        """Cancel an unfinished event, and the child events its steps were waiting for, theirs too."""
        event = self._update(
            event_id, lambda e: decider.cancel(self.plans.for_event(e), e, self.clock(), self.settings)
        )
        self._reach_children(event, CANCELLED, self.cancel)
        return event

    def pause(self, event_id: str) -> Event:
        """Start nothing more of an event, nor of the child events it waits for; the calls under way finish."""
        event = self._update(event_id, lambda e: decider.pause(e, self.clock()))
        self._reach_children(event, WAITING, self.pause)
        return event

    def resume(self, event_id: str) -> Event:
        """Go on with a paused event, and with the child events it waits for."""
        event = self._update(
            event_id, lambda e: decider.resume(self.plans.for_event(e), e, self.clock(), self.settings)
        )
        self._rearm(event, retry=False)
        self._reach_children(event, WAITING, self.resume)
        return event

    def retry(self, event_id: str) -> Event:
        """Run a failed event again from its failed steps: a map step from its failed items, and a step whose
        child event failed retries that child, from where it failed, and waits for it again."""
        children = self._failed_children(self.store.get_event(event_id))
        event = self._update(event_id, lambda e: decider.retry(self.plans.for_event(e), e, self.clock(), self.settings))
        self._rearm(event, retry=True)
        # The parent waits first: so a retried child, however quick, finds its step waiting for it.
        for child in children:
            if child.status is EVENT_FAILED:
                self.retry(child.id)
            else:
                # Ended already, say by a retry of its own: its outcome may have found the step not waiting.
                handed = hand_back(
                    self.store,
                    self.dispatcher,
                    self.plans,
                    child,
                    self.clock,
                    self.settings,
                    evaluate=False,
                    observe=self.observe,
                )
                event = handed or event
        return event

    def items(
        self, event_id: str, step_id: str, *, statuses: Collection[str] | None = None, after: int = -1, limit: int
    ) -> list[Item]:
        """A page of the items of a map step, by index; NotFound if the event has no such step."""
        if step_id not in self.store.get_event(event_id).steps:
            raise NotFound(f"event {event_id!r} has no step {step_id!r}")
        return self.store.list_items(event_id, step_id, statuses=statuses, after=after, limit=limit)

    def item_counts(self, event: Event) -> dict[str, dict[str, int]]:
        """How many items of each map step of ``event`` that fanned out are in each status, by step id."""
        return {
            step_id: self.store.count_items(event.id, step_id)
            for step_id, state in event.steps.items()
            if state.fanout is not None
        }

    def _rearm(self, event: Event, *, retry: bool) -> None:
        """Send the items of a resumed or retried event's running map steps to the workers again: those ready
        or to be retried, and on a retry the failed ones."""
        statuses = (READY, RETRYING, FAILED) if retry else (READY, RETRYING)
        now = self.clock()
        for step_id, state in event.steps.items():
            if state.fanout is None or state.status is not RUNNING:
                continue
            for item in _every_item(self.store, event.id, step_id, statuses):
                rearmed = change_item(self.store, item, lambda i: decider.rearm(i, now, self.settings, retry=retry))
                if rearmed is not None:
                    _send_item(self.dispatcher, rearmed, now)

    def _failed_children(self, event: Event) -> list[Event]:
        """The child events of the failed steps of ``event``, if it is failed; InvalidState if one of them
        cannot be retried (cancelled, or failed on purpose)."""
        if event.status is not EVENT_FAILED:
            return []
        children = []
        for step_id, state in event.steps.items():
            if state.status is not FAILED or state.child is None:
                continue
            child = self.store.get_event(state.child)
            if child.status is EVENT_FAILED and (child.error or {}).get("kind") == ErrorKind.FAIL:
                raise InvalidState(f"child event '{child.id}' of step '{step_id}' was failed on purpose")
            if child.status is not EVENT_FAILED and child.status is not EVENT_COMPLETED:
                raise InvalidState(
                    f"child event '{child.id}' of step '{step_id}' is {child.status.value}; it cannot be retried"
                )
            children.append(child)
        return children

    def _reach_children(self, event: Event, status: StepStatus, change: Callable[[str], Event]) -> None:
        """Apply ``change`` to the child event of each step of ``event`` in ``status``, and of each item of its map
        steps waiting for one; a child that cannot take it (over already, say) is left as it is."""
        children = [state.child for state in event.steps.values() if state.child is not None and state.status is status]
        for step_id, state in event.steps.items():
            if state.fanout is not None:
                waiting = _every_item(self.store, event.id, step_id, (WAITING,))
                children += [item.state.child for item in waiting if item.state.child is not None]
        for child in children:
            with contextlib.suppress(InvalidState, NotFound):
                change(child)

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

    def callback(self, token: str, *, outputs: Any = None, error: CallFailure | None = None) -> tuple[Event, str]:
        """Record the result a callback service posted under ``token``: its outputs, checked against its contract,
        or its error; the event and the step's id. NotFound for a token no step waits with, InvalidState once the
        step waits for none."""
        return self._on_callback(
            token,
            lambda plan, service, event, step_id, claim: decider.callback(
                plan,
                service,
                event,
                step_id,
                claim,
                outputs=outputs,
                error=error,
                now=self.clock(),
                random=random.random(),
                settings=self.settings,
            ),
        )

    def heartbeat(self, token: str) -> Event:
        """A callback service still working under ``token``: its step waits until its next heartbeat is due."""
        return self._on_callback(
            token,
            lambda plan, service, event, step_id, claim: decider.heartbeat(
                plan, service, event, step_id, claim, now=self.clock(), settings=self.settings
            ),
        )[0]

    def _on_callback(self, token: str, change: Callable[[Plan, Service, Event, str, str], Event]) -> tuple[Event, str]:
        event_id, step_id, claim = self._callback_target(token)
        event = self._update(
            event_id, lambda e: change(self.plans.for_event(e), self._service_of(e, step_id), e, step_id, claim)
        )
        return event, step_id

    def _callback_target(self, token: str) -> tuple[str, str, str]:
        target = parse_callback_token(token)
        if target is None:
            raise NotFound("no callback is awaited under this token")
        return target

    def _service_of(self, event: Event, step_id: str) -> Service:
        step = self.plans.for_event(event).graph.steps.get(step_id)
        if step is None or step.service is None:
            raise NotFound("no callback is awaited under this token")
        return self.registry.get_service(step.service)

    def _update(self, event_id: str, change: Callable[[Event], Event]) -> Event:
        return update(self.store, self.dispatcher, event_id, change, self.observe)


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
        telemetry: Telemetry | None = None,
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
        self.telemetry = telemetry
        self.observe = Observer(telemetry, plans) if telemetry is not None else None
        self.events = Events(plans.store, store, dispatcher, settings, plans, clock, telemetry)
        """To reach the child events this runner starts."""

    def run(self, event_id: str, unit: str) -> None:
        """Handle the message "look at ``unit`` of ``event_id``"."""
        with logs.context(event_id=event_id, step=unit):
            if unit == decider.PARENT_UNIT:
                self._hand_back(event_id)
                return
            step_id, index = parse_unit(unit)
            if index is not None:
                self._run_lane(event_id, step_id, index)
                return
            event, call = self._claim(event_id, unit)
            while call is not None:
                with logs.context(step=call.unit, attempt=call.attempt):
                    if call.service.kind == CHILD:
                        event, call = self._start_child(event, call)
                        continue
                    try:
                        outputs, error = self._call(call, event.id, event.workflow_name)
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
        for item in self.store.due_items(now, limit):
            sent += self._sweep_item(item, now)
        return sent

    def _sweep_item(self, item: Item, now: float) -> int:
        """Move on an item nothing moved: hand its lane on, send it again, or park it while its event is idle."""
        if item.state.status is COMPLETED:
            released = self._hand_on(item)
            if released is not None and self.store.event_status(item.event_id) not in IDLE:
                _send_item(self.dispatcher, released, now)
                return 1
            return 0
        if self.store.event_status(item.event_id) in IDLE:
            change_item(self.store, item, decider.parked)
            return 0
        nudged = change_item(self.store, item, lambda i: decider.nudged_item(i, now, self.settings))
        if nudged is None:
            return 0
        _send(self.dispatcher, item.event_id, item.unit)
        return 1

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
            if save(self.store, self.dispatcher, event, changed, call, self.observe):
                return changed, call
            self._release(call)

    def _try_claim(self, plan: Plan, event: Event, unit: str, now: float) -> tuple[Event, Call | None] | None:
        """The claim of ``unit``; None when there is nothing to do, or when its service is down or has no slot
        free for it (see :meth:`_admit`)."""
        if self._kind_elsewhere(plan, unit) is not None:
            return None
        claimed = decider.claim(
            plan, self.services.of(plan), event, unit, now=now, token=uuid.uuid4().hex, settings=self.settings
        )
        call = claimed[1] if claimed is not None else None
        return claimed if call is None or self._admit(call, event.id, unit, now) else None

    def _admit(self, call: Call, event_id: str, unit: str, now: float) -> bool:
        """Whether ``call`` may be made now: its service is not down, and has a slot free for it.

        Otherwise the unit is noted as waiting, and sent again once the service is up or a slot is given back.
        """
        if call.service.healthcheck is not None and self.services.down(call.service.name):
            # Held, not claimed: a call now would only use up its retries. The prober sends it once it is up.
            self.store.hold(call.service.name, (event_id, unit), since=now)
            return False
        limit = call.service.concurrency
        if limit is None:
            return True
        return self.store.acquire_slot(
            call.service.name, limit, call.token, until=call.lease_until, now=now, waiter=(event_id, unit)
        )

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

    def _call(self, call: Call, event_id: str, workflow: str) -> tuple[Any, CallFailure | None]:
        started = time.monotonic()
        caller = self.callers.get(call.service.kind)
        outputs: Any = None
        error: CallFailure | None = CallFailure(f"no caller for services of kind '{call.service.kind}'", False)
        if caller is not None:
            outputs, error = caller.call(call, event_id)
        if self.telemetry is not None:
            kind = error.kind.value if error is not None else None
            self.telemetry.call_done(workflow, call.service.name, time.monotonic() - started, kind)
        return outputs, error

    def _start_child(self, event: Event, call: Call) -> tuple[Event, Call | None]:
        """Start the child event of a claimed ``workflow`` step, and record it: the step waits for it."""
        child_id, created, error = self._create_child(event, call)
        event, next_call = self._finish(event.id, call, child_id, error)
        if child_id is None:
            return event, next_call
        if event.steps[call.step_id].child != child_id:
            # Not recorded: another worker took the claim over (and records the same child), or the event ended.
            if event.status in TERMINAL_EVENT:
                with contextlib.suppress(InvalidState):
                    self.events.cancel(child_id)
        elif event.status is EVENT_PAUSED:
            with contextlib.suppress(InvalidState):
                self.events.pause(child_id)
        elif not created:
            # Started by a claim that was lost; if it has ended, its outcome may have found the step not waiting.
            child = self.store.get_event(child_id)
            if child.status in TERMINAL_EVENT:
                event = (
                    hand_back(
                        self.store, self.dispatcher, self.plans, child, self.clock, self.settings, observe=self.observe
                    )
                    or event
                )
        return event, next_call

    def _start_item_child(self, item: Item, call: Call) -> None:
        """Start the child event of a claimed item of a map over a workflow: the item waits for it."""
        child_id, created, error = self._create_child(self.store.get_event(item.event_id), call, item.index)
        if child_id is None:
            finished = self._finish_item(item, call, None, error)
            following = self._after_item(finished) if finished is not None else None
            if following is not None:
                _send_item(self.dispatcher, following, self.clock())
            return
        started = change_item(self.store, item, lambda i: decider.item_child_started(i, call, child_id, self.settings))
        if started is None or created:
            return
        # Started by a claim that was lost, or before a retry of the parent: a failed child is retried, and the
        # outcome of one that has ended is handed back now.
        child = self.store.get_event(child_id)
        if child.status is EVENT_FAILED:
            with contextlib.suppress(InvalidState):
                self.events.retry(child_id)
                return
        if child.status in TERMINAL_EVENT:
            self._hand_back_item(child)

    def _hand_back_item(self, child: Event) -> None:
        """Hand the outcome of the ended ``child`` to the item of a map over a workflow that waits for it, and go
        on with its lane."""
        assert child.parent is not None
        try:
            item = self.store.get_item(child.parent["event"], child.parent["step"], child.parent["item"])
        except NotFound:
            return
        workflow = self.plans.for_event(child).workflow
        adopted = change_item(
            self.store, item, lambda i: decider.adopt_item(i, child, workflow, self.clock(), self.settings)
        )
        following = self._after_item(adopted) if adopted is not None else None
        if following is not None:
            _send_item(self.dispatcher, following, self.clock())

    def _create_child(
        self, event: Event, call: Call, item: int | None = None
    ) -> tuple[str | None, bool, CallFailure | None]:
        """The id of the child event of ``call`` (of ``item``, for a map) and whether it was created now (not by a
        claim before it), or why it cannot be."""
        depth = (event.parent or {}).get("depth", 0) + 1
        if depth > self.settings.max_workflow_depth:
            message = (
                f"the child event would be nested {depth} deep, more than the {self.settings.max_workflow_depth} "
                "allowed (MACHINERY_MAX_WORKFLOW_DEPTH)"
            )
            return None, False, CallFailure(message, False, ErrorKind.CONFIG)
        workflow_id, version = call.service.id or "", call.service.revision
        try:
            plan = self.plans.for_version(workflow_id, version)
        except NotFound:
            return None, False, CallFailure(f"{call.service.name} is no longer registered", False, ErrorKind.CONFIG)
        parent: dict[str, Any] = {"event": event.id, "step": call.step_id, "depth": depth}
        if item is not None:
            parent["item"] = item
        try:
            child = decider.accept(
                plan,
                call.inputs,
                event_id=uuid.uuid4().hex,
                now=self.clock(),
                settings=self.settings,
                idempotency_key=call.idempotency_key,
                parent=parent,
            )
        except InvalidData as e:
            what = f"step '{call.step_id}' cannot start workflow '{plan.workflow.name}': "
            return None, False, contract_failure(what, list(e.problems), ErrorKind.INPUT)
        stored, created = self.store.create_event(child)
        if created:
            follow_up(self.dispatcher, None, stored)
        return stored.id, created, None

    def _hand_back(self, child_id: str) -> None:
        """Handle ``@parent``: hand an ended child's outcome to its parent's step (or item), then note it handed
        back."""
        child = self.store.get_event(child_id)
        state = child.to_parent
        if child.parent is None or child.status not in TERMINAL_EVENT or state is None or state.status.terminal:
            return
        if "item" in child.parent:
            self._hand_back_item(child)
        else:
            hand_back(self.store, self.dispatcher, self.plans, child, self.clock, self.settings, observe=self.observe)
        update(self.store, self.dispatcher, child_id, lambda c: decider.handed_back(c, self.clock(), self.settings))

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
            if save(self.store, self.dispatcher, event, changed, next_call, self.observe):
                return changed, next_call
            self._release(next_call)

    # Items of map steps

    def _run_lane(self, event_id: str, step_id: str, index: int) -> None:
        """Run item ``index`` of a map step and, as each completes, the next of its lane: up to :data:`LANE_RUN`
        items for one message, after which the lane goes back to the broker, so that other work gets its turn."""
        try:
            item = self.store.get_item(event_id, step_id, index)
        except NotFound:
            return
        for _ in range(LANE_RUN):
            claimed = self._claim_item(item)
            if claimed is None:
                return
            finished: Item | None = claimed[0]
            call = claimed[1]
            if call is not None and call.service.kind == CHILD:
                self._start_item_child(claimed[0], call)
                return
            if call is not None:
                with logs.context(step=call.unit, attempt=call.attempt):
                    try:
                        workflow = self.plans.for_version(item.workflow_id, item.workflow_version).workflow.name
                        outputs, error = self._call(call, event_id, workflow)
                    finally:
                        self._release(call)
                    finished = self._finish_item(claimed[0], call, outputs, error)
            following = self._after_item(finished) if finished is not None else None
            if following is None:
                return
            item = following
        _send_item(self.dispatcher, item, self.clock())

    def _claim_item(self, item: Item) -> tuple[Item, Call | None] | None:
        while True:
            plan = self.plans.for_version(item.workflow_id, item.workflow_version)
            kind = self._kind_elsewhere(plan, item.unit)
            if kind is not None:
                dispatcher = self.elsewhere.get(kind)
                if dispatcher is not None:
                    dispatcher.dispatch(item.event_id, item.unit)
                return None
            status = self.store.event_status(item.event_id)
            now = self.clock()
            claimed = decider.claim_item(
                plan, self.services.of(plan), status, item, now=now, token=uuid.uuid4().hex, settings=self.settings
            )
            if claimed is None:
                return None
            changed, call = claimed
            if call is not None and not self._admit(call, item.event_id, item.unit, now):
                return None
            if self.store.save_item(changed):
                return changed, call
            self._release(call)
            item = self.store.get_item(item.event_id, item.step_id, item.index)

    def _finish_item(self, item: Item, call: Call, outputs: Any, error: CallFailure | None) -> Item | None:
        def finish(item: Item) -> Item | None:
            status = self.store.event_status(item.event_id)
            return decider.finish_item(
                item,
                call,
                status=status,
                outputs=outputs,
                error=error,
                now=self.clock(),
                random=self.rng(),
                settings=self.settings,
            )

        return change_item(self.store, item, finish)

    def _after_item(self, item: Item) -> Item | None:
        """What follows a change of ``item``: its lane's next item, released, to run now if there is one."""
        status = item.state.status
        if status is FAILED:
            plan = self.plans.for_version(item.workflow_id, item.workflow_version)
            self._update(item.event_id, lambda e: decider.item_failed(plan, e, item, self.clock(), self.settings))
        elif status is RETRYING:
            _send_item(self.dispatcher, item, self.clock())
        elif status is COMPLETED:
            if item.successor is not None:
                return self._hand_on(item)
            self._complete_map(item)
        return None

    def _hand_on(self, item: Item) -> Item | None:
        """Release the next item of a completed item's lane; it, if this worker released it."""
        assert item.successor is not None
        now = self.clock()
        successor = self.store.get_item(item.event_id, item.step_id, item.successor)
        released = change_item(self.store, successor, lambda i: decider.release(i, now, self.settings))
        change_item(self.store, item, lambda i: decider.handed_on(i, self.settings))
        return released

    def _complete_map(self, item: Item) -> None:
        """Complete the map step of the last item of a lane, if every other item has completed too.

        Whichever lane ends last sees every other item completed, as each looks after its own write.
        """
        if self.store.list_items(item.event_id, item.step_id, statuses=UNFINISHED, limit=1):
            return
        plan = self.plans.for_version(item.workflow_id, item.workflow_version)
        step = plan.graph.steps[item.step_id]
        outputs, note = self._results(item.event_id, step)
        self._update(
            item.event_id,
            lambda e: decider.items_completed(plan, e, step.id, outputs, note, self.clock(), self.settings),
        )

    def _results(self, event_id: str, step: Step) -> tuple[dict[str, Any], str | None]:
        """A map step's outputs: its items' answers in order, unless it discards them or they are too large."""
        if step.results == DISCARD:
            return {}, None
        results, size = [], 0
        for item in _every_item(self.store, event_id, step.id, None):
            size += len(orjson.dumps(item.state.outputs))
            if size > self.settings.max_map_results:
                note = (
                    f"its results are larger than {self.settings.max_map_results} bytes: each item keeps its own "
                    "(GET /events/<id>/steps/<step>/items)"
                )
                return {}, note
            results.append(item.state.outputs)
        return {MAP_RESULTS.name: results}, None

    def _update(self, event_id: str, change: Callable[[Event], Event | None]) -> None:
        update(self.store, self.dispatcher, event_id, change, self.observe)


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
    """Reports to ``telemetry`` what a write ended: the steps that completed or failed, and the event if it ended,
    each with how long it took."""

    def __init__(self, telemetry: Telemetry, plans: Plans) -> None:
        self.telemetry = telemetry
        self.plans = plans

    def __call__(self, before: Event, after: Event) -> None:
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
                self.telemetry.step_ended(after.workflow_name, step.kind, step.service, state.status.value, seconds)
        if after.status.terminal and not before.status.terminal:
            self.telemetry.event_ended(after.workflow_name, after.status.value, after.updated_at - after.created_at)


def change_item(store: EventStore, item: Item, change: Callable[[Item], Item | None]) -> Item | None:
    """Write ``change(item)``, reading the item again and changing it again while others write it first; the item
    as written, or None once there is nothing to change."""
    while True:
        changed = change(item)
        if changed is None or store.save_item(changed):
            return changed
        item = store.get_item(item.event_id, item.step_id, item.index)


def _every_item(store: EventStore, event_id: str, step_id: str, statuses: Collection[str] | None) -> Iterator[Item]:
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
            _send(dispatcher, after.id, item.unit)
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
LANE_RUN = 100
"""Items of a lane one message runs in a row."""
ITEM_PAGE = 1000
UNFINISHED = tuple(status.value for status in StepStatus if status is not StepStatus.COMPLETED)


def _send_item(dispatcher: Dispatcher, item: Item, now: float) -> None:
    """Send ``item`` to the workers: now, or when its retry is due."""
    run_at = item.state.run_at if item.state.status is RETRYING else None
    _send(dispatcher, item.event_id, item.unit, (run_at - now) if run_at is not None else 0.0)


def _send(dispatcher: Dispatcher, event_id: str, unit: str, delay: float = 0.0) -> None:
    if delay > MAX_COUNTDOWN:
        return
    try:
        dispatcher.dispatch(event_id, unit, max(0.0, delay))
    except Exception:
        # The event is stored: the sweeper sends the unit again once it is overdue.
        log.exception("could not dispatch %s of event %s", unit, event_id)
