"""The HTTP/1.1 shell of the replay server: sockets in, requests out, answers back.

Theory of operation. ``serve_listener`` (in ``.listening``, with ``Server``
and ``run_foreground``; all three are named here too) accepts connections
within its limits and hands each socket to a handler, normally
``serve_connection``. That one drives an
``h11.Connection`` over the socket, the pattern of the h11 docs: feed it
what arrives, act on the events it gives back. It hands each request head to
the application's ``handle(conn, request)``, which reads the body
(``Connection.read_body``: the size limit, ``Expect: 100-continue``) and
answers with the ``send_*`` methods. Once request and answer are both
complete the connection goes round again (keep-alive, pipelining); if the
answer was cut on purpose (``Connection.abort``) or either side wants to
close, it is closed.

Every wait has a deadline (``timeout``: a client that sends nothing, or
stops reading). A malformed request gets a 400 and a closed connection, an
exception in the application a 500 if nothing was sent yet; a client going
away is nobody's error. Error bodies are OpenAI-shaped, for the SDKs'
sake. Nothing here logs or keeps a request header.

Slow clients. A per-read timeout alone lets a client that trickles one byte
just inside it hold a connection for ever, and enough of them hold every
slot (slowloris). So the whole request head has a deadline
(``head_timeout``), counted from the accept on a fresh connection and from
its first byte on a kept-alive one (an idle kept-alive connection has
``timeout``); the body must come at ``min_body_rate`` bytes a second on
average after a grace of ``head_timeout`` (mod_reqtimeout's rule); and one
client address holds at most ``max_per_client`` connections (the next ones
get a 503 and are closed). A head too slow gets a 408.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
import orjson

from .listening import Server, error_body, run_foreground, send_raw, serve_listener

__all__ = [
    "DEFAULT_HEAD_TIMEOUT",
    "DEFAULT_MIN_BODY_RATE",
    "Connection",
    "Server",
    "TooLarge",
    "clean_headers",
    "error_body",
    "json_headers",
    "refuse_tunnels",
    "request_path",
    "run_foreground",
    "serve_connection",
    "serve_listener",
]

logger = logging.getLogger("rawloop.server")  # the server's log: one access log for all

#: Seconds for a whole request head (and the grace before the body rate counts).
DEFAULT_HEAD_TIMEOUT = 20.0
#: Bytes a second a request body must average, after the grace.
DEFAULT_MIN_BODY_RATE = 500.0

_MAX_HEADER_SIZE = 64 * 1024
_READ_SIZE = 64 * 1024
_LINGER_BYTES = 16 * 1024 * 1024

# Hop-by-hop and framing headers: a recorded connection's, never an answer's.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "te",
        "trailer",
        "upgrade",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# The client went away: nobody's error.
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class TooLarge(Exception):
    """The request body is over the limit given to ``Connection.read_body``."""


class Connection:
    """An anyio byte stream driven by an ``h11.Connection``, one request at a time."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        timeout: float,
        *,
        head_timeout: float = DEFAULT_HEAD_TIMEOUT,
        min_body_rate: float = DEFAULT_MIN_BODY_RATE,
    ) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_SIZE)
        self.timeout = timeout
        self.head_timeout = head_timeout
        self.min_body_rate = min_body_rate
        self.aborted = False  # the answer broke the connection on purpose
        self.head = False  # the request is a HEAD: headers only

    # -- receiving ------------------------------------------------------------------------

    async def next_event(self, deadline: float | None = None) -> Any:
        """The next h11 event, reading as needed.

        ``TimeoutError`` after ``timeout`` of silence, or once the clock
        (``anyio.current_time()``) passes ``deadline``.
        """
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            self.h11.receive_data(await self._receive(deadline))
        return event

    async def next_request(self, *, fresh: bool) -> Any:
        """The next request head (or whatever else h11 has): the head within ``head_timeout``.

        On a ``fresh`` connection the deadline runs from now; on a kept-alive
        one, silence is allowed up to ``timeout`` and the deadline runs from
        the first byte. ``TimeoutError`` when either runs out.
        """
        deadline: float | None = None
        if fresh or self.h11.trailing_data[0]:
            deadline = anyio.current_time() + self.head_timeout
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            data = await self._receive(deadline)
            if deadline is None:
                deadline = anyio.current_time() + self.head_timeout
            self.h11.receive_data(data)
        return event

    async def _receive(self, deadline: float | None) -> bytes:
        wait = self.timeout
        if deadline is not None:
            wait = min(wait, deadline - anyio.current_time())
            if wait <= 0:
                raise TimeoutError
        with anyio.fail_after(wait):
            try:
                return await self.stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                return b""

    async def read_body(self, request: h11.Request, limit: int) -> bytes:
        """The whole request body; ``TooLarge`` above ``limit`` bytes (announced or sent)."""
        # h11 has checked that every Content-Length is digits, and that they agree.
        length = next((int(v) for k, v in request.headers if k == b"content-length"), None)
        if length is not None and length > limit:
            raise TooLarge
        if self.h11.they_are_waiting_for_100_continue:
            await self.send(
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            )
        parts: list[bytes] = []
        size = 0
        started = anyio.current_time()
        while True:
            # Each byte buys 1/min_body_rate s more: a slow body is cut, a big one is not.
            deadline = started + self.head_timeout + size / self.min_body_rate
            event = await self.next_event(deadline)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise TooLarge
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:  # ConnectionClosed mid-body
                raise anyio.EndOfStream

    # -- sending --------------------------------------------------------------------------

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            with anyio.fail_after(self.timeout):  # a client that stopped reading
                await self.stream.send(data)

    async def send_head(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """The status line and headers, with the standard reason phrase."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        await self.send(h11.Response(status_code=status, headers=list(headers), reason=reason))

    async def send_data(self, data: bytes) -> None:
        """One piece of the body: one write (and one HTTP chunk when chunked)."""
        if data and not self.head:
            await self.send(h11.Data(data=data))

    async def end(self) -> None:
        await self.send(h11.EndOfMessage())

    def abort(self) -> None:
        """Leave the answer unfinished: the connection is closed (reset) after the handler."""
        self.aborted = True

    async def send_bytes(
        self,
        status: int,
        data: bytes,
        headers: Sequence[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        """A whole JSON answer with its Content-Length (``close``: and ``Connection: close``)."""
        all_headers = json_headers(data, headers)
        if close:
            all_headers.append(("connection", "close"))
        await self.send_head(status, all_headers)
        await self.send_data(data)
        await self.end()

    async def send_json(
        self,
        status: int,
        payload: Any,
        headers: Sequence[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        await self.send_bytes(status, orjson.dumps(payload), headers, close=close)

    async def send_error(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None,
        *,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        """An OpenAI-shaped error answer."""
        body = error_body(message, type_, code, param)
        await self.send_json(status, body, headers, close=close)

    async def linger(self) -> None:
        """Close after an early answer without a reset: stop sending, drain what still comes."""
        self.abort()
        try:
            await self.stream.send_eof()
            with anyio.move_on_after(min(self.timeout, 2.0)):
                drained = 0
                while drained < _LINGER_BYTES:
                    drained += len(await self.stream.receive(_READ_SIZE))
        except _GONE:
            pass

    @property
    def can_answer(self) -> bool:
        """Nothing of an answer has been sent yet, so an error answer still fits."""
        return not self.aborted and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)


async def serve_connection(
    stream: anyio.abc.ByteStream,
    timeout: float,
    handle: Callable[[Connection, h11.Request], Awaitable[None]],
    *,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    min_body_rate: float = DEFAULT_MIN_BODY_RATE,
) -> None:
    """Serve the requests of one connection until either side closes; then close it.

    ``timeout`` is the longest silence; ``head_timeout`` and ``min_body_rate``
    bound slow requests (see the module's docstring).
    """
    conn = Connection(stream, timeout, head_timeout=head_timeout, min_body_rate=min_body_rate)
    fresh = True
    try:
        while True:
            try:
                event = await conn.next_request(fresh=fresh)
            except TimeoutError:
                if conn.h11.trailing_data[0]:  # part of a head came: tell a slow client why
                    await send_raw(stream, 408, "the request head took too long", "request_timeout")
                return  # idle: close quietly
            fresh = False
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed (or a peer that misbehaves)
            conn.head = event.method == b"HEAD"
            await handle(conn, event)
            if conn.aborted or conn.h11.our_state is not h11.DONE:
                return
            if conn.h11.their_state is not h11.DONE:
                return
            conn.h11.start_next_cycle()
    except h11.RemoteProtocolError as exc:
        if conn.can_answer:
            with contextlib.suppress(*_GONE, h11.ProtocolError):
                await conn.send_error(
                    exc.error_status_hint,
                    f"malformed HTTP request: {exc}",
                    "invalid_request_error",
                    "bad_request",
                    close=True,
                )
    except _GONE:  # TimeoutError included: a client that stopped reading
        pass
    except Exception:
        logger.exception("internal error while serving a connection")
        if conn.can_answer:
            with contextlib.suppress(Exception):
                await conn.send_error(
                    500, "internal error in the rawloop server", "server_error", None, close=True
                )
    finally:
        await anyio.aclose_forcefully(stream)


# -- request and header helpers ------------------------------------------------------------


async def refuse_tunnels(conn: Connection, request: h11.Request, label: str) -> int:
    """Answer a ``CONNECT`` (405) or an ``Upgrade`` (501) request and close; 0 for any other.

    Neither can be relayed answer by answer, nor recorded; and h11 would
    switch protocols under the server on a 2xx to ``CONNECT``. The caller
    logs the status returned.
    """
    if request.method == b"CONNECT":
        status, headers = 405, [("allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]
        message = (
            f"{label} is not a forward proxy: set the client's base URL to it "
            "(http://HOST:PORT/v1) instead of using it as an HTTP(S) proxy"
        )
    else:
        upgrade = next((v for k, v in request.headers if k == b"upgrade"), None)
        if upgrade is None:
            return 0
        status, headers = 501, []
        message = (
            f"{label} does not take protocol upgrades (Upgrade: "
            f"{upgrade.decode('latin-1')[:40]!r}): plain HTTP/1.1 requests only"
        )
    await conn.send_error(
        status, message, "invalid_request_error", "unsupported", headers=headers, close=True
    )
    await conn.linger()  # a body may follow the head: drain it rather than reset
    return status


def request_path(request: h11.Request) -> tuple[str, str]:
    """(method, path): the path without query, trailing slash, or a proxy's scheme and host."""
    method = request.method.decode("ascii", "replace")
    target = request.target.decode("ascii", "replace")
    if "://" in target:  # absolute form, as sent to a proxy
        target = urlsplit(target).path or "/"
    path = target.split("?", 1)[0]
    return method, path.rstrip("/") if len(path) > 1 else path


def clean_headers(recorded: dict[str, str]) -> list[tuple[str, str]]:
    """Recorded headers fit to send: no hop-by-hop or framing ones, nothing h11 would refuse."""
    out: list[tuple[str, str]] = []
    for name, value in recorded.items():
        name, value = str(name).lower(), str(value)
        if name in _HOP_BY_HOP or not _TOKEN.match(name):
            continue
        if any(c in value for c in "\r\n\0") or not value.isascii():
            continue
        out.append((name, value))
    return out


def json_headers(data: bytes, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with the JSON content type and the Content-Length of ``data``."""
    return [
        ("content-type", "application/json"),
        *((k, v) for k, v in headers if k not in ("content-type", "content-length")),
        ("content-length", str(len(data))),
    ]
