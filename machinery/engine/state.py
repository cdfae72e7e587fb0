"""Runtime state of an event and of each of its steps, as plain data.

Stores keep this state; each change to it is one conditional write on
``Event.version``. ``to_doc``/``from_doc`` give the plain-data form stores persist.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any


class EventStatus(StrEnum):
    """Where an event is in its life; the last three are final."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    """Calls under way finish and are recorded, but nothing new starts until the event is resumed."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_EVENT


class StepStatus(StrEnum):
    """Where a step, a map step's item or a notification is in its life; the last four are final."""

    PENDING = "pending"
    """Waits for the steps it depends on."""
    READY = "ready"
    """May be claimed by a worker."""
    RUNNING = "running"
    """Claimed by a worker until ``lease_until``."""
    RETRYING = "retrying"
    """Failed transiently; may be claimed again from ``run_at``."""
    WAITING = "waiting"
    """A delay until ``run_at``, or a wait for a signal (until ``run_at`` if it has a timeout)."""
    COMPLETED = "completed"
    SKIPPED = "skipped"
    """On a route not taken."""
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STEP


TERMINAL_EVENT = frozenset({EventStatus.COMPLETED, EventStatus.FAILED, EventStatus.CANCELLED})
TERMINAL_STEP = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.CANCELLED})
# Aliases as module globals: a transition looks statuses up dozens of times, and CPython 3.11 finds an enum
# member on its class ten times slower than a global.
PENDING, READY, RUNNING = StepStatus.PENDING, StepStatus.READY, StepStatus.RUNNING
RETRYING, WAITING, COMPLETED = StepStatus.RETRYING, StepStatus.WAITING, StepStatus.COMPLETED
SKIPPED, FAILED, CANCELLED = StepStatus.SKIPPED, StepStatus.FAILED, StepStatus.CANCELLED
EVENT_RUNNING, EVENT_WAITING, EVENT_COMPLETED = EventStatus.RUNNING, EventStatus.WAITING, EventStatus.COMPLETED
EVENT_FAILED, EVENT_CANCELLED, EVENT_PAUSED = EventStatus.FAILED, EventStatus.CANCELLED, EventStatus.PAUSED
IDLE = TERMINAL_EVENT | {EVENT_PAUSED}
"""Event statuses in which no unit is claimed, nor sent, nor due."""
CLAIMABLE = (READY, RETRYING, RUNNING, WAITING)
"""Unit statuses a worker's message may act on: to call, to call again, to take over, or to wake."""
ACTIVE = (READY, RUNNING, RETRYING)
"""Unit statuses that hold a place among a map step's concurrent items."""
OVER = (COMPLETED, SKIPPED)
"""Step statuses after which the steps depending on it may start."""
# By value: from_doc reads thousands of statuses per event of a large map step, and calling the enum is slow.
_STEP_STATUSES = {status.value: status for status in StepStatus}
_EVENT_STATUSES = {status.value: status for status in EventStatus}


@dataclass
class StepState:
    """The runtime state of one unit of work: a step, an item of a map step, or an event's notification."""

    status: StepStatus = StepStatus.PENDING
    attempts: int = 0
    """Calls started, lost ones included."""
    lost: int = 0
    """Claims whose worker vanished before it recorded a result."""
    budget_used: int = 0
    """Attempts that count against the retry policy; reset when a failed event is retried."""
    started_at: float | None = None
    ended_at: float | None = None
    inputs: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    run_at: float | None = None
    lease_until: float | None = None
    nudged_at: float | None = None
    token: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per failed or lost attempt: attempt, started_at, ended_at, error.

    Replaced by a longer list, never appended to, so that copies may share it."""
    route: str | None = None
    """The route a switch or wait step took."""
    fanout: int | None = None
    """How many items a map step has; they are records of their own (:class:`Item`), not part of the event."""
    note: str | None = None
    """What a completed step wants its reader to know: a map step's results left out of its outputs, say."""
    child: str | None = None
    """The id of the child event a ``workflow`` step started."""

    # copy and from_doc bypass __init__ (and dataclasses.replace): every transition copies the states it changes,
    # and a map step's items are states too.

    def copy(self) -> StepState:
        copied = object.__new__(StepState)
        copied.__dict__ = self.__dict__.copy()
        return copied

    def to_doc(self) -> dict[str, Any]:
        """Without the fields that hold their defaults, which most of them do."""
        doc = {k: v for k, v in self.__dict__.items() if v is not None and v != _STEP_DEFAULTS[k]}
        doc["status"] = self.status._value_
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> StepState:
        state = object.__new__(cls)
        state.__dict__ = {**_STEP_DEFAULTS, **doc, "status": _STEP_STATUSES[doc["status"]]}
        state.history = list(state.history)
        return state


_STEP_DEFAULTS = {f.name: f.default for f in fields(StepState) if f.default is not MISSING} | {"history": []}
"""Every field's default; ``from_doc`` copies ``history``, so that the default list is never shared."""


_TRANSIENT = frozenset({"_owned", "spawned"})


@dataclass
class Event:
    """One run of a workflow version: its data, the state of each of its steps, and how it ended.

    The store holds it; every change is a copy (:meth:`copy`, then :meth:`own` for each step changed)
    written back only if nobody wrote since it was read (``version``).
    """

    id: str
    workflow_id: str
    workflow_name: str
    workflow_version: int
    data: dict[str, Any]
    created_at: float
    updated_at: float
    status: EventStatus = EventStatus.ACCEPTED
    steps: dict[str, StepState] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    idempotency_key: str | None = None
    due_at: float | None = None
    """When the sweeper should look at this event if nothing else moves it; None once it is over."""
    deadline: float | None = None
    """When the event fails if it has not ended, from its workflow's timeout."""
    notification: StepState | None = None
    """The delivery of the ended event to its workflow's ``notify`` URL: a unit like a step's call."""
    parent: dict[str, Any] | None = None
    """For a child event, the ``workflow`` step that started it: ``event`` (its event's id), ``step`` and ``depth``
    (1 for a child of a top-level event, one more for each level below)."""
    to_parent: StepState | None = None
    """For a child event, the handing of its outcome to its parent's step once it has ended: a unit like
    ``notification``."""
    signals: list[dict[str, Any]] = field(default_factory=list)
    """Signals received before the step waiting for them was reached: name, payload, at.

    Replaced, never changed in place, so that copies may share it."""
    version: int = 0
    """Bumped by every write; a write succeeds only if nobody else wrote since this was read."""
    spawned: list[Item] = field(default_factory=list)
    """Items a map step fanned out into in this transition, for the store to add before it writes the event;
    not part of the event's document."""

    def copy(self) -> Event:
        """A copy to change: its step states are shared with this event until :meth:`own` takes one."""
        copied = object.__new__(Event)
        copied.__dict__ = self.__dict__.copy()
        copied.steps = dict(self.steps)
        copied.spawned = []
        copied.__dict__["_owned"] = set()
        return copied

    def own(self, step_id: str) -> StepState:
        """The state of ``step_id``, to change: copied the first time, in a copy, so the original stays as it was."""
        state = self.steps[step_id]
        owned: set[int] | None = self.__dict__.get("_owned")
        if owned is None or id(state) in owned:
            return state
        state = self.steps[step_id] = state.copy()
        owned.add(id(state))
        return state

    def to_doc(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if v is not None and v != [] and k not in _TRANSIENT}
        doc["status"] = self.status.value
        doc["steps"] = {k: v.to_doc() for k, v in self.steps.items()}
        if self.notification is not None:
            doc["notification"] = self.notification.to_doc()
        if self.to_parent is not None:
            doc["to_parent"] = self.to_parent.to_doc()
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Event:
        return cls(
            **{
                **doc,
                "status": _EVENT_STATUSES[doc["status"]],
                "steps": {k: StepState.from_doc(v) for k, v in doc["steps"].items()},
                "signals": list(doc.get("signals", [])),
                "notification": StepState.from_doc(doc["notification"]) if "notification" in doc else None,
                "to_parent": StepState.from_doc(doc["to_parent"]) if "to_parent" in doc else None,
            }
        )


@dataclass
class Item:
    """One element of a map step, kept apart from its event, so that its transitions cost the same however
    many items there are: its call's inputs and the state of its call.

    Items run in ``concurrency`` lanes: item ``i`` is released (made ready) once item ``i - concurrency`` is
    :attr:`over`. An item over has ``handed_on`` once the next item of its lane was released; until then the
    sweeper sees it as due, so that a worker lost between the two writes stalls no lane.
    """

    event_id: str
    step_id: str
    index: int
    workflow_id: str
    workflow_version: int
    inputs: dict[str, Any]
    state: StepState = field(default_factory=StepState)
    successor: int | None = None
    """The index of the next item of its lane, if there is one."""
    key: str | None = None
    """For an item of a ``fleet`` step, the workload it runs on: its failure is its own, not its step's."""
    handed_on: bool = False
    due_at: float | None = None
    """When the sweeper should look at this item if nothing moves it; None once nothing is left to do."""
    version: int = 0
    """Bumped by every write; a write succeeds only if nobody else wrote since this was read."""

    @property
    def unit(self) -> str:
        return f"{self.step_id}[{self.index}]"

    @property
    def over(self) -> bool:
        """Whether its lane goes on past it: it completed or, for a fleet step's item, ended however it ended."""
        status = self.state.status
        return status is COMPLETED or (self.key is not None and status in TERMINAL_STEP)

    def copy(self) -> Item:
        """A copy to change, its state copied too."""
        copied = object.__new__(Item)
        copied.__dict__ = self.__dict__.copy()
        copied.state = self.state.copy()
        return copied

    def to_doc(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if v is not None}
        doc["state"] = self.state.to_doc()
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Item:
        return cls(**{**doc, "state": StepState.from_doc(doc["state"])})
