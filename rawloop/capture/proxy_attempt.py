"""One HTTP attempt of a proxied run: what crossed the wire, told to the run's trace.

``rawloop.capture.proxy_runs.RunTable.claim`` makes an ``Attempt`` for each
recorded request; the proxy then calls ``request``, ``response`` and ``chunk``
as the bytes cross, and exactly one of ``complete`` or ``broke``. The answer is
parsed as it goes (a stream with ``StreamParser``, a JSON answer once whole);
the outcome is a ``decision`` (and the run's next state) or an ``error``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from ..core.conversation import chain, item_key, turn_from_json
from ..core.errors import (
    APIConnectionError,
    APIStatusError,
    IncompleteStream,
    StreamError,
    StreamErrorEvent,
)
from ..core.parse import StreamParser
from ..core.redact import redact_headers
from ..core.turn import Turn
from ..loop.hooks import ChunkInfo, DecisionInfo, ErrorInfo, RequestInfo, ResponseInfo
from ..loop.retry import RetryPolicy
from ..loop.state import add_usage
from ..loop.wire import api_status_error

if TYPE_CHECKING:
    from .proxy_runs import Run, RunTable

__all__ = ["Attempt"]

_MAX_ERROR_BODY = 64 * 1024  # what an error answer's message is read from
_MAX_JSON_BODY = 64 * 1024 * 1024  # a non-streamed answer parsed into a decision
_POLICY = RetryPolicy()  # what an error record guesses a client does: rawloop's default


class Attempt:
    """One HTTP attempt of a run: what the proxy tells the trace as the exchange goes.

    ``request``, ``response`` and ``chunk`` as the bytes cross; then exactly
    one of ``complete`` (the body arrived whole) or ``broke`` (it did not).
    """

    def __init__(
        self,
        table: RunTable,
        run: Run,
        dialect: str,
        body: dict[str, Any],
        now: float,
        history: bytes = b"",
        raw: bytes = b"",
    ) -> None:
        self.table = table
        self.run = run
        self.dialect = dialect
        self.iteration = run.iteration
        self.attempt = run.attempt
        self.body = body
        self.raw = raw  # the body's bytes, when the caller has them
        self.started = now
        self.finished = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.request_id: str | None = None
        self.received = 0
        self._mode = ""  # "sse", "json", "error" or "other", once the headers are in
        self._parser: StreamParser | None = None
        self._parse_error: StreamError | None = None
        self._kept: list[bytes] = []
        self._kept_size = 0
        # The digest of this conversation: the next one starts with it and the turn's output.
        self._history = history

    @property
    def where(self) -> str:
        """``FILE, iteration I, attempt A``: for logs."""
        return f"{self.run.name}, iteration {self.iteration}, attempt {self.attempt}"

    def request(self, method: str, url: str, headers: Iterable[tuple[str, str]]) -> None:
        """The request as it goes upstream (``headers`` are redacted here)."""
        info = RequestInfo(
            self.iteration,
            self.attempt,
            str(self.body.get("model", "")),
            method,
            url,
            redact_headers(headers, self.run.recorder.redactor.headers),
            self.raw,
            self.body,
        )
        self._write("on_request", info)

    def response(self, status: int, headers: Iterable[tuple[str, str]], elapsed: float) -> None:
        """Status and headers, ``elapsed`` seconds after the request was sent."""
        self.status = status
        self.headers = redact_headers(headers, self.run.recorder.redactor.headers)
        self.request_id = self.headers.get("x-request-id")
        content_type = self.headers.get("content-type", "")
        if status >= 300:
            self._mode = "error"
        elif "text/event-stream" in content_type:
            self._mode = "sse"
            self._parser = StreamParser(self.dialect)
        elif "json" in content_type:
            self._mode = "json"
        else:
            self._mode = "other"
        info = ResponseInfo(
            self.iteration, self.attempt, status, self.headers, self.request_id, elapsed
        )
        self._write("on_response", info)

    def chunk(self, data: bytes, elapsed: float) -> None:
        """One piece of the body, exactly as it arrived."""
        if not data:
            return
        info = ChunkInfo(self.iteration, self.attempt, data, self.received, elapsed)
        self.received += len(data)
        self._write("on_chunk", info)
        if self._parser is not None and self._parse_error is None:
            try:
                self._parser.feed(data)
            except StreamError as exc:
                self._parse_error = exc  # the bytes still go through; the decision will not
        elif self._mode in ("json", "error"):
            limit = _MAX_JSON_BODY if self._mode == "json" else _MAX_ERROR_BODY
            if self._kept_size < limit:
                self._kept.append(data)
                self._kept_size += len(data)

    def complete(self, now: float) -> None:
        """The whole body arrived: the error, or the decision (and the end when no tool is called)."""
        if self.finished:
            return
        self.finished = True
        try:
            if self._mode == "error":
                body = b"".join(self._kept)
                self._fail(api_status_error(self.status, body, self.request_id, self.headers), now)
                return
            try:
                turn = self._turn()
            except StreamError as exc:
                self._fail(exc, now)
                return
            if turn.status == "failed" and turn.error is not None:
                message = turn.error.get("message", turn.error)
                error = StreamErrorEvent(
                    f"the model reported an error: {message}", error=turn.error
                )
                self._fail(error, now, will_retry=False)
                return
            self._succeed(turn, now)
        finally:
            self.run.recorder.close()  # reopened (appending) by the next record: no idle fds

    def broke(self, error: BaseException, now: float) -> None:
        """The exchange failed before its body was whole (upstream, client, or shutdown)."""
        if self.finished:
            return
        self.finished = True
        try:
            self._fail(error, now)
        finally:
            self.run.recorder.close()

    # -- the outcome ------------------------------------------------------------------------

    def _turn(self) -> Turn:
        if self._mode == "sse":
            assert self._parser is not None
            if self._parse_error is not None:
                raise self._parse_error
            return self._parser.close()
        if self._mode == "json":
            if self._kept_size > _MAX_JSON_BODY:
                raise StreamError(f"the answer is over {_MAX_JSON_BODY} bytes: not parsed")
            try:
                payload = orjson.loads(b"".join(self._kept))
            except orjson.JSONDecodeError as exc:
                raise StreamError(f"the JSON answer does not parse: {exc.msg}") from None
            return turn_from_json(self.dialect, payload)
        content_type = self.headers.get("content-type") or "no content type"
        raise StreamError(f"expected a text/event-stream or JSON answer, got {content_type}")

    def _fail(self, error: BaseException, now: float, will_retry: bool | None = None) -> None:
        if will_retry is None:
            if isinstance(error, APIStatusError):
                will_retry = _POLICY.is_retryable_status(error.status)
            else:
                will_retry = isinstance(error, (APIConnectionError, IncompleteStream))
        headers = error.headers if isinstance(error, APIStatusError) else None
        delay = _POLICY.delay(self.attempt, headers) if will_retry else 0.0
        info = ErrorInfo(self.iteration, self.attempt, "request", error, will_retry, delay)
        self._write("on_error", info)
        self.run.error = error
        self.table.park(self.run, "failed")

    def _succeed(self, turn: Turn, now: float) -> None:
        run = self.run
        run.error = None
        self._write("on_decision", DecisionInfo(self.iteration, turn))
        run.turns += 1
        add_usage(run.usage, turn.usage)
        if not turn.calls:
            stop = "incomplete" if turn.status == "incomplete" else "completed"
            self.table.end(run, stop, now)
            return
        run.turn, run.turn_done = turn, now
        run.history = chain(self._history, (item_key(item) for item in turn.output))[-1]
        self.table.park(run, "waiting")

    def _write(self, point: str, info: Any) -> None:
        self.run.write(point, info, self.iteration, self.attempt)
