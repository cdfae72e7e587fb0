"""The workers' side: advancing an event from the unit a message points at, a map step's items lane by lane,
child events started and handed back, and the sweeper's pass over what is overdue."""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from machinery import logs
from machinery.engine import decider
from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.dataflow import contract_failure
from machinery.engine.errors import InvalidData, InvalidState, NotFound
from machinery.engine.kinds.workflow import CHILD
from machinery.engine.plan import Plan, Settings
from machinery.engine.ports import (
    Dispatcher,
    EventStore,
    ServiceCaller,
    Telemetry,
)
from machinery.engine.state import (
    EVENT_FAILED,
    EVENT_PAUSED,
    FAILED,
    IDLE,
    PENDING,
    RETRYING,
    TERMINAL_EVENT,
    Event,
    Item,
)
from machinery.engine.units import parse_unit
from machinery.runtime.events import Events
from machinery.runtime.plans import Clock, Plans, ServiceCache
from machinery.runtime.routes import FleetRoutes
from machinery.runtime.writes import (
    LANE_RUN,
    UNENDED,
    UNFINISHED,
    Observer,
    change_item,
    every_item,
    follow_up,
    hand_back,
    save,
    send,
    send_item,
    update,
)

log = logging.getLogger(__name__)


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
        routes: FleetRoutes | None = None,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.callers = callers
        self.elsewhere = elsewhere or {}
        """By kind of service this runner has no caller for: where to send its units, for workers that have one."""
        self.routes = routes
        """Where fleet steps find their workloads, and their items the hosts that run them; None: no fleets."""
        self.settings = settings
        self.plans = plans
        self.services = services
        self.clock = clock
        self.rng = rng
        self.telemetry = telemetry
        self.events = Events(plans.store, store, dispatcher, settings, plans, clock, telemetry)
        """To reach the child events this runner starts."""
        self.observe = Observer(telemetry, plans, self.events.close_children)

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
                    send(self.dispatcher, event.id, unit)
                sent += len(overdue)
        for item in self.store.due_items(now, limit):
            sent += self._sweep_item(item, now)
        return sent

    def _sweep_item(self, item: Item, now: float) -> int:
        """Move on an item nothing moved: hand its lane on, send it again, or park it while its event is idle."""
        if item.over:
            released = self._hand_on(item)
            if released is not None and self.store.event_status(item.event_id) not in IDLE:
                send_item(self.dispatcher, released, now)
                return 1
            return 0
        if self.store.event_status(item.event_id) in IDLE:
            change_item(self.store, item, decider.parked)
            return 0
        nudged = change_item(self.store, item, lambda i: decider.nudged_item(i, now, self.settings))
        if nudged is None:
            return 0
        send(self.dispatcher, item.event_id, item.unit)
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
        wanted = decider.members_wanted(plan, event, unit)
        members = []
        if wanted is not None and self.routes is not None:
            members = self.routes.members(*wanted, limit=self.settings.max_map_items + 1)
        claimed = decider.claim(
            plan,
            self.services.of(plan),
            event,
            unit,
            now=now,
            token=uuid.uuid4().hex,
            settings=self.settings,
            members=members,
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
            send(self.dispatcher, *waiter)

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
                send_item(self.dispatcher, following, self.clock())
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
            send_item(self.dispatcher, following, self.clock())

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
            running, call, present = claimed
            finished: Item | None = running
            if call is not None and call.service.kind == CHILD:
                self._start_item_child(running, call)
                return
            if call is not None:
                with logs.context(step=call.unit, attempt=call.attempt):
                    try:
                        workflow = self.plans.for_version(item.workflow_id, item.workflow_version).workflow.name
                        outputs, error = self._call(call, event_id, workflow) if present else (None, removed(item))
                    finally:
                        self._release(call)
                    finished = self._finish_item(running, call, outputs, error)
            following = self._after_item(finished) if finished is not None else None
            if following is None:
                return
            item = following
        send_item(self.dispatcher, item, self.clock())

    def _claim_item(self, item: Item) -> tuple[Item, Call | None, bool] | None:
        """The item claimed, its call, and whether to make it: not if it is a fleet step's whose workload was
        removed; None if this worker is not the one to run it."""
        while True:
            plan = self.plans.for_version(item.workflow_id, item.workflow_version)
            present = True
            if item.key is not None:
                route = self._route(plan, item)
                if route is None:
                    return None
                present = route
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
                return changed, call, present
            self._release(call)
            item = self.store.get_item(item.event_id, item.step_id, item.index)

    def _route(self, plan: Plan, item: Item) -> bool | None:
        """For a fleet step's item: True if it runs here, False if its workload was removed (it fails here); None
        if another host holds the workload (the item is sent there) or none does yet (the sweeper sends it again)."""
        if self.routes is None or item.state.status.terminal or item.state.status is PENDING:
            return None
        fleet = plan.graph.steps[item.step_id].fleet or ""
        try:
            host = self.routes.host_of(fleet, item.key or "")
        except NotFound:
            return False
        if host is not None and host == self.routes.here:
            return True
        if host is not None:
            run_at = item.state.run_at if item.state.status is RETRYING else None
            self.routes.send(host, item.event_id, item.unit, max(0.0, (run_at or 0.0) - self.clock()))
        return None

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
        if item.over:
            # A successor released before (an item retried after its event was) leaves the step to be completed.
            released = self._hand_on(item) if item.successor is not None else None
            if released is None:
                self._complete_step(item)
            return released
        if status is FAILED:
            plan = self.plans.for_version(item.workflow_id, item.workflow_version)
            self._update(item.event_id, lambda e: decider.item_failed(plan, e, item, self.clock(), self.settings))
        elif status is RETRYING:
            send_item(self.dispatcher, item, self.clock())
        return None

    def _hand_on(self, item: Item) -> Item | None:
        """Release the next item of a completed item's lane; it, if this worker released it."""
        assert item.successor is not None
        now = self.clock()
        successor = self.store.get_item(item.event_id, item.step_id, item.successor)
        released = change_item(self.store, successor, lambda i: decider.release(i, now, self.settings))
        change_item(self.store, item, lambda i: decider.handed_on(i, self.settings))
        return released

    def _complete_step(self, item: Item) -> None:
        """Complete (or fail) the step of an item over, if every other item is over too: with its outputs
        gathered from them all.

        Whichever lane ends last sees every other item over, as each looks after its own write.
        """
        unfinished = UNFINISHED if item.key is None else UNENDED
        if self.store.list_items(item.event_id, item.step_id, statuses=unfinished, limit=1):
            return
        plan = self.plans.for_version(item.workflow_id, item.workflow_version)
        step = plan.graph.steps[item.step_id]
        items = every_item(self.store, item.event_id, step.id, None)
        outputs, note, failure = plan.kinds[step.id].gather(step, items, self.settings.max_map_results)
        self._update(
            item.event_id,
            lambda e: decider.items_completed(plan, e, step.id, outputs, note, self.clock(), self.settings, failure),
        )

    def _update(self, event_id: str, change: Callable[[Event], Event | None]) -> None:
        update(self.store, self.dispatcher, event_id, change, self.observe)


def removed(item: Item) -> CallFailure:
    """The failure of a fleet step's item whose workload was removed from its fleet before it ran."""
    return CallFailure(f"workload '{item.key}' was removed from its fleet", False, ErrorKind.CONFIG)
