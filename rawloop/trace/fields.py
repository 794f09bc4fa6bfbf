"""The field types of each trace record kind, as docs/trace-format.md gives them."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..core.accumulator import kind as json_kind
from ..core.dialect import DIALECTS

__all__ = ["record_problem"]

# A trace comes from a customer: every field a tool reads is checked on load, so
# that show, replay, diff and to-test meet only the types docs/trace-format.md
# gives. Unknown kinds and unknown fields are kept unchecked (the format grows).

Check = Callable[[Any], bool]


def _any(v: Any) -> bool:
    return True


def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _int(v: Any) -> bool:
    return type(v) is int


def _number(v: Any) -> bool:
    return type(v) is float or type(v) is int


def _str(v: Any) -> bool:
    return type(v) is str


def _dialect(v: Any) -> bool:
    return v in DIALECTS


def _url(v: Any) -> bool:
    # Replay sends requests to it: an absolute http(s) URL with nothing a URL
    # parser would trip on (spaces, control characters).
    # (A bare name, as tests write, is let through: httpx takes it as relative.)
    if type(v) is not str or not v.isprintable() or " " in v:
        return False
    try:
        scheme = urlsplit(v).scheme
    except ValueError:  # e.g. "http://[not an address]"
        return False
    return scheme in ("http", "https") or (not scheme and ":" not in v)


def _bool(v: Any) -> bool:
    return type(v) is bool


def _obj(v: Any) -> bool:
    return type(v) is dict


def _list(v: Any) -> bool:
    return type(v) is list


def _or_null(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _str_list(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _headers(v: Any) -> bool:
    return type(v) is dict and all(type(x) is str for x in v.values())


def _patch(v: Any) -> bool:
    return type(v) is list and all(
        type(op) is dict and type(op.get("op")) is str and type(op.get("path")) is str for op in v
    )


_NAMES: dict[Check, str] = {
    _count: "an integer >= 0",
    _int: "an integer",
    _number: "a number",
    _str: "a string",
    _bool: "a boolean",
    _url: "an http(s) URL",
    _obj: "an object",
    _list: "an array",
    _str_list: "an array of strings",
    _headers: "an object of strings",
    _patch: "an array of JSON Patch operations (objects with string 'op' and 'path')",
}

#: Per kind: field -> (check, required). ``withheld`` may be on any record.
_FIELDS: dict[str, dict[str, tuple[Check, bool]]] = {
    "header": {
        "dialect": (_dialect, False),
        "base_url": (_url, False),
        "model": (_or_null(_str), False),
        "created": (_str, False),
        "metadata": (_obj, False),
        "rawloop": (_str, False),
    },
    "request": {
        "iteration": (_count, True),
        "attempt": (_count, True),
        "body": (_obj, True),
        "method": (_str, False),
        "url": (_url, False),
        "headers": (_headers, False),
    },
    "response": {
        "iteration": (_count, True),
        "attempt": (_count, True),
        "status": (_int, True),
        "headers": (_headers, False),
        "request_id": (_or_null(_str), False),
        "t": (_number, False),
    },
    "chunk": {
        "iteration": (_count, True),
        "attempt": (_count, True),
        "text": (_str, False),
        "b64": (_str, False),
        "t": (_number, False),
        "redacted": (_bool, False),
    },
    "decision": {"iteration": (_count, True), "turn": (_obj, True), "attempt": (_count, False)},
    "result": {
        "iteration": (_count, True),
        "call_id": (_str, True),
        "output": (_any, True),  # a string from rawloop; other writers put JSON here
        "name": (_str, False),
        "arguments": (_str, False),
        "error": (_or_null(_obj), False),
        "duration": (_number, False),
    },
    "edit": {"iteration": (_count, True), "patch": (_patch, True)},
    "handoff": {
        "iteration": (_count, True),
        "from_model": (_or_null(_str), False),
        "to_model": (_or_null(_str), False),
        "reason": (_or_null(_str), False),
    },
    "error": {
        "iteration": (_count, False),
        "attempt": (_count, False),
        "where": (_str, False),
        "type": (_str, False),
        "message": (_str, False),
        "will_retry": (_bool, False),
        "delay": (_number, False),
    },
    "end": {
        "stop_reason": (_str, True),
        "iterations": (_count, False),
        "usage": (_obj, False),
        "duration": (_number, False),
        "error": (_or_null(_str), False),
    },
}

#: The fields of a decision's turn (``Turn.to_dict()``) that tools read.
_TURN: dict[str, Check] = {
    "dialect": _dialect,
    "response_id": _or_null(_str),
    "model": _or_null(_str),
    "status": _str,
    "text": _str,
    "calls": _list,
    "output": _list,
    "usage": _or_null(_obj),
    "error": _or_null(_obj),
    "finish_reason": _or_null(_str),
    "reasoning": _str,
    "refusal": _str,
    "warnings": _str_list,
    "unknown_events": _list,
    "event_count": _count,
    "choices": _list,
}
_CALL: dict[str, Check] = {
    "call_id": _str,
    "name": _str,
    "arguments": _str,
    "item_id": _or_null(_str),
}


def _name(check: Check) -> str:
    return _NAMES.get(check, "one of the values the format allows")


def _check_fields(data: dict[str, Any], fields: dict[str, Check], where: str) -> str | None:
    """The first field of ``data`` whose type is wrong, described; None when all are right."""
    for name, check in fields.items():
        if name in data and not check(data[name]):
            return f"{where}{name} is {json_kind(data[name])}, not {_name(check)}"
    return None


def _check_turn(turn: dict[str, Any], where: str, depth: int = 0) -> str | None:
    problem = _check_fields(turn, _TURN, where)
    if problem:
        return problem
    for i, call in enumerate(turn.get("calls", ())):
        if type(call) is not dict:
            return f"{where}calls[{i}] is {json_kind(call)}, not an object"
        problem = _check_fields(call, _CALL, f"{where}calls[{i}].")
        if problem:
            return problem
    for i, item in enumerate(turn.get("output", ())):
        if type(item) is not dict:
            return f"{where}output[{i}] is {json_kind(item)}, not an object"
    for i, choice in enumerate(turn.get("choices", ())):
        if type(choice) is not dict or depth > 0:
            return f"{where}choices[{i}] is {json_kind(choice)}, not a turn object"
        problem = _check_turn(choice, f"{where}choices[{i}].", depth + 1)
        if problem:
            return problem
    return None


def record_problem(kind: str, data: dict[str, Any]) -> str | None:
    """What is wrong with a record of ``kind`` (its first bad field), or None."""
    fields = _FIELDS.get(kind)
    problem = None
    for name in ("iteration", "attempt"):  # on any record, of any kind: Record reads them
        if name in data and not _count(data[name]):
            return f"{kind} record: {name} is {json_kind(data[name])}, not {_name(_count)}"
    if fields is not None:
        for name, (check, required) in fields.items():
            if name not in data:
                if required:
                    problem = f"{kind} record has no {name!r}"
                    break
            elif not check(data[name]):
                problem = f"{kind} record: {name} is {json_kind(data[name])}, not {_name(check)}"
                break
    if problem is None and "withheld" in data and not _str_list(data["withheld"]):
        problem = (
            f"{kind} record: withheld is {json_kind(data['withheld'])}, not an array of strings"
        )
    if problem is None and kind == "decision":
        problem = _check_turn(data["turn"], "decision record: turn.")
    if problem is None and kind == "chunk":
        problem = _check_chunk(data)
    return problem


def _check_chunk(data: dict[str, Any]) -> str | None:
    if "text" not in data and "b64" not in data:
        return "chunk record has neither 'text' nor 'b64'"
    if "b64" in data and "text" not in data:
        try:
            base64.b64decode(data["b64"], validate=True)
        except ValueError:
            return "chunk 'b64' is not base64"
    return None
