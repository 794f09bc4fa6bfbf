"""The replay server on real loopback sockets: rawloop loops, the openai SDK, raw HTTP/1.1.

Every server runs inside a task group with a cancel scope and a deadline, so
no test can hang; every socket is 127.0.0.1 with a port the kernel picks.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import openai
import orjson
import pytest

from rawloop import Trace
from rawloop.replay.server import ReplayServer, run_server
from rawloop.trace.format import chunk_bytes

from .serving import (
    CHAT,
    DEADLINE,
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

# -- rawloop loops through the server ---------------------------------------------------------


@pytest.mark.parametrize(
    "chunking,seed", [("recorded", 0), ("hostile", 1), ("hostile", 7)], ids=str
)
@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
async def test_every_bundled_trace_replays_identically_over_http(
    path: Path, chunking: str, seed: int
) -> None:
    trace = Trace.load(path)
    async with serving(trace, chunking=chunking, seed=seed) as server:
        report = await replay_through(server, trace)
        assert report.identical, str(report)
        assert report.result is not None
        assert report.result.stop_reason == (trace.end() or {})["stop_reason"]
        assert server.served == len(trace.exchanges())
        assert server.divergences == []


async def test_one_server_holding_every_trace_picks_the_right_one() -> None:
    traces = [Trace.load(p) for p in TRACES]
    async with serving(*traces) as server:
        for trace in traces:
            report = await replay_through(server, trace)
            assert report.identical, f"{trace.path}: {report}"
        assert server.divergences == []


async def test_fifty_concurrent_clients_replay_the_same_trace() -> None:
    trace = Trace.load(ROUNDTRIP)
    verdicts: list[str] = []
    async with serving(trace) as server:

        async def one() -> None:
            report = await replay_through(server, trace)
            verdicts.append(str(report))

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(one)
        assert server.served == 100
    assert len(verdicts) == 50
    assert set(verdicts) == {
        "identical: 2 iterations replayed, every request matched the recording"
    }


async def test_pacing_follows_the_recording_scaled_by_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exchange = Trace.load(ROUNDTRIP).exchanges()[0]
    assert exchange.response is not None
    # From the recorded headers to the recorded last chunk (the pace Responder keeps).
    recorded = exchange.chunks[-1]["t"] - exchange.response["t"]
    rate = 0.15 / recorded
    waits: list[float] = []
    real_sleep = anyio.sleep

    async def spy(delay: float) -> None:
        # Count the server's pacing waits only; never assert a wall-clock time.
        if sys._getframe(1).f_globals.get("__name__") == "rawloop.replay.answers":
            waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", spy)
    async with (
        serving(ROUNDTRIP, rate=rate) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        response = await client.post(f"{url(server)}/responses", json=exchange.request["body"])
    assert response.content == exchange.body
    assert sum(waits) == pytest.approx(0.15)
    assert len(waits) <= len(exchange.chunks)


# -- the openai SDK ---------------------------------------------------------------------------


async def test_the_openai_sdk_streams_a_responses_trace() -> None:
    body = {k: v for k, v in first_body(ROUNDTRIP).items() if k != "stream"}
    recorded = recorded_events(ROUNDTRIP)
    decision = Trace.load(ROUNDTRIP).of_kind("decision")[0].data["turn"]["calls"][0]
    async with (
        serving(ROUNDTRIP) as server,
        openai.AsyncOpenAI(base_url=url(server), api_key="sk-test", max_retries=0) as client,
    ):
        stream = await client.responses.create(**body, stream=True)
        events = [event async for event in stream]
    assert [e.type for e in events] == [e["type"] for e in recorded]
    added = next(e for e in events if e.type == "response.output_item.added")
    arguments = "".join(
        e.delta for e in events if e.type == "response.function_call_arguments.delta"
    )
    assert (added.item.name, added.item.call_id, arguments) == (
        decision["name"],
        decision["call_id"],
        decision["arguments"],
    )
    assert events[-1].response.output[0].arguments == decision["arguments"]


async def test_the_openai_sdk_streams_a_chat_trace() -> None:
    body = {k: v for k, v in first_body(CHAT).items() if k != "stream"}
    decision = Trace.load(CHAT).of_kind("decision")[0].data["turn"]
    async with (
        serving(CHAT) as server,
        openai.AsyncOpenAI(base_url=url(server), api_key="sk-test", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(**body, stream=True)
        chunks = [chunk async for chunk in stream]
    assert len(chunks) == len(recorded_events(CHAT))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == decision["calls"][0]["call_id"]
    assert calls[0].function is not None and calls[0].function.name == "multiply"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert arguments == decision["calls"][0]["arguments"]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "tool_calls"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == decision["usage"]["total_tokens"]


async def test_the_openai_sdk_gets_the_recorded_final_response_without_streaming() -> None:
    body = {k: v for k, v in first_body(ROUNDTRIP).items() if k != "stream"}
    final = recorded_events(ROUNDTRIP)[-1]["response"]
    async with (
        serving(ROUNDTRIP) as server,
        openai.AsyncOpenAI(base_url=url(server), api_key="sk-test", max_retries=0) as client,
    ):
        response = await client.responses.create(**body)
    assert response.id == final["id"]
    assert [item.model_dump(exclude_none=True) for item in response.output] == final["output"]
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == final["usage"]


async def test_a_chat_completion_is_assembled_from_the_recorded_stream() -> None:
    body = {k: v for k, v in first_body(CHAT, 1).items() if k not in ("stream", "stream_options")}
    decision = Trace.load(CHAT).of_kind("decision")[1].data["turn"]
    async with (
        serving(CHAT) as server,
        openai.AsyncOpenAI(base_url=url(server), api_key="sk-test", max_retries=0) as client,
    ):
        completion = await client.chat.completions.create(**body)
        first = await client.chat.completions.create(
            **{k: v for k, v in first_body(CHAT).items() if k != "stream"}
        )
    assert completion.object == "chat.completion"
    assert completion.id == decision["response_id"]
    assert completion.choices[0].message.content == decision["text"]
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == decision["usage"]["total_tokens"]
    (call,) = first.choices[0].message.tool_calls or []
    assert (call.id, call.function.arguments) == (
        "call_1EYWDzueHEp8OsB8jJSEp7WB",
        '{"a":1231,"b":2331}',
    )


# -- raw HTTP/1.1 -----------------------------------------------------------------------------


class RawHTTP:
    """Just enough of an HTTP/1.1 client to read chunked answers byte for byte."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> None:
        self.buffer += await self.stream.receive()

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def response(self) -> tuple[bytes, dict[str, str], list[bytes]]:
        status = await self.line()
        headers: dict[str, str] = {}
        while line := await self.line():
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        chunks: list[bytes] = []
        if headers.get("transfer-encoding") == "chunked":
            while size := int((await self.line()).split(b";")[0], 16):
                chunks.append(await self.exactly(size))
                assert await self.exactly(2) == b"\r\n"
            assert await self.line() == b""  # no trailers
        elif "content-length" in headers:
            chunks.append(await self.exactly(int(headers["content-length"])))
        return status, headers, chunks


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_a_hand_written_request_gets_the_recorded_bytes_in_the_recorded_chunks() -> None:
    trace = Trace.load(ROUNDTRIP)
    exchanges = trace.exchanges()
    async with serving(trace) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            http = RawHTTP(stream)
            for exchange in exchanges:  # two requests on one keep-alive connection
                await stream.send(_post("/v1/responses", orjson.dumps(exchange.request["body"])))
                status, headers, chunks = await http.response()
                assert status == b"HTTP/1.1 200 OK"
                assert headers["transfer-encoding"] == "chunked"
                assert headers["content-type"] == "text/event-stream"
                assert "content-length" not in headers and "connection" not in headers
                assert b"".join(chunks) == exchange.body
                assert [len(c) for c in chunks] == [len(chunk_bytes(c)) for c in exchange.chunks]
        assert server.served == 2


async def test_expect_100_continue_and_a_path_without_v1() -> None:
    body = orjson.dumps(first_body(CHAT))
    async with serving(CHAT) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            http = RawHTTP(stream)
            request = _post("/chat/completions", body, "Expect: 100-continue")
            head, _, _ = request.partition(b"\r\n\r\n")
            await stream.send(head + b"\r\n\r\n")
            assert await http.line() == b"HTTP/1.1 100 Continue"
            assert await http.line() == b""
            await stream.send(body)
            status, _, chunks = await http.response()
    assert status == b"HTTP/1.1 200 OK"
    assert b"".join(chunks) == Trace.load(CHAT).exchanges()[0].body


async def test_an_http_1_0_client_gets_a_close_delimited_body() -> None:
    body = orjson.dumps(first_body(ROUNDTRIP))
    async with serving(ROUNDTRIP) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            request = _post("/v1/responses", body).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
            await stream.send(request)
            received = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    received += await stream.receive()
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding" not in head.lower()
    assert rest == Trace.load(ROUNDTRIP).exchanges()[0].body


# -- the other routes and the errors ------------------------------------------------------------


async def test_an_unknown_model_is_refused_as_each_dialect_refuses_it() -> None:
    async with serving(CHAT) as server, httpx.AsyncClient(verify=TLS) as client:
        body = {**first_body(CHAT), "model": "gpt-0"}
        error = _is_openai_error(
            await client.post(f"{url(server)}/chat/completions", json=body), 404
        )
        assert (error["code"], error["param"]) == ("model_not_found", None)
        assert error["message"].startswith("The model `gpt-0` does not exist or you do not")
        assert "gpt-4o-mini" in error["message"]  # and which models the traces do hold


async def test_health_and_models() -> None:
    async with serving(ROUNDTRIP, CHAT) as server, httpx.AsyncClient(verify=TLS) as client:
        health = await client.get(f"http://127.0.0.1:{server.port}/health")
        models = await client.get(f"{url(server)}/models")
        one = await client.get(f"{url(server)}/models/gpt-4o-mini")
        missing = await client.get(f"{url(server)}/models/gpt-0")
    assert health.status_code == 200
    data = health.json()
    assert data["status"] == "ok"
    assert [(t["name"], t["dialect"], t["requests"]) for t in data["traces"]] == [
        ("tool-roundtrip", "responses", 2),
        ("chat-run", "chat", 2),
    ]
    assert models.json() == {
        "object": "list",
        "data": [
            {"id": "gpt-5.5", "object": "model", "created": 0, "owned_by": "rawloop"},
            {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "rawloop"},
        ],
    }
    assert one.json()["id"] == "gpt-4o-mini"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def _is_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error, dict)
    return error


async def test_errors_are_shaped_like_openai_errors() -> None:
    async with (
        serving(ROUNDTRIP, max_request_size=1000) as server,
        httpx.AsyncClient(verify=TLS) as client,
    ):
        base = url(server)
        error = _is_openai_error(await client.get(f"{base}/embeddings"), 404)
        assert error["message"] == "Invalid URL (GET /v1/embeddings)"
        bad = await client.post(f"{base}/responses", content=b'{"model": "gpt-5.5",,}')
        error = _is_openai_error(bad, 400)
        assert "not valid JSON" in error["message"] and "column 21" in error["message"]
        error = _is_openai_error(await client.post(f"{base}/responses", json=[1, 2]), 400)
        assert "JSON list, expected an object" in error["message"]
        error = _is_openai_error(await client.post(f"{base}/responses", json={"input": []}), 400)
        assert error["param"] == "model"
        wrong = await client.get(f"{base}/responses")
        _is_openai_error(wrong, 405)
        assert wrong.headers["allow"] == "POST"
        _is_openai_error(await client.delete(f"{base}/models"), 405)
        unknown = await client.post(f"{base}/responses", json={"model": "gpt-0", "input": []})
        error = _is_openai_error(unknown, 400)  # as the Responses API answers it
        assert (error["code"], error["param"]) == ("model_not_found", "model")
        assert error["message"].startswith("The requested model 'gpt-0' does not exist.")
        chat = await client.post(f"{base}/chat/completions", json=first_body(CHAT))
        assert "no loaded trace speaks the chat dialect" in _is_openai_error(chat, 404)["message"]
        big = await client.post(f"{base}/responses", content=b"x" * 1001)
        assert _is_openai_error(big, 413)["code"] == "request_too_large"
        assert big.headers["connection"] == "close"

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 100

        assert (await client.post(f"{base}/responses", content=chunked())).status_code == 413
        # The connection that got the 413 is closed; a new one is served as usual.
        assert (await client.get(f"http://127.0.0.1:{server.port}/health")).status_code == 200


async def test_a_malformed_request_gets_a_400_and_a_closed_connection() -> None:
    async with serving(ROUNDTRIP) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            await stream.send(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
            received = b""
            with pytest.raises(anyio.EndOfStream):
                while True:
                    received += await stream.receive()
    assert received.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"type":"invalid_request_error"' in received


async def test_request_headers_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-proj-" + "Q" * 40
    body = first_body(ROUNDTRIP)
    with caplog.at_level(logging.DEBUG, logger="rawloop.server"):
        async with serving(ROUNDTRIP) as server, httpx.AsyncClient(verify=TLS) as client:
            headers = {"authorization": f"Bearer {secret}", "x-api-key": secret}
            await client.post(f"{url(server)}/responses", json=body, headers=headers)
            await client.post(f"{url(server)}/nowhere", json=body, headers=headers)
    assert "POST /v1/responses -> 200 (trace tool-roundtrip, iteration 0, attempt 0)" in caplog.text
    assert "POST /v1/nowhere -> 404" in caplog.text
    assert secret not in caplog.text and "Bearer" not in caplog.text


# -- connections ------------------------------------------------------------------------------


async def test_idle_connections_are_closed() -> None:
    async with serving(ROUNDTRIP, idle_timeout=0.2) as server:
        stream = await anyio.connect_tcp("127.0.0.1", server.port)
        async with stream:
            with anyio.fail_after(3), pytest.raises(anyio.EndOfStream):
                await stream.receive()


async def test_connections_beyond_the_limit_wait_their_turn() -> None:
    async with serving(ROUNDTRIP, max_connections=2) as server:
        first = await anyio.connect_tcp("127.0.0.1", server.port)
        second = await anyio.connect_tcp("127.0.0.1", server.port)
        with anyio.fail_after(3):
            while server.connections < 2:
                await anyio.sleep(0.01)
        third = await anyio.connect_tcp("127.0.0.1", server.port)
        async with third:
            await third.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            with anyio.move_on_after(0.3) as waited:
                await third.receive()
            assert waited.cancelled_caught  # not served while two connections are open
            await first.aclose()
            with anyio.fail_after(3):
                assert (await third.receive()).startswith(b"HTTP/1.1 200 OK")
        await second.aclose()


async def test_cancelling_the_scope_stops_the_server() -> None:
    server = ReplayServer([ROUNDTRIP])
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            port = await group.start(server.serve)
            assert port == server.port and port > 0
            open_stream = await anyio.connect_tcp("127.0.0.1", port)
            group.cancel_scope.cancel()
        # The open connection was closed, and nobody listens any more.
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
            await open_stream.receive()
        await open_stream.aclose()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", port)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_run_server_prints_its_address_and_stops_on_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "turns.json"
    script.write_text('{"dialect": "chat", "model": "scripted", "turns": [{"text": "hi"}]}')
    code = (
        "import sys\nfrom rawloop.replay.server import run_server\n"
        "sys.exit(run_server([sys.argv[1]], port=0, script=sys.argv[2]))"
    )
    with anyio.fail_after(DEADLINE):
        async with await anyio.open_process(
            [sys.executable, "-c", code, str(ROUNDTRIP), str(script)]
        ) as process:
            assert process.stderr is not None
            seen = b""
            while b"\n" not in seen:
                seen += await process.stderr.receive()
            line = seen.decode().splitlines()[0]
            found = re.fullmatch(
                r"rawloop serve: listening on http://127\.0\.0\.1:(\d+)/v1 \(2 traces\)", line
            )
            assert found, line
            async with httpx.AsyncClient(verify=TLS) as client:
                health = await client.get(f"http://127.0.0.1:{found.group(1)}/health")
                reply = await client.post(
                    f"http://127.0.0.1:{found.group(1)}/v1/chat/completions",
                    json={"model": "scripted", "messages": [{"role": "user", "content": "x"}]},
                )
            assert [t["scripted"] for t in health.json()["traces"]] == [False, True]
            assert reply.json()["choices"][0]["message"]["content"] == "hi"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
            rest = seen
            async for data in process.stderr:
                rest += data
    assert b"rawloop serve: POST /v1/chat/completions -> 200 (trace turns, iteration 0" in rest
    assert b"SIGTERM: shutting down" in rest


def test_run_server_reports_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_server([str(tmp_path / "missing.jsonl")]) == 2
    assert "rawloop serve: error: cannot read trace" in capsys.readouterr().err
    assert run_server([str(ROUNDTRIP)], chunking="sideways") == 2
    assert "unknown chunking" in capsys.readouterr().err


def test_run_server_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_server([str(ROUNDTRIP)], port=port) == 2
    assert f"rawloop serve: error: cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_bad_options_fail_at_construction() -> None:
    from rawloop import ConfigurationError

    with pytest.raises(ConfigurationError):
        ReplayServer([])
    with pytest.raises(ConfigurationError):
        ReplayServer([ROUNDTRIP], max_connections=0)
    with pytest.raises(ConfigurationError, match="exactly one action"):
        ReplayServer([ROUNDTRIP], faults=["iter=0:explode=1"])
