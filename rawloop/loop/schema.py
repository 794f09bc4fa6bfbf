"""Docstrings and type hints to JSON schema, and JSON back to Python values.

Theory of operation
-------------------
``@tool`` reads a function once, when it is decorated: the docstring's summary
and Google-style ``Args:`` give the descriptions (``parse_docstring``), and
each parameter's type hint becomes a JSON schema plus a converter that turns
the JSON the model sends into the Python value the annotation asks for (a
dataclass, an Enum member, a tuple...) (``SchemaCompiler``). Everything that
can be wrong with a definition is found then and raised as
``ConfigurationError``, naming the tool, the parameter and where inside it,
not in the middle of a run.

Converters run after ``rawloop.loop.validate`` has checked the JSON against the
tool's schema, so they convert rather than check. A ``Union`` converter asks
the validator which arms the value fits, and the first that fits decides.
``strict_problem`` tells whether a schema, generated or explicit, would be
refused by OpenAI's strict mode.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from ..core.errors import ConfigurationError
from .validate import json_scalar_type, problems

__all__ = [
    "Compiled",
    "Converter",
    "JSONSchema",
    "SchemaCompiler",
    "parse_docstring",
    "strict_problem",
]

JSONSchema = dict[str, Any]
Converter = Callable[[Any], Any]

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


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
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
class Compiled:
    """A type's JSON schema, and how to turn validated JSON into its Python value."""

    schema: JSONSchema
    convert: Converter | None = None  # None: the JSON value is used as is


_ANY = Compiled({})
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


def _enum_schema(values: Sequence[object]) -> JSONSchema:
    types_ = {json_scalar_type(v) for v in values}
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


class SchemaCompiler:
    """Compiles the type hints of one tool's parameters, one ``parameter()`` call each.

    ``namespace`` (the function's globals) is where string annotations are
    looked up. Unsupported, recursive or unresolvable types raise
    ``ConfigurationError`` naming the tool, the parameter and where inside it.
    """

    def __init__(self, tool_name: str, namespace: Mapping[str, Any]) -> None:
        self._tool_name = tool_name
        self._param = ""
        self._active: list[object] = []  # classes being compiled, to catch recursion
        # Where string annotations are looked up: the function's globals, then
        # the module of each class being compiled.
        self._namespaces: list[Mapping[str, Any]] = [namespace]
        self._qualifiers = _qualifier_origins()

    def parameter(self, name: str, annotation: object) -> Compiled:
        """The schema and converter for parameter ``name`` annotated ``annotation``."""
        self._param = name
        return self._compile(annotation, name)

    def _fail(self, tp: object, where: str, why: str = "unsupported type") -> ConfigurationError:
        location = "" if where == self._param else f" (at {where})"
        return ConfigurationError(
            f"tool {self._tool_name!r}: parameter {self._param!r}{location}: {why} {_type_name(tp)}; "
            "use a supported type or pass an explicit schema= to @tool"
        )

    def _compile(self, tp: Any, where: str) -> Compiled:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        # Annotated first: its metadata may be unhashable, so it must not
        # reach the set and dict lookups below.
        if origin is Annotated:
            return self._annotated(args, where)
        if tp is Any or tp is object:
            return _ANY
        if tp is None or tp is type(None):
            return Compiled({"type": "null"})
        if isinstance(tp, (str, typing.ForwardRef)):
            return self._compile(self._resolve(tp, where), where)
        # A class without type arguments (list, dict...) is its own origin.
        bare = tp if isinstance(tp, type) else None
        if bare in _SCALARS:
            return Compiled(dict(_SCALARS[bare]), _int_converter if bare is int else None)
        alias_type = getattr(typing, "TypeAliasType", None)
        if alias_type is not None and isinstance(tp, alias_type):
            return self._nested(tp, where, lambda: self._compile(tp.__value__, where))
        if callable(tp) and hasattr(tp, "__supertype__"):  # typing.NewType
            return self._compile(tp.__supertype__, where)
        if origin in self._qualifiers:
            return self._compile(args[0], where)
        if origin is Union or origin is types.UnionType:
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
        raise self._fail(tp, where)

    def _nested(self, tp: object, where: str, build: Callable[[], Compiled]) -> Compiled:
        if tp in self._active:
            raise self._fail(tp, where, "recursive type")
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
            raise self._fail(text, where, f"cannot resolve ({exc}) the forward reference") from exc

    def _annotated(self, args: tuple[Any, ...], where: str) -> Compiled:
        inner = self._compile(args[0], where)
        description = next((m for m in args[1:] if isinstance(m, str)), None)
        return inner if description is None else _described(inner, description)

    def _union(self, args: tuple[Any, ...], where: str) -> Compiled:
        arms = [self._compile(arg, where) for arg in args]
        schema: JSONSchema = {"anyOf": [arm.schema for arm in arms]}
        if not any(arm.convert for arm in arms):
            return Compiled(schema)

        def convert(value: Any) -> Any:
            # The first arm the value fits decides, as a reader of the
            # annotation would expect (int | str given 1 gives 1, not "1").
            for arm in arms:
                if not problems(value, arm.schema):
                    return arm.convert(value) if arm.convert else value
            return value

        return Compiled(schema, convert)

    def _literal(self, tp: object, args: tuple[Any, ...], where: str) -> Compiled:
        values = [a.value if isinstance(a, enum.Enum) else a for a in args]
        if any(json_scalar_type(v) is None for v in values):
            raise self._fail(tp, where, "Literal values must be JSON scalars in")
        schema = _enum_schema(values)
        members = {_scalar_key(a.value): a for a in args if isinstance(a, enum.Enum)}
        if not members:
            return Compiled(schema)

        def convert(value: Any) -> Any:
            return members.get(_scalar_key(value), value)

        return Compiled(schema, convert)

    def _enum(self, tp: type[enum.Enum], where: str) -> Compiled:
        values = [member.value for member in tp]
        if not values or any(json_scalar_type(v) is None for v in values):
            raise self._fail(tp, where, "Enum values must be JSON scalars in")

        def convert(value: Any) -> Any:
            return value if isinstance(value, tp) else tp(value)

        return Compiled(_enum_schema(values), convert)

    def _array(
        self,
        args: tuple[Any, ...],
        where: str,
        container: Callable[[Any], Any] | None = None,
        *,
        unique: bool = False,
    ) -> Compiled:
        """An array; ``container`` (set, tuple...) is what the JSON list becomes."""
        schema: JSONSchema = {"type": "array"}
        item = self._compile(args[0], f"{where}[]") if args else _ANY
        if item.schema:
            schema["items"] = item.schema
        if unique:
            schema["uniqueItems"] = True
        item_convert = item.convert
        if item_convert is None and container is None:
            return Compiled(schema)

        def convert(value: Any) -> Any:
            if not isinstance(value, list):
                return value
            items = [item_convert(v) for v in value] if item_convert else value
            return container(items) if container else items

        return Compiled(schema, convert)

    def _tuple(self, args: tuple[Any, ...], where: str) -> Compiled:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return self._array(args[:1], where, tuple)
        items = [self._compile(arg, f"{where}[{i}]") for i, arg in enumerate(args)]
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

        return Compiled(schema, convert)

    def _mapping(self, tp: object, args: tuple[Any, ...], where: str) -> Compiled:
        if args and args[0] not in (str, Any):
            raise self._fail(tp, where, "JSON object keys are strings; unsupported key type in")
        value = self._compile(args[1], f"{where}{{}}") if len(args) == 2 else _ANY
        schema: JSONSchema = {"type": "object"}
        if value.schema:
            schema["additionalProperties"] = value.schema
        value_convert = value.convert
        if value_convert is None:
            return Compiled(schema)

        def convert(obj: Any) -> Any:
            if not isinstance(obj, dict):
                return obj
            return {k: value_convert(v) for k, v in obj.items()}

        return Compiled(schema, convert)

    def _hints(self, cls: type, where: str) -> dict[str, Any]:
        try:
            return typing.get_type_hints(cls, include_extras=True)
        except Exception as exc:  # NameError, TypeError: unresolvable annotations
            raise self._fail(cls, where, f"cannot resolve the type hints ({exc}) of") from exc

    def _object(
        self, fields: Mapping[str, Compiled], required: Iterable[str]
    ) -> tuple[JSONSchema, dict[str, Converter]]:
        wanted = set(required)
        schema: JSONSchema = {
            "type": "object",
            "properties": {name: c.schema for name, c in fields.items()},
            "required": [name for name in fields if name in wanted],
            # Unknown keys would make a dataclass constructor fail, and strict
            # mode needs this on every object.
            "additionalProperties": False,
        }
        converters = {name: c.convert for name, c in fields.items() if c.convert}
        return schema, converters

    def _dataclass(self, cls: type, where: str) -> Compiled:
        hints = self._hints(cls, where)
        fields: dict[str, Compiled] = {}
        required: list[str] = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            compiled = self._compile(hints.get(f.name, Any), f"{where}.{f.name}")
            description = f.metadata.get("description")
            if isinstance(description, str) and "description" not in compiled.schema:
                compiled = _described(compiled, description)
            fields[f.name] = compiled
            no_default = f.default is dataclasses.MISSING
            if no_default and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        schema, converters = self._object(fields, required)

        def convert(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return cls(**_convert_fields(converters, value))

        return Compiled(schema, convert)

    def _typeddict(self, cls: type, where: str) -> Compiled:
        hints = self._hints(cls, where)
        fields = {name: self._compile(hint, f"{where}.{name}") for name, hint in hints.items()}
        required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        schema, converters = self._object(fields, required_keys)
        if not converters:
            return Compiled(schema)

        def convert(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return _convert_fields(converters, value)

        return Compiled(schema, convert)


def _described(compiled: Compiled, description: str) -> Compiled:
    return Compiled({**compiled.schema, "description": description}, compiled.convert)


def _convert_fields(converters: Mapping[str, Converter], value: dict[str, Any]) -> dict[str, Any]:
    return {k: converters[k](v) if k in converters else v for k, v in value.items()}


def _scalar_key(value: object) -> tuple[str | None, object]:
    # Keeps True and 1 apart when looking Literal/Enum values up.
    return (json_scalar_type(value), value)


def strict_problem(schema: Any, path: str = "$") -> str | None:
    """Why OpenAI's strict mode would refuse ``schema`` (its first problem, by path), or None."""
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
            if problem := strict_problem(sub, f"{path}.{name}"):
                return problem
    for sub in (schema.get("items"), *schema.get("prefixItems", ())):
        if problem := strict_problem(sub, f"{path}[]"):
            return problem
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, ()):
            if problem := strict_problem(sub, path):
                return problem
    return None
