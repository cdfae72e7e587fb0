"""The flag matching engine: each refusal of a rule set, each refusal of a combination, and the argv order."""

from __future__ import annotations

from machinery.engine.flags import argv, check_combination, check_rules
from machinery.engine.model import Argument, CommandTarget, Executable, Parameter


def exe(*parameters: Parameter) -> Executable:
    return Executable("tool", "/usr/bin/tool", parameters=parameters)


def p(
    flag: str, requires: tuple[str, ...] = (), conflicts: tuple[str, ...] = (), value: str | None = None
) -> Parameter:
    return Parameter(flag, requires=requires, conflicts=conflicts, value=value)


def messages(problems: list) -> list[str]:
    return [problem.message for problem in problems]


def test_sound_rules_are_accepted() -> None:
    assert (
        check_rules(
            exe(p("-o", ("--format",)), p("--format", ("--input",)), p("--input"), p("-q", (), ("-v",)), p("-v"))
        )
        == []
    )


def test_a_cycle_of_requirements_is_refused_with_its_path() -> None:
    found = messages(check_rules(exe(p("-a", ("-b",)), p("-b", ("-c",)), p("-c", ("-a",)))))
    assert found == ["a cycle of requirements: -a requires -b, which requires -c, which requires -a"]


def test_a_flag_conflicting_with_itself_is_refused() -> None:
    assert messages(check_rules(exe(p("-a", (), ("-a",))))) == ["-a conflicts with itself"]


def test_a_rule_naming_an_unknown_flag_is_refused() -> None:
    found = messages(check_rules(exe(p("-a", ("-z",), ("--nope",)))))
    assert found == [
        "-a requires -z, which is no parameter of tool",
        "-a conflicts with --nope, which is no parameter of tool",
    ]


def test_a_flag_requiring_what_it_conflicts_with_is_a_contradiction() -> None:
    found = messages(check_rules(exe(p("-a", ("-b",)), p("-b", ("-c",)), p("-c", (), ("-a",)))))
    assert found == ["-a contradicts itself: -a requires -b, which requires -c, and -a conflicts with -c"]


def test_a_flag_whose_requirements_conflict_with_each_other_can_never_be_used() -> None:
    found = messages(check_rules(exe(p("-a", ("-b", "-c")), p("-b"), p("-c", ("-d",)), p("-d", (), ("-b",)))))
    assert found == [
        "-a can never be used: -a requires -b and -a requires -c, which requires -d, and -b conflicts with -d"
    ]


def test_every_problem_is_reported_at_once() -> None:
    found = check_rules(exe(p("-a", ("-a", "-x"), ("-a",)), p("-b", ("-c",)), p("-c", ("-b",))))
    assert len(found) == 4
    assert {problem.field for problem in found} == {"-a", "-b"}


def test_a_missing_requirement_is_named_with_its_shortest_chain() -> None:
    tool = exe(p("-o", ("--format",)), p("--format", ("--input",)), p("--input"))
    _, problems = check_combination(tool, ["-o", "--format"])
    assert messages(problems) == ["--input is missing: --format requires --input"]


def test_missing_requirements_are_never_added() -> None:
    tool = exe(p("-o", ("--format",)), p("--format", ("--input",)), p("--input"))
    order, problems = check_combination(tool, ["-o"])
    assert order == ()
    assert messages(problems) == [
        "--format is missing: -o requires --format",
        "--input is missing: -o requires --format, which requires --input",
    ]


def test_a_conflicting_pair_is_refused() -> None:
    _, problems = check_combination(exe(p("-q", (), ("-v",)), p("-v")), ["-v", "-q"])
    assert messages(problems) == ["-q conflicts with -v"]


def test_unknown_and_repeated_flags_are_refused() -> None:
    _, problems = check_combination(exe(p("-q")), ["-q", "-q", "-z"])
    assert messages(problems) == ["-q is given 2 times", "-z is no parameter of tool"]


def test_requirements_come_before_the_flags_needing_them_ties_in_declared_order() -> None:
    tool = exe(p("-o", ("--format",)), p("-v"), p("--format", ("--input",)), p("--input"), p("-q"))
    order, problems = check_combination(tool, ["-q", "-o", "--input", "--format", "-v"])
    assert problems == []
    assert order == ("-v", "--input", "--format", "-o", "-q")


def test_argv_puts_values_after_their_flags_and_positionals_alone() -> None:
    tool = exe(Parameter("-k", value="int"), Parameter("-r"), Parameter("file", value="path"))
    target = CommandTarget("tool", (Argument("file", input="where"), Argument("-r"), Argument("-k", value=2)))
    assert argv(tool, target, {"where": "/tmp/x"}) == (["/usr/bin/tool", "-k", "2", "-r", "/tmp/x"], [])


def test_argv_refuses_values_outside_their_type() -> None:
    tool = exe(
        Parameter("--port", value="port"),
        Parameter("--ip", value="ip"),
        Parameter("--mode", value="enum", choices=("a", "b")),
    )
    target = CommandTarget(
        "tool", (Argument("--port", input="port"), Argument("--ip", input="ip"), Argument("--mode", input="mode"))
    )
    _, problems = argv(tool, target, {"port": 70000, "ip": "nowhere", "mode": "c"})
    assert problems == [
        "--port takes a port, from 1 to 65535, not 70000",
        "--ip takes an IP address, not 'nowhere'",
        "--mode takes one of a, b, not 'c'",
    ]
