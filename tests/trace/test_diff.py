"""Trace diff: the first semantic difference between two real traces, and a summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from rawloop.loop.tools import tool
from rawloop.trace.diff import DEFAULT_IGNORE, MISSING, diff
from rawloop.trace.format import Trace

from .test_show import cut, edited_run, two_turns

pytestmark = pytest.mark.anyio

HEADER = {"kind": "header", "format": "rawloop-trace", "version": 1, "dialect": "responses"}


def rewrite(path: Path, to: Path, change: Callable[[list[dict[str, Any]]], None]) -> Path:
    """A copy of a trace with its records changed by ``change`` (the header is records[0])."""
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    change(records)
    to.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return to


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def made(*records: dict[str, Any]) -> Trace:
    return Trace.parse(b"".join(orjson.dumps(r) + b"\n" for r in (HEADER, *records)))


async def test_two_recordings_of_the_same_run_are_equal(tmp_path: Path) -> None:
    a = Trace.load(await two_turns(tmp_path / "a.jsonl"))
    b = Trace.load(await two_turns(tmp_path / "b.jsonl"))
    # Timings and the creation time do differ on disk; they are ignored.
    assert a.header["created"] != b.header["created"] or a.records != b.records
    result = diff(a, b)
    assert result.equal and result.first is None
    assert result.summary[0] == (
        "records (A/B): 72/72: request 2/2, response 2/2, chunk 64/64, decision 2/2, result 1/1, "
        "end 1/1"
    )
    assert result.summary[1:] == [
        "iterations (A/B): 2/2",
        "stop reason: A completed, B completed",
        "text: equal (27 chars)",
    ]
    assert str(result).startswith("traces are equal\nsummary:\n")


async def test_different_chunk_boundaries_are_a_note_unless_strict(tmp_path: Path) -> None:
    a = Trace.load(await two_turns(tmp_path / "a.jsonl", chunk_size=256))
    b = Trace.load(await two_turns(tmp_path / "b.jsonl", chunk_size=1000))
    result = diff(a, b)
    assert result.equal
    assert result.notes == [
        "the same 7352 body bytes of iteration 0 attempt 0 came in different chunks (A 29, B 8)",
        "the same 8875 body bytes of iteration 1 attempt 0 came in different chunks (A 35, B 9)",
    ]
    strict = diff(a, b, strict_chunks=True)
    assert not strict.equal and strict.first is not None
    assert (strict.first.iteration, strict.first.kind, strict.first.path) == (
        0,
        "chunk",
        "chunk.boundaries",
    )
    assert strict.first.a[:2] == [256, 256] and strict.first.b[:2] == [1000, 1000]


async def test_a_different_tool_output_is_found_where_it_first_shows(tmp_path: Path) -> None:
    @tool(name="multiply")
    def wrong(a: int, b: int) -> int:
        """Multiply two numbers."""  # the same schema: only the answer differs
        return a * b + 1

    a = Trace.load(await two_turns(tmp_path / "a.jsonl"))
    b = Trace.load(await two_turns(tmp_path / "b.jsonl", tools=[wrong]))
    result = diff(a, b)
    assert not result.equal and result.first is not None
    first = result.first
    assert (first.iteration, first.kind, first.path) == (0, "result", "result.output")
    assert (first.a, first.b) == ("2869461", "2869462")
    assert first.line_a == first.line_b == a.of_kind("result")[0].line
    text = str(result)
    assert "first difference: iteration 0, record" in text
    assert '  at result.output\n  A: "2869461"\n  B: "2869462"' in text


async def test_a_changed_request_body_is_named_by_iteration_and_json_path(tmp_path: Path) -> None:
    path = await two_turns(tmp_path / "a.jsonl")

    def change(records: list[dict[str, Any]]) -> None:
        of_kind(records, "request")[1]["body"]["input"][2]["output"] = "42"

    result = diff(Trace.load(path), Trace.load(rewrite(path, tmp_path / "b.jsonl", change)))
    assert result.first is not None
    first = result.first
    assert (first.iteration, first.attempt, first.kind) == (1, 0, "request")
    assert first.path == "request.body.input[2].output"
    assert (first.a, first.b) == ("2869461", "42")
    assert "iteration 1 attempt 0" in str(result)


async def test_a_breakpoint_edit_is_the_first_difference(tmp_path: Path) -> None:
    a = Trace.load(await two_turns(tmp_path / "a.jsonl"))
    b = Trace.load(await edited_run(tmp_path / "b.jsonl"))
    result = diff(a, b)
    assert result.first is not None
    assert (result.first.iteration, result.first.path) == (1, "kind")
    assert (result.first.a, result.first.b) == ("request", "edit")
    assert "A has a request record where B has an edit" in str(result)
    assert "edit 0/1" in result.summary[0]


async def test_a_changed_instruction_is_found(tmp_path: Path) -> None:
    a = Trace.load(await two_turns(tmp_path / "a.jsonl", instructions="Be brief."))
    b = Trace.load(await two_turns(tmp_path / "b.jsonl", instructions="Be thorough."))
    result = diff(a, b)
    assert result.first is not None
    assert (result.first.iteration, result.first.kind) == (0, "request")
    assert result.first.path == "request.body.instructions"
    assert (result.first.a, result.first.b) == ("Be brief.", "Be thorough.")
    # Same answers: the text is still equal.
    assert result.summary[-1] == "text: equal (27 chars)"


async def test_a_cut_trace_is_reported(tmp_path: Path) -> None:
    path = await two_turns(tmp_path / "a.jsonl")
    a = Trace.load(path)
    b = Trace.load(cut(path, 3, tmp_path / "b.jsonl"))
    result = diff(a, b)
    assert result.first is not None
    first = result.first
    # The last three lines were the end record, the decision and the last attempt's chunks.
    assert first.kind == "chunk" and first.path == "chunk.body"
    assert "differ from byte" in first.note
    c = Trace.load(cut(path, 1, tmp_path / "c.jsonl"))
    result = diff(a, c)
    assert result.first is not None
    first = result.first
    assert (first.kind, first.b, first.line_b) == ("end", MISSING, None)
    assert first.line_a == len(path.read_bytes().splitlines())
    assert first.note.startswith("B ends after") and "no end record: cut short?" in first.note
    assert "stop reason: A completed, B none (no end record: cut short)" in result.summary
    assert "B: <absent>" in str(result)
    backwards = diff(c, a).first
    assert backwards is not None and backwards.a is MISSING and backwards.line_b is not None


async def test_the_ignore_list_is_a_parameter(tmp_path: Path) -> None:
    a = Trace.load(await two_turns(tmp_path / "a.jsonl"))
    b = Trace.load(await two_turns(tmp_path / "b.jsonl"))
    assert "header.created" in DEFAULT_IGNORE
    strict = diff(a, b, ignore=())
    assert strict.first is not None and strict.first.path in ("header.created", "response.t")
    skip_text = diff(a, b, ignore=(*DEFAULT_IGNORE, "decision.turn.text"))
    assert skip_text.equal


async def test_key_order_and_redaction_placeholders_do_not_count(tmp_path: Path) -> None:
    path = await two_turns(tmp_path / "a.jsonl")

    def change(records: list[dict[str, Any]]) -> None:
        for request in of_kind(records, "request"):
            request["body"] = dict(reversed(list(request["body"].items())))
            # Placeholders are keyed per process: another process writes another one.
            request["headers"]["authorization"] = "Bearer [REDACTED:0badc0de]"

    b = rewrite(path, tmp_path / "b.jsonl", change)
    assert diff(Trace.load(path), Trace.load(b)).equal


def test_json_values_are_compared_as_json() -> None:
    def result(output: Any) -> dict[str, Any]:
        return {"kind": "result", "iteration": 0, "call_id": "c", "output": output}

    assert diff(made(result(1)), made(result(1.0))).equal
    found = diff(made(result(1)), made(result(True))).first
    assert found is not None and found.path == "result.output"
    nested = diff(made(result({"a": [1, 2]})), made(result({"a": [1, 2, 3]}))).first
    assert nested is not None and (nested.path, nested.a, nested.b) == (
        "result.output.a[2]",
        MISSING,
        3,
    )
    odd = diff(made(result({"x.y": 1})), made(result({"x.y": 2}))).first
    assert odd is not None and odd.path == 'result.output["x.y"]'
