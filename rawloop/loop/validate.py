"""A small JSON-schema checker for the arguments the model sends to a tool.

Theory of operation
-------------------
The validator understands the keywords ``rawloop.loop.schema`` generates
(``type``, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf``, ``properties``,
``required``, ``additionalProperties``, ``items``, ``prefixItems``,
``minItems``/``maxItems``); any other keyword in an explicit schema is left
for the handler to check, and so is a ``type`` name it does not know.

It collects every problem rather than stopping at the first, each prefixed
with a JSON path (``$.items[2].name: expected string, got integer``), so that
the model can fix its whole call in one go. When no arm of an ``anyOf`` fits
and only one arm takes the value's JSON type (the ``array`` of
``list[X] | None``), the problems inside that arm are reported instead of a
bare "expected array or null". ``oneOf`` is checked as ``anyOf`` (a value
that fits two arms passes). As JSON Schema does, it counts ``3.0`` as an
integer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

__all__ = ["json_scalar_type", "json_type", "problems"]


def json_scalar_type(value: object) -> str | None:
    """The JSON type name of a scalar (``null``, ``boolean``...), or None if it is not one."""
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


def json_type(value: object) -> str:
    """The JSON type name of ``value``; the Python class name for what JSON cannot hold."""
    scalar = json_scalar_type(value)
    if scalar is not None:
        return scalar
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def problems(value: Any, schema: Any, path: str = "$") -> list[str]:
    """What is wrong with ``value`` against ``schema``, one text per problem; empty when it fits."""
    out: list[str] = []
    _check(value, schema, path, out)
    return out


def _is_json_type(value: object, expected: str) -> bool:
    actual = json_type(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        return actual == "integer" or (isinstance(value, float) and value.is_integer())
    if expected in ("string", "boolean", "null", "array", "object"):
        return actual == expected
    return True  # a type name this validator does not know: not its business


def _fits_type(value: object, kind: object) -> bool:
    """Whether ``value`` has the JSON ``type`` (a name or a list of names); False for none."""
    kinds = kind if isinstance(kind, list) else [kind]
    return any(isinstance(k, str) and _is_json_type(value, k) for k in kinds)


def _json_equal(a: object, b: object) -> bool:
    ta, tb = json_type(a), json_type(b)
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


def _check(value: Any, schema: Any, path: str, out: list[str]) -> None:
    if schema is False:
        out.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, dict):
        return
    for key in ("anyOf", "oneOf"):
        arms = schema.get(key)
        if isinstance(arms, list) and all(problems(value, arm, path) for arm in arms):
            # When only one arm takes this JSON type ("array" of list[X] | None),
            # what is wrong inside it is the useful message.
            fitting = [a for a in arms if isinstance(a, dict) and _fits_type(value, a.get("type"))]
            if len(fitting) == 1:
                _check(value, fitting[0], path, out)
            else:
                out.append(f"{path}: expected {_expected(schema)}, got {json_type(value)}")
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
        out.append(f"{path}: expected {_expected(schema)}, got {json_type(value)}")
        return
    if isinstance(value, Mapping):
        _check_object(value, schema, path, out)
    elif isinstance(value, (list, tuple)):
        _check_array(value, schema, path, out)


def _check_object(
    value: Mapping[str, Any], schema: dict[str, Any], path: str, out: list[str]
) -> None:
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


def _check_array(value: Sequence[Any], schema: dict[str, Any], path: str, out: list[str]) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        out.append(f"{path}: expected at least {low} items, got {len(value)}")
    if isinstance(high, int) and len(value) > high:
        out.append(f"{path}: expected at most {high} items, got {len(value)}")
    prefix = schema.get("prefixItems", ())
    items = schema.get("items", True)
    for i, item in enumerate(value):
        _check(item, prefix[i] if i < len(prefix) else items, f"{path}[{i}]", out)
