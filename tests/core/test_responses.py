"""The Responses dialect: every corpus stream, odd streams, malformed input, request shapes."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop.core.errors import (
    ConfigurationError,
    EventTooLarge,
    IncompleteStream,
    InvalidEncoding,
    InvalidEventData,
)
from rawloop.core.parse import StreamParser, parse_stream
from rawloop.core.responses_request import build_request, normalize_input, tool_result_items
from rawloop.core.turn import Turn

CORPUS = Path(__file__).parents[1] / "corpus"
RESPONSES = sorted(p for p in CORPUS.glob("responses-*.sse"))


def payloads(data: bytes) -> list[dict[str, Any]]:
    """An independent, naive reader: one JSON object per ``data:`` line (LF-only corpus)."""
    out = []
    for line in data.decode().split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def expected_from_stream(data: bytes) -> dict[str, Any]:
    events = payloads(data)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    calls = [
        (e["item"]["call_id"], e["item"]["name"], e["item"]["arguments"])
        for e in events
        if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
    ]
    terminal = [e for e in events if e["type"] in ("response.completed", "response.incomplete")]
    response = terminal[-1]["response"]
    return {
        "text": text,
        "calls": calls,
        "status": response["status"],
        "usage": response.get("usage"),
        "id": response["id"],
        "output": response["output"],
    }


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.name)
def test_corpus_stream_turn_matches_what_the_stream_says(path: Path) -> None:
    data = path.read_bytes()
    expected = expected_from_stream(data)
    turn = parse_stream(data)
    assert turn.text == expected["text"]
    assert [(c.call_id, c.name, c.arguments) for c in turn.calls] == expected["calls"]
    assert turn.status == expected["status"]
    assert turn.usage == expected["usage"]
    assert turn.response_id == expected["id"]
    assert turn.output == expected["output"]
    assert turn.unknown_events == []
    assert turn.warnings == []
    # Byte by byte gives exactly the same turn.
    assert parse_stream([data[i : i + 1] for i in range(len(data))]) == turn


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(RESPONSES), st.lists(st.integers(min_value=0), min_size=1, max_size=40))
def test_corpus_stream_any_chunking_gives_the_same_turn(path: Path, cuts: list[int]) -> None:
    data = path.read_bytes()
    assert parse_stream(chunked(data, cuts)) == parse_stream(data)


def test_function_call_is_correlated_by_item_id_not_by_done_event() -> None:
    turn = parse_stream((CORPUS / "responses-function-call-1.sse").read_bytes())
    (call,) = turn.calls
    assert (call.name, call.call_id) == ("multiply", "call_sVidsfFJ6zlzRpelrPkTPlpd")
    assert call.parsed_arguments() == {"a": 1231, "b": 2331}
    assert call.item_id == turn.output[0]["id"]


def test_function_call_after_reasoning_keeps_reasoning_item_with_encrypted_content() -> None:
    turn = parse_stream((CORPUS / "responses-reasoning-function-call-2.sse").read_bytes())
    assert [item["type"] for item in turn.output] == ["reasoning", "function_call"]
    assert turn.output[0]["encrypted_content"]
    assert turn.calls[0].name == "final_result"


def test_deltas_report_calls_when_arguments_are_complete() -> None:
    parser = StreamParser()
    deltas = parser.feed((CORPUS / "responses-text-then-function-call-1.sse").read_bytes())
    kinds = [d.kind for d in deltas]
    calls = [d for d in deltas if d.kind == "call"]
    assert len(calls) == 1 and calls[0].name == "get_capital"
    assert calls[0].text == '{"country":"PotatoLand"}'
    # Every arguments delta already knows its call's id and name.
    assert all(d.call_id and d.name for d in deltas if d.kind == "arguments")
    assert kinds.index("text") < kinds.index("arguments") < kinds.index("call")


def test_incomplete_is_terminal_and_carries_the_reason() -> None:
    turn = parse_stream((CORPUS / "responses-incomplete-1.sse").read_bytes())
    assert turn.status == "incomplete"
    assert turn.finish_reason == "max_output_tokens"


def test_openrouter_stream_without_event_lines_ending_in_done() -> None:
    turn = parse_stream((CORPUS / "responses-openrouter-compat-1.sse").read_bytes())
    assert turn.status == "completed" and turn.text == "4"
    assert turn.reasoning  # reasoning_text deltas
    assert turn.warnings == []


def test_resumed_stream_without_created_event() -> None:
    data = (CORPUS / "responses-background-resume-1.sse").read_bytes()
    assert b"response.created" not in data
    turn = parse_stream(data)
    assert turn.status == "completed" and turn.text.startswith("Sure!")


def test_hosted_tool_items_are_kept_as_output_items() -> None:
    kinds = {
        "responses-web-search-1.sse": "web_search_call",
        "responses-file-search-1.sse": "file_search_call",
        "responses-mcp-1.sse": "mcp_call",
        "responses-reasoning-code-interpreter-1.sse": "code_interpreter_call",
    }
    for name, kind in kinds.items():
        turn = parse_stream((CORPUS / name).read_bytes())
        assert kind in [item["type"] for item in turn.output], name
        assert turn.calls == []


# -- hand-built streams ------------------------------------------------------------


def sse(*events: dict[str, Any], event_lines: bool = True) -> bytes:
    out = b""
    for e in events:
        if event_lines:
            out += f"event: {e['type']}\n".encode()
        out += b"data: " + json.dumps(e).encode() + b"\n\n"
    return out


def response(
    status: str, output: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"id": "resp_1", "model": "m", "status": status, "output": output or [], **extra}


def fc_item(item_id: str, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def two_call_stream() -> list[dict[str, Any]]:
    return [
        {"type": "response.created", "response": response("in_progress"), "sequence_number": 0},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": fc_item("fc_a", "call_a", "f"),
            "sequence_number": 1,
        },
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": fc_item("fc_b", "call_b", "g"),
            "sequence_number": 2,
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_b",
            "output_index": 1,
            "delta": '{"y":',
            "sequence_number": 3,
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_a",
            "output_index": 0,
            "delta": '{"x":1}',
            "sequence_number": 4,
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_b",
            "output_index": 1,
            "delta": "2}",
            "sequence_number": 5,
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_a",
            "output_index": 0,
            "arguments": '{"x":1}',
            "sequence_number": 6,
        },
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_b",
            "output_index": 1,
            "arguments": '{"y":2}',
            "sequence_number": 7,
        },
    ]


def test_interleaved_parallel_function_calls() -> None:
    items = [fc_item("fc_a", "call_a", "f", '{"x":1}'), fc_item("fc_b", "call_b", "g", '{"y":2}')]
    events = [
        *two_call_stream(),
        {
            "type": "response.completed",
            "response": response("completed", items),
            "sequence_number": 8,
        },
    ]
    turn = parse_stream(sse(*events))
    assert [(c.call_id, c.name, c.arguments) for c in turn.calls] == [
        ("call_a", "f", '{"x":1}'),
        ("call_b", "g", '{"y":2}'),
    ]


def test_cut_stream_raises_incomplete_with_the_partial_turn() -> None:
    data = sse(*two_call_stream())
    with pytest.raises(IncompleteStream) as info:
        parse_stream(data)
    partial = info.value.partial
    assert isinstance(partial, Turn) and partial.status == "in_progress"
    assert [(c.name, c.arguments) for c in partial.calls] == [("f", '{"x":1}'), ("g", '{"y":2}')]


def test_cut_mid_event_keeps_the_text_so_far() -> None:
    data = (CORPUS / "responses-text-minimal-1.sse").read_bytes()
    cut = data[: data.index(b"response.output_text.done")]
    with pytest.raises(IncompleteStream) as info:
        parse_stream(cut)
    assert info.value.partial is not None and info.value.partial.text == "pong"


def test_failed_response_is_terminal_and_keeps_the_error() -> None:
    error = {"code": "server_error", "message": "boom"}
    turn = parse_stream(
        sse({"type": "response.failed", "response": response("failed", error=error)})
    )
    assert turn.status == "failed" and turn.error == error


def test_error_event_ends_the_stream_without_raising() -> None:
    data = sse(
        {"type": "response.created", "response": response("in_progress")},
        {"type": "error", "code": "rate_limit_exceeded", "message": "slow down", "param": None},
    )
    turn = parse_stream(data)
    assert turn.status == "failed"
    assert turn.error == {"code": "rate_limit_exceeded", "message": "slow down", "param": None}


def test_keepalive_and_unknown_events_are_kept_not_fatal() -> None:
    data = (
        b": ping\n\n"
        + sse({"type": "keepalive", "sequence_number": 0})
        + sse({"type": "response.brand_new_thing", "x": 1, "sequence_number": 1})
        + sse(
            {"type": "response.completed", "response": response("completed"), "sequence_number": 2}
        )
    )
    turn = parse_stream(data)
    assert [e["type"] for e in turn.unknown_events] == ["keepalive", "response.brand_new_thing"]
    assert turn.status == "completed"


def test_sequence_gap_is_reported_in_warnings() -> None:
    data = sse(
        {"type": "response.created", "response": response("in_progress"), "sequence_number": 0},
        {"type": "response.completed", "response": response("completed"), "sequence_number": 3},
    )
    assert parse_stream(data).warnings == ["sequence_number jumps from 0 to 3 at event 1"]


def test_missing_final_blank_line_is_tolerated_and_reported() -> None:
    data = (CORPUS / "responses-text-minimal-1.sse").read_bytes().rstrip(b"\n")
    turn = parse_stream(data)
    assert turn.status == "completed" and turn.text == "pong"
    assert "stream ended without a blank line after the last event" in turn.warnings


def test_stream_without_event_lines_uses_the_json_type() -> None:
    data = sse({"type": "response.completed", "response": response("completed")}, event_lines=False)
    assert parse_stream(data).status == "completed"


# -- malformed input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "index", "words"),
    [
        (b"data: {not json\n\n", 0, "not valid JSON"),
        (
            b'data: {"type":"response.created","response":{"id":"r"}}\n\ndata: [1,2]\n\n',
            1,
            "not an object",
        ),
        (b'data: {"type":"response.output_text.delta"}\n\n', 0, "unexpected shape"),
        (b'data: {"type":"response.output_item.added","item":"nope"}\n\n', 0, "unexpected shape"),
        (b'data: {"type":"response.created","response":{"id":"a\x00b"}}\n\n', 0, "not valid JSON"),
        (b'data: {"no_type": 1}\n\n', 0, "no 'type'"),
    ],
)
def test_malformed_events_raise_typed_errors_with_index_and_offset(
    data: bytes, index: int, words: str
) -> None:
    with pytest.raises(InvalidEventData) as info:
        parse_stream(data)
    assert info.value.event_index == index
    assert info.value.offset == data.rfind(b"data: ") if index else info.value.offset == 0
    assert words in str(info.value)
    assert info.value.partial is not None


def test_invalid_utf8_and_oversized_events_are_typed_and_carry_the_partial_turn() -> None:
    good = sse({"type": "response.created", "response": response("in_progress")})
    with pytest.raises(InvalidEncoding) as bad_bytes:
        parse_stream(good + b"data: \xc3\x28\n\n")
    assert bad_bytes.value.offset == len(good)
    assert bad_bytes.value.partial is not None and bad_bytes.value.partial.response_id == "resp_1"
    parser = StreamParser(max_event_size=100)
    with pytest.raises(EventTooLarge):
        parser.feed(b"data: " + b"x" * 200)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_an_untyped_error(data: bytes) -> None:
    with contextlib.suppress(InvalidEventData, InvalidEncoding, IncompleteStream):
        parse_stream(b"data: " + data + b"\n\n")


# -- the request side ------------------------------------------------------------


def test_second_request_shape_matches_the_real_second_turn() -> None:
    first = json.loads((CORPUS / "responses-function-call-1.request.json").read_text())
    second = json.loads((CORPUS / "responses-text-after-tool-1.request.json").read_text())
    turn = parse_stream((CORPUS / "responses-function-call-1.sse").read_bytes())
    items = normalize_input(first["input"]) + turn.output
    items += tool_result_items([(turn.calls[0].call_id, "2869461")])
    params = {k: v for k, v in first.items() if k not in ("model", "input", "tools", "stream")}
    body = build_request("gpt-5.5", items, instructions=None, tools=first["tools"], params=params)
    # The recorded client (llm) re-serialised the function_call item; rawloop sends it as received.
    assert [i.get("type", "message") for i in body["input"]] == [
        i.get("type", "message") for i in second["input"]
    ]
    sent_call, recorded_call = body["input"][1], second["input"][1]
    for key in ("call_id", "name"):
        assert sent_call[key] == recorded_call[key]
    assert json.loads(sent_call["arguments"]) == json.loads(recorded_call["arguments"])
    assert body["input"][2] == second["input"][2]
    assert {k: v for k, v in body.items() if k != "input"} == {
        k: v for k, v in second.items() if k != "input"
    }


def test_normalize_input() -> None:
    assert normalize_input("hi") == [{"role": "user", "content": "hi"}]
    items = [{"role": "user", "content": "x"}]
    assert normalize_input(items) == items and normalize_input(items) is not items
    with pytest.raises(ConfigurationError):
        normalize_input(42)  # type: ignore[arg-type]


def test_feed_events_gives_each_events_json_and_the_same_deltas_as_feed() -> None:
    data = (CORPUS / "responses-text-then-function-call-1.sse").read_bytes()
    fast = StreamParser()
    plain_deltas = fast.feed(data)
    hooked = StreamParser()
    triples = hooked.feed_events(data)
    assert [d for _, _, ds in triples for d in ds] == plain_deltas
    assert [p["type"] for _, p, _ in triples] == [e["type"] for e in payloads(data)]
    assert hooked.close() == fast.close()


def test_turn_only_parsing_builds_the_same_turn_without_fragment_deltas() -> None:
    data = (CORPUS / "responses-text-then-function-call-1.sse").read_bytes()
    full, lean = StreamParser(), StreamParser(deltas=False)
    full_deltas, lean_deltas = full.feed(data), lean.feed(data)
    assert lean.close() == full.close()
    assert {d.kind for d in full_deltas} >= {"text", "arguments", "call"}
    assert {d.kind for d in lean_deltas} & {"text", "arguments"} == set()
    assert [d for d in full_deltas if d.kind == "call"] == [
        d for d in lean_deltas if d.kind == "call"
    ]
