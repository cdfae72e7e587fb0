"""Schedules: a workflow started with fixed data on a cron expression or a fixed interval, as plain data and
pure decisions.

A schedule's record says when its next run is due (``next_run_at``). The scheduler decides each due tick with
:func:`tick` and writes the decision as one conditional write on the record's version, so that of the
processes deciding the same tick one only wins, and only the winner starts the run. A started run is first
written as *pending* (:func:`claim`), then its event is sent with the idempotency key :func:`run_key`, then
recorded (:func:`record`): a process that dies in between leaves the run pending, and whoever takes it over
once the claim's lease is over sends it again under the same key, which makes no second event.

Reading cron expressions is an adapter's business (``machinery.schedules``), behind :class:`Recurrence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Protocol


class Overlap(StrEnum):
    """What a due run does while the event the schedule made last is unfinished."""

    SKIP = "skip"
    """Start nothing; count the run as skipped."""
    ALLOW = "allow"
    """Start it anyway."""


class CatchUp(StrEnum):
    """What becomes of the runs missed while no scheduler ran (later than the grace period)."""

    NONE = "none"
    """Drop them; the schedule goes on from its next run."""
    LAST = "last"
    """Start the last of them once, however many there were."""


class Recurrence(Protocol):
    """When a schedule's runs are, as epoch seconds."""

    def after(self, moment: float) -> float | None:
        """The first run strictly after ``moment``; None if there is none."""

    def at_or_before(self, moment: float) -> float | None:
        """The last run at or before ``moment``; None if there is none."""


@dataclass(frozen=True)
class Interval:
    """Every ``seconds`` seconds (a whole number, at least 1) from ``anchor``: the runs are ``anchor + k * seconds``."""

    seconds: int
    anchor: float

    def after(self, moment: float) -> float | None:
        return self.anchor + (math.floor((moment - self.anchor) / self.seconds) + 1) * self.seconds

    def at_or_before(self, moment: float) -> float | None:
        if moment < self.anchor:
            return None
        return self.anchor + math.floor((moment - self.anchor) / self.seconds) * self.seconds


@dataclass
class Schedule:
    """A schedule's record: what it starts, when, and what it started last; ``version`` guards every write."""

    name: str
    workflow_id: str
    workflow_name: str
    data: dict[str, Any]
    cron: str | None = None
    timezone: str = "UTC"
    """The IANA time zone the cron expression is read in."""
    interval: int | None = None
    """Seconds between two runs, for a schedule without a cron expression."""
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.NONE
    paused: bool = False
    id: str = ""
    created_at: float = 0.0
    next_run_at: float | None = None
    """When the next run is due; None once the recurrence has no more."""
    pending_run: float | None = None
    """A run claimed by a scheduler whose event is not recorded yet."""
    pending_until: float | None = None
    """Until when the scheduler that claimed ``pending_run`` has it; then another sends it again."""
    last_run_at: float | None = None
    last_event_id: str | None = None
    last_error: str | None = None
    """Why the last run made no event (its workflow was deleted, its data no longer fits it), if it made none."""
    runs: int = 0
    """Runs that made an event."""
    skipped: int = 0
    """Runs not started because the event made before was unfinished (overlap ``skip``)."""
    missed: int = 0
    """Times the scheduler found runs later than the grace period, and dropped them or started the last one."""
    version: int = 1

    @property
    def due_at(self) -> float | None:
        """When a scheduler should look at it next: a pending run when its claim's lease is over, whether paused
        or not (the run was started before the pause); otherwise its next run, unless it is paused."""
        if self.pending_run is not None:
            return self.pending_until
        return None if self.paused else self.next_run_at

    def to_doc(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["overlap"], doc["catch_up"] = self.overlap.value, self.catch_up.value
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Schedule:
        known = {f.name for f in fields(cls)}
        values = {name: value for name, value in doc.items() if name in known}
        values["overlap"] = Overlap(values.get("overlap", Overlap.SKIP))
        values["catch_up"] = CatchUp(values.get("catch_up", CatchUp.NONE))
        return cls(**values)


@dataclass(frozen=True)
class Tick:
    """What to do with a schedule whose next run is due."""

    run_at: float | None
    """The run to start, whose time is its key; None to start none."""
    next_run_at: float | None
    """When the run after it is due."""
    missed: bool = False
    """Whether runs later than the grace period were found (and dropped, or the last one taken)."""


def run_key(schedule_id: str, run_at: float) -> str:
    """The idempotency key of a schedule's run: the same for every process that sends it, whenever."""
    # Ten digits, as epoch seconds have from 2001 to 2286: so that the keys sort in the order of the runs.
    return f"{key_prefix(schedule_id)}{int(run_at):010d}"


KEY_PREFIX = "schedule:"


def key_prefix(schedule_id: str) -> str:
    """What the idempotency keys of the events of a schedule begin with."""
    return f"{KEY_PREFIX}{schedule_id}:"


def tick(recurrence: Recurrence, due: float, now: float, *, grace: float, catch_up: CatchUp) -> Tick:
    """The decision for the run due at ``due`` (at or before ``now``).

    A run less than ``grace`` seconds late is on time, and started. One later than that was missed (the
    schedulers were down, or paused it): with catch-up ``none`` no missed run is started, with ``last`` only
    the last one is; either way the schedule moves on to its first run within the grace period, so a schedule
    however far behind makes at most one catch-up run.
    """
    if now - due < grace:
        return Tick(due, recurrence.after(due))
    late = now - grace
    upcoming = recurrence.after(late)
    if catch_up is CatchUp.LAST:
        return Tick(recurrence.at_or_before(late) or due, upcoming, missed=True)
    return Tick(None, upcoming, missed=True)


def claim(schedule: Schedule, decision: Tick, *, now: float, lease: float) -> Schedule:
    """The record once this scheduler has taken ``decision``: the run pending for ``lease`` seconds, if there is
    one, and the next run due."""
    return replace(
        schedule,
        next_run_at=decision.next_run_at,
        pending_run=decision.run_at,
        pending_until=None if decision.run_at is None else now + lease,
        missed=schedule.missed + decision.missed,
    )


def skip(schedule: Schedule, decision: Tick) -> Schedule:
    """The record once the run of ``decision`` is skipped, the event made before being unfinished."""
    return replace(
        schedule,
        next_run_at=decision.next_run_at,
        skipped=schedule.skipped + 1,
        missed=schedule.missed + decision.missed,
    )


def retake(schedule: Schedule, *, now: float, lease: float) -> Schedule:
    """The record once this scheduler takes over a pending run whose lease is over."""
    return replace(schedule, pending_until=now + lease)


def record(schedule: Schedule, event_id: str) -> Schedule:
    """The record once the pending run's event is stored."""
    return replace(
        schedule,
        pending_run=None,
        pending_until=None,
        last_run_at=schedule.pending_run,
        last_event_id=event_id,
        last_error=None,
        runs=schedule.runs + 1,
    )


def fail(schedule: Schedule, error: str) -> Schedule:
    """The record once the pending run could make no event, for a reason that sending it again would not change."""
    return replace(schedule, pending_run=None, pending_until=None, last_run_at=schedule.pending_run, last_error=error)


def pause(schedule: Schedule) -> Schedule:
    return replace(schedule, paused=True)


def resume(schedule: Schedule, recurrence: Recurrence, now: float) -> Schedule:
    """Go on from the first run after ``now``: the runs due while it was paused are not missed runs."""
    return replace(schedule, paused=False, next_run_at=recurrence.after(now))


def upcoming(recurrence: Recurrence, start: float, count: int) -> list[float]:
    """The first ``count`` runs from ``start`` on (``start`` included if it is one), fewer if the recurrence ends."""
    runs: list[float] = []
    moment: float | None = recurrence.at_or_before(start)
    if moment is None or moment < start:
        moment = recurrence.after(start)
    while moment is not None and len(runs) < count:
        runs.append(moment)
        moment = recurrence.after(moment)
    return runs
