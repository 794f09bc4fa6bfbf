"""``rawloop record``: a recording reverse proxy that writes wire traces of any client.

Point a client (the official SDKs, curl, an app, a rawloop ``Loop``) at
``http://127.0.0.1:PORT/v1`` and every request goes on to the upstream API;
every answer comes back as it arrives, and each tool-loop run is written to
its own trace in the output directory, in rawloop's trace format, ready for
``rawloop show``, ``replay`` and ``diff``.

Theory of operation. ``rawloop.replay.loopback`` accepts connections and parses the
client's requests. Each request is sent on to ``{upstream}{path}`` with
httpx: the client's headers pass through except the hop-by-hop ones,
``host`` and ``accept-encoding`` (the proxy asks for ``identity``, so the
recorded chunks are the server's own bytes). The answer's status and headers
(less hop-by-hop and framing ones) go back at once, then each chunk as it
arrives, one write each: nothing is buffered. Only after a chunk is handed to
the client is it written to the trace.

What is recorded: every ``POST`` to ``…/responses`` or ``…/chat/completions``
with a JSON object body; anything else (``GET /v1/models``...) is passed
through and not recorded. ``rawloop.capture.proxy_runs`` decides which run a request
belongs to (a retry, the next iteration of an open run, or a new run) and
writes it with a ``TraceRecorder``: ``request``, ``response``, ``chunk``,
``decision`` (parsed as the stream goes; a non-streamed JSON answer too),
``result`` (the tool outputs the next request carries back), ``error`` and
``end``. Credentials never reach the disk: ``authorization`` and the other
default headers are redacted, and ``redact_headers`` names more.

If the upstream cannot be reached the client gets a 502 (504 on a timeout)
with an OpenAI-shaped error body, and the trace an ``error`` record. If the
upstream breaks mid-answer the client's connection is broken too, so that it
sees what it would have seen. When the proxy stops, runs still open get an
``end`` record with ``recording-stopped`` and every file is closed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import h11
import httpx
import orjson

from ..core.addresses import is_loopback_host
from ..core.dialect import api_root, dialect_of_path
from ..core.errors import APIConnectionError, ConfigurationError, RawloopError
from ..core.redact import redact_text
from ..core.words import plural
from ..replay.loopback import (
    Connection,
    Server,
    TooLarge,
    refuse_tunnels,
    run_foreground,
    serve_connection,
    serve_listener,
)
from ..trace.live import LiveTimeline
from ..trace.recorder import Redactor
from .proxy_http import answer_headers, forward_headers, request_target, upstream_client
from .proxy_runs import DEFAULT_MAX_RUNS, Attempt, RunTable

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_SIZE",
    "DEFAULT_PORT",
    "RecordingProxy",
    "add_record_command",
    "run_proxy",
]

logger = logging.getLogger("rawloop.proxy")

#: The port ``rawloop record`` listens on unless told (``rawloop serve`` has 8080).
DEFAULT_PORT = 8081
DEFAULT_MAX_CONNECTIONS = 1000
#: Seconds a client connection may sit silent between or inside its requests.
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_REQUEST_SIZE = 64 * 1024 * 1024
#: Upstream timeouts: model calls can think for minutes before the first byte.
DEFAULT_UPSTREAM_TIMEOUT = httpx.Timeout(600.0, connect=10.0)

# The client went away: nobody's error (TimeoutError: it stopped reading).
_GONE = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class RecordingProxy(Server):
    """A reverse proxy to ``upstream`` that records every model call as a trace in ``out``.

    Args:
        upstream: the API to forward to, e.g. ``https://api.openai.com``. A
            request for ``/v1/responses`` goes to ``{upstream}/v1/responses``;
            when ``upstream`` already ends in the request's first path
            segments (``https://api.openai.com/v1``) they are not repeated.
        out: the directory the traces go to, one file per run.
        host: the address to listen on (loopback by default).
        port: the port; 0 picks a free one (see ``port`` once bound).
        redact_headers: more header names to redact in traces (``authorization``,
            ``api-key``, cookies... always are).
        max_runs: runs kept open to be continued; past that the least recently
            used idle one ends with ``recording-stopped``.
        max_connections: client connections served at once.
        idle_timeout: seconds a client connection may stay silent.
        max_request_size: the largest request body accepted (413 above it).
        timeout: the upstream timeouts (``httpx.Timeout``).
        http_client: the client for upstream requests (left open); by default
            one of the proxy's own, closed when ``serve`` returns.
        metadata: goes into every trace header, after the proxy's own keys.

    ``requests`` counts requests forwarded, ``paths`` lists the trace files
    written so far, ``table`` is the ``RunTable`` of open runs.
    """

    def __init__(
        self,
        upstream: str,
        out: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        redact_headers: Sequence[str] = (),
        max_runs: int = DEFAULT_MAX_RUNS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        timeout: httpx.Timeout = DEFAULT_UPSTREAM_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"the upstream must be an http:// or https:// URL with a host, not {upstream!r}"
            )
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be at least 1, not {max_connections}")
        if idle_timeout <= 0:
            raise ConfigurationError(f"idle_timeout must be positive, not {idle_timeout}")
        if max_runs < 1:
            raise ConfigurationError(f"max_runs must be at least 1, not {max_runs}")
        self.upstream = upstream.rstrip("/")
        self._origin = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        self._prefix = parts.path.rstrip("/")
        self.out = Path(out)
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_request_size = max_request_size
        self.timeout = timeout
        shown = urlunsplit(
            (parts.scheme, parts.hostname + _port_of(parts.port), parts.path, "", "")
        )
        self.table = RunTable(
            self.out,
            redact=Redactor(headers=tuple(redact_headers)),
            metadata={"recorded_by": "rawloop record", "upstream": shown, **(metadata or {})},
            max_runs=max_runs,
        )
        self.requests = 0
        self._http_client = http_client
        self._client: httpx.AsyncClient | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    @property
    def paths(self) -> list[Path]:
        """The trace files written so far, in the order their runs started."""
        return list(self.table.paths)

    @property
    def url(self) -> str:
        """The base URL clients use: ``http://HOST:PORT/v1``."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/v1"

    # -- serving --------------------------------------------------------------------------

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Proxy and record until cancelled; then end the open runs. ``task_status.started(port)``."""
        listener = await self._take_listener()
        self._client = self._http_client or upstream_client(self.timeout)
        logger.debug("proxying %s -> %s, traces in %s", self.url, self.upstream, self.out)
        try:
            await serve_listener(
                listener, self._connection, self.max_connections, task_status=task_status
            )
        finally:
            self.close()
            if self._http_client is None:
                with anyio.CancelScope(shield=True):
                    await self._client.aclose()
            self._client = None

    def close(self) -> None:
        """End every open run with ``recording-stopped`` and close its file (``serve`` does)."""
        self.table.close(time.monotonic())

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        await serve_connection(stream, self.idle_timeout, self._request)

    # -- one request --------------------------------------------------------------------------

    async def _request(self, conn: Connection, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace")
        target = request_target(request)
        path = target.split("?", 1)[0]
        if refused := await refuse_tunnels(conn, request, "rawloop record"):  # CONNECT, Upgrade
            logger.info("%s %s -> %d (refused, not forwarded)", method, path, refused)
            return
        try:
            raw = await conn.read_body(request, self.max_request_size)
        except TooLarge:
            message = f"the request body is larger than this proxy accepts ({self.max_request_size} bytes)"
            await conn.send_error(
                413, message, "invalid_request_error", "request_too_large", close=True
            )
            logger.info("%s %s -> 413 (not forwarded)", method, path)
            await conn.linger()
            return
        self.requests += 1
        client = self._client
        assert client is not None
        url = self._upstream_url(target)
        try:
            upstream = client.build_request(
                method,
                url,
                headers=forward_headers(request.headers),
                content=raw if raw or method not in ("GET", "HEAD", "DELETE", "OPTIONS") else None,
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            message = f"rawloop record: cannot forward {target[:200]!r}: {exc}"
            await conn.send_error(400, message, "invalid_request_error", "invalid_url")
            logger.info("%s %s -> 400 (not forwarded)", method, path)
            return
        dialect = _dialect_of(method, path)
        body = _json_object(raw) if dialect is not None else None
        attempt: Attempt | None = None
        if dialect is not None and body is not None:
            now = time.monotonic()
            attempt = self.table.claim(dialect, body, base_url=api_root(url), now=now, raw=raw)
        status = await self._forward(conn, client, upstream, attempt)
        where = attempt.where if attempt is not None else "not recorded"
        logger.info("%s %s -> %s (%s)", method, path, status or "broken", where)

    async def _forward(
        self,
        conn: Connection,
        client: httpx.AsyncClient,
        request: httpx.Request,
        attempt: Attempt | None,
    ) -> int:
        """Send ``request`` upstream and stream the answer back; returns the status (0: broken).

        Whatever happens, ``attempt`` ends finished (``complete`` or ``broke``).
        """
        try:
            if attempt is not None:
                attempt.request(request.method, str(request.url), request.headers.multi_items())
            started = time.monotonic()
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                message = f"request to {request.url} failed: {_describe(exc)}"
                if attempt is not None:
                    attempt.broke(APIConnectionError(message), time.monotonic())
                status = 504 if isinstance(exc, httpx.TimeoutException) else 502
                code = "upstream_timeout" if status == 504 else "upstream_unreachable"
                await conn.send_error(status, f"rawloop record: {message}", "server_error", code)
                return status
            try:
                return await self._relay(conn, request, response, attempt, started)
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        finally:
            if attempt is not None and not attempt.finished:  # cancelled: the proxy is stopping
                error = APIConnectionError(
                    "the recording proxy stopped before the answer was whole"
                )
                attempt.broke(error, time.monotonic())

    async def _relay(
        self,
        conn: Connection,
        request: httpx.Request,
        response: httpx.Response,
        attempt: Attempt | None,
        started: float,
    ) -> int:
        status = response.status_code
        if attempt is not None:
            attempt.response(status, response.headers.multi_items(), time.monotonic() - started)
        sent = 0
        try:
            reason = response.extensions.get("reason_phrase") or b""
            head = h11.Response(
                status_code=status, headers=answer_headers(response.headers.raw), reason=reason
            )
            await conn.send(head)  # the upstream's reason phrase and headers, as bytes
            chunks = response.aiter_bytes()
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except httpx.HTTPError as exc:
                    message = (
                        f"the stream from {request.url} broke after {sent} bytes: {_describe(exc)}"
                    )
                    if attempt is not None:
                        attempt.broke(APIConnectionError(message), time.monotonic())
                    conn.abort()  # the client sees the break: no end of the chunked body
                    return 0
                elapsed = time.monotonic() - started
                try:
                    await conn.send_data(chunk)
                finally:  # written once the client has it (or when it could not take it)
                    if attempt is not None:
                        attempt.chunk(chunk, elapsed)
                sent += len(chunk)
            if attempt is not None:
                attempt.complete(time.monotonic())
            await conn.end()
        except _GONE:
            if attempt is not None:
                message = f"the client went away after {sent} bytes of the answer"
                attempt.broke(APIConnectionError(message), time.monotonic())
            raise
        return status

    def _upstream_url(self, target: str) -> str:
        path, sep, query = target.partition("?")
        prefix = self._prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            prefix = ""  # the client's base URL already holds the upstream's path: not twice
        return f"{self._origin}{prefix}{path}{sep}{query}"


# -- helpers ------------------------------------------------------------------------------------


def _port_of(port: int | None) -> str:
    return f":{port}" if port is not None else ""


def _dialect_of(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    return dialect_of_path(path)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# -- the command line -----------------------------------------------------------------------------


def run_proxy(
    upstream: str,
    out: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    redact_headers: Sequence[str] = (),
    max_runs: int = DEFAULT_MAX_RUNS,
    tail: bool = False,
) -> int:
    """``rawloop record``: proxy and record until SIGINT or SIGTERM.

    Prints ``rawloop record: proxying http://HOST:PORT/v1 -> UPSTREAM, traces
    in DIR`` to stderr once listening, then one line per request (method,
    path, status, trace file, iteration, attempt; never headers) unless the
    program configured ``logging`` itself. On a signal every open run gets
    its ``end`` record and every trace is closed. Returns the exit status: 0
    after a clean shutdown, 2 when an option is bad or the address cannot be
    bound. ``tail`` prints each run's timeline live to stdout (``LiveTimeline``).
    """
    try:
        proxy = RecordingProxy(
            upstream, out, host=host, port=port, redact_headers=redact_headers, max_runs=max_runs
        )
        proxy.table.watch = LiveTimeline(sys.stdout).watch if tail else None
        proxy.out.mkdir(parents=True, exist_ok=True)
    except (RawloopError, ValueError, OSError) as exc:
        sys.stderr.write(f"rawloop record: error: {exc}\n")
        return 2
    if not is_loopback_host(host):
        sys.stderr.write(
            f"rawloop record: warning: listening on {host}, not loopback: anyone who can reach "
            "it can send requests upstream and have them recorded\n"
        )
    status = run_foreground(
        proxy,
        label="rawloop record",
        host=host,
        port=port,
        logger=logger,
        listening=lambda _: f"proxying {proxy.url} -> {proxy.upstream}, traces in {proxy.out}",
        stopping=lambda: f"{proxy.requests} requests forwarded",
    )
    if status:
        return status
    sys.stderr.write(f"rawloop record: {plural(len(proxy.paths), 'run')} recorded in {proxy.out}\n")
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    return run_proxy(
        args.upstream,
        args.out,
        args.host,
        args.port,
        redact_headers=args.redact_header,
        max_runs=args.max_runs,
        tail=args.tail,
    )


def add_record_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``record`` to the ``rawloop`` command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "record",
        help="a recording reverse proxy: point any client at it, get a trace per run",
        description="Listen on HOST:PORT and forward every request to UPSTREAM, streaming the "
        "answers back as they arrive, and write each tool-loop run that passes through as a "
        "rawloop trace in DIR (run-<timestamp>-<n>.jsonl). Set the client's base URL to "
        "http://HOST:PORT/v1. Authorization and the other credential headers are redacted "
        "in the traces. Stops cleanly on SIGINT/SIGTERM.",
    )
    p.add_argument(
        "--upstream",
        required=True,
        metavar="URL",
        help="the API to forward to, e.g. https://api.openai.com (a trailing /v1 is not doubled)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the traces")
    p.add_argument(
        "--tail",
        action="store_true",
        help="print each run live: requests, text as it streams, calls, results, the end",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks one)"
    )
    p.add_argument(
        "--redact-header",
        action="append",
        default=[],
        metavar="NAME",
        help="another header to redact in the traces (repeatable)",
    )
    p.add_argument(
        "--max-runs",
        type=int,
        default=DEFAULT_MAX_RUNS,
        metavar="N",
        help=f"runs kept open to be continued (default {DEFAULT_MAX_RUNS})",
    )
    p.set_defaults(func=_cmd_record)
    return p
