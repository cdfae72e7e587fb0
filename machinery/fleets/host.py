"""The host: what a worker started with ``--fleets`` runs beside its Celery pool, in its main process.

Every ``interval`` it renews its lease and those of its workloads; takes the assigner's
lease if it can (one host at a time assigns: new workloads and those of hosts whose
lease lapsed to the least-loaded hosts, then moves, bounded, while the spread exceeds
the fleet's bound); and reads which workloads it holds, initialising the new ones
(``init_concurrency`` at once per fleet) and stopping those removed or moved away.
A second thread sends each workload's pings when due to a pool of threads.

The store is the truth: a workload's state is written, with its lifecycle event, only
when it changes, and only if nobody changed the workload since it was read. A move or a
stop that fails is not retried in a loop: the next round starts from the store again.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from machinery.addresses import DEFAULT_GUARD, AddressGuard
from machinery.engine.fleets import (
    Fleet,
    Host,
    Lifecycle,
    LifecycleEvent,
    Transition,
    Workload,
    WorkloadState,
    assign,
    failed,
    rebalance,
    succeeded,
)
from machinery.engine.ports import FleetStore
from machinery.fleets.drivers import Driver, DriverContext, DriverFactory, load_driver

log = logging.getLogger(__name__)

ASSIGNER = "fleet-assigner"
"""The key of the lease the host that assigns holds."""
HOSTS_KEPT = 24 * 3600.0
"""Seconds a host whose lease lapsed stays listed (``GET /hosts``) before the assigner forgets it."""
ASSIGN_BATCH = 5000
"""Unassigned workloads the assigner gives out per fleet and round."""
PAGE = 1000
LAGS_KEPT = 100_000


@dataclass
class _Held:
    """A workload this host holds, as it knows it between writes."""

    workload: Workload
    initialized: bool = False
    busy: bool = False
    """A call to its driver is under way: nothing else is sent to it until it ends."""
    call: int = 0
    """The number of its latest call: a call that ends after the host gave up on it is not the latest any more."""
    gone: bool = False


@dataclass
class _FleetRuntime:
    fleet: Fleet
    driver: Driver
    waiting: deque[str] = field(default_factory=deque)
    """Workloads waiting for their init, in order."""
    initializing: int = 0


class FleetHost:
    """Hosts workloads of every fleet for one worker: see the module's docstring."""

    def __init__(
        self,
        store: FleetStore,
        name: str,
        *,
        interval: float = 1.0,
        lease: float = 15.0,
        threads: int = 32,
        guard: AddressGuard = DEFAULT_GUARD,
        drivers: Callable[[str], DriverFactory] = load_driver,
        clock: Callable[[], float] = time.time,
        on_ping: Callable[[str, str, float, bool], None] | None = None,
    ) -> None:
        """``on_ping(fleet, host, seconds, ok)`` is told of every ping that ended, for the metrics."""
        self.store = store
        self.on_ping = on_ping
        self.name = name
        self.interval = interval
        self.lease = lease
        self.guard = guard
        self.drivers = drivers
        self.clock = clock
        self.started_at = clock()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="machinery-fleet")
        self.lags: deque[float] = deque(maxlen=LAGS_KEPT)
        """Seconds each of the latest pings was sent after it was due: how far behind the host is."""
        self._held: dict[tuple[str, str], _Held] = {}
        self._fleets: dict[str, _FleetRuntime] = {}
        self._due: list[tuple[float, str, str]] = []
        self._deadlines: list[tuple[float, str, str, int, bool]] = []
        """When the host gives up on a call (fleet, workload, call, whether an init) that its driver has not ended."""
        self._overdue = ThreadPoolExecutor(1, thread_name_prefix="machinery-fleet-overdue")
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name="machinery-fleet-host", daemon=True),
            threading.Thread(target=self._ping_loop, name="machinery-fleet-pings", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the loops, and every workload held (its lease lapses; another host takes it over)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(10)
        with self._lock:
            held = list(self._held.values())
            self._held.clear()
        for entry in held:
            self._stop_workload(entry.workload)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._overdue.shutdown(wait=False, cancel_futures=True)

    def holding(self, fleet: str, workload: str) -> tuple[Driver, Workload] | None:
        """The driver of ``fleet`` and ``workload`` as this host holds it, if it does (up or not); else None."""
        with self._lock:
            entry = self._held.get((fleet, workload))
            runtime = self._fleets.get(fleet)
            if entry is None or entry.gone or runtime is None:
                return None
            return runtime.driver, entry.workload

    # The rounds

    def tick(self) -> None:
        """One round: leases, the assigner's work if this host holds its lease, then what this host holds."""
        now = self.clock()
        until = now + self.lease
        self.store.heartbeat(Host(self.name, until, self.started_at))
        self.store.renew_workloads(self.name, until)
        fleets = self.store.list_fleets()
        held_at = self.clock()
        if self.store.acquire_lease(ASSIGNER, self.name, now=held_at, until=held_at + self.lease):
            self.assign(fleets, now)
            self.store.forget_hosts(lapsed_before=now - HOSTS_KEPT)
        self.sync(fleets)

    def assign(self, fleets: list[Fleet], now: float) -> int:
        """Give out unassigned workloads and those of lapsed hosts, then rebalance; how many were given or moved."""
        alive = [host.name for host in self.store.list_hosts() if host.alive(now)]
        done = 0
        for fleet in fleets:
            loads = dict.fromkeys(alive, 0)
            for (_, host, _), count in self.store.count_workloads(fleet.name).items():
                if host in loads:
                    loads[host] += count
            # A workload of a host still alive is not an orphan, though its lease lapsed: its host was late to
            # renew it, and keeps it up. Claimed again, it would be initialised again for nothing.
            lapsed = self.store.unassigned_workloads(fleet.name, now=now, limit=ASSIGN_BATCH)
            orphans = [w for w in lapsed if w.host is None or w.host not in loads]
            previous = {w.name: w.host for w in orphans}
            for host, names in assign(loads, [w.name for w in orphans]).items():
                # A lease from now, not from the round's start: a slow round must not give out leases already
                # lapsed, which the next round (this host's or another's) would give out again.
                until = self.clock() + self.lease
                claimed = self.store.claim_workloads(fleet.name, names, host, now=now, until=until)
                loads[host] += len(claimed)
                moved = [(name, previous[name]) for name in claimed if previous[name] not in (None, host)]
                # At the time of the claim, not of the round's start: the old host's last event may lie between.
                at = self.clock()
                self._record([_moved(fleet.name, name, source, host, at) for name, source in moved])
                done += len(claimed)
            for move in rebalance(loads, fleet.settings.max_spread, fleet.settings.max_moves):
                chosen = self.store.list_workloads(fleet.name, host=move.source, limit=move.count)
                names = [w.name for w in chosen]
                # Conditional on the source still holding them: a move that fails waits for the next round.
                claimed = self.store.claim_workloads(
                    fleet.name, names, move.target, now=now, until=self.clock() + self.lease, source=move.source
                )
                at = self.clock()
                self._record([_moved(fleet.name, name, move.source, move.target, at) for name in claimed])
                done += len(claimed)
        return done

    def sync(self, fleets: list[Fleet]) -> None:
        """Start what this host was given, stop what it no longer holds."""
        now = self.clock()
        held: dict[tuple[str, str], Workload] = {}
        synced = set()
        for fleet in fleets:
            try:
                self._runtime(fleet)
            except Exception:
                # One fleet's driver that cannot be made (an entry point gone) must not stop the others.
                log.exception("no driver for fleet %s: its workloads are left as they are", fleet.name)
                continue
            synced.add(fleet.name)
            after = ""
            while page := self.store.list_workloads(fleet.name, host=self.name, after=after, limit=PAGE):
                held.update(((w.fleet, w.name), w) for w in page)
                after = page[-1].name
        with self._lock:
            for key in [key for key in self._held if key not in held and key[0] in synced]:
                lost = self._held.pop(key)
                lost.gone = True
                if lost.initialized:
                    self.pool.submit(self._stop_workload, lost.workload)
            for key, workload in held.items():
                entry = self._held.get(key)
                if entry is None:
                    self._held[key] = _Held(workload)
                    self._fleets[workload.fleet].waiting.append(workload.name)
                elif workload.version > entry.workload.version and not entry.busy:
                    # Claimed again (moved away and back between two rounds): initialised again, as a claim asks.
                    # Only a newer version says so: the page read above may predate this host's own last write.
                    entry.workload = workload
                    if workload.state is WorkloadState.INITIALIZING:
                        entry.initialized = False
                        self._fleets[workload.fleet].waiting.append(workload.name)
            for runtime in self._fleets.values():
                self._start_inits(runtime, now)

    def _runtime(self, fleet: Fleet) -> _FleetRuntime:
        runtime = self._fleets.get(fleet.name)
        if runtime is None or runtime.fleet.version != fleet.version:
            driver = self.drivers(fleet.driver)(DriverContext(fleet.settings, self.guard))
            with self._lock:
                if runtime is None:
                    runtime = self._fleets[fleet.name] = _FleetRuntime(fleet, driver)
                else:
                    old, runtime.fleet, runtime.driver = runtime.driver, fleet, driver
                    self._reinitialize(runtime, old)
        return runtime

    def _reinitialize(self, runtime: _FleetRuntime, old: Driver) -> None:
        """Under the lock: the fleet was replaced, and its driver made again, which knows none of the workloads
        the old one initialised (its sessions, say): each is stopped on the old one and initialised on the new."""
        for (fleet, name), entry in self._held.items():
            if fleet == runtime.fleet.name and entry.initialized:
                entry.initialized = False
                runtime.waiting.append(name)
                self.pool.submit(_stop_on, old, entry.workload)

    def _start_inits(self, runtime: _FleetRuntime, now: float) -> None:
        """Under the lock: start the waiting inits the fleet's ``init_concurrency`` allows."""
        while runtime.waiting and runtime.initializing < runtime.fleet.settings.init_concurrency:
            entry = self._held.get((runtime.fleet.name, runtime.waiting.popleft()))
            if entry is None or entry.busy:
                continue
            runtime.initializing += 1
            self._call(runtime, entry, now, init=True)

    def _call(self, runtime: _FleetRuntime, entry: _Held, now: float, *, init: bool) -> None:
        """Under the lock: send an init or a ping to the pool, and note when to give up on it."""
        entry.busy = True
        entry.call += 1
        settings = runtime.fleet.settings
        timeout = settings.init_timeout if init else settings.ping_timeout
        # The driver is to keep the timeout; past it and a grace, the host counts the call as failed itself.
        deadline = (now + timeout + max(1.0, timeout / 2), runtime.fleet.name, entry.workload.name, entry.call, init)
        heapq.heappush(self._deadlines, deadline)
        self.pool.submit(self._init if init else self._ping, runtime, entry, entry.call)

    # Calls to drivers, in the pool

    def _init(self, runtime: _FleetRuntime, entry: _Held, call: int) -> None:
        settings = runtime.fleet.settings
        try:
            runtime.driver.init(entry.workload)
            outcome = succeeded(entry.workload, settings, self.clock(), random.random(), init=True)
        except Exception as e:  # whatever the driver raises: the workload's message
            outcome = failed(entry.workload, settings, self.clock(), random.random(), _message(e), init=True)
        with self._lock:
            if entry.call != call:
                return  # given up on already: its slot was freed, its failure recorded, and it is initialised again
            entry.initialized = outcome[0].state is WorkloadState.UP
            runtime.initializing -= 1
            self._start_inits(runtime, self.clock())
        self._settle(runtime, entry, outcome, call)

    def _ping(self, runtime: _FleetRuntime, entry: _Held, call: int) -> None:
        settings = runtime.fleet.settings
        started = self.clock()
        self.lags.append(started - entry.workload.next_ping_at)
        try:
            runtime.driver.ping(entry.workload)
            outcome = succeeded(entry.workload, settings, self.clock(), random.random())
        except Exception as e:
            outcome = failed(entry.workload, settings, self.clock(), random.random(), _message(e))
        if self.on_ping is not None:
            self.on_ping(runtime.fleet.name, self.name, self.clock() - started, outcome[0].state is WorkloadState.UP)
        self._settle(runtime, entry, outcome, call)

    def _settle(self, runtime: _FleetRuntime, entry: _Held, outcome: Transition, call: int) -> None:
        """Keep what call number ``call`` did, unless the host gave up on it; write it, with its event, only if
        the state changed."""
        with self._lock:
            if entry.call != call:
                return
        after, event = outcome
        if after.state is not entry.workload.state or event is not None:
            after = self._save(entry, after)
        if after.state is WorkloadState.DEAD and entry.initialized:
            self._stop_workload(after)
            entry.initialized = False
        if entry.gone and entry.initialized:  # removed or moved away while the call was under way
            self._stop_workload(after)
            entry.initialized = False
        if event is not None and not entry.gone:
            self._record([replace(event, host=self.name)])
        with self._lock:
            entry.workload = after
            entry.busy = False
            if not entry.gone:
                heapq.heappush(self._due, (after.next_ping_at, after.fleet, after.name))
                self._wake.notify()

    def _save(self, entry: _Held, after: Workload) -> Workload:
        """Write ``after`` if the workload is still as read; if it changed, once more over what the store holds."""
        for _ in range(2):
            if self.store.save_workload(after):
                return replace(after, version=after.version + 1)
            try:
                stored = self.store.get_workload(after.fleet, after.name)
            except Exception:  # removed meanwhile: the next sync stops it
                entry.gone = True
                return after
            if stored.host != self.name:
                entry.gone = True
                return after
            after = replace(after, version=stored.version)
        return after

    def _stop_workload(self, workload: Workload) -> None:
        runtime = self._fleets.get(workload.fleet)
        if runtime is not None:
            _stop_on(runtime.driver, workload)

    def _record(self, events: list[LifecycleEvent]) -> None:
        if events:
            self.store.add_lifecycle_events(events)

    # Loops

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("the fleet host's round failed; trying again in %s s", self.interval)
            self._stop.wait(self.interval)

    def _ping_loop(self) -> None:
        with self._wake:
            while not self._stop.is_set():
                now = self.clock()
                while self._due and self._due[0][0] <= now:
                    _, fleet, name = heapq.heappop(self._due)
                    entry = self._held.get((fleet, name))
                    runtime = self._fleets.get(fleet)
                    if entry is None or runtime is None or entry.busy or entry.gone:
                        continue
                    if entry.initialized:
                        self._call(runtime, entry, now, init=False)
                    else:
                        # Not initialised (its init failed, or it was dead): initialised again, within the bound.
                        runtime.waiting.append(name)
                        self._start_inits(runtime, now)
                while self._deadlines and self._deadlines[0][0] <= now:
                    self._give_up(*heapq.heappop(self._deadlines)[1:], now=now)
                soonest = min((heap[0][0] for heap in (self._due, self._deadlines) if heap), default=now)
                self._wake.wait(min(max(soonest - now, 0.005), self.interval))

    def _give_up(self, fleet: str, name: str, call: int, init: bool, *, now: float) -> None:
        """Under the lock: count a call its driver has not ended in time as failed, and free what it held. Its
        thread stays blocked until the driver returns; what it returns then is dropped."""
        entry = self._held.get((fleet, name))
        runtime = self._fleets.get(fleet)
        if entry is None or runtime is None or not entry.busy or entry.call != call:
            return
        entry.call += 1
        settings = runtime.fleet.settings
        timeout = settings.init_timeout if init else settings.ping_timeout
        message = f"{'init' if init else 'ping'} did not end within {timeout:g} s"
        outcome = failed(entry.workload, settings, now, random.random(), message, init=init)
        if init:
            runtime.initializing -= 1
            self._start_inits(runtime, now)
        self._overdue.submit(self._settle, runtime, entry, outcome, entry.call)


def _stop_on(driver: Driver, workload: Workload) -> None:
    try:
        driver.stop(workload)
    except Exception:
        # Not retried: the workload is not ours any more, dead and tried again after the cooldown, or initialised
        # again by the driver replacing this one.
        log.warning("could not stop workload %s/%s", workload.fleet, workload.name, exc_info=True)


def _moved(fleet: str, workload: str, source: str | None, target: str, now: float) -> LifecycleEvent:
    return LifecycleEvent(fleet, workload, Lifecycle.MOVED, now, target, f"from {source} to {target}")


def _message(error: Exception) -> str:
    return str(error) or type(error).__name__
