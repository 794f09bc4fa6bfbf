"""rawloop.http: the ASGI app's routes, event streams, disconnects, and serving with uvicorn.

The model side is a ``ScriptedAPI`` serving corpus streams. httpx's
``ASGITransport`` buffers a whole response, so ordering, heartbeat and
disconnect tests call the ASGI app directly with hand-written ``receive`` and
``send`` (``drive``); one test goes through a real uvicorn server.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from rawloop.core.errors import ConfigurationError
from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import tool
from rawloop.serve.app import AgentApp, RequestContext, app, current_request
from rawloop.serve.asgi import route_path, sse_event
from rawloop.serve.command import add_serve_agent_command, load_target, serve_agent
from rawloop.serve.store_sqlite import SQLiteStore

from ..conftest import Reply, ScriptedAPI, corpus

pytestmark = pytest.mark.anyio

QUESTION = "What is 1231 * 2331? Use the multiply tool."
ANSWER = "1231 × 2331 = **2,869,461**"  # noqa: RUF001


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def tool_replies() -> list[Reply]:
    """A function call to multiply, then the answer after the tool result."""
    return [
        Reply(corpus("responses-function-call-1.sse")),
        Reply(corpus("responses-text-after-tool-1.sse")),
    ]


def events_body(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def text_reply(text: str = "done") -> Reply:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text}],
    }
    return Reply(
        events_body(
            {"type": "response.created", "response": {"id": "r", "status": "in_progress"}},
            {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "output_index": 0,
                "delta": text,
            },
            {
                "type": "response.completed",
                "response": {
                    "id": "r",
                    "status": "completed",
                    "output": [message],
                    "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6},
                },
            },
        )
    )


def make_loop(api: ScriptedAPI | httpx.AsyncClient, *tools: Any, **kwargs: Any) -> Loop:
    client = api.client() if isinstance(api, ScriptedAPI) else api
    kwargs.setdefault("retries", RetryPolicy(max_retries=0, initial_delay=0.0))
    return Loop(
        "gpt-5.5", tools=tools or [multiply], http_client=client, api_key="sk-test", **kwargs
    )


@asynccontextmanager
async def client_for(asgi: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


# -- driving the ASGI app by hand -----------------------------------------------------------


@dataclass
class Exchange:
    """What the app sent: status, headers and each body chunk as one send."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str, Any]]:
        """``(event, data)`` per event; a comment is ``(":", text)``."""
        out: list[tuple[str, Any]] = []
        for block in self.body.decode().split("\n\n"):
            if not block:
                continue
            if block.startswith(":"):
                out.append((":", block[1:].strip()))
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((fields["event"], json.loads(fields["data"])))
        return out

    def names(self) -> list[str]:
        return [name for name, _ in self.events()]


def scope_for(
    path: str, *, method: str = "POST", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def drive(
    asgi: Any,
    path: str,
    body: bytes | list[bytes] = b"",
    *,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    disconnect_when: Callable[[Exchange], bool] | None = None,
    timeout: float = 10.0,
) -> Exchange:
    """Call the app once; ``disconnect_when(exchange)`` after a send makes the client leave."""
    exchange = Exchange()
    parts = [body] if isinstance(body, bytes) else list(body)
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        if parts:
            chunk = parts.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(parts)}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if gone.is_set():
            raise OSError("the client is gone")
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            if message.get("body"):
                exchange.chunks.append(message["body"])
            if not message.get("more_body", False):
                exchange.complete = True
                gone.set()  # as a server does once the response is complete
        if disconnect_when is not None and disconnect_when(exchange):
            gone.set()

    with anyio.fail_after(timeout):
        await asgi(scope_for(path, method=method, headers=headers), receive, send)
    return exchange


def post(data: Any) -> bytes:
    return json.dumps(data).encode()


# -- /dispatch ------------------------------------------------------------------------------


async def test_dispatch_returns_the_transcript_and_metadata() -> None:
    api = ScriptedAPI(tool_replies())
    async with client_for(app(make_loop(api))) as client:
        response = await client.post("/dispatch", json={"input": {"user_instruction": QUESTION}})
    assert response.status_code == 200
    data = response.json()
    assert data["final_response"] == ANSWER
    second_request = api.bodies[1]
    assert second_request["input"][0] == {"role": "user", "content": QUESTION}
    final_output = data["messages"][len(second_request["input"]) :]
    assert data["messages"][: len(second_request["input"])] == second_request["input"]
    assert [item["type"] for item in final_output] == ["message"]
    assert data["metadata"] == {
        "model": "gpt-5.5",
        "total_input_tokens": 152,
        "total_output_tokens": 41,
        "iterations": 2,
        "stop_reason": "completed",
    }


async def test_tools_see_the_request_with_its_proxy_url_and_run_token() -> None:
    seen: list[RequestContext | None] = []

    @tool
    def multiply(a: int, b: int) -> int:  # a sync tool: runs in a worker thread
        """Multiply two numbers."""
        seen.append(current_request.get())
        return a * b

    api = ScriptedAPI(tool_replies() + tool_replies())
    asgi = app(make_loop(api, multiply))
    headers = {"x-tool-proxy-url": "http://proxy.local/tools", "x-run-token": "tok-very-secret"}
    async with client_for(asgi) as client:
        one = await client.post(
            "/dispatch", json={"input": {"user_instruction": QUESTION}}, headers=headers
        )
        two = await client.post(
            "/dispatch",
            json={"input": {"user_instruction": QUESTION}, "proxy_url": "http://body.local"},
            headers=headers,
        )
    assert one.status_code == two.status_code == 200
    first, second = seen
    assert first is not None and second is not None
    assert (first.route, first.agent, first.path) == ("dispatch", "default", "/dispatch")
    assert first.proxy_url == "http://proxy.local/tools"
    assert second.proxy_url == "http://body.local"  # the body's proxy_url wins
    assert first.run_token == "tok-very-secret"
    assert "tok-very-secret" not in repr(first)
    assert "tok-very-secret" not in json.dumps(dict(first.headers))
    assert current_request.get() is None  # only inside a run


async def test_a_long_run_does_not_block_other_requests() -> None:
    release = anyio.Event()
    started = anyio.Event()

    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, slowly."""
        started.set()
        await release.wait()
        return a * b

    slow = app(make_loop(ScriptedAPI(tool_replies()), multiply))
    quick = app(make_loop(ScriptedAPI([text_reply("quick")])))
    order: list[str] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(_post_dispatch, slow, order, "slow")
            await started.wait()
            await _post_dispatch(quick, order, "quick")
            assert order == ["quick 200"]
            release.set()
    assert order == ["quick 200", "slow 200"]


async def _post_dispatch(asgi: Any, order: list[str], name: str) -> None:
    async with client_for(asgi) as client:
        response = await client.post("/dispatch", json={"input": {"user_instruction": QUESTION}})
    order.append(f"{name} {response.status_code}")


async def test_a_failing_model_api_is_a_502_with_the_error() -> None:
    api = ScriptedAPI([Reply(b'{"error": {"message": "bad model"}}', status=400)])
    async with client_for(app(make_loop(api))) as client:
        response = await client.post("/dispatch", json={"input": {"user_instruction": "q"}})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "APIStatusError"
    assert "bad model" in error["message"]


# -- request errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/dispatch", b"{not json", 400, None),
        ("/dispatch", b"", 400, None),
        ("/dispatch", b"[1, 2]", 422, None),
        ("/dispatch", post({}), 422, "input"),
        ("/dispatch", post({"input": "text"}), 422, "input"),
        ("/dispatch", post({"input": {}}), 422, "input.user_instruction"),
        ("/dispatch", post({"input": {"user_instruction": 3}}), 422, "input.user_instruction"),
        ("/dispatch", post({"input": {"user_instruction": " "}}), 422, "input.user_instruction"),
        (
            "/dispatch",
            post({"input": {"user_instruction": "q"}, "proxy_url": 1}),
            422,
            "proxy_url",
        ),
        ("/chat", post({"msg": "hi"}), 422, "message"),
        ("/chat", post({"message": ["hi"]}), 422, "message"),
        ("/agents/bot/u1", post({"message": "hi", "session": "../x"}), 400, "session"),
        ("/agents/bot/u1", post({"message": "hi", "session": 5}), 400, "session"),
        ("/agents/bot/u1", post({"session": "s"}), 422, "message"),
        ("/agents/b%20t/u1", post({"message": "hi"}), 400, "name"),
        ("/agents/bot/..", post({"message": "hi"}), 400, "id"),
        ("/agents/bot/a$b", post({"message": "hi"}), 400, "id"),
    ],
)
async def test_bad_requests_name_the_field(
    path: str, body: bytes, status: int, field: str | None, tmp_path: Path
) -> None:
    api = ScriptedAPI([])
    asgi = app(make_loop(api), sessions_dir=tmp_path)
    response = await drive(asgi, path.replace("%20", " "), body)
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]
    assert api.requests == []  # nothing reached the model
    assert not list(tmp_path.rglob("*.jsonl"))


async def test_unknown_routes_and_methods() -> None:
    asgi = app(make_loop(ScriptedAPI([])))
    async with client_for(asgi) as client:
        missing = await client.post("/nowhere", json={})
        wrong_method = await client.get("/dispatch")
        too_deep = await client.post("/agents/a/b/c", json={"message": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    assert too_deep.status_code == 404
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert "POST" in wrong_method.json()["error"]["message"]


async def test_bodies_over_the_limit_are_413() -> None:
    asgi = app(make_loop(ScriptedAPI([])), max_body_size=100)
    big = post({"input": {"user_instruction": "x" * 200}})
    async with client_for(asgi) as client:
        declared = await client.post("/dispatch", content=big)
    assert declared.status_code == 413
    # No content-length: counted while reading, chunk by chunk.
    streamed = await drive(asgi, "/dispatch", [big[:60], big[60:120], big[120:]])
    assert streamed.status == 413
    assert streamed.json()["error"]["type"] == "request_too_large"


async def test_authorize_decides_access(tmp_path: Path) -> None:
    asked: list[tuple[str, str, str | None]] = []

    async def authorize(request: RequestContext, agent: str, id: str | None) -> bool:
        asked.append((request.route, agent, id))
        return id != "mallory"

    api = ScriptedAPI([text_reply("hello alice"), text_reply("hi")])
    asgi = app(make_loop(api), sessions_dir=tmp_path, authorize=authorize)
    async with client_for(asgi) as client:
        denied = await client.post("/agents/bot/mallory", json={"message": "hi"})
        allowed = await client.post("/agents/bot/alice", json={"message": "hi"})
        dispatch = await client.post("/dispatch", json={"input": {"user_instruction": "q"}})
    assert denied.status_code == 403
    assert denied.json()["error"]["type"] == "forbidden"
    assert allowed.status_code == 200
    assert allowed.json()["final_response"] == "hello alice"
    assert dispatch.status_code == 200
    assert asked == [
        ("agent", "bot", "mallory"),
        ("agent", "bot", "alice"),
        ("dispatch", "default", None),
    ]
    assert not (tmp_path / "bot" / "mallory").exists()

    sync_denied = app(make_loop(ScriptedAPI([])), authorize=lambda request, agent, id: False)
    async with client_for(sync_denied) as client:
        assert (await client.post("/chat", json={"message": "hi"})).status_code == 403


async def test_a_factory_serves_agents_by_name(tmp_path: Path) -> None:
    api = ScriptedAPI([text_reply("from default"), text_reply("from helper")])
    made: list[str] = []

    def factory(name: str) -> Loop | None:
        made.append(name)
        if name == "ghost":
            raise KeyError(name)
        return None if name == "nobody" else make_loop(api, instructions=f"You are {name}.")

    asgi = app(factory, sessions_dir=tmp_path)
    async with client_for(asgi) as client:
        dispatch = await client.post("/dispatch", json={"input": {"user_instruction": "q"}})
        helper = await client.post("/agents/helper/u1", json={"message": "hi"})
        ghost = await client.post("/agents/ghost/u1", json={"message": "hi"})
        nobody = await client.post("/agents/nobody/u1", json={"message": "hi"})
    assert dispatch.json()["final_response"] == "from default"
    assert helper.json()["final_response"] == "from helper"
    assert ghost.status_code == nobody.status_code == 404
    assert made == ["default", "helper", "ghost", "nobody"]
    assert [b["instructions"] for b in api.bodies] == ["You are default.", "You are helper."]


async def test_conversations_are_kept_by_default(rawloop_home: Path) -> None:
    asgi = app(make_loop(ScriptedAPI([text_reply("hello")])))
    async with client_for(asgi) as client:
        response = await client.post("/agents/bot/u1", json={"message": "hi"})
    assert response.status_code == 200
    assert response.json()["session"] == {"agent": "bot", "id": "u1", "name": "default"}
    assert (rawloop_home / "sessions.db").is_file()  # $RAWLOOP_HOME/sessions.db
    assert [s.key.id for s in await asgi.store.sessions()] == ["u1"]


async def test_app_refuses_what_is_not_a_loop() -> None:
    with pytest.raises(ConfigurationError, match="a Loop, a Profile, a factory"):
        app(42)  # type: ignore[arg-type]


# -- /chat: server-sent events ---------------------------------------------------------------


async def test_chat_streams_tool_call_result_text_and_done_in_order() -> None:
    seen_before_second_request: list[list[str]] = []
    exchange_box: list[Exchange] = []

    async def note() -> None:
        seen_before_second_request.append(exchange_box[0].names() if exchange_box else [])

    replies = tool_replies()
    replies[1].before = note
    api = ScriptedAPI(replies)
    asgi = app(make_loop(api))

    def remember(exchange: Exchange) -> bool:
        if not exchange_box:
            exchange_box.append(exchange)
        return False

    response = await drive(asgi, "/chat", post({"message": QUESTION}), disconnect_when=remember)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.complete
    names = response.names()
    assert names[:2] == ["tool_call", "tool_result"]
    assert set(names[2:-1]) == {"text"}
    assert names[-1] == "done"
    events = response.events()
    assert events[0][1] == {
        "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
        "name": "multiply",
        "arguments": '{"a":1231,"b":2331}',
        "iteration": 0,
    }
    assert events[1][1]["output"] == "2869461"
    assert events[1][1]["error"] is None
    text = "".join(data["text"] for name, data in events if name == "text")
    done = events[-1][1]
    assert text == done["text"] == ANSWER
    assert done["stop_reason"] == "completed"
    assert done["iterations"] == 2
    assert done["usage"]["input_tokens"] == 152
    # Streamed, not buffered: the client had the tool call before the second model call.
    ((first_seen, *_),) = seen_before_second_request
    assert first_seen == "tool_call"
    # Each event went out in its own write.
    assert all(chunk.endswith(b"\n\n") for chunk in response.chunks)


async def test_chat_reports_a_failed_run_as_an_error_event() -> None:
    api = ScriptedAPI([Reply(b'{"error": {"message": "no such model"}}', status=404)])
    response = await drive(app(make_loop(api)), "/chat", post({"message": "hi"}))
    assert response.status == 200
    ((name, data),) = response.events()
    assert name == "error"
    assert data["type"] == "APIStatusError"
    assert "no such model" in data["message"]


async def test_a_retried_request_is_announced() -> None:
    api = ScriptedAPI([Reply(b'{"error": {"message": "busy"}}', status=503), text_reply("hi")])
    loop = make_loop(api, retries=RetryPolicy(max_retries=1, initial_delay=0.0))
    response = await drive(app(loop), "/chat", post({"message": "hi"}))
    assert response.names() == ["retry", "text", "done"]
    retry = response.events()[0][1]
    assert (retry["iteration"], retry["attempt"]) == (0, 0)
    assert "503" in retry["message"]


async def test_heartbeats_flow_while_a_slow_tool_runs() -> None:
    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, slowly."""
        await anyio.sleep(0.4)
        return a * b

    asgi = app(make_loop(ScriptedAPI(tool_replies()), multiply), heartbeat=0.05)
    response = await drive(asgi, "/chat", post({"message": QUESTION}))
    names = response.names()
    between = names[names.index("tool_call") + 1 : names.index("tool_result")]
    assert len(between) >= 3
    assert set(between) == {":"}
    assert b": heartbeat\n\n" in response.chunks
    assert names[-1] == "done"


async def test_no_heartbeat_when_turned_off() -> None:
    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, slowly."""
        await anyio.sleep(0.1)
        return a * b

    asgi = app(make_loop(ScriptedAPI(tool_replies()), multiply), heartbeat=0)
    response = await drive(asgi, "/chat", post({"message": QUESTION}))
    assert ":" not in response.names()


async def test_a_disconnect_cancels_the_running_tool() -> None:
    cancelled = anyio.Event()
    entered = anyio.Event()

    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, very slowly."""
        entered.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        return a * b

    api = ScriptedAPI(tool_replies())
    asgi = app(make_loop(api, multiply))
    response = await drive(
        asgi,
        "/chat",
        post({"message": QUESTION}),
        disconnect_when=lambda exchange: "tool_call" in exchange.names(),
        timeout=5,
    )
    assert entered.is_set() and cancelled.is_set()
    assert not response.complete
    assert len(api.requests) == 1  # the run never went on to the second model call


class StallingStream(httpx.AsyncByteStream):
    """A model stream that sends its first events and then hangs."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.cancelled = False
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        yield b""  # pragma: no cover

    async def aclose(self) -> None:
        self.closed = True


def stalling_client() -> tuple[httpx.AsyncClient, list[StallingStream]]:
    streams: list[StallingStream] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stream = StallingStream(
            events_body(
                {"type": "response.created", "response": {"id": "r", "status": "in_progress"}},
                {
                    "type": "response.output_text.delta",
                    "item_id": "m",
                    "output_index": 0,
                    "delta": "Hel",
                },
            )
        )
        streams.append(stream)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), streams


async def test_a_disconnect_closes_the_model_stream() -> None:
    client, streams = stalling_client()
    asgi = app(make_loop(client))
    response = await drive(
        asgi,
        "/chat",
        post({"message": "hi"}),
        disconnect_when=lambda exchange: "text" in exchange.names(),
        timeout=5,
    )
    assert response.names() == ["text"]
    (stream,) = streams
    assert stream.cancelled and stream.closed


async def test_a_disconnect_cancels_a_dispatch_too() -> None:
    # A JSON answer sends nothing before the end: the client leaves through receive().
    client, streams = stalling_client()
    asgi = app(make_loop(client))
    gone = anyio.Event()
    body = [post({"input": {"user_instruction": "hi"}})]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if body:
            return {"type": "http.request", "body": body.pop(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def leave_when_streaming() -> None:
        while not streams:
            await anyio.sleep(0.01)
        gone.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(leave_when_streaming)
            await asgi(scope_for("/dispatch"), receive, send)
    assert sent == []  # nobody to answer
    assert streams[0].cancelled and streams[0].closed


# -- ASGI odds and ends -------------------------------------------------------------------


async def test_lifespan_is_acknowledged() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(2):
        await app(make_loop(ScriptedAPI([])))({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_route_path_follows_the_mount_point() -> None:
    assert route_path({"path": "/api/dispatch", "root_path": "/api"}) == "/dispatch"
    assert route_path({"path": "/dispatch", "root_path": "/api"}) == "/dispatch"
    assert route_path({"path": "/apis/dispatch", "root_path": "/api"}) == "/apis/dispatch"
    assert route_path({"path": "/api", "root_path": "/api"}) == "/"


def test_sse_event_data_is_one_line() -> None:
    assert sse_event("text", {"text": "a\nb"}) == b'event: text\ndata: {"text":"a\\nb"}\n\n'


async def test_mounted_in_starlette() -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.routing import Mount

    api = ScriptedAPI([text_reply("mounted")])
    outer = Starlette(routes=[Mount("/api", app=app(make_loop(api)))])
    async with client_for(outer) as client:
        response = await client.post("/api/dispatch", json={"input": {"user_instruction": "q"}})
    assert response.status_code == 200
    assert response.json()["final_response"] == "mounted"


# -- a real server ----------------------------------------------------------------------------


@asynccontextmanager
async def uvicorn_serving(asgi: AgentApp) -> AsyncIterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with anyio.fail_after(5):
            while not server.started:
                await anyio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await anyio.to_thread.run_sync(thread.join, 5)
        sock.close()
        assert not thread.is_alive()


async def test_through_a_real_uvicorn_server() -> None:
    tool_cancelled = threading.Event()
    tool_entered = threading.Event()

    # The tool's delay in each run: none for /dispatch, 0.3 s for /chat, then a hang.
    delays = [0.0, 0.3, 30.0]

    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, slowly enough for heartbeats."""
        tool_entered.set()
        try:
            await anyio.sleep(delays.pop(0))
        except anyio.get_cancelled_exc_class():
            tool_cancelled.set()
            raise
        return a * b

    api = ScriptedAPI(tool_replies() * 2 + [Reply(corpus("responses-function-call-1.sse"))])
    asgi = app(make_loop(api, multiply), heartbeat=0.05)
    with anyio.fail_after(15):
        async with uvicorn_serving(asgi) as base, httpx.AsyncClient(base_url=base) as client:
            dispatch = await client.post(
                "/dispatch", json={"input": {"user_instruction": QUESTION}}
            )
            assert dispatch.status_code == 200
            assert dispatch.json()["final_response"] == ANSWER

            names: list[str] = []
            async with client.stream("POST", "/chat", json={"message": QUESTION}) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                async for line in stream.aiter_lines():
                    if line.startswith("event: ") or line.startswith(": "):
                        names.append(line)
            assert names[0] == "event: tool_call"
            assert ": heartbeat" in names
            assert names[-1] == "event: done"
            # Events arrived as they happened: heartbeats came while the tool ran,
            # between its call and its result (a buffered answer would have none there).
            call_at = names.index("event: tool_call")
            result_at = names.index("event: tool_result")
            assert ": heartbeat" in names[call_at:result_at]

            # Leaving mid-run cancels the tool on the server.
            tool_entered.clear()
            async with client.stream("POST", "/chat", json={"message": QUESTION}) as stream:
                async for line in stream.aiter_lines():
                    if line == "event: tool_call":
                        break
            while not tool_cancelled.is_set():
                await anyio.sleep(0.02)
    assert tool_entered.is_set()


# -- serve_agent and the command line ---------------------------------------------------------


AGENT_MODULE = """
from rawloop.loop.loop import Loop
loop = Loop("gpt-5.5", base_url="http://127.0.0.1:9/v1")
def factory(name):
    return loop
"""


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    runs: list[tuple[Any, dict[str, Any]]] = []
    module = types.ModuleType("uvicorn")
    module.run = lambda asgi, **options: runs.append((asgi, options))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvicorn", module)
    return runs


def test_serve_agent_builds_the_app_and_runs_uvicorn(
    tmp_path: Path, fake_uvicorn: list[tuple[Any, dict[str, Any]]]
) -> None:
    target = tmp_path / "myagent.py"
    target.write_text(AGENT_MODULE)
    assert serve_agent(f"{target}:loop", port=8123, sessions_dir=tmp_path, log_level="info") == 0
    ((asgi, options),) = fake_uvicorn
    assert isinstance(asgi, AgentApp)
    assert isinstance(asgi.agents.target("anyone"), Loop)
    assert isinstance(asgi.store, SQLiteStore) and asgi.store.path == tmp_path / "sessions.db"
    assert options == {"host": "127.0.0.1", "port": 8123, "log_level": "info", "ws": "wsproto"}


def test_the_serve_agent_command(
    tmp_path: Path,
    fake_uvicorn: list[tuple[Any, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    rawloop_home: Path,
) -> None:
    import argparse

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a factory needs no key then

    target = tmp_path / "agents.py"
    target.write_text(AGENT_MODULE + "\ndef allow(request, agent, id):\n    return True\n")
    parser = argparse.ArgumentParser()
    add_serve_agent_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "serve-agent",
            f"{target}:factory",
            "--port",
            "9000",
            "--heartbeat",
            "2.5",
            "--authorize",
            f"{target}:allow",
        ]
    )
    assert args.func(args) == 0
    ((asgi, options),) = fake_uvicorn
    factory = asgi.agents.target("anyone")
    assert callable(factory) and not isinstance(factory, Loop)
    assert asgi.heartbeat == 2.5
    assert asgi.authorize is not None and asgi.authorize.__name__ == "allow"
    assert isinstance(asgi.store, SQLiteStore)
    assert asgi.store.path == rawloop_home / "sessions.db"
    assert options["port"] == 9000


def test_serve_agent_without_uvicorn_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'rawloop\[serve\]'"):
        serve_agent("anything:loop")


def test_load_target_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="MODULE:ATTR"):
        load_target("no_colon_here")
    with pytest.raises(ConfigurationError, match="cannot import"):
        load_target("rawloop_no_such_module_xyz:loop")
    with pytest.raises(ConfigurationError, match="no attribute nope"):
        load_target("rawloop.serve.app:nope")
    assert load_target("rawloop.serve.app:app") is app
