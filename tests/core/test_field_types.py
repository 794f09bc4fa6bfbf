"""Fields of the wrong JSON type: a typed ``InvalidEventData`` naming the event, never a TypeError.

Each case below raised a raw ``TypeError`` (or ``sorted`` / ``str.join`` failure at
the end of the stream) before the accumulators checked field types.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop.core.errors import InvalidEventData, StreamError
from rawloop.core.parse import StreamParser, parse_stream
from rawloop.core.responses import ResponsesAccumulator
from rawloop.core.sse import SSEDecoder


def sse(payload: dict[str, Any], *, event_line: bool = True) -> bytes:
    head = b"event: %s\n" % payload["type"].encode() if event_line else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def call_added(item_id: Any = "fc_1", index: Any = 0) -> dict[str, Any]:
    item = {"type": "function_call", "id": item_id, "call_id": "call_1", "name": "f"}
    return {"type": "response.output_item.added", "output_index": index, "item": item}


COMPLETED = {"type": "response.completed", "response": {"status": "completed", "output": []}}

TEXT = "response.output_text.delta"
ARGS = "response.function_call_arguments.delta"

#: (name, events before the bad one, the bad event, words the message must hold)
CASES: list[tuple[str, list[dict[str, Any]], dict[str, Any], str]] = [
    (
        "string sequence_number before an int one",
        [],
        {"type": "response.created", "sequence_number": "0", "response": {}},
        "sequence_number",
    ),
    (
        "float sequence_number",
        [{"type": "response.created", "sequence_number": 0, "response": {}}],
        {"type": "response.in_progress", "sequence_number": 1.5, "response": {}},
        "sequence_number",
    ),
    (
        "unhashable item_id on a text delta",
        [],
        {"type": TEXT, "item_id": ["msg"], "delta": "x"},
        "item_id",
    ),
    (
        "unhashable content_index on a text delta",
        [],
        {"type": TEXT, "item_id": "msg", "content_index": [1], "delta": "x"},
        "content_index",
    ),
    ("integer text delta", [], {"type": TEXT, "item_id": "msg", "delta": 5}, "delta"),
    (
        "integer reasoning delta",
        [],
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs", "delta": 5},
        "delta",
    ),
    (
        "dict reasoning summary_index",
        [],
        {
            "type": "response.reasoning_summary_text.delta",
            "item_id": "rs",
            "summary_index": {},
            "delta": "x",
        },
        "summary_index",
    ),
    (
        "integer arguments delta",
        [call_added()],
        {"type": ARGS, "item_id": "fc_1", "delta": 5},
        "delta",
    ),
    (
        "unhashable arguments item_id",
        [],
        {"type": ARGS, "item_id": ["fc"], "delta": "x"},
        "item_id",
    ),
    ("integer refusal delta", [], {"type": "response.refusal.delta", "delta": 3}, "delta"),
    (
        "string output_index after an int one",
        [call_added("a", 0)],
        call_added("b", "1"),
        "output_index",
    ),
    ("list output_index", [], call_added("a", [0]), "output_index"),
    ("boolean output_index", [], call_added("a", True), "output_index"),
    ("unhashable item id", [], call_added(["x"]), "item.id"),
    (
        "unhashable id on output_item.done",
        [],
        {"type": "response.output_item.done", "item": {"type": "function_call", "id": ["x"]}},
        "item.id",
    ),
    (
        "integer call_id",
        [],
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"type": "function_call", "id": "fc", "call_id": 7, "name": "f"},
        },
        "call_id",
    ),
    (
        "item that is a list",
        [],
        {"type": "response.output_item.added", "output_index": 0, "item": [1]},
        "item",
    ),
    (
        "terminal output holding an unhashable id",
        [],
        {
            "type": "response.completed",
            "response": {"status": "completed", "output": [{"type": "function_call", "id": {}}]},
        },
        "output[0].id",
    ),
    (
        "terminal output that is a string",
        [],
        {"type": "response.completed", "response": {"status": "completed", "output": "x"}},
        "output",
    ),
    (
        "terminal response id that is a number",
        [],
        {"type": "response.completed", "response": {"id": 3, "status": "completed"}},
        "response.id",
    ),
    (
        "usage that is a list",
        [],
        {"type": "response.completed", "response": {"status": "completed", "usage": [1]}},
        "usage",
    ),
    (
        "progress event with a list item_id",
        [],
        {"type": "response.content_part.added", "item_id": [1], "output_index": 0},
        "item_id",
    ),
    (
        "text done with a dict content_index",
        [],
        {"type": "response.output_text.done", "item_id": "m", "content_index": {}, "text": "t"},
        "content_index",
    ),
]


@pytest.mark.parametrize("event_line", [True, False], ids=["event-line", "data-only"])
@pytest.mark.parametrize(
    ("before", "bad", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_wrong_field_type_is_invalid_event_data_naming_the_event(
    before: list[dict[str, Any]], bad: dict[str, Any], words: str, event_line: bool
) -> None:
    head = b"".join(sse(p, event_line=event_line) for p in before)
    body = head + sse(bad, event_line=event_line) + sse(COMPLETED, event_line=event_line)
    with pytest.raises(InvalidEventData) as info:
        parse_stream(body)
    assert info.value.event_index == len(before)
    assert info.value.offset == len(head)
    assert words in str(info.value)
    assert f"event {len(before)} (at byte {len(head)}" in str(info.value)
    assert info.value.partial is not None


@pytest.mark.parametrize(
    ("before", "bad", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_same_error_byte_by_byte(
    before: list[dict[str, Any]], bad: dict[str, Any], words: str
) -> None:
    body = b"".join(sse(p) for p in [*before, bad, COMPLETED])
    parser = StreamParser()
    with pytest.raises(InvalidEventData) as info:
        for i in range(len(body)):
            parser.feed(body[i : i + 1])
        parser.close()
    assert info.value.event_index == len(before)


def test_feed_events_path_checks_types_too() -> None:
    parser = StreamParser()
    with pytest.raises(InvalidEventData) as info:
        parser.feed_events(sse({"type": TEXT, "item_id": ["m"], "delta": "x"}))
    assert info.value.event_index == 0


def test_valid_int_like_fields_still_pass() -> None:
    body = (
        sse(call_added("fc_1", 0))
        + sse({"type": ARGS, "item_id": "fc_1", "output_index": 0, "delta": '{"a"'})
        + sse({"type": ARGS, "item_id": "fc_1", "output_index": 0, "delta": ":1}"})
        + sse({"type": TEXT, "item_id": "m", "content_index": 0, "delta": "hi"})
        + sse({"type": TEXT, "item_id": None, "content_index": None, "delta": "!"})
        + sse(COMPLETED)
    )
    turn = parse_stream(body)
    assert turn.text == "hi!"
    assert [(c.name, c.arguments) for c in turn.calls] == [("f", '{"a":1}')]


class _Boom(ResponsesAccumulator):
    """An accumulator with a bug: the parser's last line of defence must still type it."""

    def apply(self, payload: Any, event: Any) -> Any:
        if payload and payload.get("type") == "response.in_progress":
            raise ZeroDivisionError("a bug")
        return super().apply(payload, event)


def test_an_unexpected_accumulator_failure_becomes_invalid_event_data() -> None:
    first = sse({"type": "response.created", "response": {"id": "r"}})
    parser = StreamParser()
    parser.accumulator = _Boom()
    parser.decoder.raw_names = parser.accumulator.raw_names
    with pytest.raises(InvalidEventData) as info:
        parser.feed(first + sse({"type": "response.in_progress", "response": {}}))
    assert info.value.event_index == 1
    assert info.value.offset == len(first)
    assert "ZeroDivisionError" in str(info.value)
    assert info.value.partial is not None and info.value.partial.response_id == "r"


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = (
    "item_id",
    "content_index",
    "output_index",
    "summary_index",
    "delta",
    "sequence_number",
    "item",
    "response",
    "arguments",
    "text",
)
_TYPES = (
    TEXT,
    ARGS,
    "response.function_call_arguments.done",
    "response.output_text.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.reasoning_text.delta",
    "response.refusal.delta",
    "response.created",
    "response.completed",
    "response.content_part.added",
    "error",
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_TYPES), st.dictionaries(st.sampled_from(_KEYS), _json, max_size=5)
        ),
        max_size=6,
    )
)
def test_any_field_types_give_a_turn_or_a_typed_error(events: list[tuple[str, Any]]) -> None:
    """The accumulator alone (not the parser's last line of defence) types every failure."""
    body = b"".join(sse({**fields, "type": etype}) for etype, fields in events)
    decoder, accumulator = SSEDecoder(), ResponsesAccumulator()
    with contextlib.suppress(StreamError):
        for event in decoder.feed(body) + decoder.close():
            accumulator.feed(event)
        accumulator.finish()


def test_an_earlier_bad_event_wins_over_a_later_decoder_error_in_the_same_chunk() -> None:
    bad_json = b"data: {nope\n\n"
    body = bad_json + b"data: \xff\n\n"
    whole = StreamParser()
    with pytest.raises(StreamError) as at_once:
        whole.feed(body)
    split = StreamParser()
    with pytest.raises(StreamError) as in_two:
        split.feed(bad_json)
        split.feed(body[len(bad_json) :])
    assert type(at_once.value) is type(in_two.value) is InvalidEventData
    assert at_once.value.offset == in_two.value.offset == 0
