"""Bytes in, deltas and a Turn out: the SSE decoder joined to a dialect's accumulator."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .accumulator import event_of
from .dialect import DIALECTS, get_dialect
from .errors import IncompleteStream, InvalidEventData, RawloopError, StreamError
from .sse import DEFAULT_MAX_EVENT_SIZE, RawEvent, ServerSentEvent, SSEDecoder
from .turn import Delta, Turn

__all__ = ["DIALECTS", "StreamParser", "parse_stream"]


class StreamParser:
    """Feeds raw response bytes through ``SSEDecoder`` into a dialect's accumulator.

    ``feed(chunk)`` returns the deltas the chunk completed; ``feed_events(chunk)``
    returns each completed event with its parsed JSON and deltas (for hooks);
    ``close()`` returns the finished Turn. Every error carries the partial
    Turn in ``.partial``: what arrived before the problem is never lost.
    """

    def __init__(
        self,
        dialect: str = "responses",
        *,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        deltas: bool = True,
    ):
        self.decoder = SSEDecoder(max_event_size)
        self.accumulator = get_dialect(dialect).accumulator()
        # deltas=False: text and argument fragments still build the Turn, but
        # no Delta objects are made for them (feed() may return fewer deltas).
        self.accumulator.want_deltas = deltas
        # The frequent events skip the decode and the event object (see feed_raw).
        self.decoder.raw_names = self.accumulator.raw_names

    def feed(self, chunk: bytes) -> list[Delta]:
        return self._fold(self._decode(chunk))

    def feed_events(self, chunk: bytes) -> list[tuple[ServerSentEvent, Any, list[Delta]]]:
        """Each completed event, as hooks see it: the event, its JSON, its deltas."""
        accumulator = self.accumulator
        out = []
        item: ServerSentEvent | RawEvent | None = None
        try:
            for item in self._decode(chunk):
                event = event_of(*item) if isinstance(item, tuple) else item
                # feed() takes the dialect's fast path; it leaves the JSON it parsed behind.
                deltas = accumulator.feed(event)
                out.append((event, accumulator.last_payload, deltas))
        except StreamError as exc:
            if exc.partial is None:
                exc.partial = self.partial_turn()
            raise
        except RawloopError:
            raise
        except Exception as exc:
            raise self._unexpected(exc, item) from exc
        return out

    def close(self) -> Turn:
        """End of stream: the finished Turn, or ``IncompleteStream`` with the partial one."""
        try:
            return self._close()
        except RawloopError:
            raise
        except Exception as exc:
            raise self._unexpected(exc, None) from exc

    def _close(self) -> Turn:
        events = self._decode(None)
        try:
            for event in events:
                if isinstance(event, tuple):  # never, in fact: close() goes line by line
                    self.accumulator.feed_raw(*event)
                else:
                    self.accumulator.feed(event)
        except InvalidEventData as exc:
            if (
                self.decoder.ended_without_blank_line
                and exc.event_index == self.accumulator.event_index
            ):
                # The last event was cut in the middle of its data: the stream
                # was truncated, which is not the same as the server sending junk.
                raise IncompleteStream(
                    f"stream cut inside its last event (byte {exc.offset}): {exc}",
                    offset=exc.offset,
                    partial=self.partial_turn(),
                ) from None
            raise
        if self.decoder.ended_without_blank_line:
            self.accumulator.turn.warnings.append(
                "stream ended without a blank line after the last event"
            )
        return self.accumulator.finish()

    def partial_turn(self) -> Turn:
        """The turn as far as the stream got.

        Never raises: when the accumulator cannot build even that (a bug), the
        bare turn it holds, without its derived fields.
        """
        try:
            return self.accumulator.partial_turn()
        except Exception:
            return self.accumulator.turn

    def _unexpected(
        self, exc: Exception, event: ServerSentEvent | RawEvent | None
    ) -> InvalidEventData:
        """The last line of defence: an accumulator failure no check foresaw, typed."""
        index = self.accumulator.event_index
        if isinstance(event, tuple):
            offset: int | None = event[2]
        elif event is not None:
            offset = event.offset
        else:  # at the end of the stream: the last event is the one to blame
            offset = None
        where = f"at byte {offset}" if offset is not None else "at the end of the stream"
        return InvalidEventData(
            f"event {index} ({where}) could not be understood: {type(exc).__name__}: {exc}",
            event_index=index,
            offset=offset,
            partial=self.partial_turn(),
        )

    def _decode(self, chunk: bytes | None) -> list[ServerSentEvent | RawEvent]:
        try:
            if chunk is None:
                return list(self.decoder.close())
            return self.decoder.feed_mixed(chunk)
        except StreamError as exc:
            # Fold in the events decoded before the problem, then attach the partial
            # turn. A problem in one of those events comes earlier in the bytes: it
            # is the one to report, as it would be had the chunks been smaller.
            self._fold_before(exc.events)
            exc.partial = self.partial_turn()
            raise

    def _fold(self, events: list[ServerSentEvent | RawEvent]) -> list[Delta]:
        """Feed decoded events to the accumulator; the deltas they complete."""
        accumulator = self.accumulator
        deltas: list[Delta] = []
        event: ServerSentEvent | RawEvent | None = None
        try:
            for event in events:
                if isinstance(event, tuple):
                    deltas += accumulator.feed_raw(*event)
                else:
                    deltas += accumulator.feed(event)
        except StreamError as exc:
            # E.g. a raw event whose bytes are not UTF-8: the accumulator raised it.
            if exc.partial is None:
                exc.partial = self.partial_turn()
            raise
        except RawloopError:
            raise
        except Exception as exc:  # a bug of ours must still come out typed, with the turn
            raise self._unexpected(exc, event) from exc
        return deltas

    def _fold_before(self, events: list[ServerSentEvent | RawEvent]) -> None:
        try:
            self._fold(events)
        except StreamError as earlier:
            # Not "during handling of" the later problem: it comes first.
            raise earlier from earlier.__cause__


def parse_stream(data: bytes | Iterable[bytes], dialect: str = "responses") -> Turn:
    """Parse a whole streamed response body (bytes, or an iterable of chunks) into a Turn."""
    parser = StreamParser(dialect)
    if isinstance(data, (bytes, bytearray, memoryview)):
        parser.feed(bytes(data))
    else:
        for chunk in data:
            parser.feed(chunk)
    return parser.close()
