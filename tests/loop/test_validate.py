"""Tests for rawloop.validate on its own; test_tools.py checks it through run_tool."""

from typing import Any

import pytest

from rawloop.loop.validate import json_scalar_type, json_type, problems


@pytest.mark.parametrize(
    ("value", "scalar", "kind"),
    [
        (None, "null", "null"),
        (True, "boolean", "boolean"),
        (1, "integer", "integer"),
        (1.5, "number", "number"),
        ("x", "string", "string"),
        ([1], None, "array"),
        ((1,), None, "array"),
        ({"a": 1}, None, "object"),
        (b"x", None, "bytes"),
    ],
)
def test_json_types(value: object, scalar: str | None, kind: str) -> None:
    assert json_scalar_type(value) == scalar
    assert json_type(value) == kind


@pytest.mark.parametrize(
    ("value", "schema", "found"),
    [
        ("x", {"type": "string"}, []),
        (1, {"type": "string"}, ["$: expected string, got integer"]),
        (1, {"type": ["string", "null"]}, ["$: expected string or null, got integer"]),
        (3.0, {"type": "integer"}, []),
        (3.5, {"type": "integer"}, ["$: expected integer, got number"]),
        (True, {"type": "integer"}, ["$: expected integer, got boolean"]),
        (3, {"type": "number"}, []),
        # What the validator does not know is the handler's business.
        ("x", {"type": "uuid"}, []),
        ("", {"type": "string", "minLength": 5}, []),
        ("x", True, []),
        ("x", False, ["$: no value is allowed here"]),
    ],
)
def test_types(value: Any, schema: Any, found: list[str]) -> None:
    assert problems(value, schema) == found


def test_enum_and_const_compare_as_json() -> None:
    assert problems(1.0, {"enum": [1, 2]}) == []
    assert problems(True, {"enum": [1, 2]}) == ["$: expected one of 1, 2, got true"]
    assert problems([1, {"a": None}], {"const": [1.0, {"a": None}]}) == []
    assert problems("b", {"const": "a"}) == ['$: expected "a", got "b"']
    long = "x" * 100
    assert problems("y", {"const": long}) == [f'$: expected "{"x" * 56}..., got "y"']


def test_any_of_reports_inside_the_one_arm_of_the_right_type() -> None:
    list_or_none = {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}
    assert problems(None, list_or_none) == []
    assert problems([1], list_or_none) == ["$[0]: expected string, got integer"]
    assert problems(1, list_or_none) == ["$: expected array or null, got integer"]
    # oneOf is checked as anyOf: fitting two arms is fine.
    assert problems(1, {"oneOf": [{"type": "integer"}, {"type": "number"}]}) == []


def test_all_of_lists_the_problems_of_every_arm() -> None:
    schema = {"allOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert problems({}, schema) == [
        "$: missing required property 'a'",
        "$: missing required property 'b'",
    ]


def test_objects() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert problems({"a": "x", "c": 1}, schema) == [
        "$: missing required property 'b'",
        "$.a: expected integer, got string",
        "$: unexpected property 'c'",
    ]
    typed_values = {"type": "object", "additionalProperties": {"type": "string"}}
    assert problems({"k": 1}, typed_values, "$.opts") == ["$.opts.k: expected string, got integer"]


def test_arrays() -> None:
    pair = {"type": "array", "prefixItems": [{"type": "integer"}], "items": False}
    assert problems([1, 2], pair) == ["$[1]: no value is allowed here"]
    assert problems(["x"], pair) == ["$[0]: expected integer, got string"]
    sized = {"type": "array", "minItems": 2, "maxItems": 3}
    assert problems([1], sized) == ["$: expected at least 2 items, got 1"]
    assert problems([1, 2, 3, 4], sized) == ["$: expected at most 3 items, got 4"]
    assert problems((1, 2), sized) == []
