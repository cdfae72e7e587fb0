"""The static check of a workflow: its graph holds together and its types fit, every problem listed at once."""

from __future__ import annotations

import pytest

from machinery.engine.checker import check_service, check_workflow
from machinery.engine.errors import InvalidDefinition, Problem
from machinery.engine.plan import Plan
from tests.engine.builders import (
    EXPRESSIONS,
    chain,
    const,
    corrected_seed_services,
    fld,
    from_context,
    from_input,
    from_step,
    graph,
    registry,
    seed_services,
    seed_workflow,
    service,
    step,
)


def where(problems: list[Problem]) -> set[tuple[str | None, str | None]]:
    """(step, field) of each problem: what a test can compare at once."""
    return {(p.step, p.field) for p in problems}


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [p.message for p in problems]
    return problems[0]


# Services shared by the tests below, by what they take and give.
TEXT = registry(
    service("upper", ["message:string"], ["message:string"]),
    service("echo", ["message:string"], ["message:string"]),
    service("count", ["message:string"], ["n:int"]),
    service("count-as-text", ["message:string"], ["n:string"]),
    service("measure", ["message:string"], ["n:float"]),
    service("double", ["n:int"], ["n:int"]),
    service("scale", ["n:float"], ["n:float"]),
    service("pad", ["message:string", "width:int"], ["message:string"]),
    service("tag", ["message:string", fld("tag:string", required=False)], ["message:string"]),
    service("profile", ["message:string"], ["info:object", "words:array<string>"]),
    service("sum", ["values:array<int>"], ["n:int"]),
)


# The seed's example


def test_the_seed_workflow_is_rejected_with_one_problem_naming_space_count():
    problem = only(check_workflow(seed_workflow(), seed_services(), EXPRESSIONS))
    assert problem.field == "space_count"
    assert problem.expected == "int"
    assert problem.step is None
    assert problem.message == "workflow output 'space_count' needs an int, but nothing before it provides 'space_count'"


def test_the_corrected_seed_workflow_has_no_problems():
    assert check_workflow(seed_workflow(), corrected_seed_services(), EXPRESSIONS) == []


# Linear chains


def test_a_missing_input_names_the_step_the_field_and_the_expected_type():
    workflow = chain(["upper", "pad"], inputs=["message:string"], outputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected) == ("pad", "width", "int")
    assert problem.message.startswith("step 'pad' input 'width' needs a")
    assert problem.message.endswith(" int, but nothing before it provides 'width'")


def test_a_type_mismatch_names_expected_and_found_and_where_the_value_came_from():
    workflow = chain(["count-as-text", "double"], inputs=["message:string"], outputs=["n:int"])
    problems = check_workflow(workflow, TEXT, EXPRESSIONS)
    mismatch = next(p for p in problems if p.step == "double")
    assert (mismatch.field, mismatch.expected, mismatch.found) == ("n", "int", "string")
    assert mismatch.message == "step 'double' input 'n' expects int, but output 'n' of step 'count-as-text' is string"


def test_a_workflow_input_of_the_wrong_type_is_named_as_the_source():
    workflow = chain(["double"], inputs=["n:string"], outputs=["n:int"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("double", "n", "int", "string")
    assert "workflow input 'n'" in problem.message


def test_an_int_output_may_feed_a_float_input():
    workflow = chain(["count", "scale"], inputs=["message:string"], outputs=["n:float"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_float_output_may_not_feed_an_int_input():
    workflow = chain(["measure", "double"], inputs=["message:string"], outputs=["n:int"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("double", "n", "int", "float")
    assert "output 'n' of step 'measure' is float" in problem.message


def test_an_array_of_strings_may_not_feed_an_array_of_ints():
    workflow = chain(["sum"], inputs=["values:array<string>"], outputs=["n:int"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.field, problem.expected, problem.found) == ("values", "array<int>", "array<string>")


def test_a_float_output_feeding_an_int_input_is_reported_at_the_step():
    workflow = chain(["measure", "double"], inputs=["message:string"], outputs=["n:float"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("double", "n", "int", "float")
    assert problem.message == "step 'double' input 'n' expects int, but output 'n' of step 'measure' is float"


def test_a_name_a_later_step_overwrites_is_typed_by_the_later_step():
    # count-as-text writes n as a string, then count overwrites it with an int: double and the output read the int.
    workflow = chain(["count-as-text", "count", "double"], inputs=["message:string"], outputs=["n:int"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_workflow_output_of_the_wrong_type_is_a_problem():
    workflow = chain(["count"], inputs=["message:string"], outputs=["n:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected, problem.found) == (None, "n", "string", "int")
    assert problem.message == "workflow output 'n' expects string, but output 'n' of step 'count' is int"


def test_a_later_step_may_overwrite_a_name_an_earlier_step_wrote():
    workflow = chain(["upper", "echo", "upper"], inputs=["message:string"], outputs=["message:string"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


# Optional fields and defaults


def test_an_optional_service_input_without_default_may_be_left_unprovided():
    workflow = chain(["tag"], inputs=["message:string"], outputs=["message:string"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_an_optional_workflow_input_without_default_cannot_feed_a_required_service_input():
    workflow = chain(["pad"], inputs=["message:string", fld("width:int", required=False)], outputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected, problem.found) == (
        "pad",
        "width",
        "int",
        "a value that may be absent",
    )
    assert problem.message.startswith("step 'pad' input 'width' is required, but workflow input 'width' may be absent")


def test_an_optional_workflow_input_with_a_default_may_feed_a_required_service_input():
    width = fld("width:int", required=False, default=8)
    workflow = chain(["pad"], inputs=["message:string", width], outputs=["message:string"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_an_optional_workflow_input_may_feed_an_optional_service_input():
    workflow = chain(["tag"], inputs=["message:string", fld("tag:string", required=False)], outputs=["message:string"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_an_optional_service_output_cannot_fill_a_required_workflow_output():
    services = registry(service("maybe", ["message:string"], [fld("note:string", required=False)]))
    workflow = chain(["maybe"], inputs=["message:string"], outputs=["note:string"])
    problem = only(check_workflow(workflow, services, EXPRESSIONS))
    assert (problem.step, problem.field) == (None, "note")
    assert problem.message.startswith(
        "workflow output 'note' is required, but output 'note' of step 'maybe' may be absent"
    )


def test_a_default_that_does_not_fit_its_type_is_a_problem():
    workflow = chain(["pad"], inputs=["message:string", fld("width:int", default="8")], outputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.field, problem.expected, problem.found) == ("width", "int", "string")
    assert problem.message == "the default of workflow input 'width' should be int, not string"


def test_a_field_declared_twice_is_a_problem():
    workflow = chain(["upper"], inputs=["message:string", "message:string"], outputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert problem.message == "workflow input 'message' is declared twice"


def test_check_service_reports_duplicate_fields_and_bad_defaults():
    broken = service("broken", ["a:int", "a:int"], [fld("b:bool", default=0)])
    assert [p.message for p in check_service(broken)] == [
        "input 'a' is declared twice",
        "the default of output 'b' should be bool, not int",
    ]


# Services and structure


def test_an_unregistered_service_is_a_problem_naming_the_step_and_the_service():
    workflow = chain(["upper", "shout"], inputs=["message:string"], outputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.found) == ("shout", "service", "shout")
    assert problem.message == "step 'shout' calls service 'shout', which is not registered"


def test_a_workflow_without_steps_is_a_problem():
    problems = check_workflow(graph([], outputs=[]), TEXT, EXPRESSIONS)
    assert [p.message for p in problems] == ["a workflow needs at least one step"]


def test_a_step_id_used_twice_is_a_problem():
    workflow = graph([step("a", "upper"), step("a", "echo")], inputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert problem.step == "a"
    assert problem.message == "step id 'a' is used twice"


def test_after_naming_an_unknown_step_is_a_problem():
    workflow = graph([step("upper"), step("echo", after=["uper"])], inputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert problem.step == "echo"
    assert problem.message == "step 'echo' runs after 'uper', but there is no step 'uper'"


def test_a_step_cannot_run_after_itself():
    workflow = graph([step("upper", after=["upper"])], inputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert problem.step == "upper"
    assert problem.message == "step 'upper' runs after 'upper': a step cannot run after itself"


def test_a_cycle_is_refused():
    workflow = graph(
        [step("upper"), step("echo", after=["upper", "count"]), step("count", after=["echo"])],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert "cycle" in problem.message
    assert "'echo'" in problem.message
    assert "'count'" in problem.message
    assert "'upper'" not in problem.message


def test_a_cycle_is_reported_without_the_steps_that_merely_run_after_it():
    workflow = graph(
        [step("echo", after=["count"]), step("count", after=["echo"]), step("upper", after=["count"])],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert "'echo'" in problem.message
    assert "'count'" in problem.message
    assert "'upper'" not in problem.message


def test_a_cycle_cannot_be_planned_for_running():
    workflow = graph([step("echo", after=["upper"]), step("upper", after=["echo"])], inputs=["message:string"])
    with pytest.raises(InvalidDefinition, match="cycle"):
        Plan.of(workflow, EXPRESSIONS)


# The graph form: explicit references


def test_an_input_reference_reads_a_declared_workflow_input():
    workflow = graph(
        [step("upper", input={"message": from_input("text")})], inputs=["text:string"], outputs=["message:string"]
    )
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_an_input_reference_to_an_undeclared_workflow_input_is_a_problem():
    workflow = graph(
        [step("upper", input={"message": from_input("txt")})], inputs=["text:string"], outputs=["message:string"]
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected) == ("upper", "message", "string")
    assert "$.input.txt is no workflow input" in problem.message


def test_an_input_reference_to_an_optional_workflow_input_cannot_feed_a_required_service_input():
    workflow = graph([step("double", input={"n": from_input("n")})], inputs=[fld("n:int", required=False)])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.found) == ("double", "n", "a value that may be absent")
    assert "workflow input 'n' may be absent" in problem.message


def test_an_input_reference_of_the_wrong_type_is_a_problem():
    workflow = graph([step("double", input={"n": from_input("n")})], inputs=["n:float"], outputs=["n:int"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected, problem.found) == ("double", "n", "int", "float")


def test_a_context_reference_sees_only_what_upstream_steps_wrote():
    # count writes n, but pad does not run after it.
    workflow = graph(
        [step("count"), step("pad", input={"width": from_context("n")}, output={"message": "padded"})],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected) == ("pad", "width", "int")
    assert problem.message.startswith("step 'pad' input 'width' needs a")
    assert problem.message.endswith(" int, but nothing before it provides 'n'")


def test_a_step_reference_to_an_upstream_step_is_fine():
    workflow = graph(
        [
            step("count"),
            step("upper", after=["count"]),
            step("double", after=["upper"], input={"n": from_step("count", "n")}),
        ],
        inputs=["message:string"],
        outputs=["n:int"],
    )
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_step_reference_to_a_step_upstream_on_only_one_path_is_a_problem():
    # count and upper both run after echo; double runs after upper only, so count may not have completed.
    workflow = graph(
        [
            step("echo"),
            step("count", after=["echo"], output={"n": "spaces"}),
            step("upper", after=["echo"]),
            step("double", after=["upper"], input={"n": from_step("count", "n")}),
        ],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected) == ("double", "n", "int")
    assert problem.message == (
        "step 'double' input 'n' needs an int, but $.steps.count.n refers to step 'count', "
        "which does not run before this step"
    )


def test_a_step_reference_to_a_step_that_runs_later_is_a_problem():
    workflow = graph(
        [step("double", input={"n": from_step("count", "n")}), step("count", after=["double"])],
        inputs=["message:string", "n:int"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field) == ("double", "n")
    assert "$.steps.count.n refers to step 'count', which does not run before this step" in problem.message


def test_a_step_reference_naming_no_output_of_that_step_is_a_problem():
    workflow = graph(
        [step("count"), step("double", after=["count"], input={"n": from_step("count", "number")})],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field) == ("double", "n")
    assert "$.steps.count.number names no output of step 'count'" in problem.message


def test_a_step_reference_of_the_wrong_type_names_the_step_output():
    workflow = graph(
        [step("measure"), step("double", after=["measure"], input={"n": from_step("measure", "n")})],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.expected, problem.found) == ("double", "int", "float")
    assert "output 'n' of step 'measure' is float" in problem.message


def test_a_reference_into_a_field_of_an_object_output_is_left_to_the_run_time_check():
    workflow = graph(
        [step("profile"), step("double", after=["profile"], input={"n": from_step("profile", "info", "length")})],
        inputs=["message:string"],
    )
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_reference_into_a_field_of_a_non_object_is_a_problem():
    workflow = graph(
        [step("profile"), step("double", after=["profile"], input={"n": from_step("profile", "words", "length")})],
        inputs=["message:string"],
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field) == ("double", "n")
    assert "which is array<string>, not an object" in problem.message


@pytest.mark.parametrize(
    ("target", "value", "found"),
    [("double", "three", "string"), ("double", 2.5, "float"), ("double", True, "bool"), ("upper", 3, "int")],
)
def test_a_constant_of_the_wrong_type_is_a_problem(target, value, found):
    name = "n" if target == "double" else "message"
    workflow = graph([step(target, input={name: const(value)})])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.found) == (target, name, found)
    assert f"constant {value!r}" in problem.message


@pytest.mark.parametrize(("target", "value"), [("double", 3), ("scale", 3), ("scale", 2.5), ("sum", [1, 2])])
def test_a_constant_of_a_fitting_type_is_fine(target, value):
    name = {"double": "n", "scale": "n", "sum": "values"}[target]
    workflow = graph([step(target, input={name: const(value)})])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_null_constant_into_a_typed_input_is_a_problem():
    workflow = graph([step("double", input={"n": const(None)})])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected) == ("double", "n", "int")


def test_a_constant_array_whose_items_do_not_fit_is_a_problem():
    workflow = graph([step("sum", input={"values": const(["1", "2"])})])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field, problem.expected) == ("sum", "values", "array<int>")


def test_mapping_an_input_the_service_does_not_take_is_a_problem():
    workflow = graph(
        [step("upper", input={"message": from_input("message"), "colour": const("red")})], inputs=["message:string"]
    )
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field) == ("upper", "colour")
    assert problem.message == "step 'upper' maps input 'colour', which service 'upper' does not take"


# Output renames into the context


def test_an_output_renamed_into_the_context_feeds_later_steps_and_the_workflow_outputs():
    workflow = graph(
        [step("count", output={"n": "spaces"}), step("double", after=["count"], input={"n": from_context("spaces")})],
        inputs=["message:string"],
        outputs=["spaces:int", "n:int"],
    )
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_renamed_output_is_no_longer_in_the_context_under_its_own_name():
    workflow = graph([step("count", output={"n": "spaces"})], inputs=["message:string"], outputs=["n:int"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field) == (None, "n")
    assert problem.message == "workflow output 'n' needs an int, but nothing before it provides 'n'"


def test_renaming_an_output_the_service_does_not_produce_is_a_problem():
    workflow = graph([step("count", output={"count": "spaces"})], inputs=["message:string"])
    problem = only(check_workflow(workflow, TEXT, EXPRESSIONS))
    assert (problem.step, problem.field) == ("count", "count")
    assert problem.message == "step 'count' renames output 'count', which it does not produce"


# Parallel steps


def test_two_parallel_steps_writing_the_same_context_name_is_a_problem():
    workflow = graph(
        [step("echo"), step("upper", after=["echo"]), step("count", after=["echo"], output={"n": "message"})],
        inputs=["message:string"],
    )
    problems = check_workflow(workflow, TEXT, EXPRESSIONS)
    problem = only(problems)
    assert (problem.step, problem.field) == ("count", "message")
    assert problem.message == (
        "steps 'upper' and 'count' may run at the same time and both write 'message' into the context; "
        "rename one of them with 'output'"
    )


def test_renaming_one_of_two_parallel_writers_resolves_the_conflict():
    workflow = graph(
        [step("echo"), step("upper", after=["echo"], output={"message": "shout"}), step("count", after=["echo"])],
        inputs=["message:string"],
        outputs=["shout:string", "n:int"],
    )
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_join_after_two_parallel_steps_sees_both_of_their_outputs():
    workflow = graph(
        [
            step("echo"),
            step("upper", after=["echo"], output={"message": "shout"}),
            step("count", after=["echo"]),
            step("pad", after=["upper", "count"], input={"message": from_context("shout"), "width": from_context("n")}),
        ],
        inputs=["message:string"],
        outputs=["message:string"],
    )
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


# Every problem at once


def test_every_problem_of_a_workflow_is_reported_at_once():
    workflow = chain(
        ["count-as-text", "double", "pad", "shout"],
        inputs=["message:string"],
        outputs=["message:string", "total:int"],
    )
    problems = check_workflow(workflow, TEXT, EXPRESSIONS)
    assert where(problems) == {
        ("shout", "service"),  # not registered
        ("double", "n"),  # string into int
        ("pad", "width"),  # provided by nobody
        (None, "total"),  # produced by nobody
    }
    assert len(problems) == 4


def test_structural_problems_are_reported_with_the_unknown_services():
    workflow = graph(
        [step("upper"), step("upper", "echo"), step("shout", after=["nowhere"])],
        inputs=["message:string"],
    )
    messages = [p.message for p in check_workflow(workflow, TEXT, EXPRESSIONS)]
    assert messages == [
        "step 'shout' calls service 'shout', which is not registered",
        "step id 'upper' is used twice",
        "step 'shout' runs after 'nowhere', but there is no step 'nowhere'",
    ]


# Searchable inputs


def test_a_workflow_input_of_a_scalar_type_may_be_searchable():
    workflow = chain(["upper"], inputs=[fld("message:string", searchable=True)], outputs=["message:string"])
    assert check_workflow(workflow, TEXT, EXPRESSIONS) == []


def test_a_workflow_input_of_an_object_or_an_array_cannot_be_searchable():
    workflow = chain(
        ["upper"],
        inputs=["message:string", fld("info:object", searchable=True), fld("tags:array<string>", searchable=True)],
        outputs=["message:string"],
    )
    problems = check_workflow(workflow, TEXT, EXPRESSIONS)
    assert [(p.field, p.found) for p in problems] == [("info", "object"), ("tags", "array<string>")]
    assert problems[0].message.startswith("workflow input 'info' cannot be searchable")


def test_only_a_workflow_input_can_be_searchable():
    problems = check_service(service("upper", [fld("message:string", searchable=True)], ["message:string"]))
    assert only(problems).message == "input 'message' cannot be searchable: only a workflow's inputs are"
