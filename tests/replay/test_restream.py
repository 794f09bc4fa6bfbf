"""A recorded JSON answer streamed (``rawloop.replay.restream``); hostile chunking and its fault.

Restreamed answers parse to the turn of the recorded stream however they are
cut; any recorded JSON restreams or is refused by name; hostile chunking
loses no event, and ``drop-final-blank-line`` loses exactly the last one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop import SSEDecoder
from rawloop.core.assemble import assemble
from rawloop.core.errors import StreamError
from rawloop.core.parse import StreamParser
from rawloop.replay.chunking import rechunk
from rawloop.replay.faults import drop_final_blank_line
from rawloop.replay.replayer import Responder, replay
from rawloop.replay.restream import restream
from rawloop.trace.format import Trace

from .strategies import json_values, texts

pytestmark = pytest.mark.anyio


# -- a recorded JSON answer, streamed: rawloop.replay.restream --------------------------------

TRACES = sorted((Path(__file__).parents[2] / "traces").glob("*.jsonl"))


def _answers() -> list[tuple[str, str, bytes]]:
    """(name, dialect, recorded stream) of every successful answer in the bundled traces."""
    out = []
    for path in TRACES:
        trace = Trace.load(path)
        for exchange in trace.exchanges():
            if exchange.response and exchange.response["status"] == 200 and not exchange.error:
                name = f"{path.stem}-{exchange.iteration}-{exchange.attempt}"
                out.append((name, trace.dialect, exchange.body))
    return out


def _summary(turn: Any) -> Any:
    calls = [(c.call_id, c.name, c.arguments, c.item_id) for c in turn.calls]
    return (turn.response_id, turn.text, calls, turn.usage, turn.status, turn.finish_reason)


def _parse(dialect: str, chunks: list[bytes]) -> Any:
    parser = StreamParser(dialect)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.close()


@pytest.mark.parametrize("name,dialect,body", _answers(), ids=lambda v: str(v)[:24])
def test_a_json_answer_restreams_to_the_turn_of_the_recorded_stream(
    name: str, dialect: str, body: bytes
) -> None:
    _, payload = assemble(body, dialect)
    streamed = restream(payload, dialect, include_usage=True)
    assert _summary(_parse(dialect, [streamed])) == _summary(_parse(dialect, [body])), name
    events = [orjson.loads(e.data) for e in SSEDecoder().feed(streamed) if e.data != "[DONE]"]
    if dialect == "responses":
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["response"] == payload  # the recorded object, as the last event
        added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
        assert added == [item["id"] for item in payload["output"]]
    else:
        assert {e["id"] for e in events} == {payload["id"]}
        assert streamed.endswith(b"data: [DONE]\n\n")
        without = restream(payload, dialect)
        assert b'"usage":{' in streamed and b'"usage"' not in without  # only when asked


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_restreamed_answer_parses_the_same_however_it_is_cut(data: st.DataObject) -> None:
    name, dialect, body = data.draw(st.sampled_from(_answers()), label="answer")
    streamed = restream(assemble(body, dialect)[1], dialect, include_usage=True)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(streamed) - 1), max_size=40)))
    chunks = [streamed[a:b] for a, b in zip([0, *cuts], [*cuts, len(streamed)])]
    assert _summary(_parse(dialect, chunks)) == _summary(_parse(dialect, [streamed])), name


def test_restream_refuses_what_is_not_an_answer() -> None:
    with pytest.raises(StreamError, match="not a Responses API response"):
        restream({"object": "list"}, "responses")
    with pytest.raises(StreamError, match="no choices"):
        restream([], "chat")


# -- hostile chunking keeps every event; dropping the last blank line is a fault -----------------


@settings(max_examples=60, deadline=None)
@given(answer=st.sampled_from(_answers()), seed=st.integers(0, 2**32 - 1))
def test_hostile_chunking_loses_no_event(answer: tuple[str, str, bytes], seed: int) -> None:
    _, _, body = answer
    decoder = SSEDecoder()
    events = [e for chunk in rechunk([body], "hostile", seed=seed) for e in decoder.feed(chunk)]
    # No close(): a last event without its blank line would be discarded here.
    assert [e.data for e in events] == [e.data for e in SSEDecoder().feed(body)]


@pytest.mark.parametrize(
    "body,expected",
    [
        (b"data: 1\n\ndata: 2\n\n", b"data: 1\n\ndata: 2\n"),
        (b"data: 1\r\n\r\n", b"data: 1\r\n"),
        (b"data: 1\r\r", b"data: 1\r"),
        (b"data: 1\r\n", b"data: 1\r\n"),  # no blank line to drop: one CRLF is one line end
        (b"data: 1", b"data: 1"),
        (b"", b""),
    ],
)
def test_drop_final_blank_line(body: bytes, expected: bytes) -> None:
    assert drop_final_blank_line(body) == expected
    assert drop_final_blank_line(expected) == expected


@pytest.mark.parametrize("chunking", ["recorded", "hostile"])
async def test_in_process_the_drop_final_blank_line_fault_is_retried_and_the_run_matches(
    chunking: str,
) -> None:
    path = TRACES[0].parent / "tool-roundtrip.jsonl"
    trace = Trace.load(path)
    responder = Responder(trace, chunking=chunking, faults=["attempt=0:drop-final-blank-line"])
    exchange = trace.exchanges()[0]
    cut = b"".join(responder.shape(exchange, 0, 0).chunks)
    whole = b"".join(responder.shape(exchange, 0, 1).chunks)
    assert len(SSEDecoder().feed(cut)) == len(SSEDecoder().feed(whole)) - 1
    report = await replay(
        path, chunking=chunking, faults=["iter=0,attempt=0:drop-final-blank-line"]
    )
    assert report.identical, str(report)


# An untrusted recorded answer: any JSON shaped roughly like one.
_parts = (
    st.fixed_dictionaries(
        {}, optional={"type": st.sampled_from(["output_text", "refusal", "x"]), "text": json_values}
    )
    | json_values
)
_items = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["message", "function_call", "reasoning", "custom_tool_call", "x"]
            ),
            "id": json_values,
            "content": st.lists(_parts, max_size=3) | json_values,
            "summary": st.lists(_parts, max_size=2) | json_values,
            "arguments": json_values,
            "status": json_values,
        },
    )
    | json_values
)
_responses = st.fixed_dictionaries(
    {"object": st.just("response")},
    optional={"output": st.lists(_items, max_size=3) | json_values, "status": json_values},
)
_choices = st.fixed_dictionaries(
    {}, optional={"message": json_values | st.dictionaries(texts, json_values, max_size=3)}
)
_completions = st.fixed_dictionaries(
    {"choices": st.lists(_choices | json_values, max_size=2)},
    optional={"usage": json_values, "id": json_values},
)


@settings(max_examples=150, deadline=None)
@given(
    payload=_responses | _completions | json_values, dialect=st.sampled_from(["responses", "chat"])
)
def test_any_recorded_json_restreams_or_is_refused_by_name(payload: Any, dialect: str) -> None:
    try:
        body = restream(payload, dialect, include_usage=True)
    except StreamError:
        return
    assert body.endswith(b"\n\n")
    assert all(e.data for e in SSEDecoder().feed(body))
