"""Running one turn's function calls: concurrently, watched, and failing with one typed error.

The calls of a turn run side by side in a task group. A call running longer
than ``warn_after`` seconds is reported while it runs (``SlowToolWarning``
as a warning and to the ``on_error`` hooks, ``where="tool"``), with or
without a ``tool_timeout``: a hanging tool is otherwise invisible.

Registered tools never raise (``run_tool`` turns every failure into a
result). A ``tool_runner`` may: replay raises ``ReplayDivergence`` for a call
the trace never ran. Each call's error is caught where it happens, so the
siblings finish, and the first one in the model's order is raised as it is,
never wrapped in the task group's ``ExceptionGroup``; the others go to the
``on_error`` hooks first.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Sequence

import anyio

from ..core.turn import FunctionCall
from .hooks import ErrorInfo, HookBus
from .tool_run import exception_group_type, exception_leaves
from .tools import StopLoop, ToolRegistry, ToolResult, run_tool

__all__ = ["SlowToolWarning", "ToolRunner", "run_calls"]

ToolRunner = Callable[[FunctionCall], Awaitable[ToolResult]]


class SlowToolWarning(RuntimeWarning):
    """A tool call has been running for longer than the loop's ``tool_warn_after``."""


async def run_calls(
    calls: Sequence[FunctionCall],
    tools: ToolRegistry,
    runner: ToolRunner | None,
    *,
    timeout: float | None,
    warn_after: float | None,
    bus: HookBus,
    iteration: int,
) -> tuple[list[ToolResult], list[StopLoop]]:
    """Run ``calls`` concurrently: their results in the model's order, and the stops asked for.

    Raises the first error a ``runner`` raised (in call order), after
    reporting the others to ``on_error``.
    """
    results: list[ToolResult | None] = [None] * len(calls)
    errors: list[Exception | None] = [None] * len(calls)
    stops: list[StopLoop] = []
    known = list(tools)

    async def run_one(index: int) -> None:
        call = calls[index]
        try:
            if runner is not None:
                results[index] = await runner(call)
                return
            results[index] = await run_tool(
                tools.get(call.name),
                call.name,
                call.call_id,
                call.arguments,
                timeout=timeout,
                known=known,
            )
        except StopLoop as stop:
            stops.append(stop)
            reason = stop.reason or "stopped"
            results[index] = ToolResult(
                call.call_id,
                call.name,
                call.arguments,
                output=f"The run was stopped: {reason}",
                error={"type": "StopLoop", "message": reason},
            )
        except Exception as exc:  # a runner's: raised once the siblings are done
            errors[index] = exc

    async def watch() -> None:
        assert warn_after is not None
        await anyio.sleep(warn_after)
        for index, call in enumerate(calls):
            if results[index] is None and errors[index] is None:
                warning = SlowToolWarning(
                    f"tool {call.name!r} (call_id {call.call_id}) has been running for more "
                    f"than {warn_after:g} s"
                    + (f" (it times out at {timeout:g} s)" if timeout is not None else "")
                )
                warnings.warn(warning, stacklevel=1)
                await bus.emit(
                    "on_error", ErrorInfo(iteration, 0, "tool", warning), iteration=iteration
                )

    try:
        if len(calls) == 1 and warn_after is None:
            await run_one(0)
        else:
            async with anyio.create_task_group() as outer:
                if warn_after is not None:
                    outer.start_soon(watch)
                async with anyio.create_task_group() as group:
                    for index in range(len(calls)):
                        group.start_soon(run_one, index)
                outer.cancel_scope.cancel()  # the calls are done: stop watching
    except _group_type() as group_error:
        # Only a warning turned into an error (or an interrupt) gets here: never a group.
        raise _first(group_error) from None
    failed = [e for e in errors if e is not None]
    if failed:
        for other in failed[1:]:
            await bus.emit("on_error", ErrorInfo(iteration, 0, "tool", other), iteration=iteration)
        raise failed[0]
    return [r for r in results if r is not None], stops


def _group_type() -> type[BaseException]:
    group = exception_group_type()
    assert group is not None  # on Python 3.10, anyio has imported the backport
    return group


def _first(error: BaseException) -> BaseException:
    """The first leaf of an exception group that is not a cancellation."""
    leaves = exception_leaves(error)
    cancelled = anyio.get_cancelled_exc_class()
    return next((leaf for leaf in leaves if not isinstance(leaf, cancelled)), leaves[0])
