"""Scripted turns: realistic streams that parse back to the script, served like a trace."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawloop import ConfigurationError, Loop, RetryPolicy, SSEDecoder, parse_stream, tool
from rawloop.loop.validate import problems
from rawloop.replay.chunking import rechunk
from rawloop.replay.script import SCRIPT_HELP
from rawloop.replay.server import ReplayServer
from rawloop.replay.synth import load_script, script_to_trace, synthesize_turn, validate_script

from .strategies import json_values, texts

pytestmark = pytest.mark.anyio

TLS = ssl.create_default_context()

# -- strategies ---------------------------------------------------------------------------------

arguments = st.dictionaries(texts, json_values, max_size=4) | texts.map(
    lambda t: orjson.dumps({"q": t}).decode()
)
calls = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,24}", fullmatch=True),
            "arguments": arguments,
        },
        optional={"call_id": st.from_regex(r"call_[A-Za-z0-9]{1,24}", fullmatch=True)},
    ),
    max_size=3,
)
usages = st.none() | st.fixed_dictionaries(
    {
        "input_tokens": st.integers(0, 10**6),
        "output_tokens": st.integers(0, 10**6),
        "total_tokens": st.integers(0, 10**6),
    }
)


def _expected_arguments(call: dict[str, Any]) -> str:
    value = call["arguments"]
    return value if isinstance(value, str) else orjson.dumps(value).decode()


# -- the streams parse back to the script ---------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dialect=st.sampled_from(["responses", "chat"]),
    text=texts,
    scripted_calls=calls,
    usage=usages,
    index=st.integers(0, 1000),
    seed=st.integers(0, 2**16),
)
def test_a_synthesized_turn_parses_back_to_the_script(
    dialect: str,
    text: str,
    scripted_calls: list[dict[str, Any]],
    usage: dict[str, int] | None,
    index: int,
    seed: int,
) -> None:
    spec: dict[str, Any] = {"text": text, "calls": scripted_calls}
    if usage is not None:
        spec["usage"] = usage
    body = synthesize_turn(spec, dialect, "gpt-test", index)
    for chunks in ([body], rechunk([body], "hostile", seed=seed)):
        turn = parse_stream(chunks, dialect)
        assert turn.status == "completed"
        assert turn.text == text
        assert [(c.name, c.arguments) for c in turn.calls] == [
            (c["name"], _expected_arguments(c)) for c in scripted_calls
        ]
        for call, parsed in zip(scripted_calls, turn.calls):
            if "call_id" in call:
                assert parsed.call_id == call["call_id"]
        made = [p.call_id for c, p in zip(scripted_calls, turn.calls) if "call_id" not in c]
        assert len(set(made)) == len(made)  # derived ids never collide within a turn
        if usage is not None:
            assert turn.usage == usage
        assert turn.model == "gpt-test"
        assert turn.error is None and turn.unknown_events == []
        if chunks == [body]:
            assert turn.warnings == []
    assert synthesize_turn(spec, dialect, "gpt-test", index) == body  # deterministic


def _events(body: bytes) -> list[tuple[str, dict[str, Any] | None]]:
    decoder = SSEDecoder()
    events = decoder.feed(body) + decoder.close()
    return [(e.event, None if e.data == "[DONE]" else orjson.loads(e.data)) for e in events]


def test_a_responses_stream_has_the_shape_of_the_real_one() -> None:
    spec = {
        "text": "Let me check: ünïcode 日本語 🙂",
        "calls": [{"name": "multiply", "arguments": {"a": 1231, "b": 2331}}],
    }
    events = _events(synthesize_turn(spec, "responses", "gpt-5.5", 3))
    types = [e for e, _ in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    deltas = [p for e, p in events if e == "response.output_text.delta"]
    assert len(deltas) > 3 and all(p and len(p["delta"]) <= 6 for p in deltas)
    tail = types[types.index("response.output_text.done") :]
    assert tail[:3] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    assert tail[3] == "response.output_item.added"
    assert "response.function_call_arguments.delta" in tail
    assert tail[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    payloads = [p for _, p in events]
    assert all(p is not None and p["type"] == e for e, p in events)
    assert [p["sequence_number"] for p in payloads if p] == list(range(len(events)))
    final = payloads[-1]
    assert final is not None
    assert [item["type"] for item in final["response"]["output"]] == ["message", "function_call"]
    assert final["response"]["usage"]["total_tokens"] > 0
    assert final["response"]["id"].startswith("resp_")


def test_a_chat_stream_has_the_shape_of_the_real_one() -> None:
    spec = {"calls": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{}"}]}
    events = _events(synthesize_turn(spec, "chat", "gpt-4o-mini", 0))
    assert all(e == "message" for e, _ in events)
    payloads = [p for _, p in events]
    assert payloads[-1] is None  # data: [DONE]
    chunks = [p for p in payloads if p is not None]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    headers = [
        tc
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
        if "id" in tc
    ]
    assert [(h["index"], h["function"]["name"]) for h in headers] == [(0, "a"), (1, "b")]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("dialect", ["responses", "chat"])
def test_an_error_turn_is_an_in_stream_error(dialect: str) -> None:
    error = {"code": "server_error", "message": "the model broke", "type": "server_error"}
    turn = parse_stream(synthesize_turn({"text": "Hal", "error": error}, dialect, "m", 0), dialect)
    assert turn.status == "failed" and turn.error == error and turn.text == "Hal"


def test_a_status_turn_is_a_json_error_body() -> None:
    body = orjson.loads(synthesize_turn({"status": 429}, "responses", "m", 0))
    assert body["error"]["code"] == "rate_limit_exceeded"
    given = {"message": "nope", "type": "invalid_request_error", "code": "bad"}
    assert orjson.loads(synthesize_turn({"status": 400, "error": given}, "chat", "m", 0)) == {
        "error": given
    }


def test_ids_come_from_the_index() -> None:
    a = parse_stream(synthesize_turn({"calls": [{"name": "f"}]}, "responses", "m", 0))
    b = parse_stream(synthesize_turn({"calls": [{"name": "f"}]}, "responses", "m", 1))
    assert a.response_id != b.response_id and a.calls[0].call_id != b.calls[0].call_id
    assert a.calls[0].arguments == "{}"


# -- scripts ------------------------------------------------------------------------------------

SCRIPT: dict[str, Any] = {
    "model": "scripted-model",
    "turns": [
        {"status": 429, "retry_after": 0},
        {
            "text": "Working on it.",
            "calls": [
                {"name": "multiply", "arguments": {"a": 6, "b": 7}},
                {"name": "shout", "arguments": '{"text": "héllo wörld"}', "call_id": "call_1"},
            ],
        },
        {"error": {"code": "server_error", "message": "overloaded, try again"}},
        {"text": "6 * 7 = 42 and HÉLLO WÖRLD", "usage": {"input_tokens": 9, "output_tokens": 4}},
    ],
}


def test_a_script_becomes_a_trace_with_failed_turns_as_attempts() -> None:
    trace = script_to_trace({**SCRIPT, "dialect": "chat"})
    assert trace.dialect == "chat" and trace.header["metadata"]["script"] is True
    assert [
        (e.iteration, e.attempt, e.response["status"] if e.response else None)
        for e in trace.exchanges()
    ] == [(0, 0, 429), (0, 1, 200), (1, 0, 200), (1, 1, 200)]
    first = trace.exchanges()[0]
    assert first.response is not None and first.response["headers"]["retry-after"] == "0"
    assert parse_stream(trace.exchanges()[3].body, "chat").text == SCRIPT["turns"][3]["text"]


@pytest.mark.parametrize(
    "script,words",
    [
        ([], "a JSON object"),
        ({"turns": []}, "non-empty list"),
        ({"dialect": "soap", "turns": [{}]}, "dialect must be"),
        ({"turns": [{"txt": "hi"}]}, r"turns\[0\]: unknown key\(s\) txt"),
        ({"turns": [{}, {"calls": [{"arguments": {}}]}]}, r"turns\[1\]\.calls\[0\]\.name"),
        ({"turns": [{"calls": [{"name": "f", "arguments": 3}]}]}, "object or a JSON string"),
        ({"turns": [{"status": 99}]}, "HTTP status"),
        ({"turns": [{"status": 429, "retry_after": "soon"}]}, "retry_after"),
        ({"turns": [{"text": "\ud800"}]}, "not valid Unicode"),
    ],
)
def test_bad_scripts_are_explained(script: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        validate_script(script)


# -- the published format: docs/script.schema.json ---------------------------------------------

DOCS = Path(__file__).parents[2] / "docs"
SCHEMA = orjson.loads((DOCS / "script.schema.json").read_bytes())


def _help_example() -> Any:
    """The example script ``rawloop serve --help`` shows."""
    text = SCRIPT_HELP.split("is a JSON object:", 1)[1].split("\n\n  dialect", 1)[0]
    return orjson.loads(text)


def _bundled_scripts() -> list[tuple[str, Any]]:
    found = [(p.name, orjson.loads(p.read_bytes())) for p in sorted(DOCS.glob("scripts/*.json"))]
    return [*found, ("serve --help", _help_example()), ("this module", SCRIPT)]


def test_there_are_bundled_scripts() -> None:
    assert len(_bundled_scripts()) >= 4


@pytest.mark.parametrize("name,script", _bundled_scripts(), ids=lambda v: str(v)[:20])
def test_every_bundled_script_fits_the_schema_and_serves(name: str, script: Any) -> None:
    assert problems(script, SCHEMA) == [], name
    trace = script_to_trace(script, name)
    assert len(trace.exchanges()) == len(script["turns"])


@pytest.mark.parametrize(
    "script",
    [
        {"turns": [{"txt": "hi"}]},
        {"turns": [{"calls": [{"name": "f", "args": {}}]}]},
        {"turns": [{}], "modle": "x"},
        {"turns": [{"calls": [{"arguments": {}}]}]},
        {"turns": [{"status": "429"}]},
        {"dialect": "soap", "turns": [{}]},
        {"turns": [{"calls": [{"name": "f", "arguments": 3}]}]},
        {"model": "m"},
    ],
)
def test_the_schema_and_the_loader_refuse_the_same_scripts(script: Any) -> None:
    assert problems(script, SCHEMA) != []
    with pytest.raises(ConfigurationError):
        validate_script(script)


def test_an_unknown_key_is_answered_with_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        validate_script({"turns": [{"text": "hi", "retry-after": 1}]})
    assert str(caught.value) == (
        "script: turns[0]: unknown key(s) retry-after "
        "(valid keys: text, calls, usage, error, status, retry_after)"
    )
    with pytest.raises(ConfigurationError, match=r"valid keys: name, arguments, call_id\)"):
        validate_script({"turns": [{"calls": [{"name": "f", "args": {}}]}]})
    with pytest.raises(ConfigurationError, match=r"valid keys: dialect, model, turns\)"):
        validate_script({"turns": [{}], "modle": "x"})


def test_load_script_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "turns.json"
    path.write_bytes(orjson.dumps(SCRIPT))
    assert load_script(path)["dialect"] == "responses"
    path.write_text("{nope")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_script(path)
    with pytest.raises(ConfigurationError, match="cannot read script"):
        load_script(tmp_path / "missing.json")


# -- a scripted server --------------------------------------------------------------------------


@asynccontextmanager
async def serving(script: dict[str, Any]) -> AsyncIterator[ReplayServer]:
    server = ReplayServer([script_to_trace(script)])
    with anyio.fail_after(15):
        async with anyio.create_task_group() as group:
            await group.start(server.serve)
            try:
                yield server
            finally:
                group.cancel_scope.cancel()


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


@tool
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


@pytest.mark.parametrize("dialect", ["responses", "chat"])
async def test_a_loop_runs_against_a_scripted_server(dialect: str) -> None:
    async with serving({**SCRIPT, "dialect": dialect}) as server:
        loop = Loop(
            "scripted-model",
            "Be brief.",
            tools=[multiply, shout],
            dialect=dialect,
            base_url=f"http://127.0.0.1:{server.port}/v1",
            retries=RetryPolicy(max_retries=3, initial_delay=0.0),
        )
        result = await loop.run("What is 6 * 7? And shout 'héllo wörld'.")
    assert result.stop_reason == "completed" and result.iterations == 2
    assert [(r.name, r.output) for r in result.results] == [
        ("multiply", "42"),
        ("shout", "HÉLLO WÖRLD"),
    ]
    assert result.results[1].call_id == "call_1"
    assert result.turns[0].text == "Working on it."
    assert result.text == "6 * 7 = 42 and HÉLLO WÖRLD"
    assert result.turns[1].usage == {"input_tokens": 9, "output_tokens": 4}
    assert server.served == 4  # the 429 and the in-stream error were retried
    assert server.divergences == []


async def test_the_openai_sdk_accepts_scripted_streams_and_previous_response_id() -> None:
    script = {
        "dialect": "responses",
        "model": "scripted-model",
        "turns": [{"calls": [{"name": "multiply", "arguments": {"a": 2, "b": 3}}]}, {"text": "6"}],
    }
    async with (
        serving(script) as server,
        openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key="sk-test", max_retries=0
        ) as client,
    ):
        stream = await client.responses.create(model="scripted-model", input="2 * 3?", stream=True)
        events = [event async for event in stream]
        final = events[-1]
        assert final.type == "response.completed"
        (call,) = final.response.output
        assert call.type == "function_call" and call.arguments == '{"a":2,"b":3}'
        # Stateful: only the tool output, chained by id. The script knows where it is.
        answer = await client.responses.create(
            model="scripted-model",
            previous_response_id=final.response.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "6"}],
        )
        assert answer.output_text == "6"
        # A third model turn was never scripted.
        with pytest.raises(openai.BadRequestError, match="script"):
            await client.responses.create(
                model="scripted-model", previous_response_id=answer.id, input="and?"
            )
