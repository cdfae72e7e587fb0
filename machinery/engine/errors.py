"""Every error machinery raises on purpose, in one tree.

    MachineryError
    ├── InvalidDefinition   a service or workflow does not hold together (problems listed)
    ├── InvalidExpression   a CEL expression does not compile, or fails over the data it is given
    │   └── OverBudget      evaluating it over the data it is given would cost more than the budget
    ├── InvalidData         an event's data does not match the workflow's inputs (problems listed)
    ├── NotFound            no such service, workflow or event
    ├── Conflict            a name is taken, or a change would break what depends on it
    ├── InvalidState        the event cannot do that now (retry a completed event, ...)
    ├── InvalidConfig       a ``MACHINERY_*`` setting or a service's secret cannot be read
    ├── ConversionError     an Orchy or gorchestrator document cannot be converted
    ├── GraphvizMissing     an image needs Graphviz's ``dot`` binary, which is not installed
    ├── RefusedAddress      a host the workers may not call (``machinery.addresses``)
    ├── Unauthorized        the API wants a bearer token, or does not know the one sent (401)
    ├── Forbidden           the role of the token sent may not do that (403)
    └── Unreachable         no answer from the API at that URL

The engine and its ports raise the first six, the adapters around them the others; the last three only
``machinery.client`` raises, for what the API answers (or does not). Each is mapped in one place: to an HTTP
status by ``machinery.api.errors`` (and back by ``machinery.client``), to an exit code by
``machinery.cli``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong, said so that a person can act on it."""

    message: str
    step: str | None = None
    field: str | None = None
    expected: str | None = None
    found: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class MachineryError(Exception):
    """Base of every error machinery raises on purpose."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)


class InvalidDefinition(MachineryError):
    """A service or workflow does not hold together; ``problems`` lists what is wrong."""


class InvalidExpression(MachineryError):
    """An expression does not compile, or cannot be evaluated over the data it is given."""


class OverBudget(InvalidExpression):
    """Evaluating an expression over the data it is given would cost more than the budget allows."""


class InvalidData(MachineryError):
    """An event's data does not match its workflow's inputs; ``problems`` lists what is wrong."""


class NotFound(MachineryError):
    """No service, workflow or event goes by that id or name."""


class Conflict(MachineryError):
    """A name is taken, the definition changed since it was read, or a change would break what depends on it."""


class InvalidState(MachineryError):
    """The event cannot do that in the state it is in."""


class InvalidConfig(MachineryError):
    """A ``MACHINERY_*`` environment variable holds a value that cannot be read, or a service's secret is not set."""


class ConversionError(MachineryError):
    """A document is not one the importers can convert; the message says why."""


class GraphvizMissing(MachineryError):
    """Graphviz's ``dot`` binary, which draws SVG and PNG images, is not installed."""


class Unauthorized(MachineryError):
    """The API wants a bearer token, or does not know the one sent (its 401)."""


class Forbidden(MachineryError):
    """The role of the bearer token sent may not make that request (the API's 403)."""


class Unreachable(MachineryError):
    """The API at the URL given does not answer: refused, timed out, or not HTTP."""
