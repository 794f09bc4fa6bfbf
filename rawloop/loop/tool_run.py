"""Running one tool call: ``run_tool`` turns whatever happens into a ``ToolResult``.

``run_tool`` is what the loop calls for each function call the model makes. It
never raises for anything the model or the handler did: bad JSON, arguments
that do not fit the schema, an unknown tool name, a handler exception or a
timeout all become a ``ToolResult`` whose ``error`` is set and whose ``output``
is a short text the model can read and act on. Two things do propagate:
``StopLoop``, the user's way to end a run cleanly from inside a handler, and
cancellation, which belongs to whoever cancelled.

A sync handler's thread is abandoned on timeout or cancellation: Python cannot
stop a thread, so it runs to completion in the background and its result is
dropped.
"""

from __future__ import annotations

import builtins
import sys
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import orjson

from ..core.errors import RawloopError
from .tool_def import Tool, ToolArgumentsError

__all__ = [
    "StopLoop",
    "ToolResult",
    "UnknownToolError",
    "current_call_id",
    "format_output",
    "run_tool",
]

#: The call_id of the function call being run, seen from inside its handler
#: (sync handlers too: worker threads get a copy of the context); None elsewhere.
current_call_id: ContextVar[str | None] = ContextVar("rawloop_current_call_id", default=None)


class StopLoop(Exception):
    """Raise from a tool handler to end the run cleanly after this tool call.

    ``run_tool`` lets it through unchanged; the loop catches it and finishes
    with ``reason``.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


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


def exception_group_type() -> type[BaseException] | None:
    group = getattr(builtins, "BaseExceptionGroup", None)
    if group is None:  # Python 3.10: anyio has already imported the backport
        group = getattr(sys.modules.get("exceptiongroup"), "BaseExceptionGroup", None)
    return group


def exception_leaves(exc: BaseException) -> list[BaseException]:
    group = exception_group_type()
    if group is not None and isinstance(exc, group):
        nested: Sequence[BaseException] = getattr(exc, "exceptions", ())
        return [leaf for sub in nested for leaf in exception_leaves(sub)]
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
            token = current_call_id.set(call_id)
            try:
                value = await tool.invoke(arguments)
            finally:
                current_call_id.reset(token)
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
        leaves = exception_leaves(exc)
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
