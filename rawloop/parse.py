"""Bytes in, deltas and a Turn out: the SSE decoder joined to a dialect's accumulator."""

from __future__ import annotations

from collections.abc import Iterable

from .accumulator import Accumulator
from .errors import ConfigurationError, StreamError
from .sse import DEFAULT_MAX_EVENT_SIZE, SSEDecoder
from .turn import Delta, Turn

__all__ = ["DIALECTS", "StreamParser", "new_accumulator", "parse_stream"]

DIALECTS = ("responses", "chat")


def new_accumulator(dialect: str) -> Accumulator:
    """A fresh accumulator for ``"responses"`` or ``"chat"``."""
    if dialect == "responses":
        from .responses import ResponsesAccumulator

        return ResponsesAccumulator()
    if dialect == "chat":
        from .chat import ChatAccumulator

        return ChatAccumulator()
    raise ConfigurationError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")


class StreamParser:
    """Feeds raw response bytes through ``SSEDecoder`` into an accumulator.

    ``feed(chunk)`` returns the deltas the chunk completed; ``close()`` returns
    the finished Turn. Errors carry the partial Turn in ``.partial``.
    """

    def __init__(self, dialect: str = "responses", *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE):
        self.decoder = SSEDecoder(max_event_size)
        self.accumulator = new_accumulator(dialect)

    def feed(self, chunk: bytes) -> list[Delta]:
        try:
            events = self.decoder.feed(chunk)
        except StreamError as exc:
            self._salvage(exc)
            raise
        feed = self.accumulator.feed
        if len(events) == 1:
            return feed(events[0])
        deltas: list[Delta] = []
        for event in events:
            deltas.extend(feed(event))
        return deltas

    def close(self) -> Turn:
        try:
            events = self.decoder.close()
        except StreamError as exc:
            self._salvage(exc)
            raise
        for event in events:
            self.accumulator.feed(event)
        if self.decoder.ended_without_blank_line:
            self.accumulator.turn.warnings.append(
                "stream ended without a blank line after the last event"
            )
        return self.accumulator.finish()

    def _salvage(self, exc: StreamError) -> None:
        """Fold in the events decoded before a decoder error, then attach the partial turn."""
        try:
            for event in exc.events:
                self.accumulator.feed(event)
        except StreamError:
            pass  # the first problem is the one to report
        exc.partial = self.accumulator.partial_turn()


def parse_stream(data: bytes | Iterable[bytes], dialect: str = "responses") -> Turn:
    """Parse a whole streamed response body (bytes, or an iterable of chunks) into a Turn."""
    parser = StreamParser(dialect)
    if isinstance(data, (bytes, bytearray, memoryview)):
        parser.feed(bytes(data))
    else:
        for chunk in data:
            parser.feed(chunk)
    return parser.close()
