"""The loop end to end through a scripted transport serving real corpus streams."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from rawloop import APIStatusError, ConfigurationError, HookError
from rawloop.core.errors import APIConnectionError, InvalidEventData, StreamErrorEvent
from rawloop.loop.hooks import ErrorInfo, RequestInfo
from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.state import LoopState
from rawloop.loop.tools import StopLoop, tool

from ..conftest import Reply, ScriptedAPI, corpus

pytestmark = pytest.mark.anyio

NO_WAIT = RetryPolicy(max_retries=2, initial_delay=0.0)


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def loop_for(api: ScriptedAPI, **kwargs: Any) -> Loop:
    kwargs.setdefault("tools", [multiply])
    kwargs.setdefault("retries", NO_WAIT)
    return Loop(
        kwargs.pop("model", "gpt-5.5"), http_client=api.client(), api_key="sk-test", **kwargs
    )


def text_reply(text: str = "done") -> Reply:
    events = [
        {"type": "response.created", "response": {"id": "resp_x", "status": "in_progress"}},
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "delta": text,
        },
        {
            "type": "response.completed",
            "response": {
                "id": "resp_x",
                "status": "completed",
                "output": [
                    {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": text}],
                    }
                ],
                "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
            },
        },
    ]
    return Reply(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))


def call_reply(*calls: tuple[str, str, str]) -> Reply:
    """A Responses stream asking for function calls (call_id, name, arguments)."""
    items = [
        {
            "id": f"fc_{i}",
            "type": "function_call",
            "call_id": cid,
            "name": name,
            "arguments": args,
            "status": "completed",
        }
        for i, (cid, name, args) in enumerate(calls)
    ]
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": "r", "status": "in_progress"}}
    ]
    for i, item in enumerate(items):
        events.append({"type": "response.output_item.done", "output_index": i, "item": item})
    events.append(
        {
            "type": "response.completed",
            "response": {"id": "r", "status": "completed", "output": items},
        }
    )
    return Reply(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))


# -- wire correctness ---------------------------------------------------------


async def test_responses_two_turn_run_sends_the_exact_second_request() -> None:
    api = ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse")),
            Reply(corpus("responses-text-after-tool-1.sse")),
        ]
    )
    first_recorded = json.loads(corpus("responses-function-call-1.request.json"))
    second_recorded = json.loads(corpus("responses-text-after-tool-1.request.json"))
    loop = loop_for(
        api, include=["reasoning.encrypted_content"], reasoning={"effort": "low"}, store=False
    )
    result = await loop.run("What is 1231 * 2331? Use the multiply tool.")

    first, second = api.bodies
    assert first["input"] == first_recorded["input"]
    streamed_item = json.loads(corpus("responses-function-call-1.sse").split(b"\n")[-3][6:])
    # The function_call item goes back exactly as the server sent it, then its output.
    assert second["input"] == [
        second_recorded["input"][0],
        streamed_item["response"]["output"][0],
        {
            "type": "function_call_output",
            "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
            "output": "2869461",
        },
    ]
    assert second["input"][2] == second_recorded["input"][2]
    for key in ("model", "include", "reasoning", "store", "stream"):
        assert second[key] == second_recorded[key]
    assert [t["name"] for t in second["tools"]] == ["multiply"]
    assert second["tools"][0]["parameters"]["required"] == ["a", "b"]

    assert result.stop_reason == "completed"
    assert result.text == "1231 × 2331 = **2,869,461**"  # noqa: RUF001
    assert result.iterations == 2
    assert [r.output for r in result.results] == ["2869461"]
    assert result.items == second["input"] + result.turns[-1].output
    assert result.usage["requests"] == 2
    assert result.usage["total_tokens"] == sum(t.usage["total_tokens"] for t in result.turns)


async def test_chat_two_turn_run_sends_assistant_tool_calls_then_tool_message() -> None:
    api = ScriptedAPI(
        [Reply(corpus("chat-tool-call-1.sse")), Reply(corpus("chat-text-after-tool-1.sse"))]
    )
    recorded = json.loads(corpus("chat-text-after-tool-1.request.json"))
    loop = loop_for(api, model="gpt-4o-mini", dialect="chat")
    result = await loop.run("What is 1231 * 2331?")
    second = api.bodies[1]
    assert str(api.requests[1].url).endswith("/chat/completions")
    user, assistant, tool_message = second["messages"]
    assert user == recorded["messages"][0]
    (call,) = assistant["tool_calls"]
    (recorded_call,) = recorded["messages"][2]["tool_calls"]
    assert assistant["role"] == "assistant"
    assert (call["id"], call["type"], call["function"]["name"]) == (
        recorded_call["id"],
        "function",
        "multiply",
    )
    assert json.loads(call["function"]["arguments"]) == json.loads(
        recorded_call["function"]["arguments"]
    )
    assert tool_message == recorded["messages"][3]
    assert second["stream_options"] == {"include_usage": True}
    assert second["tools"][0]["function"]["name"] == "multiply"
    assert result.stop_reason == "completed"
    assert result.text == "The result of \\( 1231 \\times 2331 \\) is \\( 2,869,461 \\)."


async def test_items_continue_a_conversation() -> None:
    api = ScriptedAPI([text_reply("first"), text_reply("second")])
    loop = loop_for(api)
    one = await loop.run("hi")
    two = await loop.run([*one.items, {"role": "user", "content": "again"}])
    assert api.bodies[1]["input"][:2] == one.items
    assert two.text == "second"


# -- hooks ----------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_request(self, info: Any) -> None:
        self.calls.append(("request", info))

    def on_response(self, info: Any) -> None:
        self.calls.append(("response", info))

    async def on_chunk(self, info: Any) -> None:
        self.calls.append(("chunk", info))

    def on_event(self, info: Any) -> None:
        self.calls.append(("event", info))

    def on_decision(self, info: Any) -> None:
        self.calls.append(("decision", info))

    def on_result(self, info: Any) -> None:
        self.calls.append(("result", info))

    def on_breakpoint(self, state: LoopState) -> None:
        self.calls.append(("breakpoint", state.iteration))

    def on_end(self, info: Any) -> None:
        self.calls.append(("end", info))


def collapse(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not out or out[-1] != name:
            out.append(name)
    return out


async def test_every_hook_point_fires_in_the_documented_order_with_contents() -> None:
    stream = corpus("responses-function-call-1.sse")
    api = ScriptedAPI([Reply(stream, chunk_size=100), text_reply()])
    recorder = Recorder()
    result = await loop_for(api, hooks=[recorder]).run("go")
    names = [name for name, _ in recorder.calls]
    # Within the body each chunk's hook comes before the hooks of the events it completed.
    first_body = names[3 : names.index("decision")]
    assert first_body[0] == "chunk" and first_body.count("chunk") == 74
    order = collapse([n if n not in ("chunk", "event") else "body" for n in names])
    assert order == [
        "breakpoint",
        "request",
        "response",
        "body",
        "decision",
        "result",
        "breakpoint",
        "request",
        "response",
        "body",
        "decision",
        "end",
    ]
    request = recorder.calls[1][1]
    assert isinstance(request, RequestInfo)
    assert request.headers["authorization"].startswith("Bearer [REDACTED:")
    assert b"sk-test" not in request.body and json.loads(request.body) == request.json
    chunks = [info for name, info in recorder.calls if name == "chunk" and info.iteration == 0]
    assert b"".join(c.data for c in chunks) == stream
    assert [c.offset for c in chunks] == list(range(0, len(stream), 100))
    events = [info for name, info in recorder.calls if name == "event" and info.iteration == 0]
    assert len(events) == 17 and events[0].payload["type"] == "response.created"
    decision = next(info for name, info in recorder.calls if name == "decision")
    assert decision.turn.calls[0].name == "multiply"
    outcome = next(info for name, info in recorder.calls if name == "result")
    assert outcome.result.output == "2869461"
    end = recorder.calls[-1][1]
    assert end.stop_reason == "completed" and end.iterations == 2 == result.iterations


async def test_a_module_like_namespace_is_a_hook_and_unknown_names_are_rejected() -> None:
    import types

    seen: list[int] = []
    module = types.ModuleType("myhook")
    module.on_breakpoint = lambda state: seen.append(state.iteration)  # type: ignore[attr-defined]
    api = ScriptedAPI([text_reply()])
    await loop_for(api, hooks=[module]).run("x")
    assert seen == [0]

    class Typo:
        def on_requset(self, info: Any) -> None: ...

    with pytest.raises(ConfigurationError, match=r"on_requset.*valid names: on_request"):
        loop_for(ScriptedAPI([]), hooks=[Typo()])


async def test_breakpoint_edits_change_the_next_request() -> None:
    api = ScriptedAPI([call_reply(("c1", "multiply", '{"a": 2, "b": 3}')), text_reply()])

    edits: list[Any] = []

    class Editor:
        def on_breakpoint(self, state: LoopState) -> None:
            if state.iteration == 1:
                state.model = "gpt-other"
                state.request_params["temperature"] = 0
                state.input.insert(0, {"role": "system", "content": "be brief"})
                state.results[0].output = "42"

        def on_edit(self, info: Any) -> None:
            edits.append(info)

    result = await loop_for(api, hooks=[Editor()]).run("x")
    second = api.bodies[1]
    assert second["model"] == "gpt-other" and second["temperature"] == 0
    assert second["input"][0] == {"role": "system", "content": "be brief"}
    assert second["input"][-1] == {"type": "function_call_output", "call_id": "c1", "output": "42"}
    (edit,) = edits
    assert edit.iteration == 1
    paths = {op["path"] for op in edit.patch}
    assert {"/model", "/request_params/temperature", "/results/0/output"} <= paths
    assert result.stop_reason == "completed"


async def test_breakpoint_can_stop_the_run_and_work_is_kept() -> None:
    api = ScriptedAPI([call_reply(("c1", "multiply", '{"a": 2, "b": 3}'))])

    def on_breakpoint(state: LoopState) -> None:
        if state.iteration == 1:
            state.stop("enough")

    import types

    hook = types.SimpleNamespace(on_breakpoint=on_breakpoint)
    result = await loop_for(api, hooks=[hook]).run("x")
    assert result.stop_reason == "enough" and result.iterations == 1
    assert result.items[-1] == {"type": "function_call_output", "call_id": "c1", "output": "6"}


async def test_failing_observer_is_reported_and_the_run_goes_on() -> None:
    errors: list[ErrorInfo] = []

    class Bad:
        def on_decision(self, info: Any) -> None:
            raise ValueError("observer bug")

        def on_error(self, info: ErrorInfo) -> None:
            errors.append(info)

    api = ScriptedAPI([text_reply()])
    with pytest.warns(RuntimeWarning, match="observer bug"):
        result = await loop_for(api, hooks=[Bad()]).run("x")
    assert result.stop_reason == "completed"
    assert errors[0].where.startswith("hook:") and isinstance(errors[0].error, ValueError)

    strict = loop_for(ScriptedAPI([text_reply()]), hooks=[Bad()], strict_hooks=True)
    with pytest.raises(HookError, match="observer bug"):
        await strict.run("x")


async def test_failing_breakpoint_aborts_with_a_clear_error() -> None:
    class Bad:
        def on_breakpoint(self, state: LoopState) -> None:
            raise KeyError("nope")

    with pytest.raises(HookError, match=r"breakpoint hook .* failed at iteration 0"):
        await loop_for(ScriptedAPI([]), hooks=[Bad()]).run("x")


# -- tools ------------------------------------------------------------------------


async def test_two_slow_tools_in_one_turn_overlap() -> None:
    spans: dict[str, tuple[float, float]] = {}

    @tool
    async def slow(name: str) -> str:
        """Wait a little."""
        start = time.perf_counter()
        await anyio.sleep(0.2)
        spans[name] = (start, time.perf_counter())
        return name

    api = ScriptedAPI(
        [call_reply(("c1", "slow", '{"name": "a"}'), ("c2", "slow", '{"name": "b"}')), text_reply()]
    )
    result = await loop_for(api, tools=[slow]).run("x")
    (a_start, a_end), (b_start, b_end) = spans["a"], spans["b"]
    assert a_start < b_end and b_start < a_end  # the two ran at the same time
    # Results keep the model's order whatever order the tools finished in.
    assert [r.call_id for r in result.results] == ["c1", "c2"]


async def test_tool_errors_reach_the_model_as_outputs() -> None:
    @tool
    def boom() -> str:
        """Fails."""
        raise RuntimeError("disk on fire")

    api = ScriptedAPI(
        [
            call_reply(
                ("c1", "boom", "{}"),
                ("c2", "nope", "{}"),
                ("c3", "multiply", "{not json"),
                ("c4", "multiply", '{"a": "x", "b": 1}'),
            ),
            text_reply(),
        ]
    )
    result = await loop_for(api, tools=[boom, multiply]).run("x")
    outputs = {
        i["call_id"]: i["output"]
        for i in api.bodies[1]["input"]
        if i.get("type") == "function_call_output"
    }
    assert "RuntimeError" in outputs["c1"] and "disk on fire" in outputs["c1"]
    assert "unknown tool 'nope'" in outputs["c2"] and "boom" in outputs["c2"]
    assert "JSON" in outputs["c3"]
    assert "$.a" in outputs["c4"]
    assert all(r.error for r in result.results)


async def test_tool_timeout_becomes_an_error_output() -> None:
    @tool
    async def hang() -> str:
        """Never returns."""
        await anyio.sleep(30)
        return "late"

    api = ScriptedAPI([call_reply(("c1", "hang", "{}")), text_reply()])
    result = await loop_for(api, tools=[hang], tool_timeout=0.05).run("x")
    assert result.results[0].error is not None and result.results[0].error["type"] == "TimeoutError"


async def test_stop_loop_from_a_tool_ends_the_run_cleanly() -> None:
    @tool
    def refund(order: str) -> str:
        """Refund an order."""
        raise StopLoop("needs a human")

    api = ScriptedAPI(
        [call_reply(("c1", "refund", '{"order": "A1"}'), ("c2", "multiply", '{"a": 1, "b": 2}'))]
    )
    result = await loop_for(api, tools=[refund, multiply]).run("x")
    assert result.stop_reason == "needs a human"
    assert [r.output for r in result.results][1] == "2"  # the other tool still finished
    assert len(api.requests) == 1


# -- retries, fallback, limits -------------------------------------------------------


async def test_retries_429_and_503_then_succeeds_and_every_attempt_is_visible() -> None:
    attempts: list[tuple[int, int]] = []
    errors: list[ErrorInfo] = []

    class Watch:
        def on_request(self, info: RequestInfo) -> None:
            attempts.append((info.iteration, info.attempt))

        def on_error(self, info: ErrorInfo) -> None:
            errors.append(info)

    api = ScriptedAPI(
        [
            Reply(
                b'{"error": {"message": "slow down"}}', status=429, headers={"retry-after-ms": "10"}
            ),
            Reply(b"oops", status=503),
            text_reply("ok"),
        ]
    )
    result = await loop_for(api, hooks=[Watch()]).run("x")
    assert result.text == "ok"
    assert attempts == [(0, 0), (0, 1), (0, 2)]
    assert [e.will_retry for e in errors] == [True, True]
    assert errors[0].delay == pytest.approx(0.01)
    assert isinstance(errors[0].error, APIStatusError) and errors[0].error.status == 429


async def test_a_stream_cut_midway_is_retried() -> None:
    stream = corpus("responses-text-minimal-1.sse")
    api = ScriptedAPI([Reply(stream, cut_after=len(stream) // 2), Reply(stream)])
    errors: list[ErrorInfo] = []
    hook = type("H", (), {"on_error": lambda self, info: errors.append(info)})()
    result = await loop_for(api, hooks=[hook]).run("x")
    assert result.text == "pong"
    assert isinstance(errors[0].error, APIConnectionError)
    assert errors[0].error.partial is not None


async def test_a_400_is_not_retried_and_carries_status_body_and_request_id() -> None:
    api = ScriptedAPI(
        [
            Reply(
                b'{"error": {"message": "bad tool schema"}}',
                status=400,
                headers={"x-request-id": "req_123"},
            )
        ]
    )
    with pytest.raises(APIStatusError) as info:
        await loop_for(api).run("x")
    assert info.value.status == 400 and info.value.request_id == "req_123"
    assert "bad tool schema" in str(info.value) and b"bad tool schema" in info.value.body
    assert info.value.result is not None and info.value.result.stop_reason == "error"
    assert len(api.requests) == 1


async def test_fallback_models_are_tried_after_retries() -> None:
    api = ScriptedAPI(
        [Reply(b"{}", status=500), Reply(b"{}", status=500), text_reply("from fallback")]
    )
    loop = loop_for(
        api, retries=RetryPolicy(max_retries=1, initial_delay=0), fallback_models=["backup"]
    )
    result = await loop.run("x")
    assert [b["model"] for b in api.bodies] == ["gpt-5.5", "gpt-5.5", "backup"]
    assert result.text == "from fallback"


async def test_in_stream_error_raises_typed_error_with_partial_turn() -> None:
    api = ScriptedAPI([Reply(corpus("chat-groq-midstream-error-1.sse"))])
    with pytest.raises(StreamErrorEvent) as info:
        await loop_for(api, dialect="chat").run("x")
    assert info.value.error["code"] == "tool_use_failed"
    assert info.value.partial is not None and info.value.partial.reasoning
    assert len(api.requests) == 1  # a request problem, not worth retrying


async def test_malformed_stream_is_a_typed_error_not_retried() -> None:
    api = ScriptedAPI([Reply(b"data: {broken\n\n")])
    with pytest.raises(InvalidEventData):
        await loop_for(api).run("x")


async def test_max_iterations_returns_everything_done_so_far() -> None:
    api = ScriptedAPI(
        [call_reply(("c1", "multiply", '{"a": 2, "b": 3}'))] * 1
        + [call_reply(("c2", "multiply", '{"a": 3, "b": 3}'))]
    )
    result = await loop_for(api, max_iterations=2).run("x")
    assert result.stop_reason == "max_iterations" and result.iterations == 2
    assert [r.output for r in result.results] == ["6", "9"]
    assert result.items[-1] == {"type": "function_call_output", "call_id": "c2", "output": "9"}


async def test_iter_steps_one_iteration_at_a_time() -> None:
    api = ScriptedAPI([call_reply(("c1", "multiply", '{"a": 2, "b": 3}')), text_reply("fin")])
    async with loop_for(api).iter("x") as run:
        steps = [step async for step in run]
    assert [s.iteration for s in steps] == [0, 1]
    assert steps[0].turn.calls[0].name == "multiply" and steps[0].results[0].output == "6"
    assert run.result is not None and run.result.text == "fin"


async def test_closing_a_stepped_run_early_stops_it() -> None:
    api = ScriptedAPI([call_reply(("c1", "multiply", '{"a": 2, "b": 3}')), text_reply()])
    async with loop_for(api).iter("x") as run:
        async for _step in run:
            break
    assert run.result is not None and run.result.stop_reason == "stopped"
    assert len(api.requests) == 1


async def test_cancelling_a_run_closes_the_stream_promptly() -> None:
    started = anyio.Event()
    interrupted: list[bool] = []

    async def stall() -> None:
        started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            interrupted.append(True)  # the wait for the answer was cut short
            raise

    api = ScriptedAPI([Reply(corpus("responses-text-minimal-1.sse"), before=stall)])
    with anyio.move_on_after(0.2) as scope:
        await loop_for(api).run("x")
    assert started.is_set() and scope.cancelled_caught
    assert interrupted == [True]


def test_a_real_endpoint_without_a_key_fails_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    loop = Loop("gpt-5.5")
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        loop.iter("hi")  # before anything is sent
    Loop("gpt-5.5", base_url="http://127.0.0.1:9/v1").iter("hi")  # a local fake needs no key


def test_repr_never_shows_the_key() -> None:
    loop = Loop("m", api_key="sk-secret-value-1234567890", base_url="http://127.0.0.1:1/v1")
    assert "sk-secret" not in repr(loop)
