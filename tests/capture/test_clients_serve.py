"""Each customer client, captured through ``rawloop record``, then served its capture strictly.

For every client of ``tests.capture.clients``: the client runs through a
``RecordingProxy`` against a scripted upstream (a tool round trip), then the
same client code runs against ``ReplayServer(capture, strict=True)`` and
against the same with ``chunking="hostile"``. It must get the recorded
answers (the same text, the same tool call) and the server must see no
divergence: a diverging request would be answered 409 and fail the client.

Across forms: a capture made without streaming serves streaming clients
(events synthesised from the recorded JSON), and a streamed capture serves a
client that does not stream (JSON assembled from the stream), the openai
Python and node SDKs alike.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import orjson
import pytest

from rawloop.replay.server import ReplayServer
from rawloop.trace.format import Trace

from .clients import (
    CLIENTS,
    DEADLINE,
    EXPECTED_TEXT,
    SCRIPT,
    Outcome,
    capture,
    node_available,
    node_session,
    run_against,
    serving,
)

pytestmark = pytest.mark.anyio

PYTHON = [name for name, client in CLIENTS.items() if not client.node]
NODE = [name for name, client in CLIENTS.items() if client.node]
RECORDED = Outcome(EXPECTED_TEXT, [("multiply", {"a": 6, "b": 7})])
needs_node = pytest.mark.skipif(
    not node_available(), reason="node or its openai package is not installed"
)


def _stream_flags(trace: Path) -> list[bool]:
    """Whether each recorded request asked for a stream."""
    bodies = [e.request.get("body") or {} for e in Trace.load(trace).exchanges()]
    return [body.get("stream") is True for body in bodies]


async def _captured_then_served(name: str, out: Path) -> Path:
    trace, outcome = await capture(name, out)
    assert outcome == RECORDED
    for chunking in ("recorded", "hostile"):
        served, server = await run_against(name, trace, strict=True, chunking=chunking)
        assert served == RECORDED, f"{name} under {chunking} chunking"
        assert server.divergences == []
        assert server.served == len(Trace.load(trace).exchanges())
    return trace


@pytest.mark.parametrize("name", PYTHON)
async def test_a_python_client_is_served_its_own_capture_strictly(
    name: str, tmp_path: Path
) -> None:
    trace = await _captured_then_served(name, tmp_path)
    # The capture holds what the client asked for: a stream, or not.
    streams = CLIENTS[name].streams
    assert _stream_flags(trace) == [streams, streams]


@needs_node
@pytest.mark.parametrize("name", NODE)
async def test_a_node_client_is_served_its_own_capture_strictly(name: str, tmp_path: Path) -> None:
    async with node_session():  # one node process for the capture and both servings
        trace = await _captured_then_served(name, tmp_path)
    assert _stream_flags(trace) == [True, True]


async def test_a_capture_made_without_streaming_serves_streaming_clients(tmp_path: Path) -> None:
    trace, _ = await capture("openai-responses-create", tmp_path)
    assert _stream_flags(trace) == [False, False]
    for name in ("openai-responses-stream", "openai-responses-helper"):
        for chunking in ("recorded", "hostile"):
            served, server = await run_against(name, trace, strict=True, chunking=chunking)
            assert served == RECORDED, f"{name} under {chunking} chunking"
            assert server.divergences == []


async def test_a_chat_capture_made_without_streaming_serves_a_streaming_client(
    tmp_path: Path,
) -> None:
    trace, _ = await capture("openai-chat-create", tmp_path)
    for chunking in ("recorded", "hostile"):
        served, server = await run_against(
            "openai-chat-stream", trace, strict=True, chunking=chunking
        )
        assert served == RECORDED and server.divergences == []


async def test_a_streamed_capture_serves_a_client_that_does_not_stream(tmp_path: Path) -> None:
    trace, _ = await capture("openai-responses-stream", tmp_path)
    served, server = await run_against("openai-responses-create", trace, strict=True)
    assert served == RECORDED and server.divergences == []


@needs_node
async def test_a_python_capture_serves_the_node_clients(tmp_path: Path) -> None:
    # The node SDK renders the items it sends back its own way (responses.stream()
    # adds parsed_arguments): the same conversation all the same, so no divergence.
    trace, _ = await capture("openai-responses-create", tmp_path)
    async with node_session():
        for name in NODE:
            served, server = await run_against(name, trace, strict=True, chunking="hostile")
            assert served == RECORDED, name
            assert server.divergences == []


async def test_a_follow_up_by_previous_response_id_gets_the_next_recorded_answer(
    tmp_path: Path,
) -> None:
    # Recorded with the whole conversation in each request; replayed by an agent that
    # sends only the tool output and previous_response_id. Without strict it is served
    # (with the differences reported), iteration by iteration: no MaxTurnsExceeded.
    trace, _ = await capture("openai-responses-create", tmp_path)
    served, server = await run_against("agents-run-previous-id", trace)
    assert served == RECORDED
    assert [d.iteration for d in server.divergences] == [0, 1]
    assert server.divergences[1].path.startswith(("input", "previous_response_id"))


async def test_every_client_replaying_a_capture_sees_its_recorded_retry(tmp_path: Path) -> None:
    turns = [{"status": 429, "retry_after": 0}, *SCRIPT["turns"]]
    trace, outcome = await capture("openai-responses-create", tmp_path, {**SCRIPT, "turns": turns})
    assert outcome == RECORDED
    statuses = [e.response["status"] for e in Trace.load(trace).exchanges() if e.response]
    assert statuses == [429, 200, 200]
    # Not strict: openai-agents renders its requests its own way (served the nearest answer).
    server = ReplayServer([Trace.load(trace)])
    with anyio.fail_after(DEADLINE):
        async with serving(server) as url:
            for name in ("openai-responses-create", "openai-responses-stream", "agents-run"):
                assert await CLIENTS[name].run(url) == RECORDED, name
    # Each of the three got the 429 first and retried: 3 requests each, one server.
    assert server.served == 9
    assert {d.iteration for d in server.divergences} == {0, 1}  # agents' requests only


async def test_a_client_that_asks_something_else_is_refused_strictly(tmp_path: Path) -> None:
    import openai

    trace, _ = await capture("openai-responses-create", tmp_path)
    server = ReplayServer([Trace.load(trace)], strict=True)
    with anyio.fail_after(DEADLINE):
        async with serving(server) as url:
            client = openai.AsyncOpenAI(base_url=url, api_key="test", max_retries=0)
            async with client:
                with pytest.raises(openai.APIStatusError) as caught:
                    await client.responses.create(model="gpt-test", input="Tell me a joke.")
    assert caught.value.status_code == 409
    error = orjson.loads(caught.value.response.content)["error"]
    assert error["type"] == "replay_divergence"
    assert set(error) >= {"message", "path", "recorded", "received"}
    assert server.divergences[0].path == error["path"]
