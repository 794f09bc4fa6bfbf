"""Replay over a real socket: an HTTP/1.1 server speaking the OpenAI wire format.

``rawloop serve traces/*.jsonl`` lets any client (the official SDKs, curl, a
rawloop ``Loop``) talk to recorded traces as if they were the API:

* ``POST /v1/responses`` and ``POST /v1/chat/completions`` (also without
  ``/v1``) answer from the recording. ``"stream": true`` gets the recorded
  status, headers (less the hop-by-hop and framing ones) and chunks, each
  chunk one write and one HTTP chunk, with the recorded pacing when asked.
  Without it the answer is the JSON object assembled from the recorded
  stream: the final ``response`` object (Responses) or a ``chat.completion``.
* ``GET /v1/models`` lists the models the traces name; ``GET /health`` says
  which traces are loaded and how much has been served.

The answer is chosen from the request alone, never from the connection or
the order of arrival, so any number of clients can replay the same trace at
once. A request whose body (``stream`` and ``stream_options`` aside, the
volatile keys ignored) equals a recorded one gets that iteration's answer.
Otherwise the recorded request of the same dialect and model with the
longest common prefix of ``input``/``messages`` answers it, and the
difference is logged (``rawloop.server`` logger) and kept in
``ReplayServer.divergences``. Each (trace, iteration, request body) has its
own counter of attempts: the first identical request gets the first recorded
attempt (a 429, say), the next one the next, and once they are used up the
last successful one is served again. Faults and re-chunking work as in
``rawloop.replay.Responder``, which shapes every answer.

The HTTP side is ``h11`` (a sans-IO HTTP/1.1 state machine) on ``anyio``
sockets: keep-alive, pipelining, ``Expect: 100-continue``, an idle timeout,
a request size limit, a bound on open connections. Request headers are never
logged or echoed: clients may send a real ``Authorization`` header.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import re
import signal
import sys
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
import orjson

from .errors import ConfigurationError, RawloopError, ReplayDivergence, StreamError
from .faults import Fault, parse_fault
from .jsondiff import Difference, first_difference
from .parse import StreamParser
from .replay import DEFAULT_VOLATILE, Answer, Responder
from .trace import Exchange, Trace
from .turn import Turn

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_SIZE",
    "ReplayServer",
    "run_server",
]

logger = logging.getLogger("rawloop.server")

DEFAULT_MAX_CONNECTIONS = 1000
#: Seconds a connection may sit without sending anything (between or inside requests).
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_REQUEST_SIZE = 16 * 1024 * 1024

_MAX_HEADER_SIZE = 64 * 1024
_READ_SIZE = 64 * 1024
_MAX_SLOTS = 4096  # (trace, iteration, body) attempt counters kept; least recently used go
_MAX_DIVERGENCES = 1000  # kept on the server; every one is logged

_API_PATHS = {
    "/v1/responses": "responses",
    "/responses": "responses",
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
}
# Request keys that choose the framing of the answer, not what the model is asked.
_FRAMING_KEYS = ("stream", "stream_options")
# Hop-by-hop and framing headers: the recorded connection's, not the answer's.
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
    """One trace, with what matching needs precomputed."""

    index: int
    name: str
    trace: Trace
    exchanges: list[Exchange]
    bodies: list[Any]  # each exchange's request body without the framing keys
    scripted: bool
    response_ids: dict[str, int] = field(default_factory=dict)  # scripted: id -> iteration

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
    group: list[Exchange]  # the recorded attempts that answer this request
    difference: Difference | None = None


@dataclass
class _Slot:
    """The attempt counter of one (trace, iteration, request body)."""

    responder: Responder
    fallback: Exchange  # served again once the recorded attempts are used up


@dataclass
class _Refusal:
    """Why no recording answers a request: an OpenAI-shaped error."""

    status: int
    message: str
    code: str
    param: str | None = None


class _TooLarge(Exception):
    pass


# -- the server ----------------------------------------------------------------------------


class ReplayServer:
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
        Responder(Trace({}, []), chunking=chunking)  # fail now on an unknown chunking
        self.loaded = [self._load(i, t) for i, t in enumerate(traces)]
        if not self.loaded:
            raise ConfigurationError("give at least one trace (or a script) to serve")
        self.divergences: list[ReplayDivergence] = []
        self.served = 0
        self.connections = 0
        self._slots: OrderedDict[tuple[int, int, str], _Slot] = OrderedDict()
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None

    # -- loading ------------------------------------------------------------------

    def _load(self, index: int, source: Trace | str | Path) -> _Loaded:
        trace = source if isinstance(source, Trace) else Trace.load(source)
        exchanges = trace.exchanges()
        scripted = bool((trace.header.get("metadata") or {}).get("script"))
        name = Path(trace.path).stem if trace.path and not trace.path.startswith("<") else ""
        loaded = _Loaded(
            index,
            name or f"trace{index}",
            trace,
            exchanges,
            [_framing_free(e.request.get("body")) for e in exchanges],
            scripted,
        )
        if scripted:
            for exchange in exchanges:
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
        """Serve until cancelled. ``task_status.started(port)`` once listening."""
        await self.bind()
        listener = self._listener
        assert listener is not None
        self._listener = None
        limit = anyio.Semaphore(self.max_connections)
        try:
            async with anyio.create_task_group() as group:
                parts = getattr(listener, "listeners", [listener])
                for part in parts:
                    group.start_soon(self._accept_loop, part, limit, group)
                logger.debug(
                    "listening on %s:%d (%d traces)", self.host, self.port, len(self.loaded)
                )
                task_status.started(self.port)
        finally:
            await anyio.aclose_forcefully(listener)

    async def _accept_loop(
        self,
        listener: anyio.abc.Listener[anyio.abc.SocketStream],
        limit: anyio.Semaphore,
        group: anyio.abc.TaskGroup,
    ) -> None:
        assert isinstance(listener, anyio.abc.SocketListener)
        while True:
            await limit.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of file descriptors, say: wait, and go on serving
                limit.release()
                logger.warning("accepting a connection failed: %s", exc)
                await anyio.sleep(0.1)
                continue
            except BaseException:
                limit.release()
                raise
            group.start_soon(self._bounded_connection, stream, limit)

    async def _bounded_connection(
        self, stream: anyio.abc.SocketStream, limit: anyio.Semaphore
    ) -> None:
        try:
            await self._connection(stream)
        finally:
            limit.release()

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        """One client connection: requests, one after another, until either side closes."""
        self.connections += 1
        conn = _Connection(stream, self.idle_timeout)
        try:
            while True:
                try:
                    event = await conn.next_event()
                except TimeoutError:
                    return  # idle: close quietly
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed (or a peer that misbehaves)
                await self._request(conn, event)
                if conn.aborted or conn.h11.our_state is not h11.DONE:
                    return
                if conn.h11.their_state is not h11.DONE:
                    return
                conn.h11.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._protocol_error(conn, exc)
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,
            OSError,  # TimeoutError included: a client that stopped reading
        ):
            pass  # the client went away
        except Exception:
            logger.exception("internal error while serving a connection")
            await self._internal_error(conn)
        finally:
            self.connections -= 1
            await anyio.aclose_forcefully(stream)

    async def _protocol_error(self, conn: _Connection, exc: h11.RemoteProtocolError) -> None:
        if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status = exc.error_status_hint
        with contextlib.suppress(
            anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, h11.ProtocolError
        ):
            await self._send_error(
                conn,
                status,
                f"malformed HTTP request: {exc}",
                "invalid_request_error",
                "bad_request",
                close=True,
            )

    async def _internal_error(self, conn: _Connection) -> None:
        if conn.aborted or conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(Exception):
            await self._send_error(
                conn, 500, "internal error in the rawloop server", "server_error", None, close=True
            )

    # -- one request ----------------------------------------------------------------------

    async def _request(self, conn: _Connection, request: h11.Request) -> None:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        if "://" in target:  # absolute form, as sent to a proxy
            target = urlsplit(target).path or "/"
        path = target.split("?", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/")
        conn.head = method == "HEAD"
        length = _content_length(request)
        if length is not None and length > self.max_request_size:
            await self._too_large(conn, method, path)
            return
        try:
            body = await conn.read_body(self.max_request_size)
        except _TooLarge:
            await self._too_large(conn, method, path)
            return

        dialect = _API_PATHS.get(path)
        if dialect is not None:
            if method != "POST":
                await self._not_allowed(conn, method, path, "POST")
            else:
                await self._api(conn, method, path, dialect, body)
            return
        if path in ("/health", "/v1/health", "/v1/models", "/models") or path.startswith(
            ("/v1/models/", "/models/")
        ):
            if method not in ("GET", "HEAD"):
                await self._not_allowed(conn, method, path, "GET, HEAD")
            elif path in ("/health", "/v1/health"):
                await self._send_json(conn, 200, self.health())
                self._log(method, path, 200)
            else:
                await self._models(conn, method, path)
            return
        await self._send_error(
            conn, 404, f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url"
        )
        self._log(method, path, 404)

    async def _too_large(self, conn: _Connection, method: str, path: str) -> None:
        await self._send_error(
            conn,
            413,
            f"the request body is larger than this server accepts ({self.max_request_size} bytes)",
            "invalid_request_error",
            "request_too_large",
            close=True,
        )
        self._log(method, path, 413)
        await conn.linger()

    async def _not_allowed(self, conn: _Connection, method: str, path: str, allow: str) -> None:
        await self._send_error(
            conn,
            405,
            f"{method} is not allowed on {path} (allowed: {allow})",
            "invalid_request_error",
            "method_not_allowed",
            headers=[("allow", allow)],
        )
        self._log(method, path, 405)

    async def _models(self, conn: _Connection, method: str, path: str) -> None:
        models = self.models()
        listing = [
            {"id": m, "object": "model", "created": 0, "owned_by": "rawloop"} for m in models
        ]
        wanted = path.split("/models", 1)[1].lstrip("/")
        if not wanted:
            await self._send_json(conn, 200, {"object": "list", "data": listing})
            self._log(method, path, 200)
            return
        for model in listing:
            if model["id"] == wanted:
                await self._send_json(conn, 200, model)
                self._log(method, path, 200)
                return
        await self._send_error(
            conn,
            404,
            f"The model '{wanted}' does not exist in the loaded traces",
            "invalid_request_error",
            "model_not_found",
            param="model",
        )
        self._log(method, path, 404)

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
        self, conn: _Connection, method: str, path: str, dialect: str, raw: bytes
    ) -> None:
        body, problem = _parse_body(raw)
        if problem is not None:
            await self._send_error(conn, 400, problem, "invalid_request_error", "invalid_json")
            self._log(method, path, 400)
            return
        assert isinstance(body, dict)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            await self._send_error(
                conn,
                400,
                "you must provide a model parameter (a string)",
                "invalid_request_error",
                "missing_required_parameter",
                param="model",
            )
            self._log(method, path, 400)
            return
        stream = body.get("stream") is True
        match = self._match(dialect, body)
        if isinstance(match, _Refusal):
            await self._send_error(
                conn,
                match.status,
                match.message,
                "invalid_request_error",
                match.code,
                param=match.param,
            )
            self._log(method, path, match.status)
            return
        if match.difference is not None:
            self._diverged(match)
        answer = self._answer(match, body)
        self.served += 1
        where = f"trace {match.loaded.name}, iteration {answer.iteration}, attempt {answer.attempt}"
        if answer.fail == "drop":
            conn.aborted = True
            self._log(method, path, 0, f"{where}, connection dropped")
            return
        where += ", cut short" if answer.fail == "cut" else ""
        if stream:  # logged first: the client may go away mid-stream
            self._log(method, path, answer.status, where)
            await self._send_stream(conn, answer)
        else:
            status = await self._send_assembled(conn, answer, dialect)
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
                    return self._group(loaded, exchange, known)
        # 2. a script: the iteration is how many model turns the request already holds
        for loaded in candidates:
            if loaded.scripted:
                return self._script_match(loaded, dialect, body)
        # 3. the recorded request of the same model with the longest common history
        model = body.get("model")
        best: tuple[tuple[int, int], _Loaded, Exchange, Any] | None = None
        history = _history(normalized)
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
        match = self._group(loaded, exchange, known)
        match.difference = first_difference(known, normalized, self.ignore)
        return match

    def _group(self, loaded: _Loaded, exchange: Exchange, known: Any) -> _Match:
        group = [
            e
            for e, b in zip(loaded.exchanges, loaded.bodies)
            if e.iteration == exchange.iteration and first_difference(b, known, self.ignore) is None
        ]
        return _Match(loaded, exchange.iteration, group)

    def _script_match(
        self, loaded: _Loaded, dialect: str, body: dict[str, Any]
    ) -> _Match | _Refusal:
        iteration = _model_turns(dialect, body)
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
        key = (match.loaded.index, match.iteration, hashlib.sha256(canonical).hexdigest())
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = self._new_slot(match)
            if len(self._slots) > _MAX_SLOTS:
                self._slots.popitem(last=False)
        else:
            self._slots.move_to_end(key)
        responder = slot.responder
        pending = responder.unconsumed()
        if not pending:
            responder.exchanges.append(slot.fallback)
            pending = responder.unconsumed()
        # The request was matched already: compare the recording with itself.
        return responder.answer(pending[0].request.get("body"))

    def _new_slot(self, match: _Match) -> _Slot:
        loaded, group = match.loaded, match.group
        wanted = {(e.iteration, e.attempt) for e in group}
        records = [
            r
            for r in loaded.trace.records
            if r.kind in ("request", "response", "chunk", "error")
            and (r.iteration, r.attempt) in wanted
        ]
        position = loaded.exchanges.index(group[0])
        responder = Responder(
            Trace(loaded.trace.header, records, loaded.trace.path),
            chunking=self.chunking,
            seed=self.seed + position,
            rate=self.rate,
            # Each counter runs its own copy of the faults: "count" is per request body.
            faults=[dataclasses.replace(f, used=0) for f in self.faults],
            ignore=self.ignore,
        )
        successes = [e for e in responder.exchanges if _succeeded(e)]
        fallback = successes[-1] if successes else responder.exchanges[-1]
        return _Slot(responder, fallback)

    # -- writing answers ------------------------------------------------------------------------

    async def _send_stream(self, conn: _Connection, answer: Answer) -> None:
        headers = _clean_headers(answer.headers)
        if answer.status < 300 and not any(k == "content-type" for k, _ in headers):
            headers.append(("content-type", "text/event-stream"))
        await conn.send(_response(answer.status, headers))
        for delay, chunk in zip(answer.delays, answer.chunks):
            if delay > 0:
                await anyio.sleep(delay)
            if chunk and not conn.head:
                await conn.send(h11.Data(data=chunk))
        if answer.fail == "cut":
            conn.aborted = True  # a reset connection: no end of the chunked body
            return
        await conn.send(h11.EndOfMessage())

    async def _send_assembled(self, conn: _Connection, answer: Answer, dialect: str) -> int:
        """Send the JSON object a non-streaming request gets; returns its status."""
        raw = b"".join(answer.chunks)
        delay = sum(answer.delays)
        if delay > 0:
            await anyio.sleep(delay)
        headers = [(k, v) for k, v in _clean_headers(answer.headers) if k != "content-type"]
        if answer.status >= 300:  # an error answer is JSON already
            await self._send_bytes(conn, answer.status, raw, headers)
            return answer.status
        try:
            status, payload = _assemble(raw, dialect)
        except StreamError as exc:
            status, payload = (
                502,
                _error_body(
                    f"the recorded stream could not be assembled into one object: {exc}",
                    "server_error",
                    "bad_recording",
                ),
            )
        data = orjson.dumps(payload)
        if answer.fail == "cut":
            # The recorded connection broke: so does this one, halfway through the body.
            await conn.send(_response(status, _json_headers(data, headers)))
            await conn.send(h11.Data(data=data[: len(data) // 2]))
            conn.aborted = True
            return status
        await self._send_bytes(conn, status, data, headers)
        return status

    async def _send_json(
        self,
        conn: _Connection,
        status: int,
        payload: Any,
        headers: Sequence[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        await self._send_bytes(conn, status, orjson.dumps(payload), list(headers), close=close)

    async def _send_bytes(
        self,
        conn: _Connection,
        status: int,
        data: bytes,
        headers: list[tuple[str, str]],
        *,
        close: bool = False,
    ) -> None:
        all_headers = _json_headers(data, headers)
        if close:
            all_headers.append(("connection", "close"))
        await conn.send(_response(status, all_headers))
        if data and not conn.head:
            await conn.send(h11.Data(data=data))
        await conn.send(h11.EndOfMessage())

    async def _send_error(
        self,
        conn: _Connection,
        status: int,
        message: str,
        type_: str,
        code: str | None,
        *,
        param: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        await self._send_json(
            conn, status, _error_body(message, type_, code, param), headers, close=close
        )

    def _log(self, method: str, path: str, status: int, detail: str = "") -> None:
        # Method, path, status and where in the trace: never headers, never bodies.
        if detail:
            logger.info("%s %s -> %s (%s)", method, path, status or "dropped", detail)
        else:
            logger.info("%s %s -> %s", method, path, status)


# -- the HTTP/1.1 connection, h11 style ------------------------------------------------------


class _Connection:
    """An anyio byte stream driven by an ``h11.Connection`` (the h11 docs' server pattern)."""

    def __init__(self, stream: anyio.abc.ByteStream, timeout: float) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEADER_SIZE)
        self.timeout = timeout
        self.aborted = False  # the answer broke the connection on purpose (a fault)
        self.head = False

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            with anyio.fail_after(self.timeout):  # a client that stopped reading
                await self.stream.send(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
                continue
            return event

    async def _receive(self) -> None:
        with anyio.fail_after(self.timeout):
            try:
                data = await self.stream.receive(_READ_SIZE)
            except anyio.EndOfStream:
                data = b""
        self.h11.receive_data(data)

    async def read_body(self, limit: int) -> bytes:
        if self.h11.they_are_waiting_for_100_continue:
            await self.send(
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            )
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _TooLarge
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:  # ConnectionClosed mid-body
                raise anyio.EndOfStream

    async def linger(self) -> None:
        """Close after an early answer without a reset: stop sending, drain what still comes."""
        self.aborted = True
        try:
            await self.stream.send_eof()
            with anyio.move_on_after(min(self.timeout, 2.0)):
                drained = 0
                while drained < 16 * 1024 * 1024:
                    drained += len(await self.stream.receive(_READ_SIZE))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


# -- helpers -------------------------------------------------------------------------------


def _response(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return h11.Response(status_code=status, headers=headers, reason=reason)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _parse_body(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, "the request body is empty: expected a JSON object"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, (
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        )
    if not isinstance(body, dict):
        return None, f"the request body is JSON {type(body).__name__}, expected an object"
    return body, None


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


def _clean_headers(recorded: dict[str, str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in recorded.items():
        name = str(name).lower()
        value = str(value)
        if name in _HOP_BY_HOP or not _TOKEN.match(name):
            continue
        if any(c in value for c in "\r\n\0") or not value.isascii():
            continue
        out.append((name, value))
    return out


def _json_headers(data: bytes, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        ("content-type", "application/json"),
        *((k, v) for k, v in headers if k not in ("content-type", "content-length")),
        ("content-length", str(len(data))),
    ]


def _error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _assemble(raw: bytes, dialect: str) -> tuple[int, dict[str, Any]]:
    """The non-streaming answer built from a recorded stream: (status, JSON object)."""
    parser = StreamParser(dialect)
    payloads = [p for _, p, _ in parser.feed_events(raw) if isinstance(p, dict)]
    turn = parser.close()
    if dialect == "responses":
        if turn.response is not None:
            return 200, turn.response
        if turn.error:
            return 500, {"error": turn.error}
        raise StreamError("the stream holds no terminal response event")
    if turn.error:
        return 500, {"error": turn.error}
    return 200, _chat_completion(turn, payloads)


def _chat_completion(turn: Turn, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    first = payloads[0] if payloads else {}
    choices = []
    for index, choice in enumerate(turn.choices or [turn]):
        message: dict[str, Any] = dict(choice.output[0]) if choice.output else {"role": "assistant"}
        message.setdefault("content", choice.text or None)
        message.setdefault("refusal", choice.refusal or None)
        message.setdefault("annotations", [])
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    out: dict[str, Any] = {
        "id": turn.response_id,
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": turn.model,
        "choices": choices,
        "usage": turn.usage,
    }
    for key in ("service_tier", "system_fingerprint"):
        if key in first:
            out[key] = first[key]
    return out


# -- the command line's entry point ----------------------------------------------------------


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
    handler: logging.Handler | None = None
    level = logger.level
    if not logging.getLogger().handlers:  # nobody configured logging: show the access log
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rawloop serve: %(message)s"))
        logger.addHandler(handler)
        if level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    try:
        anyio.run(_serve_until_signalled, server)
    except OSError as exc:
        sys.stderr.write(f"rawloop serve: error: cannot listen on {host}:{port}: {exc}\n")
        return 2
    except KeyboardInterrupt:  # where signal receivers are not supported
        sys.stderr.write("rawloop serve: interrupted\n")
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return 0


async def _serve_until_signalled(server: ReplayServer) -> None:
    port = await server.bind()
    shown = f"[{server.host}]" if ":" in server.host else server.host
    async with anyio.create_task_group() as group:
        await group.start(server.serve)
        sys.stderr.write(
            f"rawloop serve: listening on http://{shown}:{port}/v1 ({len(server.loaded)} traces)\n"
        )
        sys.stderr.flush()
        if sys.platform == "win32":  # no signal receivers there: Ctrl+C raises KeyboardInterrupt
            await anyio.sleep(math.inf)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                sys.stderr.write(
                    f"rawloop serve: {signal.Signals(signum).name}: shutting down "
                    f"({server.served} requests served)\n"
                )
                group.cancel_scope.cancel()
                break
