"""Plain ASGI 3 plumbing for ``rawloop.serve.app``: bodies, JSON answers, event streams.

No web framework: an ASGI application is ``async (scope, receive, send)``,
and the few things the agent endpoints need are here, each one small:

* ``read_body`` reads a request body up to a size limit (413 past it);
* ``send_json`` answers with a JSON document (errors are
  ``{"error": {"type", "message", "field"}}``, see ``HTTPProblem``);
* ``until_disconnect`` runs some work and cancels it when the client goes
  away (``http.disconnect``), for answers that are not streamed;
* ``serve_events`` answers with Server-Sent Events. Four tasks share one
  anyio task group: the producer (the run, pushing events into a memory
  object stream), the writer (the stream to the client), the heartbeat (a
  ``: heartbeat`` comment whenever nothing was written for ``heartbeat``
  seconds) and the watcher (``receive()`` until ``http.disconnect``). A
  disconnect, or a failed write, cancels the group and so the producer.

ASGI allows one ``send`` at a time, so the writer and the heartbeat take a
lock around it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import orjson

from ..core.errors import RawloopError

__all__ = [
    "MAX_BODY_SIZE",
    "ASGIApp",
    "ClientDisconnected",
    "Emit",
    "HTTPProblem",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "error_document",
    "header",
    "read_body",
    "route_path",
    "send_json",
    "serve_events",
    "sse_event",
    "until_disconnect",
]

#: The largest request body read by default (413 past it).
MAX_BODY_SIZE = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``await emit(event_name, data)``: one Server-Sent Event to the client.
Emit = Callable[[str, Any], Awaitable[None]]

T = TypeVar("T")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Proxies (nginx) must pass each event on at once.
    (b"x-accel-buffering", b"no"),
]
HEARTBEAT = b": heartbeat\n\n"


class HTTPProblem(RawloopError):
    """A request the app refuses: the status to answer and what, or which field, was wrong."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        type: str = "invalid_request",
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.type = type
        self.headers = list(headers)

    def document(self) -> dict[str, Any]:
        """The JSON error body."""
        return error_document(self.message, field=self.field, type=self.type)


class ClientDisconnected(Exception):
    """The client went away (``http.disconnect``) before the request body was read."""


def error_document(
    message: str, *, field: str | None = None, type: str = "error"
) -> dict[str, Any]:
    """``{"error": {"type": ..., "message": ..., "field": ...}}``."""
    return {"error": {"type": type, "message": message, "field": field}}


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``), as Starlette computes it."""
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root):
        rest = path[len(root) :]
        if not rest:
            return "/"
        if rest.startswith("/"):
            return rest
    return path


def header(scope: Scope, name: bytes) -> str | None:
    """The last value of request header ``name`` (lower-case bytes), decoded as latin-1."""
    found: str | None = None
    for key, value in scope.get("headers") or ():
        if bytes(key).lower() == name:
            found = bytes(value).decode("latin-1")
    return found


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; ``HTTPProblem(413)`` past ``limit`` bytes.

    Raises ``ClientDisconnected`` when the client leaves before the end.
    """
    declared = header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "http.disconnect":
            raise ClientDisconnected("the client disconnected while sending the body")
        if kind != "http.request":
            continue
        chunk = bytes(message.get("body") or b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(
        413, f"the request body is larger than {limit} bytes", type="request_too_large"
    )


async def send_json(
    send: Send,
    status: int,
    document: Any,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with ``document`` as JSON."""
    body = orjson.dumps(document)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def sse_event(event: str, data: Any) -> bytes:
    """One Server-Sent Event: ``event: NAME`` and one ``data:`` line of compact JSON.

    orjson never writes a raw newline, so the data always fits on one line.
    """
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def until_disconnect(
    receive: Receive, work: Callable[[], Awaitable[T]]
) -> tuple[bool, T | None]:
    """Run ``work()`` while watching ``receive()``; a disconnect cancels it.

    Returns ``(True, value)`` when the work finished, ``(False, None)`` when
    the client went away first. The work's exceptions propagate.
    """
    outcome: list[T] = []
    failure: list[Exception] = []

    async with anyio.create_task_group() as group:

        async def run() -> None:
            try:
                outcome.append(await work())
            except Exception as exc:  # raised below, not as an exception group
                failure.append(exc)
            group.cancel_scope.cancel()

        async def watch() -> None:
            await _wait_for_disconnect(receive)
            group.cancel_scope.cancel()

        group.start_soon(run)
        group.start_soon(watch)
    if failure:
        raise failure[0]
    return (True, outcome[0]) if outcome else (False, None)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


@dataclass
class _Writer:
    """Serialises ``send`` and remembers when the client last got anything."""

    send: Send
    lock: anyio.Lock
    last: float = 0.0
    broken: bool = False

    async def write(self, data: bytes) -> bool:
        """Send one body chunk; False (and ``broken``) when the client cannot take it."""
        async with self.lock:
            if self.broken:
                return False
            try:
                await self.send({"type": "http.response.body", "body": data, "more_body": True})
            except OSError:  # uvicorn's ClientDisconnected is an OSError
                self.broken = True
                return False
            self.last = anyio.current_time()
            return True


async def serve_events(
    receive: Receive,
    send: Send,
    produce: Callable[[Emit], Awaitable[None]],
    *,
    heartbeat: float = 15.0,
    buffer: int = 256,
) -> bool:
    """Answer with an event stream fed by ``produce(emit)``.

    ``produce`` calls ``await emit(name, data)`` for each event and returns
    when it is done; it should report its own failures as events (an
    exception that escapes it is sent as ``event: error`` and re-raised only
    if it is not an ``Exception``). ``buffer`` events may wait for a slow
    client before ``emit`` blocks (back-pressure on the run). Returns False
    when the client disconnected (the producer was then cancelled), True when
    the stream was written to the end.
    """
    await send({"type": "http.response.start", "status": 200, "headers": list(_SSE_HEADERS)})
    writer = _Writer(send, anyio.Lock(), anyio.current_time())
    outbox, inbox = anyio.create_memory_object_stream[bytes](buffer)
    state = {"finished": False}

    async def emit(event: str, data: Any) -> None:
        # When the writer is gone, the group is being cancelled: drop the event.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await outbox.send(sse_event(event, data))

    async with anyio.create_task_group() as group:

        async def run_producer() -> None:
            async with outbox:
                try:
                    await produce(emit)
                except Exception as exc:
                    await emit("error", {"type": type(exc).__name__, "message": str(exc)})

        async def write_events() -> None:
            async with inbox:
                async for data in inbox:
                    if not await writer.write(data):
                        group.cancel_scope.cancel()
                        return
            async with writer.lock:
                if not writer.broken:
                    try:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        state["finished"] = True
                    except OSError:
                        pass
            group.cancel_scope.cancel()

        async def beat() -> None:
            if not heartbeat or heartbeat <= 0 or math.isinf(heartbeat):
                return
            while True:
                await anyio.sleep(max(writer.last + heartbeat - anyio.current_time(), 0.0))
                if anyio.current_time() - writer.last >= heartbeat and not await writer.write(
                    HEARTBEAT
                ):
                    group.cancel_scope.cancel()
                    return

        async def watch() -> None:
            await _wait_for_disconnect(receive)
            group.cancel_scope.cancel()

        group.start_soon(run_producer)
        group.start_soon(write_events)
        group.start_soon(beat)
        group.start_soon(watch)
    # Once the last byte is out, a disconnect seen by the watcher is just the end.
    return state["finished"]
