"""The ports: what the engine's adapters provide, as Protocols.

Stores keep definitions and event state; every write that can race is atomic
and conditional, and raises :class:`~machinery.engine.errors.Conflict` (or
returns False, for event state) instead of overwriting somebody else's write.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from machinery.engine.calls import Call, CallFailure
from machinery.engine.fleet_ports import FleetStore
from machinery.engine.health import Health
from machinery.engine.model import Executable, Service, Workflow
from machinery.engine.state import Event, EventStatus, Item
from machinery.engine.timetable import Schedule

T = TypeVar("T")


COUNT_LIMIT = 10_000
"""How far a store counts the events a search matches: past it, a total says only "more than this"."""

SEARCH_SECONDS = 1.0
"""How long a search of events by data may take before it stops and answers with what it found so far."""

Position = tuple[float, str]
"""Where a listing of events stands: the ``created_at`` and the id of the last event it gave."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    exact: bool = True
    """False when ``total`` is a lower bound, not the count: a count stops at COUNT_LIMIT or at a search's time."""
    complete: bool = True
    """False when a search stopped at its time limit: later pages may hold more matching events."""


def every(list_page: Callable[..., Page[T]], page_size: int = 100) -> Iterator[T]:
    """Every item of a listing that ``list_page(offset=..., limit=...)`` gives a page at a time."""
    offset = 0
    while True:
        page = list_page(offset=offset, limit=page_size)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


@dataclass(frozen=True)
class Statistics:
    """How much work there is, as the store sees it now."""

    events: Mapping[tuple[str, str], int]
    """Events by workflow id and status: counters kept as events change, so read without counting them."""
    overdue: int
    """Unfinished events whose due time has passed: the sweeper's backlog."""
    slots: Mapping[str, tuple[int, int]]
    """By service: calls holding one of its slots, and units waiting for one or for the service to be up."""


class RegistryStore(Protocol):
    """Services and workflows.

    A workflow is registered against the revisions of the services it was
    checked with; the store refuses it if any of them changed since, and a
    service is replaced or deleted only while the set of workflows using it is
    the one the caller checked. So a check and the write it justifies cannot
    be separated by another writer.
    """

    def add_service(self, service: Service, *, executable_revision: int | None = None) -> Service:
        """Store a new service with a fresh id and revision 1; Conflict if the name is taken, or the executable a
        command service runs is no longer at ``executable_revision``, the revision it was checked against."""

    def get_service(self, name: str) -> Service:
        """NotFound if there is no such service."""

    def list_services(self, *, offset: int, limit: int) -> Page[Service]:
        """Ordered by name."""

    def service_users(self, name: str) -> list[str]:
        """Names of the workflows that use the service, sorted; NotFound if there is no such service."""

    def replace_service(
        self, service: Service, *, revision: int, users: list[str], executable_revision: int | None = None
    ) -> Service:
        """Replace the service named ``service.name``, keeping its id, at revision + 1.

        Conflict if its revision is no longer ``revision``, the workflows using it are no longer ``users``, or
        the executable a command service runs is no longer at ``executable_revision``.
        """

    def delete_service(self, name: str) -> None:
        """NotFound if absent; Conflict naming the workflows (in ``problems``) if any uses it."""

    def add_executable(self, executable: Executable) -> Executable:
        """Store a new executable with a fresh id and revision 1; Conflict if the name is taken."""

    def get_executable(self, name: str) -> Executable:
        """NotFound if there is no such executable."""

    def list_executables(self, *, offset: int, limit: int) -> Page[Executable]:
        """Ordered by name."""

    def replace_executable(self, executable: Executable, *, revision: int, users: list[str]) -> Executable:
        """Replace the executable of that name, keeping its id, at revision + 1; Conflict if it is no longer at
        ``revision`` or the command services running it are no longer ``users`` (those checked against the new
        one), NotFound if it is gone. So a check and the write it justifies cannot be separated by another writer,
        as for services and the workflows using them."""

    def delete_executable(self, name: str) -> None:
        """NotFound if absent; Conflict naming the command services (in ``problems``) if any runs it."""

    def add_workflow(self, workflow: Workflow, *, services: Mapping[str, int]) -> Workflow:
        """Store a new workflow at version 1 with a fresh id.

        ``services`` maps each service it uses to the revision it was checked
        against. Conflict if the name is taken or any of those services changed
        or went away since.
        """

    def get_workflow(self, key: str) -> Workflow:
        """By id or by name; NotFound if neither matches."""

    def get_workflow_version(self, workflow_id: str, version: int) -> Workflow:
        """A version as it was registered; kept after the workflow is replaced or deleted, for its events."""

    def list_workflows(self, *, offset: int, limit: int) -> Page[Workflow]:
        """Ordered by name."""

    def replace_workflow(self, workflow: Workflow, *, version: int, services: Mapping[str, int]) -> Workflow:
        """Store ``workflow`` (same id) as version + 1; Conflict if the current version is not ``version``
        or a service changed since it was checked."""

    def delete_workflow(self, key: str) -> None:
        """By id or by name; NotFound if absent. Releases the services it used."""

    def save_health(self, service: str, health: Health) -> None:
        """Record the health of ``service`` after a probe, in place of the one before."""

    def health(self) -> dict[str, Health]:
        """The last recorded health of each probed service, by name."""


class ItemStore(Protocol):
    """The items of map steps, one record each (see :class:`~machinery.engine.state.Item`), so that a
    transition of one item reads and writes that item only."""

    def add_items(self, items: Sequence[Item]) -> None:
        """Store new items. An item already stored (same event, step and index) is kept as it is, so that
        adding the same items again (after a redelivered message, say) changes nothing."""

    def get_item(self, event_id: str, step_id: str, index: int) -> Item:
        """NotFound if there is no such item."""

    def save_item(self, item: Item) -> bool:
        """Write ``item`` if the stored version is still ``item.version``, as :meth:`EventStore.save_event`."""

    def list_items(
        self, event_id: str, step_id: str, *, statuses: Collection[str] | None = None, after: int = -1, limit: int
    ) -> list[Item]:
        """Up to ``limit`` items of a step in the order of their index, from the first past ``after``;
        with ``statuses``, only the items in one of them. Each page costs the same however deep it is."""

    def count_items(self, event_id: str, step_id: str) -> dict[str, int]:
        """How many items of a step are in each status; statuses with none are left out."""

    def due_items(self, now: float, limit: int) -> list[Item]:
        """Items whose ``due_at`` has come, earliest first, found without looking at the others."""


class EventStore(ItemStore, Protocol):
    """Events, and the items of their map steps."""

    def create_event(self, event: Event) -> tuple[Event, bool]:
        """Store a new event durably; with an idempotency key already used for the same
        workflow, store nothing and return the existing event and False."""

    def get_event(self, event_id: str) -> Event:
        """NotFound if there is no such event."""

    def save_event(self, event: Event) -> bool:
        """Write ``event`` if the stored version is still ``event.version``.

        On success the stored version, and ``event.version``, become one more,
        and True is returned; otherwise nothing is written and False is returned.
        """

    def list_events(
        self,
        *,
        workflow_id: str | None,
        status: str | None,
        offset: int,
        limit: int,
        data: Mapping[str, Any] | None = None,
        parent: str | None = None,
        after: Position | None = None,
    ) -> Page[Event]:
        """Newest first; with ``data``, only the events whose data holds those values (see ``data_conditions``);
        with ``parent``, only the child events of that event.

        With ``after`` (the position of the last event of the page before, ``offset`` then 0), the events past
        it: each page then costs the same however deep it is, and events created meanwhile, which come before
        it, neither shift the pages nor repeat an event. Without ``data``, ``total`` is exact and counted
        without reading the events; with it, it stops at COUNT_LIMIT, and a search on fields that no workflow
        declares searchable stops after SEARCH_SECONDS, with the page ``complete`` False.
        """

    def due_events(self, now: float, limit: int) -> list[Event]:
        """Events whose ``due_at`` has come, earliest first.

        Those are unfinished events, and ended ones whose notification is still to be sent: an ended
        event has no ``due_at`` otherwise.
        """

    def delete_events(self, *, created_before: float, limit: int) -> int:
        """Delete up to ``limit`` finished events created before ``created_before``, oldest first, with their
        items; how many events."""

    def event_status(self, event_id: str) -> EventStatus:
        """The status of an event, read without its document (which a large map's items can make large);
        NotFound if there is no such event."""

    def acquire_slot(
        self, service: str, limit: int, holder: str, *, until: float, now: float, waiter: tuple[str, str]
    ) -> bool:
        """Take one of the ``limit`` slots of ``service`` for ``holder`` until ``until``.

        When every one is held past ``now``, note ``waiter`` (an event id and a unit) as
        waiting for a slot, once however often it is noted, and answer False. A slot whose
        holder never gave it back (a worker that died) is free again once its time is over.
        """

    def hold(self, service: str, waiter: tuple[str, str], *, since: float) -> None:
        """Note ``waiter`` (an event id and a unit) as waiting for ``service``, once however often it is noted."""

    def take_waiters(self, service: str) -> list[tuple[str, str]]:
        """Every waiter noted for ``service`` (by :meth:`hold` or :meth:`acquire_slot`), taken off the list."""

    def statistics(self, now: float) -> Statistics:
        """The counts of :class:`Statistics`, as of ``now``."""

    def recount_events(self) -> None:
        """Count the events by workflow and status again, reading them all, in place of the counters that
        :meth:`statistics` and the totals of :meth:`list_events` read."""

    def release_slot(self, service: str, holder: str) -> tuple[str, str] | None:
        """Give back ``holder``'s slot of ``service``; then the waiter noted first, taken off the list, to wake up.

        None when ``holder`` held no slot, or nobody waits. A slot given back while a
        waiter is being noted is either taken by it or wakes it: no waiter is forgotten.
        """


class ScheduleStore(Protocol):
    """Schedules (see :mod:`machinery.engine.timetable`), and the events they made."""

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Store a new schedule with a fresh id and version 1; Conflict if the name is taken."""

    def get_schedule(self, key: str) -> Schedule:
        """By id or by name; NotFound if neither matches."""

    def list_schedules(self, *, offset: int, limit: int) -> Page[Schedule]:
        """Ordered by name."""

    def save_schedule(self, schedule: Schedule) -> bool:
        """Write ``schedule`` if the stored version is still ``schedule.version``, as :meth:`EventStore.save_event`:
        of the schedulers deciding the same tick from the same record, one only succeeds."""

    def delete_schedule(self, key: str) -> None:
        """By id or by name; NotFound if neither matches. The events it made stay."""

    def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        """Schedules whose ``due_at`` has come, earliest first, found without looking at the others."""

    def schedule_events(self, schedule: Schedule, *, offset: int, limit: int) -> Page[Event]:
        """The events the schedule made (those of its workflow whose idempotency key begins with
        :func:`~machinery.engine.timetable.key_prefix`), the latest run first."""


# Fleets


class Store(RegistryStore, EventStore, ScheduleStore, FleetStore, Protocol):
    """One database holding both definitions and event state."""

    def ping(self) -> None:
        """Raise if the database cannot be reached now."""


class Dispatcher(Protocol):
    """Sends the nudge "look at step X of event Y" to the workers."""

    def dispatch(self, event_id: str, step_id: str, delay: float = 0.0) -> None: ...


class Telemetry(Protocol):
    """Where the runtime reports what it timed, for metrics: each call, and each step and event that ended."""

    def call_done(self, workflow: str, service: str, seconds: float, error: str | None) -> None:
        """A call of ``service`` took ``seconds`` and failed with the error kind ``error``, or succeeded (None)."""

    def step_ended(self, workflow: str, kind: str, service: str | None, status: str, seconds: float) -> None:
        """A step completed or failed, ``seconds`` after it started (its last attempt, for a step that calls)."""

    def event_ended(self, workflow: str, status: str, seconds: float) -> None:
        """An event completed, failed or was cancelled, ``seconds`` after it was accepted."""


class ServiceCaller(Protocol):
    """Makes one call of one kind of service."""

    def call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        """The service's answer as decoded JSON, or the error that prevented one."""
