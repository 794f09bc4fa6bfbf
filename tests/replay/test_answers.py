"""The replay server answers each request in the form it asks for (``rawloop.replay.answers``).

A recorded stream or a recorded JSON object, to a streaming client or not;
the Chat usage chunk only when asked; the drop-final-blank-line fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from rawloop import SSEDecoder, Trace
from rawloop.core.assemble import assemble
from rawloop.core.parse import StreamParser
from rawloop.trace.format import Record, encode_chunk

from .serving import (
    CHAT,
    ROUNDTRIP,
    TLS,
    first_body,
    serving,
    url,
)

pytestmark = pytest.mark.anyio

# -- serving what was recorded, in the form asked for ------------------------------------------


def json_trace(path: Path) -> Trace:
    """``path`` as a client that never streams would have recorded it: one JSON object each."""
    trace = Trace.load(path)
    records = []
    for record in trace.records:
        data = dict(record.data)
        if record.kind == "request" and isinstance(data.get("body"), dict):
            data["body"] = {k: v for k, v in data["body"].items() if k != "stream"}
        elif record.kind == "response":
            data["headers"] = {**data["headers"], "content-type": "application/json"}
        elif record.kind == "chunk":
            continue
        records.append(Record(record.kind, record.line, data))
        if record.kind == "response":
            exchange = next(
                e
                for e in trace.exchanges()
                if (e.iteration, e.attempt) == (record.iteration, record.attempt)
            )
            _, payload = assemble(exchange.body, trace.dialect)
            chunk = {"kind": "chunk", "iteration": record.iteration, "attempt": record.attempt}
            chunk.update(t=data["t"], **encode_chunk(orjson.dumps(payload)))
            records.append(Record("chunk", record.line, chunk))
    return Trace(trace.header, records, str(path))


def _events(raw: bytes) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    events = decoder.feed(raw)  # no close(): an event without its blank line is lost
    return [orjson.loads(e.data) for e in events if e.data != "[DONE]"]


@pytest.mark.parametrize("chunking", ["recorded", "hostile"])
async def test_a_json_recording_answers_each_form_it_is_asked_in(chunking: str) -> None:
    trace = json_trace(ROUNDTRIP)
    body = trace.exchanges()[0].request["body"]
    recorded = trace.exchanges()[0].body
    async with (
        serving(trace, chunking=chunking) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        plain = await client.post(f"{url(server)}/responses", json=body)
        streamed = await client.post(f"{url(server)}/responses", json={**body, "stream": True})
    assert plain.content == recorded  # the recorded bytes, as recorded
    assert plain.headers["content-type"] == "application/json"
    assert streamed.headers["content-type"] == "text/event-stream"
    events = _events(streamed.content)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in types
    assert types[-2:] == ["response.output_item.done", "response.completed"]
    assert events[-1]["response"] == orjson.loads(recorded)
    parser = StreamParser("responses")
    parser.feed(streamed.content)
    turn = parser.close()
    assert [c.arguments for c in turn.calls] == ['{"a":1231,"b":2331}']
    assert server.divergences == []


async def test_the_openai_sdk_streams_a_json_recording() -> None:
    trace = json_trace(ROUNDTRIP)
    body = trace.exchanges()[1].request["body"]
    async with (
        serving(trace, chunking="hostile", seed=3) as server,
        openai.AsyncOpenAI(base_url=url(server), api_key="test", max_retries=0) as client,
        client.responses.stream(**body) as stream,
    ):
        final = await stream.get_final_response()
    assert final.output_text == Trace.load(ROUNDTRIP).of_kind("decision")[1].data["turn"]["text"]


@pytest.mark.parametrize("asked", [False, True])
async def test_a_chat_stream_has_a_usage_chunk_only_when_asked(asked: bool) -> None:
    body = {k: v for k, v in first_body(CHAT).items() if k != "stream_options"}
    if asked:
        body["stream_options"] = {"include_usage": True}
    for trace in (Trace.load(CHAT), json_trace(CHAT)):  # a recorded stream, recorded JSON
        async with serving(trace) as server, httpx.AsyncClient(verify=TLS) as client:
            answer = await client.post(f"{url(server)}/chat/completions", json=body)
        chunks = _events(answer.content)
        usage = [c for c in chunks if c["choices"] == [] and c.get("usage")]
        assert len(usage) == (1 if asked else 0), trace.path
        assert answer.content.endswith(b"data: [DONE]\n\n")
        parser = StreamParser("chat")
        parser.feed(answer.content)
        assert parser.close().finish_reason == "tool_calls"


async def test_the_drop_final_blank_line_fault_loses_the_last_event() -> None:
    body = first_body(ROUNDTRIP)
    recorded = _events(Trace.load(ROUNDTRIP).exchanges()[0].body)
    async with (
        serving(
            ROUNDTRIP, chunking="hostile", faults=["attempt=0:drop-final-blank-line"]
        ) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        faulty = await client.post(f"{url(server)}/responses", json=body)
        whole = await client.post(
            f"{url(server)}/responses", json=body, headers={"x-stainless-retry-count": "1"}
        )
    assert _events(faulty.content) == recorded[:-1]  # response.completed is discarded
    assert _events(whole.content) == recorded  # hostile chunking alone keeps it
