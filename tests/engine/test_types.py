"""Field types: static compatibility (``accepts``), run-time checks (``conforms``) and what errors say."""

from __future__ import annotations

import pytest

from machinery.engine.errors import InvalidDefinition
from machinery.engine.types import ANY, SCALARS, FieldType, accepts, conforms, describe_mismatch, type_of
from tests.engine.builders import ftype

# Static compatibility


def test_an_int_is_accepted_where_a_float_is_expected():
    assert accepts(ftype("float"), ftype("int"))


def test_a_float_is_not_accepted_where_an_int_is_expected():
    assert not accepts(ftype("int"), ftype("float"))


@pytest.mark.parametrize(("expected", "found"), [("int", "bool"), ("bool", "int"), ("float", "bool")])
def test_a_bool_is_not_a_number_statically(expected, found):
    assert not accepts(ftype(expected), ftype(found))


@pytest.mark.parametrize("name", [n for n in SCALARS if n != "any"])
def test_every_type_is_accepted_where_it_is_itself_expected(name):
    assert accepts(ftype(name), ftype(name))


@pytest.mark.parametrize(("expected", "found"), [("string", "int"), ("int", "string"), ("object", "array")])
def test_different_types_are_not_accepted_for_each_other(expected, found):
    assert not accepts(ftype(expected), ftype(found))


def test_an_array_of_ints_is_accepted_where_an_array_of_floats_is_expected():
    assert accepts(ftype("array<float>"), ftype("array<int>"))


def test_an_array_of_floats_is_not_accepted_where_an_array_of_ints_is_expected():
    assert not accepts(ftype("array<int>"), ftype("array<float>"))


def test_an_array_of_strings_is_not_accepted_where_an_array_of_ints_is_expected():
    assert not accepts(ftype("array<int>"), ftype("array<string>"))


def test_item_types_are_compared_through_nested_arrays():
    assert accepts(ftype("array<array<float>>"), ftype("array<array<int>>"))
    assert not accepts(ftype("array<array<int>>"), ftype("array<array<string>>"))


def test_an_array_without_item_type_is_left_to_the_run_time_check_either_way():
    assert accepts(ftype("array<int>"), ftype("array"))
    assert accepts(ftype("array"), ftype("array<string>"))


@pytest.mark.parametrize("name", SCALARS)
def test_any_accepts_every_type_and_is_accepted_by_every_type(name):
    assert accepts(ANY, ftype(name))
    assert accepts(ftype(name), ANY)


# Run-time checks


def test_a_bool_does_not_conform_to_int_at_run_time():
    assert conforms(ftype("int"), 1)
    assert not conforms(ftype("int"), True)
    assert not conforms(ftype("int"), False)


def test_a_bool_does_not_conform_to_float_at_run_time():
    assert not conforms(ftype("float"), True)


def test_an_int_value_conforms_to_float_but_a_float_value_does_not_conform_to_int():
    assert conforms(ftype("float"), 3)
    assert conforms(ftype("float"), 3.5)
    assert not conforms(ftype("int"), 3.5)
    assert not conforms(ftype("int"), 3.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("string", "a"), ("int", 0), ("bool", False), ("object", {}), ("array", []), ("object", {"a": [1]})],
)
def test_a_value_of_the_declared_type_conforms(name, value):
    assert conforms(ftype(name), value)


@pytest.mark.parametrize("name", ["string", "int", "float", "bool", "object", "array"])
def test_null_conforms_to_no_declared_type(name):
    assert not conforms(ftype(name), None)


@pytest.mark.parametrize("value", [None, 1, "a", True, [1], {"a": 1}, 2.5])
def test_every_value_conforms_to_any(value):
    assert conforms(ANY, value)


def test_an_array_conforms_only_when_every_item_does():
    assert conforms(ftype("array<int>"), [1, 2, 3])
    assert conforms(ftype("array<int>"), [])
    assert not conforms(ftype("array<int>"), [1, "2", 3])
    assert not conforms(ftype("array<int>"), [1, True])
    assert conforms(ftype("array<float>"), [1, 2.5])


def test_a_non_array_does_not_conform_to_an_array_type():
    assert not conforms(ftype("array<int>"), "1,2")
    assert not conforms(ftype("array<int>"), {"0": 1})


def test_an_untyped_array_takes_items_of_any_type():
    assert conforms(ftype("array"), [1, "a", None, {}])


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "bool"),
        (1, "int"),
        (1.5, "float"),
        ("s", "string"),
        ([1], "array"),
        ({"a": 1}, "object"),
    ],
)
def test_type_of_names_a_json_value_the_way_users_read_it(value, name):
    assert type_of(value) == name


# Messages


def test_describe_mismatch_names_the_first_bad_array_item():
    assert describe_mismatch(ftype("array<int>"), [1, "two", 3.5]) == "item 1 is string 'two'"


def test_describe_mismatch_of_a_scalar_says_what_came_instead():
    assert describe_mismatch(ftype("int"), "3") == "got string '3'"
    assert describe_mismatch(ftype("int"), True) == "got bool True"


def test_describe_mismatch_of_an_array_field_given_no_array_says_what_came_instead():
    assert describe_mismatch(ftype("array<int>"), "1,2") == "got string '1,2'"


def test_describe_mismatch_shortens_long_values():
    message = describe_mismatch(ftype("int"), "x" * 100)
    assert message.startswith("got string 'xxx")
    assert message.endswith("...")
    assert len(message) == len("got string ") + 40


# Building types


@pytest.mark.parametrize("name", ["integer", "str", "number", "Array", ""])
def test_a_field_type_rejects_an_unknown_name(name):
    with pytest.raises(InvalidDefinition, match=f"unknown type '{name}'"):
        FieldType(name)


def test_an_unknown_item_type_is_rejected():
    with pytest.raises(InvalidDefinition, match="unknown type 'str'"):
        FieldType.parse("array", "str")


@pytest.mark.parametrize("name", ["string", "int", "float", "bool", "object", "any"])
def test_only_an_array_may_name_an_item_type(name):
    with pytest.raises(InvalidDefinition, match=f"only an array may name an item type, not '{name}'"):
        FieldType(name, FieldType("int"))
    with pytest.raises(InvalidDefinition, match="only an array"):
        FieldType.parse(name, "int")


def test_parse_builds_an_array_with_its_item_type():
    assert FieldType.parse("array", "int") == FieldType("array", FieldType("int"))
    assert FieldType.parse("array") == FieldType("array")


def test_an_array_type_is_written_with_its_item_type():
    assert str(FieldType.parse("array", "int")) == "array<int>"
    assert str(FieldType.parse("array")) == "array"
    assert str(FieldType("float")) == "float"
