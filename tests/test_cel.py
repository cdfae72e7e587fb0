"""The CEL adapter's bounds: comprehensions nested too deep are refused, and costly evaluations are not run."""

from __future__ import annotations

import re

import pytest

from machinery.cel import DEFAULT_BUDGET, MAX_NESTING, CelExpressions
from machinery.engine.errors import InvalidExpression, OverBudget

QUADRATIC = "size(input.items.map(x, input.items.map(y, x + y)))"
"""The expression of the report: every pair of items, over 3,000 items."""


def test_comprehensions_nested_deeper_than_allowed_are_refused_when_compiled():
    source = "input.a.map(x, x.b.map(y, y.c.map(z, z)))"
    with pytest.raises(InvalidExpression, match=f"nested 3 deep; at most {MAX_NESTING}"):
        CelExpressions().compile(source)


@pytest.mark.parametrize(
    "source",
    [
        "input.a.map(x, x.b.map(y, y))",
        "input.a.exists(x, x > 1) && input.b.all(y, y < 2) && input.c.filter(z, z > 0) == []",
        "'.map(x, .map(y, .map(z, z)))' + \"(.filter(\" + '''.all('''",
    ],
)
def test_comprehensions_side_by_side_or_within_the_limit_and_text_in_strings_are_allowed(source):
    CelExpressions().compile(source)


def test_the_cost_grows_with_the_data_and_with_the_nesting():
    expressions = CelExpressions()
    flat, filtered, nested = (
        expressions.compile(source) for source in ("size(input.items)", "size(input.items.filter(x, x > 1))", QUADRATIC)
    )
    small, large = {"input": {"items": list(range(10))}}, {"input": {"items": list(range(1000))}}
    assert flat.cost(small) < flat.cost(large) < filtered.cost(large) < nested.cost(large)
    assert nested.cost(large) > 100 * filtered.cost(large)


def test_an_expression_over_its_budget_is_refused_without_being_evaluated():
    expression = CelExpressions().compile(QUADRATIC)
    data = {"input": {"items": list(range(3000))}}
    with pytest.raises(OverBudget, match=re.escape(f"more than the budget of {DEFAULT_BUDGET:.2g}")):
        expression(data)


def test_the_same_expression_within_its_budget_is_evaluated():
    assert CelExpressions().compile(QUADRATIC)({"input": {"items": [1, 2, 3]}}) == 3


def test_a_smaller_budget_refuses_sooner():
    data = {"input": {"items": list(range(100))}}
    assert CelExpressions().compile("size(input.items.filter(x, x > 1))")(data) == 98
    with pytest.raises(OverBudget):
        CelExpressions(budget=1000).compile("size(input.items.filter(x, x > 1))")(data)


def test_only_the_names_an_expression_reads_count_toward_its_cost():
    expression = CelExpressions().compile("input.n + 1")
    padded = {"input": {"n": 1}, "context": {"big": list(range(10_000))}, "steps": {}}
    assert expression.cost(padded) == expression.cost({"input": {"n": 1}})
    assert expression(padded) == 2
