"""``rawloop step``: after-edit at the prompt, clear asking first, saved forks, startup warnings."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from rawloop.cli.main import main
from rawloop.debug.console import trace_tools
from rawloop.debug.debugger import Debugger, StepError
from rawloop.trace.format import Trace

ROOT = Path(__file__).parents[2]
ROUNDTRIP = str(ROOT / "traces" / "tool-roundtrip.jsonl")


def step(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], script: str, *args: str
) -> tuple[int, str, str]:
    """``rawloop step ARGS`` with ``script`` on stdin: exit status, stdout, stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code = main(["step", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- after-edit from inside the debugger -----------------------------------------------------------


def test_after_edit_is_changed_at_the_prompt_before_going_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "n\nafter-edit\nresult 0 42\nafter-edit ignore\nc\n"
    code, out, _ = step(monkeypatch, capsys, script, ROUNDTRIP)
    assert code == 0, out
    assert "(rawloop 1) after-edit\nafter-edit stop\n" in out  # no argument: the mode now
    assert "going on ends the run here (after-edit stop)" in out
    assert (
        "(rawloop 1) after-edit ignore\nafter-edit ignore\n  the next request differs from the "
        'recorded one at input[2].output (recorded "2869461", now "42"): going on answers it '
        "with the recorded response anyway (after-edit ignore)"
    ) in out
    # The default (stop) would have ended the run at iteration 1; ignore went on.
    assert "the run ended: completed after 2 iterations" in out
    assert "left the recording at iteration 1 (input[2].output), after-edit ignore" in out


def test_after_edit_refuses_what_cannot_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "after-edit live\nafter-edit sideways\nn\nresult 0 42\nafter-edit ignore\nc\nafter-edit stop\n"
    code, out, _ = step(monkeypatch, capsys, script, ROUNDTRIP, "--after-edit", "ignore")
    assert code == 1  # refused commands
    assert "*** after_edit='live' needs a base URL to continue against (--base-url)" in out
    assert "*** after_edit must be one of stop, live, ignore, not 'sideways'" in out
    assert "*** cannot change after-edit: the run has ended (completed)" in out
    assert "Traceback" not in out


def test_after_edit_cannot_change_once_the_run_left_the_recording() -> None:
    with Debugger.for_trace(ROUNDTRIP, after_edit="ignore") as dbg:
        dbg.start()
        dbg.next()
        dbg.set_result("0", "42")
        dbg.set_after_edit("stop")  # still on the recording: allowed
        dbg.set_after_edit("ignore")
        dbg.resume("step")  # leaves the recording (ignore), then the run ends
        assert dbg.departure is not None and dbg.departure.mode == "ignore"
        with pytest.raises(StepError, match="the run has ended"):
            dbg.set_after_edit("stop")


def test_help_after_edit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = step(monkeypatch, capsys, "help\nhelp after-edit\n", ROUNDTRIP)
    assert code == 0
    assert "after-edit [stop|live|ignore]  what a replay does" in out
    assert "No argument shows the current mode" in out


# -- clear asks before removing every breakpoint -----------------------------------------------------


def test_clear_without_a_number_asks_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "clear\nb tool multiply\nb iteration 1\nclear\nn\nb\nclear\nyes\nb\n"
    code, out, _ = step(monkeypatch, capsys, script, ROUNDTRIP)
    assert code == 0, out
    assert "(rawloop 0) clear\nno conditional breakpoints\n" in out
    # "n" answers the question; it is not taken for next.
    assert "Clear all 2 breakpoints? (y/n) n\nkept them\n(rawloop 0) b\n1: tool multiply" in out
    assert "Clear all 2 breakpoints? (y/n) yes\ncleared 2 breakpoints\n" in out
    assert "> paused at iteration 1" not in out  # still at iteration 0
    assert "(rawloop 0) b\nno conditional breakpoints" in out


def test_clear_at_the_end_of_the_input_keeps_the_breakpoints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = step(monkeypatch, capsys, "b error\nclear", ROUNDTRIP)
    assert code == 0
    assert "Clear all 1 breakpoint? (y/n) \nkept them" in out


def test_clear_by_number_does_not_ask(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = step(monkeypatch, capsys, "b error\nclear 1\n", ROUNDTRIP)
    assert code == 0
    assert "(rawloop 0) clear 1\ncleared 1 breakpoint\n" in out


# -- save mid-run is a fork ------------------------------------------------------------------------------


def test_save_mid_run_marks_a_fork_that_show_and_replay_read_as_such(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fork = tmp_path / "fork.jsonl"
    code, out, _ = step(monkeypatch, capsys, f"n\nsave {fork}\n", ROUNDTRIP)
    assert code == 0
    assert f"to {fork} (a fork at iteration 1, replay it: rawloop replay {fork})" in out
    assert Trace.load(fork).end()["stop_reason"] == "saved-fork"  # type: ignore[index]
    assert main(["show", str(fork), "--no-pager"]) == 0
    shown = capsys.readouterr().out
    assert "end: saved-fork, 1 iteration" in shown
    assert "NO END RECORD" not in shown
    assert main(["replay", str(fork)]) == 0
    assert "identical" in capsys.readouterr().out


def test_save_at_the_end_is_not_a_fork(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "whole.jsonl"
    code, out, _ = step(monkeypatch, capsys, f"c\nsave {saved}\n", ROUNDTRIP)
    assert code == 0
    assert "a fork" not in out
    assert Trace.load(saved).end()["stop_reason"] == "completed"  # type: ignore[index]


def test_save_before_any_request_says_why_not(tmp_path: Path) -> None:
    with Debugger.for_trace(ROUNDTRIP) as dbg:
        dbg.start()
        with pytest.raises(StepError, match="no request has been sent"):
            dbg.save(tmp_path / "empty.jsonl")
    assert not (tmp_path / "empty.jsonl").exists()


# -- startup: a prompt given as a trace, a tool breakpoint that cannot fire ---------------------------


def test_a_prompt_without_live_suggests_live(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = step(monkeypatch, capsys, "", "Refund order 1234")
    assert code == 2
    assert (
        "no trace file 'Refund order 1234'; to send it as a prompt, run it live: "
        "rawloop step --live --model MODEL 'Refund order 1234'"
    ) in out + err
    code, out, err = step(monkeypatch, capsys, "", "captured/run.jsonl")
    assert code == 2
    assert "no trace file 'captured/run.jsonl'" in out + err and "--live" not in out + err


def test_break_on_a_tool_the_trace_never_has_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = step(monkeypatch, capsys, "", ROUNDTRIP, "--break", "tool=refund_order")
    assert code == 0
    assert (
        "rawloop: warning: --break tool=refund_order: no tool of that name in the trace "
        "(tools: 'multiply'); the breakpoint will not fire"
    ) in err
    code, _, err = step(monkeypatch, capsys, "", ROUNDTRIP, "--break", "tool=multiply")
    assert code == 0 and "warning" not in err


def test_trace_tools_reads_both_dialects_and_survives_odd_records() -> None:
    for path in sorted((ROOT / "traces").glob("*.jsonl")):
        names = trace_tools(Trace.load(path))
        assert all(isinstance(n, str) and n for n in names), path
    chat = [p for p in (ROOT / "traces").glob("*.jsonl") if Trace.load(p).dialect == "chat"]
    assert any(trace_tools(Trace.load(p)) for p in chat)
    odd = Trace.parse(
        b'{"kind":"header","format":"rawloop-trace","version":1,"dialect":"responses",'
        b'"base_url":"http://x/v1","model":"m"}\n'
        b'{"kind":"request","iteration":0,"attempt":0,"method":"POST","url":"http://x/v1/responses",'
        b'"headers":{},"body":{"tools":[1,"x",{"name":5},{"function":"y"},{"name":"ok"}]}}\n'
    )
    assert trace_tools(odd) == ["ok"]
