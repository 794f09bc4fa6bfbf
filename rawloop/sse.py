"""An incremental, sans-IO decoder for the ``text/event-stream`` format.

Theory of operation
-------------------
``SSEDecoder.feed(chunk)`` takes whatever bytes the network handed over and
returns the events completed by them; ``close()`` ends the stream. The decoder
never awaits, never reads a clock and never touches a socket, so the same bytes
give the same events whatever their chunking: that is the property the tests
check with hypothesis, and the one replay relies on.

Lines are split on LF, CR and CRLF, as the WHATWG spec asks. The common case,
a chunk without CR, takes a fast path through ``bytes.split``; a chunk with a
CR takes a regex split. A CR at the end of one chunk and an LF at the start of
the next are one line end: ``_cr_pending`` remembers the CR.

Text is decoded per event (``data`` lines joined first), strictly: bytes that
are not UTF-8 raise ``InvalidEncoding`` with the event's byte offset, rather
than being replaced silently, because a debugging tool must not hide a broken
stream.

Deliberate deviation: at the end of the stream WHATWG discards an event that
was not followed by a blank line. Real servers cut that last blank line (see
openai-node #2725, where that rule lost ``response.completed``), so ``close()``
dispatches such an event and sets ``ended_without_blank_line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import EventTooLarge, InvalidEncoding, StreamError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEDecoder", "ServerSentEvent"]

#: The default bound on one event's size. The corpus holds a 137 KB data line;
#: 16 MiB leaves a wide margin while still stopping a runaway stream.
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_LINE_ENDS = re.compile(rb"(\r\n|\r|\n)")


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event.

    ``offset`` is the byte offset in the stream of the event's first line
    (comments included); ``id`` is the last event ID in force when the event
    was dispatched (sticky across events, as the spec says); ``retry`` is the
    reconnection time given inside this event's block, if any.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None
    offset: int = 0

    def json(self) -> Any:
        """The data parsed as JSON (raises ``orjson.JSONDecodeError``)."""
        return orjson.loads(self.data)


class SSEDecoder:
    """Turns bytes of an event stream into ``ServerSentEvent`` objects.

    Args:
        max_event_size: the most bytes one event (all its lines) may take
            before ``EventTooLarge`` is raised.

    After an error the decoder's state is undefined: make a new one.
    """

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self.max_event_size = max_event_size
        #: The last event ID seen (sticky), and the last valid retry value.
        self.last_event_id: str | None = None
        self.retry: int | None = None
        #: How many comment lines (``:...``) went by, e.g. keep-alives.
        self.comment_count = 0
        #: True when ``close()`` had to flush an event with no blank line after it.
        self.ended_without_blank_line = False
        #: Total bytes fed so far.
        self.bytes_fed = 0

        self._head: bytes | None = b""  # bytes held back while a BOM may be arriving
        self._pending: list[bytes] = []  # pieces of the line not yet ended
        self._pending_len = 0
        self._cr_pending = False
        self._offset = 0  # stream offset of the first byte of the pending line
        # The event being built.
        self._event_type: bytes | None = None
        self._data: list[bytes] = []
        self._block_retry: int | None = None
        self._block_size = 0
        self._block_start = -1

    # -- public API -------------------------------------------------------

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Feed the next chunk; return the events it completed."""
        if not data:
            return []
        self.bytes_fed += len(data)
        if self._head is not None:
            head = self._head + data
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            if head.startswith(_BOM):
                head = head[3:]
                self._offset += 3
            data = head
        return self._feed_body(data)

    def close(self) -> list[ServerSentEvent]:
        """End the stream: flush a last line and event that lack a terminator."""
        events: list[ServerSentEvent] = []
        if self._head:
            # The stream was shorter than a BOM: those bytes are ordinary data.
            events.extend(self._feed_body(self._head))
        self._head = None
        if self._pending:
            line = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
            self._line(line, self._offset, events)
            self._offset += len(line)
        if self._data:
            self.ended_without_blank_line = True
            self._line(b"", self._offset, events)
        return events

    # -- internals --------------------------------------------------------

    def _feed_body(self, data: bytes) -> list[ServerSentEvent]:
        if not data:
            return []
        if self._cr_pending:
            self._cr_pending = False
            if data[0] == 0x0A:  # the LF of a CRLF split across chunks
                data = data[1:]
                self._offset += 1
                if not data:
                    return []

        if b"\r" in data:
            return self._feed_with_cr(data)
        if b"\n" not in data:
            self._hold(data)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        lines = data.split(b"\n")
        tail = lines.pop()
        events: list[ServerSentEvent] = []
        pos = self._offset
        try:
            for line in lines:
                self._line(line, pos, events)
                pos += len(line) + 1
        except StreamError as exc:
            exc.events = events
            raise
        self._offset = pos
        if tail:
            self._hold(tail)
        return events

    def _hold(self, piece: bytes) -> None:
        self._pending.append(piece)
        self._pending_len += len(piece)
        if self._pending_len + self._block_size > self.max_event_size:
            start = self._block_start if self._block_start >= 0 else self._offset
            raise EventTooLarge(
                f"event starting at byte {start} is larger than {self.max_event_size} bytes",
                offset=start,
            )

    def _feed_with_cr(self, data: bytes) -> list[ServerSentEvent]:
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        parts = _LINE_ENDS.split(data)
        tail = parts.pop()
        events: list[ServerSentEvent] = []
        pos = self._offset
        try:
            for i in range(0, len(parts), 2):
                line = parts[i]
                self._line(line, pos, events)
                pos += len(line) + len(parts[i + 1])
        except StreamError as exc:
            exc.events = events
            raise
        self._offset = pos
        # A final CR may be the first half of a CRLF.
        self._cr_pending = not tail and data.endswith(b"\r")
        if tail:
            self._hold(tail)
        return events

    def _line(self, line: bytes, pos: int, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data:
                events.append(self._dispatch())
            else:
                self._reset_block()
            return
        if self._block_start < 0:
            self._block_start = pos
        self._block_size += len(line)
        if self._block_size > self.max_event_size:
            raise EventTooLarge(
                f"event starting at byte {self._block_start} is larger than "
                f"{self.max_event_size} bytes",
                offset=self._block_start,
            )
        if line[:5] == b"data:":
            value = line[5:]
            self._data.append(value[1:] if value[:1] == b" " else value)
            return
        if line[0] == 0x3A:  # ":" starts a comment
            self.comment_count += 1
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            self._event_type = value
        elif name == b"data":  # "data" without a colon: an empty data line
            self._data.append(value)
        elif name == b"id":
            if b"\0" not in value:
                self.last_event_id = self._decode(value)
        elif name == b"retry" and value.isdigit():
            self._block_retry = self.retry = int(value)
        # Any other field is ignored, as the spec says.

    def _dispatch(self) -> ServerSentEvent:
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        etype = self._event_type
        event = ServerSentEvent(
            self._decode(etype) if etype else "message",
            self._decode(data),
            self.last_event_id,
            self._block_retry,
            self._block_start,
        )
        self._reset_block()
        return event

    def _reset_block(self) -> None:
        self._event_type = None
        self._data = []
        self._block_retry = None
        self._block_size = 0
        self._block_start = -1

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            start = self._block_start if self._block_start >= 0 else self._offset
            raise InvalidEncoding(
                f"event starting at byte {start} is not valid UTF-8: {exc.reason}",
                offset=start,
            ) from None
