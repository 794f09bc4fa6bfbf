"""The I/O shell: one streamed HTTP exchange, bytes handed to the sans-IO core.

This is the only module of the loop that touches the network or reads the
clock. It fires the wire-level hooks (request, response, chunk, event) and
turns transport failures into rawloop's typed errors, each carrying the
partial turn of whatever arrived.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx
import orjson

from ..core.dialect import Dialect
from ..core.errors import APIConnectionError, APIStatusError, ConfigurationError, StreamError
from ..core.parse import StreamParser
from ..core.redact import redact_headers, redact_text
from ..core.turn import Turn
from .hooks import ChunkInfo, EventInfo, HookBus, RequestInfo, ResponseInfo

__all__ = ["api_status_error", "open_client", "stream_turn"]

# How much of an error body to keep: enough for any API error object.
_MAX_ERROR_BODY = 64 * 1024


async def stream_turn(
    client: httpx.AsyncClient,
    *,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    dialect: Dialect,
    bus: HookBus,
    iteration: int,
    attempt: int,
    timeout: httpx.Timeout | None = None,
) -> Turn:
    """POST ``body`` and stream the answer into a Turn.

    ``timeout`` replaces the client's own for this request: its ``read`` is the
    longest silence allowed while waiting for the headers or between two chunks.

    Raises ``APIStatusError`` for a non-2xx answer, ``APIConnectionError`` when
    the connection fails, stalls or drops mid-stream, and ``StreamError``
    subclasses when the stream cannot be understood (``IncompleteStream`` when
    it ends before a terminal event). Stream errors carry the partial turn.
    """
    raw_body = orjson.dumps(body)
    try:
        request = client.build_request(
            "POST",
            url,
            headers=headers,
            content=raw_body,
            timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
        )
    except httpx.InvalidURL as exc:  # not an HTTPError: the base URL itself is unusable
        raise ConfigurationError(f"cannot send a request to {url!r}: {exc}") from exc
    if bus.has("on_request"):
        await bus.emit(
            "on_request",
            RequestInfo(
                iteration,
                attempt,
                str(body.get("model", "")),
                request.method,
                str(request.url),
                redact_headers(request.headers.multi_items()),
                raw_body,
                body,
            ),
            iteration=iteration,
            attempt=attempt,
        )
    started = time.monotonic()
    try:
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise APIConnectionError(
            f"request to {request.url} failed: {_describe(exc, request, 'waiting for the answer')}"
        ) from exc
    # Deltas are only for on_event hooks; without one, building them is waste.
    parser = StreamParser(dialect.name, deltas=bus.has("on_event"))
    try:
        response_headers = redact_headers(response.headers.multi_items())
        request_id = response.headers.get("x-request-id")
        if bus.has("on_response"):
            await bus.emit(
                "on_response",
                ResponseInfo(
                    iteration,
                    attempt,
                    response.status_code,
                    response_headers,
                    request_id,
                    time.monotonic() - started,
                ),
                iteration=iteration,
                attempt=attempt,
            )
        if response.status_code >= 300:
            raise await _status_error(
                response, response_headers, request_id, bus, iteration, attempt, started
            )
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            try:
                excerpt = (await response.aread())[:500].decode(errors="replace")
            except httpx.HTTPError as exc:
                raise APIConnectionError(
                    f"the {content_type or 'untyped'} answer from {request.url} broke before "
                    f"its end: {_describe(exc, request, 'reading the answer')}"
                ) from exc
            raise StreamError(
                f"expected a text/event-stream answer, got {content_type or 'no content type'}: "
                f"{redact_text(excerpt)!r}"
            )
        on_chunk = bus.has("on_chunk")
        on_event = bus.has("on_event")
        offset = 0
        try:
            async for chunk in response.aiter_bytes():
                if on_chunk:
                    await bus.emit(
                        "on_chunk",
                        ChunkInfo(iteration, attempt, chunk, offset, time.monotonic() - started),
                        iteration=iteration,
                        attempt=attempt,
                    )
                offset += len(chunk)
                if not on_event:
                    parser.feed(chunk)
                    continue
                for event, payload, deltas in parser.feed_events(chunk):
                    await bus.emit(
                        "on_event",
                        EventInfo(iteration, attempt, event, payload, deltas),
                        iteration=iteration,
                        attempt=attempt,
                    )
        except httpx.HTTPError as exc:
            raise APIConnectionError(
                f"the stream from {request.url} broke after {offset} bytes: "
                f"{_describe(exc, request, 'waiting for the next chunk')}",
                partial=parser.partial_turn(),
            ) from exc
        return parser.close()
    except StreamError as exc:
        if exc.partial is None:
            exc.partial = parser.partial_turn()
        raise
    finally:
        await response.aclose()


async def _status_error(
    response: httpx.Response,
    headers: dict[str, str],
    request_id: str | None,
    bus: HookBus,
    iteration: int,
    attempt: int,
    started: float,
) -> APIStatusError:
    # The error body goes through on_chunk too: a trace must hold it for replay.
    body = b""
    try:
        async for chunk in response.aiter_bytes():
            if bus.has("on_chunk"):
                await bus.emit(
                    "on_chunk",
                    ChunkInfo(iteration, attempt, chunk, len(body), time.monotonic() - started),
                    iteration=iteration,
                    attempt=attempt,
                )
            body += chunk
            if len(body) >= _MAX_ERROR_BODY:
                break
    except httpx.HTTPError:
        pass  # the status says enough
    return api_status_error(response.status_code, body, request_id, headers)


def api_status_error(
    status: int, body: bytes, request_id: str | None, headers: dict[str, str]
) -> APIStatusError:
    """The error for a non-success answer: ``HTTP <status> (request id <id>): <detail>``.

    The detail is the body's ``error.message``, or the start of a body that is
    not JSON; the message is redacted. ``headers`` should already be redacted.
    """
    detail = ""
    try:
        parsed = orjson.loads(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and error.get("message"):
            detail = f": {error['message']}"
    except orjson.JSONDecodeError:
        detail = f": {body[:200].decode(errors='replace')}" if body else ""
    rid = f" (request id {request_id})" if request_id else ""
    return APIStatusError(
        redact_text(f"HTTP {status}{rid}{detail}"),
        status=status,
        body=body,
        request_id=request_id,
        headers=headers,
    )


def _describe(exc: BaseException, request: httpx.Request, waiting: str) -> str:
    """What went wrong; a timeout says which wait stalled and the limit it hit."""
    if isinstance(exc, httpx.TimeoutException):
        limits: dict[str, float | None] = request.extensions.get("timeout") or {}
        if isinstance(exc, httpx.ConnectTimeout):
            return f"stalled: no connection within {_secs(limits.get('connect'))} (connect_timeout)"
        if isinstance(exc, httpx.ReadTimeout):
            return f"stalled: no data for {_secs(limits.get('read'))} {waiting} (read_timeout)"
        if isinstance(exc, httpx.WriteTimeout):
            return f"stalled: the request could not be sent within {_secs(limits.get('write'))}"
    text = str(exc)
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:g} s"


def open_client(http_client: httpx.AsyncClient | None, timeout: httpx.Timeout) -> Any:
    """``async with`` this for the client to send with: ``http_client`` (left open) or a new one."""
    if http_client is not None:
        return contextlib.nullcontext(http_client)
    return httpx.AsyncClient(timeout=timeout)
