"""The port of fleets: what a store keeps of them, as a Protocol (see :mod:`machinery.engine.ports`).

Every write that can race is conditional, as the other stores' are.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from machinery.engine.fleets import Fleet, Host, LifecycleEvent, Workload, WorkloadState


class FleetStore(Protocol):
    """Fleets, their workloads (thousands per call), the hosts that hold them, and their lifecycle events."""

    def add_fleet(self, fleet: Fleet) -> Fleet:
        """Store a new fleet at version 1; Conflict if the name is taken."""

    def get_fleet(self, name: str) -> Fleet: ...

    def list_fleets(self) -> list[Fleet]:
        """Every fleet, by name."""

    def replace_fleet(self, fleet: Fleet, *, version: int) -> Fleet:
        """Replace the fleet if it is still at ``version``, bumping it; Conflict if not, NotFound if it is gone."""

    def delete_fleet(self, name: str) -> None:
        """NotFound if there is none; Conflict while it has workloads."""

    def add_workloads(self, workloads: Sequence[Workload]) -> list[str]:
        """Add each workload at version 1, unassigned; the names added (those that exist are left as they are)."""

    def remove_workloads(self, fleet: str, names: Collection[str]) -> list[Workload]:
        """Delete those of ``names`` there are; them, as they were (their hosts stop them once they see it)."""

    def get_workload(self, fleet: str, name: str) -> Workload: ...

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
        """The workloads matching every filter given, by name, from the first after ``after`` (a keyset)."""

    def count_workloads(self, fleet: str | None = None) -> dict[tuple[str, str | None, str], int]:
        """How many workloads there are, by fleet, host (None: unassigned) and state."""

    def save_workload(self, workload: Workload) -> bool:
        """Write its state, failed pings, next ping, message and since, if the stored version is still
        ``workload.version`` (and bump it); False if it changed or the workload is gone. Its host and lease stay."""

    def unassigned_workloads(self, fleet: str, *, now: float, limit: int) -> list[Workload]:
        """The workloads held by no host, or by one whose lease lapsed before ``now``, by name."""

    def claim_workloads(
        self, fleet: str, names: Collection[str], host: str, *, now: float, until: float, source: str | None = None
    ) -> list[str]:
        """Give ``host``, until ``until``, those of ``names`` that are unassigned or whose lease lapsed before
        ``now`` (with ``source``: those ``source`` holds instead, a move); the names given. Each is
        ``initializing`` again, since ``host`` has to initialise it."""

    def renew_workloads(self, host: str, until: float) -> int:
        """Extend the lease of every workload ``host`` holds to ``until``; how many."""

    def heartbeat(self, host: Host) -> None:
        """Record the host and its lease, replacing what was recorded."""

    def list_hosts(self) -> list[Host]:
        """Every host recorded, by name, whether its lease is current or not."""

    def forget_hosts(self, *, lapsed_before: float) -> int:
        """Delete the hosts whose lease lapsed before ``lapsed_before``; how many."""

    def acquire_lease(self, key: str, holder: str, *, now: float, until: float) -> bool:
        """Hold ``key`` until ``until`` if nobody else holds it past ``now``: one holder at a time."""

    def add_lifecycle_events(self, events: Sequence[LifecycleEvent]) -> None: ...

    def list_lifecycle_events(
        self, fleet: str, workload: str | None = None, *, limit: int = 100
    ) -> list[LifecycleEvent]:
        """The latest events of a fleet, or of one of its workloads, newest first."""
