"""The command line: ``parse``, ``show`` and ``diff``, their output and exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from rawloop.cli.main import main

from ..conftest import CORPUS, corpus
from ..trace.test_show import SEPARATOR, cut, edited_run, retry_run, split_raw, two_turns

pytestmark = pytest.mark.anyio

ANSI = "\x1b["


def test_parse_still_prints_a_turn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", str(CORPUS / "responses-function-call-1.sse")]) == 0
    out = capsys.readouterr().out
    assert 'call multiply({"a":1231,"b":2331}) id=call_sVidsfFJ6zlzRpelrPkTPlpd' in out


# -- show ------------------------------------------------------------------------------------------


async def test_show_prints_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = await retry_run(tmp_path / "retry.jsonl")
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"trace {path}\ndialect=responses model=gpt-5.5 ")
    assert "response 429, request id req_429" in out and "retrying in 10.0 ms" in out
    assert "      pong" in out.splitlines() and "end: completed, 1 iteration" in out


async def test_no_colour_off_a_terminal_or_with_no_color(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(await two_turns(tmp_path / "run.jsonl"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["show", path]) == 0  # captured output is not a terminal
    assert ANSI not in capsys.readouterr().out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["show", path, "--no-pager"]) == 0
    assert ANSI in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["show", path, "--no-pager"]) == 0
    assert ANSI not in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "")  # empty means unset
    assert main(["show", path, "--no-pager"]) == 0
    assert ANSI in capsys.readouterr().out


async def test_show_raw_writes_the_exact_bytes(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = await two_turns(tmp_path / "run.jsonl", chunk_size=333)
    assert main(["show", str(path), "--raw"]) == 0
    out = capsysbinary.readouterr().out
    assert [body for _, body in split_raw(out)] == [
        corpus("responses-function-call-1.sse"),
        corpus("responses-text-after-tool-1.sse"),
    ]
    assert len(SEPARATOR.findall(out)) == 2


async def test_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = await edited_run(tmp_path / "edit.jsonl")
    assert main(["show", str(path), "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["path"] == str(path) and data["complete"] is True
    assert [i["iteration"] for i in data["iterations"]] == [0, 1]
    assert data["iterations"][1]["edits"][0]["path"] == "/results/0/output"
    assert data["iterations"][0]["results"][0]["output"] == "2869461"
    assert data["end"]["stop_reason"] == "completed"


async def test_show_of_a_trace_with_a_cut_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = await two_turns(tmp_path / "run.jsonl")
    half = tmp_path / "half.jsonl"
    half.write_bytes(path.read_bytes()[:-20])
    assert main(["show", str(half)]) == 0
    out = capsys.readouterr().out
    assert "is cut short" in out and "NO END RECORD" in out
    assert main(["show", str(half), "--json"]) == 0
    captured = capsys.readouterr()
    assert orjson.loads(captured.out)["complete"] is False
    assert "rawloop: warning: " in captured.err and "cut short" in captured.err


# -- diff --------------------------------------------------------------------------------------------


async def test_diff_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = await two_turns(tmp_path / "a.jsonl", chunk_size=256)
    b = await two_turns(tmp_path / "b.jsonl", chunk_size=1000)
    assert main(["diff", str(a), str(a)]) == 0
    assert "traces are equal" in capsys.readouterr().out
    assert main(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "traces are equal" in out and "came in different chunks" in out
    assert main(["diff", str(a), str(b), "--strict-chunks"]) == 1
    assert "at chunk.boundaries" in capsys.readouterr().out

    edited = await edited_run(tmp_path / "edit.jsonl")
    assert main(["diff", str(a), str(edited)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"A: {a}\nB: {edited}\ntraces differ\nfirst difference: iteration 1")

    short = cut(a, 1, tmp_path / "cut.jsonl")
    assert main(["diff", str(a), str(short)]) == 1
    out = capsys.readouterr().out
    assert "B: <absent>" in out and "no end record" in out
    assert main(["diff", str(a), str(a), "--ignore", "decision.*"]) == 0
    capsys.readouterr()


async def test_diff_finds_a_changed_tool_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await two_turns(tmp_path / "a.jsonl")
    records = [orjson.loads(line) for line in a.read_bytes().splitlines()]
    second = [r for r in records if r["kind"] == "request"][1]
    second["body"]["input"][2]["output"] = "2869460"
    b = tmp_path / "b.jsonl"
    b.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "first difference: iteration 1 attempt 0" in out
    assert '  at request.body.input[2].output\n  A: "2869461"\n  B: "2869460"' in out


async def test_bad_input_exits_2_and_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = await two_turns(tmp_path / "good.jsonl")
    lines = good.read_bytes().splitlines(keepends=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[2:]))
    for argv in (
        ["diff", str(good), str(broken)],
        ["diff", str(broken), str(good)],
        ["show", str(broken)],
        ["show", str(broken), "--raw"],
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("rawloop: error: line 3: ") and str(broken) in captured.err
    assert main(["diff", str(good), str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read trace" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing.jsonl")]) == 2
    not_a_trace = tmp_path / "other.jsonl"
    not_a_trace.write_bytes(b'{"kind": "header", "format": "something-else"}\n')
    assert main(["show", str(not_a_trace)]) == 2
    assert "not a rawloop trace" in capsys.readouterr().err


# -- the last resort ----------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_asking_for_a_report_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rawloop.cli import trace_commands

    key = "sk-proj-" + "A1b2C3d4" * 6

    def broken(args: object) -> int:
        raise KeyError(f"boom with {key}\nsecond line \x1b[31mred")

    monkeypatch.setattr(trace_commands, "_cmd_parse", broken)
    status = main(["parse", str(CORPUS / "responses-function-call-1.sse")])
    captured = capsys.readouterr()
    assert status == 2  # never 1, which means "diverged"
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rawloop: internal error: KeyError")
    assert "bug" in lines[0] and "report" in lines[0]
    assert "Traceback" not in captured.err and key not in captured.err
    assert "\x1b" not in captured.err
