"""The hook bus: every step of the loop, seen and (at the breakpoint) changed.

A hook is any object (a module, a class instance, a namespace) whose
attributes named after hook points are callables, sync or async. Each hook
point passes one argument:

=================  ==================================================
``on_request``     ``RequestInfo``: method, URL, redacted headers, raw body
``on_response``    ``ResponseInfo``: status and headers, before the body
``on_chunk``       ``ChunkInfo``: each raw byte chunk as it arrived
``on_event``       ``EventInfo``: each server-sent event, its JSON and deltas
``on_decision``    ``Turn``-carrying ``DecisionInfo``: text and calls
``on_result``      ``ResultInfo``: one tool call's output or error
``on_breakpoint``  the mutable ``LoopState``, once per iteration
``on_edit``        ``EditInfo``: what the breakpoint changed (RFC 6902)
``on_handoff``     ``HandoffInfo``: a tool handed the conversation to another loop
``on_error``       ``ErrorInfo``: a failed attempt, a tool or hook problem
``on_end``         ``EndInfo``: the run's stop reason, usage and duration
=================  ==================================================

Order within one iteration: ``on_handoff`` (if the last turn's tools asked for
one) → ``on_breakpoint`` → ``on_edit`` (if the state
changed) → per attempt ``on_request`` → ``on_response`` → (``on_chunk`` →
``on_event``…)… → ``on_error`` when the attempt failed and is retried →
``on_decision`` → the tools run concurrently → ``on_result`` once per call, in
the order the model listed the calls. ``on_end`` fires once, last.

An observer that raises is reported to ``on_error`` and as a warning, and the
run goes on (``strict=True`` makes it fatal). A breakpoint hook that raises
always aborts the run with ``HookError``: it was meant to change what is sent.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError, HookError

if TYPE_CHECKING:
    from ..core.sse import ServerSentEvent
    from ..core.turn import Delta, Turn

__all__ = [
    "HOOK_POINTS",
    "ChunkInfo",
    "DecisionInfo",
    "EditInfo",
    "EndInfo",
    "ErrorInfo",
    "EventInfo",
    "HandoffInfo",
    "HookBus",
    "RequestInfo",
    "ResponseInfo",
    "ResultInfo",
]

HOOK_POINTS = (
    "on_request",
    "on_response",
    "on_chunk",
    "on_event",
    "on_decision",
    "on_result",
    "on_breakpoint",
    "on_edit",
    "on_handoff",
    "on_error",
    "on_end",
)


@dataclass(slots=True)
class RequestInfo:
    """A request about to be sent. ``headers`` are already redacted."""

    iteration: int
    attempt: int
    model: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any]


@dataclass(slots=True)
class ResponseInfo:
    """Status and headers of an answer, before its body is read."""

    iteration: int
    attempt: int
    status: int
    headers: dict[str, str]
    request_id: str | None
    elapsed: float  # seconds from sending the request to the headers


@dataclass(slots=True)
class ChunkInfo:
    """One raw chunk of the response body, exactly as received."""

    iteration: int
    attempt: int
    data: bytes
    offset: int  # byte offset of this chunk in the body
    elapsed: float  # seconds since the request was sent


@dataclass(slots=True)
class EventInfo:
    """One server-sent event, its parsed JSON (None for ``[DONE]``) and its deltas."""

    iteration: int
    attempt: int
    sse: ServerSentEvent
    payload: dict[str, Any] | None
    deltas: list[Delta]


@dataclass(slots=True)
class DecisionInfo:
    """The finished turn of one iteration."""

    iteration: int
    turn: Turn


@dataclass(slots=True)
class ResultInfo:
    """One tool call's result (``result`` is a ``rawloop.loop.tools.ToolResult``)."""

    iteration: int
    result: Any


@dataclass(slots=True)
class EditInfo:
    """What the breakpoint hooks changed in the state, as RFC 6902 operations."""

    iteration: int
    patch: list[dict[str, Any]]


@dataclass(slots=True)
class HandoffInfo:
    """A tool returned ``Handoff``: from the next request on, ``to_model``'s loop is in force."""

    iteration: int
    from_model: str
    to_model: str
    reason: str = ""


@dataclass(slots=True)
class ErrorInfo:
    """Something went wrong. ``where`` is ``request``, ``tool`` or ``hook:NAME``."""

    iteration: int
    attempt: int
    where: str
    error: BaseException
    will_retry: bool = False
    delay: float = 0.0


@dataclass(slots=True)
class EndInfo:
    """The run ended (also after an error, which ``error`` then holds)."""

    stop_reason: str
    iterations: int
    usage: dict[str, int]
    duration: float
    error: BaseException | None = None


Callback = Callable[[Any], Any]


@dataclass
class HookBus:
    """Holds hooks and calls them. ``strict`` makes a failing observer fatal."""

    strict: bool = False
    _hooks: list[Any] = field(default_factory=list)
    _points: dict[str, list[Callback]] = field(
        default_factory=lambda: {name: [] for name in HOOK_POINTS}
    )

    @classmethod
    def of(cls, hooks: Iterable[Any] = (), *, strict: bool = False) -> HookBus:
        bus = cls(strict=strict)
        for hook in hooks:
            bus.add(hook)
        return bus

    def add(self, hook: Any) -> None:
        """Register a hook object; unknown ``on_*`` names are an error, listing the valid ones."""
        callbacks: list[tuple[str, Callback]] = []
        for name in _hook_attributes(hook):
            if name not in self._points:
                raise ConfigurationError(
                    f"{_describe(hook)} has {name!r}, which is not a hook point; "
                    f"valid names: {', '.join(HOOK_POINTS)}"
                )
            callback = getattr(hook, name)
            if not callable(callback):
                raise ConfigurationError(f"{_describe(hook)}.{name} is not callable")
            callbacks.append((name, callback))
        if not callbacks:
            raise ConfigurationError(
                f"{_describe(hook)} has no hook functions; name them after a hook point: "
                f"{', '.join(HOOK_POINTS)}"
            )
        # Register only once the whole hook checked out: a refused hook leaves no trace.
        for name, callback in callbacks:
            self._points[name].append(callback)
        self._hooks.append(hook)

    def remove(self, hook: Any) -> None:
        """Unregister a hook added earlier."""
        self._hooks.remove(hook)
        for name in _hook_attributes(hook):
            callback = getattr(hook, name)
            self._points[name] = [c for c in self._points[name] if c != callback]

    @property
    def hooks(self) -> tuple[Any, ...]:
        return tuple(self._hooks)

    def has(self, point: str) -> bool:
        """Whether anything listens on ``point`` (lets hot paths skip building info objects)."""
        return bool(self._points[point])

    async def emit(self, point: str, info: Any, *, iteration: int = 0, attempt: int = 0) -> None:
        """Call every observer of ``point``; failures are reported, not raised (unless strict)."""
        for callback in self._points[point]:
            try:
                result = callback(info)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if self.strict:
                    raise HookError(f"hook {_name(callback)} failed in {point}: {exc!r}") from exc
                warnings.warn(
                    f"rawloop: hook {_name(callback)} failed in {point}: {exc!r}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                if point == "on_error":
                    continue  # reported as a warning only: never recurse into on_error
                await self.emit(
                    "on_error",
                    ErrorInfo(iteration, attempt, f"hook:{_name(callback)}", exc),
                )

    async def breakpoint(self, state: Any) -> None:
        """Call the breakpoint hooks; any failure aborts the run with ``HookError``."""
        for callback in self._points["on_breakpoint"]:
            try:
                result = callback(state)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise HookError(
                    f"breakpoint hook {_name(callback)} failed at iteration "
                    f"{getattr(state, 'iteration', '?')}: {exc!r}"
                ) from exc


def _hook_attributes(hook: Any) -> list[str]:
    return [name for name in dir(hook) if name.startswith("on_") and not name.startswith("on__")]


def _describe(hook: Any) -> str:
    if inspect.ismodule(hook):
        return f"hook module {hook.__name__}"
    return f"hook {type(hook).__name__}"


def _name(callback: Callback) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
