"""Writing the replay server's answers in the form the request asked for.

A recording holds what its client asked for: a stream, or one JSON object.
``send_answer`` gives the asking client its own form, whatever the recording
holds:

=====================  ===============================  ====================================
request \\ recording    stream                           JSON object
=====================  ===============================  ====================================
``"stream": true``     the recorded chunks               the events of that object
                                                         (``rawloop.replay.restream``)
no ``stream``          the object assembled from the     the recorded bytes
                       stream (``rawloop.core.assemble``)
=====================  ===============================  ====================================

Error answers (status 300 and up) are sent as recorded. A Chat stream keeps
its usage chunk only when the request asked for it
(``stream_options.include_usage``), as the API does. A cut answer breaks the
connection partway through, as the recorded one broke.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio
import orjson

from ..core.assemble import assemble
from ..core.errors import ReplayDivergence, StreamError
from ..core.jsondiff import MISSING
from ..trace.format import Exchange
from .chunking import rechunk, split_events
from .loopback import Connection, clean_headers, error_body, json_headers
from .replayer import Answer
from .restream import restream, wants_usage

__all__ = [
    "Shape",
    "divergence_body",
    "header_safe",
    "send_answer",
    "send_assembled",
    "send_stream",
]


@dataclass
class Shape:
    """What the answer's form depends on: the request, the recording, the chunking."""

    dialect: str
    body: dict[str, Any]  # the request
    json_recorded: bool  # the recorded answer is one JSON object
    chunking: str = "recorded"
    seed: int = 0

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


async def send_answer(
    conn: Connection,
    answer: Answer,
    exchange: Exchange,
    shape: Shape,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """``answer`` (shaped from ``exchange``) in the form the request asked for."""
    answer.headers = {**answer.headers, **dict(headers)}
    if answer.status >= 300:
        if shape.stream:
            await send_stream(conn, answer)
        else:
            await send_assembled(conn, answer, shape.dialect)
        return
    if shape.json_recorded and not shape.stream:
        await _send_json(conn, answer, exchange.body)
    elif shape.json_recorded:
        await _send_restreamed(conn, answer, exchange, shape)
    elif shape.stream:
        if shape.dialect == "chat" and not wants_usage(shape.body):
            answer = _without_usage(answer, shape)
        await send_stream(conn, answer)
    else:
        await send_assembled(conn, answer, shape.dialect)


async def send_stream(conn: Connection, answer: Answer) -> None:
    """The recorded status, headers and chunks; a cut answer ends without the last chunk."""
    headers = clean_headers(answer.headers)
    if answer.status < 300 and all(k != "content-type" for k, _ in headers):
        headers.append(("content-type", "text/event-stream"))
    await conn.send_head(answer.status, headers)
    for delay, chunk in zip(answer.delays, answer.chunks):
        if delay > 0:
            await anyio.sleep(delay)
        await conn.send_data(chunk)
    if answer.fail == "cut":
        conn.abort()  # a reset connection: no end of the chunked body
    else:
        await conn.end()


async def send_assembled(conn: Connection, answer: Answer, dialect: str) -> int:
    """The JSON object a non-streaming request gets, after the whole pacing; returns its status."""
    raw = b"".join(answer.chunks)
    if answer.status >= 300:  # an error answer is JSON already
        await _pace(answer)
        await conn.send_bytes(answer.status, raw, clean_headers(answer.headers))
        return answer.status
    try:
        status, payload = assemble(raw, dialect)
    except StreamError as exc:
        message = f"the recorded stream could not be assembled into one object: {exc}"
        status, payload = 502, error_body(message, "server_error", "bad_recording")
    answer.status = status
    await _send_json(conn, answer, orjson.dumps(payload))
    return status


async def _pace(answer: Answer) -> None:
    delay = sum(answer.delays)
    if delay > 0:
        await anyio.sleep(delay)


async def _send_json(conn: Connection, answer: Answer, data: bytes) -> None:
    """One JSON object, after the whole pacing; a cut answer breaks halfway through the body."""
    await _pace(answer)
    headers = clean_headers(answer.headers)  # the content type becomes JSON's
    if answer.fail == "cut":
        await conn.send_head(answer.status, json_headers(data, headers))
        await conn.send_data(data[: len(data) // 2])
        conn.abort()
    else:
        await conn.send_bytes(answer.status, data, headers)


async def _send_restreamed(
    conn: Connection, answer: Answer, exchange: Exchange, shape: Shape
) -> None:
    """A recorded JSON answer to a streaming request: the events the API streams for it."""
    try:
        payload = orjson.loads(exchange.body)
        body = restream(payload, shape.dialect, include_usage=wants_usage(shape.body))
    except (orjson.JSONDecodeError, StreamError) as exc:
        message = f"the recorded answer could not be streamed: {exc}"
        await conn.send_json(502, error_body(message, "server_error", "bad_recording"))
        return
    if answer.fail == "cut":
        body = body[: len(body) // 2]
    chunks = _chunked(body, shape)
    pace = sum(answer.delays)
    answer.chunks, answer.delays = chunks, [pace] + [0.0] * (len(chunks) - 1)
    answer.headers = {k: v for k, v in answer.headers.items() if k.lower() not in ("content-type",)}
    await send_stream(conn, answer)


def _chunked(body: bytes, shape: Shape) -> list[bytes]:
    mode = "events" if shape.chunking == "recorded" else shape.chunking
    return rechunk([body], mode, seed=shape.seed)


def _without_usage(answer: Answer, shape: Shape) -> Answer:
    """The Chat stream without its usage-only chunk, which the request did not ask for."""
    events = split_events(b"".join(answer.chunks))
    kept = [e for e in events if not _usage_only(e)]
    if len(kept) == len(events):
        return answer
    chunks = _chunked(b"".join(kept), shape)
    pace = sum(answer.delays)
    answer.chunks, answer.delays = chunks, [pace] + [0.0] * (len(chunks) - 1)
    return answer


def _usage_only(event: bytes) -> bool:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                return False
            return (
                isinstance(data, dict)
                and data.get("choices") == []
                and isinstance(data.get("usage"), dict)
            )
    return False


def divergence_body(divergence: ReplayDivergence) -> dict[str, Any]:
    """The 409 a strict server answers a request that differs from the recording."""

    def shown(value: Any) -> Any:
        return None if value is MISSING else value

    return {
        "error": {
            "type": "replay_divergence",
            "message": str(divergence),
            "path": divergence.path,
            "recorded": shown(divergence.recorded),
            "received": shown(divergence.actual),
            "param": None,
            "code": "replay_divergence",
        }
    }


def header_safe(path: str) -> str:
    """A JSON path fit for a header value: printable ASCII, the rest percent-escaped."""
    return quote(path, safe="[]._-:$@!*'(),;=+/~") or "<request>"
