"""Where the items of fleet steps run: on the host that holds their workload, reached through its own queue.

The store says which host holds a workload; the item's message goes to that host's queue, which only that
host consumes. A message that reaches another worker (the sweeper sends to the shared queue) is passed on,
and one that reaches a host no longer holding the workload fails as moved, and is sent again (see
:func:`machinery.engine.attempts.moved`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from machinery.engine.fleets import Workload
from machinery.engine.ports import Dispatcher, FleetStore

PAGE = 1000


class FleetRoutes:
    """The workloads a fleet step's selector matches, the host of each, and the way to that host.

    ``here`` is the host this process is, if it hosts workloads: the items of workloads it holds run here.
    """

    def __init__(self, store: FleetStore, to_host: Callable[[str], Dispatcher], here: str | None = None) -> None:
        self.store = store
        self.to_host = to_host
        self.here = here
        self._dispatchers: dict[str, Dispatcher] = {}

    def members(self, fleet: str, labels: Mapping[str, str], limit: int) -> list[Workload]:
        """The workloads of ``fleet`` having every label of ``labels``, by name: ``limit`` at most."""
        found: list[Workload] = []
        after = ""
        while len(found) < limit:
            page = self.store.list_workloads(fleet, labels=labels, after=after, limit=min(PAGE, limit - len(found)))
            if not page:
                break
            found += page
            after = page[-1].name
        return found

    def host_of(self, fleet: str, workload: str) -> str | None:
        """The host holding the workload now, None if none does; NotFound if it was removed."""
        return self.store.get_workload(fleet, workload).host

    def send(self, host: str, event_id: str, unit: str, delay: float = 0.0) -> None:
        dispatcher = self._dispatchers.get(host)
        if dispatcher is None:
            dispatcher = self._dispatchers[host] = self.to_host(host)
        dispatcher.dispatch(event_id, unit, delay)
