"""Expressions in CEL, Google's Common Expression Language, through the ``common-expression-language`` package.

CEL was made for this: evaluating untrusted expressions over plain data. It
has no loops, no I/O and no names but those it is given, and type errors are
errors rather than silent coercions. The package compiles it in Rust, so a
switch or transform costs microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cel


class CelExpression:
    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self._program = program
        self.variables = frozenset(program.variables())

    def __call__(self, data: Mapping[str, Any]) -> Any:
        try:
            return self._program.execute(dict(data))
        except KeyError as e:
            raise ValueError(f"no field {e.args[0]!r} in the data") from e
        except (TypeError, RuntimeError, ValueError) as e:
            raise ValueError(str(e).split("\n", 1)[0]) from e


class CelExpressions:
    """Compiles each distinct source once."""

    def __init__(self) -> None:
        self._compiled: dict[str, CelExpression] = {}

    def compile(self, source: str) -> CelExpression:
        expression = self._compiled.get(source)
        if expression is None:
            try:
                program = cel.compile(source)
            except (ValueError, TypeError, RuntimeError) as e:
                raise ValueError(str(e).split("\n", 1)[0]) from e
            expression = self._compiled[source] = CelExpression(source, program)
        return expression
