"""The caller of fleets' tasks: a fleet step's item, run by the host that holds its workload, through the
fleet's driver.

It is the service caller of kind ``fleet`` of the runner a host runs beside its rounds (see
:meth:`machinery.bootstrap.Machinery.start_fleet_host`). A workload this host does not hold fails the call as
moved, so that the item goes to the host that holds it now, as does a run that failed while the workload moved
away; a workload that is not up fails it transiently, under the task's retry policy, as does whatever the
driver raises. The driver's ``run`` is given the task's timeout in a thread of its own: past it, the call fails,
and what the driver returns later is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Overdue
from typing import Any

from machinery.engine.calls import Call, CallFailure, ErrorKind
from machinery.engine.fleets import WorkloadState
from machinery.engine.kinds.fleet import parse_key
from machinery.fleets.host import FleetHost


class TaskCaller:
    """Runs the task of a fleet step's item on its workload, if this host holds it."""

    def __init__(self, host: FleetHost, threads: int) -> None:
        self.host = host
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="machinery-fleet-task")

    def call(self, call: Call, event_id: str) -> tuple[Any, CallFailure | None]:
        fleet, task = parse_key(call.service.name)
        workload = call.target or ""
        held = self.host.holding(fleet, workload)
        if held is None:
            return None, _moved(workload, self.host.name)
        driver, current = held
        if current.state is not WorkloadState.UP:
            reason = f": {current.message}" if current.message else ""
            return None, CallFailure(
                f"workload '{workload}' is {current.state.value}{reason}", True, ErrorKind.CONNECTION
            )
        timeout = call.service.timeout
        running = self.pool.submit(driver.run, current, task, call.inputs)
        try:
            results: Mapping[str, Any] = running.result(timeout)
        except Overdue:
            failure = CallFailure(f"task '{task}' did not end within {timeout:g} s", True, ErrorKind.TIMEOUT)
        except Exception as e:  # whatever the driver raises: a failure of this attempt
            failure = CallFailure(str(e) or type(e).__name__, True, ErrorKind.ERROR)
        else:
            return dict(results) if isinstance(results, Mapping) else results, None
        if self.host.holding(fleet, workload) is None:
            # Moved while it ran, and let go by this host: the host that holds it now runs it again.
            return None, _moved(workload, self.host.name)
        return None, failure

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _moved(workload: str, host: str) -> CallFailure:
    return CallFailure(f"workload '{workload}' is not held by host {host} (any more)", True, ErrorKind.MOVED)
