"""Handoffs: a tool passes the conversation to another loop; hooks, traces and replay see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rawloop import ConfigurationError, Loop, Trace, replay, tool
from rawloop.loop.loop import Handoff
from rawloop.replay.scripted import Reply, ScriptedAPI

from ..conftest import corpus
from .test_loop import call_reply, multiply, text_reply

pytestmark = pytest.mark.anyio


def make_specialist() -> Loop:
    return Loop(
        "math-model",
        "You only do arithmetic.",
        tools=[multiply],
        base_url="http://127.0.0.1:1/v1",
        temperature=0,
    )


async def test_a_handoff_switches_model_instructions_tools_and_keeps_the_transcript(
    tmp_path: Path,
) -> None:
    specialist = make_specialist()

    @tool
    def transfer_to_math(reason: str) -> Handoff:
        """Hand arithmetic to the specialist."""
        return Handoff(specialist, reason)

    api = ScriptedAPI(
        [
            call_reply(("c1", "transfer_to_math", '{"reason": "numbers"}')),
            Reply(corpus("responses-function-call-1.sse")),
            Reply(corpus("responses-text-after-tool-1.sse")),
        ]
    )
    seen: list[Any] = []
    watcher = type("W", (), {"on_handoff": lambda self, info: seen.append(info)})()
    front = Loop(
        "front-model", "Route requests.", tools=[transfer_to_math], http_client=api.client()
    )
    path = tmp_path / "handoff.jsonl"
    result = await front.run("What is 1231 * 2331?", trace=path, hooks=[watcher])

    first, second, third = api.bodies
    assert (first["model"], first["instructions"]) == ("front-model", "Route requests.")
    assert [t["name"] for t in first["tools"]] == ["transfer_to_math"]
    assert (second["model"], second["instructions"]) == ("math-model", "You only do arithmetic.")
    assert [t["name"] for t in second["tools"]] == ["multiply"] and second["temperature"] == 0
    # The transcript is kept: the routing call and its output are still in the input.
    assert second["input"][0] == {"role": "user", "content": "What is 1231 * 2331?"}
    assert second["input"][2] == {
        "type": "function_call_output",
        "call_id": "c1",
        "output": "Handing the conversation over to math-model: numbers",
    }
    assert third["model"] == "math-model"  # the specialist's multiply ran
    assert result.results[-1].output == "2869461" and result.stop_reason == "completed"
    assert [(i.from_model, i.to_model, i.reason) for i in seen] == [
        ("front-model", "math-model", "numbers")
    ]

    trace = Trace.load(path)
    (record,) = trace.of_kind("handoff")
    assert record.data["to_model"] == "math-model" and record.iteration == 1
    paths = {op["path"] for op in trace.edits()[1]}
    assert {"/model", "/instructions"} <= paths

    report = await replay(path)
    assert report.identical, str(report)

    from rawloop.trace.show import render

    shown = render(trace)
    assert "handoff: front-model -> math-model: numbers" in shown
    assert shown.index("handoff:") < shown.index("breakpoint edits")


async def test_a_handoff_to_another_dialect_is_refused() -> None:
    chat_loop = Loop("m", dialect="chat", base_url="http://127.0.0.1:1/v1")

    @tool
    def go() -> Handoff:
        """Switch."""
        return Handoff(chat_loop)

    api = ScriptedAPI([call_reply(("c1", "go", "{}")), text_reply()])
    with pytest.raises(ConfigurationError, match="cannot change the dialect"):
        await Loop("m", tools=[go], http_client=api.client()).run("x")
