"""The values the engine and the service callers exchange: a call to make, and why one failed.

Callers (HTTP, commands and fleets' hosts) import this module, and the
ports name its types, without importing the decider.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from machinery.engine.model import Service


class ErrorKind(StrEnum):
    """What went wrong with a call or a step, as recorded in its ``error.kind``."""

    ERROR = "error"
    """Nothing more precise is known."""
    CONNECTION = "connection"
    """The service could not be reached."""
    TIMEOUT = "timeout"
    """No answer in time: a call's, a wait's or an event's."""
    HTTP = "http"
    """The service answered with an error status."""
    JSON = "json"
    """The service answered with a body that is not JSON (a notification counts it delivered all the same)."""
    ADDRESS = "address"
    """The service's address is one the workers may not call: link-local, unspecified, multicast or denied."""
    SIZE = "size"
    """The service answered with a body larger than the callers read (a notification counts it delivered too)."""
    TYPE = "type"
    """A value outside its contract: an answer, a transform's outputs, a workflow's outputs."""
    INPUT = "input"
    """A step's inputs could not be made from what the event holds."""
    EXPRESSION = "expression"
    """An expression failed while it was evaluated."""
    BUDGET = "budget"
    """An expression would have cost more than its budget over the data it was given, and was not evaluated."""
    ROUTE = "route"
    """A switch's value matched none of its cases."""
    CONFIG = "config"
    """The definitions changed under a running event (a service was deleted, say), or a call's secret is not set."""
    LOST = "lost"
    """The worker running the call vanished before it recorded a result."""
    EXIT = "exit"
    """A command exited with a code other than 0, or was killed by a signal."""
    WORKER = "worker"
    """No worker may make the call: a command step waits for a worker started with ``--commands``."""
    FAIL = "fail"
    """A ``fail`` step ended the event on purpose: such an event is not retried."""
    MOVED = "moved"
    """The workload a fleet step's item runs on is no longer held by the host the item was sent to: it is sent to
    the workload's new host, and the attempt counts as lost, not against the task's retry policy."""


class Accepted:
    """What a caller returns for a call that a callback service took, to answer later at its callback URL."""

    def __repr__(self) -> str:
        return "ACCEPTED"


ACCEPTED = Accepted()


def callback_token(event_id: str, step_id: str, claim: str) -> str:
    """The token of a callback URL: it names the event and the step, and carries the claim's unguessable token,
    so that it answers for that one attempt of that one step."""
    return base64.urlsafe_b64encode(f"{event_id}\n{step_id}\n{claim}".encode()).decode().rstrip("=")


def parse_callback_token(token: str) -> tuple[str, str, str] | None:
    """The event id, step id and claim token of a callback token; None if it is not one."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    parts = text.split("\n")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


def unit_key(step_id: str, item: int | None) -> str:
    """The unit a step or one item of a map step is handed out as: ``upper``, or ``each[3]``."""
    return step_id if item is None else f"{step_id}[{item}]"


class Call(NamedTuple):
    """A service call a worker has claimed and must now make.

    A named tuple, not a frozen dataclass: every claim makes one, and a tuple is made several times faster.
    """

    step_id: str
    service: Service
    inputs: dict[str, Any]
    attempt: int
    token: str
    idempotency_key: str
    item: int | None = None
    lease_until: float = 0.0
    """When the claim lapses, and the unit counts as lost if no result came."""
    target: str | None = None
    """For an item of a ``fleet`` step, the workload to run the task on."""

    @property
    def unit(self) -> str:
        return unit_key(self.step_id, self.item)


@dataclass(frozen=True)
class CallFailure:
    """Why a call (or a step the engine runs) failed: a value recorded in the step's state, not an exception.

    ``transient`` failures are retried under the service's policy; the others fail the step at once.
    """

    message: str
    transient: bool
    kind: ErrorKind = ErrorKind.ERROR
    details: Mapping[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind.value, "message": self.message, "transient": self.transient}
        if self.details:
            doc.update(self.details)
        return doc
