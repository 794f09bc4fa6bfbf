"""How a run is answered: the event stream's events, the JSON transcript, failures.

``EventHooks`` turns a run's deltas, tool results and retries into the named
events of the ``/chat`` stream (and of the WebSocket); ``transcript`` and
``summary`` are the JSON documents a finished run is answered with.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.errors import APIError, RawloopError, StreamError
from ..loop.hooks import ErrorInfo, EventInfo, ResultInfo
from ..loop.state import RunResult
from .asgi import Emit, error_document
from .requests import RequestContext

__all__ = ["EventHooks", "failure", "log_failure", "status_of", "summary", "transcript"]

logger = logging.getLogger("rawloop.http")


class EventHooks:
    """Per-run hooks turning the loop's deltas and results into client events."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit

    async def on_event(self, info: EventInfo) -> None:
        for delta in info.deltas:
            if delta.kind == "text":
                await self._emit("text", {"text": delta.text})
            elif delta.kind == "call":
                await self._emit(
                    "tool_call",
                    {
                        "call_id": delta.call_id,
                        "name": delta.name,
                        "arguments": delta.text,
                        "iteration": info.iteration,
                    },
                )

    async def on_result(self, info: ResultInfo) -> None:
        result = info.result
        await self._emit(
            "tool_result",
            {
                "call_id": result.call_id,
                "name": result.name,
                "output": result.output,
                "error": result.error,
                "iteration": info.iteration,
            },
        )

    async def on_error(self, info: ErrorInfo) -> None:
        if info.where == "request" and info.will_retry:
            await self._emit(
                "retry",
                {
                    "iteration": info.iteration,
                    "attempt": info.attempt,
                    "message": str(info.error),
                    "delay": info.delay,
                },
            )


# -- answers ---------------------------------------------------------------------------


def summary(result: RunResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "stop_reason": result.stop_reason,
        "iterations": result.iterations,
        "usage": result.usage,
        "model": result.state.model,
    }


def transcript(result: RunResult) -> dict[str, Any]:
    return {
        "final_response": result.text,
        "messages": result.items,
        "metadata": {
            "model": result.state.model,
            "total_input_tokens": result.usage.get("input_tokens", 0),
            "total_output_tokens": result.usage.get("output_tokens", 0),
            "iterations": result.iterations,
            "stop_reason": result.stop_reason,
        },
    }


def status_of(exc: BaseException) -> int:
    if isinstance(exc, (APIError, StreamError)):
        return 502  # the model API failed, not this server
    return 500


def failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RawloopError):
        return error_document(str(exc), type=type(exc).__name__)
    # Anything else is a bug somewhere: its text stays in the server's log.
    return error_document(f"internal error ({type(exc).__name__})", type="internal_error")


def log_failure(context: RequestContext, exc: BaseException) -> None:
    if isinstance(exc, RawloopError):
        logger.warning("rawloop.http: run for %s %s failed: %s", context.route, context.agent, exc)
    else:
        logger.error(
            "rawloop.http: run for %s %s failed", context.route, context.agent, exc_info=exc
        )
