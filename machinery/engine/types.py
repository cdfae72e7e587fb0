"""Field types: parsing, static compatibility and run-time validation.

A type is written as one of ``string``, ``int``, ``float``, ``bool``, ``object``,
``array`` or ``any``; an array may name the type of its items (``items``).
Compatibility is directional: an ``int`` is accepted where a ``float`` is
expected, never the other way round, and ``bool`` is not an ``int``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from machinery.engine.errors import InvalidDefinition

SCALARS = ("string", "int", "float", "bool", "object", "array", "any")
SEARCHABLE = ("string", "int", "float", "bool")
"""The types of the fields a workflow may declare searchable: those whose values an index orders."""


@dataclass(frozen=True)
class FieldType:
    """A field's type; ``items`` is set only for arrays with a typed element."""

    name: str
    items: FieldType | None = None

    def __post_init__(self) -> None:
        if self.name not in SCALARS:
            raise InvalidDefinition(f"unknown type {self.name!r}; expected one of {', '.join(SCALARS)}")
        if self.items is not None and self.name != "array":
            raise InvalidDefinition(f"only an array may name an item type, not {self.name!r}")

    def __str__(self) -> str:
        return f"array<{self.items}>" if self.items is not None else self.name

    @classmethod
    def parse(cls, name: str, items: str | None = None) -> FieldType:
        return cls(name, cls.parse(items) if items is not None else None)


ANY = FieldType("any")


def accepts(expected: FieldType, found: FieldType) -> bool:
    """Whether a value statically typed ``found`` may flow where ``expected`` is declared.

    ``any`` on either side is accepted here: the value is checked when it flows.
    """
    if expected.name == "any" or found.name == "any":
        return True
    if expected.name == "float" and found.name == "int":
        return True
    if expected.name != found.name:
        return False
    if expected.name == "array" and expected.items is not None and found.items is not None:
        return accepts(expected.items, found.items)
    return True


def type_of(value: Any) -> str:
    """The name of the type a JSON value has, as users read it in errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def conforms(expected: FieldType, value: Any) -> bool:
    """Whether a JSON value matches ``expected`` at run time."""
    name = expected.name
    if name == "any":
        return True
    found = type_of(value)
    if name == "float":
        return found in ("float", "int")
    if name != found:
        return False
    if name == "array" and expected.items is not None:
        return all(conforms(expected.items, item) for item in value)
    return True


def describe_mismatch(expected: FieldType, value: Any) -> str:
    """Say what came instead of ``expected``, down to the first bad array item."""
    if expected.name == "array" and expected.items is not None and isinstance(value, list):
        for index, item in enumerate(value):
            if not conforms(expected.items, item):
                return f"item {index} is {type_of(item)} {_preview(item)}"
    return f"got {type_of(value)} {_preview(value)}"


def _preview(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def epoch_seconds(value: Any) -> float | None:
    """A moment as epoch seconds, from a number of them or an ISO 8601 time (UTC unless it says otherwise)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    return None
