"""Expressions in CEL, Google's Common Expression Language, through the ``common-expression-language`` package.

CEL was made for this: evaluating untrusted expressions over plain data. It
has no loops, no I/O and no names but those it is given, and type errors are
errors rather than silent coercions. The package compiles it in Rust, so a
switch or transform costs microseconds.

An expression may call only CEL's own functions (listed below), and what it
computes is turned into JSON values: timestamps into ISO 8601 strings,
durations into seconds, bytes into text.

CEL always ends, but what it costs grows with its data: the package evaluates
``map`` and ``filter`` in time quadratic in their list, and a comprehension
nested in another multiplies the two. The package can be neither limited nor
interrupted once it runs, so the cost is bounded before: an expression whose
comprehensions nest deeper than ``MAX_NESTING`` is refused when it is
compiled, and before each evaluation its cost over the data given is estimated
(:func:`cost`) and compared with a budget; over it, the expression is not
evaluated and ``OverBudget`` says by how much.
"""

from __future__ import annotations

import base64
import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any

import cel

from machinery.engine.errors import InvalidExpression, OverBudget

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

MAX_NESTING = 2
"""Comprehensions (``map``, ``filter``, ``all``, ``exists``, ``exists_one``) nested deeper are refused."""
DEFAULT_BUDGET = 1e8
"""Estimated cost units an evaluation may take: about a tenth of a second of the package's work."""
_BUILDERS = frozenset({"map", "filter"})
"""Comprehensions that build a list, which the package copies at each element."""
_MACRO_CALL = re.compile(r"\.\s*(map|filter|all|exists_one|exists)\s*\($")

_OPERATOR = re.compile(r"^(?:_[^A-Za-z0-9]*|[!-]_|@in|@not_strictly_false)$")
_MACRO_VARIABLE = re.compile(r"\b(?:map|filter|all|exists|exists_one)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


class _Comprehension:
    """A comprehension in an expression's source, and those nested in it."""

    def __init__(self, builds: bool) -> None:
        self.builds = builds
        self.inner: list[_Comprehension] = []

    def cost(self, size: int) -> int:
        """Over data of ``size`` values: each element costs its body, and a copy of the list when one is built."""
        return size * ((size if self.builds else 1) + sum(c.cost(size) for c in self.inner))

    @property
    def depth(self) -> int:
        return 1 + max((c.depth for c in self.inner), default=0)


class CelExpression:
    """One compiled expression, evaluated over JSON data within a cost budget."""

    def __init__(self, source: str, program: Any, budget: float) -> None:
        self.source = source
        self._program = program
        self._budget = budget
        bound = set(_MACRO_VARIABLE.findall(source))
        self.variables = frozenset(program.variables()) - bound
        self._comprehensions = _comprehensions(source)
        depth = max((c.depth for c in self._comprehensions), default=0)
        if depth > MAX_NESTING:
            raise InvalidExpression(
                f"its comprehensions are nested {depth} deep; at most {MAX_NESTING} are allowed, "
                "since what they cost grows with the power of their depth"
            )

    def cost(self, data: Mapping[str, Any]) -> int:
        """An estimate of what evaluating over ``data`` costs, in units of about a nanosecond of the package's work.

        Every value given is converted, and each comprehension costs what :class:`_Comprehension` says, for every
        character of the source. Counting stops past the budget, so the estimate itself costs little.
        """
        length = len(self.source)
        size = _size((data[name] for name in self.variables if name in data), int(self._budget) // length + 1)
        return length * (size + sum(c.cost(size) for c in self._comprehensions))

    def __call__(self, data: Mapping[str, Any]) -> Any:
        cost = self.cost(data)
        if cost > self._budget:
            raise OverBudget(
                f"over this data it would cost about {cost:.2g} units, more than the budget of {self._budget:.2g} "
                "(MACHINERY_EXPRESSION_BUDGET)"
            )
        try:
            return _json(self._program.execute({name: data[name] for name in self.variables if name in data}))
        except KeyError as e:
            raise InvalidExpression(f"no field {e.args[0]!r} in the data") from e
        except (TypeError, RuntimeError, ValueError, ArithmeticError, LookupError) as e:
            raise InvalidExpression(str(e).split("\n", 1)[0] or type(e).__name__) from e


class CelExpressions:
    """Compiles each distinct source once; its expressions refuse to evaluate over ``budget`` (see :func:`cost`)."""

    def __init__(self, budget: float = DEFAULT_BUDGET) -> None:
        self.budget = budget
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
            expression = self._compiled[source] = CelExpression(source, program, self.budget)
        return expression


def _comprehensions(source: str) -> list[_Comprehension]:
    """The comprehensions of ``source`` as a tree, found by following its parentheses outside string literals."""
    top: list[_Comprehension] = []
    # One entry per open parenthesis: the comprehension it opens, or None for any other.
    opened: list[_Comprehension | None] = []
    quote = ""
    i = 0
    while i < len(source):
        char = source[i]
        if quote:
            if char == "\\":
                i += 1
            elif source.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif char in "\"'":
            quote = source[i : i + 3] if source[i : i + 3] in ('"""', "'''") else char
            i += len(quote) - 1
        elif char == "(":
            macro = _MACRO_CALL.search(source, max(0, i - 32), i + 1)
            found = _Comprehension(macro[1] in _BUILDERS) if macro else None
            if found is not None:
                enclosing = next((c for c in reversed(opened) if c is not None), None)
                (enclosing.inner if enclosing is not None else top).append(found)
            opened.append(found)
        elif char == ")" and opened:
            opened.pop()
        i += 1
    return top


def _size(values: Iterable[Any], limit: int) -> int:
    """How many values ``values`` hold, containers and what they contain alike; counting stops past ``limit``."""
    stack = list(values)
    count = 0
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


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
