"""Replay over a real socket: an HTTP/1.1 server speaking the OpenAI wire format.

``rawloop serve traces/*.jsonl`` lets any client (the official SDKs, curl, a
rawloop ``Loop``) talk to recorded traces as if they were the API:

* ``POST /v1/responses`` and ``POST /v1/chat/completions`` (also without
  ``/v1``) answer from the recording. ``"stream": true`` gets the recorded
  status, headers (less the hop-by-hop and framing ones) and chunks, each
  chunk one write and one HTTP chunk, with the recorded pacing when asked.
  Without it the answer is the JSON object assembled from the recorded
  stream (``rawloop.assemble``).
* ``GET /v1/models`` lists the models the traces name; ``GET /health`` says
  which traces are loaded and how much has been served.

Theory of operation. ``rawloop.http11`` accepts connections and parses
requests; this module routes them, and for the API routes decides which
recording answers. The answer is chosen from the request alone, never from
the connection or the order of arrival, so any number of clients can replay
the same trace at once:

1. A request whose body (``stream`` and ``stream_options`` aside, the
   volatile keys ignored) equals a recorded one gets that iteration.
2. Otherwise a loaded script (``rawloop.synth``) answers, at the iteration
   given by how many model turns the request's conversation already holds.
3. Otherwise the recorded request of the same dialect and model with the
   longest common prefix of ``input``/``messages`` answers, and the
   difference is logged (``rawloop.server`` logger) and kept in
   ``ReplayServer.divergences``.

Each (trace, iteration, request body) has its own counter of attempts: the
first identical request gets the first recorded attempt (a 429, say), the
next one the next, and once they are used up the last successful one is
served again. A counter is two integers and its own copy of the faults, so
a busy counter does not grow; past 4096 counters the least recently used
are forgotten, so neither does a long-running server.
``rawloop.replay.Responder.shape`` turns the chosen exchange into the
answer (faults, re-chunking, pacing), as it does for in-process replay.
Request headers are never logged or echoed: clients may send a real
``Authorization`` header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import h11
import orjson

from ..core.assemble import assemble
from ..core.errors import ConfigurationError, RawloopError, ReplayDivergence, StreamError
from ..core.jsondiff import Difference, first_difference
from ..core.parse import StreamParser
from ..trace.format import Exchange, Trace
from .faults import Fault, parse_fault
from .loopback import (
    Connection,
    Server,
    TooLarge,
    clean_headers,
    error_body,
    json_headers,
    request_path,
    run_foreground,
    serve_connection,
    serve_listener,
)
from .replayer import DEFAULT_VOLATILE, Answer, Responder

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

_API_PATHS = {
    "/v1/responses": "responses",
    "/responses": "responses",
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
}
_HEALTH_PATHS = ("/health", "/v1/health")
_MODELS_PATHS = ("/v1/models", "/models")
_MODEL_PREFIXES = ("/v1/models/", "/models/")
# Request keys that choose the framing of the answer, not what the model is asked.
_FRAMING_KEYS = ("stream", "stream_options")
# Responses input items that the model produced (they repeat a previous answer).
_MODEL_ITEM_TYPES = frozenset(
    {
        "function_call",
        "reasoning",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "custom_tool_call",
    }
)


# -- what is loaded ----------------------------------------------------------------------


@dataclass
class _Loaded:
    """One trace, with what matching needs precomputed, and the Responder shaping its answers."""

    index: int
    name: str
    responder: Responder
    bodies: list[Any]  # each exchange's request body without the framing keys
    scripted: bool
    response_ids: dict[str, int] = field(default_factory=dict)  # scripted: id -> iteration

    @property
    def trace(self) -> Trace:
        return self.responder.trace

    @property
    def exchanges(self) -> list[Exchange]:
        return self.responder.exchanges

    @property
    def dialect(self) -> str:
        return self.trace.dialect

    def models(self) -> list[str]:
        found = [self.trace.header.get("model")]
        found += [b.get("model") for b in self.bodies if isinstance(b, dict)]
        return [m for m in dict.fromkeys(found) if isinstance(m, str) and m]


@dataclass
class _Match:
    loaded: _Loaded
    iteration: int
    group: list[Exchange]  # the recorded attempts that answer this request, in order
    difference: Difference | None = None


@dataclass
class _Counter:
    """Where one (trace, iteration, request body) is in its recorded attempts."""

    faults: list[Fault]  # its own copies: a fault's ``count`` is per request body
    next: int = 0  # the recorded attempt to serve next (past the end: the fallback)
    attempts: int = 0  # requests answered, injected faults included


@dataclass
class _Refusal:
    """Why no recording answers a request: an OpenAI-shaped error."""

    status: int
    message: str
    code: str
    param: str | None = None


# -- the server ----------------------------------------------------------------------------


class ReplayServer(Server):
    """Serves recorded traces (and scripts) over HTTP/1.1.

    Args:
        traces: ``Trace`` objects or paths to trace files; scripted answers
            come in as traces too (``rawloop.synth.script_to_trace``).
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
        self.loaded = [self._load(i, t) for i, t in enumerate(traces)]
        if not self.loaded:
            raise ConfigurationError("give at least one trace (or a script) to serve")
        self.divergences: list[ReplayDivergence] = []
        self.served = 0
        self.connections = 0
        self._counters: OrderedDict[tuple[int, int, bytes], _Counter] = OrderedDict()
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    def _load(self, index: int, source: Trace | str | Path) -> _Loaded:
        trace = source if isinstance(source, Trace) else Trace.load(source)
        # Faults are not the Responder's: every counter passes its own copies.
        responder = Responder(
            trace, chunking=self.chunking, seed=self.seed, rate=self.rate, ignore=self.ignore
        )
        scripted = bool((trace.header.get("metadata") or {}).get("script"))
        name = Path(trace.path).stem if trace.path and not trace.path.startswith("<") else ""
        loaded = _Loaded(
            index,
            name or f"trace{index}",
            responder,
            [_framing_free(e.request.get("body")) for e in responder.exchanges],
            scripted,
        )
        if scripted:  # a follow-up may name the answer it follows: previous_response_id
            for exchange in loaded.exchanges:
                if exchange.response and int(exchange.response["status"]) < 300:
                    try:
                        parser = StreamParser(trace.dialect)
                        parser.feed(exchange.body)
                        rid = parser.close().response_id
                    except StreamError:
                        continue
                    if rid:
                        loaded.response_ids[rid] = exchange.iteration
        return loaded

    # -- serving ------------------------------------------------------------------------

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
                conn, method, path, _Refusal(404, f"Invalid URL ({method} {path})", "unknown_url")
            )
            return
        if method not in allow.split(", "):
            message = f"{method} is not allowed on {path} (allowed: {allow})"
            refusal = _Refusal(405, message, "method_not_allowed")
            await self._refuse(conn, method, path, refusal, headers=[("allow", allow)])
        elif dialect is not None:
            await self._api(conn, method, path, dialect, body)
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
            refusal = _Refusal(404, message, "model_not_found", "model")
            await self._refuse(conn, method, path, refusal)
            return
        await conn.send_json(200, found)
        self._log(method, path, 200)

    async def _refuse(
        self,
        conn: Connection,
        method: str,
        path: str,
        refusal: _Refusal,
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
        return list(dict.fromkeys(m for loaded in self.loaded for m in loaded.models()))

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
        self, conn: Connection, method: str, path: str, dialect: str, raw: bytes
    ) -> None:
        body = _parse_body(raw)
        if isinstance(body, _Refusal):
            await self._refuse(conn, method, path, body)
            return
        match = self._match(dialect, body)
        if isinstance(match, _Refusal):
            await self._refuse(conn, method, path, match)
            return
        if match.difference is not None:
            self._diverged(match)
        answer = self._answer(match, body)
        self.served += 1
        where = f"trace {match.loaded.name}, iteration {answer.iteration}, attempt {answer.attempt}"
        if answer.fail == "drop":
            conn.abort()
            self._log(method, path, 0, f"{where}, connection dropped")
            return
        where += ", cut short" if answer.fail == "cut" else ""
        if body.get("stream") is True:  # logged first: the client may go away mid-stream
            self._log(method, path, answer.status, where)
            await _send_stream(conn, answer)
        else:
            status = await _send_assembled(conn, answer, dialect)
            self._log(method, path, status, where)

    def _match(self, dialect: str, body: dict[str, Any]) -> _Match | _Refusal:
        """Which recorded iteration answers ``body``; or why none does."""
        candidates = [t for t in self.loaded if t.dialect == dialect]
        if not candidates:
            served = ", ".join(sorted({t.dialect for t in self.loaded}))
            return _Refusal(
                404,
                f"no loaded trace speaks the {dialect} dialect (this server replays: {served})",
                "unknown_url",
            )
        normalized = _framing_free(body)
        recorded = [t for t in candidates if not t.scripted]
        # 1. the same request as a recorded one
        for loaded in recorded:
            for exchange, known in zip(loaded.exchanges, loaded.bodies):
                if first_difference(known, normalized, self.ignore) is None:
                    return self._group(loaded, exchange.iteration, known)
        # 2. a script: the iteration is how many model turns the request already holds
        for loaded in candidates:
            if loaded.scripted:
                return _script_match(loaded, body)
        # 3. the recorded request of the same model with the longest common history
        model = body.get("model")
        history = _history(normalized)
        best: tuple[tuple[int, int], _Loaded, Exchange, Any] | None = None
        for loaded in recorded:
            for exchange, known in zip(loaded.exchanges, loaded.bodies):
                if not isinstance(known, dict) or known.get("model") != model:
                    continue
                theirs = _history(known)
                score = (
                    _common_prefix(theirs, history, self.ignore),
                    -abs(len(theirs) - len(history)),
                )
                if best is None or score > best[0]:
                    best = (score, loaded, exchange, known)
        if best is None:
            return _Refusal(
                404,
                f"The model `{model}` does not exist in the loaded traces "
                f"(they hold: {', '.join(self.models())})",
                "model_not_found",
                "model",
            )
        _, loaded, exchange, known = best
        match = self._group(loaded, exchange.iteration, known)
        match.difference = first_difference(known, normalized, self.ignore)
        return match

    def _group(self, loaded: _Loaded, iteration: int, known: Any) -> _Match:
        """The match for recorded body ``known``: every attempt of its iteration with that body."""
        group = [
            e
            for e, b in zip(loaded.exchanges, loaded.bodies)
            if e.iteration == iteration and first_difference(b, known, self.ignore) is None
        ]
        return _Match(loaded, iteration, group)

    def _diverged(self, match: _Match) -> None:
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

    def _answer(self, match: _Match, body: dict[str, Any]) -> Answer:
        """The next attempt for this (trace, iteration, body): recorded order, then the last success."""
        canonical = orjson.dumps(
            _strip(_framing_free(body), self.ignore), option=orjson.OPT_SORT_KEYS
        )
        key = (match.loaded.index, match.iteration, hashlib.sha256(canonical).digest())
        counter = self._counters.get(key)
        if counter is None:
            counter = _Counter([dataclasses.replace(f, used=0) for f in self.faults])
            self._counters[key] = counter
            if len(self._counters) > _MAX_COUNTERS:
                self._counters.popitem(last=False)
        else:
            self._counters.move_to_end(key)
        group = match.group
        if counter.next < len(group):
            exchange = group[counter.next]
        else:  # the recorded attempts are used up: the last success, again and again
            exchange = next((e for e in reversed(group) if _succeeded(e)), group[-1])
        answer = match.loaded.responder.shape(
            exchange, match.iteration, counter.attempts, faults=counter.faults
        )
        counter.attempts += 1
        if not answer.injected:  # an injected fault leaves the recorded attempt to the retry
            counter.next = min(counter.next + 1, len(group))
        return answer

    def _log(self, method: str, path: str, status: int, detail: str = "") -> None:
        # Method, path, status and where in the trace: never headers, never bodies.
        if detail:
            logger.info("%s %s -> %s (%s)", method, path, status or "dropped", detail)
        else:
            logger.info("%s %s -> %s", method, path, status)


# -- matching helpers --------------------------------------------------------------------------


def _script_match(loaded: _Loaded, body: dict[str, Any]) -> _Match | _Refusal:
    """A script's answer: the iteration is the model turns the request holds (or follows)."""
    iteration = _model_turns(loaded.dialect, body)
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous in loaded.response_ids:
        iteration += loaded.response_ids[previous] + 1
    group = [e for e in loaded.exchanges if e.iteration == iteration]
    if not group:
        last = max(e.iteration for e in loaded.exchanges)
        return _Refusal(
            400,
            f"the script {loaded.name} answers {last + 1} model turn(s); this request "
            f"already holds {iteration}, so it asks for turn {iteration + 1}",
            "script_exhausted",
        )
    return _Match(loaded, iteration, group)


def _parse_body(raw: bytes) -> dict[str, Any] | _Refusal:
    """The request's JSON object, naming a model; or why it is not one."""
    if not raw.strip():
        return _Refusal(400, "the request body is empty: expected a JSON object", "invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _Refusal(
            400,
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            "invalid_json",
        )
    if not isinstance(body, dict):
        message = f"the request body is JSON {type(body).__name__}, expected an object"
        return _Refusal(400, message, "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        message = "you must provide a model parameter (a string)"
        return _Refusal(400, message, "missing_required_parameter", "model")
    return body


def _framing_free(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    return {k: v for k, v in body.items() if k not in _FRAMING_KEYS}


def _strip(value: Any, ignore: Sequence[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


def _history(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    items = body.get("input", body.get("messages"))
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return list(items) if isinstance(items, list) else []


def _common_prefix(a: list[Any], b: list[Any], ignore: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if first_difference(x, y, ignore) is not None:
            break
        n += 1
    return n


def _model_turns(dialect: str, body: dict[str, Any]) -> int:
    """How many model answers the request's conversation already holds."""
    if dialect == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    turns, inside = 0, False
    for item in items:
        produced = isinstance(item, dict) and (
            item.get("role") == "assistant" or item.get("type") in _MODEL_ITEM_TYPES
        )
        if produced and not inside:
            turns += 1
        inside = produced
    return turns


def _succeeded(exchange: Exchange) -> bool:
    return (
        exchange.response is not None
        and int(exchange.response["status"]) < 300
        and exchange.error is None
    )


# -- writing answers ---------------------------------------------------------------------------


async def _send_stream(conn: Connection, answer: Answer) -> None:
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


async def _send_assembled(conn: Connection, answer: Answer, dialect: str) -> int:
    """The JSON object a non-streaming request gets, after the whole pacing; returns its status."""
    raw = b"".join(answer.chunks)
    delay = sum(answer.delays)
    if delay > 0:
        await anyio.sleep(delay)
    headers = clean_headers(answer.headers)  # the content type becomes JSON's
    if answer.status >= 300:  # an error answer is JSON already
        await conn.send_bytes(answer.status, raw, headers)
        return answer.status
    try:
        status, payload = assemble(raw, dialect)
    except StreamError as exc:
        message = f"the recorded stream could not be assembled into one object: {exc}"
        status, payload = 502, error_body(message, "server_error", "bad_recording")
    data = orjson.dumps(payload)
    if answer.fail == "cut":
        # The recorded connection broke: so does this one, halfway through the body.
        await conn.send_head(status, json_headers(data, headers))
        await conn.send_data(data[: len(data) // 2])
        conn.abort()
    else:
        await conn.send_bytes(status, data, headers)
    return status


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
            from .synth import load_script, script_to_trace

            sources.append(script_to_trace(load_script(script), script))
        server = ReplayServer(
            sources, host=host, port=port, chunking=chunking, rate=rate, faults=faults, seed=seed
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
            f"listening on http://{shown}:{bound}/v1 ({len(server.loaded)} traces)"
        ),
        stopping=lambda: f"{server.served} requests served",
    )
