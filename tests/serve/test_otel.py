"""OpenTelemetry spans for runs: names, parents, attributes, and every span ended."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rawloop.core.errors import APIStatusError
from rawloop.loop.loop import Handoff, Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import StopLoop, tool
from rawloop.serve.otel import OTelHook

from ..conftest import Reply, ScriptedAPI, corpus

pytestmark = pytest.mark.anyio

CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}
FIRST_ID = "resp_00d64fa806f333310169fab1be69d081a08f8285661855594c"
SECOND_ID = "resp_0dacb603de1c9e6b0169fab1c2314081a3b1df3cc5c09e0c60"
CALL_ID = "call_sVidsfFJ6zlzRpelrPkTPlpd"
QUESTION = "What is 1231 * 2331? Use the multiply tool."


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


class Counter(SpanProcessor):
    """Counts spans started and ended: every span started must end."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class Telemetry:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.counter = Counter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.provider.add_span_processor(self.counter)

    def hook(self, **kwargs: Any) -> OTelHook:
        return OTelHook(self.provider, **kwargs)

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, prefix: str) -> ReadableSpan:
        (span,) = self.named(prefix)
        return span

    def assert_all_ended(self) -> None:
        assert self.counter.started == self.counter.ended == len(self.spans)


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.provider.shutdown()


def two_turn_api() -> ScriptedAPI:
    return ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse")),
            Reply(corpus("responses-text-after-tool-1.sse")),
        ]
    )


def make_loop(api: ScriptedAPI, **kwargs: Any) -> Loop:
    kwargs.setdefault("tools", [multiply])
    kwargs.setdefault("retries", RetryPolicy(max_retries=2, initial_delay=0.0))
    return Loop(
        kwargs.pop("model", "gpt-5.5"),
        http_client=api.client(),
        api_key="sk-test",
        base_url="https://api.openai.com/v1",
        **kwargs,
    )


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def start(span: ReadableSpan) -> int:
    assert span.start_time is not None
    return span.start_time


def end(span: ReadableSpan) -> int:
    assert span.end_time is not None
    return span.end_time


# -- a two-turn tool run ---------------------------------------------------------------


async def test_a_two_turn_tool_run(otel: Telemetry) -> None:
    result = await make_loop(two_turn_api()).run(QUESTION, hooks=[otel.hook()])
    assert result.stop_reason == "completed"
    otel.assert_all_ended()
    assert sorted(s.name for s in otel.spans) == [
        "chat gpt-5.5",
        "chat gpt-5.5",
        "execute_tool multiply",
        "invoke_agent rawloop",
    ]
    run = otel.one("invoke_agent")
    first, second = sorted(otel.named("chat"), key=start)
    call = otel.one("execute_tool")

    assert run.kind is SpanKind.INTERNAL
    assert run.parent is None
    assert attrs(run) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "openai",
        "gen_ai.agent.name": "rawloop",
        "gen_ai.request.model": "gpt-5.5",
        "gen_ai.usage.input_tokens": 58 + 94,
        "gen_ai.usage.output_tokens": 23 + 18,
        "rawloop.stop_reason": "completed",
        "rawloop.iterations": 2,
    }
    for child in (first, second, call):
        assert parent_of(child) == span_id(run)
        assert start(run) <= start(child) <= end(child) <= end(run)
    assert end(first) <= start(call) <= end(call) <= start(second)

    assert first.kind is SpanKind.CLIENT
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-5.5",
        "gen_ai.response.model": "gpt-5.5-2026-04-23",
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "openai.response.service_tier": "default",
    }
    first_attrs = attrs(first)
    assert first_attrs.pop("gen_ai.response.time_to_first_chunk") >= 0
    assert first_attrs == {
        **common,
        "gen_ai.response.id": FIRST_ID,
        "gen_ai.response.finish_reasons": ("tool_call",),
        "gen_ai.usage.input_tokens": 58,
        "gen_ai.usage.output_tokens": 23,
    }
    second_attrs = attrs(second)
    second_attrs.pop("gen_ai.response.time_to_first_chunk")
    assert second_attrs == {
        **common,
        "gen_ai.response.id": SECOND_ID,
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 94,
        "gen_ai.usage.output_tokens": 18,
    }

    assert call.kind is SpanKind.INTERNAL
    assert attrs(call) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "multiply",
        "gen_ai.tool.call.id": CALL_ID,
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "Multiply two numbers.",
    }
    for span in otel.spans:
        assert span.status.status_code is StatusCode.UNSET
        assert not CONTENT_KEYS & set(attrs(span))
    assert len({s.context.trace_id for s in otel.spans if s.context}) == 1


async def test_content_is_recorded_only_when_asked(otel: Telemetry) -> None:
    loop = make_loop(two_turn_api(), instructions="Be brief.")
    await loop.run(QUESTION, hooks=[otel.hook(capture_content=True)])
    first, second = sorted(otel.named("chat"), key=start)
    call = otel.one("execute_tool")

    a = attrs(first)
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": QUESTION}]}
    ]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(a["gen_ai.tool.definitions"])[0]["name"] == "multiply"
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert output["role"] == "assistant"
    assert output["finish_reason"] == "tool_call"
    assert output["parts"][-1] == {
        "type": "tool_call",
        "id": CALL_ID,
        "name": "multiply",
        "arguments": {"a": 1231, "b": 2331},
    }

    b = attrs(second)
    messages = json.loads(b["gen_ai.input.messages"])
    assert messages[-1] == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": CALL_ID, "response": "2869461"}],
    }
    assert any(p["type"] == "tool_call" for m in messages for p in m["parts"])
    (output,) = json.loads(b["gen_ai.output.messages"])
    assert output["finish_reason"] == "stop"
    assert output["parts"][-1]["type"] == "text"
    assert "2869461" in output["parts"][-1]["content"].replace(",", "")

    c = attrs(call)
    assert c["gen_ai.tool.call.arguments"] == '{"a":1231,"b":2331}'
    assert c["gen_ai.tool.call.result"] == "2869461"


async def test_a_hook_on_the_loop_follows_each_run(otel: Telemetry) -> None:
    hook = otel.hook(agent_name="calculator")
    for _ in range(2):
        await make_loop(two_turn_api(), hooks=[hook]).run(QUESTION)
    otel.assert_all_ended()
    runs = otel.named("invoke_agent calculator")
    assert len(runs) == 2
    for run in runs:
        children = [s for s in otel.spans if parent_of(s) == span_id(run)]
        assert sorted(s.name for s in children) == [
            "chat gpt-5.5",
            "chat gpt-5.5",
            "execute_tool multiply",
        ]


async def test_concurrent_runs_sharing_a_hook_stay_apart(otel: Telemetry) -> None:
    hook = otel.hook()
    loops = [make_loop(two_turn_api(), hooks=[hook]) for _ in range(3)]
    async with anyio.create_task_group() as group:
        for loop in loops:
            group.start_soon(loop.run, QUESTION)
    otel.assert_all_ended()
    runs = otel.named("invoke_agent")
    assert len(runs) == 3
    for run in runs:
        children = [s for s in otel.spans if parent_of(s) == span_id(run)]
        assert len(children) == 3
        assert attrs(run)["gen_ai.usage.input_tokens"] == 58 + 94


async def test_the_run_span_is_a_child_of_the_current_span(otel: Telemetry) -> None:
    tracer = otel.provider.get_tracer("test")
    with tracer.start_as_current_span("request handler") as outer:
        await make_loop(two_turn_api()).run(QUESTION, hooks=[otel.hook()])
    run = otel.one("invoke_agent")
    assert parent_of(run) == outer.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_chat_completions_run(otel: Telemetry) -> None:
    api = ScriptedAPI(
        [Reply(corpus("chat-tool-call-1.sse")), Reply(corpus("chat-text-after-tool-1.sse"))]
    )
    loop = make_loop(api, dialect="chat", model="gpt-4o-mini")
    await loop.run(QUESTION, hooks=[otel.hook(capture_content=True)])
    first, second = sorted(otel.named("chat"), key=start)
    assert first.name == "chat gpt-4o-mini"
    assert attrs(first)["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs(first)["gen_ai.usage.input_tokens"] == 54
    assert attrs(first)["gen_ai.usage.output_tokens"] == 20
    assert attrs(second)["gen_ai.response.finish_reasons"] == ("stop",)
    assert json.loads(attrs(first)["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": QUESTION}]}
    ]
    messages = json.loads(attrs(second)["gen_ai.input.messages"])
    assert messages[-1]["role"] == "tool"
    assert messages[-1]["parts"][0]["response"] == "2869461"
    assert messages[-2]["parts"][-1]["name"] == "multiply"
    assert attrs(otel.one("execute_tool"))["gen_ai.tool.description"] == "Multiply two numbers."


# -- retries, fallbacks and failures -------------------------------------------------------


def status(code: int, message: str = "slow down") -> Reply:
    body = json.dumps({"error": {"message": message, "type": "rate_limit"}}).encode()
    return Reply(body, status=code)


async def test_a_retried_call_is_one_span(otel: Telemetry) -> None:
    api = ScriptedAPI([status(429), Reply(corpus("responses-text-after-tool-1.sse"))])
    result = await make_loop(api).run(QUESTION, hooks=[otel.hook()])
    assert result.stop_reason == "completed"
    otel.assert_all_ended()
    chat = otel.one("chat")
    assert "error.type" not in attrs(chat)
    assert chat.status.status_code is StatusCode.UNSET
    assert attrs(chat)["gen_ai.response.id"] == SECOND_ID
    (event,) = chat.events
    assert event.name == "exception"
    event_attrs: dict[str, Any] = dict(event.attributes or {})
    assert event_attrs["exception.type"].endswith("APIStatusError")
    assert event_attrs["rawloop.will_retry"] is True
    assert event_attrs["rawloop.attempt"] == 0
    assert otel.one("invoke_agent").status.status_code is StatusCode.UNSET


async def test_a_fallback_model_renames_the_span(otel: Telemetry) -> None:
    api = ScriptedAPI(
        [status(404, "no such model"), Reply(corpus("responses-text-after-tool-1.sse"))]
    )
    loop = make_loop(api, fallback_models=["gpt-backup"])
    await loop.run(QUESTION, hooks=[otel.hook()])
    chat = otel.one("chat")
    assert chat.name == "chat gpt-backup"
    assert attrs(chat)["gen_ai.request.model"] == "gpt-backup"
    assert len(chat.events) == 1
    assert attrs(chat)["gen_ai.fallback.used"] is True
    assert attrs(chat)["rawloop.fallback.from_model"] == "gpt-5.5"
    assert attrs(otel.one("invoke_agent"))["gen_ai.fallback.used"] is True


async def test_no_fallback_and_the_cost_when_prices_are_given(otel: Telemetry) -> None:
    api = two_turn_api()
    prices = {"gpt-5.5": {"input": 1.25, "output": 10.0}, "gpt-5": {"input": 99, "output": 99}}
    result = await make_loop(api).run(QUESTION, hooks=[otel.hook(prices=prices)])
    chats = sorted(otel.named("chat"), key=start)
    run = attrs(otel.one("invoke_agent"))
    assert "gen_ai.fallback.used" not in run  # set only when a fallback answered
    assert all("gen_ai.fallback.used" not in attrs(c) for c in chats)
    costs = [attrs(c)["rawloop.usage.cost_usd"] for c in chats]
    expected = [
        (t.usage["input_tokens"] * 1.25 + t.usage["output_tokens"] * 10.0) / 1e6
        for t in result.turns
    ]
    assert costs == pytest.approx(expected)
    assert run["rawloop.usage.cost_usd"] == pytest.approx(sum(expected))
    assert sum(expected) > 0


async def test_no_cost_without_prices_or_for_an_unpriced_model(otel: Telemetry) -> None:
    await make_loop(two_turn_api()).run(QUESTION, hooks=[otel.hook()])
    await make_loop(two_turn_api()).run(QUESTION, hooks=[otel.hook(prices={"o3": (1, 2)})])
    assert not any("rawloop.usage.cost_usd" in attrs(s) for s in otel.spans)
    with pytest.raises(ValueError, match="per 1M tokens"):
        otel.hook(prices={"gpt-5.5": "cheap"})


async def test_a_failing_run_sets_error_type_and_ends_every_span(otel: Telemetry) -> None:
    api = ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse")),
            status(500, "boom"),
            status(500, "boom"),
            status(500, "boom"),
        ]
    )
    with pytest.raises(APIStatusError):
        await make_loop(api).run(QUESTION, hooks=[otel.hook()])
    otel.assert_all_ended()
    run = otel.one("invoke_agent")
    first, second = sorted(otel.named("chat"), key=start)
    assert "error.type" not in attrs(first)
    assert otel.one("execute_tool").status.status_code is StatusCode.UNSET
    for span in (second, run):
        assert attrs(span)["error.type"] == "500"
        assert span.status.status_code is StatusCode.ERROR
        assert "HTTP 500" in (span.status.description or "")
    assert len(second.events) == 3  # every attempt
    assert attrs(run)["rawloop.stop_reason"] == "error"
    assert [e.name for e in run.events] == ["exception"]


async def test_a_failing_tool_sets_error_type(otel: Telemetry) -> None:
    @tool(name="multiply")
    def broken(a: int, b: int) -> int:
        """Multiply two numbers."""
        raise ValueError("secret detail")

    for capture in (False, True):
        await make_loop(two_turn_api(), tools=[broken]).run(
            QUESTION, hooks=[otel.hook(capture_content=capture)]
        )
    quiet, loud = sorted(otel.named("execute_tool"), key=start)
    for span in (quiet, loud):
        assert attrs(span)["error.type"] == "ValueError"
        assert span.status.status_code is StatusCode.ERROR
    assert quiet.status.description == "ValueError"
    assert loud.status.description == "secret detail"
    assert attrs(loud)["gen_ai.tool.call.result"] == "Error: ValueError: secret detail"
    for run in otel.named("invoke_agent"):
        assert run.status.status_code is StatusCode.UNSET


async def test_stop_loop_is_not_an_error(otel: Telemetry) -> None:
    @tool(name="multiply")
    def stopper(a: int, b: int) -> int:
        """Multiply two numbers."""
        raise StopLoop("enough")

    api = ScriptedAPI([Reply(corpus("responses-function-call-1.sse"))])
    result = await make_loop(api, tools=[stopper]).run(QUESTION, hooks=[otel.hook()])
    assert result.stop_reason == "enough"
    otel.assert_all_ended()
    call = otel.one("execute_tool")
    assert "error.type" not in attrs(call)
    assert attrs(otel.one("invoke_agent"))["rawloop.stop_reason"] == "enough"


async def test_a_run_cancelled_mid_stream_ends_every_span(otel: Telemetry) -> None:
    api = ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse")),
            Reply(corpus("responses-text-after-tool-1.sse"), before=anyio.sleep_forever),
        ]
    )
    with anyio.move_on_after(0.5) as scope:
        await make_loop(api).run(QUESTION, hooks=[otel.hook()])
    assert scope.cancelled_caught
    otel.assert_all_ended()
    first, second = sorted(otel.named("chat"), key=start)
    assert "error.type" not in attrs(first)
    assert attrs(second)["error.type"] == "cancelled"
    assert second.status.status_code is StatusCode.ERROR
    run = otel.one("invoke_agent")
    assert attrs(run)["rawloop.stop_reason"] == "stopped"
    assert "error.type" not in attrs(run)


async def test_a_run_cancelled_mid_tool_ends_the_tool_span(otel: Telemetry) -> None:
    @tool(name="multiply")
    async def slow(a: int, b: int) -> int:
        """Multiply two numbers."""
        await anyio.sleep_forever()
        return 0

    api = ScriptedAPI([Reply(corpus("responses-function-call-1.sse"))])
    with anyio.move_on_after(0.5):
        await make_loop(api, tools=[slow]).run(QUESTION, hooks=[otel.hook()])
    otel.assert_all_ended()
    call = otel.one("execute_tool")
    assert attrs(call)["error.type"] == "cancelled"
    assert call.status.status_code is StatusCode.ERROR
    assert end(call) <= end(otel.one("invoke_agent"))


async def test_a_strict_loop_runs_with_the_hook(otel: Telemetry) -> None:
    loop = make_loop(two_turn_api(), strict_hooks=True, hooks=[otel.hook()])
    assert (await loop.run(QUESTION)).stop_reason == "completed"
    assert len(otel.spans) == 4


def test_without_opentelemetry_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'rawloop\[otel\]'"):
        OTelHook()


def test_the_global_tracer_provider_is_the_default() -> None:
    hook = OTelHook()
    assert hook.tracer is not None
    assert "rawloop" in repr(hook)


def transfer_reply() -> Reply:
    item = {
        "id": "fc_0",
        "type": "function_call",
        "call_id": "c1",
        "name": "transfer_to_math",
        "arguments": '{"reason": "numbers"}',
        "status": "completed",
    }
    events = [
        {"type": "response.created", "response": {"id": "r", "status": "in_progress"}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": {"id": "r", "status": "completed", "output": [item]},
        },
    ]
    return Reply(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events))


async def test_a_handoff_is_an_event_on_the_run_span(otel: Telemetry) -> None:
    specialist = Loop("math-model", tools=[multiply], base_url="http://127.0.0.1:1/v1")

    @tool
    def transfer_to_math(reason: str) -> Handoff:
        """Hand arithmetic to the specialist."""
        return Handoff(specialist, reason)

    api = ScriptedAPI(
        [
            transfer_reply(),
            Reply(corpus("responses-function-call-1.sse")),
            Reply(corpus("responses-text-after-tool-1.sse")),
        ]
    )
    front = make_loop(api, model="front-model", tools=[transfer_to_math])
    await front.run(QUESTION, hooks=[otel.hook()])
    otel.assert_all_ended()
    chats = sorted(otel.named("chat"), key=start)
    assert [s.name for s in chats] == ["chat front-model", "chat math-model", "chat math-model"]
    tools = sorted(otel.named("execute_tool"), key=start)
    assert [attrs(s)["gen_ai.tool.description"] for s in tools] == [
        "Hand arithmetic to the specialist.",
        "Multiply two numbers.",
    ]
    (event,) = otel.one("invoke_agent").events
    assert event.name == "rawloop.handoff"
    assert dict(event.attributes or {}) == {
        "rawloop.handoff.from_model": "front-model",
        "rawloop.handoff.to_model": "math-model",
        "rawloop.handoff.reason": "numbers",
    }


async def test_a_run_inside_a_tool_nests_under_its_span(otel: Telemetry) -> None:
    hook = otel.hook()

    @tool(name="multiply")
    async def delegate(a: int, b: int) -> str:
        """Multiply two numbers."""
        inner = make_loop(ScriptedAPI([Reply(corpus("responses-text-after-tool-1.sse"))]))
        return (await inner.run(f"{a} * {b}?", hooks=[hook])).text

    await make_loop(two_turn_api(), tools=[delegate], hooks=[hook]).run(QUESTION)
    otel.assert_all_ended()
    outer, inner = sorted(otel.named("invoke_agent"), key=start)
    call = otel.one("execute_tool")
    assert parent_of(call) == span_id(outer)
    assert parent_of(inner) == span_id(call)
    outer_chats = [s for s in otel.named("chat") if parent_of(s) == span_id(outer)]
    inner_chats = [s for s in otel.named("chat") if parent_of(s) == span_id(inner)]
    assert (len(outer_chats), len(inner_chats)) == (2, 1)
    assert attrs(outer)["rawloop.iterations"] == 2
    assert attrs(inner)["rawloop.iterations"] == 1


async def test_a_telemetry_failure_is_a_warning_not_a_broken_run(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = otel.hook()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter on fire")

    monkeypatch.setattr(hook.tracer, "start_span", broken)
    with pytest.warns(RuntimeWarning, match="exporter on fire"):
        result = await make_loop(two_turn_api(), strict_hooks=True).run(QUESTION, hooks=[hook])
    assert result.stop_reason == "completed"
