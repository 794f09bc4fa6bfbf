"""The h11 loopback layer under abuse: slow heads, slow bodies, and one client holding many sockets.

The server here is ``serve_listener`` + ``serve_connection`` with small limits
and a trivial application, on 127.0.0.1. Attackers connect from other
loopback addresses (127.0.0.2, 127.0.0.3: all of 127/8 is loopback on Linux)
so that the per-client cap tells them from the normal client. Every test is
bounded by ``fail_after`` and by its counts; none asserts a duration.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawloop.replay.loopback import Connection, serve_connection, serve_listener

pytestmark = pytest.mark.anyio

BOUND = 30.0
linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="source addresses other than 127.0.0.1 need Linux"
)


@dataclass
class Limits:
    max_connections: int = 16
    max_per_client: int = 4
    timeout: float = 5.0
    head_timeout: float = 0.5
    min_body_rate: float = 1000.0
    bodies: list[int] = field(default_factory=list)


async def answer(limits: Limits, conn: Connection, request: h11.Request) -> None:
    body = await conn.read_body(request, 1 << 20)
    limits.bodies.append(len(body))
    await conn.send_json(200, {"ok": True, "size": len(body)})


@asynccontextmanager
async def server(limits: Limits) -> AsyncIterator[int]:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        await serve_connection(
            stream,
            limits.timeout,
            lambda conn, request: answer(limits, conn, request),
            head_timeout=limits.head_timeout,
            min_body_rate=limits.min_body_rate,
        )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with anyio.create_task_group() as group:
        port = await group.start(
            lambda task_status: serve_listener(
                listener,
                handle,
                limits.max_connections,
                max_per_client=limits.max_per_client,
                task_status=task_status,
            )
        )
        try:
            yield port
        finally:
            group.cancel_scope.cancel()


async def until_closed(stream: anyio.abc.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while True:
            received += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
        return received


@linux_only
async def test_a_normal_client_is_served_while_a_slowloris_runs() -> None:
    limits = Limits()
    seen: list[bytes] = []  # what each attacking connection got before it was closed
    attackers = 100  # sockets at once, from two addresses, each reconnecting when cut

    async def attack_once(port: int, source: str, stop: anyio.Event) -> None:
        stream = await anyio.connect_tcp("127.0.0.1", port, local_host=source)
        async with stream, anyio.create_task_group() as connection:

            async def read() -> None:
                # Read as it comes: a reset after the server's close would drop it.
                seen.append(await until_closed(stream))
                connection.cancel_scope.cancel()

            connection.start_soon(read)
            try:
                await stream.send(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\n")
                while not stop.is_set():  # one header byte at a time, well inside timeout
                    await anyio.sleep(0.05)
                    await stream.send(b"X")
            except (anyio.BrokenResourceError, OSError):
                await anyio.sleep_forever()  # until the reader has what came
            connection.cancel_scope.cancel()

    async def slowloris(port: int, source: str, stop: anyio.Event) -> None:
        while not stop.is_set():
            await attack_once(port, source, stop)

    with anyio.fail_after(BOUND):
        async with server(limits) as port, anyio.create_task_group() as group:
            stop = anyio.Event()
            for n in range(attackers):
                group.start_soon(slowloris, port, f"127.0.0.{2 + n % 2}", stop)
            await anyio.sleep(0.2)  # let them take what they can
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for size in (0, 10, 50_000):
                    response = await client.post("/v1/responses", content=b"x" * size)
                    assert response.status_code == 200
                    assert response.json() == {"ok": True, "size": size}
            while not any(s.startswith(b"HTTP/1.1 408") for s in seen):
                await anyio.sleep(0.05)  # a head that never ends is cut at its deadline
            stop.set()
    assert any(s.startswith(b"HTTP/1.1 503") for s in seen)  # past the per-client cap
    assert b'"code":"too_many_connections"' in next(s for s in seen if b" 503 " in s[:20])


async def test_a_head_trickled_inside_the_idle_timeout_is_cut_at_its_deadline() -> None:
    limits = Limits(timeout=5.0, head_timeout=0.3)
    with anyio.fail_after(BOUND):
        async with server(limits) as port:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(b"GET /health HTTP/1.1\r\n")
                with pytest.raises((anyio.BrokenResourceError, OSError)):
                    for _ in range(10_000):  # bounded: far more bytes than the deadline allows
                        await anyio.sleep(0.02)
                        await stream.send(b"X")
                answer = await until_closed(stream)
    # Cut before the application saw it, with an answer saying why (when it arrives
    # before the reset).
    assert limits.bodies == []
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 Request Timeout")


async def test_a_fresh_connection_that_sends_nothing_is_closed_at_the_head_deadline() -> None:
    limits = Limits(timeout=60.0, head_timeout=0.2)
    with anyio.fail_after(BOUND):
        async with server(limits) as port:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                assert await until_closed(stream) == b""  # nothing came, nothing to answer


async def test_a_kept_alive_connection_may_idle_past_the_head_deadline() -> None:
    limits = Limits(timeout=10.0, head_timeout=0.2)
    with anyio.fail_after(BOUND):
        async with (
            server(limits) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            first = await client.post("/x", content=b"a")
            await anyio.sleep(0.5)  # idle on the same connection: only `timeout` applies
            second = await client.post("/x", content=b"b")
    assert (first.status_code, second.status_code) == (200, 200)
    assert limits.bodies == [1, 1]


async def test_a_body_slower_than_the_minimum_rate_is_cut_and_a_fast_big_one_is_not() -> None:
    limits = Limits(timeout=5.0, head_timeout=0.2, min_body_rate=2000.0)
    with anyio.fail_after(BOUND):
        async with server(limits) as port:
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                await stream.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
                with pytest.raises((anyio.BrokenResourceError, OSError)):
                    for _ in range(10_000):  # 20 bytes a second at most: far under the rate
                        await anyio.sleep(0.05)
                        await stream.send(b"x")
                await until_closed(stream)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.post("/x", content=b"y" * 200_000)
    assert response.status_code == 200
    assert limits.bodies == [200_000]  # the slow one never reached the application whole


@linux_only
async def test_one_client_gets_at_most_its_share_of_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="rawloop.server")
    limits = Limits(max_connections=8, max_per_client=2, timeout=5.0, head_timeout=5.0)
    with anyio.fail_after(BOUND):
        async with server(limits) as port:
            held = [
                await anyio.connect_tcp("127.0.0.1", port, local_host="127.0.0.2") for _ in range(2)
            ]
            extra = await anyio.connect_tcp("127.0.0.1", port, local_host="127.0.0.2")
            async with extra:
                refused = await until_closed(extra)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.post("/x", content=b"z")
            for stream in held:
                await stream.aclose()
            # Its slots freed (once the server has seen the closes): it is served again.
            for _ in range(100):
                again = await anyio.connect_tcp("127.0.0.1", port, local_host="127.0.0.2")
                async with again:
                    await again.send(
                        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nq"
                    )
                    reply = await until_closed(again)
                if not reply.startswith(b"HTTP/1.1 503"):
                    break
                await anyio.sleep(0.02)
            assert reply.startswith(b"HTTP/1.1 200 OK")
    assert refused.startswith(b"HTTP/1.1 503 Service Unavailable")
    warnings = [r.getMessage() for r in caplog.records if r.name == "rawloop.server"]
    assert warnings[0] == "refusing connections from 127.0.0.2: it holds 2 (max_per_client)"
    assert response.status_code == 200


REQUEST = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


async def exchange_in_pieces(port: int, pieces: list[bytes]) -> bytes:
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        for piece in pieces:
            await stream.send(piece)
            await anyio.sleep(0)
        received = b""
        while received.count(b'"size":5}') < 2:  # both answers, whole
            received += await stream.receive()
        return received


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, 2 * len(REQUEST)), max_size=8))
def test_two_pipelined_requests_cut_anywhere_are_both_answered(cuts: list[int]) -> None:
    data = REQUEST * 2
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]

    async def main() -> bytes:
        limits = Limits(timeout=5.0, head_timeout=5.0)
        with anyio.fail_after(BOUND):
            async with server(limits) as port:
                return await exchange_in_pieces(port, pieces)

    received = anyio.run(main)
    assert received.count(b"HTTP/1.1 200 OK") == 2
