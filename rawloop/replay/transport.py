"""``ReplayTransport``: an httpx transport serving a ``Responder``'s answers in process.

The chunk boundaries (and, if asked, the timing) of each answer reach the
client as recorded; a dropped connection or a cut stream fails as httpx
fails on a real socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from ..trace.format import Trace
from .responder import Answer, Responder

__all__ = ["ReplayTransport", "load", "replay_client"]


class _AnswerStream(httpx.AsyncByteStream):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for delay, chunk in zip(self.answer.delays, self.answer.chunks):
            if delay > 0:
                await anyio.sleep(delay)
            yield chunk
        if self.answer.fail == "cut":
            raise httpx.ReadError("connection reset by peer (rawloop replay fault)")


class ReplayTransport(httpx.AsyncBaseTransport):
    """An httpx transport answering from a trace (see ``Responder`` for the options)."""

    def __init__(self, trace: Trace | str | Path, **options: Any) -> None:
        self.responder = Responder(load(trace), **options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = await request.aread()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        answer = self.responder.answer(body)
        if answer.fail == "drop":
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response (rawloop replay)", request=request
            )
        return httpx.Response(
            answer.status, headers=answer.headers, stream=_AnswerStream(answer), request=request
        )


def replay_client(
    trace: Trace, http_client: httpx.AsyncClient | None, **options: Any
) -> tuple[httpx.AsyncClient, ReplayTransport | None]:
    """The client a replay sends through, and the in-process transport when it is ours.

    ``http_client`` (a client of a ``rawloop serve`` server, say) is used as it
    is; without one, a new client over ``ReplayTransport(trace, **options)``.
    """
    if http_client is not None:
        return http_client, None
    transport = ReplayTransport(trace, **options)
    return httpx.AsyncClient(transport=transport), transport


def load(trace: Trace | str | Path) -> Trace:
    """``trace`` itself, or the trace loaded from that path."""
    return trace if isinstance(trace, Trace) else Trace.load(trace)
