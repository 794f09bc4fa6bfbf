"""The SSE decoder: WHATWG rules, chunking invariance, bounds, and typed errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawloop.core.errors import EventTooLarge, InvalidEncoding
from rawloop.core.sse import ServerSentEvent, SSEDecoder

CORPUS = Path(__file__).parents[1] / "corpus"
SSE_FILES = sorted(CORPUS.glob("*.sse"))


def decode_whole(data: bytes, **kwargs: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**kwargs)
    return decoder.feed(data) + decoder.close()


def decode_chunks(chunks: list[bytes], **kwargs: int) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events + decoder.close()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, start = [], 0
    for point in points:
        chunks.append(data[start:point])
        start = point
    chunks.append(data[start:])
    return chunks


def reference(text: str) -> list[tuple[str, str, str | None, int | None]]:
    """A literal reading of the WHATWG algorithm, on the whole text at once.

    Like rawloop (deliberately), it dispatches a last event that lacks its
    blank line.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split(r"\r\n|\r|\n", text)
    out: list[tuple[str, str, str | None, int | None]] = []
    etype, data, last_id, retry = "", None, None, None
    for line in [*lines, ""]:
        if line == "":
            if data is not None:
                out.append((etype or "message", "\n".join(data), last_id, retry))
            etype, data, retry = "", None, None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            etype = value
        elif name == "data":
            data = [*(data or []), value]
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return out


def simple(events: list[ServerSentEvent]) -> list[tuple[str, str, str | None, int | None]]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


# -- the rules, one by one ----------------------------------------------------


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_dispatches_the_same_events(newline: bytes) -> None:
    stream = b"event: a\ndata: 1\n\ndata: 2\ndata: 3\n\n".replace(b"\n", newline)
    assert simple(decode_whole(stream)) == [("a", "1", None, None), ("message", "2\n3", None, None)]


def test_cr_at_end_of_chunk_and_lf_at_start_of_next_are_one_line_end() -> None:
    events = decode_chunks([b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"])
    assert simple(events) == [("message", "x", None, None), ("message", "y", None, None)]
    assert [e.offset for e in events] == [0, 11]


def test_leading_bom_is_skipped_even_when_split() -> None:
    stream = b"\xef\xbb\xbfdata: hi\n\n"
    assert simple(decode_chunks([stream[:1], stream[1:2], stream[2:]])) == [
        ("message", "hi", None, None)
    ]
    # Only at the very start: a BOM later is part of the value.
    assert decode_whole(b"data: a\n\n\xef\xbb\xbfdata: b\n\n")[1:] == []


def test_stream_shorter_than_a_bom_is_data() -> None:
    assert decode_whole(b"\xef") == [] and decode_chunks([b"\xef", b"\xbb"]) == []


def test_comments_are_skipped_and_counted() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b": keep-alive\n:\ndata: x\n: between\n\n") + decoder.close()
    assert simple(events) == [("message", "x", None, None)]
    assert decoder.comment_count == 3


def test_field_without_colon_and_exactly_one_space_stripped() -> None:
    events = decode_whole(b"data\n\ndata:  two spaces\n\ndata:none\n\n")
    assert [e.data for e in events] == ["", " two spaces", "none"]


def test_id_is_sticky_and_ignored_with_nul() -> None:
    events = decode_whole(b"id: 1\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "1", ""]


def test_retry_only_when_all_digits() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 1500\ndata: a\n\nretry: 15x\ndata: b\n\n")
    assert [e.retry for e in events] == [1500, None]
    assert decoder.retry == 1500


def test_unknown_fields_ignored_and_event_without_data_not_dispatched() -> None:
    events = decode_whole(b"foo: bar\ndata: a\n\nevent: lonely\n\ndata: b\n\n")
    assert simple(events) == [("message", "a", None, None), ("message", "b", None, None)]


def test_event_is_dispatched_only_on_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"data: b\n") == []
    assert [e.data for e in decoder.feed(b"\n")] == ["a\nb"]


def test_close_flushes_an_event_that_lacks_its_blank_line() -> None:
    # Real servers cut the final blank line (openai-node #2725): keep the event.
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"type":"response.completed"}') == []
    assert [e.data for e in decoder.close()] == ['{"type":"response.completed"}']
    assert decoder.ended_without_blank_line
    clean = SSEDecoder()
    clean.feed(b"data: a\n\n")
    assert clean.close() == [] and not clean.ended_without_blank_line


def test_offsets_point_at_each_events_first_line() -> None:
    stream = b": c\ndata: a\n\nevent: e\r\ndata: b\r\n\r\n"
    events = decode_whole(stream)
    assert [e.offset for e in events] == [0, 13]
    assert stream[13:21] == b"event: e"


# -- bounds and errors --------------------------------------------------------


def test_oversized_event_raises_with_its_offset() -> None:
    with pytest.raises(EventTooLarge) as info:
        decode_whole(b"data: ok\n\ndata: " + b"x" * 100 + b"\n\n", max_event_size=50)
    assert info.value.offset == 10
    assert "byte 10" in str(info.value)


def test_oversized_line_without_newline_raises_before_buffering_it_all() -> None:
    decoder = SSEDecoder(max_event_size=1000)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            decoder.feed(b"y" * 100)


def test_many_small_lines_count_towards_the_bound() -> None:
    with pytest.raises(EventTooLarge):
        decode_whole(b"data: 0123456789\n" * 20 + b"\n", max_event_size=100)


def test_invalid_utf8_is_a_typed_error_naming_the_offset() -> None:
    with pytest.raises(InvalidEncoding) as info:
        decode_whole(b"data: fine\n\ndata: \xff\xfe\n\n")
    assert info.value.offset == 12


def test_nul_bytes_in_data_pass_through_unchanged() -> None:
    assert decode_whole(b"data: a\0b\n\n")[0].data == "a\0b"


# -- chunking invariance --------------------------------------------------------

_line_end = st.sampled_from(["\n", "\r", "\r\n"])
_value = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
_line = st.one_of(
    st.builds(lambda v: f"data: {v}", _value),
    st.builds(lambda v: f"data:{v}", _value),
    st.builds(lambda v: f"event: {v}", _value),
    st.builds(lambda v: f"id: {v}", _value),
    st.builds(lambda v: f"retry: {v}", st.one_of(st.integers(0, 10**6).map(str), _value)),
    st.builds(lambda v: f": {v}", _value),
    st.sampled_from(["", "", "", "data", "event", "unknown: x"]),
)
_stream = st.builds(
    lambda bom, lines, ends: (
        ("\ufeff" if bom else "") + "".join(line + end for line, end in zip(lines, ends))
    ),
    st.booleans(),
    st.lists(_line, max_size=30),
    st.lists(_line_end, min_size=30, max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(_stream, st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_yields_the_events_of_the_whole(text: str, cuts: list[int]) -> None:
    data = text.encode()
    whole = decode_whole(data)
    assert decode_chunks(split_at(data, cuts)) == whole
    assert simple(whole) == reference(text)


@settings(max_examples=50, deadline=None)
@given(_stream)
def test_one_byte_chunks_yield_the_events_of_the_whole(text: str) -> None:
    data = text.encode()
    assert decode_chunks([data[i : i + 1] for i in range(len(data))]) == decode_whole(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=10))
def test_arbitrary_bytes_give_the_same_outcome_whatever_the_split(
    data: bytes, cuts: list[int]
) -> None:
    def outcome(chunks: list[bytes]) -> object:
        try:
            return decode_chunks(chunks, max_event_size=64)
        except (EventTooLarge, InvalidEncoding) as exc:
            return type(exc)

    whole = outcome([data])
    split = outcome(split_at(data, cuts))
    if isinstance(whole, list) and isinstance(split, list):
        assert split == whole
    else:
        # A bound or an encoding error may surface at a different chunk, but it surfaces.
        assert not isinstance(whole, list) and not isinstance(split, list)


# -- the real corpus ---------------------------------------------------------


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_corpus_stream_decodes_like_the_reference(path: Path) -> None:
    data = path.read_bytes()
    events = decode_whole(data)
    assert simple(events) == reference(data.decode())
    assert decode_chunks([data[i : i + 1] for i in range(len(data))]) == events
    # Every event's offset points at the first line of its block.
    for event in events:
        assert data[event.offset : event.offset + 1] in (b"d", b"e", b":", b"i")


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(SSE_FILES), st.lists(st.integers(min_value=0), min_size=1, max_size=60))
def test_corpus_stream_random_splits(path: Path, cuts: list[int]) -> None:
    data = path.read_bytes()
    assert decode_chunks(split_at(data, cuts)) == decode_whole(data)


def test_corpus_streams_with_crlf_and_cr_line_ends() -> None:
    for path in SSE_FILES[:6]:
        data = path.read_bytes()
        expected = simple(decode_whole(data))
        for newline in (b"\r\n", b"\r"):
            converted = data.replace(b"\n", newline)
            assert (
                simple(decode_chunks(split_at(converted, list(range(0, len(converted), 7)))))
                == expected
            )
