"""Shared by the replay server's tests: a server on 127.0.0.1 under a deadline, and the traces.

Every server runs inside a task group with a cancel scope and a deadline, so
no test can hang; every socket is 127.0.0.1 with a port the kernel picks.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson

from rawloop import Loop, SSEDecoder, Trace
from rawloop.replay.replayer import ReplayReport, replay
from rawloop.replay.server import ReplayServer

TRACES_DIR = Path(__file__).parents[2] / "traces"
TRACES = sorted(TRACES_DIR.glob("*.jsonl"))
ROUNDTRIP = TRACES_DIR / "tool-roundtrip.jsonl"
CHAT = TRACES_DIR / "chat-run.jsonl"
RETRY = TRACES_DIR / "retry-after-cut.jsonl"
DEADLINE = 15.0
# Plain http only, but httpx builds a TLS context per client: share one, it is slow to make.
TLS = ssl.create_default_context()


@asynccontextmanager
async def serving(*traces: Any, **options: Any) -> AsyncIterator[ReplayServer]:
    """A server on 127.0.0.1:0, stopped by a cancel scope when the block ends."""
    server = ReplayServer(traces, **options)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            await group.start(server.serve)
            try:
                yield server
            finally:
                group.cancel_scope.cancel()


def url(server: ReplayServer) -> str:
    return f"http://127.0.0.1:{server.port}/v1"


def first_body(path: Path, n: int = 0) -> dict[str, Any]:
    body = Trace.load(path).exchanges()[n].request["body"]
    assert isinstance(body, dict)
    return body


async def replay_through(
    server: ReplayServer, trace: Trace, loop: Loop | None = None
) -> ReplayReport:
    """``replay(trace, loop, http_client=client)`` with ``client`` talking to ``server``.

    Every request crosses the socket, and the server alone decides the
    answers and compares the requests: its divergences become the report's.
    """
    async with httpx.AsyncClient(base_url=url(server), verify=TLS) as client:
        report = await replay(trace, loop, http_client=client)
    report.divergences = list(server.divergences)
    if report.identical and report.divergences:
        report.verdict, report.divergence = "diverged", report.divergences[0]
    return report


def recorded_events(path: Path, n: int = 0) -> list[dict[str, Any]]:
    """The JSON payloads of the recorded stream of exchange ``n``."""
    decoder = SSEDecoder()
    events = decoder.feed(Trace.load(path).exchanges()[n].body) + decoder.close()
    return [orjson.loads(e.data) for e in events if e.data != "[DONE]"]
