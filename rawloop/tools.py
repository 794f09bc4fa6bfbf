"""Tools: plain Python functions the model can call.

Theory of operation
-------------------
``@tool`` reads a function once, when it is decorated: the name, the
docstring (summary and Google-style ``Args:``) and the type hints become a
JSON schema, and each parameter gets a converter that turns the JSON the model
sends into the Python value the annotation asks for (a dataclass, an Enum
member, a tuple...). Everything that can be wrong with a definition is found
then and raised as ``ConfigurationError``, not in the middle of a run.

``run_tool`` is what the loop calls for each function call the model makes. It
never raises for anything the model or the handler did: bad JSON, arguments
that do not fit the schema, an unknown tool name, a handler exception or a
timeout all become a ``ToolResult`` whose ``error`` is set and whose ``output``
is a short text the model can read and act on. Two things do propagate:
``StopLoop``, the user's way to end a run cleanly from inside a handler, and
cancellation, which belongs to whoever cancelled.

Sync handlers run in a worker thread (``anyio.to_thread.run_sync``) so that a
blocking handler never stalls the event loop or the other tools running next
to it. The thread is abandoned on timeout or cancellation: Python cannot stop
a thread, so it runs to completion in the background and its result is
dropped.

Arguments are checked by a small validator that understands the keywords this
module generates (``type``, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf``,
``properties``, ``required``, ``additionalProperties``, ``items``,
``prefixItems``, ``minItems``/``maxItems``); any other keyword in an explicit
schema is left for the handler to check.
"""

from __future__ import annotations

import builtins
import collections.abc
import copy
import dataclasses
import enum
import functools
import inspect
import re
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, ParamSpec, TypeVar, Union, overload

import anyio
import anyio.to_thread
import orjson

from .errors import ConfigurationError, RawloopError

__all__ = [
    "StopLoop",
    "Tool",
    "ToolArgumentsError",
    "ToolRegistry",
    "ToolResult",
    "UnknownToolError",
    "format_output",
    "run_tool",
    "tool",
]

P = ParamSpec("P")
R = TypeVar("R")

JSONSchema = dict[str, Any]
_Converter = Callable[[Any], Any]

# What OpenAI accepts as a function name (both dialects).
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# At most this many schema problems are listed in one error: the model needs
# enough to fix its call, not a wall of text.
_MAX_PROBLEMS = 10


class StopLoop(Exception):
    """Raise from a tool handler to end the run cleanly after this tool call.

    ``run_tool`` lets it through unchanged; the loop catches it and finishes
    with ``reason``.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class ToolArgumentsError(RawloopError):
    """The arguments of a function call are not valid JSON or do not fit the tool's schema.

    ``problems`` lists what was wrong, each prefixed with a JSON path
    (``$.items[2].name: expected string, got integer``).
    """

    def __init__(self, message: str, *, tool: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.tool = tool
        self.problems = tuple(problems)


class UnknownToolError(RawloopError):
    """The model called a tool name that is not registered."""

    def __init__(self, name: str, known: Sequence[str] = ()) -> None:
        if known:
            message = f"unknown tool {name!r}; available tools: {', '.join(known)}"
        else:
            message = f"unknown tool {name!r}; no tools are available"
        super().__init__(message)
        self.name = name
        self.known = tuple(known)


# ---------------------------------------------------------------------------
# Docstrings


_SECTION_RE = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters"
    r"|Returns?|Yields?|Raises|Exceptions|Examples?|Notes?|Warnings?|Warns|Attributes"
    r"|Todo|See Also|References)\s*:\s*$"
)
_ARG_SECTIONS = frozenset(
    {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}
)
_ARG_RE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and its per-argument texts."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    i = 0
    # The summary stops at the first section of any kind, not only Args:
    # a "Returns:" block is not a description of what the tool does.
    while i < len(lines) and not _SECTION_RE.match(lines[i].strip()):
        summary.append(lines[i])
        i += 1
    while i < len(lines):
        header = lines[i]
        section = header.strip().rstrip(":").strip()
        header_indent = _indent(header)
        i += 1
        current: str | None = None
        entry_indent: int | None = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= header_indent:
                break  # the next section, or text back at the margin
            i += 1
            if section not in _ARG_SECTIONS or not line.strip():
                continue
            if entry_indent is None:
                entry_indent = _indent(line)
            match = _ARG_RE.match(line.strip()) if _indent(line) <= entry_indent else None
            if match:
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line.strip()}".strip()
        # Skip stray lines at the margin that are not section headers.
        while i < len(lines) and not _SECTION_RE.match(lines[i].strip()):
            i += 1
    return "\n".join(summary).strip(), params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# ---------------------------------------------------------------------------
# Type hints -> JSON schema and converters


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A type's JSON schema, and how to turn validated JSON into its Python value."""

    schema: JSONSchema
    convert: _Converter | None = None  # None: the JSON value is used as is


_ANY = _Compiled({})
_SCALARS: dict[object, JSONSchema] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}
_ARRAY_ORIGINS = frozenset(
    {
        list,
        collections.abc.Sequence,
        collections.abc.MutableSequence,
        collections.abc.Collection,
        collections.abc.Iterable,
    }
)
_SET_ORIGINS = frozenset({set, frozenset, collections.abc.Set, collections.abc.MutableSet})
_MAPPING_ORIGINS = frozenset({dict, collections.abc.Mapping, collections.abc.MutableMapping})


def _qualifier_origins() -> set[object]:
    """The TypedDict key qualifiers (Required...), from typing and typing_extensions."""
    found: set[object] = set()
    # typing_extensions is not a dependency: if a user's TypedDict uses its
    # qualifiers, the module is already imported.
    modules = [typing, sys.modules.get("typing_extensions")]
    for module in modules:
        for name in ("Required", "NotRequired", "ReadOnly"):
            qualifier = getattr(module, name, None)
            if qualifier is not None:
                found.add(qualifier)
    return found


def _type_name(tp: object) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _json_scalar_type(value: object) -> str | None:
    """The JSON type of a Literal or Enum value, or None if it is not a JSON scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _enum_schema(values: Sequence[object]) -> JSONSchema:
    types_ = {_json_scalar_type(v) for v in values}
    schema: JSONSchema = {}
    if len(types_) == 1:
        schema["type"] = types_.pop()
    schema["enum"] = list(values)
    return schema


def _int_converter(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer and the validator accepts it;
    # the handler asked for an int, so give it one.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _SchemaCompiler:
    """Compiles annotations for one tool; errors name the tool and the parameter."""

    def __init__(self, tool_name: str, namespace: Mapping[str, Any]) -> None:
        self.tool_name = tool_name
        self.param = ""
        self._active: list[object] = []  # classes being compiled, to catch recursion
        # Where string annotations are looked up: the function's globals, then
        # the module of each class being compiled.
        self._namespaces: list[Mapping[str, Any]] = [namespace]
        self._qualifiers = _qualifier_origins()

    def parameter(self, name: str, annotation: object) -> _Compiled:
        self.param = name
        return self.compile(annotation, name)

    def fail(self, tp: object, where: str, why: str = "unsupported type") -> ConfigurationError:
        location = "" if where == self.param else f" (at {where})"
        return ConfigurationError(
            f"tool {self.tool_name!r}: parameter {self.param!r}{location}: {why} {_type_name(tp)}; "
            "use a supported type or pass an explicit schema= to @tool"
        )

    def compile(self, tp: Any, where: str) -> _Compiled:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        # Annotated first: its metadata may be unhashable, so it must not
        # reach the set and dict lookups below.
        if origin is Annotated:
            return self._annotated(args, where)
        if tp is Any or tp is object:
            return _ANY
        if tp is None or tp is type(None):
            return _Compiled({"type": "null"})
        if isinstance(tp, (str, typing.ForwardRef)):
            return self.compile(self._resolve(tp, where), where)
        # A class without type arguments (list, dict...) is its own origin.
        bare = tp if isinstance(tp, type) else None
        if bare in _SCALARS:
            return _Compiled(dict(_SCALARS[bare]), _int_converter if bare is int else None)
        alias_type = getattr(typing, "TypeAliasType", None)
        if alias_type is not None and isinstance(tp, alias_type):
            return self._nested(tp, where, lambda: self.compile(tp.__value__, where))
        if callable(tp) and hasattr(tp, "__supertype__"):  # typing.NewType
            return self.compile(tp.__supertype__, where)
        if origin in self._qualifiers:
            return self.compile(args[0], where)
        if origin is Union or (origin is not None and origin is types.UnionType):
            return self._union(args, where)
        if origin is Literal:
            return self._literal(tp, args, where)
        container = origin or bare
        if container is tuple:
            return self._tuple(args, where)
        if container in _ARRAY_ORIGINS:
            return self._array(args, where)
        if container in _SET_ORIGINS:
            return self._array(
                args, where, frozenset if container is frozenset else set, unique=True
            )
        if container in _MAPPING_ORIGINS:
            return self._mapping(tp, args, where)
        if isinstance(tp, type):
            if issubclass(tp, enum.Enum):
                return self._enum(tp, where)
            if dataclasses.is_dataclass(tp):
                return self._nested(tp, where, lambda: self._dataclass(tp, where))
            if issubclass(tp, dict) and hasattr(tp, "__required_keys__"):
                return self._nested(tp, where, lambda: self._typeddict(tp, where))
        raise self.fail(tp, where)

    def _nested(self, tp: object, where: str, build: Callable[[], _Compiled]) -> _Compiled:
        if tp in self._active:
            raise self.fail(tp, where, "recursive type")
        module = sys.modules.get(getattr(tp, "__module__", ""))
        self._active.append(tp)
        self._namespaces.append(vars(module) if module else self._namespaces[-1])
        try:
            return build()
        finally:
            self._active.pop()
            self._namespaces.pop()

    def _resolve(self, ref: str | typing.ForwardRef, where: str) -> Any:
        """Evaluate a string annotation, as get_type_hints would.

        get_type_hints leaves strings nested in builtin generics
        (``list["Node"]``) unevaluated on Python 3.10.
        """
        text = ref if isinstance(ref, str) else ref.__forward_arg__
        try:
            return eval(text, dict(self._namespaces[-1]))
        except Exception as exc:
            raise self.fail(text, where, f"cannot resolve ({exc}) the forward reference") from exc

    def _annotated(self, args: tuple[Any, ...], where: str) -> _Compiled:
        inner = self.compile(args[0], where)
        description = next((m for m in args[1:] if isinstance(m, str)), None)
        if description is None:
            return inner
        return _Compiled({**inner.schema, "description": description}, inner.convert)

    def _union(self, args: tuple[Any, ...], where: str) -> _Compiled:
        arms = [self.compile(arg, where) for arg in args]
        schema: JSONSchema = {"anyOf": [arm.schema for arm in arms]}
        if not any(arm.convert for arm in arms):
            return _Compiled(schema)

        def convert(value: Any) -> Any:
            # The first arm the value fits decides, as a reader of the
            # annotation would expect (int | str given 1 gives 1, not "1").
            for arm in arms:
                if not _problems(value, arm.schema):
                    return arm.convert(value) if arm.convert else value
            return value

        return _Compiled(schema, convert)

    def _literal(self, tp: object, args: tuple[Any, ...], where: str) -> _Compiled:
        values = [a.value if isinstance(a, enum.Enum) else a for a in args]
        if any(_json_scalar_type(v) is None for v in values):
            raise self.fail(tp, where, "Literal values must be JSON scalars in")
        members = {_scalar_key(a.value): a for a in args if isinstance(a, enum.Enum)}
        if not members:
            return _Compiled(_enum_schema(values))

        def convert(value: Any) -> Any:
            return members.get(_scalar_key(value), value)

        return _Compiled(_enum_schema(values), convert)

    def _enum(self, tp: type[enum.Enum], where: str) -> _Compiled:
        values = [member.value for member in tp]
        if not values or any(_json_scalar_type(v) is None for v in values):
            raise self.fail(tp, where, "Enum values must be JSON scalars in")

        def convert(value: Any) -> Any:
            return value if isinstance(value, tp) else tp(value)

        return _Compiled(_enum_schema(values), convert)

    def _array(
        self,
        args: tuple[Any, ...],
        where: str,
        container: Callable[[Any], Any] | None = None,
        *,
        unique: bool = False,
    ) -> _Compiled:
        """An array; ``container`` (set, tuple...) is what the JSON list becomes."""
        schema: JSONSchema = {"type": "array"}
        item = self.compile(args[0], f"{where}[]") if args else _ANY
        if item.schema:
            schema["items"] = item.schema
        if unique:
            schema["uniqueItems"] = True
        item_convert = item.convert
        if item_convert is None and container is None:
            return _Compiled(schema)

        def convert(value: Any) -> Any:
            if not isinstance(value, list):
                return value
            items = [item_convert(v) for v in value] if item_convert else value
            return container(items) if container else items

        return _Compiled(schema, convert)

    def _tuple(self, args: tuple[Any, ...], where: str) -> _Compiled:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return self._array(args[:1], where, tuple)
        items = [self.compile(arg, f"{where}[{i}]") for i, arg in enumerate(args)]
        schema: JSONSchema = {
            "type": "array",
            "prefixItems": [item.schema for item in items],
            "minItems": len(items),
            "maxItems": len(items),
        }

        def convert(value: Any) -> Any:
            if not isinstance(value, list):
                return value
            return tuple(
                item.convert(v) if item.convert else v
                for item, v in zip(items, value, strict=False)
            )

        return _Compiled(schema, convert)

    def _mapping(self, tp: object, args: tuple[Any, ...], where: str) -> _Compiled:
        if args and args[0] not in (str, Any):
            raise self.fail(tp, where, "JSON object keys are strings; unsupported key type in")
        value = self.compile(args[1], f"{where}{{}}") if len(args) == 2 else _ANY
        schema: JSONSchema = {"type": "object"}
        if value.schema:
            schema["additionalProperties"] = value.schema
        value_convert = value.convert
        if value_convert is None:
            return _Compiled(schema)

        def convert(obj: Any) -> Any:
            if not isinstance(obj, dict):
                return obj
            return {k: value_convert(v) for k, v in obj.items()}

        return _Compiled(schema, convert)

    def _hints(self, cls: type, where: str) -> dict[str, Any]:
        try:
            return typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # NameError, TypeError: unresolvable annotations
            raise self.fail(cls, where, f"cannot resolve the type hints ({exc}) of") from exc

    def _object(
        self, fields: Mapping[str, _Compiled], required: Iterable[str]
    ) -> tuple[JSONSchema, dict[str, _Converter]]:
        schema: JSONSchema = {
            "type": "object",
            "properties": {name: c.schema for name, c in fields.items()},
            "required": [name for name in fields if name in set(required)],
            # Unknown keys would make a dataclass constructor fail, and strict
            # mode needs this on every object.
            "additionalProperties": False,
        }
        converters = {name: c.convert for name, c in fields.items() if c.convert}
        return schema, converters

    def _dataclass(self, cls: type, where: str) -> _Compiled:
        hints = self._hints(cls, where)
        fields: dict[str, _Compiled] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            compiled = self.compile(hints.get(f.name, Any), f"{where}.{f.name}")
            description = f.metadata.get("description")
            if isinstance(description, str) and "description" not in compiled.schema:
                compiled = _Compiled(
                    {**compiled.schema, "description": description}, compiled.convert
                )
            fields[f.name] = compiled
            no_default = f.default is dataclasses.MISSING
            if no_default and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        schema, converters = self._object(fields, required)

        def convert(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            kwargs = {k: converters[k](v) if k in converters else v for k, v in value.items()}
            return cls(**kwargs)

        return _Compiled(schema, convert)

    def _typeddict(self, cls: type, where: str) -> _Compiled:
        hints = self._hints(cls, where)
        fields = {name: self.compile(hint, f"{where}.{name}") for name, hint in hints.items()}
        required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        schema, converters = self._object(fields, required_keys)
        if not converters:
            return _Compiled(schema)

        def convert(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return {k: converters[k](v) if k in converters else v for k, v in value.items()}

        return _Compiled(schema, convert)


def _scalar_key(value: object) -> tuple[str | None, object]:
    # Keeps True and 1 apart when looking Literal/Enum values up.
    return (_json_scalar_type(value), value)


def _strict_problem(schema: Any, path: str) -> str | None:
    """The first reason OpenAI's strict mode would reject ``schema``, if any."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"{path}: objects must set additionalProperties to false"
        required = set(schema.get("required", ()))
        for name in schema.get("properties", {}):
            if name not in required:
                return (
                    f"{path}: property {name!r} is optional, but strict mode needs every "
                    "property in required (use `T | None` without a default instead)"
                )
        for name, sub in schema.get("properties", {}).items():
            if problem := _strict_problem(sub, f"{path}.{name}"):
                return problem
    for sub in (schema.get("items"), *schema.get("prefixItems", ())):
        if problem := _strict_problem(sub, f"{path}[]"):
            return problem
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, ()):
            if problem := _strict_problem(sub, path):
                return problem
    return None


# ---------------------------------------------------------------------------
# Argument validation


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _is_json_type(value: object, expected: str) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        return actual == "integer" or (isinstance(value, float) and value.is_integer())
    if expected in ("string", "boolean", "null", "array", "object"):
        return actual == expected
    return True  # a type name this validator does not know: not its business


def _json_equal(a: object, b: object) -> bool:
    ta, tb = _json_type(a), _json_type(b)
    if {ta, tb} <= {"integer", "number"}:
        return a == b
    if ta != tb:
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def _show(value: object) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _expected(schema: Any) -> str:
    """How to name what a schema accepts in an error message."""
    if not isinstance(schema, dict):
        return "a matching value"
    if "enum" in schema:
        return "one of " + ", ".join(_show(v) for v in schema["enum"])
    if "const" in schema:
        return _show(schema["const"])
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    arms = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(arms, list):
        return " or ".join(_expected(arm) for arm in arms)
    return "a matching value"


def _problems(value: Any, schema: Any, path: str = "$") -> list[str]:
    """What is wrong with ``value`` against ``schema``; empty when it fits."""
    out: list[str] = []
    _check(value, schema, path, out)
    return out


def _check(value: Any, schema: Any, path: str, out: list[str]) -> None:
    if schema is False:
        out.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, dict):
        return
    for key in ("anyOf", "oneOf"):
        arms = schema.get(key)
        if isinstance(arms, list) and not any(not _problems(value, arm, path) for arm in arms):
            # When only one arm takes this JSON type ("array" of list[X] | None),
            # what is wrong inside it is the useful message.
            fitting = [a for a in arms if isinstance(a, dict) and _fits_type(value, a.get("type"))]
            if len(fitting) == 1:
                _check(value, fitting[0], path, out)
            else:
                out.append(f"{path}: expected {_expected(schema)}, got {_json_type(value)}")
            return
    for arm in schema.get("allOf", ()):
        _check(value, arm, path, out)
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        out.append(f"{path}: expected {_expected(schema)}, got {_show(value)}")
        return
    if "const" in schema and not _json_equal(value, schema["const"]):
        out.append(f"{path}: expected {_show(schema['const'])}, got {_show(value)}")
        return
    kind = schema.get("type")
    if kind is not None and not _fits_type(value, kind):
        out.append(f"{path}: expected {_expected(schema)}, got {_json_type(value)}")
        return
    if isinstance(value, Mapping):
        _check_object(value, schema, path, out)
    elif isinstance(value, (list, tuple)):
        _check_array(value, schema, path, out)


def _fits_type(value: object, kind: object) -> bool:
    """Whether ``value`` has the JSON ``type`` (a name or a list of names); False for none."""
    kinds = kind if isinstance(kind, list) else [kind]
    return any(isinstance(k, str) and _is_json_type(value, k) for k in kinds)


def _check_object(value: Mapping[str, Any], schema: JSONSchema, path: str, out: list[str]) -> None:
    properties = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            out.append(f"{path}: missing required property {name!r}")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        where = f"{path}.{name}"
        if name in properties:
            _check(item, properties[name], where, out)
        elif extra is False:
            out.append(f"{path}: unexpected property {name!r}")
        else:
            _check(item, extra, where, out)


def _check_array(value: Sequence[Any], schema: JSONSchema, path: str, out: list[str]) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        out.append(f"{path}: expected at least {low} items, got {len(value)}")
    if isinstance(high, int) and len(value) > high:
        out.append(f"{path}: expected at most {high} items, got {len(value)}")
    prefix = schema.get("prefixItems", ())
    items = schema.get("items", True)
    for i, item in enumerate(value):
        _check(item, prefix[i] if i < len(prefix) else items, f"{path}[{i}]", out)


# ---------------------------------------------------------------------------
# Tool


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    default: Any
    convert: _Converter | None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _introspection_target(func: Callable[..., Any]) -> Any:
    """The object whose type hints and docstring describe ``func``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.isroutine(func):
        return func
    # A callable instance: its class's __call__ carries the hints.
    return type(func).__call__


def _detect_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    return not inspect.isroutine(func) and inspect.iscoroutinefunction(type(func).__call__)


class Tool(Generic[P, R]):
    """A function the model can call, with its JSON schema.

    Calling a ``Tool`` calls the function, exactly as before decoration. Build
    one with ``@tool`` (or ``Tool(func, ...)``); the arguments are those of
    ``tool``.

    Attributes:
        name: the name the model calls the tool by.
        description: what the tool does, for the model.
        parameters: the JSON schema of the arguments (an object schema); the
            arguments are checked against it, and the ``*_schema()`` methods
            hand out copies of it.
        handler: the wrapped function.
        is_async: whether ``handler`` is awaited (else it runs in a worker thread).
        strict: whether OpenAI's strict mode is asked for.
    """

    def __init__(
        self,
        handler: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        schema: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError(f"a tool needs a callable, got {handler!r}")
        self.handler: Callable[P, R] = handler
        self.name: str = name if name is not None else getattr(handler, "__name__", "")
        if not self.name:
            raise ConfigurationError(f"cannot tell the name of tool {handler!r}; pass name=")
        if not _NAME_RE.match(self.name):
            raise ConfigurationError(
                f"tool name {self.name!r} is not valid: OpenAI allows 1-64 letters, digits, "
                "'_' and '-'; pass name="
            )
        self.is_async: bool = _detect_async(handler)
        self.strict: bool = strict
        functools.update_wrapper(self, handler, updated=())

        target = _introspection_target(handler)
        summary, arg_docs = _parse_docstring(getattr(target, "__doc__", None))
        self.description: str = summary if description is None else description
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"tool {self.name!r}: cannot read its signature: {exc}"
            ) from exc
        self._has_var_keyword = False
        self._params: list[_Param] = []
        self.parameters: JSONSchema = self._build(signature, target, arg_docs, schema)
        if strict and (problem := _strict_problem(self.parameters, "$")):
            raise ConfigurationError(
                f"tool {self.name!r} is strict, but its schema is not strict-compatible: {problem}"
            )

    def _build(
        self,
        signature: inspect.Signature,
        target: Any,
        arg_docs: Mapping[str, str],
        schema: Mapping[str, Any] | None,
    ) -> JSONSchema:
        explicit = schema is not None
        if explicit and (not isinstance(schema, Mapping) or schema.get("type") != "object"):
            raise ConfigurationError(
                f"tool {self.name!r}: schema= must be a JSON schema with type 'object', got {schema!r}"
            )
        try:
            hints = typing.get_type_hints(target, include_extras=True)
            if sys.version_info < (3, 11):
                # 3.10 wraps the hint of a parameter defaulting to None in
                # Optional; 3.11 stopped. Take the annotations as written so
                # the schema does not depend on the Python version.
                written = inspect.get_annotations(target, eval_str=True)
                hints.update((k, v) for k, v in written.items() if k in hints)
        except Exception as exc:  # unresolvable forward references and the like
            if not explicit:
                raise ConfigurationError(
                    f"tool {self.name!r}: cannot resolve its type hints: {exc}"
                ) from exc
            hints = {}

        compiler = _SchemaCompiler(self.name, getattr(target, "__globals__", {}))
        properties: JSONSchema = {}
        required: list[str] = []
        for param in signature.parameters.values():
            if param.kind is param.VAR_POSITIONAL or (
                param.kind is param.VAR_KEYWORD and not explicit
            ):
                stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
                raise ConfigurationError(
                    f"tool {self.name!r}: parameter {stars}{param.name} cannot be described "
                    "to the model; use named parameters"
                    + ("" if stars == "*" else " or pass an explicit schema=")
                )
            if param.kind is param.VAR_KEYWORD:
                self._has_var_keyword = True
                continue
            annotation = hints.get(param.name, Any)
            try:
                compiled = compiler.parameter(param.name, annotation)
            except ConfigurationError:
                if not explicit:
                    raise
                # The user described this parameter by hand; pass its JSON through.
                compiled = _ANY
            self._params.append(_Param(param.name, param.kind, param.default, compiled.convert))
            prop = dict(compiled.schema)
            if param.name in arg_docs and arg_docs[param.name] and "description" not in prop:
                prop["description"] = arg_docs[param.name]
            properties[param.name] = prop
            if param.default is param.empty:
                required.append(param.name)
        if schema is not None:
            return copy.deepcopy(dict(schema))
        # A copy, so that editing one tool's schema (a hook may) never
        # reaches a part shared with another tool or with this module.
        return copy.deepcopy(
            {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            }
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.handler(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name!r} {'async' if self.is_async else 'sync'}>"

    def responses_schema(self) -> dict[str, Any]:
        """The tool as a Responses API ``tools`` entry.

        ``strict`` is always sent: the Responses API treats a missing
        ``strict`` as "make it strict if you can", which turns optional
        parameters into required ones.
        """
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
            "strict": self.strict,
        }

    def chat_schema(self) -> dict[str, Any]:
        """The tool as a Chat Completions ``tools`` entry (``strict`` only when set)."""
        function: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def parse_arguments(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Parse the model's JSON arguments and check them against ``parameters``.

        An empty string means no arguments. Raises ``ToolArgumentsError``.
        """
        if isinstance(arguments, str):
            if not arguments.strip():
                data: Any = {}
            else:
                try:
                    data = orjson.loads(arguments)
                except orjson.JSONDecodeError as exc:
                    raise ToolArgumentsError(
                        f"arguments for tool {self.name!r} are not valid JSON: {exc}",
                        tool=self.name,
                    ) from None
        else:
            data = arguments
        if not isinstance(data, Mapping):
            raise ToolArgumentsError(
                f"arguments for tool {self.name!r} must be a JSON object, got {_json_type(data)}",
                tool=self.name,
            )
        checked: dict[str, Any] = {str(k): v for k, v in data.items()}
        problems = _problems(checked, self.parameters)
        # A hand-written schema may not require what the function needs.
        for param in self._params:
            missing = f"$: missing required property {param.name!r}"
            if param.required and param.name not in checked and missing not in problems:
                problems.append(missing)
        if problems:
            shown = problems[:_MAX_PROBLEMS]
            if len(problems) > _MAX_PROBLEMS:
                shown.append(f"... and {len(problems) - _MAX_PROBLEMS} more")
            raise ToolArgumentsError(
                f"invalid arguments for tool {self.name!r}: {'; '.join(shown)}",
                tool=self.name,
                problems=problems,
            )
        return checked

    async def invoke(self, arguments: str | Mapping[str, Any]) -> Any:
        """Parse and check ``arguments``, call the handler, return what it returned.

        Sync handlers run in a worker thread. Raises ``ToolArgumentsError`` for
        bad arguments and whatever the handler raises; ``run_tool`` is the
        variant that never raises.
        """
        data = self.parse_arguments(arguments)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self._params:
            if param.name in data:
                value = data.pop(param.name)
                if param.convert is not None:
                    value = param.convert(value)
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                value = param.default  # later positional-only arguments must not shift
            else:
                continue
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[param.name] = value
        if data and not self._has_var_keyword:
            # Only reachable with a hand-written schema that allows extra keys.
            problems = [f"$: unexpected property {k!r}" for k in data]
            raise ToolArgumentsError(
                f"invalid arguments for tool {self.name!r}: {'; '.join(problems)}",
                tool=self.name,
                problems=problems,
            )
        kwargs.update(data)

        handler: Callable[..., Any] = self.handler
        if self.is_async:
            return await handler(*args, **kwargs)
        # abandon_on_cancel: a timeout must end the wait even though the
        # thread itself cannot be stopped.
        result = await anyio.to_thread.run_sync(
            functools.partial(handler, *args, **kwargs), abandon_on_cancel=True
        )
        # A sync wrapper around a coroutine function (a decorator that lost
        # the coroutine marker) hands back a coroutine: finish the job.
        if inspect.iscoroutine(result):
            result = await result
        return result


@overload
def tool(
    func: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Tool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Turn a sync or async function into a ``Tool``; usable bare or with options.

    Args:
        func: the function (when used bare, as ``@tool``).
        name: the tool's name; the function's ``__name__`` by default.
        description: what the tool does; the docstring's summary by default.
        schema: a JSON schema (type object) for the arguments, replacing the
            one generated from the type hints. Only then may the function
            take ``**kwargs`` (it receives the properties it has no parameter for).
        strict: ask for OpenAI's strict mode; the schema is checked to be
            strict-compatible.

    Raises:
        ConfigurationError: the function cannot be described to the model.
    """

    def wrap(f: Callable[P, R]) -> Tool[P, R]:
        if isinstance(f, Tool):  # re-wrapping a tool makes a copy with new options
            f = f.handler
        return Tool(f, name=name, description=description, schema=schema, strict=strict)

    if func is None:
        return wrap
    return wrap(func)


# ---------------------------------------------------------------------------
# Running tools


@dataclass(slots=True)
class ToolResult:
    """What one tool call produced, as the loop sends it back and the hooks see it.

    ``output`` is the text for the model. ``error`` is ``None`` on success,
    else ``{"type": exception class name, "message": str}``. ``value`` is the
    handler's raw return (``None`` on error). ``duration`` is in seconds.
    """

    call_id: str
    name: str
    arguments: str
    output: str = ""
    error: dict[str, str] | None = None
    duration: float = 0.0
    value: Any = None

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.error is None


def format_output(value: object) -> str:
    """The text the model sees for a handler's return value.

    A string is sent as is, ``None`` as an empty string, anything else as JSON
    (dataclasses, datetimes, enums and non-string keys included), and what
    JSON cannot hold as ``str(value)``.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return _safe_str(value)


def _json_default(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def _exception_group_type() -> type[BaseException] | None:
    group = getattr(builtins, "BaseExceptionGroup", None)
    if group is None:  # Python 3.10: anyio has already imported the backport
        group = getattr(sys.modules.get("exceptiongroup"), "BaseExceptionGroup", None)
    return group


def _leaves(exc: BaseException) -> list[BaseException]:
    group = _exception_group_type()
    if group is not None and isinstance(exc, group):
        nested: Sequence[BaseException] = getattr(exc, "exceptions", ())
        return [leaf for sub in nested for leaf in _leaves(sub)]
    return [exc]


def _describe(exc: BaseException) -> str:
    text = _safe_str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def run_tool(
    tool: Tool[..., Any] | None,
    name: str,
    call_id: str,
    arguments: str,
    *,
    timeout: float | None,
    known: Sequence[str] = (),
) -> ToolResult:
    """Run one function call and report it as a ``ToolResult``; never raises for errors.

    Args:
        tool: the tool, or ``None`` when the model called an unknown name.
        name: the name the model called.
        call_id: the call's id, copied to the result.
        arguments: the raw JSON arguments as the model sent them.
        timeout: seconds the call may take, or ``None`` for no limit.
        known: the registered tool names, listed to the model when ``tool`` is ``None``.

    Raises:
        StopLoop: the handler asked to end the run.
        The backend's cancellation exception: the caller was cancelled.
    """
    result = ToolResult(call_id=call_id, name=name, arguments=arguments)
    start = time.perf_counter()
    try:
        if tool is None:
            raise UnknownToolError(name, known)
        # move_on_after rather than fail_after: a TimeoutError the handler
        # raises itself must be reported as the handler's error, not ours.
        with anyio.move_on_after(timeout) as scope:
            value = await tool.invoke(arguments)
        if scope.cancelled_caught:
            message = f"tool {name!r} timed out after {timeout:g} s"
            result.error = {"type": "TimeoutError", "message": message}
            result.output = f"Error: {message}"
        else:
            result.value = value
            result.output = format_output(value)
    except StopLoop:
        raise
    except anyio.get_cancelled_exc_class():
        raise
    except Exception as exc:
        leaves = _leaves(exc)
        for leaf in leaves:
            if isinstance(leaf, StopLoop):
                raise leaf from None  # a task group in the handler had wrapped it
        # A group of one is reported as its member: that is what went wrong.
        shown = leaves[0] if len(leaves) == 1 else exc
        message = _safe_str(shown)
        if len(leaves) > 1:
            message = f"{message}: {'; '.join(_describe(leaf) for leaf in leaves)}"
        kind = type(shown).__name__
        result.error = {"type": kind, "message": message}
        if isinstance(shown, (ToolArgumentsError, UnknownToolError)):
            result.output = f"Error: {message}"  # the message already says what and where
        else:
            result.output = f"Error: {kind}: {message}" if message else f"Error: {kind}"
    finally:
        result.duration = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------
# Registry


class ToolRegistry(Mapping[str, Tool[..., Any]]):
    """The tools of a loop, by name, in registration order.

    Built from ``Tool`` objects or plain functions (wrapped with ``tool()``).
    Raises ``ConfigurationError`` on a duplicate name.
    """

    def __init__(self, tools: Iterable[Tool[..., Any] | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools.values() if isinstance(tools, Mapping) else tools:
            self.add(item)

    def add(self, item: Tool[..., Any] | Callable[..., Any]) -> Tool[..., Any]:
        """Register a tool (or a function, wrapped with ``tool()``) and return it."""
        new = item if isinstance(item, Tool) else tool(item)
        if new.name in self._tools:
            raise ConfigurationError(
                f"two tools are named {new.name!r}: {self._tools[new.name].handler!r} "
                f"and {new.handler!r}; pass name= to tell them apart"
            )
        self._tools[new.name] = new
        return new

    def __getitem__(self, name: str) -> Tool[..., Any]:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)!r})"

    def responses_schemas(self) -> list[dict[str, Any]]:
        """All tools as Responses API ``tools`` entries."""
        return [t.responses_schema() for t in self._tools.values()]

    def chat_schemas(self) -> list[dict[str, Any]]:
        """All tools as Chat Completions ``tools`` entries."""
        return [t.chat_schema() for t in self._tools.values()]

    async def run(
        self, name: str, call_id: str, arguments: str, *, timeout: float | None = None
    ) -> ToolResult:
        """``run_tool`` for the tool called ``name`` (an unknown name lists the known ones)."""
        return await run_tool(
            self._tools.get(name), name, call_id, arguments, timeout=timeout, known=list(self)
        )
