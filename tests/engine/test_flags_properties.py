"""Properties of the flag matching engine over random rule sets and combinations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from machinery.engine.flags import Rules, check_combination, check_rules
from machinery.engine.model import Executable, Parameter

FLAGS = [f"-{letter}" for letter in "abcdefg"]


@st.composite
def executables(draw: st.DrawFn) -> Executable:
    flags = FLAGS[: draw(st.integers(1, len(FLAGS)))]
    parameters = []
    for flag in flags:
        others = [f for f in flags if f != flag]
        requires = draw(st.lists(st.sampled_from(others), unique=True, max_size=2)) if others else []
        conflicts = draw(st.lists(st.sampled_from(others), unique=True, max_size=2)) if others else []
        parameters.append(Parameter(flag, requires=tuple(requires), conflicts=tuple(conflicts)))
    return Executable("tool", "/usr/bin/tool", parameters=tuple(parameters))


def closure(rules: Rules, flag: str) -> set[str]:
    return set(rules.chains(flag))


def violations(executable: Executable, combination: list[str]) -> list[str]:
    """Missing transitive requirements and conflicting pairs, found by brute force."""
    rules = Rules(executable)
    found = [f"missing {r}" for flag in combination for r in closure(rules, flag) if r not in combination]
    found += [f"{a} with {b}" for a in combination for b in combination if b in rules.conflicts[a]]
    return found


@settings(max_examples=300)
@given(executables(), st.data())
def test_an_accepted_combination_holds_its_requirements_and_no_conflicting_pair(
    executable: Executable, data: st.DataObject
) -> None:
    combination = data.draw(st.lists(st.sampled_from([p.flag for p in executable.parameters]), unique=True))
    order, problems = check_combination(executable, combination)
    if not problems:
        assert violations(executable, combination) == []
        assert sorted(order) == sorted(combination)
    else:
        assert violations(executable, combination) != [] or any("cycle" in p.message for p in problems)


@settings(max_examples=300)
@given(executables(), st.data())
def test_a_refused_combination_names_each_flag_at_fault(executable: Executable, data: st.DataObject) -> None:
    combination = data.draw(st.lists(st.sampled_from([p.flag for p in executable.parameters]), unique=True))
    _, problems = check_combination(executable, combination)
    rules = Rules(executable)
    for problem in problems:
        assert problem.field in rules.declared
        if "is missing" in problem.message:
            assert problem.field not in combination
            assert any(problem.field in closure(rules, flag) for flag in combination)
        elif "cycle" not in problem.message:
            assert "conflicts with" in problem.message
            other = problem.message.rsplit(" ", 1)[-1]
            assert {problem.field, other} <= set(combination) and other in rules.conflicts[problem.field]


@settings(max_examples=300)
@given(executables(), st.data())
def test_in_accepted_rules_every_flag_has_a_combination_and_its_order_puts_requirements_first(
    executable: Executable, data: st.DataObject
) -> None:
    if check_rules(executable):
        return
    rules = Rules(executable)
    flag = data.draw(st.sampled_from([p.flag for p in executable.parameters]))
    combination = [flag, *closure(rules, flag)]
    order, problems = check_combination(executable, combination)
    assert problems == []
    for position, chosen in enumerate(order):
        assert all(order.index(required) < position for required in rules.requires[chosen])


@settings(max_examples=300)
@given(executables())
def test_refused_rules_name_a_reason_and_accepted_ones_have_none(executable: Executable) -> None:
    rules = Rules(executable)
    problems = check_rules(executable)
    cyclic = any(flag in closure(rules, r) for flag in rules.declared for r in closure(rules, flag))
    contradicted = any(closure(rules, flag) & rules.conflicts[flag] for flag in rules.declared)
    stuck = any(rules.conflicts[a] & closure(rules, flag) for flag in rules.declared for a in closure(rules, flag))
    assert bool(problems) == (cyclic or contradicted or stuck)
    for problem in problems:
        assert problem.field in rules.declared
        assert any(word in problem.message for word in ("cycle", "contradicts", "never be used", "requires itself"))
