"""A small typed client of machinery's API, for programs and for the remote command line.

    client = Client("http://127.0.0.1:8080", token="...")
    ack = client.send("process-text", {"message": "hello"})
    event = client.wait(ack.event_id)

Definitions come back as the engine's own :class:`~machinery.engine.model.Service` and
:class:`~machinery.engine.model.Workflow`, read with :mod:`machinery.codec` as the server writes them, so
that the client and the local :class:`~machinery.registry.Registry` answer alike (``machinery apply`` and
``export`` use either). Events, their steps and items come back as the frozen dataclasses below.

Every request has a timeout. An error answer is raised as the error of :mod:`machinery.engine.errors` that
the server raised, with the problems it listed: the status says which (the inverse of
``machinery.api.errors.HTTP_STATUS``), and where a status stands for two errors the request does
(a 422 is InvalidDefinition for a definition, InvalidData for an event; a 409 is Conflict for a definition,
InvalidState for an event).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import requests

from machinery.codec import (
    executable_from_dict,
    executable_to_dict,
    fleet_from_dict,
    fleet_to_dict,
    lifecycle_from_dict,
    service_from_dict,
    service_to_dict,
    workflow_from_dict,
    workflow_to_dict,
    workload_from_dict,
)
from machinery.engine.errors import (
    Conflict,
    Forbidden,
    GraphvizMissing,
    InvalidData,
    InvalidDefinition,
    InvalidState,
    MachineryError,
    NotFound,
    Problem,
    Unauthorized,
    Unreachable,
)
from machinery.engine.fleets import Fleet, LifecycleEvent, Workload
from machinery.engine.model import Executable, Service, Workflow
from machinery.engine.ports import Page
from machinery.engine.state import EventStatus, StepStatus

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
"""Seconds each request may take to connect, and then between two bytes of the answer."""

MAX_PAGE_SIZE = 100
"""The largest page the API's lists give."""

ERRORS: Mapping[int, type[MachineryError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidData,
    503: GraphvizMissing,
}
"""The error of each status; any other error status is a MachineryError. A request about a definition reads a
422 as InvalidDefinition, and one about an event a 409 as InvalidState (``DEFINITION_ERRORS``, ``EVENT_ERRORS``)."""

DEFINITION_ERRORS: Mapping[int, type[MachineryError]] = {422: InvalidDefinition}
"""How a request writing a definition reads a status: an expression is part of a workflow's definition too."""
EVENT_ERRORS: Mapping[int, type[MachineryError]] = {409: InvalidState}
"""How a request about an event reads a status."""
_FINAL_STEP = frozenset(s for s in StepStatus if s.terminal)


@dataclass(frozen=True)
class Ack:
    """An event accepted: ``POST /e/<workflow>``'s answer."""

    event_id: str
    ack_date: datetime
    status: EventStatus
    replayed: bool = False
    """Sent before with the same idempotency key: this is the event it created then."""


@dataclass(frozen=True)
class ItemCounts:
    """A map step's items: how many, and (about one event) how many are in each status."""

    total: int
    counts: Mapping[str, int] | None = None

    @property
    def finished(self) -> int:
        return sum(n for status, n in (self.counts or {}).items() if StepStatus(status) in _FINAL_STEP)


@dataclass(frozen=True)
class StepView:
    """A step of an event as the API shows it."""

    id: str
    kind: str
    status: StepStatus
    attempts: int
    service: str | None = None
    route: str | None = None
    items: ItemCounts | None = None
    note: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wakes_at: datetime | None = None
    next_attempt_at: datetime | None = None
    inputs: Mapping[str, Any] | None = None
    outputs: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    history: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class EventView:
    """An event as the API shows it; ``steps`` in the order of its workflow's version, which lists leave out."""

    id: str
    workflow: str
    workflow_id: str
    version: int
    status: EventStatus
    data: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    outputs: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    deadline: datetime | None = None
    notification: Mapping[str, Any] | None = None
    steps: tuple[StepView, ...] = ()


@dataclass(frozen=True)
class ItemView:
    """An item of a map step."""

    index: int
    status: StepStatus
    attempts: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    inputs: Mapping[str, Any] | None = None
    outputs: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RetryReport:
    """The failed events of a workflow retried at once, and those skipped with why."""

    retried: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class WhoAmI:
    """The role of the token sent, and the roles whose requests it may make."""

    role: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class ServiceHealth:
    """The last probe of a service that has a health check."""

    service: str
    status: str
    since: datetime
    checked_at: datetime
    failures: int
    error: str | None = None


class Client:
    """machinery's API at ``url``, with ``token`` as its bearer token if given.

    Its definition methods are those of :class:`~machinery.registry.Registry`, so that code written for one
    takes the other.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Services

    def list_services(self, *, offset: int = 0, limit: int = 100) -> Page[Service]:
        return self._page("/services", service_from_dict, offset=offset, limit=limit)

    def get_service(self, name: str) -> Service:
        return service_from_dict(self._json("GET", f"/services/{_segment(name)}"))

    def add_service(self, service: Service) -> Service:
        return service_from_dict(self._json("POST", "/services", _service_body(service), errors=DEFINITION_ERRORS))

    def replace_service(self, name: str, service: Service) -> Service:
        body = _service_body(service)
        return service_from_dict(self._json("PUT", f"/services/{_segment(name)}", body, errors=DEFINITION_ERRORS))

    def delete_service(self, name: str) -> None:
        self._request("DELETE", f"/services/{_segment(name)}")

    # Executables

    def list_executables(self, *, offset: int = 0, limit: int = 100) -> Page[Executable]:
        return self._page("/executables", executable_from_dict, offset=offset, limit=limit)

    def get_executable(self, name: str) -> Executable:
        return executable_from_dict(self._json("GET", f"/executables/{_segment(name)}"))

    def add_executable(self, executable: Executable) -> Executable:
        body = _executable_body(executable)
        return executable_from_dict(self._json("POST", "/executables", body, errors=DEFINITION_ERRORS))

    def replace_executable(self, name: str, executable: Executable) -> Executable:
        body = _executable_body(executable)
        path = f"/executables/{_segment(name)}"
        return executable_from_dict(self._json("PUT", path, body, errors=DEFINITION_ERRORS))

    def delete_executable(self, name: str) -> None:
        self._request("DELETE", f"/executables/{_segment(name)}")

    def check_flags(self, name: str, flags: Sequence[str]) -> tuple[str, ...]:
        """The argv order of ``flags`` for the executable ``name``; InvalidDefinition saying why they cannot go
        together."""
        body = {"flags": list(flags)}
        answer = self._json("POST", f"/executables/{_segment(name)}/check", body, errors=DEFINITION_ERRORS)
        return tuple(answer["argv"])

    # Fleets

    def list_fleets(self) -> list[Fleet]:
        return [fleet_from_dict(doc) for doc in self._json("GET", "/fleets")]

    def get_fleet(self, name: str) -> Fleet:
        return fleet_from_dict(self._json("GET", f"/fleets/{_segment(name)}"))

    def add_fleet(self, fleet: Fleet) -> Fleet:
        body = {k: v for k, v in fleet_to_dict(fleet).items() if k != "version"}
        return fleet_from_dict(self._json("POST", "/fleets", body, errors=DEFINITION_ERRORS))

    def delete_fleet(self, name: str) -> None:
        self._request("DELETE", f"/fleets/{_segment(name)}")

    def add_workloads(self, fleet: str, workloads: Iterable[Workload]) -> list[str]:
        """Add workloads (their name, labels and driver configuration); the names of those added."""
        body = {"workloads": [{"name": w.name, "labels": dict(w.labels), "config": dict(w.config)} for w in workloads]}
        return list(self._json("POST", f"/fleets/{_segment(fleet)}/workloads", body)["names"])

    def remove_workloads(self, fleet: str, names: Iterable[str]) -> list[str]:
        """Remove workloads by name; the names of those removed."""
        body = {"names": list(names)}
        return list(self._json("DELETE", f"/fleets/{_segment(fleet)}/workloads", body)["names"])

    def list_workloads(
        self,
        fleet: str,
        *,
        state: str | None = None,
        labels: Mapping[str, str] | None = None,
        host: str | None = None,
        after: str = "",
        limit: int = 100,
    ) -> list[Workload]:
        """A page of a fleet's workloads by name, from the first past ``after``, filtered as the API filters."""
        params = {
            "state": state,
            "label": [f"{k}={v}" for k, v in (labels or {}).items()],
            "host": host,
            "after": after,
            "limit": limit,
        }
        page = self._json("GET", f"/fleets/{_segment(fleet)}/workloads", params={k: v for k, v in params.items() if v})
        return [workload_from_dict(doc) for doc in page["items"]]

    def fleet_events(self, fleet: str, workload: str | None = None) -> list[LifecycleEvent]:
        """The lifecycle events of a fleet, or of one of its workloads, newest first."""
        path = f"/fleets/{_segment(fleet)}" + (f"/workloads/{_segment(workload)}" if workload else "") + "/events"
        return [lifecycle_from_dict(doc) for doc in self._json("GET", path)]

    def run_task(
        self,
        fleet: str,
        task: str,
        args: Mapping[str, Any] | None = None,
        selector: Mapping[str, str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Ack:
        """Run a fleet's task ad hoc on the workloads ``selector`` chooses (all of them without one): the event
        running it, of the workflow ``<fleet>:<task>``, to follow as any other."""
        body = {"task": task, "args": dict(args or {}), "selector": dict(selector or {})}
        return self._ack(f"/fleets/{_segment(fleet)}/tasks", body, idempotency_key)

    # Workflows

    def list_workflows(self, *, offset: int = 0, limit: int = 100) -> Page[Workflow]:
        return self._page("/workflows", workflow_from_dict, offset=offset, limit=limit)

    def get_workflow(self, key: str) -> Workflow:
        return workflow_from_dict(self._json("GET", f"/workflows/{_segment(key)}"))

    def add_workflow(self, workflow: Workflow) -> Workflow:
        return workflow_from_dict(self._json("POST", "/workflows", _workflow_body(workflow), errors=DEFINITION_ERRORS))

    def replace_workflow(self, key: str, workflow: Workflow) -> Workflow:
        body = _workflow_body(workflow)
        return workflow_from_dict(self._json("PUT", f"/workflows/{_segment(key)}", body, errors=DEFINITION_ERRORS))

    def delete_workflow(self, key: str) -> None:
        self._request("DELETE", f"/workflows/{_segment(key)}")

    def workflow_graph(self, key: str, fmt: str = "svg") -> bytes:
        """The workflow drawn: ``svg``, ``png`` or ``dot``."""
        return self._request("GET", f"/workflows/{_segment(key)}/graph", params={"format": fmt}).content

    # Events

    def send(self, workflow: str, data: Mapping[str, Any], *, idempotency_key: str | None = None) -> Ack:
        """Send an event to a workflow, by id or name; InvalidData, with problems, if ``data`` does not fit."""
        return self._ack(f"/e/{_segment(workflow)}", {"data": dict(data)}, idempotency_key)

    def get_event(self, event_id: str) -> EventView:
        """An event, each of its steps, and how many items of each map step are in each status."""
        return _event(self._json("GET", f"/events/{_segment(event_id)}"))

    def list_events(
        self,
        *,
        workflow: str | None = None,
        status: EventStatus | str | None = None,
        data: Mapping[str, Any] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> Page[EventView]:
        """Events, newest first; ``data`` finds those whose data holds these values."""
        query = {
            "workflow": workflow,
            "status": str(status) if status else None,
            "data": json.dumps(data) if data is not None else None,
        }
        return self._page("/events", _event, offset=offset, limit=limit, query=query)

    def wait(
        self,
        event_id: str,
        *,
        timeout: float = 60.0,
        interval: float = 0.05,
        max_interval: float = 2.0,
        on_change: Callable[[EventView], None] | None = None,
    ) -> EventView:
        """The event once it is completed, failed or cancelled, polled every ``interval`` seconds at first and
        half as often each time it has not changed, up to ``max_interval``; ``on_change`` is given each
        version that differs from the last. TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: EventView | None = None
        delay = interval
        while True:
            event = self.get_event(event_id)
            if event != last:
                if on_change is not None:
                    on_change(event)
                delay = interval
            else:
                delay = min(delay * 2, max_interval)
            if event.status.terminal:
                return event
            last = event
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"event {event_id} is still {event.status} after {timeout:g} s")
            time.sleep(min(delay, left))

    def signal(self, event_id: str, name: str, body: Mapping[str, Any] | None = None) -> EventView:
        """Deliver signal ``name`` to the step waiting for it; ``body`` becomes its output."""
        path = f"/events/{_segment(event_id)}/signals/{_segment(name)}"
        return _event(self._json("POST", path, dict(body or {}), errors=EVENT_ERRORS))

    def cancel(self, event_id: str) -> EventView:
        return self._act(event_id, "cancel")

    def pause(self, event_id: str) -> EventView:
        return self._act(event_id, "pause")

    def resume(self, event_id: str) -> EventView:
        return self._act(event_id, "resume")

    def retry(self, event_id: str) -> EventView:
        """Run a failed event again from the steps that failed."""
        return self._act(event_id, "retry")

    def rerun(self, event_id: str) -> EventView:
        """Send an event's data again, as a new event, to the current version of its workflow: the new event."""
        return self._act(event_id, "rerun")

    def retry_failed(self, workflow: str, *, step: str | None = None, limit: int = 1000) -> RetryReport:
        """Retry the failed events of a workflow (only those that failed at ``step``), at most ``limit``."""
        body = {"workflow": workflow, "limit": limit} | ({"step": step} if step else {})
        doc = self._json("POST", "/events/retry", body, errors=EVENT_ERRORS)
        return RetryReport(tuple(doc["retried"]), tuple((s["event_id"], s["reason"]) for s in doc["skipped"]))

    def items(
        self,
        event_id: str,
        step: str,
        *,
        statuses: Iterable[StepStatus | str] = (),
        after: int = -1,
        limit: int = 100,
    ) -> list[ItemView]:
        """The items of a map step in order, at most ``limit`` (1,000 at most) after the index ``after``."""
        params: dict[str, Any] = {"after": after, "limit": limit, "status": [str(s) for s in statuses]}
        path = f"/events/{_segment(event_id)}/steps/{_segment(step)}/items"
        return [_item(doc) for doc in self._json("GET", path, params=params)]

    def event_graph(self, event_id: str, fmt: str = "svg") -> bytes:
        """The graph of the workflow version an event runs, each step coloured by its state."""
        return self._request("GET", f"/events/{_segment(event_id)}/graph", params={"format": fmt}).content

    # The deployment

    def health(self) -> bool:
        """Whether the API answers its liveness probe; False, rather than an error, if it cannot be reached."""
        try:
            return self.session.get(f"{self.url}/healthcheck", timeout=self.timeout).status_code == 204
        except requests.RequestException:
            return False

    def services_health(self) -> list[ServiceHealth]:
        """The last probe of each service that has a health check, by name."""
        return [
            ServiceHealth(
                service=doc["service"],
                status=doc["status"],
                since=_time(doc["since"]),
                checked_at=_time(doc["checked_at"]),
                failures=doc["failures"],
                error=doc.get("error"),
            )
            for doc in self._json("GET", "/health/services")
        ]

    def whoami(self) -> WhoAmI:
        """The role of the token sent (``admin`` when the API is open)."""
        doc = self._json("GET", "/whoami")
        return WhoAmI(doc["role"], tuple(doc["roles"]))

    # Requests

    def _ack(self, path: str, body: Mapping[str, Any], idempotency_key: str | None) -> Ack:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", path, body, headers=headers)
        doc = response.json()
        return Ack(
            event_id=doc["event_id"],
            ack_date=_time(doc["ack_date"]),
            status=EventStatus(doc["status"]),
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )

    def _act(self, event_id: str, action: str) -> EventView:
        return _event(self._json("POST", f"/events/{_segment(event_id)}/{action}", errors=EVENT_ERRORS))

    def _page(
        self,
        path: str,
        read: Callable[[dict[str, Any]], T],
        *,
        offset: int,
        limit: int,
        query: Mapping[str, Any] | None = None,
    ) -> Page[T]:
        """Items ``offset`` to ``offset + limit`` of a list the API gives in pages of ``page`` and ``page_size``."""
        size = max(1, min(limit, MAX_PAGE_SIZE))
        params = {k: v for k, v in (query or {}).items() if v is not None}
        page, skip = divmod(offset, size)
        items: list[T] = []
        total = 0
        while len(items) < limit:
            response = self._request("GET", path, params=params | {"page": page + 1, "page_size": size})
            total = json.loads(response.headers.get("X-Pagination") or "{}").get("total", 0)
            docs = response.json()[skip:]
            items += [read(doc) for doc in docs[: limit - len(items)]]
            page, skip = page + 1, 0
            if not docs or page * size >= total:
                break
        return Page(items, total)

    def _json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self._request(method, path, body, **kwargs).json()

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Mapping[int, type[MachineryError]] | None = None,
    ) -> requests.Response:
        url = f"{self.url}{path}"
        try:
            response = self.session.request(
                method, url, json=body, params=params, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as e:
            raise Unreachable(f"cannot reach machinery at {self.url}: {e}") from e
        if response.status_code >= 400:
            raise _error(response, {**ERRORS, **(errors or {})})
        return response


def _error(response: requests.Response, errors: Mapping[int, type[MachineryError]]) -> MachineryError:
    """The error an answer says, with its problems, and each of its messages by field as a problem."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {"message": f"{response.status_code} {response.reason} from {response.request.method} {response.url}"}
    problems = [Problem(**p) for p in doc.get("problems", ())]
    problems += [
        Problem(f"{name}: {message}", field=name)
        for name, messages in doc.get("errors", {}).items()
        for message in messages
    ]
    return errors.get(response.status_code, MachineryError)(doc.get("message", response.reason), problems)


def _service_body(service: Service) -> dict[str, Any]:
    # In clear: what is sent is what the user wrote; the server redacts what it answers.
    return _definition(service_to_dict(service, in_clear=True))


def _executable_body(executable: Executable) -> dict[str, Any]:
    # Its version is the program's own, a string the server keeps; only the revision is the server's.
    return {k: v for k, v in executable_to_dict(executable).items() if k not in ("id", "revision")}


def _workflow_body(workflow: Workflow) -> dict[str, Any]:
    return _definition(workflow_to_dict(workflow))


def _definition(doc: dict[str, Any]) -> dict[str, Any]:
    """A definition as a body: the server numbers revisions and versions, and refuses them."""
    return {k: v for k, v in doc.items() if k not in ("id", "revision", "version")}


def _segment(value: str) -> str:
    return quote(value, safe="")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _maybe_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _event(doc: dict[str, Any]) -> EventView:
    return EventView(
        id=doc["id"],
        workflow=doc["workflow"]["name"],
        workflow_id=doc["workflow"]["id"],
        version=doc["workflow"]["version"],
        status=EventStatus(doc["status"]),
        data=doc["data"],
        created_at=_time(doc["created_at"]),
        updated_at=_time(doc["updated_at"]),
        outputs=doc.get("outputs"),
        error=doc.get("error"),
        idempotency_key=doc.get("idempotency_key"),
        deadline=_maybe_time(doc.get("deadline")),
        notification=doc.get("notification"),
        steps=tuple(_step(step) for step in doc.get("steps", ())),
    )


def _step(doc: dict[str, Any]) -> StepView:
    items = doc.get("items")
    return StepView(
        id=doc["id"],
        kind=doc["kind"],
        status=StepStatus(doc["status"]),
        attempts=doc["attempts"],
        service=doc.get("service"),
        route=doc.get("route"),
        items=ItemCounts(items["total"], items.get("counts")) if items else None,
        note=doc.get("note"),
        started_at=_maybe_time(doc.get("started_at")),
        ended_at=_maybe_time(doc.get("ended_at")),
        wakes_at=_maybe_time(doc.get("wakes_at")),
        next_attempt_at=_maybe_time(doc.get("next_attempt_at")),
        inputs=doc.get("inputs"),
        outputs=doc.get("outputs"),
        error=doc.get("error"),
        history=tuple(doc.get("history", ())),
    )


def _item(doc: dict[str, Any]) -> ItemView:
    return ItemView(
        index=doc["index"],
        status=StepStatus(doc["status"]),
        attempts=doc["attempts"],
        started_at=_maybe_time(doc.get("started_at")),
        ended_at=_maybe_time(doc.get("ended_at")),
        inputs=doc.get("inputs"),
        outputs=doc.get("outputs"),
        error=doc.get("error"),
    )
