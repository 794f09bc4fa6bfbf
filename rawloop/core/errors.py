"""The rawloop exception hierarchy.

Every error names what was wrong and where: a byte offset in a stream, an
event index, an iteration, a trace line or a JSON path.

    RawloopError
    ├── StreamError                 the response body could not be understood
    │   ├── EventTooLarge           one SSE event grew past the decoder's bound
    │   ├── InvalidEncoding         bytes that are not UTF-8
    │   ├── InvalidEventData        an event whose data is not the JSON expected
    │   ├── StreamErrorEvent        the server sent an error inside the stream
    │   └── IncompleteStream        the stream ended before a terminal event
    ├── APIError                    talking to the API failed
    │   ├── APIStatusError          a non-2xx answer
    │   └── APIConnectionError      no answer, or the connection dropped
    ├── ConfigurationError          the loop or a tool was set up wrongly
    ├── HookError                   a hook raised where that is fatal
    ├── TraceError                  a trace file could not be read or written
    │   ├── TraceFormatError        a bad line (names the line number)
    │   ├── TraceVersionError       a format version this reader does not know
    │   └── SecretInTraceError      a record still held something like a key
    └── ReplayError                 a replay could not go on
        └── ReplayDivergence        a request differs from the recorded one
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .redact import redact_bytes, redact_json, redact_text

if TYPE_CHECKING:
    from .turn import Turn

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "ConfigurationError",
    "EventTooLarge",
    "HookError",
    "IncompleteStream",
    "InvalidEncoding",
    "InvalidEventData",
    "RawloopError",
    "ReplayDivergence",
    "ReplayError",
    "SecretInTraceError",
    "StreamError",
    "StreamErrorEvent",
    "TraceError",
    "TraceFormatError",
    "TraceVersionError",
]


class RawloopError(Exception):
    """Base class of every error rawloop raises.

    When a run fails, the error raised out of ``Loop.run`` carries the work done
    so far in ``result`` (a ``RunResult``): nothing is thrown away.
    """

    result: Any = None

    def __init__(self, *args: object) -> None:
        # A message often quotes what a server sent: no key reaches str(exc), a log or a 502.
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class StreamError(RawloopError):
    """A streamed response body could not be decoded into a turn."""

    def __init__(self, message: str, *, offset: int | None = None, partial: Turn | None = None):
        super().__init__(message)
        #: Byte offset in the response body where the problem starts, when known.
        self.offset = offset
        #: Everything that was understood before the problem, when available.
        self.partial = partial
        #: Decoder errors: the events the same ``feed()`` call completed before
        #: the problem, so that nothing already received is lost.
        self.events: list[Any] = []


class EventTooLarge(StreamError):
    """One server-sent event grew past the decoder's ``max_event_size``."""


class InvalidEncoding(StreamError):
    """The stream holds bytes that are not valid UTF-8."""


class InvalidEventData(StreamError):
    """An event's ``data`` is not the JSON object the dialect expects."""

    def __init__(
        self,
        message: str,
        *,
        event_index: int,
        offset: int | None = None,
        partial: Turn | None = None,
    ):
        super().__init__(message, offset=offset, partial=partial)
        #: Zero-based index of the event in the stream.
        self.event_index = event_index


class StreamErrorEvent(StreamError):
    """The server reported an error inside the stream (an ``error`` event)."""

    def __init__(self, message: str, *, error: dict[str, Any], partial: Turn | None = None):
        super().__init__(message, partial=partial)
        #: The server's error object, with anything shaped like a key redacted.
        self.error: dict[str, Any] = redact_json(error)[0]


class IncompleteStream(StreamError):
    """The stream ended before a terminal event; ``partial`` holds what arrived."""


class APIError(RawloopError):
    """A request to the model API failed."""


class APIStatusError(APIError):
    """The API answered with a non-success status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: bytes,
        request_id: str | None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        #: The response body, with anything shaped like a key redacted.
        self.body = redact_bytes(body)
        #: The response headers, redacted (``retry-after`` lives here).
        self.headers = headers or {}
        #: The ``x-request-id`` header, the handle OpenAI support asks for.
        self.request_id = request_id


class APIConnectionError(APIError):
    """The connection failed or dropped before a complete answer arrived."""

    def __init__(self, message: str, *, partial: Turn | None = None):
        super().__init__(message)
        self.partial = partial


class ConfigurationError(RawloopError):
    """The loop, a tool or a hook was set up in a way that cannot work."""


class HookError(RawloopError):
    """A hook raised where the loop cannot go on without it."""


class TraceError(RawloopError):
    """A trace could not be read or written."""


class TraceFormatError(TraceError):
    """A line of a trace file is not a valid record."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line


class TraceVersionError(TraceError):
    """The trace was written in a format version this reader cannot read."""


class SecretInTraceError(TraceError):
    """A record still matched a secret pattern after redaction; it was not written."""


class ReplayError(RawloopError):
    """A replay could not continue."""


class ReplayDivergence(ReplayError):
    """A request sent during replay differs from the recorded one."""

    def __init__(
        self,
        message: str,
        *,
        iteration: int,
        path: str,
        recorded: Any = None,
        actual: Any = None,
    ):
        super().__init__(message)
        self.iteration = iteration
        self.path = path
        self.recorded = recorded
        self.actual = actual
