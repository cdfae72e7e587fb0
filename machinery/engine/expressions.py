"""The port of the expression language that ``switch`` and ``transform`` steps use.

Expressions read three names: ``input`` (the event's data), ``context`` (the
context a step sees) and ``steps`` (each upstream step's outputs by id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

NAMES = frozenset({"input", "context", "steps"})


class Expression(Protocol):
    variables: frozenset[str]
    """The top-level names the expression reads."""

    def __call__(self, data: Mapping[str, Any]) -> Any:
        """Evaluate over ``data``; raises InvalidExpression when it cannot, and its subclass OverBudget, without
        evaluating, when it would cost more than the language's budget."""


class Expressions(Protocol):
    """A safe expression language over plain data: no I/O, no names but the data given."""

    def compile(self, source: str) -> Expression:
        """Raises InvalidExpression saying what is wrong with ``source``."""
