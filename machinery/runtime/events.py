"""What users do with events: send, read, list, cancel, pause, resume, retry, rerun and signal them, and the
results that callback services post."""

from __future__ import annotations

import contextlib
import functools
import itertools
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from machinery.engine import decider
from machinery.engine.calls import CallFailure, ErrorKind, parse_callback_token
from machinery.engine.errors import InvalidState, NotFound
from machinery.engine.model import Service
from machinery.engine.plan import Plan, Settings
from machinery.engine.ports import (
    Dispatcher,
    EventStore,
    Page,
    Position,
    RegistryStore,
    Telemetry,
    every,
)
from machinery.engine.state import (
    CANCELLED,
    EVENT_COMPLETED,
    EVENT_FAILED,
    FAILED,
    READY,
    RETRYING,
    RUNNING,
    SKIPPED,
    WAITING,
    Event,
    Item,
    StepStatus,
)
from machinery.runtime.plans import Clock, Plans
from machinery.runtime.writes import Observer, change_item, every_item, follow_up, hand_back, send_item, update


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
        self.observe = Observer(telemetry, plans, self.close_children)

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
        self._reach_children(event, WAITING, self._hand_back_again)
        return event

    def close_children(self, event: Event) -> None:
        """Cancel the children an event that completed early (by a ``succeed`` step) leaves running: those of its
        skipped steps, and those its map steps' items wait for."""
        self._reach_children(event, SKIPPED, self.cancel)

    def _hand_back_again(self, child_id: str) -> Event:
        """Send the outcome of a child that ended while its parent had failed to the parent, retried since."""
        return update(
            self.store, self.dispatcher, child_id, lambda c: decider.hand_back_again(c, self.clock(), self.settings)
        )

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
            for item in every_item(self.store, event.id, step_id, statuses):
                rearmed = change_item(self.store, item, lambda i: decider.rearm(i, now, self.settings, retry=retry))
                if rearmed is not None:
                    send_item(self.dispatcher, rearmed, now)

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
                waiting = every_item(self.store, event.id, step_id, (WAITING,))
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
