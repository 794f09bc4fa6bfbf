"""An incremental, sans-IO decoder for the ``text/event-stream`` format.

Theory of operation
-------------------
``SSEDecoder.feed(chunk)`` takes whatever bytes the network handed over and
returns the events completed by them; ``close()`` ends the stream. The decoder
never awaits, never reads a clock and never touches a socket, so the same bytes
give the same events whatever their chunking: that is the property the tests
check with hypothesis, and the one replay relies on.

Lines are split on LF, CR and CRLF, as the WHATWG spec asks. The common case,
a chunk without CR, takes a fast path: bytes are held until a blank line has
arrived (``\n\n`` in the chunk or across its start, or an LF at a line start),
then split into whole events with ``bytes.split``. A chunk with a CR takes a
regex split that works off every complete line at once. A CR at the end of one
chunk and an LF at the start of the next are one line end: ``_cr_pending``
remembers the CR. Either way every event comes out of the ``feed()`` call that
delivered the line end of its blank line, and what is held is at most the open
event, gathered so that tiny chunks do not cost one object each.

An event's size, for ``max_event_size``, is the bytes of its lines without
their line ends: the same figure whatever the chunking, so an event exactly
at the bound is accepted however it arrives. Errors come out in stream order:
a problem in an earlier event is never hidden behind a later one.

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
from typing import Any, cast

import orjson

from .errors import EventTooLarge, InvalidEncoding, StreamError

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "RawEvent", "SSEDecoder", "ServerSentEvent", "utf8_error"]

#: The default bound on one event's size. The corpus holds a 137 KB data line;
#: 16 MiB leaves a wide margin while still stopping a runaway stream.
DEFAULT_MAX_EVENT_SIZE = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
#: Held chunks shorter than _PIECE are gathered into one bytearray, kept as one
#: object once it reaches _GATHER bytes (see SSEDecoder._hold); longer chunks are
#: kept as they came, which costs no copy.
_PIECE = 64
_GATHER = 4096
_LINE_ENDS = re.compile(rb"(\r\n|\r|\n)")


#: An event handed over undecoded, for a consumer that parses the bytes itself:
#: (event type, data bytes, byte offset, last event ID). See ``SSEDecoder.raw_names``.
RawEvent = tuple[str, bytes, int, "str | None"]

_EVENT_NAMES: dict[bytes, str] = {}


def _event_name(raw: bytes) -> str:
    # A stream uses a handful of event types thousands of times: decode each once.
    name = _EVENT_NAMES.get(raw)
    if name is None:
        name = raw.decode()
        if len(_EVENT_NAMES) < 512:  # bounded: a hostile stream cannot grow it forever
            _EVENT_NAMES[raw] = name
    return name


def utf8_error(exc: UnicodeDecodeError, start: int) -> InvalidEncoding:
    """The typed error for an event whose bytes are not UTF-8."""
    return InvalidEncoding(
        f"event starting at byte {start} is not valid UTF-8: {exc.reason}", offset=start
    )


class ServerSentEvent:
    """One dispatched event.

    ``offset`` is the byte offset in the stream of the event's first line
    (comments included); ``id`` is the last event ID in force when the event
    was dispatched (sticky across events, as the spec says); ``retry`` is the
    reconnection time given inside this event's block, if any.
    """

    # Written out rather than a dataclass: one is made per event, and this
    # __init__ is measurably cheaper than the generated one.
    __slots__ = ("data", "event", "id", "offset", "retry")

    def __init__(
        self,
        event: str = "message",
        data: str = "",
        id: str | None = None,
        retry: int | None = None,
        offset: int = 0,
    ) -> None:
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry
        self.offset = offset

    def json(self) -> Any:
        """The data parsed as JSON (raises ``orjson.JSONDecodeError``)."""
        return orjson.loads(self.data)

    def _fields(self) -> tuple[Any, ...]:
        return (self.event, self.data, self.id, self.retry, self.offset)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerSentEvent) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"ServerSentEvent(event={self.event!r}, data={self.data!r}, id={self.id!r}, "
            f"retry={self.retry!r}, offset={self.offset!r})"
        )


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
        #: Event types ``feed_mixed`` hands over as ``RawEvent`` tuples, data not
        #: decoded (orjson validates UTF-8 itself): the hot path of a parser that
        #: needs no ``ServerSentEvent`` objects. Empty: ``feed`` never does it.
        self.raw_names: frozenset[str] = frozenset()

        self._head: bytes | None = b""  # bytes held back while a BOM may be arriving
        # Bytes not yet processed ("held"). They always start at a line start;
        # they never hold a CR, nor a blank line: only (part of) the open event.
        # Chunks of a useful size are kept as they came (no copy); small ones are
        # gathered in one bytearray, so a stream of tiny chunks costs one object
        # per _GATHER bytes, not one per chunk.
        self._pieces: list[bytes] = []
        self._small = bytearray()
        self._held = 0  # bytes held in all
        self._cr_pending = False  # the last byte fed was a CR that ended a line
        self._offset = 0  # stream offset of the first held byte
        # The event being built.
        self._event_type: bytes | None = None
        self._data: list[bytes] = []
        self._block_retry: int | None = None
        self._block_size = 0
        self._block_start = -1

    # -- public API -------------------------------------------------------

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Feed the next chunk; return the events it completed."""
        if self.raw_names:
            raise RuntimeError("this decoder hands over raw events: call feed_mixed()")
        return self.feed_mixed(data)  # type: ignore[return-value]  # no raw names: events only

    def feed_mixed(self, data: bytes) -> list[ServerSentEvent | RawEvent]:
        """``feed``, except that events of a type in ``raw_names`` come as ``RawEvent``."""
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
        """End the stream: flush a last line and event that lack a terminator.

        What ``close`` completes never comes raw: the last event takes the slow path.
        """
        events: list[ServerSentEvent | RawEvent] = []
        try:
            if self._head:
                # The stream was shorter than a BOM: those bytes are ordinary data.
                events.extend(self._feed_body(self._head))
            self._head = None
            if self._held:
                # Held bytes are complete lines of the open event and a last,
                # unterminated one (LF only: the buffer never holds a CR).
                lines = self._take().split(b"\n")
                last = lines.pop()
                self._offset = self._run_lines(lines, self._offset, events)
                if last:
                    self._run_lines([last], self._offset, events)
                    self._offset += len(last)
            if self._data:
                self.ended_without_blank_line = True
                self._run_lines([b""], self._offset, events)
        except StreamError as exc:
            exc.events = events
            raise
        return cast(list[ServerSentEvent], events)  # line by line: never raw

    # -- internals --------------------------------------------------------

    def _feed_body(self, data: bytes) -> list[ServerSentEvent | RawEvent]:
        if self._cr_pending:
            self._cr_pending = False
            if data[:1] == b"\n":  # the LF of a CRLF split across chunks
                data = data[1:]
                self._offset += 1
        if not data:
            return []
        if b"\r" in data:
            return self._feed_with_cr(data)
        # LF only: work a whole event at a time. Bytes are held until a blank
        # line arrives: a "\n\n" in the chunk, one across the chunk boundary, or
        # a "\n" at a line start. Every event comes out of the call that
        # delivered the end of its blank line.
        events: list[ServerSentEvent | RawEvent] = []
        try:
            if self._held:
                if b"\n\n" not in data and not (data[0] == 0x0A and self._last_held() == 0x0A):
                    self._hold(data)
                    if self._held + self._block_size > self.max_event_size:
                        self._check_held(events)
                    return events
                data = self._take(data)  # it holds a blank line: no need to look again
            else:
                if data[0] == 0x0A:
                    # A blank line at a line start: it ends whatever event is open.
                    while data[:1] == b"\n":
                        self._offset = self._run_lines([b""], self._offset, events)
                        data = data[1:]
                    if not data:
                        return events
                if b"\n\n" not in data:
                    self._hold(data)
                    if self._held + self._block_size > self.max_event_size:
                        self._check_held(events)
                    return events
            blocks = data.split(b"\n\n")
            tail = blocks.pop()
            self._offset = pos = self._run_blocks(blocks, self._offset, events)
            while tail[:1] == b"\n":  # an odd run of LFs: the last is one more blank line
                self._offset = pos = self._run_lines([b""], pos, events)
                tail = tail[1:]
            if tail:
                self._hold(tail)
                if self._held + self._block_size > self.max_event_size:
                    self._check_held(events)
        except StreamError as exc:
            exc.events = events
            raise
        return events

    def _run_blocks(
        self, blocks: list[bytes], pos: int, events: list[ServerSentEvent | RawEvent]
    ) -> int:
        """Process blocks that each ended with a blank line; return the offset after them.

        The shapes real servers send, ``event: T\\ndata: D`` and ``data: D``,
        become events directly; any other block goes line by line.
        """
        limit = self.max_event_size
        names = _EVENT_NAMES
        raw_names = self.raw_names
        # Only a block that starts a new event may take the shortcut.
        clean = not self._data and self._event_type is None and self._block_start < 0
        for block in blocks:
            if clean and len(block) <= limit:
                name = None
                if block[:7] == b"event: ":
                    newline = block.find(b"\n")
                    if (
                        newline > 0
                        and block[newline + 1 : newline + 7] == b"data: "
                        and block.find(b"\n", newline + 7) < 0
                    ):
                        raw_type = block[7:newline]
                        name = (
                            (names.get(raw_type) or self._name_at(raw_type, pos))
                            if raw_type
                            else "message"  # an empty type is the default one
                        )
                        raw = block[newline + 7 :]
                elif block[:6] == b"data: " and block.find(b"\n") < 0:
                    name, raw = "message", block[6:]
                if name is not None:
                    if name in raw_names:
                        events.append((name, raw, pos, self.last_event_id))
                        pos += len(block) + 2
                        continue
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError as exc:
                        raise utf8_error(exc, pos) from None
                    events.append(ServerSentEvent(name, text, self.last_event_id, None, pos))
                    pos += len(block) + 2
                    continue
            lines = block.split(b"\n")
            lines.append(b"")
            pos = self._run_lines(lines, pos, events)
            clean = True  # the blank line ended whatever block was open
        return pos

    def _name_at(self, raw: bytes, pos: int) -> str:
        try:
            return _event_name(raw)
        except UnicodeDecodeError as exc:
            raise utf8_error(exc, pos) from None

    def _check_held(self, events: list[ServerSentEvent | RawEvent]) -> None:
        """Raise ``EventTooLarge`` once the open event is past the bound.

        An event's size is the bytes of its lines without their line ends, the
        same whatever the chunking. Only when the held bytes could be past the
        bound are their complete lines worked off (which raises any earlier
        problem in them first, as whole chunks would); then what is left is one
        unterminated line, whose size is exact.
        """
        if self._held + self._block_size <= self.max_event_size:
            return
        held = self._take()
        end = held.rfind(b"\n") + 1
        if end:
            lines = held[: end - 1].split(b"\n")
            self._offset = self._run_lines(lines, self._offset, events)
        if end < len(held):
            self._hold(held[end:])
        if self._held + self._block_size > self.max_event_size:
            start = self._block_start if self._block_start >= 0 else self._offset
            raise EventTooLarge(
                f"event starting at byte {start} is larger than {self.max_event_size} bytes",
                offset=start,
            )

    def _hold(self, piece: bytes) -> None:
        """Keep bytes of the open event until its blank line arrives."""
        small = self._small
        if len(piece) >= _PIECE:
            if small:
                self._pieces.append(bytes(small))
                small.clear()
            self._pieces.append(piece)
        else:
            small += piece
            if len(small) >= _GATHER:
                self._pieces.append(bytes(small))
                small.clear()
        self._held += len(piece)

    def _last_held(self) -> int:
        return (self._small or self._pieces[-1])[-1]

    def _take(self, more: bytes = b"") -> bytes:
        """Every held byte (and ``more``) as one bytes object; nothing is held after."""
        pieces, small = self._pieces, self._small
        joined = b"".join((*pieces, small, more)) if pieces else b"".join((small, more))
        pieces.clear()
        small.clear()
        self._held = 0
        return joined

    def _feed_with_cr(self, data: bytes) -> list[ServerSentEvent | RawEvent]:
        if self._held:
            data = self._take(data)
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        events: list[ServerSentEvent | RawEvent] = []
        pos = self._offset
        try:
            if end:
                parts = _LINE_ENDS.split(data[:end])
                parts.pop()  # the empty piece after the last line end
                for i in range(0, len(parts), 2):
                    line = parts[i]
                    self._run_lines([line], pos, events)
                    pos += len(line) + len(parts[i + 1])
                self._offset = pos
                # A final CR may be the first half of a CRLF.
                self._cr_pending = end == len(data) and data[-1] == 0x0D
            if end < len(data):
                self._hold(data[end:])
                self._check_held(events)
        except StreamError as exc:
            exc.events = events
            raise
        return events

    def _run_lines(
        self, lines: list[bytes], pos: int, events: list[ServerSentEvent | RawEvent]
    ) -> int:
        """Process complete lines (each ended by one byte); return the offset after them.

        The hot path: ``data: `` and ``event: `` lines and blank lines are
        handled here with the block state in locals; everything else goes
        through ``_field``.
        """
        data_lines = self._data
        event_type = self._event_type
        start = self._block_start
        size = self._block_size
        limit = self.max_event_size
        names = _EVENT_NAMES
        try:
            for line in lines:
                if line:
                    if start < 0:
                        start = pos
                    size += len(line)
                    if size > limit:
                        raise EventTooLarge(
                            f"event starting at byte {start} is larger than {limit} bytes",
                            offset=start,
                        )
                    if line[:6] == b"data: ":
                        data_lines.append(line[6:])
                    elif line[:7] == b"event: ":
                        event_type = line[7:]
                    else:
                        # _field may raise naming the event: it needs its start.
                        self._event_type, self._block_start = event_type, start
                        self._field(line)
                        event_type = self._event_type
                elif data_lines:
                    raw = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
                    try:
                        name = (
                            (names.get(event_type) or _event_name(event_type))
                            if event_type
                            else "message"
                        )
                        text = raw.decode()
                    except UnicodeDecodeError as exc:
                        raise utf8_error(exc, start) from None
                    events.append(
                        ServerSentEvent(name, text, self.last_event_id, self._block_retry, start)
                    )
                    data_lines = self._data = []
                    event_type = self._block_retry = None
                    start, size = -1, 0
                else:  # a blank line ending a block without data: nothing to dispatch
                    event_type = self._block_retry = None
                    start, size = -1, 0
                pos += len(line) + 1
        finally:
            self._event_type, self._block_start, self._block_size = event_type, start, size
        return pos

    def _field(self, line: bytes) -> None:
        """The less common lines: comments, ``id``, ``retry``, fields without a space."""
        if line[0] == 0x3A:  # ":" starts a comment
            self.comment_count += 1
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event_type = value
        elif name == b"id":
            if b"\0" not in value:
                self.last_event_id = self._decode(value)
        elif name == b"retry" and value.isdigit():
            self._block_retry = self.retry = int(value)
        # Any other field is ignored, as the spec says.

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            start = self._block_start if self._block_start >= 0 else self._offset
            raise utf8_error(exc, start) from None
