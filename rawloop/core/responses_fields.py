"""The Responses API events' fields that key the accumulator's state or reach a Turn, type-checked.

Each raises ``FieldTypeError`` (the parser turns it into ``InvalidEventData``
naming the event and its offset) instead of letting a wrong type reach a
dict key or a string join.
"""

from __future__ import annotations

from typing import Any

from .accumulator import FieldTypeError, int_field, kind, str_field

__all__ = ["checked_response", "delta_text", "output_item", "part_key"]


def delta_text(p: dict[str, Any]) -> str:
    """A fragment event's ``delta``, a string."""
    delta = p.get("delta")
    if type(delta) is not str:
        what = "missing" if delta is None else kind(delta)
        raise FieldTypeError(f"delta is {what}, not a string")
    return delta


def part_key(p: dict[str, Any], index_key: str) -> tuple[str, int]:
    """(item_id, part index) of a fragment event, checked: it keys a dict."""
    return str_field(p, "item_id") or "", int_field(p, index_key)


def output_item(item: Any, where: str) -> dict[str, Any]:
    """An output item, its identifying fields checked (they key dicts and become calls)."""
    if type(item) is not dict:
        raise FieldTypeError(f"{where.rstrip('.')} is {kind(item)}, not an object")
    for key in ("id", "call_id", "name", "type"):
        str_field(item, key, where)
    return item


def checked_response(response: Any) -> dict[str, Any]:
    """A response object's fields that reach the Turn, checked."""
    if type(response) is not dict:
        raise FieldTypeError(f"response is {kind(response)}, not an object")
    for key in ("id", "model", "status"):
        str_field(response, key, "response.")
    for key in ("usage", "error"):
        value = response.get(key)
        if value is not None and type(value) is not dict:
            raise FieldTypeError(f"response.{key} is {kind(value)}, not an object")
    output = response.get("output")
    if output is not None:
        if type(output) is not list:
            raise FieldTypeError(f"response.output is {kind(output)}, not an array")
        for i, item in enumerate(output):
            output_item(item, f"response.output[{i}].")
    return response
