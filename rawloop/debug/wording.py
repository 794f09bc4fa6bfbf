"""One-line wording of what a run does, shared by the debugger and the ``rawloop step`` shell.

Progress lines, departures from a recording and the shell's own output all go
through these, so a turn, a difference or a patch operation reads the same
wherever it shows up. Every result is one line: newlines are escaped and long
values cut at a limit.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core.jsondiff import MISSING, Difference

__all__ = ["describe_difference", "describe_op", "describe_turn", "shorten"]


def describe_turn(turn: Any) -> str:
    """One line for a turn: its calls, or its text."""
    if turn.calls:
        calls = ", ".join(f"{c.name}({shorten(c.arguments, 60)})" for c in turn.calls)
        return f"{turn.status}, called {calls}"
    if turn.text:
        return f"{turn.status}, text {shorten(orjson.dumps(turn.text).decode())}"
    return f"{turn.status}, no text and no calls"


def describe_difference(found: Difference) -> str:
    """``input[2].output (recorded "2869461", now "42")``."""
    return f"{found.path or '<root>'} (recorded {_value(found.a)}, now {_value(found.b)})"


def describe_op(op: dict[str, Any]) -> str:
    """``replace /results/0/output``: an RFC 6902 operation without its value."""
    return f"{op.get('op')} {op.get('path')}"


def shorten(text: str, limit: int = 100) -> str:
    """``text`` on one line, cut to ``limit`` characters (ending in ``...`` when cut)."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value(value: Any) -> str:
    if value is MISSING:
        return "nothing"
    try:
        return shorten(orjson.dumps(value).decode(), 60)
    except TypeError:
        return shorten(repr(value), 60)
