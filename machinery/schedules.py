"""Schedules: what users do with them (:class:`Schedules`), and the scheduler that starts their runs
(:class:`Scheduler`), which runs beside the sweeper in every worker process (and in the API's, with the
embedded worker).

Cron expressions are read by cronsim (five fields, as Debian's cron reads them, daylight saving time
included) in an IANA time zone from :mod:`zoneinfo`; the decisions are the engine's
(:mod:`machinery.engine.timetable`). However many processes run the scheduler, each due run makes one event:
see :meth:`Scheduler.run_due`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from machinery.engine import decider, timetable
from machinery.engine.errors import InvalidData, InvalidDefinition, NotFound, Problem
from machinery.engine.plan import Settings
from machinery.engine.ports import EventStore, Page, RegistryStore, ScheduleStore
from machinery.engine.state import Event
from machinery.engine.timetable import CatchUp, Interval, Overlap, Recurrence, Schedule
from machinery.runtime import Clock, Plans

log = logging.getLogger(__name__)

CLAIM_LEASE = 5.0
"""Seconds a scheduler has to send the run it claimed and record its event, before another sends it again."""
MAX_TICKS = 100
"""Ticks of one schedule a pass decides at most; the next pass goes on."""


class Cron:
    """The runs of a cron expression in a time zone."""

    def __init__(self, expression: str, zone: str) -> None:
        self.expression = expression
        self.zone = ZoneInfo(zone)
        CronSim(expression, datetime.now(self.zone))  # CronSimError if the expression is not one

    def after(self, moment: float) -> float | None:
        return self._first(datetime.fromtimestamp(moment, self.zone), reverse=False)

    def at_or_before(self, moment: float) -> float | None:
        # Backwards, cronsim starts strictly before a whole minute, and at the minute itself from within it.
        return self._first(datetime.fromtimestamp(moment, self.zone) + timedelta(microseconds=1), reverse=True)

    def _first(self, start: datetime, *, reverse: bool) -> float | None:
        # None when no run is found within the 50 years cronsim looks ahead (say, "0 0 31 2 *"... never).
        found = next(CronSim(self.expression, start, reverse=reverse), None)
        return None if found is None else found.timestamp()


def recurrence_of(schedule: Schedule) -> Recurrence:
    """When the runs of a stored schedule are."""
    if schedule.cron is not None:
        return Cron(schedule.cron, schedule.timezone)
    assert schedule.interval is not None, "a schedule has a cron expression or an interval"
    return Interval(schedule.interval, anchor=0.0)


def parse_recurrence(cron: str | None, zone: str | None, interval: int | None) -> Recurrence:
    """The recurrence a user asked for; InvalidDefinition listing what is wrong with it."""
    problems = []
    if (cron is None) == (interval is None):
        problems.append(Problem("give either a cron expression or an interval (seconds), not both or neither"))
    if interval is not None and interval < 1:
        problems.append(Problem("the interval is a whole number of seconds, at least 1", field="interval"))
    if zone is not None and cron is None:
        problems.append(Problem("a time zone goes with a cron expression", field="timezone"))
    recurrence: Recurrence | None = None
    if cron is not None:
        try:
            recurrence = Cron(cron, zone or "UTC")
        except CronSimError as e:
            problems.append(Problem(f"{cron!r} is not a cron expression of five fields: {e}", field="cron"))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem(f"{zone!r} is not an IANA time zone, like Europe/Paris or UTC", field="timezone"))
    if problems:
        raise InvalidDefinition("the schedule does not hold together", problems)
    return recurrence or Interval(interval or 1, anchor=0.0)


@dataclass(frozen=True)
class NewSchedule:
    """What a user asks for when creating a schedule."""

    name: str
    workflow: str
    data: Mapping[str, Any]
    cron: str | None = None
    timezone: str | None = None
    interval: int | None = None
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.NONE
    paused: bool = False


class Schedules:
    """Create, read, list, delete, pause and resume schedules; preview their runs and list their events."""

    def __init__(
        self,
        registry: RegistryStore,
        store: ScheduleStore,
        plans: Plans,
        settings: Settings,
        clock: Clock = time.time,
    ) -> None:
        self.registry = registry
        self.store = store
        self.plans = plans
        self.settings = settings
        self.clock = clock

    def create(self, new: NewSchedule) -> Schedule:
        """Store a schedule whose data fits its workflow's inputs now; InvalidData listing what does not."""
        recurrence = parse_recurrence(new.cron, new.timezone, new.interval)
        workflow = self.registry.get_workflow(new.workflow)
        now = self.clock()
        # The event its first run would make, made and dropped: so that the data is checked as each run's will be.
        decider.accept(self.plans.of(workflow), new.data, event_id="check", now=now, settings=self.settings)
        return self.store.add_schedule(
            Schedule(
                name=new.name,
                workflow_id=workflow.id or workflow.name,
                workflow_name=workflow.name,
                data=dict(new.data),
                cron=new.cron,
                timezone=new.timezone or "UTC",
                interval=new.interval,
                overlap=new.overlap,
                catch_up=new.catch_up,
                paused=new.paused,
                created_at=now,
                next_run_at=recurrence.after(now),
            )
        )

    def get(self, key: str) -> Schedule:
        return self.store.get_schedule(key)

    def list_schedules(self, *, offset: int, limit: int) -> Page[Schedule]:
        return self.store.list_schedules(offset=offset, limit=limit)

    def delete(self, key: str) -> None:
        self.store.delete_schedule(key)

    def pause(self, key: str) -> Schedule:
        """Start no more runs until it is resumed; a run being started is still recorded."""
        return self._update(key, timetable.pause)

    def resume(self, key: str) -> Schedule:
        """Go on from the first run after now: those due while it was paused are not started."""
        return self._update(key, lambda s: s if not s.paused else timetable.resume(s, recurrence_of(s), self.clock()))

    def next_runs(self, key: str, count: int) -> list[float]:
        """Its next ``count`` runs: from the one due if it is running, from now if it is paused (as on a resume)."""
        schedule = self.store.get_schedule(key)
        recurrence = recurrence_of(schedule)
        if schedule.paused or schedule.next_run_at is None:
            first = recurrence.after(self.clock())
            return [] if first is None else timetable.upcoming(recurrence, first, count)
        return timetable.upcoming(recurrence, schedule.next_run_at, count)

    def events(self, key: str, *, offset: int, limit: int) -> Page[Event]:
        """The events its runs made, the latest run first."""
        return self.store.schedule_events(self.store.get_schedule(key), offset=offset, limit=limit)

    def _update(self, key: str, change: Callable[[Schedule], Schedule]) -> Schedule:
        while True:
            schedule = self.store.get_schedule(key)
            changed = change(schedule)
            if changed is schedule or self.store.save_schedule(changed):
                return changed


class Submit(Protocol):
    """:meth:`machinery.runtime.Events.submit`."""

    def __call__(
        self, workflow_key: str, data: Mapping[str, Any], idempotency_key: str | None = None
    ) -> tuple[Event, bool]: ...


class SchedulerStore(ScheduleStore, EventStore, Protocol):
    """What the scheduler reads and writes: schedules, and the status of the events they made."""


class Scheduler:
    """Starts the due runs of every schedule, each as one event, however many schedulers run at once.

    Each tick is decided from the schedule's record as read and written back conditionally on its version
    (:meth:`ScheduleStore.save_schedule`): of the schedulers that read the same record, one only wins, and only
    the winner sends the run's event. The winner first writes the run as pending, then sends the event with the
    run's time as its idempotency key, then records it: if it dies in between, another scheduler sends the
    pending run again once its lease is over, and the key makes that the same event, not a second one.
    """

    def __init__(
        self,
        store: SchedulerStore,
        submit: Submit,
        *,
        grace: float,
        lease: float = CLAIM_LEASE,
        clock: Clock = time.time,
    ) -> None:
        self.store = store
        self.submit = submit
        self.grace = grace
        self.lease = lease
        self.clock = clock

    def run_due(self, limit: int = 100) -> int:
        """Decide the due ticks of up to ``limit`` schedules; how many events were made."""
        now = self.clock()
        return sum(self._advance(schedule, now) for schedule in self.store.due_schedules(now, limit))

    def _advance(self, schedule: Schedule, now: float) -> int:
        made = 0
        for _ in range(MAX_TICKS):
            if schedule.pending_run is not None:
                if schedule.pending_until is not None and schedule.pending_until > now:
                    break  # another scheduler is sending it
                changed = timetable.retake(schedule, now=now, lease=self.lease)
            elif not schedule.paused and schedule.next_run_at is not None and schedule.next_run_at <= now:
                changed = self._decide(schedule, schedule.next_run_at, now)
            else:
                break
            if not self.store.save_schedule(changed):
                break  # another scheduler decided this tick: it goes on with this schedule
            schedule = changed
            if schedule.pending_run is not None:
                schedule, created = self._send(schedule)
                made += created
        return made

    def _decide(self, schedule: Schedule, due: float, now: float) -> Schedule:
        decision = timetable.tick(recurrence_of(schedule), due, now, grace=self.grace, catch_up=schedule.catch_up)
        if decision.run_at is not None and schedule.overlap is Overlap.SKIP and self._unfinished(schedule):
            return timetable.skip(schedule, decision)
        return timetable.claim(schedule, decision, now=now, lease=self.lease)

    def _unfinished(self, schedule: Schedule) -> bool:
        if schedule.last_event_id is None:
            return False
        try:
            return not self.store.event_status(schedule.last_event_id).terminal
        except NotFound:  # purged
            return False

    def _send(self, schedule: Schedule) -> tuple[Schedule, bool]:
        """Send the pending run's event and record it; whether this made the event (rather than found it)."""
        assert schedule.pending_run is not None
        key = timetable.run_key(schedule.id, schedule.pending_run)
        created = False
        try:
            event, created = self.submit(schedule.workflow_id, schedule.data, key)
            changed = timetable.record(schedule, event.id)
        except (NotFound, InvalidData) as e:
            error = f"workflow {schedule.workflow_name!r}: {e.message}"
            log.warning("schedule %r made no event for its run %s: %s", schedule.name, key, error)
            changed = timetable.fail(schedule, error)
        # Lost only if the lease ran out and another scheduler took the run over: it records the same event.
        return (changed if self.store.save_schedule(changed) else schedule), created
