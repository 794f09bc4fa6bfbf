"""StreamParser's raw fast path against the plain path: the same turns, deltas and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop.core.dialect import get_dialect
from rawloop.core.errors import StreamError
from rawloop.core.parse import StreamParser
from rawloop.core.sse import SSEDecoder

CORPUS = Path(__file__).parents[1] / "corpus"
STREAMS = sorted(CORPUS.glob("*.sse"))


def dialect_of(path: Path) -> str:
    return "chat" if path.name.startswith("chat-") else "responses"


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


def plain(chunks: list[bytes], dialect: str) -> Any:
    """The reference: every event decoded into a ServerSentEvent and fed one by one."""
    decoder = SSEDecoder()
    accumulator = get_dialect(dialect).accumulator()
    deltas = []
    try:
        for chunk in chunks:
            for event in decoder.feed(chunk):
                deltas += accumulator.feed(event)
        for event in decoder.close():
            accumulator.feed(event)
        turn = accumulator.finish()
    except StreamError as exc:
        return ("error", type(exc).__name__, exc.offset, getattr(exc, "event_index", None))
    return ("ok", turn.to_dict(), [(d.kind, d.text, d.call_id) for d in deltas])


def fused(chunks: list[bytes], dialect: str) -> Any:
    parser = StreamParser(dialect)
    deltas = []
    try:
        for chunk in chunks:
            deltas += parser.feed(chunk)
        turn = parser.close()
    except StreamError as exc:
        return ("error", type(exc).__name__, exc.offset, getattr(exc, "event_index", None))
    return ("ok", turn.to_dict(), [(d.kind, d.text, d.call_id) for d in deltas])


def test_the_fast_path_is_taken() -> None:
    decoder = StreamParser().decoder
    assert "response.output_text.delta" in decoder.raw_names
    raw = decoder.feed_mixed((CORPUS / "responses-text-minimal-1.sse").read_bytes())
    assert any(isinstance(e, tuple) for e in raw)


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_every_corpus_stream_gives_the_same_result_both_ways(path: Path) -> None:
    data = path.read_bytes()
    for size in (1, 7, 4096, len(data)):
        chunks = cut(data, list(range(size, len(data), size)))
        assert fused(chunks, dialect_of(path)) == plain(chunks, dialect_of(path))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(STREAMS), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_gives_the_same_result_both_ways(path: Path, cuts: list[int]) -> None:
    chunks = cut(path.read_bytes(), cuts)
    assert fused(chunks, dialect_of(path)) == plain(chunks, dialect_of(path))


TEXT_DELTA = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"m","output_index":0,"content_index":0,"delta":"hi","sequence_number":%d}\n\n'


@pytest.mark.parametrize(
    "bad",
    [
        b"event: response.output_text.delta\ndata: {not json\n\n",
        b"event: response.output_text.delta\ndata: [1, 2]\n\n",
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":7}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"\xff"}\n\n',
        b'event: response.output_text.delta\ndata: {"type":"response.something_else","x":1}\n\n',
        b'event: response.function_call_arguments.delta\ndata: {"type":"response.function_call_arguments.delta","delta":"x"}\n\n',
        b'event: response.reasoning_text.delta\ndata: {"no_type":1}\n\n',
        TEXT_DELTA % 5,  # a sequence gap
    ],
)
def test_malformed_fast_path_events_fail_the_same_way(bad: bytes) -> None:
    data = (CORPUS / "responses-text-minimal-1.sse").read_bytes()
    head, _, rest = data.partition(b"\n\nevent: response.output_text.delta")
    stream = head + b"\n\n" + bad + b"event: response.output_text.delta" + rest
    for chunks in ([stream], cut(stream, list(range(5, len(stream), 5)))):
        assert fused(chunks, "responses") == plain(chunks, "responses")


def test_hooks_still_get_real_events_for_raw_ones() -> None:
    data = (CORPUS / "responses-function-call-1.sse").read_bytes()
    triples = StreamParser().feed_events(data)
    events = [event for event, _, _ in triples]
    decoded = SSEDecoder().feed(data)
    assert events == decoded
