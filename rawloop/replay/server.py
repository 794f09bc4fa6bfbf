"""Replay over a real socket: an HTTP/1.1 server speaking the OpenAI wire format.

``rawloop serve traces/*.jsonl`` lets any client (the official SDKs, agent
frameworks, curl, a rawloop ``Loop``) talk to recorded traces as if they
were the API:

* ``POST /v1/responses`` and ``POST /v1/chat/completions`` (also without
  ``/v1``) answer from the recording, in the form the request asks for
  (``rawloop.replay.answers``): ``"stream": true`` gets the recorded chunks
  (or the events of a recorded JSON answer, ``rawloop.replay.restream``),
  without it one JSON object (recorded, or assembled from the stream).
* ``GET /v1/models`` lists the models the traces name; ``GET /health`` says
  which traces are loaded and how much has been served.

Theory of operation. ``rawloop.replay.loopback`` accepts connections and
parses requests; this module routes them, and ``rawloop.replay.matching``
decides which recording answers, from the request alone (never from the
connection or the order of arrival), so any number of clients can replay
the same trace at once: a recorded request meaning the same; else a script;
else the iteration the request follows (an answer id, the call ids of its
tool outputs, its ``conversation``) or the one with the longest common
history. A request that is not an exact match is a divergence: logged
(``rawloop.replay.server`` logger: trace, iteration, JSON path), kept in
``ReplayServer.divergences``, named in an ``x-rawloop-divergence`` header,
or, with ``strict``, answered 409 (``replay_divergence``).

Retries and faults are per conversation. The attempt a request is comes
from the client when it numbers its retries (``x-stainless-retry-count``),
else from a counter per (trace, iteration, request) that a success resets,
so the next client sees the recorded 429 too. Attempt ``n`` always gets the
same answer (``matching.plan_attempt``); ``Responder.shape`` turns it into
bytes (faults, re-chunking, pacing) as it does in process. Counters and
followed conversations are bounded (least recently used go). Request
headers are never logged or echoed: clients may send a real
``Authorization`` header.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import orjson

from ..core.errors import ConfigurationError, RawloopError, ReplayDivergence
from ..core.words import plural
from ..trace.format import Trace
from .answers import Shape, divergence_body, header_safe, send_answer
from .faults import Fault, drop_final_blank_line, parse_fault, trim_to
from .loopback import (
    Connection,
    Server,
    TooLarge,
    request_path,
    run_foreground,
    serve_connection,
    serve_listener,
)
from .matching import (
    Match,
    Matcher,
    Refusal,
    comparable,
    is_json_answer,
    load,
    parse_body,
    plan_attempt,
    succeeded,
)
from .replayer import DEFAULT_VOLATILE

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_SIZE",
    "ReplayServer",
    "replay_over_http",
    "run_server",
]

logger = logging.getLogger("rawloop.server")

DEFAULT_MAX_CONNECTIONS = 1000
#: Seconds a connection may sit without sending anything (between or inside requests).
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_REQUEST_SIZE = 16 * 1024 * 1024

_MAX_COUNTERS = 4096  # (trace, iteration, body) attempt counters kept; least recently used go
_MAX_DIVERGENCES = 1000  # kept on the server; every one is logged
_MAX_ATTEMPT = 1000  # a retry count past this is served as this attempt

_API_PATHS = {
    "/v1/responses": "responses",
    "/responses": "responses",
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
}
_HEALTH_PATHS = ("/health", "/v1/health")
_MODELS_PATHS = ("/v1/models", "/models")
_MODEL_PREFIXES = ("/v1/models/", "/models/")

# -- the server ----------------------------------------------------------------------------


class ReplayServer(Server):
    """Serves recorded traces (and scripts) over HTTP/1.1.

    Args:
        traces: ``Trace`` objects or paths to trace files; scripted answers
            come in as traces too (``rawloop.replay.synth.script_to_trace``).
        host: the address to bind (loopback by default).
        port: the port; 0 picks a free one (see ``port`` once serving).
        chunking: ``recorded``, ``events``, ``bytes`` or ``hostile``.
        seed: seeds ``hostile`` chunking.
        rate: multiplies the recorded gaps between chunks (0: no waiting).
        faults: ``Fault`` objects or spec strings, applied per (iteration,
            attempt) of each request body as ``Responder`` does.
        ignore: request-body keys left out of the comparison.
        max_connections: connections served at once; more wait to be accepted.
        idle_timeout: seconds a connection may stay silent before it is closed.
        max_request_size: the largest request body accepted (413 above it).
        strict: answer a request that differs from the recording with 409
            and a ``replay_divergence`` error instead of the nearest answer.

    ``divergences`` lists the requests that matched no recording exactly
    (``ReplayDivergence``: iteration, JSON path, recorded and actual value);
    ``served`` counts the API requests answered.
    """

    def __init__(
        self,
        traces: Iterable[Trace | str | Path],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chunking: str = "recorded",
        seed: int = 0,
        rate: float = 0.0,
        faults: Iterable[Fault | str] = (),
        ignore: Sequence[str] = DEFAULT_VOLATILE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        strict: bool = False,
    ) -> None:
        if max_connections < 1:
            raise ConfigurationError(f"max_connections must be at least 1, not {max_connections}")
        if idle_timeout <= 0:
            raise ConfigurationError(f"idle_timeout must be positive, not {idle_timeout}")
        self.host = host
        self.port = port
        self.chunking = chunking
        self.seed = seed
        self.rate = rate
        self.faults = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
        self.ignore = tuple(ignore)
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_request_size = max_request_size
        self.strict = strict
        options = {"chunking": chunking, "seed": seed, "rate": rate, "ignore": self.ignore}
        self.loaded = [load(i, t, **options) for i, t in enumerate(traces)]
        self.matcher = Matcher(self.loaded, self.ignore)
        if not self.loaded:
            raise ConfigurationError("give at least one trace (or a script) to serve")
        self.divergences: list[ReplayDivergence] = []
        self.served = 0
        self.connections = 0
        self._counters: OrderedDict[tuple[int, int, bytes], int] = OrderedDict()
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled. ``task_status.started(port)`` once listening."""
        listener = await self._take_listener()
        logger.debug("listening on %s:%d (%d traces)", self.host, self.port, len(self.loaded))
        await serve_listener(
            listener, self._connection, self.max_connections, task_status=task_status
        )

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        try:
            await serve_connection(stream, self.idle_timeout, self._request)
        finally:
            self.connections -= 1

    # -- one request ----------------------------------------------------------------------

    async def _request(self, conn: Connection, request: h11.Request) -> None:
        method, path = request_path(request)
        try:
            body = await conn.read_body(request, self.max_request_size)
        except TooLarge:
            limit = self.max_request_size
            message = f"the request body is larger than this server accepts ({limit} bytes)"
            await conn.send_error(
                413, message, "invalid_request_error", "request_too_large", close=True
            )
            self._log(method, path, 413)
            await conn.linger()
            return
        dialect = _API_PATHS.get(path)
        if dialect is not None:
            allow = "POST"
        elif path in _HEALTH_PATHS or path in _MODELS_PATHS or path.startswith(_MODEL_PREFIXES):
            allow = "GET, HEAD"
        else:
            await self._refuse(
                conn, method, path, Refusal(404, f"Invalid URL ({method} {path})", "unknown_url")
            )
            return
        if method not in allow.split(", "):
            message = f"{method} is not allowed on {path} (allowed: {allow})"
            refusal = Refusal(405, message, "method_not_allowed")
            await self._refuse(conn, method, path, refusal, headers=[("allow", allow)])
        elif dialect is not None:
            await self._api(conn, request, path, dialect, body)
        elif path in _HEALTH_PATHS:
            await conn.send_json(200, self.health())
            self._log(method, path, 200)
        else:
            await self._models(conn, method, path)

    async def _models(self, conn: Connection, method: str, path: str) -> None:
        listing = [
            {"id": m, "object": "model", "created": 0, "owned_by": "rawloop"} for m in self.models()
        ]
        wanted = path.split("/models", 1)[1].lstrip("/")
        if not wanted:
            found: dict[str, Any] | None = {"object": "list", "data": listing}
        else:
            found = next((m for m in listing if m["id"] == wanted), None)
        if found is None:
            message = f"The model '{wanted}' does not exist in the loaded traces"
            refusal = Refusal(404, message, "model_not_found", "model")
            await self._refuse(conn, method, path, refusal)
            return
        await conn.send_json(200, found)
        self._log(method, path, 200)

    async def _refuse(
        self,
        conn: Connection,
        method: str,
        path: str,
        refusal: Refusal,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        await conn.send_error(
            refusal.status,
            refusal.message,
            "invalid_request_error",
            refusal.code,
            param=refusal.param,
            headers=headers,
        )
        self._log(method, path, refusal.status)

    def models(self) -> list[str]:
        """The models the loaded traces name, in load order."""
        return self.matcher.models()

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` answers: the traces, and counts of what was served."""
        return {
            "status": "ok",
            "traces": [
                {
                    "name": loaded.name,
                    "dialect": loaded.dialect,
                    "model": loaded.trace.header.get("model"),
                    "scripted": loaded.scripted,
                    "requests": len(loaded.exchanges),
                    "iterations": len({e.iteration for e in loaded.exchanges}),
                }
                for loaded in self.loaded
            ],
            "served": self.served,
            "divergences": len(self.divergences),
            "connections": self.connections,
        }

    # -- the API routes ---------------------------------------------------------------------

    async def _api(
        self, conn: Connection, request: h11.Request, path: str, dialect: str, raw: bytes
    ) -> None:
        method = "POST"
        body = parse_body(raw)
        if isinstance(body, Refusal):
            await self._refuse(conn, method, path, body)
            return
        match = self.matcher.choose(dialect, body)
        if isinstance(match, Refusal):
            await self._refuse(conn, method, path, match)
            return
        headers: list[tuple[str, str]] = []
        if match.difference is not None:
            divergence = self._diverged(match)
            if self.strict:
                await conn.send_json(409, divergence_body(divergence))
                self._log(method, path, 409, f"trace {match.loaded.name}, refused: diverged")
                return
            headers.append(("x-rawloop-divergence", header_safe(divergence.path)))
        retry = _retry_count(request)
        key = self._counter_key(match, comparable(dialect, body, self.ignore))
        attempt = retry if retry is not None else self._counters.pop(key, 0)
        exchange, faults = plan_attempt(match, self.faults, attempt)
        fault = next((f for f in faults if f.matches(match.iteration, attempt)), None)
        answer = match.loaded.responder.shape(exchange, match.iteration, attempt, faults=faults)
        if fault is not None and fault.action == "drop-final-blank-line":
            # Applied to the bytes sent, after any re-chunking (which keeps the blank line).
            joined = b"".join(answer.chunks)
            answer.chunks = trim_to(answer.chunks, len(drop_final_blank_line(joined)))
            answer.delays = answer.delays[: len(answer.chunks)]
        ok = not answer.injected and not answer.fail and succeeded(exchange)
        if ok:
            self.matcher.answered(match, body)
        elif retry is None:
            self._counters[key] = min(attempt + 1, _MAX_ATTEMPT)  # the next one is a retry
            if len(self._counters) > _MAX_COUNTERS:
                self._counters.popitem(last=False)
        self.served += 1
        where = f"trace {match.loaded.name}, iteration {answer.iteration}, attempt {answer.attempt}"
        if answer.fail == "drop":
            conn.abort()
            self._log(method, path, 0, f"{where}, connection dropped")
            return
        where += ", cut short" if answer.fail == "cut" else ""
        # Logged first: a streaming client may go away mid-answer.
        self._log(method, path, answer.status, where)
        shape = Shape(dialect, body, is_json_answer(exchange), self.chunking, self.seed)
        await send_answer(conn, answer, exchange, shape, headers)

    def _diverged(self, match: Match) -> ReplayDivergence:
        found = match.difference
        assert found is not None
        divergence = ReplayDivergence(
            f"trace {match.loaded.name}, iteration {match.iteration}: the request differs "
            f"from the recording at {found}",
            iteration=match.iteration,
            path=found.path,
            recorded=found.a,
            actual=found.b,
        )
        logger.warning("divergence: %s", divergence)
        if len(self.divergences) < _MAX_DIVERGENCES:
            self.divergences.append(divergence)
        return divergence

    def _counter_key(self, match: Match, request: Any) -> tuple[int, int, bytes]:
        """Attempts at one recorded request, for clients that do not number their retries.

        The openai SDKs send ``x-stainless-retry-count``: the attempt is
        theirs. For any other client each identical request is the next
        attempt until one is answered with a success; the next identical
        request starts again at attempt 0, so another client (or the same
        one run again) sees the recorded retries and faults too.
        """
        canonical = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        return (match.loaded.index, match.iteration, hashlib.blake2b(canonical).digest()[:16])

    def _log(self, method: str, path: str, status: int, detail: str = "") -> None:
        # Method, path, status and where in the trace: never headers, never bodies.
        if detail:
            logger.info("%s %s -> %s (%s)", method, path, status or "dropped", detail)
        else:
            logger.info("%s %s -> %s", method, path, status)


def _retry_count(request: h11.Request) -> int | None:
    """The attempt number the client gives its request (``x-stainless-retry-count``), if any."""
    for name, value in request.headers:
        if name == b"x-stainless-retry-count" and value.isdigit():
            return min(int(value), _MAX_ATTEMPT)
    return None


# -- the command line's entry point ----------------------------------------------------------


async def replay_over_http(
    trace: Trace | str | Path,
    loop: Any = None,
    *,
    chunking: str = "recorded",
    seed: int = 0,
    rate: float = 0.0,
    faults: Iterable[Fault | str] = (),
    **options: Any,
) -> Any:
    """``rawloop.replay`` with every request crossing a real loopback socket.

    A ``ReplayServer`` for ``trace`` listens on a free 127.0.0.1 port for the
    length of the run; the server alone chooses the answers (with the given
    chunking, pacing and faults) and compares the requests, so its
    divergences are the report's. ``options`` go to ``replay``.
    """
    import httpx

    from .replayer import replay

    trace = trace if isinstance(trace, Trace) else Trace.load(trace)
    server = ReplayServer([trace], chunking=chunking, seed=seed, rate=rate, faults=faults)
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as client:
                report = await replay(trace, loop, http_client=client, **options)
        finally:
            group.cancel_scope.cancel()
    report.divergences = list(server.divergences)
    if report.identical and report.divergences:
        report.verdict, report.divergence = "diverged", report.divergences[0]
    return report


def run_server(
    traces: list[str],
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    script: str | None = None,
    chunking: str = "recorded",
    rate: float = 0.0,
    faults: Sequence[str] = (),
    seed: int = 0,
    strict: bool = False,
) -> int:
    """``rawloop serve``: serve ``traces`` (and a ``script``) until SIGINT or SIGTERM.

    Prints ``rawloop serve: listening on http://HOST:PORT/v1 (N traces)`` to
    stderr once listening, then one line per request (method, path, status,
    trace, iteration; never headers) and every divergence, unless the
    program configured ``logging`` itself. Returns the exit status: 0 after a clean shutdown,
    2 when a trace, script or option is bad or the address cannot be bound.
    """
    try:
        sources: list[Trace] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for path in traces:
                trace = Trace.load(path)
                for warning in trace.warnings:
                    sys.stderr.write(f"rawloop serve: warning: {warning}\n")
                sources.append(trace)
        if script is not None:
            from .script import load_script
            from .synth import script_to_trace

            sources.append(script_to_trace(load_script(script), script))
        server = ReplayServer(
            sources,
            host=host,
            port=port,
            chunking=chunking,
            rate=rate,
            faults=faults,
            seed=seed,
            strict=strict,
        )
    except (RawloopError, ValueError, OSError) as exc:
        sys.stderr.write(f"rawloop serve: error: {exc}\n")
        return 2
    shown = f"[{server.host}]" if ":" in server.host else server.host
    return run_foreground(
        server,
        label="rawloop serve",
        host=host,
        port=port,
        logger=logger,
        listening=lambda bound: (
            f"listening on http://{shown}:{bound}/v1 ({plural(len(server.loaded), 'trace')})"
        ),
        stopping=lambda: f"{plural(server.served, 'request')} served",
    )
