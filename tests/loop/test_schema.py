"""Tests for rawloop.schema: JSON schemas and descriptions from type hints and docstrings."""

import dataclasses
import datetime
import enum
import sys
from collections.abc import Sequence
from typing import Annotated, Any, List, Literal, NewType, Optional, Union  # noqa: UP035

import pytest

if sys.version_info >= (3, 11):
    from typing import NotRequired, Required, TypedDict
else:  # typing's TypedDict learnt Required/NotRequired in 3.11
    from typing_extensions import NotRequired, Required, TypedDict

from rawloop.core.errors import ConfigurationError
from rawloop.loop.schema import SchemaCompiler, parse_docstring, strict_problem
from rawloop.loop.tools import tool


def params(func: Any, **options: Any) -> dict[str, Any]:
    """The properties of the generated schema, for one-parameter assertions."""
    properties: dict[str, Any] = tool(func, **options).parameters["properties"]
    return properties


# -- types used in the schemas -------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    x: int
    y: Annotated[int, "the y coordinate"] = 0
    tags: list[str] = dataclasses.field(default_factory=list)
    label: str = dataclasses.field(default="", metadata={"description": "a name for it"})


@dataclasses.dataclass
class Path:
    points: list[Point]
    color: Color = Color.RED


class Movie(TypedDict):
    title: str
    year: NotRequired[int]


class Filter(TypedDict, total=False):
    query: Required[str]
    limit: int


@dataclasses.dataclass
class Node:
    children: list["Node"]


UserId = NewType("UserId", int)


class NotJSON:
    pass


# -- schemas -------------------------------------------------------------------


def test_scalars_none_and_any() -> None:
    def f(s: str, i: int, n: float, b: bool, z: None, a: Any, u, o: object) -> None:  # type: ignore[no-untyped-def]
        pass

    assert params(f) == {
        "s": {"type": "string"},
        "i": {"type": "integer"},
        "n": {"type": "number"},
        "b": {"type": "boolean"},
        "z": {"type": "null"},
        "a": {},
        "u": {},
        "o": {},
    }


def test_top_level_shape_required_follows_defaults() -> None:
    def f(a: int, b: str = "x", c: Optional[int] = None, d: bool = False) -> None:  # noqa: UP045
        pass

    assert tool(f).parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "string"},
            "c": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "d": {"type": "boolean"},
        },
        "required": ["a"],
        "additionalProperties": False,
    }


def test_no_parameters() -> None:
    def ping() -> str:
        return "pong"

    assert tool(ping).parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_unions() -> None:
    def f(a: int | None, b: Optional[str], c: Union[int, str], d: str | int | None) -> None:  # noqa: UP007, UP045
        pass

    assert params(f) == {
        "a": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "c": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "d": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
    }


def test_literal_and_enum() -> None:
    def f(
        mode: Literal["fast", "slow"],
        n: Literal[1, 2, 3],
        mixed: Literal["a", 1, None],
        color: Color,
        level: Level,
        member: Literal[Color.RED],
    ) -> None:
        pass

    assert params(f) == {
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "n": {"type": "integer", "enum": [1, 2, 3]},
        "mixed": {"enum": ["a", 1, None]},
        "color": {"type": "string", "enum": ["red", "green"]},
        "level": {"type": "integer", "enum": [1, 2]},
        "member": {"type": "string", "enum": ["red"]},
    }


def test_containers() -> None:
    def f(
        a: list[int],
        b: List[str],  # noqa: UP006
        c: Sequence[float],
        d: tuple[int, ...],
        e: tuple[int, str],
        f: dict[str, int],
        g: dict[str, Any],
        h: set[str],
        i: list,  # type: ignore[type-arg]
        j: list[dict[str, int]],
    ) -> None:
        pass

    assert params(f) == {
        "a": {"type": "array", "items": {"type": "integer"}},
        "b": {"type": "array", "items": {"type": "string"}},
        "c": {"type": "array", "items": {"type": "number"}},
        "d": {"type": "array", "items": {"type": "integer"}},
        "e": {
            "type": "array",
            "prefixItems": [{"type": "integer"}, {"type": "string"}],
            "minItems": 2,
            "maxItems": 2,
        },
        "f": {"type": "object", "additionalProperties": {"type": "integer"}},
        "g": {"type": "object"},
        "h": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "i": {"type": "array"},
        "j": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }


def test_typeddict_required_and_not_required() -> None:
    def f(movie: Movie, filt: Filter) -> None:
        pass

    assert params(f) == {
        "movie": {
            "type": "object",
            "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
            "required": ["title"],
            "additionalProperties": False,
        },
        "filt": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
            "additionalProperties": False,
        },
    }


def test_dataclass_nested() -> None:
    def f(path: Path) -> None:
        pass

    point = {
        "type": "object",
        "properties": {
            "x": {"type": "integer"},
            "y": {"type": "integer", "description": "the y coordinate"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "label": {"type": "string", "description": "a name for it"},
        },
        "required": ["x"],
        "additionalProperties": False,
    }
    assert params(f) == {
        "path": {
            "type": "object",
            "properties": {
                "points": {"type": "array", "items": point},
                "color": {"type": "string", "enum": ["red", "green"]},
            },
            "required": ["points"],
            "additionalProperties": False,
        }
    }


def test_newtype_uses_its_supertype() -> None:
    def f(user: UserId) -> None:
        pass

    assert params(f) == {"user": {"type": "integer"}}


def test_descriptions_from_docstring_and_annotated() -> None:
    def search(
        query: str,
        limit: int = 10,
        lang: Annotated[str, "ISO 639-1 code"] = "en",
        unit: Annotated[Optional[str], "a unit"] = None,  # noqa: UP045
        raw: Any = None,
    ) -> list[str]:
        """Search the catalogue.

        Matches titles and authors.

        Args:
            query: words to look for;
                quotes make a phrase.
            limit (int): at most this many results.
            lang: the docstring loses to Annotated.

        Returns:
            Matching titles.
        """
        return []

    t = tool(search)
    assert t.description == "Search the catalogue.\n\nMatches titles and authors."
    assert t.parameters["properties"] == {
        "query": {"type": "string", "description": "words to look for; quotes make a phrase."},
        "limit": {"type": "integer", "description": "at most this many results."},
        "lang": {"type": "string", "description": "ISO 639-1 code"},
        "unit": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "a unit"},
        "raw": {},
    }
    assert t.parameters["required"] == ["query"]


def test_description_without_sections_and_without_docstring() -> None:
    def a() -> None:
        """
        First line.

            indented example
        """

    def b() -> None:
        pass

    assert tool(a).description == "First line.\n\n    indented example"
    assert tool(b).description == ""


def test_strict_needs_a_strict_compatible_schema() -> None:
    def optional(x: int = 1) -> None:
        pass

    def open_dict(x: dict[str, int]) -> None:
        pass

    def nullable(x: int | None, p: Point | None) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"strict.*'x' is optional"):
        tool(optional, strict=True)
    with pytest.raises(ConfigurationError, match=r"\$\.x: objects must set additionalProperties"):
        tool(open_dict, strict=True)
    # Point has optional fields, so the nested object is the problem.
    with pytest.raises(ConfigurationError, match=r"\$\.p: property 'y' is optional"):
        tool(nullable, strict=True)


# -- definition errors -----------------------------------------------------------


def test_unsupported_annotation_names_tool_parameter_and_type() -> None:
    def f(ok: int, thing: NotJSON) -> None:
        pass

    with pytest.raises(ConfigurationError) as info:
        tool(f)
    message = str(info.value)
    assert "'f'" in message
    assert "'thing'" in message
    assert "NotJSON" in message


def test_unsupported_nested_annotation_says_where() -> None:
    def f(items: list[dict[str, NotJSON]]) -> None:
        pass

    with pytest.raises(
        ConfigurationError, match=r"parameter 'items' \(at items\[\]\{\}\).*NotJSON"
    ):
        tool(f)


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        (dict[int, str], "keys are strings"),
        (Literal[b"x"], "JSON scalars"),
        (datetime.date, "unsupported type datetime.date"),
    ],
)
def test_other_unsupported_annotations(annotation: Any, match: str) -> None:
    def f(x: Any) -> None:
        pass

    f.__annotations__["x"] = annotation
    with pytest.raises(ConfigurationError, match=match):
        tool(f)


def test_recursive_dataclass_is_refused() -> None:
    def f(root: Node) -> None:
        pass

    with pytest.raises(
        ConfigurationError, match=r"'root' \(at root\.children\[\]\): recursive type"
    ):
        tool(f)


def test_unresolvable_forward_reference() -> None:
    @dataclasses.dataclass
    class Local:
        other: "Local | None"  # a local name get_type_hints cannot see

    def f(x: Local) -> None:
        pass

    with pytest.raises(ConfigurationError, match="cannot resolve the type hints"):
        tool(f)


# -- the entry points on their own ------------------------------------------------


def test_parse_docstring() -> None:
    summary, args = parse_docstring(
        """Do a thing.

        Args:
            *items (int): the items;
                one per line.
            **options: passed on.

        Returns:
            text: not an argument.
        """
    )
    assert summary == "Do a thing."
    assert args == {"items": "the items; one per line.", "options": "passed on."}
    assert parse_docstring(None) == ("", {})
    assert parse_docstring("Returns:\n    nothing.") == ("", {})


def test_compiler_gives_a_schema_and_a_converter_per_parameter() -> None:
    compiler = SchemaCompiler("t", globals())
    text = compiler.parameter("s", str)
    assert (text.schema, text.convert) == ({"type": "string"}, None)
    number = compiler.parameter("n", int)
    assert number.convert is not None
    assert type(number.convert(3.0)) is int
    points = compiler.parameter("p", "list[Point] | None")  # looked up in the namespace
    assert points.schema["anyOf"][1] == {"type": "null"}
    assert points.convert is not None
    assert points.convert([{"x": 1}]) == [Point(1)]
    assert points.convert(None) is None
    either = compiler.parameter("e", int | Color)
    assert either.convert is not None
    assert (either.convert(1), either.convert("red")) == (1, Color.RED)


def test_compiler_errors_name_the_tool_the_parameter_and_the_place() -> None:
    compiler = SchemaCompiler("t", {})
    with pytest.raises(
        ConfigurationError, match=r"tool 't': parameter 'p' \(at p\[\]\): unsupported type"
    ):
        compiler.parameter("p", list[NotJSON])
    with pytest.raises(ConfigurationError, match="cannot resolve"):
        compiler.parameter("q", "Missing")


def test_strict_problem() -> None:
    closed = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
    assert strict_problem(closed) is None
    assert strict_problem({"type": "array", "items": {"type": "object"}}) == (
        "$[]: objects must set additionalProperties to false"
    )
    assert strict_problem({"anyOf": [{"type": "null"}, {"properties": {}}]}, "$.x") == (
        "$.x: objects must set additionalProperties to false"
    )
