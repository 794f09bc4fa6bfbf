"""The terminal timeline's reading aids: messages, --full, filters, wrapping, wording."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rawloop.trace.format import Trace
from rawloop.trace.timeline import render

TRACES = Path(__file__).parents[2] / "traces"
SYSTEM = "\n".join(f"system rule {n}" for n in range(1, 6))
QUESTION = "first line of the question\nsecond line\nthird line\nfourth line\nfifth line"


def edited(name: str, change: Callable[[dict[str, Any]], None]) -> Trace:
    """A bundled trace with ``change`` applied to each record (as parsed JSON)."""
    lines = []
    for line in (TRACES / name).read_bytes().splitlines():
        record = orjson.loads(line)
        change(record)
        lines.append(orjson.dumps(record))
    return Trace.parse(b"\n".join(lines) + b"\n", name)


def with_messages(record: dict[str, Any]) -> None:
    if record["kind"] == "request":
        record["body"]["input"][0] = {"role": "user", "content": QUESTION}
        record["body"]["input"].insert(0, {"role": "system", "content": SYSTEM})
    if record["kind"] == "result":
        record["output"] = "y" * 500


def test_user_and_system_messages_show_their_first_lines_once() -> None:
    text = render(edited("tool-roundtrip.jsonl", with_messages))
    lines = text.splitlines()
    at = lines.index("    system:")
    assert lines[at + 1 : at + 5] == [
        "      system rule 1",
        "      system rule 2",
        "      system rule 3",
        "      (+2 more lines; --full shows all)",
    ]
    at = lines.index("    user:")
    assert lines[at + 1] == "      first line of the question"
    assert "fourth line" not in text
    # iteration 1 sends the same messages again: they are not repeated
    assert text.count("    user:") == 1 and text.count("    system:") == 1


def test_full_shows_messages_outputs_and_edits_whole() -> None:
    trace = edited("tool-roundtrip.jsonl", with_messages)
    short, full = render(trace), render(trace, full=True)
    assert "y" * 201 not in short and "--full shows all" in short
    assert "      " + "y" * 500 in full.splitlines()
    assert "      fifth line" in full.splitlines() and "      system rule 5" in full.splitlines()
    assert "--full shows all" not in full

    def long_edit(record: dict[str, Any]) -> None:
        if record["kind"] == "edit":
            record["patch"][0]["value"] = "z" * 300

    trace = edited("breakpoint-edit.jsonl", long_edit)
    assert '= "' not in render(trace)  # the before is known: "was ..., now ..."
    short = render(trace)
    assert "z" * 300 not in short and "(102 more chars; --full shows all)" in short  # JSON quotes
    assert f'now "{"z" * 300}"' in render(trace, full=True)


def test_a_turn_that_calls_tools_says_so_and_iterations_show_their_tokens() -> None:
    text = render(Trace.load(TRACES / "parallel-tools.jsonl"))
    assert "decision: calls 2 tools (get_current_weather), finish_reason tool_calls" in text
    text = render(Trace.load(TRACES / "tool-roundtrip.jsonl"))
    assert "iteration 0 (81 tokens)" in text and "iteration 1 (112 tokens)" in text
    assert "decision: calls 1 tool (multiply), response" in text
    assert "decision: completed, response" in text  # the last turn does finish


def test_iteration_and_tool_filters() -> None:
    trace = Trace.load(TRACES / "tool-roundtrip.jsonl")
    only_1 = render(trace, iteration=1)
    assert "iteration 1 (" in only_1 and "iteration 0 (" not in only_1
    assert "end: completed" in only_1  # how the run ended is still said
    assert "    user:" not in only_1  # iteration 0 sent it first
    by_tool = render(trace, tool="multiply")
    assert "iteration 0 (" in by_tool and "iteration 1 (" not in by_tool
    nothing = render(trace, tool="nope", iteration=0)
    assert "no iteration matches iteration 0 and tool nope" in nothing


def test_a_request_without_stream_says_not_set_rather_than_null() -> None:
    def unstreamed(record: dict[str, Any]) -> None:
        if record["kind"] == "request":
            del record["body"]["stream"]

    text = render(edited("tool-roundtrip.jsonl", unstreamed))
    assert "stream not set" in text and "stream=null" not in text


@given(st.integers(30, 120))
def test_wrapping_keeps_lines_in_width_and_their_indent(width: int) -> None:
    trace = edited("tool-roundtrip.jsonl", with_messages)
    wrapped = render(trace, width=width, full=True)
    for line in wrapped.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        # a word longer than the room is cut; nothing runs past the width but the indent floor
        assert len(line) <= max(width, indent + 20), line
    # the 500-char output is cut into lines that keep its indent (6) plus 2 for continuation
    ys = [line for line in wrapped.splitlines() if set(line.strip()) == {"y"}]
    assert ys[0].startswith("      y") and all(y.startswith("        y") for y in ys[1:])
    assert sum(y.count("y") for y in ys) == 500
    assert render(trace, full=True).count("\n") < wrapped.count("\n")


def test_wrapping_cannot_split_an_escape_sequence() -> None:
    def hostile(record: dict[str, Any]) -> None:
        if record["kind"] == "result":
            record["output"] = ("\x1b[2J" + "w" * 7) * 40

    text = render(edited("tool-roundtrip.jsonl", hostile), width=40, full=True)
    assert "\x1b" not in text  # escaped before wrapping: no real ESC in any piece
    assert "".join(line.strip() for line in text.splitlines()).count("\\x1b[2J") == 40
