"""One turn's tool calls: a runner's error comes out alone and typed, a hanging tool is reported."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from rawloop import ReplayDivergence, ToolResult, tool
from rawloop.core.turn import FunctionCall
from rawloop.loop.calls import SlowToolWarning
from rawloop.loop.hooks import ErrorInfo

from ..conftest import ScriptedAPI
from .test_loop import call_reply, loop_for, text_reply

pytestmark = pytest.mark.anyio

THREE_CALLS = call_reply(("c1", "a", "{}"), ("c2", "b", "{}"), ("c3", "c", "{}"))


class Errors:
    def __init__(self) -> None:
        self.seen: list[ErrorInfo] = []

    def on_error(self, info: ErrorInfo) -> None:
        self.seen.append(info)


def diverging_runner(*failing: str) -> Any:
    async def runner(call: FunctionCall) -> ToolResult:
        await anyio.sleep(0)  # let the siblings start: they all run at once
        if call.call_id in failing:
            raise ReplayDivergence(
                f"{call.call_id} was never run", iteration=0, path=f"results.{call.call_id}"
            )
        return ToolResult(call.call_id, call.name, call.arguments, output="ok")

    return runner


async def test_a_runner_error_among_parallel_calls_is_raised_alone_not_as_a_group() -> None:
    api = ScriptedAPI([THREE_CALLS])
    loop = loop_for(api, tools=[], tool_runner=diverging_runner("c2"))
    with pytest.raises(ReplayDivergence, match="c2 was never run") as caught:
        await loop.run("x")
    assert caught.value.result is not None and caught.value.result.stop_reason == "error"


async def test_several_runner_errors_raise_the_first_in_call_order_and_report_the_rest() -> None:
    api = ScriptedAPI([THREE_CALLS])
    errors = Errors()
    loop = loop_for(api, tools=[], tool_runner=diverging_runner("c3", "c1"), hooks=[errors])
    with pytest.raises(ReplayDivergence, match="c1 was never run"):
        await loop.run("x")
    assert [(e.where, str(e.error)) for e in errors.seen] == [("tool", "c3 was never run")]


async def test_a_tool_running_past_tool_warn_after_is_reported_while_it_runs() -> None:
    reported = anyio.Event()
    errors = Errors()

    class Watcher(Errors):
        def on_error(self, info: ErrorInfo) -> None:
            errors.on_error(info)
            reported.set()

    @tool
    async def hang() -> str:
        """Run until the loop has said it is slow."""
        await reported.wait()
        return "finally"

    api = ScriptedAPI([call_reply(("c1", "hang", "{}")), text_reply()])
    loop = loop_for(api, tools=[hang], tool_warn_after=0.05, hooks=[Watcher()])
    with anyio.fail_after(20), pytest.warns(SlowToolWarning, match="'hang' .call_id c1. has been"):
        result = await loop.run("x")
    assert result.results[0].output == "finally"
    (info,) = errors.seen
    assert info.where == "tool" and isinstance(info.error, SlowToolWarning)
    assert "more than 0.05 s" in str(info.error)


async def test_fast_tools_are_not_reported_and_the_warning_can_be_turned_off() -> None:
    @tool
    def quick() -> str:
        """Return at once."""
        return "ok"

    for warn_after in (60.0, None):
        errors = Errors()
        api = ScriptedAPI([call_reply(("c1", "quick", "{}"), ("c2", "quick", "{}")), text_reply()])
        loop = loop_for(api, tools=[quick], tool_warn_after=warn_after, hooks=[errors])
        result = await loop.run("x")
        assert [r.output for r in result.results] == ["ok", "ok"]
        assert errors.seen == []


async def test_the_parallel_tools_replay_with_a_dropped_event_ends_in_a_typed_divergence() -> None:
    from pathlib import Path

    from rawloop.replay.replayer import replay

    trace = Path(__file__).parents[2] / "traces" / "parallel-tools.jsonl"
    # The dropped event loses a call's name: the runner refuses it, inside the task group.
    report = await replay(trace, faults=["iter=0:drop-event=1"])
    assert isinstance(report.error, ReplayDivergence) or isinstance(
        report.divergence, ReplayDivergence
    ), report
    assert "ExceptionGroup" not in str(report)
