"""`rawloop replay`: the README's main job, its exit codes and its options."""

from __future__ import annotations

from pathlib import Path

import pytest

from rawloop.cli.main import main
from rawloop.trace.format import Trace

ROOT = Path(__file__).parents[2]
ROUNDTRIP = str(ROOT / "traces" / "tool-roundtrip.jsonl")


def test_the_readme_main_job_replays_over_the_built_in_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    readme = (ROOT / "README.md").read_text()
    command = "pip install -e . && rawloop replay traces/tool-roundtrip.jsonl --server"
    assert command in readme
    assert main(["replay", ROUNDTRIP, "--server"]) == 0
    out = capsys.readouterr().out
    assert "POST http://127.0.0.1:" in out  # it went over a real loopback socket
    assert out.rstrip().endswith("every request matched the recording")


def test_replaying_a_bundled_trace_prints_the_timeline_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["replay", ROUNDTRIP]) == 0
    out = capsys.readouterr().out
    assert "call multiply" in out and "2869461" in out and "2,869,461" in out
    assert out.rstrip().endswith("every request matched the recording")


def test_a_fault_is_survived_and_a_saved_replay_is_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "again.jsonl"
    code = main(["replay", ROUNDTRIP, "-q", "--fault", "iter=1:status=429", "--save", str(saved)])
    assert code == 0
    trace = Trace.load(saved)
    assert [e.response["status"] for e in trace.exchanges() if e.response] == [200, 429, 200]
    assert main(["replay", str(saved), "-q"]) == 0  # the replay of a replay is identical too


def test_live_tools_that_changed_exit_1_and_say_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "tools.py"
    tools.write_text(
        "from rawloop import tool\n\n"
        "@tool\n"
        "def multiply(a: int, b: int) -> int:\n"
        '    """Multiply two numbers."""\n'
        "    return a * b + 1\n"
    )
    code = main(["replay", ROUNDTRIP, "-q", "--live-tools", "--tools", str(tools)])
    out = capsys.readouterr().out
    assert code == 1
    assert "diverged: iteration 1" in out and "input[2].output" in out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["replay", "nope.jsonl"], "cannot read trace"),
        (["replay", ROUNDTRIP, "--chunking", "sideways"], "unknown chunking"),
        (["replay", ROUNDTRIP, "--fault", "iter=0:explode"], "exactly one action"),
        (["replay", ROUNDTRIP, "--live-tools"], "needs --tools"),
        (["replay", ROUNDTRIP, "--hook", "missing_hook.py"], "no such file"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    assert words in capsys.readouterr().err


def test_a_broken_trace_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jsonl"
    lines = Path(ROUNDTRIP).read_text().splitlines()
    lines[3] = "{not json"
    broken.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(broken)]) == 2
    assert "line 4" in capsys.readouterr().err


def test_replay_over_a_real_socket_with_faults(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "replay",
            ROUNDTRIP,
            "--server",
            "-q",
            "--fault",
            "iter=0,attempt=0:drop",
            "--chunking",
            "hostile",
        ]
    )
    assert code == 0, capsys.readouterr()
    assert "identical" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["replay", ROUNDTRIP],
        ["show", ROUNDTRIP, "--raw"],
        ["parse", str(ROOT / "tests" / "corpus" / "responses-logprobs-large-1.sse"), "--json"],
    ],
    ids=["replay", "show-raw", "parse-json"],
)
def test_a_reader_that_leaves_early_is_not_an_error(args: list[str]) -> None:
    import os
    import subprocess
    import sys

    # `rawloop ... | head`: here the reader is gone before anything is written.
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rawloop.cli", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert b"Broken pipe" not in proc.stderr and b"Exception ignored" not in proc.stderr


def _as_a_capture(tmp_path: Path) -> str:
    """The bundled trace with the header ``rawloop record`` writes."""
    trace = Trace.load(ROUNDTRIP)
    trace.header["metadata"] = {"recorded_by": "rawloop record", "upstream": "http://x"}
    path = tmp_path / "captured.jsonl"
    path.write_bytes(trace.dump())
    return str(path)


def test_a_capture_replays_as_sent_unless_loop_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captured = _as_a_capture(tmp_path)
    assert main(["replay", captured]) == 0
    out = capsys.readouterr().out
    assert "is a capture (rawloop record): replaying its 2 requests as the client sent them" in out
    assert '  answer 0: calls multiply({"a":1231,"b":2331})' in out
    assert "  sent back: multiply call_sVidsfFJ6zlzRpelrPkTPlpd -> '2869461'" in out
    assert out.rstrip().endswith("every request matched the recording")
    assert main(["replay", captured, "-q", "--server", "--chunking", "hostile"]) == 0
    out = capsys.readouterr().out
    assert "as the client sent them" not in out and "identical" in out
    # --loop: rawloop's loop takes the client's place (here it renders the same requests).
    assert main(["replay", captured, "--loop"]) == 0
    out = capsys.readouterr().out
    assert "as the client sent them" not in out and "call multiply" in out
    # A capture replayed as sent has no loop run to save.
    assert main(["replay", captured, "--save", str(tmp_path / "x.jsonl")]) == 2
    assert "add --loop" in capsys.readouterr().err


def test_what_a_capture_replay_prints_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = Trace.load(_as_a_capture(tmp_path))
    hostile = "\x1b[2J\x1b]0;owned\x07"
    for record in trace.records:
        if record.kind == "result":
            record.data["output"] = hostile
        if record.kind == "request" and record.iteration == 1:
            record.data["body"]["input"][2]["output"] = hostile
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(trace.dump())
    assert main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "sent back: multiply" in out


@pytest.mark.parametrize("server", [[], ["--server"]])
def test_a_trace_with_a_relative_base_url_is_a_clear_error_not_a_crash(
    server: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by the long fuzz run: "https:" deleted from a header's base_url.
    text = (ROOT / "traces" / "breakpoint-edit.jsonl").read_text()
    hostile = tmp_path / "relative.jsonl"
    hostile.write_text(text.replace('"https://api.openai.com/v1"', '"//api.openai.com/v1"'))
    status = main(["replay", str(hostile), "-q", *server])
    captured = capsys.readouterr()
    assert "internal error" not in captured.err + captured.out
    if server:  # over a real server the loop talks to the server's own URL
        assert status == 0
    else:
        assert status == 2
        assert "absolute http(s) URL" in captured.out + captured.err
