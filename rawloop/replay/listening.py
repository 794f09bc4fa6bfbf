"""Listening: accepting connections within limits, and running a server in the foreground.

``serve_listener`` accepts connections and hands each to a handler, at most
``max_connections`` at once (the rest wait in the kernel's backlog) and at
most ``max_per_client`` from one client address: a client past its share
gets a short 503 (``send_raw``) and is closed, so that one client, however
many sockets it opens, cannot take every slot. ``Server`` and
``run_foreground`` are what ``rawloop serve`` and ``rawloop record`` share:
a TCP socket bound once, served until SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import anyio
import anyio.abc
import orjson

__all__ = [
    "DEFAULT_MAX_PER_CLIENT",
    "Server",
    "error_body",
    "run_foreground",
    "send_raw",
    "serve_listener",
]

logger = logging.getLogger("rawloop.server")  # the server's log: one access log for all

#: Connections one client address may hold at once.
DEFAULT_MAX_PER_CLIENT = 256

# The client went away: nobody's error.
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


async def serve_listener(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    handle: Callable[[anyio.abc.SocketStream], Awaitable[None]],
    max_connections: int,
    *,
    max_per_client: int | None = None,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections until cancelled, ``max_connections`` served at once; closes ``listener``.

    One client address holds at most ``max_per_client`` of them (by default
    ``DEFAULT_MAX_PER_CLIENT``, a quarter of the servers' default
    ``max_connections``): its next ones get a 503 and are closed.
    ``task_status.started(port)`` once accepting.
    """
    limit = anyio.Semaphore(max_connections)
    per_client = DEFAULT_MAX_PER_CLIENT if max_per_client is None else max_per_client
    open_by: dict[str, int] = {}
    refusing = 0
    warned: set[str] = set()  # clients told about in the log, until they fall back under the cap

    async def bounded(stream: anyio.abc.SocketStream, client: str) -> None:
        try:
            await handle(stream)
        finally:
            limit.release()
            open_by[client] -= 1
            if not open_by[client]:
                del open_by[client]
            if open_by.get(client, 0) < per_client:
                warned.discard(client)

    async def refuse(stream: anyio.abc.SocketStream, client: str) -> None:
        nonlocal refusing
        refusing += 1
        try:
            # Said briefly, without reading the request: its sender is holding too many.
            message = f"too many connections from one client (at most {per_client})"
            await send_raw(stream, 503, message, "too_many_connections")
        finally:
            refusing -= 1

    async def accept(part: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        assert isinstance(part, anyio.abc.SocketListener)
        while True:
            await limit.acquire()
            try:
                stream = await part.accept()
            except OSError as exc:  # out of file descriptors, say: wait, and go on serving
                limit.release()
                logger.warning("accepting a connection failed: %s", exc)
                await anyio.sleep(0.1)
                continue
            except BaseException:
                limit.release()
                raise
            client = _client_of(stream)
            if open_by.get(client, 0) >= per_client:
                limit.release()
                if client not in warned:  # once per episode: a flood must not flood the log
                    warned.add(client)
                    logger.warning(
                        "refusing connections from %s: it holds %d (max_per_client)",
                        client or "an unknown address",
                        per_client,
                    )
                if refusing < per_client:
                    group.start_soon(refuse, stream, client)
                else:  # a flood: no answer at all
                    await anyio.aclose_forcefully(stream)
                continue
            open_by[client] = open_by.get(client, 0) + 1
            group.start_soon(bounded, stream, client)

    try:
        async with anyio.create_task_group() as group:
            for part in getattr(listener, "listeners", [listener]):  # a MultiListener's parts
                group.start_soon(accept, part)
            task_status.started(int(listener.extra(anyio.abc.SocketAttribute.local_port)))
    finally:
        await anyio.aclose_forcefully(listener)


def _client_of(stream: anyio.abc.SocketStream) -> str:
    """The peer's address without its port: what one client is."""
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return ""
    return str(address[0]) if isinstance(address, tuple) else str(address)


async def send_raw(stream: anyio.abc.ByteStream, status: int, message: str, code: str) -> None:
    """An error answer written without h11 (which has no request to answer), then close.

    For a client that is refused before its request was read, or whose head
    never came whole; it gets one short try, then the connection is closed.
    """
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = orjson.dumps(error_body(f"rawloop: {message}", kind, code))
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    try:
        with anyio.move_on_after(1.0):
            await stream.send(head.encode("ascii") + body)
    except _GONE:
        pass
    finally:
        await anyio.aclose_forcefully(stream)


def error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# -- a server, and serving it in the foreground ------------------------------------------------


class Server:
    """A server on a TCP socket: ``ReplayServer`` and ``RecordingProxy``.

    A subclass sets ``host``, ``port`` and ``_listener`` (None) and defines
    ``serve``, which takes the socket with ``_take_listener``.
    """

    host: str
    port: int
    _listener: anyio.abc.Listener[anyio.abc.SocketStream] | None

    async def bind(self) -> int:
        """Open the listening socket (``serve`` does it if needed); returns the port."""
        if self._listener is None:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            self._listener = listener
            self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
        return self.port

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``task_status.started(port)`` once listening."""
        raise NotImplementedError

    async def _take_listener(self) -> anyio.abc.Listener[anyio.abc.SocketStream]:
        """The socket ``bind`` opened (opening it if needed), now the caller's to serve."""
        await self.bind()
        listener, self._listener = self._listener, None
        assert listener is not None
        return listener


def run_foreground(
    server: Server,
    *,
    label: str,
    host: str,
    port: int,
    logger: logging.Logger,
    listening: Callable[[int], str],
    stopping: Callable[[], str],
) -> int:
    """Serve ``server`` until SIGINT or SIGTERM, for a command named ``label``.

    Unless the program configured ``logging``, ``logger`` writes
    ``LABEL: MESSAGE`` lines to stderr for the duration (at INFO if it has no
    level). Once listening, writes ``LABEL: listening(port)`` to stderr; on a
    signal ``LABEL: SIGTERM: shutting down (stopping())``. Returns 2 when the
    address cannot be bound (having said so), else 0.
    """
    handler: logging.Handler | None = None
    level = logger.level
    if not logging.getLogger().handlers:  # nobody configured logging: show the access log
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{label}: %(message)s"))
        logger.addHandler(handler)
        if level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    try:
        anyio.run(_serve_until_signalled, server, label, listening, stopping)
    except OSError as exc:
        sys.stderr.write(f"{label}: error: cannot listen on {host}:{port}: {exc}\n")
        return 2
    except KeyboardInterrupt:  # where signal receivers are not supported
        sys.stderr.write(f"{label}: interrupted\n")
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return 0


async def _serve_until_signalled(
    server: Server, label: str, listening: Callable[[int], str], stopping: Callable[[], str]
) -> None:
    port = await server.bind()
    async with anyio.create_task_group() as group:
        await group.start(server.serve)
        sys.stderr.write(f"{label}: {listening(port)}\n")
        sys.stderr.flush()
        if sys.platform == "win32":  # no signal receivers there: Ctrl+C raises KeyboardInterrupt
            await anyio.sleep(math.inf)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                sys.stderr.write(
                    f"{label}: {signal.Signals(signum).name}: shutting down ({stopping()})\n"
                )
                group.cancel_scope.cancel()
                break
