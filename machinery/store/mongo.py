"""The MongoDB store, for several hosts sharing one database.

It uses no transactions: every change is a sequence of single-document
conditional writes, ordered so that a reader never sees a broken invariant,
and undone in reverse when a later one fails.

- A service document holds ``used_by``, the ids of the workflows that use it.
  A workflow marks each of its services (at the revision it was checked
  against) before its own document is written, and unmarks them after its own
  document is gone. Ids rather than names, so that undoing one attempt can
  never unmark another workflow of the same name. A process that dies half-way
  leaves a mark too many, never one too few: that service then refuses to be
  deleted or replaced, rather than ever breaking a workflow.
- The current version of a workflow lives in ``workflows``; a version is
  copied into ``workflow_versions`` before it is replaced or deleted.

Documents are the plain shapes of :mod:`machinery.codec` and
:meth:`Event.to_doc`, with ``id`` stored as Mongo's ``_id``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, replace
from typing import Any, TypeVar
from uuid import uuid4

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, ExecutionTimeout, OperationFailure

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
    workload_to_dict,
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
Doc = dict[str, Any]

_TERMINAL = [status.value for status in EventStatus if status.terminal]


class MongoStore:
    """The three stores (registry, events, items) in a MongoDB database, for workers on several hosts;
    creates its indexes."""

    def __init__(self, database: Database[Doc]) -> None:
        self._services: Collection[Doc] = database.services
        self._executables: Collection[Doc] = database.executables
        self._workflows: Collection[Doc] = database.workflows
        self._versions: Collection[Doc] = database.workflow_versions
        self._events: Collection[Doc] = database.events
        self._slots: Collection[Doc] = database.slots
        self._slot_waiters: Collection[Doc] = database.slot_waiters
        self._service_health: Collection[Doc] = database.service_health
        self._items: Collection[Doc] = database.items
        self._counts: Collection[Doc] = database.event_counts
        self._schedules: Collection[Doc] = database.schedules
        self._fleets: Collection[Doc] = database.fleets
        self._workloads: Collection[Doc] = database.workloads
        self._hosts: Collection[Doc] = database.fleet_hosts
        self._leases: Collection[Doc] = database.fleet_leases
        self._lifecycle: Collection[Doc] = database.lifecycle_events
        self._database = database
        self._create_indexes()
        self._create_item_indexes()
        self._create_schedule_indexes()
        self._create_fleet_indexes()
        if self._counts.find_one() is None and self._events.find_one({}, {"_id": True}) is not None:
            self.recount_events()

    def ping(self) -> None:
        self._database.command("ping")

    # Services

    def add_service(self, service: Service, *, executable_revision: int | None = None) -> Service:
        """Store a new service with a fresh id and revision 1; Conflict if the name is taken, or the executable a
        command service runs is no longer at ``executable_revision``."""
        stored = replace(service, id=uuid4().hex, revision=1)
        with self._executable_marked(service, executable_revision):
            try:
                self._services.insert_one(_service_doc(stored, used_by=[]))
            except DuplicateKeyError:
                raise _taken("service", stored.name) from None
        return stored

    def get_service(self, name: str) -> Service:
        """NotFound if there is no such service."""
        return load_service(_from_mongo(self._find_service(name, {"used_by": False})))

    def list_services(self, *, offset: int, limit: int) -> Page[Service]:
        """Ordered by name."""
        return _page(self._services, {}, [("name", ASCENDING)], offset, limit, load_service, {"used_by": False})

    def service_users(self, name: str) -> list[str]:
        """Names of the workflows that use the service, sorted; NotFound if there is no such service."""
        return self._names(self._find_service(name, {"used_by": True})["used_by"])

    def replace_service(
        self, service: Service, *, revision: int, users: list[str], executable_revision: int | None = None
    ) -> Service:
        """Replace the service named ``service.name``, keeping its id, at revision + 1.

        Conflict if its revision is no longer ``revision``, the workflows using it are no longer ``users``, or
        the executable a command service runs is no longer at ``executable_revision``.
        """
        current = self._find_service(service.name, {"revision": True, "used_by": True, "executable": True})
        used_by = current["used_by"]
        names = self._names(used_by)
        # A mark whose workflow is not written yet has no name: the users then differ, as they should.
        if current["revision"] == revision and len(names) == len(used_by) and names == sorted(users):
            stored = replace(service, id=current["_id"], revision=revision + 1)
            with self._executable_marked(service, executable_revision):
                # Conditional on what was just checked, which may have changed since.
                result = self._services.replace_one(
                    {"_id": stored.id, "revision": revision, "used_by": used_by}, _service_doc(stored, used_by)
                )
                if not result.matched_count:
                    raise Conflict(f"service {service.name!r} changed since it was checked")
            if current.get("executable") not in (None, _executable_of(service)):
                self._executables.update_one({"name": current["executable"]}, {"$pull": {"used_by": service.name}})
            return stored
        raise Conflict(f"service {service.name!r} changed since it was checked")

    def delete_service(self, name: str) -> None:
        """NotFound if absent; Conflict naming the workflows (in ``problems``) if any uses it."""
        deleted = self._services.find_one_and_delete({"name": name, "used_by": {"$size": 0}}, {"executable": True})
        if deleted is None:
            users = self.service_users(name)
            raise Conflict(
                f"service {name!r} is in use",
                [Problem(f"workflow {user!r} uses service {name!r}") for user in users],
            )
        if deleted.get("executable") is not None:
            self._executables.update_one({"name": deleted["executable"]}, {"$pull": {"used_by": name}})

    # Executables

    def add_executable(self, executable: Executable) -> Executable:
        """Store a new executable with a fresh id and revision 1; Conflict if the name is taken."""
        stored = replace(executable, id=uuid4().hex, revision=1)
        try:
            self._executables.insert_one(_to_mongo(executable_to_dict(stored)) | {"used_by": []})
        except DuplicateKeyError:
            raise _taken("executable", stored.name) from None
        return stored

    def get_executable(self, name: str) -> Executable:
        """NotFound if there is no such executable."""
        doc = self._executables.find_one({"name": name})
        if doc is None:
            raise NotFound(f"no executable {name!r}")
        return executable_from_dict(_from_mongo(doc))

    def list_executables(self, *, offset: int, limit: int) -> Page[Executable]:
        """Ordered by name."""
        return _page(self._executables, {}, [("name", ASCENDING)], offset, limit, executable_from_dict)

    def replace_executable(self, executable: Executable, *, revision: int, users: list[str]) -> Executable:
        """Replace the executable of that name, keeping its id, at revision + 1; Conflict if it is no longer at
        ``revision`` or the command services running it are no longer ``users``, NotFound if it is gone."""
        current = self._executables.find_one({"name": executable.name}, {"_id": True, "used_by": True})
        if current is None:
            raise NotFound(f"no executable {executable.name!r}")
        used_by = current.get("used_by", [])
        if sorted(used_by) == sorted(users):
            stored = replace(executable, id=current["_id"], revision=revision + 1)
            # Conditional on the services just checked: one marked since makes it fail.
            result = self._executables.replace_one(
                {"name": executable.name, "revision": revision, "used_by": used_by},
                _to_mongo(executable_to_dict(stored)) | {"used_by": used_by},
            )
            if result.matched_count:
                return stored
        raise Conflict(f"executable {executable.name!r} changed since it was checked")

    def delete_executable(self, name: str) -> None:
        """NotFound if absent; Conflict naming the command services (in ``problems``) if any runs it."""
        if self._executables.delete_one({"name": name, "used_by": {"$size": 0}}).deleted_count:
            return
        current = self._executables.find_one({"name": name}, {"used_by": True})
        if current is None:
            raise NotFound(f"no executable {name!r}")
        raise Conflict(
            f"executable {name!r} is in use",
            [Problem(f"service {user!r} runs executable {name!r}") for user in sorted(current.get("used_by", []))],
        )

    @contextmanager
    def _executable_marked(self, service: Service, revision: int | None) -> Iterator[None]:
        """Mark the executable a command service runs, at the revision it was checked against, as run by it;
        unmark it if the body fails and it was not marked before."""
        executable = _executable_of(service)
        if executable is None:
            yield
            return
        result = self._executables.update_one(
            {"name": executable, "revision": revision}, {"$addToSet": {"used_by": service.name}}
        )
        if not result.matched_count:
            raise Conflict(
                f"executable {executable!r} changed since service {service.name!r} was checked",
                [Problem(f"executable {executable!r} changed or went away", field="executable")],
            )
        try:
            yield
        except BaseException:
            if result.modified_count:
                self._executables.update_one({"name": executable}, {"$pull": {"used_by": service.name}})
            raise

    # Workflows

    def add_workflow(self, workflow: Workflow, *, services: Mapping[str, int]) -> Workflow:
        """Store a new workflow at version 1 with a fresh id.

        Conflict if the name is taken or any of ``services`` is no longer at the revision it was checked against.
        """
        workflow_id = uuid4().hex
        stored = replace(workflow, id=workflow_id, version=1)
        with self._services_marked(workflow_id, services):
            try:
                self._workflows.insert_one(_to_mongo(workflow_to_dict(stored)))
            except DuplicateKeyError:
                raise _taken("workflow", stored.name) from None
        self._index_searchable(stored)
        return stored

    def get_workflow(self, key: str) -> Workflow:
        """By id or by name; NotFound if neither matches."""
        return load_workflow(_from_mongo(self._find_workflow(key)))

    def get_workflow_version(self, workflow_id: str, version: int) -> Workflow:
        """A version as it was registered; kept after the workflow is replaced or deleted, for its events."""
        # The current document first: a version is copied before it is replaced, so if it is
        # no longer current by now, the copy is there.
        current = self._workflows.find_one({"_id": workflow_id, "version": version})
        doc = (
            _from_mongo(current)
            if current
            else self._versions.find_one({"id": workflow_id, "version": version}, {"_id": False})
        )
        if doc is None:
            raise NotFound(f"no version {version} of workflow {workflow_id!r}")
        return load_workflow(doc)

    def list_workflows(self, *, offset: int, limit: int) -> Page[Workflow]:
        """Ordered by name."""
        return _page(self._workflows, {}, [("name", ASCENDING)], offset, limit, load_workflow)

    def replace_workflow(self, workflow: Workflow, *, version: int, services: Mapping[str, int]) -> Workflow:
        """Store ``workflow`` (found by its id) as version + 1.

        Conflict if the current version is not ``version``, the new name is taken, or a service changed
        since it was checked; NotFound if there is no such workflow.
        """
        current = self._workflows.find_one({"_id": workflow.id})
        if current is None:
            raise NotFound(f"no workflow {workflow.id!r}")
        if current["version"] != version:
            raise _outdated(workflow.name, version)
        self._keep_version(current)
        workflow_id: str = current["_id"]
        stored = replace(workflow, version=version + 1)
        with self._services_marked(workflow_id, services):
            try:
                result = self._workflows.replace_one(
                    {"_id": workflow_id, "version": version}, _to_mongo(workflow_to_dict(stored))
                )
            except DuplicateKeyError:
                raise _taken("workflow", stored.name) from None
            if not result.matched_count:
                raise _outdated(workflow.name, version)
        self._unmark(workflow_id, {"$nin": list(services)})
        self._index_searchable(stored)
        return stored

    def _index_searchable(self, workflow: Workflow) -> None:
        """Index the events by each searchable input of ``workflow``, in the order of listings: every event's
        field, whatever its workflow, so that a search by it stays exact. Kept when no workflow declares it."""
        for name in sorted(f.name for f in workflow.inputs if f.searchable):
            self._events.create_index(
                [(f"data.{name}", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                name=f"events_data_{name}",
            )

    def delete_workflow(self, key: str) -> None:
        """By id or by name; NotFound if absent. Releases the services it used.

        Conflict if it is replaced meanwhile, so that the version deleted is the one kept.
        """
        current = self._find_workflow(key)
        self._keep_version(current)
        if not self._workflows.delete_one({"_id": current["_id"], "version": current["version"]}).deleted_count:
            raise _outdated(current["name"], current["version"])
        self._unmark(current["_id"])

    def save_health(self, service: str, health: Health) -> None:
        self._service_health.replace_one({"_id": service}, asdict(health), upsert=True)

    def health(self) -> dict[str, Health]:
        return {doc.pop("_id"): Health(**doc) for doc in self._service_health.find()}

    # Events

    def create_event(self, event: Event) -> tuple[Event, bool]:
        """Store a new event; with an idempotency key already used for the same workflow,
        store nothing and return the existing event and False."""
        try:
            self._events.insert_one(_to_mongo(event.to_doc()))
        except DuplicateKeyError:
            existing = None
            if event.idempotency_key is not None:
                existing = self._events.find_one(
                    {"workflow_id": event.workflow_id, "idempotency_key": event.idempotency_key}
                )
            if existing is None:
                raise  # the event's id is taken, not its idempotency key
            return _load_event(existing), False
        self._count(event.workflow_id, {event.status: 1})
        return event, True

    def get_event(self, event_id: str) -> Event:
        """NotFound if there is no such event."""
        doc = self._events.find_one({"_id": event_id})
        if doc is None:
            raise NotFound(f"no event {event_id!r}")
        return _load_event(doc)

    def save_event(self, event: Event) -> bool:
        """Write ``event`` if the stored version is still ``event.version``, and then bump both."""
        doc = _to_mongo(event.to_doc())
        doc["version"] = event.version + 1
        # A whole replacement, not $set: fields the event no longer has (due_at, ...) must go. The status it
        # replaced comes back with it, for the counters.
        before = self._events.find_one_and_replace(
            {"_id": event.id, "version": event.version}, doc, projection={"status": True, "_id": False}
        )
        if before is None:
            return False
        if before["status"] != event.status:
            self._count(event.workflow_id, {before["status"]: -1, event.status: 1})
        event.version += 1
        return True

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
        query: Doc = {field: value for field, value in filters.items() if value is not None}
        conditions = [_same_json(("data", *path), value) for path, value in data_conditions(data or {})]
        if parent is not None:
            conditions.append({"parent.event": parent})
        if conditions:
            query["$and"] = conditions
        listed = dict(query)
        if after is not None:
            # The bound on created_at alone is what the index ranges over; the $or then leaves out the ties before.
            listed["created_at"] = {"$lte": after[0]}
            listed["$or"] = [{"created_at": {"$lt": after[0]}}, {"_id": {"$lt": after[1]}}]
        docs = self._events.find(listed).sort(_NEWEST).skip(offset).limit(limit)
        if not conditions:
            return Page([_load_event(doc) for doc in docs], self._counted(query))
        # A search: bounded in time, as on fields no index serves it reads every event.
        deadline = time.monotonic() + SEARCH_SECONDS
        events: list[Event] = []
        try:
            for doc in docs.max_time_ms(_milliseconds(SEARCH_SECONDS)):
                events.append(_load_event(doc))
        except ExecutionTimeout:
            return Page(events, offset + len(events), exact=False, complete=False)
        if offset == 0 and after is None and len(events) < limit:
            return Page(events, len(events))
        try:
            total = self._events.count_documents(
                query, limit=_OVER, maxTimeMS=_milliseconds(max(deadline - time.monotonic(), 0.001))
            )
        except ExecutionTimeout:
            return Page(events, offset + len(events), exact=False)
        return Page(events, min(total, COUNT_LIMIT), exact=total <= COUNT_LIMIT)

    def _counted(self, query: Doc) -> int:
        """How many events match ``query`` (on the workflow, the status, both or neither), from their counters."""
        grouped = self._counts.aggregate(
            [
                {"$match": {f"_id.{field}": value for field, value in query.items()}},
                {"$group": {"_id": None, "count": {"$sum": "$count"}}},
            ]
        )
        return next((int(group["count"]) for group in grouped), 0)

    def _count(self, workflow_id: str, changes: Mapping[str, int]) -> None:
        """Add to the counters of ``workflow_id``'s events in each status its change."""
        for status, change in changes.items():
            key = {"workflow_id": workflow_id, "status": str(status)}
            self._counts.update_one({"_id": key}, {"$inc": {"count": change}}, upsert=True)

    def recount_events(self) -> None:
        """Count the events by workflow and status again, in place of their counters: the counters miss the
        change of a process stopped between an event's write and theirs, which this repairs (it reads every
        event, and an event written meanwhile may be counted off by one until the next recount)."""
        grouped = self._events.aggregate(
            [{"$group": {"_id": {"workflow_id": "$workflow_id", "status": "$status"}, "count": {"$sum": 1}}}]
        )
        counts = {(group["_id"]["workflow_id"], group["_id"]["status"]): group["count"] for group in grouped}
        for doc in self._counts.find():
            counts.setdefault((doc["_id"]["workflow_id"], doc["_id"]["status"]), 0)
        for (workflow_id, status), count in counts.items():
            key = {"workflow_id": workflow_id, "status": status}
            self._counts.replace_one({"_id": key}, {"_id": key, "count": count}, upsert=True)

    def delete_events(self, *, created_before: float, limit: int) -> int:
        old = (
            self._events.find(
                {"created_at": {"$lt": created_before}, "status": {"$in": _TERMINAL}},
                {"_id": True, "workflow_id": True, "status": True},
            )
            .sort("created_at")
            .limit(limit)
        )
        groups: dict[tuple[str, str], list[str]] = {}
        for doc in old:
            groups.setdefault((doc["workflow_id"], doc["status"]), []).append(doc["_id"])
        # Items first: if this stops half-way, the events are still there, and found again next time.
        self._items.delete_many({"event_id": {"$in": [i for ids in groups.values() for i in ids]}})
        deleted = 0
        # By workflow and status, each still in the status it was found in, to know what to take off the counters.
        for (workflow_id, status), ids in groups.items():
            count = self._events.delete_many({"_id": {"$in": ids}, "status": status}).deleted_count
            self._count(workflow_id, {status: -count})
            deleted += count
        return deleted

    def due_events(self, now: float, limit: int) -> list[Event]:
        docs = self._events.find({"due_at": {"$lte": now}}).sort("due_at").limit(limit)
        return [_load_event(doc) for doc in docs]

    def event_status(self, event_id: str) -> EventStatus:
        """NotFound if there is no such event."""
        doc = self._events.find_one({"_id": event_id}, {"status": True})
        if doc is None:
            raise NotFound(f"no event {event_id!r}")
        return EventStatus(doc["status"])

    def acquire_slot(
        self, service: str, limit: int, holder: str, *, until: float, now: float, waiter: tuple[str, str]
    ) -> bool:
        # Without a transaction: the waiter is noted, then the slots are tried once more, so that a slot given
        # back in between (which found no waiter to wake) is not missed.
        noted = {"_id": {"service": service, "event_id": waiter[0], "unit": waiter[1]}}
        if not self._take_slot(service, limit, holder, until, now):
            self.hold(service, waiter, since=now)
            if not self._take_slot(service, limit, holder, until, now):
                return False
        self._slot_waiters.delete_one(noted)
        return True

    def statistics(self, now: float) -> Statistics:
        slots: dict[str, list[int]] = {}
        for doc in self._slots.find({"until": {"$gt": now}}, {"_id": True}):
            slots.setdefault(doc["_id"]["service"], [0, 0])[0] += 1
        for doc in self._slot_waiters.find({}, {"service": True}):
            slots.setdefault(doc["service"], [0, 0])[1] += 1
        return Statistics(
            events={
                (doc["_id"]["workflow_id"], doc["_id"]["status"]): doc["count"]
                for doc in self._counts.find({"count": {"$ne": 0}})
            },
            overdue=self._events.count_documents({"due_at": {"$lte": now}, "status": {"$nin": _TERMINAL}}),
            slots={service: (held, waiting) for service, (held, waiting) in slots.items()},
        )

    def hold(self, service: str, waiter: tuple[str, str], *, since: float) -> None:
        noted = {"_id": {"service": service, "event_id": waiter[0], "unit": waiter[1]}}
        self._slot_waiters.update_one(noted, {"$setOnInsert": {"service": service, "since": since}}, upsert=True)

    def take_waiters(self, service: str) -> list[tuple[str, str]]:
        taken = []
        # One by one, so that a waiter noted meanwhile is either taken now or left for the next time.
        while doc := self._slot_waiters.find_one_and_delete({"service": service}, sort=[("since", ASCENDING)]):
            taken.append((doc["_id"]["event_id"], doc["_id"]["unit"]))
        return taken

    def release_slot(self, service: str, holder: str) -> tuple[str, str] | None:
        if not self._slots.delete_one({"_id.service": service, "holder": holder}).deleted_count:
            return None
        first = self._slot_waiters.find_one_and_delete({"service": service}, sort=[("since", ASCENDING)])
        return (first["_id"]["event_id"], first["_id"]["unit"]) if first else None

    # Items: documents of the shape of Item.to_doc, with an _id of MongoDB's own; found by (event_id, step_id,
    # index), which a unique index keeps to one item each.

    def add_items(self, items: Sequence[Item]) -> None:
        """Store new items; an item already stored is kept as it is. Not atomic: after a failure, some may be
        stored, and adding them all again stores the rest."""
        if not items:
            return
        try:
            self._items.insert_many([item.to_doc() for item in items], ordered=False)
        except BulkWriteError as error:
            if error.details.get("writeConcernErrors") or any(
                e["code"] != _DUPLICATE_KEY for e in error.details["writeErrors"]
            ):
                raise

    def get_item(self, event_id: str, step_id: str, index: int) -> Item:
        """NotFound if there is no such item."""
        doc = self._items.find_one(_item_key(event_id, step_id, index), {"_id": False})
        if doc is None:
            raise NotFound(f"no item {step_id}[{index}] in event {event_id!r}")
        return Item.from_doc(doc)

    def save_item(self, item: Item) -> bool:
        """Write ``item`` if the stored version is still ``item.version``, and then bump both."""
        doc = item.to_doc()
        doc["version"] = item.version + 1
        # A whole replacement, not $set: a due_at the item no longer has must go.
        current = _item_key(item.event_id, item.step_id, item.index) | {"version": item.version}
        if not self._items.replace_one(current, doc).matched_count:
            return False
        item.version += 1
        return True

    def list_items(
        self, event_id: str, step_id: str, *, statuses: Iterable[str] | None = None, after: int = -1, limit: int
    ) -> list[Item]:
        query: Doc = {"event_id": event_id, "step_id": step_id, "index": {"$gt": after}}
        if statuses is not None:
            # MongoDB reads the index once per status and merges them in the order of the index.
            query["state.status"] = {"$in": sorted({str(status) for status in statuses})}
        docs = self._items.find(query, {"_id": False}).sort("index", ASCENDING).limit(limit)
        return [Item.from_doc(doc) for doc in docs]

    def count_items(self, event_id: str, step_id: str) -> dict[str, int]:
        grouped = self._items.aggregate(
            [
                {"$match": {"event_id": event_id, "step_id": step_id}},
                {"$group": {"_id": "$state.status", "count": {"$sum": 1}}},
            ]
        )
        return {group["_id"]: group["count"] for group in grouped}

    def due_items(self, now: float, limit: int) -> list[Item]:
        # The $type is the filter of the partial index: MongoDB uses that index only for queries that say so.
        docs = self._items.find({"due_at": {"$type": "number", "$lte": now}}, {"_id": False})
        return [Item.from_doc(doc) for doc in docs.sort("due_at", ASCENDING).limit(limit)]

    def _create_item_indexes(self) -> None:
        self._items.create_index([("event_id", ASCENDING), ("step_id", ASCENDING), ("index", ASCENDING)], unique=True)
        self._items.create_index(
            [("event_id", ASCENDING), ("step_id", ASCENDING), ("state.status", ASCENDING), ("index", ASCENDING)]
        )
        # Only the items with something left to do: most of a large map's items are done and have no due_at.
        self._items.create_index("due_at", partialFilterExpression={"due_at": {"$type": "number"}})

    # Schedules: documents of the shape of Schedule.to_doc, with ``id`` as ``_id`` and ``due_at`` beside it.

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Store a new schedule with a fresh id and version 1; Conflict if the name is taken."""
        stored = replace(schedule, id=uuid4().hex, version=1)
        try:
            self._schedules.insert_one(_schedule_doc(stored))
        except DuplicateKeyError:
            raise _taken("schedule", stored.name) from None
        return stored

    def get_schedule(self, key: str) -> Schedule:
        """By id or by name; NotFound if neither matches."""
        return _load_schedule(self._find_schedule(key))

    def list_schedules(self, *, offset: int, limit: int) -> Page[Schedule]:
        """Ordered by name."""
        return _page(self._schedules, {}, [("name", ASCENDING)], offset, limit, _load_schedule)

    def save_schedule(self, schedule: Schedule) -> bool:
        """Write ``schedule`` if the stored version is still ``schedule.version``, and then bump both."""
        doc = _schedule_doc(schedule)
        doc["version"] = schedule.version + 1
        if not self._schedules.replace_one({"_id": schedule.id, "version": schedule.version}, doc).matched_count:
            return False
        schedule.version += 1
        return True

    def delete_schedule(self, key: str) -> None:
        """By id or by name; NotFound if neither matches."""
        self._schedules.delete_one({"_id": self._find_schedule(key)["_id"]})

    def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        # The $type is the filter of the partial index, which holds only the schedules that will be due.
        docs = self._schedules.find({"due_at": {"$type": "number", "$lte": now}})
        return [_load_schedule(doc) for doc in docs.sort("due_at", ASCENDING).limit(limit)]

    def schedule_events(self, schedule: Schedule, *, offset: int, limit: int) -> Page[Event]:
        """The latest run first: the keys of a schedule's runs sort as their times."""
        # An anchored prefix, which MongoDB reads as a range of the index on (workflow_id, idempotency_key).
        query = {
            "workflow_id": schedule.workflow_id,
            "idempotency_key": {"$regex": f"^{re.escape(key_prefix(schedule.id))}"},
        }
        return _page(self._events, query, [("idempotency_key", DESCENDING)], offset, limit, Event.from_doc)

    def _find_schedule(self, key: str) -> Doc:
        doc = self._schedules.find_one({"_id": key}) or self._schedules.find_one({"name": key})
        if doc is None:
            raise NotFound(f"no schedule {key!r}")
        return doc

    def _create_schedule_indexes(self) -> None:
        self._schedules.create_index("name", unique=True)
        self._schedules.create_index("due_at", partialFilterExpression={"due_at": {"$type": "number"}})

    # Fleets: a workload's ``_id`` is ``<fleet>/<name>`` (names hold no ``/``); its host, lease, state and version
    # are fields of their own, for the assigner's conditional writes.

    def add_fleet(self, fleet: Fleet) -> Fleet:
        """Store a new fleet at version 1; Conflict if the name is taken."""
        stored = replace(fleet, version=1)
        try:
            self._fleets.insert_one({"_id": fleet.name, **fleet_to_dict(stored)})
        except DuplicateKeyError:
            raise _taken("fleet", fleet.name) from None
        return stored

    def get_fleet(self, name: str) -> Fleet:
        doc = self._fleets.find_one({"_id": name})
        if doc is None:
            raise NotFound(f"no fleet {name!r}")
        return _load_fleet(doc)

    def list_fleets(self) -> list[Fleet]:
        return [_load_fleet(doc) for doc in self._fleets.find().sort("_id", ASCENDING)]

    def replace_fleet(self, fleet: Fleet, *, version: int) -> Fleet:
        self.get_fleet(fleet.name)
        stored = replace(fleet, version=version + 1)
        if not self._fleets.replace_one({"_id": fleet.name, "version": version}, fleet_to_dict(stored)).matched_count:
            raise Conflict(f"fleet {fleet.name!r} changed since version {version}")
        return stored

    def delete_fleet(self, name: str) -> None:
        self.get_fleet(name)
        if self._workloads.find_one({"fleet": name}, {"_id": True}) is not None:
            raise Conflict(f"fleet {name!r} still has workloads: remove them first")
        self._fleets.delete_one({"_id": name})

    def add_workloads(self, workloads: Sequence[Workload]) -> list[str]:
        if not workloads:
            return []
        docs = [_workload_doc(replace(w, host=None, lease_until=0.0, version=1)) for w in workloads]
        try:
            self._workloads.insert_many(docs, ordered=False)
            return [w.name for w in workloads]
        except BulkWriteError as e:
            taken = {docs[error["index"]]["name"] for error in e.details["writeErrors"] if error["code"] == 11000}
            if len(taken) < len(e.details["writeErrors"]):
                raise
            return [w.name for w in workloads if w.name not in taken]

    def remove_workloads(self, fleet: str, names: Iterable[str]) -> list[Workload]:
        query = {"_id": {"$in": [f"{fleet}/{name}" for name in names]}}
        found = [_load_workload(doc) for doc in self._workloads.find(query)]
        removed = [w for w in found if self._workloads.delete_one({"_id": f"{fleet}/{w.name}"}).deleted_count]
        return sorted(removed, key=lambda w: w.name)

    def get_workload(self, fleet: str, name: str) -> Workload:
        doc = self._workloads.find_one({"_id": f"{fleet}/{name}"})
        if doc is None:
            raise NotFound(f"no workload {name!r} in fleet {fleet!r}")
        return _load_workload(doc)

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
        query: Doc = {"fleet": fleet, "name": {"$gt": after}}
        if state is not None:
            query["state"] = state.value
        if host is not None:
            query["host"] = host
        for key, value in (labels or {}).items():
            query[f"labels.{key}"] = value
        docs = self._workloads.find(query).sort("name", ASCENDING).limit(limit)
        return [_load_workload(doc) for doc in docs]

    def count_workloads(self, fleet: str | None = None) -> dict[tuple[str, str | None, str], int]:
        match = [{"$match": {"fleet": fleet}}] if fleet is not None else []
        group = {"$group": {"_id": {"fleet": "$fleet", "host": "$host", "state": "$state"}, "count": {"$sum": 1}}}
        return {
            (doc["_id"]["fleet"], doc["_id"].get("host"), doc["_id"]["state"]): doc["count"]
            for doc in self._workloads.aggregate([*match, group])
        }

    def save_workload(self, workload: Workload) -> bool:
        fields = {
            key: value
            for key, value in _workload_doc(workload).items()
            if key in ("state", "failed_pings", "next_ping_at", "message", "since")
        }
        query = {"_id": f"{workload.fleet}/{workload.name}", "version": workload.version}
        return bool(self._workloads.update_one(query, {"$set": fields, "$inc": {"version": 1}}).matched_count)

    def unassigned_workloads(self, fleet: str, *, now: float, limit: int) -> list[Workload]:
        query = {"fleet": fleet, "$or": [{"host": None}, {"lease_until": {"$lt": now}}]}
        return [_load_workload(doc) for doc in self._workloads.find(query).sort("name", ASCENDING).limit(limit)]

    def claim_workloads(
        self, fleet: str, names: Iterable[str], host: str, *, now: float, until: float, source: str | None = None
    ) -> list[str]:
        condition: Doc = (
            {"host": source} if source is not None else {"$or": [{"host": None}, {"lease_until": {"$lt": now}}]}
        )
        ids = [f"{fleet}/{name}" for name in names]
        # One conditional write per workload: a bulk update could not say which it changed.
        claimed = []
        for workload_id in ids:
            fields = {"host": host, "lease_until": until, "state": WorkloadState.INITIALIZING.value, "failed_pings": 0}
            update = {"$set": fields | {"since": now}, "$inc": {"version": 1}}
            if self._workloads.update_one({"_id": workload_id, **condition}, update).matched_count:
                claimed.append(workload_id.split("/", 1)[1])
        return sorted(claimed)

    def renew_workloads(self, host: str, until: float) -> int:
        return self._workloads.update_many({"host": host}, {"$set": {"lease_until": until}}).matched_count

    def heartbeat(self, host: Host) -> None:
        self._hosts.update_one(
            {"_id": host.name},
            {"$set": {"lease_until": host.lease_until}, "$setOnInsert": {"started_at": host.started_at}},
            upsert=True,
        )

    def list_hosts(self) -> list[Host]:
        return [Host(d["_id"], d["lease_until"], d["started_at"]) for d in self._hosts.find().sort("_id", ASCENDING)]

    def forget_hosts(self, *, lapsed_before: float) -> int:
        return self._hosts.delete_many({"lease_until": {"$lt": lapsed_before}}).deleted_count

    def acquire_lease(self, key: str, holder: str, *, now: float, until: float) -> bool:
        try:
            self._leases.update_one(
                {"_id": key, "$or": [{"holder": holder}, {"until": {"$lt": now}}]},
                {"$set": {"holder": holder, "until": until}},
                upsert=True,
            )
        except DuplicateKeyError:  # held by another: the upsert tried to insert a second document with its key
            return False
        return True

    def add_lifecycle_events(self, events: Sequence[LifecycleEvent]) -> None:
        if events:
            self._lifecycle.insert_many([lifecycle_to_dict(e) for e in events])

    def list_lifecycle_events(
        self, fleet: str, workload: str | None = None, *, limit: int = 100
    ) -> list[LifecycleEvent]:
        query: Doc = {"fleet": fleet} if workload is None else {"fleet": fleet, "workload": workload}
        docs = self._lifecycle.find(query).sort([("at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
        return [lifecycle_from_dict(doc) for doc in docs]

    def _create_fleet_indexes(self) -> None:
        self._workloads.create_index([("fleet", ASCENDING), ("name", ASCENDING)])
        self._workloads.create_index([("host", ASCENDING), ("fleet", ASCENDING), ("name", ASCENDING)])
        self._workloads.create_index([("fleet", ASCENDING), ("state", ASCENDING), ("name", ASCENDING)])
        self._workloads.create_index([("fleet", ASCENDING), ("lease_until", ASCENDING)])
        self._lifecycle.create_index([("fleet", ASCENDING), ("at", DESCENDING)])
        self._lifecycle.create_index([("fleet", ASCENDING), ("workload", ASCENDING), ("at", DESCENDING)])
        # The ad hoc task runs of fleets are gone: their collections, left by an older version, go too.
        for gone in ("fleet_task_runs", "fleet_task_items"):
            self._database.drop_collection(gone)

    # Helpers

    def _create_indexes(self) -> None:
        self._services.create_index("name", unique=True)
        self._executables.create_index("name", unique=True)
        self._services.create_index("used_by")
        self._workflows.create_index("name", unique=True)
        self._versions.create_index([("id", ASCENDING), ("version", ASCENDING)], unique=True)
        # Partial, not sparse: a sparse compound index still holds the events without a key.
        self._events.create_index(
            [("workflow_id", ASCENDING), ("idempotency_key", ASCENDING)],
            unique=True,
            partialFilterExpression={"idempotency_key": {"$type": "string"}},
        )
        # One index per combination of the listing's filters, in its order; they replace two older ones.
        for old in ("workflow_id_1_status_1_created_at_-1", "created_at_-1"):
            with suppress(OperationFailure):
                self._events.drop_index(old)
        for filters in ([], ["workflow_id"], ["status"], ["workflow_id", "status"]):
            self._events.create_index([*((field, ASCENDING) for field in filters), *_NEWEST])
        self._events.create_index("due_at")
        self._slot_waiters.create_index([("service", ASCENDING), ("since", ASCENDING)])

    def _take_slot(self, service: str, limit: int, holder: str, until: float, now: float) -> bool:
        """One of the slots numbered 0 to ``limit`` - 1, each one document changed atomically."""
        for slot in range(limit):
            try:
                # A slot whose time is over is taken over; while it is held, the upsert's insert fails on the _id.
                self._slots.update_one(
                    {"_id": {"service": service, "slot": slot}, "until": {"$lte": now}},
                    {"$set": {"holder": holder, "until": until}},
                    upsert=True,
                )
            except DuplicateKeyError:
                continue
            return True
        return False

    def _find_service(self, name: str, projection: Mapping[str, bool]) -> Doc:
        doc = self._services.find_one({"name": name}, projection)
        if doc is None:
            raise NotFound(f"no service {name!r}")
        return doc

    def _find_workflow(self, key: str) -> Doc:
        doc = self._workflows.find_one({"_id": key}) or self._workflows.find_one({"name": key})
        if doc is None:
            raise NotFound(f"no workflow {key!r}")
        return doc

    def _names(self, workflow_ids: list[str]) -> list[str]:
        """The sorted names of those of the workflows that exist."""
        return sorted(doc["name"] for doc in self._workflows.find({"_id": {"$in": workflow_ids}}, {"name": True}))

    def _keep_version(self, workflow: Doc) -> None:
        """Copy the current version of a workflow into ``workflow_versions``; a copy already there is the same."""
        doc = _from_mongo(workflow)
        self._versions.replace_one({"id": doc["id"], "version": doc["version"]}, doc, upsert=True)

    @contextmanager
    def _services_marked(self, workflow_id: str, services: Mapping[str, int]) -> Iterator[None]:
        """Mark each service, at the revision it was checked against, as used by the workflow;
        unmark those newly marked if that or the body fails."""
        marked: list[str] = []
        try:
            for name, revision in sorted(services.items()):
                result = self._services.update_one(
                    {"name": name, "revision": revision}, {"$addToSet": {"used_by": workflow_id}}
                )
                if not result.matched_count:
                    raise Conflict(
                        "services changed since the workflow was checked",
                        [Problem(f"service {name!r} changed or went away since the workflow was checked")],
                    )
                if result.modified_count:
                    marked.append(name)
            yield
        except BaseException:
            self._unmark(workflow_id, {"$in": marked})
            raise

    def _unmark(self, workflow_id: str, names: Doc | None = None) -> None:
        """Remove the workflow's mark from the services (those whose name matches ``names``, if given)."""
        query = {"used_by": workflow_id} | ({"name": names} if names else {})
        self._services.update_many(query, {"$pull": {"used_by": workflow_id}})


_DUPLICATE_KEY = 11000
_NEWEST = [("created_at", DESCENDING), ("_id", DESCENDING)]
_OVER = COUNT_LIMIT + 1
"""Counting this many events is enough to know that there are more than COUNT_LIMIT."""


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _item_key(event_id: str, step_id: str, index: int) -> Doc:
    return {"event_id": event_id, "step_id": step_id, "index": index}


def _to_mongo(doc: Doc) -> Doc:
    return {("_id" if key == "id" else key): value for key, value in doc.items()}


def _from_mongo(doc: Doc) -> Doc:
    return {("id" if key == "_id" else key): value for key, value in doc.items()}


def _same_json(path: tuple[str, ...], value: Any) -> Doc:
    """The condition that the field at ``path`` is ``value``, of the same JSON type, as the SQLite store compares them.

    As a JSON path does, the path goes through objects only: a dotted path in MongoDB would also look into the
    elements of any array on the way, and an array is equal to a value it merely holds.
    """
    field = ".".join(path)
    # Each object on the way below the event's data, which is always an object.
    between = [".".join(path[:end]) for end in range(2, len(path))]
    if value is None:
        # Missing counts as null, and so does a path through an array, which a JSON path finds nothing at.
        leaf = {field: {"$eq": None, "$not": {"$type": "array"}}}
        return {"$or": [leaf, *({prefix: {"$type": "array"}} for prefix in between)]}
    if isinstance(value, list):
        condition: Doc = {"$eq": value, "$not": {"$elemMatch": {"$eq": value}}}
    else:
        kind = "bool" if isinstance(value, bool) else "string" if isinstance(value, str) else "number"
        # Without the last two, true would match 1 and "a" an array holding it.
        condition = {"$eq": value, "$type": kind, "$not": {"$type": "array"}}
    return {field: condition} | {prefix: {"$not": {"$type": "array"}} for prefix in between}


def _load_event(doc: Doc) -> Event:
    return Event.from_doc(_from_mongo(doc))


def _schedule_doc(schedule: Schedule) -> Doc:
    return _to_mongo(schedule.to_doc()) | {"due_at": schedule.due_at}


def _load_schedule(doc: Doc) -> Schedule:
    return Schedule.from_doc(_from_mongo(doc))


def _executable_of(service: Service) -> str | None:
    """The executable a command service runs; None for another service."""
    return service.endpoint.executable if isinstance(service.endpoint, CommandTarget) else None


def _service_doc(service: Service, used_by: list[str]) -> Doc:
    return _to_mongo(service_to_dict(service, in_clear=True)) | {"used_by": used_by}


def _page(
    collection: Collection[Doc],
    query: Doc,
    sort: list[tuple[str, int]],
    offset: int,
    limit: int,
    load: Callable[[Doc], T],
    projection: Mapping[str, bool] | None = None,
) -> Page[T]:
    """One page, in ``sort`` order, of the documents matching ``query``, and their count."""
    docs = collection.find(query, projection).sort(sort).skip(offset).limit(limit)
    return Page([load(_from_mongo(doc)) for doc in docs], collection.count_documents(query))


def _taken(kind: str, name: str) -> Conflict:
    return Conflict(f"a {kind} named {name!r} already exists")


def _outdated(name: str, version: int) -> Conflict:
    return Conflict(f"workflow {name!r} changed since version {version}")


# Fleets


def _load_fleet(doc: Doc) -> Fleet:
    return fleet_from_dict({key: value for key, value in doc.items() if key != "_id"})


def _workload_doc(workload: Workload) -> Doc:
    return {"_id": f"{workload.fleet}/{workload.name}", **workload_to_dict(workload)}


def _load_workload(doc: Doc) -> Workload:
    return workload_from_dict(doc)
