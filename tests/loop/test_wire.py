"""The wire shell against real misbehaving servers on 127.0.0.1: drops and stalls are typed.

Each server here is a raw socket on a loopback port that answers exactly as
badly as the test needs: a body cut short, headers and then silence, no
answer at all, or a full accept queue. Every test is bounded by
``fail_after``; none asserts how long anything took.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest

from rawloop import APIConnectionError, ConfigurationError, Loop, RetryPolicy
from rawloop.loop.hooks import ErrorInfo
from rawloop.loop.loop import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT

pytestmark = pytest.mark.anyio

Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]
# Every test ends well within this, whatever the server does.
BOUND = 20.0

CREATED = {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer:
    """A loopback TCP server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        async with stream:
            await read_head(stream)
            await self.handler(stream)


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    server = RawServer(handler)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server.url = f"http://127.0.0.1:{port}/v1"
    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, server._serve)
        try:
            yield server
        finally:
            group.cancel_scope.cancel()


async def read_head(stream: anyio.abc.SocketStream) -> bytes:
    """The request up to the end of its head, and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive()
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ),
        0,
    )
    while len(rest) < length:
        rest += await stream.receive()
    return head


async def silence(stream: anyio.abc.SocketStream) -> None:
    await anyio.sleep_forever()


def loop_at(url: str, retries: int = 0, **kwargs: object) -> Loop:
    policy = RetryPolicy(max_retries=retries, initial_delay=0.0)
    return Loop("gpt-5.5", base_url=url, api_key="sk-test", retries=policy, **kwargs)  # type: ignore[arg-type]


async def test_a_200_that_is_not_sse_and_drops_is_a_typed_connection_error() -> None:
    async def cut_html(stream: anyio.abc.SocketStream) -> None:
        await stream.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 1000\r\n\r\n<html>"
        )

    with anyio.fail_after(BOUND):
        async with raw_server(cut_html) as server:
            with pytest.raises(
                APIConnectionError, match=r"text/html answer .* broke before its end"
            ):
                await loop_at(server.url, retries=1).run("hi")
    assert server.connections == 2  # retried like any drop


async def test_headers_then_silence_is_a_stall_naming_read_timeout_and_is_retried() -> None:
    async def one_event_then_nothing(stream: anyio.abc.SocketStream) -> None:
        await stream.send(SSE_HEAD + chunk(b"data: " + json.dumps(CREATED).encode() + b"\n\n"))
        await anyio.sleep_forever()

    errors: list[ErrorInfo] = []

    class Errors:
        def on_error(self, info: ErrorInfo) -> None:
            errors.append(info)

    with anyio.fail_after(BOUND):
        async with raw_server(one_event_then_nothing) as server:
            loop = loop_at(server.url, retries=1, read_timeout=0.2, hooks=[Errors()])
            with pytest.raises(APIConnectionError) as caught:
                await loop.run("hi")
    message = str(caught.value)
    assert "stalled: no data for 0.2 s waiting for the next chunk (read_timeout)" in message
    assert "broke after" in message
    assert caught.value.result is not None  # the run's work so far comes with it
    assert server.connections == 2
    assert [e.will_retry for e in errors] == [True, False]


async def test_no_answer_at_all_is_a_stall_waiting_for_the_headers() -> None:
    with anyio.fail_after(BOUND):
        async with raw_server(silence) as server:
            with pytest.raises(
                APIConnectionError, match=r"waiting for the answer \(read_timeout\)"
            ):
                await loop_at(server.url, read_timeout=0.2).run("hi")


async def test_read_timeout_applies_through_a_borrowed_client_without_timeouts() -> None:
    with anyio.fail_after(BOUND):
        async with raw_server(silence) as server, httpx.AsyncClient(timeout=None) as client:
            loop = loop_at(server.url, read_timeout=0.2, http_client=client)
            with pytest.raises(APIConnectionError, match="read_timeout"):
                await loop.run("hi")


@pytest.mark.skipif(sys.platform != "linux", reason="a full accept queue drops SYNs on Linux")
async def test_a_server_that_never_accepts_is_a_stall_naming_connect_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    try:
        for _ in range(3):  # fill the accept queue: the next SYN goes unanswered
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            queued.append(sock)
        await anyio.sleep(0.1)
        with anyio.fail_after(BOUND):
            loop = loop_at(f"http://127.0.0.1:{port}/v1", connect_timeout=0.2)
            with pytest.raises(
                APIConnectionError, match=r"no connection within 0.2 s \(connect_timeout\)"
            ):
                await loop.run("hi")
    finally:
        for sock in queued:
            sock.close()
        server.close()


def test_timeouts_have_documented_defaults_and_are_checked() -> None:
    loop = Loop("m", base_url="http://127.0.0.1:9/v1")
    assert (loop.timeout.read, loop.timeout.connect) == (
        DEFAULT_READ_TIMEOUT,
        DEFAULT_CONNECT_TIMEOUT,
    )
    assert (DEFAULT_READ_TIMEOUT, DEFAULT_CONNECT_TIMEOUT) == (120.0, 10.0)
    for bad in (0, -1.0, float("nan"), "5", True):
        for option in ("read_timeout", "connect_timeout", "tool_warn_after"):
            with pytest.raises(ConfigurationError, match=f"{option} must be a positive"):
                Loop("m", **{option: bad})


def test_an_unusable_base_url_is_a_configuration_error() -> None:
    async def main() -> None:
        await Loop("m", base_url="http://[::1/v1", api_key="sk-test").run("hi")

    with pytest.raises(ConfigurationError, match="cannot send a request"):
        anyio.run(main)


@pytest.mark.parametrize("base_url", ["u", "//api.openai.com/v1", "ftp://host/v1", "/v1"])
def test_a_relative_or_non_http_base_url_is_refused_before_any_request(base_url: str) -> None:
    # A trace's base_url is untrusted; httpx took these as relative URLs and failed deep inside.
    sent: list[httpx.Request] = []
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(500))
    )

    async def main() -> None:
        await Loop("m", base_url=base_url, http_client=client, api_key="sk-test").run("hi")

    with pytest.raises(ConfigurationError, match="absolute http"):
        anyio.run(main)
    assert sent == []
