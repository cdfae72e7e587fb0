"""The static check of graph workflows: routes, reachability and cycles, values on every path, and the fields of
each kind of step (switch and transform expressions, map items, delay times, wait outputs, fail and succeed).

A value counts as present at a step only if it is produced on every choice of routes under which the step runs.
"""

from __future__ import annotations

import pytest

from machinery.engine.errors import Problem
from tests.engine.builders import (
    check,
    const,
    delay,
    fail,
    fld,
    from_context,
    from_input,
    from_step,
    graph,
    map_step,
    registry,
    service,
    step,
    succeed,
    switch,
    transform,
    wait,
)

SERVICES = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("echo", ["message:string"], ["message:string"]),
    service("count", ["message:string"], ["n:int"]),
    service("count-as-text", ["message:string"], ["n:string"]),
    service("double", ["n:int"], ["n:int"]),
    service("pad", ["message:string", "width:int"], ["message:string"]),
    service("square", ["n:int", "base:int"], ["square:int"]),
    service("approve", ["approved:bool"], ["approved_by:string"]),
)
MESSAGE = ["message:string"]


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [p.message for p in problems]
    return problems[0]


def messages(problems: list[Problem]) -> list[str]:
    return [p.message for p in problems]


def either(expression: str = "input.message == 'a'", yes: str = "count", no: str = "upper", **options):
    """A switch ``s`` routing to ``yes`` when the expression is true, else to ``no``."""
    return switch("s", expression, {"true": [yes], "false": [no]}, **options)


# Routes and structure


def test_a_route_to_an_unknown_step_is_a_problem_naming_the_switch():
    workflow = graph(
        [switch("s", "input.message", {"a": ["upper", "ghost"]}, default=["nope"]), step("upper")], MESSAGE
    )
    assert [(p.step, p.message) for p in check(workflow, SERVICES)] == [
        ("s", "route 'a' of step 's' leads to 'ghost', but there is no step 'ghost'"),
        ("s", "route 'default' of step 's' leads to 'nope', but there is no step 'nope'"),
    ]


def test_a_timeout_route_to_an_unknown_step_is_a_problem_naming_the_wait():
    workflow = graph([wait("w", "go", timeout=5, on_timeout=["ghost"])])
    problem = only(check(workflow, SERVICES))
    assert problem.step == "w"
    assert problem.message == "route 'timeout' of step 'w' leads to 'ghost', but there is no step 'ghost'"


def test_a_route_to_the_switch_itself_is_a_problem():
    problem = only(check(graph([switch("s", "1", {"1": ["s"]})]), SERVICES))
    assert problem.message == "route '1' of step 's' leads to 's': a step cannot run after itself"


@pytest.mark.parametrize("end", [fail("end", "no"), succeed("end", "yes")], ids=["fail", "succeed"])
def test_a_step_after_a_fail_or_succeed_step_is_reported_as_never_running(end):
    workflow = graph([step("count"), end, step("upper", after=["end"])], MESSAGE)
    problem = only(check(workflow, SERVICES))
    assert problem.step == "upper"
    assert problem.message == "step 'upper' runs after 'end', but 'end' ends the event, so 'upper' can never run"


def test_a_step_after_a_switch_on_none_of_its_routes_is_a_problem_and_never_runs():
    workflow = graph(
        [switch("s", "input.message", {"a": ["upper"]}), step("upper"), step("echo", after=["s"])], MESSAGE
    )
    assert [(p.step, p.message) for p in check(workflow, SERVICES)] == [
        (
            "echo",
            "step 'echo' runs after switch 's' but is on none of its routes; name it in a case or in 'default'",
        ),
        ("echo", "step 'echo' can never run: no choice of routes leads to it"),
    ]


def test_the_steps_that_run_only_after_an_unreachable_step_are_unreachable_too():
    workflow = graph(
        [
            switch("s", "input.message", {"a": ["upper"]}),
            step("upper"),
            step("echo", after=["s"]),
            step("count", after=["echo"]),
        ],
        MESSAGE,
    )
    unreachable = [p.step for p in check(workflow, SERVICES) if "can never run" in p.message]
    assert unreachable == ["echo", "count"]


def test_a_join_after_two_routes_is_reachable():
    workflow = graph([either(), step("count"), step("upper"), step("echo", after=["count", "upper"])], MESSAGE)
    assert check(workflow, SERVICES) == []


def test_a_cycle_through_a_route_is_refused():
    workflow = graph(
        [switch("s", "1", {"1": ["upper"]}, after=["echo"]), step("upper"), step("echo", after=["upper"])], MESSAGE
    )
    problem = only(check(workflow, SERVICES))
    assert problem.message == "steps 's', 'upper', 'echo' depend on each other in a cycle"


def test_a_cycle_through_a_timeout_route_is_refused():
    workflow = graph([wait("w", "go", timeout=5, on_timeout=["upper"], after=["upper"]), step("upper")], MESSAGE)
    assert "cycle" in only(check(workflow, SERVICES)).message


def test_routes_that_combine_in_too_many_ways_are_refused():
    steps = []
    for i in range(13):  # 2 ** 13 = 8192 choices of routes
        steps += [switch(f"s{i}", "true", {"true": [f"a{i}"], "false": [f"b{i}"]}), fail(f"a{i}"), fail(f"b{i}")]
    problems = check(graph(steps), SERVICES)
    assert messages(problems) == ["the routes of this workflow combine in more than 4096 ways; split it in two"]


# Values on every path


def test_a_value_written_on_one_route_only_may_be_absent_at_a_join():
    workflow = graph([either(), step("count"), step("upper"), step("double", after=["count", "upper"])], MESSAGE)
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == (
        "double",
        "n",
        "int",
        "a value that may be absent",
    )
    assert problem.message == (
        "step 'double' input 'n' is required, but output 'n' of step 'count' may be absent "
        "(an optional field, or a step on a route not taken)"
    )


def test_a_value_written_on_every_route_is_present_at_a_join():
    workflow = graph(
        [
            either(no="also-count"),
            step("count"),
            step("also-count", "count"),
            step("double", after=["count", "also-count"]),
        ],
        MESSAGE,
        outputs=["n:int"],
    )
    assert check(workflow, SERVICES) == []


def test_a_workflow_output_written_on_one_route_only_may_be_absent():
    workflow = graph([either(), step("count"), step("upper")], MESSAGE, outputs=["n:int"])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.found) == (None, "n", "a value that may be absent")


def test_a_route_that_fails_the_event_need_not_produce_the_workflow_outputs():
    workflow = graph([either(no="stop"), step("count"), fail("stop", "no")], MESSAGE, outputs=["n:int"])
    assert check(workflow, SERVICES) == []


def test_a_step_reference_to_a_step_on_a_route_that_may_not_be_taken_is_reported():
    workflow = graph(
        [
            either(),
            step("count"),
            step("upper"),
            step("double", after=["count", "upper"], input={"n": from_step("count", "n")}),
        ],
        MESSAGE,
    )
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("double", "n")
    assert "output 'n' of step 'count' may be absent" in problem.message


def test_a_step_reference_to_a_step_on_the_same_route_is_fine():
    workflow = graph(
        [either(), step("count"), step("upper"), step("double", after=["count"], input={"n": from_step("count", "n")})],
        MESSAGE,
    )
    assert check(workflow, SERVICES) == []


def test_a_value_written_on_a_route_has_its_type_checked_at_the_join():
    workflow = graph(
        [
            either(no="as-text"),
            step("count"),
            step("as-text", "count-as-text"),
            step("double", after=["count", "as-text"]),
        ],
        MESSAGE,
    )
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("double", "n", "int", "string")
    assert "output 'n' of step 'as-text' is string" in problem.message


# Parallel writes


def test_two_steps_that_can_run_at_once_writing_the_same_name_is_a_problem():
    workflow = graph([step("count"), step("again", "count")], MESSAGE)
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("again", "n")
    assert problem.message.startswith("steps 'count' and 'again' may run at the same time and both write 'n'")


def test_two_steps_on_exclusive_routes_may_write_the_same_name():
    workflow = graph([either(no="again"), step("count"), step("again", "count")], MESSAGE, outputs=["n:int"])
    assert check(workflow, SERVICES) == []


def test_the_signal_and_the_timeout_routes_of_a_wait_may_write_the_same_name():
    workflow = graph(
        [
            wait("w", "go", timeout=5, on_timeout=["late"]),
            step("count", after=["w"]),
            step("late", "count"),
        ],
        MESSAGE,
        outputs=["n:int"],
    )
    assert check(workflow, SERVICES) == []


def test_a_transform_and_a_service_running_at_once_writing_the_same_name_is_a_problem():
    workflow = graph([transform("t", {"n": "1"}, ["n:int"]), step("count")], MESSAGE)
    assert only(check(workflow, SERVICES)).field == "n"


# Expressions


@pytest.mark.parametrize(
    "steps",
    [
        [switch("s", "input.message +", {"x": ["upper"]}, default=["upper"]), step("upper")],
        [transform("s", {"expression": "1 +"}, ["expression:any"])],
    ],
    ids=["switch", "transform"],
)
def test_an_expression_that_does_not_compile_is_refused_naming_the_step_and_the_field(steps):
    problem = only(check(graph(steps, MESSAGE), SERVICES))
    assert (problem.step, problem.field) == ("s", "expression")
    assert problem.message.startswith("step 's': the expression for 'expression' does not compile: ")


@pytest.mark.parametrize("source", ["os.environ", "os", "globals", "data.secret", "context.a + env.HOME"])
def test_an_expression_that_reads_a_name_other_than_input_context_and_steps_is_refused(source):
    workflow = graph([transform("t", {"v": source}, ["v:any"])], MESSAGE)
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("t", "v")
    assert problem.message.endswith("; expressions read only input, context and steps")
    assert problem.message.startswith("step 't': the expression for 'v' reads '")


def test_a_switch_expression_that_reads_another_name_is_refused_naming_the_switch():
    workflow = graph([switch("s", "os.environ", {"x": ["upper"]}), step("upper")], MESSAGE)
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("s", "expression")
    assert problem.message == (
        "step 's': the expression for 'expression' reads 'os'; expressions read only input, context and steps"
    )


@pytest.mark.parametrize("source", ["__import__('os')", "exec('x')", "open('/etc/passwd')"])
def test_an_expression_that_calls_a_function_the_language_does_not_have_is_refused(source):
    workflow = graph([transform("t", {"v": source}, ["v:any"])], MESSAGE)
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("t", "v")


@pytest.mark.parametrize(
    "source",
    ["input.message", "context.message + '!'", "steps.count.n * 2", "size(input.message) > 2 ? 'long' : 'short'"],
)
def test_an_expression_over_input_context_and_steps_is_fine(source):
    workflow = graph([step("count"), transform("t", {"v": source}, ["v:any"], after=["count"])], MESSAGE)
    assert check(workflow, SERVICES) == []


@pytest.mark.parametrize(
    "source", ["input.list.map(x, x * 2)", "input.list.all(x, x > 0)", "input.list.exists(i, i == 1)"]
)
def test_an_expression_with_a_macro_over_a_list_is_fine(source):
    workflow = graph([transform("t", {"v": source}, ["v:any"])], inputs=["list:array<int>"])
    assert check(workflow, SERVICES) == []


# Transforms


def test_a_transform_output_without_an_expression_is_a_problem():
    workflow = graph([transform("t", {"a": "1"}, ["a:int", "b:int"])])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("t", "b")
    assert problem.message == "transform 't' declares output 'b' but no expression for it"


def test_a_transform_output_without_an_expression_but_with_a_default_is_fine():
    assert check(graph([transform("t", {"a": "1"}, ["a:int", fld("b:int", default=2)])]), SERVICES) == []


def test_an_expression_for_an_undeclared_transform_output_is_a_problem():
    workflow = graph([transform("t", {"a": "1", "c": "2"}, ["a:int"])])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("t", "c")
    assert problem.message == "transform 't' computes 'c', which is not among its outputs"


def test_transform_outputs_are_typed_into_the_context_downstream():
    workflow = graph([transform("t", {"n": "'3'"}, ["n:string"]), step("double", after=["t"])])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("double", "n", "int", "string")
    assert problem.message == "step 'double' input 'n' expects int, but output 'n' of step 't' is string"


def test_a_renamed_transform_output_is_typed_under_its_new_name():
    workflow = graph(
        [transform("t", {"w": "3"}, ["w:int"], output={"w": "width"}), step("pad", after=["t"])],
        MESSAGE,
        outputs=["width:int"],
    )
    assert check(workflow, SERVICES) == []


# Map steps


def mapped(items, item: str = "n", inputs=("ns:array<int>",), **options):
    return graph([map_step("m", "square", items, item, input={"base": const(2)}, **options)], inputs=list(inputs))


def test_a_map_over_an_array_of_the_items_the_service_takes_is_fine():
    workflow = mapped(from_input("ns"))
    assert check(workflow, SERVICES) == []


def test_a_map_whose_item_input_the_service_does_not_take_is_a_problem():
    problems = check(mapped(from_input("ns"), item="k"), SERVICES)
    problem = next(p for p in problems if p.field == "item")
    assert problem.step == "m"
    assert problem.message == "map step 'm' passes each item as 'k', which service 'square' does not take"


@pytest.mark.parametrize(("declared", "found"), [("int", "int"), ("object", "object"), ("string", "string")])
def test_map_items_that_are_not_an_array_are_a_problem(declared, found):
    problem = only(check(mapped(from_input("ns"), inputs=[f"ns:{declared}"]), SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("m", "items", "array<int>", found)
    assert problem.message == f"map step 'm' items expects array<int>, but workflow input 'ns' is {found}"


def test_map_items_of_the_wrong_item_type_are_a_problem():
    problem = only(check(mapped(from_input("ns"), inputs=["ns:array<string>"]), SERVICES))
    assert (problem.field, problem.expected, problem.found) == ("items", "array<int>", "array<string>")


def test_map_items_in_an_array_without_item_type_are_left_to_the_run_time_check():
    assert check(mapped(from_input("ns"), inputs=["ns:array"]), SERVICES) == []


def test_map_items_given_as_a_constant_are_checked_item_by_item():
    problem = only(check(mapped(const([1, "x"]), inputs=[]), SERVICES))
    assert (problem.field, problem.expected) == ("items", "array<int>")
    assert "item 1 is string 'x'" in problem.message


def test_map_items_nothing_provides_are_a_problem():
    problem = only(check(mapped(from_context("ns"), inputs=[]), SERVICES))
    assert problem.message == "map step 'm' items needs an array<int>, but nothing before it provides 'ns'"


def test_the_other_inputs_of_a_mapped_service_are_checked():
    workflow = graph([map_step("m", "square", from_input("ns"), "n")], inputs=["ns:array<int>"])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("m", "base")


def test_map_results_are_typed_as_an_array_of_objects_under_their_rename():
    workflow = mapped(from_input("ns"), output={"results": "squares"})
    ok = graph(workflow.steps, inputs=["ns:array<int>"], outputs=["squares:array<object>"])
    assert check(ok, SERVICES) == []
    wrong = graph(workflow.steps, inputs=["ns:array<int>"], outputs=["squares:array<int>"])
    problem = only(check(wrong, SERVICES))
    assert (problem.field, problem.expected, problem.found) == ("squares", "array<int>", "array<object>")


def test_renaming_an_output_a_map_does_not_produce_is_a_problem():
    problem = only(check(mapped(from_input("ns"), output={"square": "sq"}), SERVICES))
    assert (problem.step, problem.field) == ("m", "square")
    assert problem.message == "step 'm' renames output 'square', which it does not produce"


def test_a_map_over_an_unregistered_service_is_a_problem():
    workflow = graph([map_step("m", "cube", from_input("ns"), "n")], inputs=["ns:array<int>"])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.found) == ("m", "service", "cube")


# Delays


@pytest.mark.parametrize("declared", ["string", "int", "float", "any"])
def test_a_delay_until_a_string_or_a_number_is_fine(declared):
    assert check(graph([delay("d", until=from_input("at"))], inputs=[f"at:{declared}"]), SERVICES) == []


@pytest.mark.parametrize("declared", ["bool", "object", "array"])
def test_a_delay_until_a_value_of_another_type_is_a_problem(declared):
    problem = only(check(graph([delay("d", until=from_input("at"))], inputs=[f"at:{declared}"]), SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == (
        "d",
        "until",
        "float or int or string",
        declared,
    )
    assert problem.message == f"delay 'd' until expects float or int or string, but workflow input 'at' is {declared}"


@pytest.mark.parametrize("value", ["2030-01-01T00:00:00Z", 1893456000, 1.5])
def test_a_delay_until_a_constant_time_is_fine(value):
    assert check(graph([delay("d", until=const(value))]), SERVICES) == []


def test_a_delay_until_a_constant_of_another_type_is_a_problem():
    problem = only(check(graph([delay("d", until=const(True))]), SERVICES))
    assert (problem.step, problem.field, problem.found) == ("d", "until", "bool")


def test_a_delay_until_a_constant_of_another_type_says_what_it_expects():
    problem = only(check(graph([delay("d", until=const(True))]), SERVICES))
    assert problem.expected == "float or int or string"
    assert "expects float or int or string" in problem.message


def test_a_delay_until_a_value_nothing_provides_is_a_problem():
    problem = only(check(graph([delay("d", until=from_context("at"))]), SERVICES))
    assert problem.message.endswith("but nothing before it provides 'at'")


# Waits


def test_wait_outputs_are_typed_into_the_context_downstream():
    ok = graph([wait("w", "go", ["approved:bool"]), step("approve", after=["w"])])
    assert check(ok, SERVICES) == []
    wrong = graph([wait("w", "go", ["approved:string"]), step("approve", after=["w"])])
    problem = only(check(wrong, SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("approve", "approved", "bool", "string")
    assert (
        problem.message == "step 'approve' input 'approved' expects bool, but output 'approved' of step 'w' is string"
    )


def test_an_optional_wait_output_may_be_absent_downstream():
    workflow = graph([wait("w", "go", [fld("approved:bool", required=False)]), step("approve", after=["w"])])
    assert only(check(workflow, SERVICES)).found == "a value that may be absent"


def test_a_renamed_wait_output_is_typed_under_its_new_name():
    workflow = graph(
        [
            wait("w", "go", ["ok:bool"], output={"ok": "approved"}),
            step("approve", after=["w"], input={"approved": from_context("approved")}),
        ]
    )
    assert check(workflow, SERVICES) == []


def test_wait_outputs_are_absent_on_its_timeout_route():
    workflow = graph([wait("w", "go", ["approved:bool"], timeout=5, on_timeout=["approve"]), step("approve")])
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field) == ("approve", "approved")


def signal_or_timeout(late):
    """``w`` waits for ``go``; on the signal ``echo`` runs, on the timeout ``late``; ``approve`` joins them."""
    return graph(
        [
            wait("w", "go", ["approved:bool"], timeout=5, on_timeout=["late"]),
            step("echo", after=["w"]),
            late,
            step("approve", after=["echo", "late"]),
        ],
        MESSAGE,
    )


def test_a_value_given_on_both_the_signal_and_the_timeout_route_is_present_after_them():
    workflow = signal_or_timeout(transform("late", {"approved": "false"}, ["approved:bool"]))
    assert check(workflow, SERVICES) == []


def test_a_value_the_timeout_route_does_not_give_is_type_checked_after_the_join():
    workflow = signal_or_timeout(transform("late", {"approved": "'no'"}, ["approved:string"]))
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("approve", "approved", "bool", "string")
    assert "output 'approved' of step 'late' is string" in problem.message


# Fail and succeed


def test_the_workflow_outputs_are_checked_where_a_succeed_step_ends_the_event():
    workflow = graph([either(yes="done", no="count"), succeed("done"), step("count")], MESSAGE, outputs=["n:int"])
    problems = check(workflow, SERVICES)
    assert problems[0].message == "at step 'done', workflow output 'n' needs an int, but nothing before it provides 'n'"
    assert problems[0].field == "n"


def test_a_succeed_step_after_the_outputs_are_produced_is_fine():
    workflow = graph(
        [step("count"), either("steps.count.n > 1", yes="done", no="double", after=["count"])]
        + [succeed("done"), step("double")],
        MESSAGE,
        outputs=["n:int"],
    )
    assert check(workflow, SERVICES) == []


# The seed's operations: copy a field before or after a service


def test_copying_a_field_before_a_service_with_a_transform_type_checks():
    workflow = graph(
        [transform("keep", {"original": "input.message"}, ["original:string"]), step("upper", after=["keep"])],
        MESSAGE,
        outputs=["message:string", "original:string"],
    )
    assert check(workflow, SERVICES) == []


def test_copying_a_field_with_input_and_output_mappings_type_checks():
    workflow = graph(
        [
            step("upper", output={"message": "shout"}),
            step("pad", after=["upper"], input={"message": from_context("shout"), "width": from_input("width")}),
        ],
        ["message:string", "width:int"],
        outputs=["message:string", "shout:string"],
    )
    assert check(workflow, SERVICES) == []


def test_a_copy_into_a_field_of_the_wrong_type_is_reported():
    workflow = graph(
        [step("upper"), transform("copy", {"loud": "context.message"}, ["loud:string"], after=["upper"])]
        + [step("pad", after=["copy"], input={"width": from_context("loud")})],
        MESSAGE,
    )
    problem = only(check(workflow, SERVICES))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("pad", "width", "int", "string")
    assert problem.message == "step 'pad' input 'width' expects int, but output 'loud' of step 'copy' is string"


def test_a_steps_output_cannot_be_searchable():
    workflow = graph([transform("t", {"n": "1"}, [fld("n:int", searchable=True)])], MESSAGE)
    problems = check(workflow, registry())
    assert [(p.step, p.field, p.message) for p in problems] == [
        ("t", "n", "step 't' output 'n' cannot be searchable: only a workflow's inputs are")
    ]
