"""Which recording answers a request (``rawloop.replay.matching``), over real sockets.

Divergences (logged, in a header, or refused with ``--strict``), follow-ups
by answer id, call id or conversation, renderings that mean the same, and
the attempts of a request: per conversation, whoever asks.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop import Trace
from rawloop.core.jsondiff import MISSING
from rawloop.core.parse import StreamParser
from rawloop.replay.matching import Refusal
from rawloop.replay.replayer import loop_from_trace
from rawloop.replay.server import ReplayServer

from .serving import (
    CHAT,
    RETRY,
    ROUNDTRIP,
    TLS,
    TRACES,
    first_body,
    recorded_events,
    replay_through,
    serving,
    url,
)

pytestmark = pytest.mark.anyio


async def test_the_recorded_retry_sequence_is_served_per_conversation() -> None:
    body = first_body(RETRY)
    success = Trace.load(RETRY).exchanges()[2].body
    async with serving(RETRY) as server, httpx.AsyncClient(verify=TLS) as client:
        for _ in range(2):  # one client, then the next one: each sees the recorded retries
            first = await client.post(f"{url(server)}/responses", json=body)
            assert first.status_code == 429
            assert first.headers["retry-after-ms"] == "50"
            assert first.json()["error"]["message"] == "Rate limit reached"
            with pytest.raises(httpx.RemoteProtocolError):  # the recorded reset
                await client.post(f"{url(server)}/responses", json=body)
            ok = await client.post(f"{url(server)}/responses", json=body)
            assert ok.status_code == 200 and ok.content == success
        # Another body has a counter of its own.
        other = {**body, "input": [{"role": "user", "content": "ping?"}]}
        assert (await client.post(f"{url(server)}/responses", json=other)).status_code == 429


async def test_a_client_that_numbers_its_retries_gets_that_attempt() -> None:
    body = first_body(RETRY)
    success = Trace.load(RETRY).exchanges()[2].body
    async with serving(RETRY) as server, httpx.AsyncClient(verify=TLS) as client:

        async def attempt(n: int) -> httpx.Response:
            headers = {"x-stainless-retry-count": str(n)}
            return await client.post(f"{url(server)}/responses", json=body, headers=headers)

        # Interleaved clients: each one's attempt number alone chooses the answer.
        assert (await attempt(0)).status_code == 429
        assert (await attempt(0)).status_code == 429
        assert (await attempt(2)).content == success
        with pytest.raises(httpx.RemoteProtocolError):
            await attempt(1)
        assert (await attempt(7)).content == success  # past the recording: the last success
        assert server._counters == {}


def _state_size(root: object) -> int:
    """How many items the containers reachable from ``root`` hold (through rawloop objects)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            total += len(obj)
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            total += len(obj)
            stack.extend(obj)
        elif type(obj).__module__.startswith("rawloop") and hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return total


async def test_a_busy_counter_does_not_grow() -> None:
    body = first_body(RETRY)
    async with serving(RETRY) as server, httpx.AsyncClient(verify=TLS) as client:

        async def status() -> int:
            try:
                return (await client.post(f"{url(server)}/responses", json=body)).status_code
            except httpx.RemoteProtocolError:  # the recorded reset
                return 0

        assert [await status() for _ in range(4)] == [429, 0, 200, 429]
        size = _state_size(server)
        assert [await status() for _ in range(201)] == [0, 200, 429] * 67
        assert _state_size(server) == size
        assert server.served == 205 and len(server._counters) == 1


async def test_a_fault_count_is_per_request_body() -> None:
    body = first_body(ROUNDTRIP)
    other = {**body, "input": [{"role": "user", "content": "ping?"}]}
    async with (
        serving(ROUNDTRIP, faults=["iter=0:status=503,count=2"]) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        for each in (body, other):
            statuses = [
                (await client.post(f"{url(server)}/responses", json=each)).status_code
                for _ in range(3)
            ]
            assert statuses == [503, 503, 200]


async def test_faults_apply_per_iteration_and_attempt() -> None:
    body = first_body(ROUNDTRIP)
    async with (
        serving(ROUNDTRIP, faults=["iter=0,attempt=0:status=503,retry-after=0"]) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        failed = await client.post(f"{url(server)}/responses", json=body)
        assert failed.status_code == 503 and failed.headers["retry-after"] == "0"
        assert failed.json()["error"]["type"] == "rawloop_fault"
        ok = await client.post(f"{url(server)}/responses", json=body)
        assert ok.status_code == 200
        assert ok.content == Trace.load(ROUNDTRIP).exchanges()[0].body


async def test_a_dropped_connection_fault_then_the_recording() -> None:
    body = first_body(CHAT)
    async with (
        serving(CHAT, faults=["iter=0,attempt=0:drop"]) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post(f"{url(server)}/chat/completions", json=body)
        ok = await client.post(f"{url(server)}/chat/completions", json=body)
        assert ok.content == Trace.load(CHAT).exchanges()[0].body


async def test_without_stream_the_retry_sequence_is_served_as_json() -> None:
    body = {k: v for k, v in first_body(RETRY).items() if k != "stream"}
    final = recorded_events(RETRY, 2)[-1]["response"]
    async with serving(RETRY) as server, httpx.AsyncClient(verify=TLS) as client:
        limited = await client.post(f"{url(server)}/responses", json=body)
        assert limited.status_code == 429 and limited.headers["x-request-id"] == "req_example_429"
        assert limited.json()["error"]["message"] == "Rate limit reached"
        with pytest.raises(httpx.RemoteProtocolError):  # the recorded reset, mid-body
            await client.post(f"{url(server)}/responses", json=body)
        ok = await client.post(f"{url(server)}/responses", json=body)
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
        assert ok.json() == final


# -- divergence -------------------------------------------------------------------------------


async def test_a_changed_request_is_served_from_the_closest_recording_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = Trace.load(ROUNDTRIP)
    loop = loop_from_trace(trace)
    loop.instructions = "You are terse."
    with caplog.at_level(logging.INFO, logger="rawloop.server"):
        async with serving(trace) as server:
            report = await replay_through(server, trace, loop)
    # Both iterations were still answered from the recording, and both differ.
    assert [d.iteration for d in server.divergences] == [0, 1]
    first = server.divergences[0]
    assert (first.path, first.recorded, first.actual) == ("instructions", MISSING, "You are terse.")
    assert report.verdict == "diverged" and report.divergence is first
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "iteration 0" in warnings[0].getMessage()
    assert "instructions" in warnings[0].getMessage()
    assert "You are terse." in warnings[0].getMessage()


async def test_a_changed_tool_output_matches_the_longest_common_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = first_body(ROUNDTRIP, 1)
    body["input"][2] = {**body["input"][2], "output": "2869462"}
    async with serving(ROUNDTRIP) as server, httpx.AsyncClient(verify=TLS) as client:
        response = await client.post(f"{url(server)}/responses", json=body)
    assert response.content == Trace.load(ROUNDTRIP).exchanges()[1].body
    (divergence,) = server.divergences
    assert (divergence.iteration, divergence.path) == (1, "input[2].output")
    assert (divergence.recorded, divergence.actual) == ("2869461", "2869462")
    assert "input[2].output" in caplog.text


async def test_volatile_keys_and_stream_flags_do_not_count() -> None:
    body = {**first_body(CHAT), "prompt_cache_key": "abc", "stream_options": None}
    async with serving(CHAT) as server, httpx.AsyncClient(verify=TLS) as client:
        response = await client.post(f"{url(server)}/chat/completions", json=body)
        assert response.status_code == 200
        assert server.divergences == []


async def test_a_follow_up_naming_the_previous_answer_gets_the_next_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trace = Trace.load(ROUNDTRIP)
    first, second = trace.exchanges()
    parser = StreamParser("responses")
    parser.feed(first.body)
    previous = parser.close().response_id
    output = second.request["body"]["input"][2]  # the function_call_output
    by_id = {**first_body(ROUNDTRIP), "previous_response_id": previous, "input": [output]}
    by_call = {**first_body(ROUNDTRIP), "conversation": "conv_1", "input": [output]}
    with caplog.at_level(logging.INFO, logger="rawloop.server"):
        async with serving(trace) as server, httpx.AsyncClient(verify=TLS) as client:
            for body in (by_id, by_call):
                answer = await client.post(f"{url(server)}/responses", json=body)
                assert answer.content == second.body  # the next answer, not iteration 0's
                assert answer.headers["x-rawloop-divergence"].startswith("input[0]")
    assert [d.iteration for d in server.divergences] == [1, 1]
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING).getMessage()
    assert "trace tool-roundtrip, iteration 1" in warning and "input[0]" in warning


async def test_strict_answers_a_diverging_request_with_409() -> None:
    joke = {**first_body(ROUNDTRIP), "input": [{"role": "user", "content": "tell me a joke"}]}
    async with (
        serving(ROUNDTRIP, strict=True) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        refused = await client.post(f"{url(server)}/responses", json=joke)
        same = await client.post(f"{url(server)}/responses", json=first_body(ROUNDTRIP))
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["type"] == "replay_divergence"
    assert error["path"] == "input[0].content"
    assert error["received"] == "tell me a joke"
    assert error["recorded"] == first_body(ROUNDTRIP)["input"][0]["content"]
    assert "iteration 0" in error["message"]
    assert same.status_code == 200 and "x-rawloop-divergence" not in same.headers
    assert len(server.divergences) == 1


async def test_another_rendering_of_the_same_conversation_is_not_a_divergence() -> None:
    body = first_body(ROUNDTRIP, 1)
    user, call, output = body["input"]
    renderings = [
        # pydantic-ai sends its calls back without status (and the message typed)
        [{**user, "type": "message"}, {k: v for k, v in call.items() if k != "status"}, output],
        # node's responses.stream() adds parsed_arguments to the items it got
        [user, {**call, "parsed_arguments": {"a": 1231, "b": 2331}}, output],
        # content parts instead of a string
        [
            {"role": "user", "content": [{"type": "input_text", "text": user["content"]}]},
            call,
            output,
        ],
    ]
    async with (
        serving(ROUNDTRIP, strict=True) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        for items in renderings:
            answer = await client.post(f"{url(server)}/responses", json={**body, "input": items})
            assert answer.status_code == 200
            assert answer.content == Trace.load(ROUNDTRIP).exchanges()[1].body
    assert server.divergences == []


async def test_a_conversation_moves_on_with_each_answer_it_gets() -> None:
    trace = Trace.load(ROUNDTRIP)
    first, second = (e.body for e in trace.exchanges())
    opening = first_body(ROUNDTRIP)
    later = {
        "model": opening["model"],
        "stream": True,
        "input": [{"role": "user", "content": "and now?"}],
    }
    async with serving(trace) as server, httpx.AsyncClient(verify=TLS) as client:

        async def ask(body: dict[str, Any], conversation: str) -> bytes:
            answer = await client.post(
                f"{url(server)}/responses", json={**body, "conversation": {"id": conversation}}
            )
            return answer.content

        assert await ask(opening, "conv_a") == first
        assert await ask(later, "conv_a") == second  # conv_a is past iteration 0 now
        assert await ask(opening, "conv_b") == first  # another conversation starts afresh
        assert await ask(later, "conv_b") == second
    assert server.matcher.conversations == {(0, "conv_a"): 2, (0, "conv_b"): 2}


async def test_the_divergence_header_is_escaped() -> None:
    body = {**first_body(ROUNDTRIP), "métadonnée\r\nset-cookie: x": 1}
    async with serving(ROUNDTRIP) as server, httpx.AsyncClient(verify=TLS) as client:
        answer = await client.post(f"{url(server)}/responses", json=body)
    assert answer.status_code == 200 and "set-cookie" not in answer.headers
    shown = answer.headers["x-rawloop-divergence"]
    assert shown.isascii() and shown.isprintable() and " " not in shown
    assert unquote(shown) == server.divergences[0].path
    assert "métadonnée" in server.divergences[0].path


# -- any request body: an answer or an OpenAI-shaped refusal, never a crash ---------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_item = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "function_call", "function_call_output", "x"]),
        "role": st.sampled_from(["user", "assistant", "tool"]) | _json,
        "content": _json,
        "call_id": _json,
        "id": _json,
        "output": _json,
        "tool_calls": st.lists(_json, max_size=2) | _json,
        "tool_call_id": _json,
    },
)
_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-5.5", "gpt-4o-mini", "other"])},
    optional={
        "input": st.lists(_item, max_size=4) | _json,
        "messages": st.lists(_item, max_size=4) | _json,
        "previous_response_id": _json,
        "conversation": _json | st.fixed_dictionaries({"id": _json}),
        "stream": _json,
        "stream_options": _json,
    },
)
_MATCHER = ReplayServer([Trace.load(p) for p in TRACES]).matcher


@settings(max_examples=200, deadline=None)
@given(body=_bodies, dialect=st.sampled_from(["responses", "chat"]))
def test_any_request_body_is_matched_or_refused(body: dict[str, Any], dialect: str) -> None:
    found = _MATCHER.choose(dialect, body)
    if isinstance(found, Refusal):
        assert found.status in (400, 404) and found.message
        return
    assert found.group and found.loaded.dialect == dialect
    assert all(e.iteration == found.iteration for e in found.group)
    if found.difference is not None:
        assert isinstance(found.difference.path, str)
