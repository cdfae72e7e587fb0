"""Fleets: workloads hosted by workers, health-checked, spread and rebalanced.

A fleet names a driver (the platform integration), its settings and its typed
tasks; a workload is one device or agent of a fleet, held by one host at a time.
This module is the pure part: the states, the transitions a ping or an init makes
(recorded as lifecycle events on changes only), and the decisions of the
assigner (new workloads to the least-loaded host; moves, bounded, when the
spread between hosts exceeds the fleet's bound). Hosts and stores do the I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from machinery.engine.errors import InvalidDefinition
from machinery.engine.model import Field
from machinery.engine.retry import RetryPolicy

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$"
"""A fleet's or a workload's name: it is a key in the stores and a segment of the API's paths."""


class WorkloadState(StrEnum):
    INITIALIZING = "initializing"
    """Waiting for a host, or for its host to initialise it."""
    UP = "up"
    UNREACHABLE = "unreachable"
    """Its last ping (or init) failed, fewer times in a row than the fleet's ``dead_after``."""
    DEAD = "dead"
    """Failed ``dead_after`` times in a row: stopped, kept visible, and initialised again after ``dead_cooldown``."""
    REMOVED = "removed"
    """Taken out of its fleet: it is in the lifecycle events only."""


class Lifecycle(StrEnum):
    """What a lifecycle event says happened to a workload."""

    ADDED = "added"
    INITIALIZED = "initialized"
    INIT_FAILED = "init_failed"
    UP = "up"
    UNREACHABLE = "unreachable"
    DEAD = "dead"
    MOVED = "moved"
    REMOVED = "removed"


@dataclass(frozen=True)
class FleetSettings:
    """How a fleet's workloads are hosted. Times are in seconds."""

    ping_interval: float = 10.0
    ping_jitter: float = 0.2
    """The fraction of ``ping_interval`` by which each ping is drawn later at random, so pings do not bunch."""
    ping_timeout: float = 5.0
    init_timeout: float = 25.0
    dead_after: int = 3
    """Failed pings (or inits) in a row after which a workload is dead."""
    dead_cooldown: float = 60.0
    """How long a dead workload is left alone before its host initialises it again."""
    max_spread: int = 5
    """The difference in workloads between the most- and least-loaded hosts beyond which workloads move."""
    max_moves: int = 100
    """Workloads moved at most per round of the assigner."""
    init_concurrency: int = 8
    """Workloads a host initialises at once."""

    def __post_init__(self) -> None:
        positive = ("ping_interval", "ping_timeout", "init_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise InvalidDefinition(f"a fleet's {name} should be more than 0")
        if not 0 <= self.ping_jitter <= 1:
            raise InvalidDefinition("a fleet's ping_jitter is a fraction of its ping_interval, from 0 to 1")
        for name in ("dead_after", "init_concurrency", "max_moves"):
            if getattr(self, name) < 1:
                raise InvalidDefinition(f"a fleet's {name} should be at least 1")
        if self.max_spread < 1 or self.dead_cooldown < 0:
            raise InvalidDefinition("a fleet's max_spread should be at least 1 and its dead_cooldown not negative")


@dataclass(frozen=True)
class FleetTask:
    """A task every workload of a fleet can run, with typed arguments and typed results.

    Run on a workload, it is a call like a service's: ``timeout`` bounds it, ``retry`` says how a transient failure
    is tried again, and a task that is not ``idempotent`` is not run again after its host was lost mid-call.
    """

    name: str
    inputs: tuple[Field, ...] = ()
    outputs: tuple[Field, ...] = ()
    description: str = ""
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    idempotent: bool = True
    concurrency: int = 10
    """Workloads an ad hoc run of the task (``POST /fleets/<name>/tasks``) runs it on at once, at most."""

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.concurrency < 1:
            raise InvalidDefinition(
                f"task {self.name!r}: its timeout should be more than 0, its concurrency at least 1"
            )


@dataclass(frozen=True)
class Fleet:
    """A set of workloads one driver integrates, registered like a service."""

    name: str
    driver: str
    settings: FleetSettings = FleetSettings()
    tasks: tuple[FleetTask, ...] = ()
    description: str = ""
    version: int = 0
    """Set by the store: 1 when added, one more at each replacement."""

    def task(self, name: str) -> FleetTask | None:
        return next((t for t in self.tasks if t.name == name), None)


@dataclass(frozen=True)
class Workload:
    """One device or agent of a fleet, as the store holds it."""

    fleet: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    """The driver's configuration of this workload (checked by the driver's ``check_config``)."""
    state: WorkloadState = WorkloadState.INITIALIZING
    host: str | None = None
    lease_until: float = 0.0
    """Until when ``host`` holds it: the host renews it; once it lapses, the assigner gives it to another."""
    failed_pings: int = 0
    next_ping_at: float = 0.0
    message: str = ""
    """Why it is in its state, when that is a failure."""
    since: float = 0.0
    """When it entered its state."""
    version: int = 0
    """Set by the store: a write of a workload is conditional on it."""

    def matches(self, selector: Mapping[str, str]) -> bool:
        """Whether it has every label of ``selector``, with the same value."""
        return all(self.labels.get(key) == value for key, value in selector.items())


@dataclass(frozen=True)
class LifecycleEvent:
    """A change in a workload's life, recorded once when it happens."""

    fleet: str
    workload: str
    kind: Lifecycle
    at: float
    host: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Host:
    """A worker process that hosts workloads, alive while its lease is renewed."""

    name: str
    lease_until: float
    started_at: float = 0.0

    def alive(self, now: float) -> bool:
        return self.lease_until >= now


Transition = tuple[Workload, LifecycleEvent | None]
"""A workload after something happened to it, and the lifecycle event to record if its state changed."""


def next_ping(settings: FleetSettings, now: float, draw: float) -> float:
    """When to ping next, ``draw`` (in [0, 1), drawn by the caller) spreading it over the jitter."""
    return now + settings.ping_interval * (1 + settings.ping_jitter * draw)


def succeeded(
    workload: Workload, settings: FleetSettings, now: float, draw: float, *, init: bool = False
) -> Transition:
    """A ping (or, with ``init``, an init) answered: the workload is up.

    An event is made only if the state changes: ``initialized`` for a first init, ``up`` for a recovery.
    """
    after = replace(workload, failed_pings=0, next_ping_at=next_ping(settings, now, draw), message="")
    if workload.state is WorkloadState.UP:
        return after, None
    first = init and workload.state is WorkloadState.INITIALIZING
    kind = Lifecycle.INITIALIZED if first else Lifecycle.UP
    return _changed(after, WorkloadState.UP, now, ""), _event(after, kind, now, "")


def failed(
    workload: Workload, settings: FleetSettings, now: float, draw: float, message: str, *, init: bool = False
) -> Transition:
    """A ping (or, with ``init``, an init) failed: unreachable, or dead after ``dead_after`` failures in a row.

    A dead workload is tried again (initialised) after ``dead_cooldown``; until then it is left alone.
    """
    failures = workload.failed_pings + 1
    after = replace(workload, failed_pings=failures, next_ping_at=next_ping(settings, now, draw), message=message)
    if failures >= settings.dead_after:
        after = replace(after, next_ping_at=now + settings.dead_cooldown)
        if workload.state is WorkloadState.DEAD:
            return after, None
        return _changed(after, WorkloadState.DEAD, now, message), _event(after, Lifecycle.DEAD, now, message)
    if workload.state is WorkloadState.UNREACHABLE:
        return after, None
    if init and workload.state is WorkloadState.INITIALIZING:
        # Still not initialised: the state stays, but the failure is said once.
        return after, _event(after, Lifecycle.INIT_FAILED, now, message) if failures == 1 else None
    return _changed(after, WorkloadState.UNREACHABLE, now, message), _event(after, Lifecycle.UNREACHABLE, now, message)


def _changed(workload: Workload, state: WorkloadState, now: float, message: str) -> Workload:
    return replace(workload, state=state, since=now, message=message)


def _event(workload: Workload, kind: Lifecycle, now: float, message: str) -> LifecycleEvent:
    return LifecycleEvent(workload.fleet, workload.name, kind, now, workload.host, message)


def assign(loads: Mapping[str, int], workloads: Sequence[str]) -> dict[str, list[str]]:
    """Each of ``workloads`` to the least-loaded of the hosts of ``loads`` (ties by name), counting those
    given before it: the names given to each host. No host, no assignment."""
    if not loads:
        return {}
    heap = [(load, host) for host, load in loads.items()]
    heapq.heapify(heap)
    given: dict[str, list[str]] = {}
    for workload in workloads:
        load, host = heapq.heappop(heap)
        given.setdefault(host, []).append(workload)
        heapq.heappush(heap, (load + 1, host))
    return given


@dataclass(frozen=True)
class Move:
    """``count`` workloads to move from one host to another."""

    source: str
    target: str
    count: int


def rebalance(loads: Mapping[str, int], max_spread: int, max_moves: int) -> list[Move]:
    """The moves that bring the spread of ``loads`` within ``max_spread``: one workload at a time from the
    most- to the least-loaded host, so no more than needed, and ``max_moves`` at most (the rest waits for the
    next round)."""
    current = dict(loads)
    moved: dict[tuple[str, str], int] = {}
    for _ in range(max_moves):
        if len(current) < 2:
            break
        most = max(current, key=lambda h: (current[h], h))
        least = min(current, key=lambda h: (current[h], h))
        if current[most] - current[least] <= max_spread:
            break
        current[most] -= 1
        current[least] += 1
        moved[most, least] = moved.get((most, least), 0) + 1
    return [Move(source, target, count) for (source, target), count in moved.items()]


def spread(loads: Mapping[str, int]) -> int:
    """The difference between the most- and the least-loaded hosts."""
    return max(loads.values()) - min(loads.values()) if loads else 0
