"""The embedded store: one SQLite file, shared safely by threads and processes.

Definitions and events are kept as JSON documents (the shapes of
:mod:`machinery.codec` and :meth:`Event.to_doc`), next to the columns that
queries and conditional writes need. WAL mode lets readers run beside the one
writer; every write that reads before it writes holds the write lock from its
first statement (``BEGIN IMMEDIATE``), so what it checked cannot change under it.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any, TypeVar
from uuid import uuid4

import orjson

from machinery.codec import (
    executable_from_dict,
    executable_to_dict,
    fleet_from_dict,
    fleet_to_dict,
    lifecycle_from_dict,
    lifecycle_to_dict,
    service_to_dict,
    workflow_to_dict,
    workload_from_dict,
)
from machinery.engine.errors import Conflict, NotFound, Problem
from machinery.engine.fleets import Fleet, Host, LifecycleEvent, Workload, WorkloadState
from machinery.engine.health import Health
from machinery.engine.model import CommandTarget, Executable, Service, Workflow
from machinery.engine.ports import COUNT_LIMIT, SEARCH_SECONDS, Page, Position, Statistics
from machinery.engine.state import Event, EventStatus, Item
from machinery.engine.timetable import Schedule, key_prefix
from machinery.store import data_conditions, load_service, load_workflow

T = TypeVar("T")

_BUSY_TIMEOUT = 30.0
"""Seconds a statement waits for another connection's write lock before it fails."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS executables (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    revision INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_users (
    service TEXT NOT NULL REFERENCES services (name),
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    PRIMARY KEY (service, workflow_id)
);
CREATE INDEX IF NOT EXISTS service_users_by_workflow ON service_users (workflow_id);
CREATE TABLE IF NOT EXISTS workflow_versions (
    workflow_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (workflow_id, version)
);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL,
    idempotency_key TEXT,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    UNIQUE (workflow_id, idempotency_key)
);
-- One index per combination of the listing's filters, each in the listing's order, so that a page reads its
-- own rows only. They replace two older ones, which ordered neither by id nor a workflow's events of any status.
DROP INDEX IF EXISTS events_by_workflow;
DROP INDEX IF EXISTS events_by_time;
CREATE INDEX IF NOT EXISTS events_newest ON events (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_of_workflow ON events (workflow_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_in_status ON events (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_of_workflow_in_status ON events (workflow_id, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_due ON events (due_at) WHERE due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS service_health (
    service TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (
    service TEXT NOT NULL,
    holder TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (service, holder)
);
CREATE TABLE IF NOT EXISTS slot_waiters (
    service TEXT NOT NULL,
    event_id TEXT NOT NULL,
    unit TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (service, event_id, unit)
);
CREATE INDEX IF NOT EXISTS slot_waiters_in_order ON slot_waiters (service, since);
CREATE TABLE IF NOT EXISTS items (
    event_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    due_at REAL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (event_id, step_id, idx)
);
CREATE INDEX IF NOT EXISTS items_by_status ON items (event_id, step_id, status, idx);
CREATE INDEX IF NOT EXISTS items_due ON items (due_at) WHERE due_at IS NOT NULL;
"""

# The events by workflow and status, counted as they change: each trigger runs in the statement that fires it,
# so a count is exactly that of the rows, whatever fails or stops. Created, and filled from the events already
# there, in one transaction (see _count_events).
_COUNTERS = (
    """CREATE TABLE event_counts (
        workflow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, status)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER event_counted AFTER INSERT ON events BEGIN
        INSERT INTO event_counts VALUES (new.workflow_id, new.status, 1)
        ON CONFLICT DO UPDATE SET count = count + 1;
    END""",
    """CREATE TRIGGER event_recounted AFTER UPDATE OF status ON events WHEN old.status IS NOT new.status BEGIN
        UPDATE event_counts SET count = count - 1 WHERE workflow_id = old.workflow_id AND status = old.status;
        INSERT INTO event_counts VALUES (new.workflow_id, new.status, 1)
        ON CONFLICT DO UPDATE SET count = count + 1;
    END""",
    """CREATE TRIGGER event_uncounted AFTER DELETE ON events BEGIN
        UPDATE event_counts SET count = count - 1 WHERE workflow_id = old.workflow_id AND status = old.status;
    END""",
    "INSERT INTO event_counts SELECT workflow_id, status, COUNT(*) FROM events GROUP BY workflow_id, status",
)

_INSERT_EVENT = """
INSERT INTO events (id, workflow_id, status, created_at, due_at, idempotency_key, version, doc)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (workflow_id, idempotency_key) DO NOTHING
"""

_SAVE_EVENT = "UPDATE events SET doc = ?, version = version + 1, status = ?, due_at = ? WHERE id = ? AND version = ?"

_TERMINAL = tuple(status.value for status in EventStatus if status.terminal)

_DELETE_OLD_EVENTS = (
    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < ?"
    f" AND status IN ({', '.join('?' * len(_TERMINAL))}) ORDER BY created_at LIMIT ?) RETURNING id"
)
_HOLD = "INSERT OR IGNORE INTO slot_waiters VALUES (?, ?, ?, ?)"
_OVERDUE_EVENTS = f"SELECT COUNT(*) FROM events WHERE due_at <= ? AND status NOT IN ({', '.join('?' * len(_TERMINAL))})"
# An ended event is due only while its notification is to be sent.
_DUE_EVENTS = "SELECT doc FROM events WHERE due_at <= ? ORDER BY due_at LIMIT ?"


class SqliteStore:
    """RegistryStore, EventStore and ItemStore in the SQLite database at ``path``, created if need be: the default
    store, which needs no server, for the processes of one host."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = path
        self._local = threading.local()
        self._inherited: list[sqlite3.Connection] = []
        self._db().executescript(_SCHEMA)
        self._count_events()
        self._db().executescript(_SCHEDULES_SCHEMA)
        self._db().executescript(_FLEETS_SCHEMA)

    def ping(self) -> None:
        self._db().execute("SELECT 1 FROM events LIMIT 1").fetchall()

    def _count_events(self) -> None:
        """Create the counters of events and their triggers, filled from the events already stored: once per
        database, in one transaction, so that each event is counted once (a database made by an older version
        gets them the first time it is opened)."""
        if self._db().execute(_COUNTED).fetchone() is not None:
            return
        with self._transaction() as db:
            if db.execute(_COUNTED).fetchone() is None:
                for statement in _COUNTERS:
                    db.execute(statement)

    def close(self) -> None:
        """Close this thread's connection; the next call opens another."""
        if getattr(self._local, "pid", None) == os.getpid():
            self._local.db.close()
            del self._local.db, self._local.pid

    # Services

    def add_service(self, service: Service, *, executable_revision: int | None = None) -> Service:
        """Store a new service with a fresh id and revision 1; Conflict if the name is taken, or the executable a
        command service runs is no longer at ``executable_revision``."""
        stored = replace(service, id=uuid4().hex, revision=1)
        with self._transaction() as db:
            _check_executable_revision(db, service, executable_revision)
            try:
                db.execute(
                    "INSERT INTO services (name, id, revision, doc) VALUES (?, ?, ?, ?)",
                    (stored.name, stored.id, stored.revision, _dumps(service_to_dict(stored, in_clear=True))),
                )
            except sqlite3.IntegrityError:
                raise _taken("service", stored.name) from None
        return stored

    def get_service(self, name: str) -> Service:
        """NotFound if there is no such service."""
        return load_service(_doc(_service_row(self._db(), name)))

    def list_services(self, *, offset: int, limit: int) -> Page[Service]:
        """Ordered by name."""
        return self._page("FROM services", (), "name", offset, limit, load_service)

    def service_users(self, name: str) -> list[str]:
        """Names of the workflows that use the service, sorted; NotFound if there is no such service."""
        db = self._db()
        _service_row(db, name)
        return _users(db, name)

    def replace_service(
        self, service: Service, *, revision: int, users: list[str], executable_revision: int | None = None
    ) -> Service:
        """Replace the service named ``service.name``, keeping its id, at revision + 1.

        Conflict if its revision is no longer ``revision``, the workflows using it are no longer ``users``, or
        the executable a command service runs is no longer at ``executable_revision``.
        """
        with self._transaction() as db:
            row = _service_row(db, service.name)
            if row["revision"] != revision or _users(db, service.name) != sorted(users):
                raise Conflict(f"service {service.name!r} changed since it was checked")
            _check_executable_revision(db, service, executable_revision)
            stored = replace(service, id=row["id"], revision=revision + 1)
            db.execute(
                "UPDATE services SET revision = ?, doc = ? WHERE name = ?",
                (stored.revision, _dumps(service_to_dict(stored, in_clear=True)), stored.name),
            )
        return stored

    def delete_service(self, name: str) -> None:
        """NotFound if absent; Conflict naming the workflows (in ``problems``) if any uses it."""
        with self._transaction() as db:
            _service_row(db, name)
            users = _users(db, name)
            if users:
                raise Conflict(
                    f"service {name!r} is in use",
                    [Problem(f"workflow {user!r} uses service {name!r}") for user in users],
                )
            db.execute("DELETE FROM services WHERE name = ?", (name,))

    # Executables

    def add_executable(self, executable: Executable) -> Executable:
        """Store a new executable with a fresh id and revision 1; Conflict if the name is taken."""
        stored = replace(executable, id=uuid4().hex, revision=1)
        try:
            self._db().execute(
                "INSERT INTO executables (name, id, revision, doc) VALUES (?, ?, ?, ?)",
                (stored.name, stored.id, stored.revision, _dumps(executable_to_dict(stored))),
            )
        except sqlite3.IntegrityError:
            raise _taken("executable", stored.name) from None
        return stored

    def get_executable(self, name: str) -> Executable:
        """NotFound if there is no such executable."""
        row = self._db().execute("SELECT doc FROM executables WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no executable {name!r}")
        return executable_from_dict(_doc(row))

    def list_executables(self, *, offset: int, limit: int) -> Page[Executable]:
        """Ordered by name."""
        return self._page("FROM executables", (), "name", offset, limit, executable_from_dict)

    def replace_executable(self, executable: Executable, *, revision: int, users: list[str]) -> Executable:
        """Replace the executable of that name, keeping its id, at revision + 1; Conflict if it is no longer at
        ``revision`` or the command services running it are no longer ``users``, NotFound if it is gone."""
        with self._transaction() as db:
            row = db.execute("SELECT id, revision FROM executables WHERE name = ?", (executable.name,)).fetchone()
            if row is None:
                raise NotFound(f"no executable {executable.name!r}")
            if row["revision"] != revision or _runners(db, executable.name) != sorted(users):
                raise Conflict(f"executable {executable.name!r} changed since it was checked")
            stored = replace(executable, id=row["id"], revision=revision + 1)
            db.execute(
                "UPDATE executables SET revision = ?, doc = ? WHERE name = ?",
                (stored.revision, _dumps(executable_to_dict(stored)), stored.name),
            )
        return stored

    def delete_executable(self, name: str) -> None:
        """NotFound if absent; Conflict naming the command services (in ``problems``) if any runs it."""
        with self._transaction() as db:
            runners = _runners(db, name)
            if runners:
                raise Conflict(
                    f"executable {name!r} is in use",
                    [Problem(f"service {runner!r} runs executable {name!r}") for runner in runners],
                )
            if not db.execute("DELETE FROM executables WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no executable {name!r}")

    # Workflows

    def add_workflow(self, workflow: Workflow, *, services: Mapping[str, int]) -> Workflow:
        """Store a new workflow at version 1 with a fresh id.

        Conflict if the name is taken or any of ``services`` is no longer at the revision it was checked against.
        """
        stored = replace(workflow, id=uuid4().hex, version=1)
        doc = _dumps(workflow_to_dict(stored))
        with self._transaction() as db:
            _check_revisions(db, services)
            try:
                db.execute(
                    "INSERT INTO workflows (id, name, version, doc) VALUES (?, ?, ?, ?)",
                    (stored.id, stored.name, stored.version, doc),
                )
            except sqlite3.IntegrityError:
                raise _taken("workflow", stored.name) from None
            _record_version(db, stored, doc, services)
        self._index_searchable(stored)
        return stored

    def get_workflow(self, key: str) -> Workflow:
        """By id or by name; NotFound if neither matches."""
        return load_workflow(_doc(_workflow_row(self._db(), key)))

    def get_workflow_version(self, workflow_id: str, version: int) -> Workflow:
        """A version as it was registered; kept after the workflow is replaced or deleted, for its events."""
        row = (
            self._db()
            .execute("SELECT doc FROM workflow_versions WHERE workflow_id = ? AND version = ?", (workflow_id, version))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no version {version} of workflow {workflow_id!r}")
        return load_workflow(_doc(row))

    def list_workflows(self, *, offset: int, limit: int) -> Page[Workflow]:
        """Ordered by name."""
        return self._page("FROM workflows", (), "name", offset, limit, load_workflow)

    def replace_workflow(self, workflow: Workflow, *, version: int, services: Mapping[str, int]) -> Workflow:
        """Store ``workflow`` (found by its id) as version + 1.

        Conflict if the current version is not ``version``, the new name is taken, or a service changed
        since it was checked; NotFound if there is no such workflow.
        """
        stored = replace(workflow, version=version + 1)
        doc = _dumps(workflow_to_dict(stored))
        with self._transaction() as db:
            row = db.execute("SELECT version FROM workflows WHERE id = ?", (workflow.id,)).fetchone()
            if row is None:
                raise NotFound(f"no workflow {workflow.id!r}")
            if row["version"] != version:
                raise Conflict(f"workflow {workflow.name!r} changed since version {version}")
            _check_revisions(db, services)
            try:
                db.execute(
                    "UPDATE workflows SET name = ?, version = ?, doc = ? WHERE id = ?",
                    (stored.name, stored.version, doc, stored.id),
                )
            except sqlite3.IntegrityError:
                raise _taken("workflow", stored.name) from None
            _record_version(db, stored, doc, services)
        self._index_searchable(stored)
        return stored

    def _index_searchable(self, workflow: Workflow) -> None:
        """Index the events by each searchable input of ``workflow`` not indexed yet, in the order of listings.

        An index on the field's JSON value in every event, whatever its workflow, so that a search by it stays
        exact; building it reads the events already stored, once. It is kept when no workflow declares the field
        any more (``DROP INDEX`` removes it).
        """
        db = self._db()
        for name in sorted(f.name for f in workflow.inputs if f.searchable):
            db.execute(
                f"CREATE INDEX IF NOT EXISTS {_quoted(_SEARCHABLE_INDEX + name)}"
                f" ON events (json_extract(doc, {_json_at((name,))}), created_at DESC, id DESC)"
            )

    def delete_workflow(self, key: str) -> None:
        """By id or by name; NotFound if absent. Releases the services it used."""
        with self._transaction() as db:
            # Its rows in service_users go with it (ON DELETE CASCADE); its versions stay.
            db.execute("DELETE FROM workflows WHERE id = ?", (_workflow_row(db, key)["id"],))

    def save_health(self, service: str, health: Health) -> None:
        self._db().execute("INSERT OR REPLACE INTO service_health VALUES (?, ?)", (service, _dumps(asdict(health))))

    def health(self) -> dict[str, Health]:
        rows = self._db().execute("SELECT service, doc FROM service_health")
        return {row["service"]: Health(**_doc(row)) for row in rows}

    # Events

    def create_event(self, event: Event) -> tuple[Event, bool]:
        """Store a new event; with an idempotency key already used for the same workflow,
        store nothing and return the existing event and False."""
        db = self._db()
        inserted = db.execute(
            _INSERT_EVENT,
            (
                event.id,
                event.workflow_id,
                event.status,
                event.created_at,
                event.due_at,
                event.idempotency_key,
                event.version,
                _dumps(event.to_doc()),
            ),
        ).rowcount
        if inserted:
            return event, True
        row = db.execute(
            "SELECT doc FROM events WHERE workflow_id = ? AND idempotency_key = ?",
            (event.workflow_id, event.idempotency_key),
        ).fetchone()
        return Event.from_doc(_doc(row)), False

    def get_event(self, event_id: str) -> Event:
        """NotFound if there is no such event."""
        row = self._db().execute("SELECT doc FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise NotFound(f"no event {event_id!r}")
        return Event.from_doc(_doc(row))

    def save_event(self, event: Event) -> bool:
        """Write ``event`` if the stored version is still ``event.version``, and then bump both."""
        doc = event.to_doc()
        doc["version"] = event.version + 1
        saved = (
            self._db().execute(_SAVE_EVENT, (_dumps(doc), event.status, event.due_at, event.id, event.version)).rowcount
        )
        if saved:
            event.version += 1
        return bool(saved)

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
        """Newest first; see :meth:`EventStore.list_events` for what ``after`` and the totals promise."""
        filters = {"workflow_id": workflow_id, "status": status}
        clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        conditions = list(data_conditions(data or {}))
        if not conditions and parent is None:
            return Page(self._listed(clauses, params, offset, limit, after), self._counted(workflow_id, status))
        indexed = self._searchable() & {path[0] for path, _ in conditions if len(path) == 1}
        for path, value in conditions:
            clause, values = _data_clause(_json_at(path), value)
            clauses.append(clause)
            params += values
        if parent is not None:
            clause, values = _data_clause("'$.parent.event'", parent)
            clauses.append(clause)
            params += values
        # The index of a searchable field, which the planner could otherwise pass over for one that orders a
        # workflow's events but reads them all.
        source = f"events INDEXED BY {_quoted(_SEARCHABLE_INDEX + min(indexed))}" if indexed else "events"
        with _deadline(self._db(), SEARCH_SECONDS) as stopped:
            events = self._listed(clauses, params, offset, limit, after, source)
            if stopped() or (offset == 0 and after is None and len(events) < limit):
                return Page(events, offset + len(events), exact=not stopped(), complete=not stopped())
            where = " AND ".join(clauses)
            total = _read(
                self._db(), f"SELECT COUNT(*) FROM (SELECT 1 FROM {source} WHERE {where} LIMIT ?)", (*params, _OVER)
            )
            if total is None:  # out of time
                return Page(events, offset + len(events), exact=False)
            return Page(events, min(total[0], COUNT_LIMIT), exact=total[0] <= COUNT_LIMIT)

    def _listed(
        self,
        clauses: list[str],
        params: list[Any],
        offset: int,
        limit: int,
        after: Position | None,
        source: str = "events",
    ) -> list[Event]:
        """A page, newest first, of the events that ``clauses`` select; those read before a deadline stops it."""
        if after is not None:
            clauses, params = [*clauses, "(created_at, id) < (?, ?)"], [*params, *after]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT doc FROM {source}{where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        events: list[Event] = []
        with _interruptible():
            for row in self._db().execute(query, (*params, limit, offset)):
                events.append(Event.from_doc(_doc(row)))
        return events

    def _counted(self, workflow_id: str | None, status: str | None) -> int:
        """How many events there are of a workflow, in a status, both or neither, from their counters."""
        filters = {"workflow_id": workflow_id, "status": status}
        clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = f"SELECT COALESCE(SUM(count), 0) FROM event_counts{where}"
        return int(self._db().execute(query, [value for value in filters.values() if value is not None]).fetchone()[0])

    def _searchable(self) -> set[str]:
        """The fields that events are indexed by (see :meth:`_index_searchable`), read from the schema."""
        rows = self._db().execute(
            "SELECT substr(name, ?) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
            " AND substr(name, 1, ?) = ?",
            (len(_SEARCHABLE_INDEX) + 1, len(_SEARCHABLE_INDEX), _SEARCHABLE_INDEX),
        )
        return {row[0] for row in rows}

    def delete_events(self, *, created_before: float, limit: int) -> int:
        with self._transaction() as db:
            deleted = [(row["id"],) for row in db.execute(_DELETE_OLD_EVENTS, (created_before, *_TERMINAL, limit))]
            db.executemany(_DELETE_ITEMS, deleted)
        return len(deleted)

    def due_events(self, now: float, limit: int) -> list[Event]:
        rows = self._db().execute(_DUE_EVENTS, (now, limit))
        return [Event.from_doc(_doc(row)) for row in rows]

    def event_status(self, event_id: str) -> EventStatus:
        """NotFound if there is no such event."""
        row = self._db().execute("SELECT status FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None:
            raise NotFound(f"no event {event_id!r}")
        return EventStatus(row["status"])

    def acquire_slot(
        self, service: str, limit: int, holder: str, *, until: float, now: float, waiter: tuple[str, str]
    ) -> bool:
        with self._transaction() as db:
            db.execute("DELETE FROM slots WHERE service = ? AND until <= ?", (service, now))
            if db.execute("SELECT COUNT(*) FROM slots WHERE service = ?", (service,)).fetchone()[0] < limit:
                db.execute("INSERT OR REPLACE INTO slots VALUES (?, ?, ?)", (service, holder, until))
                db.execute(
                    "DELETE FROM slot_waiters WHERE service = ? AND event_id = ? AND unit = ?", (service, *waiter)
                )
                return True
            db.execute(_HOLD, (service, *waiter, now))
            return False

    def statistics(self, now: float) -> Statistics:
        db = self._db()
        events = db.execute("SELECT workflow_id, status, count FROM event_counts WHERE count != 0")
        overdue = db.execute(_OVERDUE_EVENTS, (now, *_TERMINAL)).fetchone()[0]
        slots = db.execute(
            "SELECT service, SUM(held), SUM(waiting) FROM ("
            " SELECT service, 1 AS held, 0 AS waiting FROM slots WHERE until > ?"
            " UNION ALL SELECT service, 0, 1 FROM slot_waiters"
            ") GROUP BY service",
            (now,),
        )
        return Statistics(
            events={(row[0], row[1]): row[2] for row in events},
            overdue=overdue,
            slots={row[0]: (row[1], row[2]) for row in slots},
        )

    def recount_events(self) -> None:
        """Exact already (the triggers count in each write's own statement); for a database changed by hand."""
        with self._transaction() as db:
            db.execute("DELETE FROM event_counts")
            db.execute(_COUNTERS[-1])

    def hold(self, service: str, waiter: tuple[str, str], *, since: float) -> None:
        self._db().execute(_HOLD, (service, *waiter, since))

    def take_waiters(self, service: str) -> list[tuple[str, str]]:
        with self._transaction() as db:
            rows = db.execute(
                "DELETE FROM slot_waiters WHERE service = ? RETURNING event_id, unit, since", (service,)
            ).fetchall()
        return [(row["event_id"], row["unit"]) for row in sorted(rows, key=lambda row: row["since"])]

    def release_slot(self, service: str, holder: str) -> tuple[str, str] | None:
        with self._transaction() as db:
            if not db.execute("DELETE FROM slots WHERE service = ? AND holder = ?", (service, holder)).rowcount:
                return None
            first = db.execute(
                "DELETE FROM slot_waiters WHERE rowid = "
                "(SELECT rowid FROM slot_waiters WHERE service = ? ORDER BY since, rowid LIMIT 1) "
                "RETURNING event_id, unit",
                (service,),
            ).fetchall()
            return (first[0]["event_id"], first[0]["unit"]) if first else None

    # Items

    def add_items(self, items: Sequence[Item]) -> None:
        """Store new items, in one transaction; an item already stored is kept as it is."""
        # A list, not a generator: written before the transaction, so that others wait only for the inserts.
        rows = [
            (
                item.event_id,
                item.step_id,
                item.index,
                item.state.status.value,
                item.due_at,
                item.version,
                _dumps(item.to_doc()),
            )
            for item in items
        ]
        with self._transaction() as db:
            db.executemany(_INSERT_ITEM, rows)

    def get_item(self, event_id: str, step_id: str, index: int) -> Item:
        """NotFound if there is no such item."""
        row = (
            self._db()
            .execute("SELECT doc FROM items WHERE event_id = ? AND step_id = ? AND idx = ?", (event_id, step_id, index))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no item {step_id}[{index}] in event {event_id!r}")
        return Item.from_doc(_doc(row))

    def save_item(self, item: Item) -> bool:
        """Write ``item`` if the stored version is still ``item.version``, and then bump both."""
        doc = item.to_doc()
        doc["version"] = item.version + 1
        saved = (
            self._db()
            .execute(
                _SAVE_ITEM,
                (
                    _dumps(doc),
                    item.state.status.value,
                    item.due_at,
                    item.event_id,
                    item.step_id,
                    item.index,
                    item.version,
                ),
            )
            .rowcount
        )
        if saved:
            item.version += 1
        return bool(saved)

    def list_items(
        self, event_id: str, step_id: str, *, statuses: Collection[str] | None = None, after: int = -1, limit: int
    ) -> list[Item]:
        if statuses is None:
            rows = self._db().execute(_LIST_ITEMS, (event_id, step_id, after, limit))
        else:
            wanted = sorted({str(status) for status in statuses})
            if not wanted:
                return []
            rows = self._db().execute(_list_items_in(len(wanted)), (event_id, step_id, after, limit, *wanted))
        return [Item.from_doc(_doc(row)) for row in rows]

    def count_items(self, event_id: str, step_id: str) -> dict[str, int]:
        rows = self._db().execute(
            "SELECT status, COUNT(*) FROM items WHERE event_id = ? AND step_id = ? GROUP BY status", (event_id, step_id)
        )
        return {row[0]: row[1] for row in rows}

    def due_items(self, now: float, limit: int) -> list[Item]:
        rows = self._db().execute("SELECT doc FROM items WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit))
        return [Item.from_doc(_doc(row)) for row in rows]

    # Schedules

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Store a new schedule with a fresh id and version 1; Conflict if the name is taken."""
        stored = replace(schedule, id=uuid4().hex, version=1)
        try:
            self._db().execute(
                "INSERT INTO schedules (id, name, due_at, version, doc) VALUES (?, ?, ?, ?, ?)",
                (stored.id, stored.name, stored.due_at, stored.version, _dumps(stored.to_doc())),
            )
        except sqlite3.IntegrityError:
            raise _taken("schedule", stored.name) from None
        return stored

    def get_schedule(self, key: str) -> Schedule:
        """By id or by name; NotFound if neither matches."""
        return Schedule.from_doc(_doc(_schedule_row(self._db(), key)))

    def list_schedules(self, *, offset: int, limit: int) -> Page[Schedule]:
        """Ordered by name."""
        return self._page("FROM schedules", (), "name", offset, limit, Schedule.from_doc)

    def save_schedule(self, schedule: Schedule) -> bool:
        """Write ``schedule`` if the stored version is still ``schedule.version``, and then bump both."""
        doc = schedule.to_doc()
        doc["version"] = schedule.version + 1
        saved = (
            self._db().execute(_SAVE_SCHEDULE, (_dumps(doc), schedule.due_at, schedule.id, schedule.version)).rowcount
        )
        if saved:
            schedule.version += 1
        return bool(saved)

    def delete_schedule(self, key: str) -> None:
        """By id or by name; NotFound if neither matches."""
        with self._transaction() as db:
            db.execute("DELETE FROM schedules WHERE id = ?", (_schedule_row(db, key)["id"],))

    def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        rows = self._db().execute("SELECT doc FROM schedules WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit))
        return [Schedule.from_doc(_doc(row)) for row in rows]

    def schedule_events(self, schedule: Schedule, *, offset: int, limit: int) -> Page[Event]:
        """The latest run first: the keys of a schedule's runs sort as their times."""
        prefix = key_prefix(schedule.id)
        # A range of the keys, which the index on (workflow_id, idempotency_key) reads in order.
        query = "FROM events WHERE workflow_id = ? AND idempotency_key >= ? AND idempotency_key < ?"
        params = (schedule.workflow_id, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        return self._page(query, params, "idempotency_key DESC", offset, limit, Event.from_doc)

    # Fleets: the workloads' host, lease, state and version are columns, for the assigner's conditional writes.

    def add_fleet(self, fleet: Fleet) -> Fleet:
        """Store a new fleet at version 1; Conflict if the name is taken."""
        stored = replace(fleet, version=1)
        try:
            self._db().execute("INSERT INTO fleets VALUES (?, 1, ?)", (fleet.name, _dumps(fleet_to_dict(stored))))
        except sqlite3.IntegrityError:
            raise _taken("fleet", fleet.name) from None
        return stored

    def get_fleet(self, name: str) -> Fleet:
        row = self._db().execute("SELECT doc FROM fleets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no fleet {name!r}")
        return fleet_from_dict(_doc(row))

    def list_fleets(self) -> list[Fleet]:
        return [fleet_from_dict(_doc(row)) for row in self._db().execute("SELECT doc FROM fleets ORDER BY name")]

    def replace_fleet(self, fleet: Fleet, *, version: int) -> Fleet:
        stored = replace(fleet, version=version + 1)
        with self._transaction() as db:
            self.get_fleet(fleet.name)
            doc = _dumps(fleet_to_dict(stored))
            if not db.execute(_SAVE_FLEET, (doc, fleet.name, version)).rowcount:
                raise Conflict(f"fleet {fleet.name!r} changed since version {version}")
        return stored

    def delete_fleet(self, name: str) -> None:
        with self._transaction() as db:
            self.get_fleet(name)
            if db.execute("SELECT 1 FROM workloads WHERE fleet = ? LIMIT 1", (name,)).fetchone():
                raise Conflict(f"fleet {name!r} still has workloads: remove them first")
            db.execute("DELETE FROM fleets WHERE name = ?", (name,))

    def add_workloads(self, workloads: Sequence[Workload]) -> list[str]:
        added = []
        with self._transaction() as db:
            for workload in workloads:
                stored = replace(workload, host=None, lease_until=0.0, version=1)
                if db.execute(_INSERT_WORKLOAD, _workload_row(stored)).rowcount:
                    added.append(workload.name)
        return added

    def remove_workloads(self, fleet: str, names: Collection[str]) -> list[Workload]:
        removed = []
        with self._transaction() as db:
            for chunk in _chunks(list(names)):
                marks = ", ".join("?" * len(chunk))
                query = f"DELETE FROM workloads WHERE fleet = ? AND name IN ({marks}) RETURNING {_WORKLOAD_COLUMNS}"
                removed += [_workload(row) for row in db.execute(query, (fleet, *chunk))]
        return sorted(removed, key=lambda w: w.name)

    def get_workload(self, fleet: str, name: str) -> Workload:
        query = f"SELECT {_WORKLOAD_COLUMNS} FROM workloads WHERE fleet = ? AND name = ?"
        row = self._db().execute(query, (fleet, name)).fetchone()
        if row is None:
            raise NotFound(f"no workload {name!r} in fleet {fleet!r}")
        return _workload(row)

    def list_workloads(
        self,
        fleet: str,
        *,
        state: WorkloadState | None = None,
        labels: Mapping[str, str] | None = None,
        host: str | None = None,
        after: str = "",
        limit: int = 100,
    ) -> list[Workload]:
        where, params = ["fleet = ?", "name > ?"], [fleet, after]
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if host is not None:
            where.append("host = ?")
            params.append(host)
        for key, value in (labels or {}).items():
            where.append("json_extract(doc, ?) = ?")
            # Label keys are checked by the API (see machinery.validation): none holds a double quote.
            params += [f'$.labels."{key}"', value]
        query = f"SELECT {_WORKLOAD_COLUMNS} FROM workloads WHERE {' AND '.join(where)} ORDER BY name LIMIT ?"
        return [_workload(row) for row in self._db().execute(query, (*params, limit))]

    def count_workloads(self, fleet: str | None = None) -> dict[tuple[str, str | None, str], int]:
        where, params = ("WHERE fleet = ?", (fleet,)) if fleet is not None else ("", ())
        query = f"SELECT fleet, host, state, COUNT(*) FROM workloads {where} GROUP BY fleet, host, state"
        return {(row[0], row[1], row[2]): row[3] for row in self._db().execute(query, params)}

    def save_workload(self, workload: Workload) -> bool:
        row = _workload_row(workload)
        saved = self._db().execute(_SAVE_WORKLOAD, (row[2], row[6], workload.fleet, workload.name, workload.version))
        return bool(saved.rowcount)

    def unassigned_workloads(self, fleet: str, *, now: float, limit: int) -> list[Workload]:
        query = f"SELECT {_WORKLOAD_COLUMNS} FROM workloads WHERE fleet = ? AND (host IS NULL OR lease_until < ?)"
        return [_workload(row) for row in self._db().execute(f"{query} ORDER BY name LIMIT ?", (fleet, now, limit))]

    def claim_workloads(
        self, fleet: str, names: Collection[str], host: str, *, now: float, until: float, source: str | None = None
    ) -> list[str]:
        condition, condition_params = (
            ("host = ?", (source,)) if source is not None else ("(host IS NULL OR lease_until < ?)", (now,))
        )
        claimed = []
        with self._transaction() as db:
            for chunk in _chunks(list(names)):
                query = (
                    "UPDATE workloads SET host = ?, lease_until = ?, version = version + 1, state = ?,"
                    " doc = json_set(doc, '$.failed_pings', 0, '$.since', ?)"
                    f" WHERE fleet = ? AND name IN ({', '.join('?' * len(chunk))}) AND {condition} RETURNING name"
                )
                params = (host, until, WorkloadState.INITIALIZING.value, now, fleet, *chunk, *condition_params)
                claimed += [row[0] for row in db.execute(query, params)]
        return sorted(claimed)

    def renew_workloads(self, host: str, until: float) -> int:
        return self._db().execute("UPDATE workloads SET lease_until = ? WHERE host = ?", (until, host)).rowcount

    def heartbeat(self, host: Host) -> None:
        self._db().execute(_HEARTBEAT, (host.name, host.lease_until, host.started_at))

    def list_hosts(self) -> list[Host]:
        rows = self._db().execute("SELECT name, lease_until, started_at FROM fleet_hosts ORDER BY name")
        return [Host(row[0], row[1], row[2]) for row in rows]

    def forget_hosts(self, *, lapsed_before: float) -> int:
        return self._db().execute("DELETE FROM fleet_hosts WHERE lease_until < ?", (lapsed_before,)).rowcount

    def acquire_lease(self, key: str, holder: str, *, now: float, until: float) -> bool:
        taken = self._db().execute(_ACQUIRE_LEASE, (key, holder, until, holder, now)).fetchone()
        return taken is not None

    def add_lifecycle_events(self, events: Sequence[LifecycleEvent]) -> None:
        rows = [(e.fleet, e.workload, e.at, _dumps(lifecycle_to_dict(e))) for e in events]
        with self._transaction() as db:
            db.executemany("INSERT INTO lifecycle_events (fleet, workload, at, doc) VALUES (?, ?, ?, ?)", rows)

    def list_lifecycle_events(
        self, fleet: str, workload: str | None = None, *, limit: int = 100
    ) -> list[LifecycleEvent]:
        query, params = (
            ("WHERE fleet = ?", [fleet])
            if workload is None
            else ("WHERE fleet = ? AND workload = ?", [fleet, workload])
        )
        rows = self._db().execute(
            # By the time of the change, as hosts record their events after writing the change, not in its order.
            f"SELECT doc FROM lifecycle_events {query} ORDER BY at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [lifecycle_from_dict(_doc(row)) for row in rows]

    # Connections

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use and again in a forked child."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            if hasattr(local, "db"):
                # A connection inherited through fork() must be neither used nor closed in the child
                # (https://sqlite.org/howtocorrupt.html#fork), so it is kept referenced and left alone.
                self._inherited.append(local.db)
            local.db = _connect(self._path)
            local.pid = os.getpid()
        return local.db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the write lock from the start, so that its reads stay true until it commits."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _page(
        self,
        query: str,
        params: Sequence[Any],
        order: str,
        offset: int,
        limit: int,
        load: Callable[[dict[str, Any]], T],
    ) -> Page[T]:
        """One page, in ``order``, of the documents ``query`` (``FROM ... WHERE ...``) selects, and their count."""
        db = self._db()
        total = db.execute(f"SELECT COUNT(*) {query}", params).fetchone()[0]
        rows = db.execute(f"SELECT doc {query} ORDER BY {order} LIMIT ? OFFSET ?", (*params, limit, offset))
        return Page([load(_doc(row)) for row in rows], total)


# Items

# Only a clash on the key is ignored: any other failure (a NULL where none may be) still raises.
_INSERT_ITEM = """
INSERT INTO items (event_id, step_id, idx, status, due_at, version, doc) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id, step_id, idx) DO NOTHING
"""
_SAVE_ITEM = (
    "UPDATE items SET doc = ?, version = version + 1, status = ?, due_at = ?"
    " WHERE event_id = ? AND step_id = ? AND idx = ? AND version = ?"
)
_LIST_ITEMS = "SELECT doc FROM items WHERE event_id = ? AND step_id = ? AND idx > ? ORDER BY idx LIMIT ?"
_DELETE_ITEMS = "DELETE FROM items WHERE event_id = ?"


@functools.cache
def _list_items_in(statuses: int) -> str:
    """The query of a page of the items in any of ``statuses`` statuses (parameters: event_id, step_id, after,
    limit, then the statuses).

    One page per status, merged: with ``status IN (...)``, SQLite either reads the step's items in the order of
    their index, passing over those in other statuses (all of them, if none is in one of those wanted), or reads
    every wanted item past ``after`` to sort them. This way it reads at most ``limit`` items per status.
    """
    one = (
        "SELECT * FROM (SELECT idx, doc FROM items WHERE event_id = ?1 AND step_id = ?2 AND status = ?{}"
        " AND idx > ?3 ORDER BY idx LIMIT ?4)"
    )
    pages = " UNION ALL ".join(one.format(5 + i) for i in range(statuses))
    return f"SELECT doc FROM ({pages}) ORDER BY idx LIMIT ?4"


def _data_clause(at: str, value: Any) -> tuple[str, list[Any]]:
    """The condition that the JSON at ``at`` (a path as an SQL literal, see :func:`_json_at`) of an event's document
    is ``value``, of the same JSON type. An equality on ``json_extract`` first, which the index of a searchable
    field serves when ``at`` is that field's; then the type, which it does not tell (true is 1, say)."""
    if value is None:
        return f"COALESCE(json_type(doc, {at}), 'null') = 'null'", []
    found = f"json_extract(doc, {at})"
    if isinstance(value, bool):
        return f"{found} = ? AND json_type(doc, {at}) = ?", [int(value), "true" if value else "false"]
    if isinstance(value, int | float):
        return f"{found} = ? AND json_type(doc, {at}) IN ('integer', 'real')", [value]
    if isinstance(value, str):
        return f"{found} = ? AND json_type(doc, {at}) = 'text'", [value]
    return f"json_type(doc, {at}) = 'array' AND {found} = json(?)", [_dumps(value)]


def _json_at(path: tuple[str, ...]) -> str:
    """The JSON path of a field of an event's data, as an SQL literal: written into the query rather than bound,
    since SQLite uses an index on an expression only for a query holding the same expression."""
    at = "$.data" + "".join(f'."{key}"' for key in path)
    return "'" + at.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_SEARCHABLE_INDEX = "events_data_"
"""The name of the index of events by a searchable field, before the field's name."""

_COUNTED = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'event_counts'"

_OVER = COUNT_LIMIT + 1
"""Counting this many rows is enough to know that there are more than COUNT_LIMIT."""

_INTERRUPTED = "interrupted"


@contextmanager
def _deadline(db: sqlite3.Connection, seconds: float) -> Iterator[Callable[[], bool]]:
    """Interrupt the statements ``db`` runs in the block once ``seconds`` have passed; yields whether they were."""
    end = time.monotonic() + seconds
    passed = False

    def check() -> bool:
        nonlocal passed
        passed = passed or time.monotonic() > end
        return passed

    # Called every so many steps of SQLite's virtual machine: some microseconds' worth.
    db.set_progress_handler(check, 10_000)
    try:
        yield lambda: passed
    finally:
        db.set_progress_handler(None, 0)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Leave the block, keeping what it read, when a :func:`_deadline` interrupts a statement."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if str(error) != _INTERRUPTED:
            raise


def _read(db: sqlite3.Connection, query: str, params: Sequence[Any]) -> sqlite3.Row | None:
    """The first row of ``query``; None if a :func:`_deadline` interrupted it."""
    with _interruptible():
        row: sqlite3.Row = db.execute(query, params).fetchone()
        return row
    return None


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the store begins its own.
    db = sqlite3.connect(path, timeout=_BUSY_TIMEOUT, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    # In WAL mode, NORMAL loses no integrity on a crash, only possibly the last commits on a power loss.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def _dumps(doc: dict[str, Any]) -> str:
    try:
        return orjson.dumps(doc).decode()
    except TypeError:  # an integer beyond 64 bits, which only the standard library's json writes
        return json.dumps(doc, separators=(",", ":"))


def _doc(row: sqlite3.Row) -> dict[str, Any]:
    return orjson.loads(row["doc"])


def _service_row(db: sqlite3.Connection, name: str) -> sqlite3.Row:
    row: sqlite3.Row | None = db.execute("SELECT id, revision, doc FROM services WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no service {name!r}")
    return row


def _runners(db: sqlite3.Connection, executable: str) -> list[str]:
    """The command services that run ``executable``, sorted."""
    rows = db.execute(
        "SELECT name FROM services WHERE json_extract(doc, '$.kind') = 'command'"
        " AND json_extract(doc, '$.executable') = ? ORDER BY name",
        (executable,),
    )
    return [row["name"] for row in rows]


def _check_executable_revision(db: sqlite3.Connection, service: Service, revision: int | None) -> None:
    """Conflict if the executable a command service runs is no longer at the ``revision`` it was checked against."""
    if not isinstance(service.endpoint, CommandTarget):
        return
    name = service.endpoint.executable
    row = db.execute("SELECT revision FROM executables WHERE name = ?", (name,)).fetchone()
    if row is None or row["revision"] != revision:
        raise Conflict(
            f"executable {name!r} changed since service {service.name!r} was checked",
            [Problem(f"executable {name!r} changed or went away", field="executable")],
        )


def _users(db: sqlite3.Connection, service: str) -> list[str]:
    rows = db.execute(
        "SELECT w.name FROM service_users AS u JOIN workflows AS w ON w.id = u.workflow_id"
        " WHERE u.service = ? ORDER BY w.name",
        (service,),
    )
    return [row["name"] for row in rows]


def _workflow_row(db: sqlite3.Connection, key: str) -> sqlite3.Row:
    return _row_by_key(db, "workflow", key)


def _row_by_key(db: sqlite3.Connection, kind: str, key: str) -> sqlite3.Row:
    """The id and document of the ``kind`` (workflow or schedule) whose id or name is ``key``."""
    # A key that is one's id and another's name means the id.
    row: sqlite3.Row | None = db.execute(
        f"SELECT id, doc FROM {kind}s WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1", (key,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no {kind} {key!r}")
    return row


def _check_revisions(db: sqlite3.Connection, services: Mapping[str, int]) -> None:
    """Conflict unless each service is still at the revision it was checked against."""
    stale = [
        name
        for name, revision in sorted(services.items())
        if db.execute("SELECT 1 FROM services WHERE name = ? AND revision = ?", (name, revision)).fetchone() is None
    ]
    if stale:
        raise Conflict(
            "services changed since the workflow was checked",
            [Problem(f"service {name!r} changed or went away since the workflow was checked") for name in stale],
        )


def _record_version(db: sqlite3.Connection, workflow: Workflow, doc: str, services: Mapping[str, int]) -> None:
    """Keep the version just written, and record the services it uses in place of those the one before used."""
    db.execute(
        "INSERT INTO workflow_versions (workflow_id, version, doc) VALUES (?, ?, ?)",
        (workflow.id, workflow.version, doc),
    )
    db.execute("DELETE FROM service_users WHERE workflow_id = ?", (workflow.id,))
    db.executemany(
        "INSERT INTO service_users (service, workflow_id) VALUES (?, ?)", [(name, workflow.id) for name in services]
    )


def _taken(kind: str, name: str) -> Conflict:
    return Conflict(f"a {kind} named {name!r} already exists")


# Schedules

_SCHEDULES_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    due_at REAL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (due_at) WHERE due_at IS NOT NULL;
"""
_SAVE_SCHEDULE = "UPDATE schedules SET doc = ?, version = version + 1, due_at = ? WHERE id = ? AND version = ?"


def _schedule_row(db: sqlite3.Connection, key: str) -> sqlite3.Row:
    return _row_by_key(db, "schedule", key)


# Fleets

_FLEETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleets (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workloads (
    fleet TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    host TEXT,
    lease_until REAL NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (fleet, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS workloads_of_host ON workloads (host, fleet, name);
CREATE INDEX IF NOT EXISTS workloads_in_state ON workloads (fleet, state, name);
CREATE INDEX IF NOT EXISTS workloads_by_lease ON workloads (fleet, lease_until);
CREATE TABLE IF NOT EXISTS fleet_hosts (
    name TEXT PRIMARY KEY,
    lease_until REAL NOT NULL,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lifecycle_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet TEXT NOT NULL,
    workload TEXT NOT NULL,
    at REAL NOT NULL,
    doc TEXT NOT NULL
);
DROP INDEX IF EXISTS lifecycle_of_fleet;
DROP INDEX IF EXISTS lifecycle_of_workload;
CREATE INDEX IF NOT EXISTS lifecycle_of_fleet_by_time ON lifecycle_events (fleet, at, id);
CREATE INDEX IF NOT EXISTS lifecycle_of_workload_by_time ON lifecycle_events (fleet, workload, at, id);
-- Tables of the ad hoc task runs of fleets, which are gone: dropped from a database an older version made.
DROP TABLE IF EXISTS fleet_task_items;
DROP TABLE IF EXISTS fleet_task_runs;
"""
_SAVE_FLEET = "UPDATE fleets SET doc = ?, version = version + 1 WHERE name = ? AND version = ?"
_WORKLOAD_COLUMNS = "fleet, name, state, host, lease_until, version, doc"
_INSERT_WORKLOAD = f"INSERT INTO workloads ({_WORKLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
_SAVE_WORKLOAD = (
    "UPDATE workloads SET state = ?, doc = ?, version = version + 1 WHERE fleet = ? AND name = ? AND version = ?"
)
# Taken when nobody holds it, when its holder renews it, or when it lapsed: RETURNING says whether it was.
_ACQUIRE_LEASE = """
INSERT INTO fleet_leases VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until = excluded.until WHERE holder = ? OR until < ?
RETURNING holder
"""
_HEARTBEAT = (
    "INSERT INTO fleet_hosts VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET lease_until = excluded.lease_until"
)
_CHUNK = 500
"""Names per statement: under SQLite's limit of variables in one."""


def _workload_row(w: Workload) -> tuple[Any, ...]:
    doc = {
        "labels": dict(w.labels),
        "config": dict(w.config),
        "failed_pings": w.failed_pings,
        "next_ping_at": w.next_ping_at,
        "message": w.message,
        "since": w.since,
    }
    return (w.fleet, w.name, w.state.value, w.host, w.lease_until, w.version, _dumps(doc))


def _workload(row: sqlite3.Row) -> Workload:
    doc = _doc(row)
    return workload_from_dict(
        {**doc, "fleet": row["fleet"], "name": row["name"], "state": row["state"], "host": row["host"]}
        | {"lease_until": row["lease_until"], "version": row["version"]}
    )


def _chunks(names: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(names), _CHUNK):
        yield names[start : start + _CHUNK]
