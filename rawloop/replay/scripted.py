"""A scripted stand-in for the model API, for tests and for making example traces.

``ScriptedAPI([Reply(body), Reply(b"...", status=429)])`` answers each
request with the next reply, cutting each body into chunks of ``chunk_size``
bytes; ``cut_after`` ends a body early with a reset connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

__all__ = ["Reply", "ScriptedAPI"]


@dataclass
class Reply:
    """One scripted answer: a status, headers and a body in chunks."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 512
    cut_after: int | None = None  # raise a ReadError after this many bytes
    before: Callable[[], Awaitable[Any]] | None = None  # awaited before answering


@dataclass
class ScriptedAPI:
    """An httpx transport handler that answers each request with the next ``Reply``."""

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests received so far."""
        return [orjson.loads(r.content) for r in self.requests]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request #{len(self.requests)}: no reply scripted")
        reply = self.replies.pop(0)
        if reply.before is not None:
            await reply.before()
        default_type = "text/event-stream" if reply.status < 300 else "application/json"
        headers = {"content-type": default_type, **reply.headers}
        return httpx.Response(reply.status, headers=headers, content=_body(reply))

    def client(self) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` whose requests this script answers."""
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


async def _body(reply: Reply) -> AsyncIterator[bytes]:
    sent = 0
    for start in range(0, len(reply.body), reply.chunk_size):
        chunk = reply.body[start : start + reply.chunk_size]
        if reply.cut_after is not None and sent + len(chunk) > reply.cut_after:
            yield chunk[: reply.cut_after - sent]
            raise httpx.ReadError("connection reset by peer")
        sent += len(chunk)
        yield chunk
