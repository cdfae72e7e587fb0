"""Errors the engine and its ports raise.

    MachineryError
    ├── InvalidDefinition   a service or workflow does not hold together (problems listed)
    ├── InvalidData         an event's data does not match the workflow's inputs (problems listed)
    ├── NotFound            no such service, workflow or event
    ├── Conflict            a name is taken, or a change would break what depends on it
    └── InvalidState        the event cannot do that now (retry a completed event, ...)

The adapters map each one to one HTTP status in one place (``machinery.api.errors``).
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
    pass


class InvalidData(MachineryError):
    pass


class NotFound(MachineryError):
    pass


class Conflict(MachineryError):
    pass


class InvalidState(MachineryError):
    pass
