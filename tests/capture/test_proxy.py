"""The recording proxy on real loopback sockets: SDKs and loops through it, traces out of it.

The upstream is a ``ReplayServer`` serving a bundled trace, so what the proxy
records can be compared byte for byte with what the upstream sent. Every
server runs in a task group under a deadline; every socket is 127.0.0.1 with
a port the kernel picks. The run table (``rawloop.proxy_runs``) is also
driven directly, without sockets, for the grouping rules.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import orjson
import pytest

from rawloop import Trace
from rawloop.capture.proxy import RecordingProxy, add_record_command, run_proxy
from rawloop.capture.proxy_runs import RunTable
from rawloop.core.conversation import item_key, tool_outputs, turn_from_json
from rawloop.core.parse import parse_stream
from rawloop.replay.replayer import replay
from rawloop.replay.server import ReplayServer
from rawloop.trace.format import Exchange

pytestmark = pytest.mark.anyio

TRACES_DIR = Path(__file__).parents[2] / "traces"
ROUNDTRIP = TRACES_DIR / "tool-roundtrip.jsonl"
CHAT = TRACES_DIR / "chat-run.jsonl"
PARALLEL = TRACES_DIR / "parallel-tools.jsonl"
DEADLINE = 20.0
SECRET = "sk-test-" + "0123456789abcdefghijklmnopqrstuv"  # no key-shaped literal in the source
TLS = ssl.create_default_context()  # plain http only, but httpx makes one per client: share it


@asynccontextmanager
async def recording(
    out: Path,
    *traces: Path,
    faults: tuple[str, ...] = (),
    upstream: str | None = None,
    **options: Any,
) -> AsyncIterator[RecordingProxy]:
    """A ReplayServer for ``traces`` and a RecordingProxy in front of it, stopped on exit."""
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            if upstream is None:
                server = ReplayServer(traces, faults=faults)
                upstream = f"http://127.0.0.1:{await group.start(server.serve)}"
            proxy = RecordingProxy(upstream, out, **options)
            await group.start(proxy.serve)
            try:
                yield proxy
            finally:
                group.cancel_scope.cancel()


def client_of(proxy: RecordingProxy) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=proxy.url, verify=TLS)


def first_body(path: Path, n: int = 0) -> dict[str, Any]:
    body = Trace.load(path).exchanges()[n].request["body"]
    assert isinstance(body, dict)
    return body


def files(out: Path) -> list[Path]:
    return sorted(out.glob("run-*.jsonl"))


def only_trace(out: Path) -> Trace:
    (path,) = files(out)
    return Trace.load(path)


def by_key(trace: Trace) -> dict[tuple[int, int], Exchange]:
    return {(e.iteration, e.attempt): e for e in trace.exchanges()}


def assert_no_secret(out: Path) -> None:
    token = SECRET.removeprefix("sk-")
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and token.encode() not in data, path


def assert_same_bytes(recorded: Trace, upstream: Trace) -> None:
    """Every exchange the proxy recorded carries the bytes the upstream's recording holds."""
    theirs = by_key(upstream)
    for key, exchange in by_key(recorded).items():
        assert exchange.response is not None
        if exchange.response["status"] < 300:
            assert exchange.body == theirs[key].body, key


def stop_reason(trace: Trace) -> str:
    end = trace.end()
    assert end is not None, f"{trace.path} has no end record"
    return str(end["stop_reason"])


def comparable(turn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in turn.items() if k not in ("event_count", "warnings")}


# -- end to end ------------------------------------------------------------------------------


async def test_the_openai_sdk_streams_through_the_proxy(tmp_path: Path) -> None:
    body = {k: v for k, v in first_body(ROUNDTRIP).items() if k != "stream"}
    upstream = Trace.load(ROUNDTRIP)
    async with recording(tmp_path, ROUNDTRIP) as proxy:
        async with openai.AsyncOpenAI(base_url=proxy.url, api_key=SECRET, max_retries=0) as sdk:
            stream = await sdk.responses.create(**body, stream=True)
            events = [event async for event in stream]
        assert events[-1].type == "response.completed"
        recorded = only_trace(tmp_path)
        assert recorded.end() is None  # the turn called a tool: the run waits for its output
    assert [e.type for e in events].count("response.function_call_arguments.delta") == 11
    recorded = only_trace(tmp_path)
    (exchange,) = recorded.exchanges()
    assert exchange.request["body"] == {**body, "stream": True}
    assert exchange.request["url"].endswith("/v1/responses")
    assert exchange.request["headers"]["authorization"].startswith("Bearer [REDACTED:")
    assert exchange.request["headers"]["accept-encoding"] == "identity"
    assert exchange.body == upstream.exchanges()[0].body
    assert recorded.header["dialect"] == "responses"
    assert recorded.header["model"] == body["model"]
    assert recorded.header["base_url"] == proxy.upstream + "/v1"
    (decision,) = recorded.of_kind("decision")
    assert comparable(decision.data["turn"]) == comparable(
        upstream.of_kind("decision")[0].data["turn"]
    )
    end = recorded.end()
    assert end is not None and end["stop_reason"] == "recording-stopped"
    assert end["iterations"] == 1
    assert_no_secret(tmp_path)


async def test_an_sdk_conversation_recorded_through_the_proxy_replays_identically(
    tmp_path: Path,
) -> None:
    # The official SDK drives both turns of the recorded tool loop; the proxy writes
    # one trace, with the tool result inferred from the second request.
    first, second = first_body(ROUNDTRIP, 0), first_body(ROUNDTRIP, 1)
    async with (
        recording(tmp_path, ROUNDTRIP) as proxy,
        openai.AsyncOpenAI(base_url=proxy.url, api_key=SECRET, max_retries=0) as sdk,
    ):
        for body in (first, second):
            params = {k: v for k, v in body.items() if k != "stream"}
            stream = await sdk.responses.create(**params, stream=True)
            assert [e async for e in stream][-1].type == "response.completed"
    recorded = only_trace(tmp_path)
    assert [(e.iteration, e.attempt) for e in recorded.exchanges()] == [(0, 0), (1, 0)]
    assert recorded.results()["call_sVidsfFJ6zlzRpelrPkTPlpd"]["output"] == "2869461"
    report = await replay(recorded)
    assert report.identical, str(report)
    assert_no_secret(tmp_path)


async def test_a_loop_records_one_trace_that_replays_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "traces"
    async with recording(out, ROUNDTRIP) as proxy, client_of(proxy) as client:
        report = await replay(ROUNDTRIP, http_client=client)
        assert report.identical, report
        assert len(files(out)) == 1
        end = only_trace(out).end()  # written when the last answer completed, not at shutdown
        assert end is not None and end["stop_reason"] == "completed"
    recorded = only_trace(out)
    upstream = Trace.load(ROUNDTRIP)
    assert sorted(by_key(recorded)) == [(0, 0), (1, 0)]
    assert_same_bytes(recorded, upstream)
    for mine, theirs in zip(recorded.exchanges(), upstream.exchanges()):
        assert mine.request["body"] == theirs.request["body"]
        assert mine.request["headers"]["authorization"].startswith("Bearer [REDACTED:")
    (result,) = recorded.of_kind("result")
    recorded_result = upstream.of_kind("result")[0].data
    assert {k: result.data[k] for k in ("iteration", "call_id", "name", "arguments", "output")} == {
        k: recorded_result[k] for k in ("iteration", "call_id", "name", "arguments", "output")
    }
    assert [r.kind for r in recorded.records if r.kind != "chunk"] == [
        "request",
        "response",
        "decision",
        "result",
        "request",
        "response",
        "decision",
        "end",
    ]
    end = recorded.end()
    assert end is not None and (end["stop_reason"], end["iterations"]) == ("completed", 2)
    assert_no_secret(out)
    again = await replay(recorded)
    assert again.identical, again


@pytest.mark.parametrize("path", sorted(TRACES_DIR.glob("*.jsonl")), ids=lambda p: p.stem)
async def test_every_bundled_trace_recorded_through_the_proxy_replays(
    tmp_path: Path, path: Path
) -> None:
    upstream = Trace.load(path)
    async with recording(tmp_path, path) as proxy, client_of(proxy) as client:
        assert (await replay(path, http_client=client)).identical
    recorded = only_trace(tmp_path)  # retries, cuts and edits included: one run, one file
    assert sorted(by_key(recorded)) == sorted(by_key(upstream))
    assert_same_bytes(recorded, upstream)
    assert stop_reason(recorded) == stop_reason(upstream)
    assert (await replay(recorded)).identical


async def test_concurrent_runs_get_a_file_each(tmp_path: Path) -> None:
    async with recording(tmp_path, ROUNDTRIP, CHAT) as proxy, client_of(proxy) as client:
        reports: list[Any] = []

        async def one(path: Path) -> None:
            reports.append(await replay(path, http_client=client))

        async with anyio.create_task_group() as group:
            for path in (ROUNDTRIP, ROUNDTRIP, CHAT, ROUNDTRIP):
                group.start_soon(one, path)
    assert all(r.identical for r in reports), reports
    traces = [Trace.load(p) for p in files(tmp_path)]
    assert sorted(t.dialect for t in traces) == ["chat", "responses", "responses", "responses"]
    for trace in traces:
        assert sorted(by_key(trace)) == [(0, 0), (1, 0)]
        assert stop_reason(trace) == "completed"
        assert_same_bytes(trace, Trace.load(CHAT if trace.dialect == "chat" else ROUNDTRIP))
        assert (await replay(trace)).identical


async def test_an_unreachable_upstream_gets_a_502_and_an_error_record(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    body = first_body(ROUNDTRIP)
    async with (
        recording(tmp_path, upstream=f"http://127.0.0.1:{dead}/v1") as proxy,
        client_of(proxy) as client,
    ):
        first = await client.post(
            "/responses", json=body, headers={"authorization": f"Bearer {SECRET}"}
        )
        again = await client.post("/responses", json=body)  # a retry: same body
    assert first.status_code == again.status_code == 502
    error = first.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_unreachable"
    assert f"127.0.0.1:{dead}/v1/responses" in error["message"]
    trace = only_trace(tmp_path)
    assert sorted(by_key(trace)) == [(0, 0), (0, 1)]
    errors = trace.of_kind("error")
    assert [(e.attempt, e.data["where"], e.data["type"]) for e in errors] == [
        (0, "request", "APIConnectionError"),
        (1, "request", "APIConnectionError"),
    ]
    assert all(e.response is None for e in trace.exchanges())
    assert trace.exchanges()[0].request["url"] == f"http://127.0.0.1:{dead}/v1/responses"
    assert stop_reason(trace) == "recording-stopped"
    assert_no_secret(tmp_path)


async def test_the_chat_dialect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    for path in (CHAT, PARALLEL):
        out = tmp_path / path.stem
        async with recording(out, path) as proxy, client_of(proxy) as client:
            assert (await replay(path, http_client=client)).identical
        recorded, upstream = only_trace(out), Trace.load(path)
        assert recorded.header["dialect"] == "chat"
        assert recorded.exchanges()[0].request["url"].endswith("/v1/chat/completions")
        assert_same_bytes(recorded, upstream)
        assert [(r["call_id"], r["output"]) for r in recorded.results().values()] == [
            (r["call_id"], r["output"]) for r in upstream.results().values()
        ]
        assert (await replay(recorded)).identical
        assert_no_secret(out)


async def test_a_retry_is_the_next_attempt_in_the_same_file(tmp_path: Path) -> None:
    async with (
        recording(tmp_path, ROUNDTRIP, faults=("iter=0,attempt=0:status=429",)) as proxy,
        client_of(proxy) as client,
    ):
        assert (await replay(ROUNDTRIP, http_client=client)).identical
    recorded = only_trace(tmp_path)
    exchanges = by_key(recorded)
    assert sorted(exchanges) == [(0, 0), (0, 1), (1, 0)]
    failed = exchanges[(0, 0)]
    assert failed.response is not None and failed.response["status"] == 429
    assert failed.error is not None and failed.error["type"] == "APIStatusError"
    assert failed.error["will_retry"] is True
    assert failed.body  # the error body is kept, as a loop's recorder keeps it
    assert stop_reason(recorded) == "completed"
    assert (await replay(recorded)).identical


async def test_a_stream_cut_upstream_is_cut_for_the_client_and_retried(tmp_path: Path) -> None:
    body = first_body(ROUNDTRIP)
    faults = ("iter=0,attempt=0:cut-after-bytes=1000",)
    async with recording(tmp_path, ROUNDTRIP, faults=faults) as proxy, client_of(proxy) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/responses", json=body) as response:
                assert response.status_code == 200
                async for _ in response.aiter_bytes():
                    pass
        report = await replay(ROUNDTRIP, http_client=client)  # same body: attempt 1
        assert report.identical, report
    exchanges = by_key(only_trace(tmp_path))
    assert sorted(exchanges) == [(0, 0), (0, 1), (1, 0)]
    cut = exchanges[(0, 0)]
    assert cut.error is not None and cut.error["type"] == "APIConnectionError"
    assert "broke after" in cut.error["message"]
    assert cut.body == Trace.load(ROUNDTRIP).exchanges()[0].body[:1000]


async def test_non_streamed_answers_are_recorded_with_their_decision(tmp_path: Path) -> None:
    upstream_turns = {
        p.stem: [r.data["turn"] for r in Trace.load(p).of_kind("decision")]
        for p in (ROUNDTRIP, CHAT)
    }
    async with (
        recording(tmp_path, ROUNDTRIP, CHAT) as proxy,
        openai.AsyncOpenAI(base_url=proxy.url, api_key=SECRET, max_retries=0) as sdk,
    ):
        body = {k: v for k, v in first_body(ROUNDTRIP).items() if k != "stream"}
        response = await sdk.responses.create(**body)
        chat = {
            k: v for k, v in first_body(CHAT, 1).items() if k not in ("stream", "stream_options")
        }
        completion = await sdk.chat.completions.create(**chat)
    assert response.output[0].type == "function_call"
    assert completion.choices[0].finish_reason == "stop"
    traces = {t.dialect: t for t in map(Trace.load, files(tmp_path))}
    responses_turn = traces["responses"].of_kind("decision")[0].data["turn"]
    assert responses_turn["calls"] == upstream_turns["tool-roundtrip"][0]["calls"]
    assert responses_turn["output"] == upstream_turns["tool-roundtrip"][0]["output"]
    chat_trace = traces["chat"]
    answered = chat_trace.exchanges()[0].response
    assert answered is not None and answered["headers"]["content-type"] == "application/json"
    chat_turn = chat_trace.of_kind("decision")[0].data["turn"]
    assert chat_turn["text"] == upstream_turns["chat-run"][1]["text"]
    assert chat_turn["calls"] == []
    assert stop_reason(chat_trace) == "completed"


async def test_other_requests_pass_through_unrecorded(tmp_path: Path) -> None:
    async with recording(tmp_path, ROUNDTRIP) as proxy, client_of(proxy) as client:
        models = await client.get("/models")
        missing = await client.post("/nowhere", json={"model": "x"})
        not_json = await client.post("/responses", content=b"{not json")
    assert models.status_code == 200
    assert models.json()["data"][0]["id"] == "gpt-5.5"
    assert missing.status_code == 404 and not_json.status_code == 400
    assert proxy.requests == 3
    assert files(tmp_path) == []


async def test_headers_named_on_the_command_line_are_redacted(tmp_path: Path) -> None:
    body = first_body(ROUNDTRIP)
    headers = {"authorization": f"Bearer {SECRET}", "x-tenant-token": "tenant-42", "api-key": "k1"}
    async with (
        recording(tmp_path, ROUNDTRIP, redact_headers=["X-Tenant-Token"]) as proxy,
        client_of(proxy) as client,
    ):
        reply = await client.post("/responses", json=body, headers=headers)
    assert reply.status_code == 200
    sent = only_trace(tmp_path).exchanges()[0].request["headers"]
    assert sent["x-tenant-token"].startswith("[REDACTED:")
    assert sent["api-key"].startswith("[REDACTED:")
    raw = files(tmp_path)[0].read_bytes()
    assert b"tenant-42" not in raw and b'"k1"' not in raw
    assert_no_secret(tmp_path)


async def test_a_client_that_goes_away_mid_stream_is_recorded(tmp_path: Path) -> None:
    body = first_body(ROUNDTRIP)
    async with recording(tmp_path, ROUNDTRIP, faults=("iter=0:stall=0.02",)) as proxy:
        async with client_of(proxy) as client, client.stream("POST", "/responses", json=body) as r:
            async for _ in r.aiter_raw():
                break  # and close the connection
        while True:  # the proxy finds out at its next write
            errors = only_trace(tmp_path).of_kind("error")
            if errors:
                break
            await anyio.sleep(0.02)
    (error,) = errors
    assert error.data["type"] == "APIConnectionError"
    assert "the client went away" in error.data["message"]


async def test_stopping_mid_answer_closes_the_run(tmp_path: Path) -> None:
    body = first_body(ROUNDTRIP)
    async with (
        recording(tmp_path, ROUNDTRIP, faults=("iter=0:stall=5",)) as proxy,
        client_of(proxy) as client,
        client.stream("POST", "/responses", json=body) as r,
    ):
        assert r.status_code == 200
        # The proxy stops while the upstream stalls before its first chunk.
    trace = only_trace(tmp_path)
    (error,) = trace.of_kind("error")
    assert "stopped before the answer was whole" in error.data["message"]
    assert stop_reason(trace) == "recording-stopped"


async def test_the_upstream_path_is_not_doubled(tmp_path: Path) -> None:
    for upstream in ("http://127.0.0.1:9", "http://127.0.0.1:9/", "http://127.0.0.1:9/v1"):
        proxy = RecordingProxy(upstream, tmp_path)
        assert proxy._upstream_url("/v1/responses?x=1") == "http://127.0.0.1:9/v1/responses?x=1"
    prefixed = RecordingProxy("https://example.com/openai", tmp_path)
    assert prefixed._upstream_url("/v1/responses") == "https://example.com/openai/v1/responses"
    from rawloop import ConfigurationError

    with pytest.raises(ConfigurationError):
        RecordingProxy("ftp://example.com", tmp_path)
    with pytest.raises(ConfigurationError):
        RecordingProxy("https://example.com", tmp_path, max_runs=0)


# -- the run table without sockets ---------------------------------------------------------------


def _play(
    table: RunTable, dialect: str, exchange: Exchange, body: dict[str, Any] | None = None
) -> Any:
    """Feed one recorded exchange through the table as the proxy would; returns the attempt."""
    attempt = table.claim(
        dialect, body or exchange.request["body"], base_url="http://up/v1", now=0.0
    )
    attempt.request("POST", "http://up/v1/x", [("authorization", f"Bearer {SECRET}")])
    assert exchange.response is not None
    attempt.response(exchange.response["status"], list(exchange.response["headers"].items()), 0.0)
    attempt.chunk(exchange.body, 0.0)
    attempt.complete(1.0)
    return attempt


async def test_an_sdk_rendering_of_the_same_items_continues_the_run(tmp_path: Path) -> None:
    table = RunTable(tmp_path)
    first, second = Trace.load(ROUNDTRIP).exchanges()
    _play(table, "responses", first)
    body = orjson.loads(orjson.dumps(second.request["body"]))
    body["input"][0] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": body["input"][0]["content"]}],
    }
    body["input"][1] = {k: v for k, v in body["input"][1].items() if k not in ("id", "status")}
    body["input"][1]["extra"] = None
    attempt = _play(table, "responses", second, body)
    assert (attempt.iteration, attempt.attempt, len(table.paths)) == (1, 0, 1)


async def test_previous_response_id_continues_the_run(tmp_path: Path) -> None:
    table = RunTable(tmp_path)
    first, second = Trace.load(ROUNDTRIP).exchanges()
    _play(table, "responses", first)
    turn = Trace.load(ROUNDTRIP).of_kind("decision")[0].data["turn"]
    body = {**second.request["body"], "input": second.request["body"]["input"][2:]}
    body["previous_response_id"] = turn["response_id"]
    attempt = _play(table, "responses", second, body)
    assert (attempt.iteration, len(table.paths)) == (1, 1)
    assert Trace.load(table.paths[0]).results()[turn["calls"][0]["call_id"]]["output"] == "2869461"


async def test_what_starts_a_new_run(tmp_path: Path) -> None:
    table = RunTable(tmp_path)
    first, second = Trace.load(ROUNDTRIP).exchanges()
    busy = table.claim("responses", first.request["body"], base_url="u", now=0.0)
    # The same first request while the first is in flight: another client's run.
    assert (
        table.claim("responses", first.request["body"], base_url="u", now=0.0).run is not busy.run
    )
    _play(table, "responses", first)  # a third, answered: it waits for its tool output
    # The same request again after a success: not a retry, a new run.
    assert table.claim("responses", first.request["body"], base_url="u", now=0.0).attempt == 0
    # Another conversation: a new run; and the same one in the other dialect too.
    other = {**second.request["body"], "input": [{"role": "user", "content": "hi"}]}
    table.claim("responses", other, base_url="u", now=0.0)
    table.claim("chat", second.request["body"], base_url="u", now=0.0)
    assert len(table.paths) == 6


async def test_a_retry_follows_a_failure_and_may_change_the_model(tmp_path: Path) -> None:
    table = RunTable(tmp_path)
    body = first_body(ROUNDTRIP)
    failed = table.claim("responses", body, base_url="u", now=0.0)
    failed.response(503, [("content-type", "application/json")], 0.0)
    failed.chunk(b'{"error": {"message": "overloaded"}}', 0.0)
    failed.complete(0.5)
    fallback = table.claim("responses", {**body, "model": "gpt-fallback"}, base_url="u", now=1.0)
    assert (fallback.run, fallback.iteration, fallback.attempt) == (failed.run, 0, 1)
    fallback.broke(ConnectionResetError("reset"), 1.5)
    table.close(now=2.0)
    trace = Trace.load(table.paths[0])
    assert [(e.data["type"], e.data["will_retry"]) for e in trace.of_kind("error")] == [
        ("APIStatusError", True),
        ("ConnectionResetError", False),
    ]
    assert "HTTP 503: overloaded" in trace.of_kind("error")[0].data["message"]
    end = trace.end()
    assert end is not None and end["stop_reason"] == "recording-stopped"
    assert end["error"] == "ConnectionResetError: reset"


async def test_the_table_is_bounded_and_busy_runs_stay(tmp_path: Path) -> None:
    table = RunTable(tmp_path, max_runs=2)
    first = Trace.load(ROUNDTRIP).exchanges()[0]
    oldest = _play(table, "responses", first).run
    busy = table.claim("responses", {"model": "m", "input": "a"}, base_url="u", now=0.0).run
    table.claim("responses", {"model": "m", "input": "b"}, base_url="u", now=0.0)
    assert oldest.state == "ended" and busy.state == "busy"
    end = Trace.load(oldest.path).end()
    assert end is not None and end["stop_reason"] == "recording-stopped"
    table.claim("responses", {"model": "m", "input": "c"}, base_url="u", now=0.0)
    assert len(table.runs) == 3  # every run is mid-attempt: over the bound for a while
    table.close(now=2.0)
    assert not table.runs
    assert all(Trace.load(p).end() is not None for p in table.paths)


def test_item_keys_ignore_rendering_but_not_content() -> None:
    assert item_key({"role": "user", "content": "hi"}) == item_key(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    )
    assert item_key({"role": "user", "content": "hi"}) != item_key(
        {"role": "user", "content": "ho"}
    )
    assert item_key(
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
    ) == item_key({"role": "assistant", "tool_calls": [{"id": "c1"}]})
    assert tool_outputs(
        "chat", [{"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "4"}]}]
    ) == {"c1": "4"}
    assert tool_outputs(
        "responses", [{"type": "function_call_output", "call_id": "c", "output": "x"}]
    ) == {"c": "x"}


@pytest.mark.parametrize("path", sorted(TRACES_DIR.glob("*.jsonl")), ids=lambda p: p.stem)
def test_a_json_answer_parses_to_the_streamed_turn(path: Path) -> None:
    from rawloop.core.assemble import assemble

    trace = Trace.load(path)
    for exchange in trace.exchanges():
        if exchange.response is None or exchange.response["status"] >= 300 or exchange.error:
            continue
        _status, payload = assemble(exchange.body, trace.dialect)
        streamed = parse_stream(exchange.body, trace.dialect).to_dict()
        parsed = turn_from_json(trace.dialect, payload).to_dict()
        ignored = ("event_count", "warnings", "unknown_events")
        assert {k: v for k, v in parsed.items() if k not in ignored} == {
            k: v for k, v in streamed.items() if k not in ignored
        }


# -- the command line --------------------------------------------------------------------------------


def test_add_record_command_parses_the_options() -> None:
    parser = argparse.ArgumentParser(prog="rawloop")
    add_record_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "record",
            "--upstream",
            "https://api.openai.com",
            "--out",
            "traces",
            "--redact-header",
            "a",
            "--redact-header",
            "b",
            "--port",
            "0",
        ]
    )
    assert (args.upstream, args.out, args.host, args.port) == (
        "https://api.openai.com",
        "traces",
        "127.0.0.1",
        0,
    )
    assert args.redact_header == ["a", "b"] and callable(args.func)


def test_run_proxy_reports_bad_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_proxy("api.openai.com", tmp_path) == 2
    assert (
        "rawloop record: error: the upstream must be an http:// or https:// URL"
        in capsys.readouterr().err
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_proxy("http://127.0.0.1:9", tmp_path, port=port) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
async def test_record_proxies_until_a_signal_and_closes_its_traces(
    tmp_path: Path, signum: signal.Signals
) -> None:
    code = (
        "import argparse, sys\nfrom rawloop.capture.proxy import add_record_command\n"
        "parser = argparse.ArgumentParser()\nadd_record_command(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\nsys.exit(args.func(args))"
    )
    out = tmp_path / "out"
    body = first_body(ROUNDTRIP)
    server = ReplayServer([ROUNDTRIP])
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            upstream = await group.start(server.serve)
            argv = ["record", "--upstream", f"http://127.0.0.1:{upstream}", "--out", str(out)]
            async with await anyio.open_process(
                [sys.executable, "-c", code, *argv, "--port", "0"]
            ) as process:
                assert process.stderr is not None
                seen = b""
                while b"\n" not in seen:
                    seen += await process.stderr.receive()
                line = seen.decode().splitlines()[0]
                found = re.fullmatch(
                    rf"rawloop record: proxying http://127\.0\.0\.1:(\d+)/v1 -> "
                    rf"http://127\.0\.0\.1:{upstream}, traces in {re.escape(str(out))}",
                    line,
                )
                assert found, line
                async with httpx.AsyncClient(verify=TLS) as client:
                    reply = await client.post(
                        f"http://127.0.0.1:{found.group(1)}/v1/responses",
                        json=body,
                        headers={"authorization": f"Bearer {SECRET}"},
                    )
                assert reply.status_code == 200
                process.send_signal(signum)
                assert await process.wait() == 0
                rest = seen
                async for data in process.stderr:
                    rest += data
            group.cancel_scope.cancel()
    assert b"POST /v1/responses -> 200 (run-" in rest
    assert f"{signum.name}: shutting down".encode() in rest
    assert b"1 run recorded" in rest
    trace = only_trace(out)
    assert stop_reason(trace) == "recording-stopped"
    assert trace.exchanges()[0].body == Trace.load(ROUNDTRIP).exchanges()[0].body
    assert_no_secret(out)


# -- what the proxy refuses ----------------------------------------------------------------------


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything answered until the proxy closes."""
    stream = await anyio.connect_tcp("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send(request)
        try:
            while True:
                received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return received


async def test_connect_and_upgrade_are_refused_cleanly_and_never_forwarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="rawloop")
    async with recording(tmp_path, ROUNDTRIP) as proxy:
        connect = await raw_exchange(
            proxy.port, b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n"
        )
        websocket = await raw_exchange(
            proxy.port,
            b"GET /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        h2c = await raw_exchange(
            proxy.port,
            b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
            b'Content-Length: 17\r\n\r\n{"model": "m1"}\n\n',
        )
        async with client_of(proxy) as client:  # and the proxy goes on serving
            models = await client.get("/models")
    assert connect.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nallow: GET, HEAD, POST" in connect and b"not a forward proxy" in connect
    for answer in (websocket, h2c):
        assert answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
        assert b'"code":"unsupported"' in answer and b"connection: close" in answer
    assert models.status_code == 200
    assert proxy.requests == 1  # only the models request went upstream
    assert files(tmp_path) == []
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]
    logged = [r.getMessage() for r in caplog.records if r.name == "rawloop.proxy"]
    assert "CONNECT /api.openai.com:443 -> 405 (refused, not forwarded)" in logged


async def test_a_client_using_the_proxy_as_a_forward_proxy_gets_a_clear_refusal(
    tmp_path: Path,
) -> None:
    async with recording(tmp_path, ROUNDTRIP) as proxy:
        origin = f"http://127.0.0.1:{proxy.port}"
        async with httpx.AsyncClient(proxy=origin, verify=TLS) as client:
            with pytest.raises(httpx.ProxyError, match="405"):
                await client.get("https://api.openai.com/v1/models")  # a CONNECT, refused
    assert proxy.requests == 0
