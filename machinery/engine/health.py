"""Whether a service answers its health check, from one probe to the next.

A service is ``up`` until a probe fails; it is then ``unreachable``, and ``down``
once ``down_after`` probes in a row have failed. One probe that succeeds brings it
back ``up``. ``since`` is when it entered its status.
"""

from __future__ import annotations

from dataclasses import dataclass

UP = "up"
UNREACHABLE = "unreachable"
DOWN = "down"


@dataclass(frozen=True)
class Health:
    status: str
    since: float
    checked_at: float
    failures: int = 0
    """Probes failed in a row."""
    error: str | None = None
    """Why the last probe failed."""


def after_probe(previous: Health | None, error: str | None, now: float, down_after: int) -> Health:
    """The health of a service whose probe at ``now`` failed with ``error``, or succeeded if it is None."""
    if error is None:
        status, failures = UP, 0
    else:
        failures = (previous.failures if previous else 0) + 1
        status = DOWN if failures >= down_after else UNREACHABLE
    since = previous.since if previous is not None and previous.status == status else now
    return Health(status, since, now, failures, error)
