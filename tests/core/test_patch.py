"""RFC 6902 JSON Patch: diff/apply round trips, the RFC's own examples, and clear errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop.core.patch import PatchError, apply, diff, escape, parse_pointer

# -- strategies -------------------------------------------------------------------

# Keys that exercise pointer escaping: "~", "/", "~0"/"~1" literals, "-", digits, "".
KEYS = st.one_of(
    st.sampled_from(["", "a", "b", "~", "/", "~0", "~1", "a/b", "m~n", "-", "0", "01", "10"]),
    st.text(max_size=6),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(KEYS, children, max_size=5)
    ),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """JSON equality: like ``==`` but ``True`` is not ``1`` and ``1`` is not ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool) or type(a) is not type(b):
        return type(a) is type(b) and a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


# -- properties --------------------------------------------------------------------


@settings(max_examples=400)
@given(JSON, JSON)
def test_apply_of_diff_gives_the_target(a: Any, b: Any) -> None:
    before = copy.deepcopy(a)
    ops = diff(a, b)
    assert same(apply(a, ops), b)
    assert same(a, before)  # neither diff nor apply touched the input


@given(JSON)
def test_a_document_diffed_with_itself_is_an_empty_patch(a: Any) -> None:
    assert diff(a, copy.deepcopy(a)) == []


@settings(max_examples=200)
@given(st.dictionaries(KEYS, JSON, max_size=4), st.dictionaries(KEYS, JSON, max_size=4))
def test_diff_only_produces_add_remove_replace_with_valid_pointers(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    for op in diff(a, b):
        assert op["op"] in ("add", "remove", "replace")
        assert op["path"] == "" or op["path"].startswith("/")
        assert ("value" in op) is (op["op"] != "remove")


@given(JSON, JSON)
def test_the_patch_values_are_copies(a: Any, b: Any) -> None:
    ops = diff(a, b)
    snapshot = copy.deepcopy(b)
    for op in ops:
        value = op.get("value")
        if isinstance(value, (list, dict)):
            value.clear()
    assert same(b, snapshot)


@given(st.lists(st.one_of(KEYS, st.integers(min_value=0, max_value=99)), max_size=6))
def test_pointer_escaping_round_trips(tokens: list[str | int]) -> None:
    pointer = "".join("/" + escape(t) for t in tokens)
    assert parse_pointer(pointer) == [str(t) for t in tokens]


def test_escape_and_parse_follow_rfc_6901_order() -> None:
    assert escape("a/b") == "a~1b" and escape("m~n") == "m~0n" and escape("~1") == "~01"
    # "~01" is "~" then "1", never "/": ~1 is unescaped before ~0.
    assert parse_pointer("/~01") == ["~1"]
    assert parse_pointer("") == [] and parse_pointer("/") == [""]
    with pytest.raises(PatchError, match="must start with '/'"):
        parse_pointer("a/b")


# -- RFC 6902 appendix A ------------------------------------------------------------

RFC_EXAMPLES: list[tuple[str, Any, list[dict[str, Any]], Any]] = [
    (
        "A.1 add an object member",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
    ),
    (
        "A.2 add an array element",
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    (
        "A.3 remove an object member",
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
    ),
    (
        "A.4 remove an array element",
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
    ),
    (
        "A.5 replace a value",
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        "A.6 move a value",
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        "A.7 move an array element",
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        "A.8 test a value: success",
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        "A.10 add a nested member object",
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        "A.11 ignore unrecognized elements",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    (
        "A.14 ~ escape ordering",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
    ),
    (
        "A.16 add an array value",
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    (
        "copy a value",
        {"foo": {"bar": [1, 2]}},
        [{"op": "copy", "from": "/foo/bar", "path": "/baz"}],
        {"foo": {"bar": [1, 2]}, "baz": [1, 2]},
    ),
    (
        "~1 and ~0 in add, replace and remove",
        {"a/b": 1, "m~n": 2, "x": 3},
        [
            {"op": "replace", "path": "/a~1b", "value": 10},
            {"op": "remove", "path": "/m~0n"},
            {"op": "add", "path": "/~0~1", "value": 4},
        ],
        {"a/b": 10, "x": 3, "~/": 4},
    ),
    (
        "replace the whole document",
        {"foo": 1},
        [{"op": "replace", "path": "", "value": [1, 2]}],
        [1, 2],
    ),
    (
        "add at the end of a list with its length or '-'",
        [1],
        [{"op": "add", "path": "/1", "value": 2}, {"op": "add", "path": "/-", "value": 3}],
        [1, 2, 3],
    ),
]


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [case[1:] for case in RFC_EXAMPLES],
    ids=[case[0] for case in RFC_EXAMPLES],
)
def test_rfc_6902_examples(doc: Any, ops: list[dict[str, Any]], expected: Any) -> None:
    before = copy.deepcopy(doc)
    assert same(apply(doc, ops), expected)
    assert doc == before  # apply works on a copy


def test_applied_values_are_copies_of_the_patch() -> None:
    value = {"deep": [1]}
    out = apply({}, [{"op": "add", "path": "/a", "value": value}])
    out["a"]["deep"].append(2)
    assert value == {"deep": [1]}
    copied = apply({"x": {"y": 1}}, [{"op": "copy", "from": "/x", "path": "/z"}])
    copied["z"]["y"] = 2
    assert copied["x"] == {"y": 1}


def test_diff_of_lists_grows_with_dash_and_shrinks_from_the_end() -> None:
    assert diff([1, 2], [1, 2, 3, 4]) == [
        {"op": "add", "path": "/-", "value": 3},
        {"op": "add", "path": "/-", "value": 4},
    ]
    assert diff({"l": [1, 2, 3]}, {"l": [1]}) == [
        {"op": "remove", "path": "/l/2"},
        {"op": "remove", "path": "/l/1"},
    ]
    assert diff({"a/b": {"~": 1}}, {"a/b": {"~": 2}}) == [
        {"op": "replace", "path": "/a~1b/~0", "value": 2}
    ]
    assert diff({"a": 1}, {"a": True}) == [{"op": "replace", "path": "/a", "value": True}]
    assert diff(1, 1.0) == [{"op": "replace", "path": "", "value": 1.0}]


# -- errors name the operation number and its path --------------------------------------

ERRORS: list[tuple[str, Any, list[dict[str, Any]], str]] = [
    (
        "A.9 test a value: error",
        {"baz": "qux"},
        [{"op": "test", "path": "/baz", "value": "bar"}],
        r"operation 0 \(test '/baz'\): test failed",
    ),
    (
        "A.12 add to a nonexistent target",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz/bat", "value": "qux"}],
        r"operation 0 \(add '/baz/bat'\): no key 'baz'",
    ),
    (
        "A.15 comparing strings and numbers",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": "10"}],
        r"operation 0 \(test '/~01'\): test failed",
    ),
    (
        "remove a missing key, second op",
        {"a": 1},
        [{"op": "remove", "path": "/a"}, {"op": "remove", "path": "/a"}],
        r"operation 1 \(remove '/a'\): no key 'a'",
    ),
    (
        "index past the end",
        {"l": [1, 2]},
        [{"op": "add", "path": "/l/3", "value": 0}],
        r"operation 0 \(add '/l/3'\): index 3 is out of range \(length 2\)",
    ),
    (
        "replace past the end",
        {"l": [1, 2]},
        [{"op": "replace", "path": "/l/2", "value": 0}],
        r"operation 0 \(replace '/l/2'\): index 2 is out of range",
    ),
    (
        "leading zero index",
        [1, 2],
        [{"op": "remove", "path": "/01"}],
        r"operation 0 \(remove '/01'\): '01' is not a list index",
    ),
    (
        "'-' where an element must exist",
        [1, 2],
        [{"op": "remove", "path": "/-"}],
        r"operation 0 \(remove '/-'\): '-' is not a list index",
    ),
    (
        "step into a scalar",
        {"a": 1},
        [{"op": "add", "path": "/a/b/c", "value": 0}],
        r"operation 0 \(add '/a/b/c'\): cannot step into int",
    ),
    (
        "a pointer without a slash",
        {"a": 1},
        [{"op": "remove", "path": "a"}],
        r"operation 0 \(remove 'a'\): JSON pointer 'a' must start with '/'",
    ),
    (
        "unknown op",
        {},
        [{"op": "frobnicate", "path": "/a"}],
        r"operation 0 \(frobnicate '/a'\): unknown op 'frobnicate'",
    ),
    (
        "no path",
        {},
        [{"op": "add", "value": 1}],
        r"operation 0 \(add None\): missing 'path'",
    ),
    (
        "move from a missing key",
        {"a": 1},
        [{"op": "move", "from": "/b", "path": "/c"}],
        r"operation 0 \(move '/c'\): no key 'b'",
    ),
    (
        "remove the whole document",
        {"a": 1},
        [{"op": "remove", "path": ""}],
        r"operation 0 \(remove ''\): the path is the whole document",
    ),
]


@pytest.mark.parametrize(
    ("doc", "ops", "message"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_name_the_operation_number_and_path(
    doc: Any, ops: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(PatchError, match=message):
        apply(doc, ops)


def test_a_failed_patch_leaves_the_document_untouched() -> None:
    doc = {"a": [1, 2]}
    with pytest.raises(PatchError):
        apply(doc, [{"op": "add", "path": "/a/-", "value": 3}, {"op": "remove", "path": "/zz"}])
    assert doc == {"a": [1, 2]}


# -- known bugs (see the report): malformed operations and JSON-typed comparison --------


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([{"op": "add", "path": "/a"}], r"operation 0 \(add '/a'\): .*'value'"),
        ([{"op": "replace", "path": "/a"}], r"operation 0 \(replace '/a'\): .*'value'"),
        ([{"op": "test", "path": "/a"}], r"operation 0 \(test '/a'\): .*'value'"),
        ([{"op": "move", "path": "/b"}], r"operation 0 \(move '/b'\): .*'from'"),
        ([{"op": "copy", "path": "/b"}], r"operation 0 \(copy '/b'\): .*'from'"),
        (["remove /a"], r"operation 0 .*not an object"),
    ],
    ids=["add", "replace", "test", "move", "copy", "not-an-object"],
)
def test_a_malformed_operation_is_a_patch_error_naming_it(ops: list[Any], message: str) -> None:
    with pytest.raises(PatchError, match=message):
        apply({"a": 1}, ops)


def test_the_test_op_compares_json_types_not_python_equality() -> None:
    # RFC 6902 4.6: a boolean never equals a number (Python says True == 1).
    with pytest.raises(PatchError, match="test failed"):
        apply({"a": True}, [{"op": "test", "path": "/a", "value": 1}])
    with pytest.raises(PatchError, match="test failed"):
        apply({"a": [0]}, [{"op": "test", "path": "/a", "value": [False]}])


@pytest.mark.parametrize("token", ["\u0661", "\u00b2", "1_0", " 1", "+1"])
def test_only_ascii_digits_are_list_indexes(token: str) -> None:
    with pytest.raises(PatchError, match="is not a list index"):
        apply([1, 2, 3], [{"op": "remove", "path": f"/{token}"}])
