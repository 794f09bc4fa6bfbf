"""Shared fixtures: the corpus, and a scripted stand-in for the model API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def chunks_of(data: bytes, size: int = 512) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass
class Reply:
    """One scripted answer: a status, headers and a body in chunks; ``cut`` raises mid-body."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 512
    cut_after: int | None = None  # raise a ReadError after this many bytes
    before: Callable[[], Any] | None = None  # awaited before answering (e.g. to stall)


@dataclass
class ScriptedAPI:
    """An httpx transport that answers each request with the next scripted Reply."""

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.content) for r in self.requests]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request #{len(self.requests)}")
        reply = self.replies.pop(0)
        if reply.before is not None:
            await reply.before()
        headers = {"content-type": "text/event-stream", **reply.headers}
        if reply.status != 200 and "content-type" not in reply.headers:
            headers["content-type"] = "application/json"

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            for chunk in chunks_of(reply.body, reply.chunk_size):
                if reply.cut_after is not None and sent + len(chunk) > reply.cut_after:
                    yield chunk[: reply.cut_after - sent]
                    raise httpx.ReadError("connection reset by peer")
                sent += len(chunk)
                yield chunk

        return httpx.Response(reply.status, headers=headers, content=body())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
