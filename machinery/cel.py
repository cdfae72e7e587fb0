"""Expressions in CEL, Google's Common Expression Language, through the ``common-expression-language`` package.

CEL was made for this: evaluating untrusted expressions over plain data. It
has no loops, no I/O and no names but those it is given, and type errors are
errors rather than silent coercions. The package compiles it in Rust, so a
switch or transform costs microseconds.

An expression may call only CEL's own functions (listed below), and what it
computes is turned into JSON values: timestamps into ISO 8601 strings,
durations into seconds, bytes into text.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Mapping
from typing import Any

import cel

from machinery.engine.errors import InvalidExpression

FUNCTIONS = frozenset(
    [
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "timestamp",
        "duration",
        "dyn",
        "type",
        "has",
        "all",
        "exists",
        "exists_one",
        "map",
        "filter",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "max",
        "min",
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getFullYear",
        "getHours",
        "getMilliseconds",
        "getMinutes",
        "getMonth",
        "getSeconds",
    ]
)
"""CEL's standard functions and macros; operators (``_+_``, ``!_``, ``@in``) are allowed besides."""

_OPERATOR = re.compile(r"^(?:_[^A-Za-z0-9]*|[!-]_|@in|@not_strictly_false)$")
_MACRO_VARIABLE = re.compile(r"\b(?:map|filter|all|exists|exists_one)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


class CelExpression:
    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self._program = program
        bound = set(_MACRO_VARIABLE.findall(source))
        self.variables = frozenset(program.variables()) - bound

    def __call__(self, data: Mapping[str, Any]) -> Any:
        try:
            return _json(self._program.execute(dict(data)))
        except KeyError as e:
            raise InvalidExpression(f"no field {e.args[0]!r} in the data") from e
        except (TypeError, RuntimeError, ValueError, ArithmeticError, LookupError) as e:
            raise InvalidExpression(str(e).split("\n", 1)[0] or type(e).__name__) from e


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
                raise InvalidExpression(str(e).split("\n", 1)[0]) from e
            unknown = sorted(f for f in program.references()["functions"] if not _allowed(f))
            if unknown:
                raise InvalidExpression(f"it calls {', '.join(repr(f) for f in unknown)}, which CEL does not have")
            expression = self._compiled[source] = CelExpression(source, program)
        return expression


def _allowed(function: str) -> bool:
    return function in FUNCTIONS or bool(_OPERATOR.match(function))


def _json(value: Any) -> Any:
    """A CEL value as plain JSON data."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return value
