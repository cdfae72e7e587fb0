"""Registering fleets and their workloads: what the API does, with the drivers' checks and the lifecycle events."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from machinery.addresses import DEFAULT_GUARD, AddressGuard
from machinery.engine.errors import InvalidData, InvalidDefinition
from machinery.engine.fleets import Fleet, Lifecycle, LifecycleEvent, Workload
from machinery.engine.ports import FleetStore
from machinery.fleets.drivers import Driver, DriverContext, DriverFactory, load_driver

MAX_WORKLOADS = 10_000
"""Workloads added or removed in one call at most."""


@dataclass(frozen=True)
class HostLoad:
    """A host, whether its lease is current, and the workloads it holds by fleet."""

    name: str
    alive: bool
    lease_until: float
    started_at: float
    workloads: dict[str, int]


class Fleets:
    """Fleets and workloads as users change them: fleets name drivers that exist, workloads carry a
    configuration their driver accepts, and each workload added or removed says so in its fleet's events."""

    def __init__(
        self,
        store: FleetStore,
        guard: AddressGuard = DEFAULT_GUARD,
        drivers: Callable[[str], DriverFactory] = load_driver,
        clock: Callable[[], float] = time.time,
        check: Callable[[str, Fleet | None], None] | None = None,
    ) -> None:
        """``check(name, fleet)`` refuses ``fleet`` in place of the fleet ``name`` (None: deleted) if that would
        break a workflow running its tasks."""
        self.store = store
        self.check = check
        self.guard = guard
        self.drivers = drivers
        self.clock = clock

    def add_fleet(self, fleet: Fleet) -> Fleet:
        self._driver(fleet)
        return self.store.add_fleet(fleet)

    def replace_fleet(self, name: str, fleet: Fleet) -> Fleet:
        """Replace the fleet ``name`` (its hosts use the new settings from their next round)."""
        if fleet.name != name:
            raise InvalidDefinition(f"the fleet's name is {fleet.name!r}, not {name!r} as its URL says")
        current = self.store.get_fleet(name)
        self._driver(fleet)
        if self.check is not None:
            self.check(name, fleet)
        return self.store.replace_fleet(replace(fleet, version=current.version), version=current.version)

    def delete_fleet(self, name: str) -> None:
        """Delete the fleet ``name``: Conflict while it has workloads, or workflows run its tasks."""
        self.store.get_fleet(name)
        if self.check is not None:
            self.check(name, None)
        self.store.delete_fleet(name)

    def add_workloads(self, fleet_name: str, workloads: Sequence[Workload]) -> list[str]:
        """Add those not there yet, each checked by the fleet's driver first; the names added."""
        fleet = self.store.get_fleet(fleet_name)
        _check_size(workloads)
        driver = self._driver(fleet)
        problems = {w.name: found for w in workloads if (found := driver.check_config(w.config))}
        if problems:
            raise InvalidData(
                "; ".join(f"workload {name!r}: {', '.join(found)}" for name, found in list(problems.items())[:20])
            )
        added = self.store.add_workloads([replace(w, fleet=fleet_name) for w in workloads])
        now = self.clock()
        self.store.add_lifecycle_events([LifecycleEvent(fleet_name, name, Lifecycle.ADDED, now) for name in added])
        return added

    def remove_workloads(self, fleet_name: str, names: Sequence[str]) -> list[str]:
        """Remove those there are (their hosts stop them at their next round); the names removed."""
        self.store.get_fleet(fleet_name)
        _check_size(names)
        removed = self.store.remove_workloads(fleet_name, names)
        now = self.clock()
        self.store.add_lifecycle_events(
            [LifecycleEvent(fleet_name, w.name, Lifecycle.REMOVED, now, w.host) for w in removed]
        )
        return [w.name for w in removed]

    def hosts(self) -> list[HostLoad]:
        now = self.clock()
        loads: dict[str, dict[str, int]] = {}
        for (fleet, host, _), count in self.store.count_workloads().items():
            if host is not None:
                held = loads.setdefault(host, {})
                held[fleet] = held.get(fleet, 0) + count
        return [
            HostLoad(h.name, h.alive(now), h.lease_until, h.started_at, loads.get(h.name, {}))
            for h in self.store.list_hosts()
        ]

    def _driver(self, fleet: Fleet) -> Driver:
        return self.drivers(fleet.driver)(DriverContext(fleet.settings, self.guard))


def _check_size(items: Sequence[object]) -> None:
    if len(items) > MAX_WORKLOADS:
        raise InvalidData(f"at most {MAX_WORKLOADS} workloads per call, not {len(items)}")
