"""The SSE decoder against the WHATWG event-stream rules, under every chunking.

The reference below is written from the spec's parsing algorithm (HTML Living
Standard, "Interpreting an event stream"), one rule at a time, over bytes and
with the byte position of everything, plus rawloop's documented choices:

* bytes that are not UTF-8 raise ``InvalidEncoding`` at the event's first byte
  (in a dispatched event's data or type, or in an ``id`` value) rather than
  being replaced;
* an event whose lines (line ends not counted) exceed ``max_event_size`` raises
  ``EventTooLarge`` at the event's first byte;
* at the end of the stream a last line without its line end is still a line,
  and an event without its blank line is still dispatched.

Every stream is then fed whole, byte by byte and cut at random places, and must
give the same events, the same error at the same offset, and each event out of
the ``feed()`` call that delivered the line end of its blank line.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop.core.errors import EventTooLarge, InvalidEncoding, InvalidEventData, StreamError
from rawloop.core.parse import StreamParser
from rawloop.core.sse import ServerSentEvent, SSEDecoder

Event = tuple[str, str, "str | None", "int | None", int]  # type, data, id, retry, offset
Error = tuple[str, int]  # error type name, offset


@dataclass
class Outcome:
    events: list[Event]
    error: Error | None
    #: For each event: the index of the chunk whose feed() returned it (-1: close()).
    came_out: list[int]


# -- the reference ------------------------------------------------------------------


def _lines(data: bytes) -> list[tuple[bytes, int, int]]:
    """Every line as (content, offset, offset of the first byte of its line end).

    A line ends at CR LF, at a lone LF or at a lone CR. A last line with no line
    end gets the stream's length as its end.
    """
    out, start, i = [], 0, 0
    while i < len(data):
        byte = data[i]
        if byte in (0x0A, 0x0D):
            out.append((data[start:i], start, i))
            i += 2 if data[i : i + 2] == b"\r\n" else 1
            start = i
        else:
            i += 1
    if start < len(data):
        out.append((data[start:], start, len(data)))
    return out


def reference(data: bytes, max_event_size: int = 1 << 30) -> tuple[Outcome, list[int]]:
    """The spec's algorithm over ``data``: the outcome, and where each event's blank line ends."""
    base = 0
    if data.startswith(b"\xef\xbb\xbf"):  # one leading BOM is dropped
        base, data = 3, data[3:]
    events: list[Event] = []
    ends: list[int] = []
    last_id: str | None = None
    event_type, data_lines, retry = b"", None, None
    start, size = -1, 0

    def fail(kind: type[StreamError]) -> tuple[Outcome, list[int]]:
        return Outcome(events, (kind.__name__, start), []), ends

    terminated = data.endswith((b"\n", b"\r"))
    for line, offset, end in [*_lines(data), (b"", len(data), -1)]:
        offset += base
        if line:  # a line of the event being built
            if start < 0:
                start = offset
            size += len(line)
            if size > max_event_size:
                return fail(EventTooLarge)
            if line.startswith(b":"):
                continue  # a comment
            name, colon, value = line.partition(b":")
            if colon and value.startswith(b" "):
                value = value[1:]
            if name == b"event":
                event_type = value
            elif name == b"data":
                data_lines = [*(data_lines or []), value]
            elif name == b"id" and b"\0" not in value:
                try:
                    last_id = value.decode()
                except UnicodeDecodeError:
                    return fail(InvalidEncoding)
            elif name == b"retry" and value.isdigit():
                retry = int(value)
            continue
        # A blank line dispatches (the last, made-up one: only for an unterminated event).
        if end < 0 and terminated and data_lines is None:
            break
        if data_lines is not None:
            try:
                text = b"\n".join(data_lines).decode()
                etype = event_type.decode() or "message"
            except UnicodeDecodeError:
                return fail(InvalidEncoding)
            events.append((etype, text, last_id, retry, start))
            ends.append(-1 if end < 0 else end + base)
        event_type, data_lines, retry = b"", None, None
        start, size = -1, 0
    return Outcome(events, None, []), ends


# -- running the decoder ----------------------------------------------------------------


def _event(e: ServerSentEvent) -> Event:
    return (e.event, e.data, e.id, e.retry, e.offset)


def run(chunks: list[bytes], max_event_size: int = 1 << 30) -> Outcome:
    decoder = SSEDecoder(max_event_size)
    events: list[Event] = []
    came_out: list[int] = []
    try:
        for i, chunk in enumerate([*chunks, None]):
            try:
                got = decoder.close() if chunk is None else decoder.feed(chunk)
            except StreamError as exc:
                # What the same call completed before the problem is not lost.
                events += [_event(e) for e in exc.events]
                raise
            events += [_event(e) for e in got]
            came_out += [-1 if chunk is None else i] * len(got)
    except (EventTooLarge, InvalidEncoding) as exc:
        assert exc.offset is not None
        return Outcome(events, (type(exc).__name__, exc.offset), came_out)
    return Outcome(events, None, came_out)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)])]


def chunk_of(chunks: list[bytes], byte: int) -> int:
    """The index of the chunk that holds stream byte ``byte``."""
    seen = 0
    for i, chunk in enumerate(chunks):
        seen += len(chunk)
        if byte < seen:
            return i
    raise AssertionError(f"byte {byte} is past the end")


def check(data: bytes, chunks: list[bytes], max_event_size: int = 1 << 30) -> Outcome:
    """Feed ``chunks`` (which join to ``data``) and hold the result to the reference."""
    assert b"".join(chunks) == data
    expected, ends = reference(data, max_event_size)
    got = run(chunks, max_event_size)
    assert (got.events, got.error) == (expected.events, expected.error)
    if got.error is None:
        # Each event comes out of the call that delivered the end of its blank line.
        assert got.came_out == [-1 if end < 0 else chunk_of(chunks, end) for end in ends]
    return got


def every_way(data: bytes, max_event_size: int = 1 << 30) -> Outcome:
    whole = check(data, [data], max_event_size)
    check(data, [data[i : i + 1] for i in range(len(data))], max_event_size)
    check(data, [data[i : i + 2] for i in range(0, len(data), 2)], max_event_size)
    return whole


# -- the rules, one by one ----------------------------------------------------------------


def test_an_empty_event_field_is_the_default_type() -> None:
    for stream in (b"event: \ndata: x\n\n", b"event:\ndata: x\n\n", b"event: \r\ndata: x\r\n\r\n"):
        assert [e[0] for e in every_way(stream).events] == ["message"]
    # The last event field of a block wins, empty or not.
    assert [e[0] for e in every_way(b"event: a\nevent:\ndata: x\n\n").events] == ["message"]


def test_the_cr_path_then_a_lone_lf_blank_line_dispatches_at_once() -> None:
    chunks = [b"data: A\r\n", b"data: B\r", b"\n", b"data: C\r\n", b"\n"]
    got = check(b"".join(chunks), chunks)
    assert [e[1] for e in got.events] == ["A\nB\nC"]
    assert got.came_out == [4]


def test_crlf_then_lf_fed_byte_by_byte() -> None:
    data = b"data: first\r\n\ndata: second\r\n\n"
    got = every_way(data)
    assert [e[1] for e in got.events] == ["first", "second"]
    decoder = SSEDecoder()
    out = [[e.data for e in decoder.feed(data[i : i + 1])] for i in range(len(data))]
    assert out[13] == ["first"] and out[len(data) - 1] == ["second"]


@pytest.mark.parametrize(
    "stream",
    [
        b"data: a\r\rdata: b\n\ndata: c\r\n\r\n",
        b"data: a\n\rdata: b\r\n\n",
        b"\n\ndata: a\n\n\n\ndata: b\n\n\n",
        b"data: a\r\n\r\n\r\n\r\ndata: b",
        b":c\r:d\ndata:x\r\n\r",
        b"\r\n\r\n",
        b"\xef\xbb\xbf\r\ndata: a\r\n\r\n",
    ],
)
def test_mixed_line_ends_and_runs_of_blank_lines(stream: bytes) -> None:
    every_way(stream)


def test_a_bom_is_dropped_once_and_only_at_the_start() -> None:
    got = every_way(b"\xef\xbb\xbfdata: a\n\n\xef\xbb\xbfdata: b\n\n")
    assert [(e[1], e[4]) for e in got.events] == [("a", 3)]  # the second "data" is not a field


def test_fields_without_colon_and_one_space_stripped() -> None:
    got = every_way(b"data\n\ndata:  two\n\ndata:none\n\nevent\ndata\n\n")
    assert [(e[0], e[1]) for e in got.events] == [
        ("message", ""),
        ("message", " two"),
        ("message", "none"),
        ("message", ""),
    ]


def test_id_is_sticky_ignored_with_nul_and_reset_by_an_empty_value() -> None:
    got = every_way(b"id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n")
    assert [e[2] for e in got.events] == ["1", "1", "1", ""]


def test_retry_needs_ascii_digits_only() -> None:
    got = every_way(b"retry: 10\ndata: a\n\nretry: 1x\ndata: b\n\nretry:\ndata: c\n\n")
    assert [e[3] for e in got.events] == [10, None, None]


def test_an_invalid_id_names_the_event_it_is_in() -> None:
    data = b"data: a\n\n: note\nid: \xff\ndata: b\n\n"
    got = every_way(data)
    assert got.error == ("InvalidEncoding", 9)
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\n")
    with pytest.raises(InvalidEncoding) as info:
        decoder.feed(b": note\nid: \xff\ndata: b\n\n")
    assert info.value.offset == 9 and "byte 9" in str(info.value)


def test_an_event_of_exactly_the_limit_is_accepted_in_any_chunking() -> None:
    for body in (
        b"data: " + b"x" * 94,
        b"event: e\ndata: " + b"y" * 86,
        b": c\ndata: " + b"z" * 93,
    ):
        size = len(body) - body.count(b"\n")
        data = body + b"\n\n"
        assert len(every_way(data, max_event_size=size).events) == 1
        for point in range(len(data) + 1):
            check(data, [data[:point], data[point:]], max_event_size=size)
        assert every_way(data, max_event_size=size - 1).error == ("EventTooLarge", 0)


def test_an_earlier_events_error_is_not_swallowed_by_a_later_one() -> None:
    data = b"data: ok\n\ndata: \xff\n\ndata: " + b"x" * 200 + b"\n\n"
    got = every_way(data, max_event_size=100)
    assert got.error == ("InvalidEncoding", 10)
    assert [e[1] for e in got.events] == ["ok"]
    # A bad id early in an event that then grows too large: the id is named.
    data = b"id: \xff\ndata: " + b"x" * 200
    assert every_way(data, max_event_size=100).error == ("InvalidEncoding", 0)


def test_a_long_line_without_a_newline_is_held_in_one_buffer() -> None:
    """Many tiny chunks of one line must not cost one object per chunk."""
    decoder = SSEDecoder()
    chunk = b"ab"
    decoder.feed(b"data: ")
    tracemalloc.start()
    try:
        for _ in range(1 << 17):  # 256 KiB in 2-byte chunks
            decoder.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes held for 256 KiB of data"
    assert [len(e.data) for e in decoder.feed(b"\n\n")] == [1 << 18]


def test_an_unterminated_last_event_is_flushed_by_close() -> None:
    got = every_way(b"data: a\n\ndata: b")
    assert [e[1] for e in got.events] == ["a", "b"] and got.came_out[-1] == -1
    assert every_way(b"data: a\n\nevent: x\n").events[1:] == []


# -- the raw path of the parser ----------------------------------------------------------------


def test_invalid_utf8_on_the_raw_path_carries_the_partial_turn() -> None:
    created = (
        b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
    )
    bad = b"event: response.output_text.delta\ndata: \xff\n\n"
    parser = StreamParser()
    with pytest.raises(InvalidEncoding) as info:
        parser.feed(created + bad)
    assert info.value.offset == len(created)
    assert info.value.partial is not None and info.value.partial.response_id == "r"
    chunked = StreamParser()
    chunked.feed(created)
    with pytest.raises(InvalidEncoding) as again:
        chunked.feed(bad)
    assert again.value.partial is not None and again.value.offset == len(created)


def test_raw_events_keep_decoder_order_with_a_later_decoder_error() -> None:
    bad_raw = b'event: response.output_text.delta\ndata: {"x":\n\n'
    parser = StreamParser(max_event_size=64)
    with pytest.raises(InvalidEventData) as info:
        parser.feed(bad_raw + b"data: " + b"x" * 100 + b"\n\n")
    assert info.value.offset == 0


# -- any stream, any chunking -------------------------------------------------------------------

_value = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=8).map(
        str.encode
    ),
    st.sampled_from([b"", b" ", b"\0", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"12", b"1 2"]),
)
_field = st.sampled_from([b"data", b"event", b"id", b"retry", b"", b"dat", b"Data"])
_line = st.one_of(
    st.builds(lambda f, v: f + b": " + v, _field, _value),
    st.builds(lambda f, v: f + b":" + v, _field, _value),
    _field,
    st.just(b""),
    st.just(b""),
)
_end = st.sampled_from([b"\n", b"\r", b"\r\n", b"\n", b"\n"])
_stream = st.builds(
    lambda bom, pairs, cut_last: (
        (b"\xef\xbb\xbf" if bom else b"")
        + b"".join(line + end for line, end in pairs)[: -1 if cut_last else None]
    ),
    st.booleans(),
    st.lists(st.tuples(_line, _end), max_size=24),
    st.booleans(),
)


@settings(max_examples=250, deadline=None)
@given(_stream, st.lists(st.integers(min_value=0), max_size=12), st.integers(4, 60))
def test_any_stream_any_chunking_matches_the_spec(
    data: bytes, points: list[int], limit: int
) -> None:
    check(data, [data])
    check(data, cut(data, points))
    check(data, cut(data, points), max_event_size=limit)
    check(data, [data], max_event_size=limit)


@settings(max_examples=60, deadline=None)
@given(_stream, st.integers(4, 60))
def test_any_stream_byte_by_byte_matches_the_spec(data: bytes, limit: int) -> None:
    check(data, [data[i : i + 1] for i in range(len(data))])
    check(data, [data[i : i + 1] for i in range(len(data))], max_event_size=limit)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.lists(st.integers(min_value=0), max_size=8))
def test_arbitrary_bytes_match_the_spec_under_any_chunking(data: bytes, points: list[int]) -> None:
    check(data, [data], max_event_size=40)
    check(data, cut(data, points), max_event_size=40)
