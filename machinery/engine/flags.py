"""The flag matching engine: an executable's rules, the combinations of flags they allow, and argv.

Two relations hold between an executable's parameters: ``requires`` (directed: ``-o`` cannot go without
``--format``) and ``conflicts`` (symmetric: ``-c`` and ``-m`` cannot stand together). :func:`check_rules` refuses
a rule set that cannot be used as written, with every problem at once and the path that proves each;
:func:`check_combination` refuses a set of flags that misses a requirement or holds a conflicting pair, and
never adds what is missing. :func:`order` is the argv order: every flag after the flags it requires, ties in the
order the parameters are declared.

Plain Python: the API, the registry and the command workers share it.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from machinery.engine.errors import Problem
from machinery.engine.model import COMMAND_OUTPUTS, Argument, CommandTarget, Executable, Field, Parameter, Service
from machinery.engine.types import FieldType, accepts, type_of

FIELD_TYPES = {
    "string": "string",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "path": "string",
    "ip": "string",
    "port": "int",
    "enum": "string",
}
"""The type of the service input that may give a parameter's value, by the parameter's value type."""


class Rules:
    """An executable's rules as graphs: each flag's direct requirements, and the flags it conflicts with (both
    ways). Rules naming an unknown flag are left out: :func:`check_rules` reports them."""

    def __init__(self, executable: Executable) -> None:
        self.executable = executable
        self.declared: dict[str, int] = {}
        for index, p in enumerate(executable.parameters):
            self.declared.setdefault(p.flag, index)
        self.requires: dict[str, tuple[str, ...]] = {flag: () for flag in self.declared}
        self.conflicts: dict[str, set[str]] = {flag: set() for flag in self.declared}
        for p in executable.parameters:
            self.requires[p.flag] = tuple(dict.fromkeys(r for r in p.requires if r in self.declared))
            for other in p.conflicts:
                if other in self.declared:
                    self.conflicts[p.flag].add(other)
                    self.conflicts[other].add(p.flag)

    def chains(self, flag: str) -> dict[str, tuple[str, ...]]:
        """Every flag ``flag`` requires, directly or through others, with the shortest chain that proves it
        (``flag`` first, the required flag last); ties go to the requirement declared first."""
        found: dict[str, tuple[str, ...]] = {}
        queue: deque[tuple[str, ...]] = deque([(flag,)])
        while queue:
            chain = queue.popleft()
            for required in self.requires.get(chain[-1], ()):
                if required not in found and required != flag:
                    found[required] = (*chain, required)
                    queue.append(found[required])
        return found


def say_chain(chain: Sequence[str]) -> str:
    """``-o requires --format, which requires --input``."""
    text = f"{chain[0]} requires {chain[1]}"
    return text + "".join(f", which requires {flag}" for flag in chain[2:])


def check_rules(executable: Executable) -> list[Problem]:
    """Every reason the rules of ``executable`` cannot be used as written; empty when they can."""
    problems = _declarations(executable)
    rules = Rules(executable)
    problems += _cycles(rules)
    for flag in rules.declared:
        chains = rules.chains(flag)
        for required, chain in chains.items():
            if required in rules.conflicts[flag]:
                problems.append(
                    Problem(
                        f"{flag} contradicts itself: {say_chain(chain)}, and {flag} conflicts with {required}",
                        field=flag,
                    )
                )
        needed = [f for f in chains if f not in rules.conflicts[flag]]
        for i, first in enumerate(needed):
            for second in needed[i + 1 :]:
                if second in rules.conflicts[first]:
                    problems.append(
                        Problem(
                            f"{flag} can never be used: {say_chain(chains[first])} and {say_chain(chains[second])},"
                            f" and {first} conflicts with {second}",
                            field=flag,
                        )
                    )
    return problems


def _declarations(executable: Executable) -> list[Problem]:
    """Flags declared twice, rules naming unknown flags or the flag itself, values and choices that do not fit."""
    problems = []
    seen: set[str] = set()
    flags = {p.flag for p in executable.parameters}
    for p in executable.parameters:
        if p.flag in seen:
            problems.append(Problem(f"{p.flag} is declared twice", field=p.flag))
        seen.add(p.flag)
        for relation, named in (("requires", p.requires), ("conflicts with", p.conflicts)):
            for other in named:
                if other not in flags:
                    problems.append(
                        Problem(
                            f"{p.flag} {relation} {other}, which is no parameter of {executable.name}", field=p.flag
                        )
                    )
        if p.flag in p.conflicts:
            problems.append(Problem(f"{p.flag} conflicts with itself", field=p.flag))
        if p.flag in p.requires:
            problems.append(Problem(f"{p.flag} requires itself", field=p.flag))
        if p.positional and p.value is None:
            problems.append(Problem(f"the positional {p.flag} must say the type of its value", field=p.flag))
        if (p.value == "enum") != bool(p.choices):
            problems.append(Problem(f"{p.flag}: an enum, and only an enum, lists its choices", field=p.flag))
    return problems


def _cycles(rules: Rules) -> list[Problem]:
    """Each cycle of ``requires`` once, from the flag declared first in it."""
    problems = []
    seen: set[tuple[str, ...]] = set()
    for flag in rules.declared:
        for required, chain in rules.chains(flag).items():
            if flag in rules.requires[required]:
                cycle = (*chain, flag)
                start = min(range(len(cycle) - 1), key=lambda i: rules.declared[cycle[i]])
                key = tuple(sorted(cycle[:-1]))
                if key not in seen:
                    seen.add(key)
                    rotated = (*cycle[start:-1], *cycle[:start], cycle[start])
                    problems.append(Problem(f"a cycle of requirements: {say_chain(rotated)}", field=rotated[0]))
    return problems


def check_combination(executable: Executable, flags: Iterable[str]) -> tuple[tuple[str, ...], list[Problem]]:
    """The argv order of ``flags`` (see :func:`order`), or every reason they cannot be used together."""
    rules = Rules(executable)
    given = list(flags)
    problems = []
    counted: dict[str, int] = {}
    for flag in given:
        counted[flag] = counted.get(flag, 0) + 1
    for flag, count in counted.items():
        if flag not in rules.declared:
            problems.append(Problem(f"{flag} is no parameter of {executable.name}", field=flag))
        elif count > 1:
            problems.append(Problem(f"{flag} is given {count} times", field=flag))
    present = [flag for flag in sorted(counted, key=lambda f: rules.declared.get(f, -1)) if flag in rules.declared]
    missing: dict[str, tuple[str, ...]] = {}
    for flag in present:
        for required, chain in rules.chains(flag).items():
            if required not in counted and (required not in missing or len(chain) < len(missing[required])):
                missing[required] = chain
    for required, chain in sorted(missing.items(), key=lambda item: rules.declared[item[0]]):
        problems.append(Problem(f"{required} is missing: {say_chain(chain)}", field=required))
    for i, flag in enumerate(present):
        for other in present[i + 1 :]:
            if other in rules.conflicts[flag]:
                problems.append(Problem(f"{flag} conflicts with {other}", field=flag))
    ordered = order(rules, present) if not problems else ()
    if not problems and len(ordered) < len(present):
        stuck = ", ".join(flag for flag in present if flag not in ordered)
        problems.append(Problem(f"{stuck} cannot be ordered: their requirements form a cycle", field=present[0]))
    return (ordered, []) if not problems else ((), problems)


def order(rules: Rules, flags: Iterable[str]) -> tuple[str, ...]:
    """``flags`` with each after the flags it requires among them, ties in declared order (requirements must form
    no cycle, as :func:`check_rules` ensures)."""
    chosen = set(flags)
    waiting = {flag: {r for r in rules.requires[flag] if r in chosen} for flag in chosen}
    ready = [(rules.declared[flag], flag) for flag, needs in waiting.items() if not needs]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, flag = heapq.heappop(ready)
        ordered.append(flag)
        for other, needs in waiting.items():
            if flag in needs:
                needs.discard(flag)
                if not needs:
                    heapq.heappush(ready, (rules.declared[other], other))
    return tuple(ordered)


def value_problem(parameter: Parameter, value: Any) -> str | None:
    """Why ``value`` is no value of ``parameter``; None when it is one."""
    kind = parameter.value
    found = type_of(value)
    if kind is None:
        return f"{parameter.flag} takes no value"
    expected = {"string": "string", "path": "string", "ip": "string", "enum": "string", "port": "int"}.get(kind, kind)
    if found != expected and not (expected == "float" and found == "int"):
        return f"{parameter.flag} takes a {kind}, not {found} {value!r}"
    if kind == "port" and not 1 <= value <= 65535:
        return f"{parameter.flag} takes a port, from 1 to 65535, not {value}"
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return f"{parameter.flag} takes an IP address, not {value!r}"
    if kind == "enum" and value not in parameter.choices:
        return f"{parameter.flag} takes one of {', '.join(parameter.choices)}, not {value!r}"
    if isinstance(value, str) and "\0" in value:
        return f"{parameter.flag} takes no NUL character"
    return None


def argv(executable: Executable, target: CommandTarget, inputs: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The argv of a command service's call, without a shell: the executable's path, then each argument in
    :func:`order`, a flag followed by its value if it takes one, a positional as its value alone. Also what is
    wrong with the values, if anything is: then the argv is not to be run."""
    rules = Rules(executable)
    by_flag = {a.flag: a for a in target.arguments}
    args = [executable.path]
    problems = []
    for flag in order(rules, by_flag):
        parameter = executable.parameter(flag)
        argument = by_flag[flag]
        if parameter is None:
            problems.append(f"{flag} is no parameter of {executable.name}")
            continue
        value = inputs.get(argument.input) if argument.input is not None else argument.value
        if parameter.value is None:
            args.append(flag)
            continue
        wrong = value_problem(parameter, value)
        if wrong:
            problems.append(wrong)
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args += [text] if parameter.positional else [flag, text]
    return args, problems


def check_command(service: Service, executable: Executable) -> list[Problem]:
    """Every reason the command service ``service`` cannot run ``executable``: its combination of flags, its
    fixed values, the inputs giving the others, its standard input and its outputs."""
    target = service.endpoint
    assert isinstance(target, CommandTarget)
    _, problems = check_combination(executable, (a.flag for a in target.arguments))
    inputs = {f.name: f for f in service.inputs}
    for argument in target.arguments:
        parameter = executable.parameter(argument.flag)
        if parameter is not None:
            problems += _check_argument(argument, parameter, inputs)
    if target.stdin is not None:
        problems += _check_stdin(target.stdin, inputs)
    if target.stdout == "text":
        for f in service.outputs:
            problems += _check_output(f)
    for code in target.transient_exit_codes:
        if not 1 <= code <= 255:
            problems.append(
                Problem(f"a transient exit code is from 1 to 255, not {code}", field="transient_exit_codes")
            )
    return problems


def _check_argument(argument: Argument, parameter: Parameter, inputs: Mapping[str, Field]) -> list[Problem]:
    flag = argument.flag
    if parameter.value is None:
        if argument.value is not None or argument.input is not None:
            return [Problem(f"{flag} takes no value", field=flag)]
        return []
    if (argument.value is None) == (argument.input is None):
        return [Problem(f"{flag} takes a {parameter.value}: give either a fixed 'value' or an 'input'", field=flag)]
    if argument.input is None:
        wrong = value_problem(parameter, argument.value)
        return [Problem(wrong, field=flag)] if wrong else []
    f = inputs.get(argument.input)
    if f is None:
        return [Problem(f"{flag} takes the input '{argument.input}', which the service does not declare", field=flag)]
    expected = FieldType(FIELD_TYPES[parameter.value])
    if not accepts(expected, f.type) or f.type.name == "any":
        return [
            Problem(
                f"{flag} takes a {parameter.value}: input '{f.name}' should be {expected}, not {f.type}",
                field=flag,
                expected=str(expected),
                found=str(f.type),
            )
        ]
    if not f.always_present:
        return [Problem(f"{flag} needs a value on every call: input '{f.name}' should be required or have a default")]
    return []


def _check_stdin(name: str, inputs: Mapping[str, Field]) -> list[Problem]:
    f = inputs.get(name)
    if f is None:
        return [Problem(f"stdin takes the input '{name}', which the service does not declare", field="stdin")]
    if f.type.name != "string":
        return [Problem(f"stdin takes a string: input '{name}' is {f.type}", field="stdin", found=str(f.type))]
    return []


def _check_output(f: Field) -> list[Problem]:
    expected = COMMAND_OUTPUTS.get(f.name)
    if expected is None:
        known = ", ".join(COMMAND_OUTPUTS)
        return [Problem(f"a command's output '{f.name}' is none of {known} (or read stdout as JSON)", field=f.name)]
    if f.type.name != expected:
        return [Problem(f"output '{f.name}' is {expected}, not {f.type}", field=f.name, expected=expected)]
    return []
