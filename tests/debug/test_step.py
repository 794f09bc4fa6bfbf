"""``rawloop step``: the debugger, driven by scripts, by Python, and once through a terminal."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawloop import Loop
from rawloop.cli.main import main
from rawloop.core.jsonpath import PathError, display, locate, parse, pointer, split_path
from rawloop.debug.debugger import Debugger, StepError, parse_condition
from rawloop.debug.shell import _output_text
from rawloop.replay.replayer import replay
from rawloop.replay.scripted import Reply, ScriptedAPI
from rawloop.trace.format import Trace
from rawloop.trace.recorder import TraceRecorder

from ..conftest import corpus

ROOT = Path(__file__).parents[2]
TRACES = ROOT / "traces"
ROUNDTRIP = str(TRACES / "tool-roundtrip.jsonl")
PARALLEL = str(TRACES / "parallel-tools.jsonl")
EDITED = str(TRACES / "breakpoint-edit.jsonl")
CALL = "call_sVidsfFJ6zlzRpelrPkTPlpd"  # the multiply call in tool-roundtrip.jsonl


def step(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    script: str,
    *args: str,
) -> tuple[int, str]:
    """Run ``rawloop step ARGS`` with ``script`` on a (non-terminal) stdin."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    code = main(["step", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def replays_identically(path: Path | str) -> bool:
    report = anyio.run(replay, path)
    assert report.identical, str(report)
    return True


# -- reading: where, p, raw ---------------------------------------------------------------------


def test_where_print_and_raw_from_a_script_on_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "where\np input[0].content\np /input/0/role\nn\nstate\nraw\np request_params\n"
    code, out = step(monkeypatch, capsys, script, ROUNDTRIP)
    assert code == 0
    assert "Traceback" not in out
    # Each command is echoed after its prompt: the transcript reads like a session.
    assert "(rawloop 0) where\niteration 0 (request 1 of at most 2) | model gpt-5.5" in out
    assert "last decision: none yet (the first request is next)" in out
    assert 'input[0].content = "What is 1231 * 2331? Use the multiply tool."' in out
    assert 'input[0].role = "user"' in out
    # At iteration 1: the decision, the pending result, the usage so far.
    assert "> paused at iteration 1" in out
    assert 'last decision (iteration 0): completed, called multiply({"a":1231,"b":2331})' in out
    assert f'[0] multiply {CALL} -> "2869461"' in out
    assert "usage so far: requests=1 input_tokens=58 output_tokens=23 total_tokens=81" in out
    # raw: the next request body as the loop will send it, and the last SSE as received.
    assert "request (iteration 1, not sent yet): POST https://api.openai.com/v1/responses" in out
    assert '"output":"2869461"' in out
    assert "response (iteration 0, attempt 0): HTTP 200, 7352 bytes in 25 chunks" in out
    assert corpus("responses-function-call-1.sse").decode() in out
    # The end of the script lets the run go on to its end.
    assert "end of input: going on to the end of the run" in out
    assert "the run ended: completed after 2 iterations" in out
    assert "replay: every request matched the recording" in out


@pytest.mark.parametrize("trace", sorted(p.name for p in TRACES.glob("*.jsonl")))
def test_the_next_request_is_built_exactly_as_the_loop_sends_it(trace: str) -> None:
    """At every breakpoint ``raw request`` is byte for byte the request the run then sends."""
    with Debugger.for_trace(TRACES / trace) as dbg:
        pause = dbg.start()
        built: list[bytes] = []
        while not pause.ended:
            built.append(dbg.next_request()[1])
            pause = dbg.next()
        assert pause.error is None and pause.result is not None
        sent = [a.body for a in dbg.attempts if a.attempt == 0]
        assert built == sent
        recorded = Trace.load(TRACES / trace).exchanges()
        assert [orjson.loads(b) for b in sent] == [
            e.request["body"] for e in recorded if e.attempt == 0
        ]


def test_raw_chunks_are_the_bytes_as_received(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = step(monkeypatch, capsys, "raw response\nn\nraw chunks\n", ROUNDTRIP)
    assert code == 0
    assert "response: none yet (no request has been sent)" in out
    trace = Trace.load(ROUNDTRIP)
    chunks = [bytes(c["text"], "utf-8") for c in trace.exchanges()[0].chunks]
    shown = re.findall(r"--- chunk \d+: (\d+) bytes at offset (\d+)\n(.*)\n", out)
    assert [int(size) for size, _, _ in shown] == [len(c) for c in chunks]
    assert [eval(text) for _, _, text in shown] == chunks  # repr of bytes


def test_retries_are_reported_and_all_attempts_are_raw(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = step(monkeypatch, capsys, "c\nraw\n", str(TRACES / "retry-after-cut.jsonl"))
    assert code == 0
    assert "iteration 0, attempt 0: request failed: APIStatusError: HTTP 429" in out
    assert "retrying in 0 s" in out
    assert "response (iteration 0, attempt 0): HTTP 429" in out
    assert "response (iteration 0, attempt 1): HTTP 200, 2352 bytes" in out
    assert "then APIConnectionError" in out
    assert "response (iteration 0, attempt 2): HTTP 200" in out
    assert "request: none pending (the run has ended)" in out


# -- changing: set, del, append, model, result ----------------------------------------------------


def test_every_edit_command_goes_through_on_edit_into_the_trace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "edited.jsonl"
    script = "\n".join(
        [
            "n",
            "set request_params.temperature 0.5",
            "set request_params.top_p 1",
            "del request_params.top_p",
            'append input {"role": "user", "content": "Check it."}',
            "model gpt-5.5-mini",
            "model",
            f'result {CALL[:8]} {{"value": 42}}',
            "result",
            "where",
            "c",
            f"save {saved}",
            "q",
        ]
    )
    code, out = step(monkeypatch, capsys, script, ROUNDTRIP, "--after-edit", "ignore")
    assert code == 0, out
    assert "changed: add /request_params/temperature" in out
    assert "changed: remove /request_params/top_p" in out
    assert "changed: add /input/-" in out
    assert "changed: replace /model" in out
    assert "model: gpt-5.5-mini" in out
    assert f'[0] multiply {CALL} -> "{{\\"value\\": 42}}"' in out
    assert (
        "changed here: replace /model, add /input/-, add /request_params/temperature, "
        "replace /results/0/output"
    ) in out
    assert "the next request differs from the recorded one at" in out
    assert "the run has left the recording at iteration 1" in out
    # The request went out as edited ...
    trace = Trace.load(saved)
    body = trace.exchanges()[1].request["body"]
    assert body["model"] == "gpt-5.5-mini" and body["temperature"] == 0.5
    assert "top_p" not in body
    assert body["input"][2] == {"role": "user", "content": "Check it."}
    assert body["input"][3]["output"] == '{"value": 42}'
    # ... and the edit is one RFC 6902 patch at iteration 1.
    (edit,) = trace.of_kind("edit")
    assert edit.iteration == 1
    assert {op["path"] for op in edit.data["patch"]} == {
        "/model",
        "/input/-",
        "/request_params/temperature",
        "/results/0/output",
    }
    assert replays_identically(saved)


def test_result_takes_json_or_text(tmp_path: Path) -> None:
    with Debugger.for_trace(ROUNDTRIP, after_edit="ignore") as dbg:
        dbg.start()
        dbg.next()
        for typed, sent in [('"quoted"', "quoted"), ("plain words", "plain words"), ("7", "7")]:
            dbg.set_result("0", _output_text(typed))
            assert dbg.state.results[0].output == sent
        with pytest.raises(StepError, match="no pending result for call 'nope'"):
            dbg.set_result("nope", "x")
        with pytest.raises(StepError, match="there are 1 pending results, not 4"):
            dbg.set_result("3", "x")


def test_results_of_parallel_calls_by_prefix_and_index(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "chat.jsonl"
    script = f"n\nresult call_ x\nresult 1 sunny\nresult call_fH snow\nc\nsave {saved}\n"
    code, out = step(monkeypatch, capsys, script, PARALLEL, "--after-edit", "ignore")
    assert code == 1  # the ambiguous prefix was refused
    assert "*** 'call_' could be more than one call: [0] call_fHCjJqt9Pysde6vcJcvbXGBx" in out
    messages = Trace.load(saved).exchanges()[1].request["body"]["messages"]
    tools = [m for m in messages if m.get("role") == "tool"]
    assert [m["content"] for m in tools] == ["snow", "sunny"]
    assert replays_identically(saved)


# -- mistakes: clear messages, never a traceback -----------------------------------------------------


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("p inputs", "the state has no key 'inputs' (keys: iteration, model, instructions, input"),
        ("p input[9]", "input has 1 item: index 9 is out of range (valid: 0..0)"),
        ("p input[0].role.x", "input[0].role is a string, not an object or a list: it has no 'x'"),
        ("p input[abc]", '[abc] is not a list index; write a key as .abc or ["abc"]'),
        ("p input[0", "the '[' at column 6 has no ']'"),
        ("p input..role", "a name must follow the '.' at column 6"),
        ("p input[0]role", "expected '.' or '[' at column 9"),
        ("p /input/x", "input is a list of 1: 'x' is not an index"),
        ("set request_params.temperature hello", "bad JSON 'hello': unexpected character"),
        ("set request_params.temperature hello", '(a string needs double quotes: "hello")'),
        ("set model 'x'", "(JSON strings use double quotes)"),
        ('append input {"role": ', "bad JSON"),
        ("set request_params.temperature", "set needs a path and a JSON value: set PATH JSON"),
        ("set last_turn 1", "last_turn is read-only; what you can change: model, instructions"),
        ("set iteration 3", "iteration is read-only"),
        ("set nothing 3", "the state has no 'nothing'; what you can change"),
        ("set . {}", "the whole state cannot be replaced"),
        ("set model 5", "model must be a non-empty string, not a number"),
        ('set input[0] "text"', "input[0] must be an object, not a string"),
        ("set input 3", "input must be a list, not a number"),
        ("del model", "model cannot be deleted; set it instead"),
        ("del", "del needs a path"),
        ('append model "x"', "model is a string, not a list: append adds to a list"),
        ("result 0 hi", "no pending results at iteration 0: the last turn called no tools"),
        ("raw sideways", "raw takes request, response or chunks, not 'sideways'"),
        ("until 0", "the run is at iteration 0: until needs a later one, not 0"),
        ("until soon", "until needs an iteration number, not 'soon'"),
        ("break sometimes", "unknown breakpoint 'sometimes'; use tool NAME, iteration N"),
        ("break text ([", "bad regex '(['"),
        ("break iteration x", "'iteration' needs a number"),
        ("break tool", "'tool' needs a tool name, e.g. tool refund_order"),
        ("break error now", "'error' takes no argument"),
        ("clear 7", "no breakpoint number 7 (breakpoints: none)"),
        ("clear x", "clear takes a breakpoint number, not 'x'"),
        ("save", "save needs a file name"),
        ("frobnicate now", "unknown command 'frobnicate'; type help for the list"),
        ("help frobnicate", "no command 'frobnicate'"),
        ("model  ", None),  # shows the model: not a mistake
    ],
)
def test_mistakes_get_a_clear_message_and_exit_1(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    message: str | None,
) -> None:
    code, out = step(monkeypatch, capsys, command + "\nwhere\n", ROUNDTRIP)
    assert "Traceback" not in out
    assert "the run ended: completed" in out  # the session went on after the mistake
    if message is None:
        assert code == 0 and "***" not in out
        return
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("*** ")]
    assert len(errors) == 1 and message in errors[0], errors


def test_a_rejected_edit_changes_nothing(tmp_path: Path) -> None:
    with Debugger.for_trace(ROUNDTRIP) as dbg:
        dbg.start()
        before = dbg.view()
        edits: list[tuple[str, str, Any]] = [
            ("set", "model", 5),
            ("set", "input[0]", "x"),
            ("set", "input[7]", {}),
            ("append", "request_params", 1),
        ]
        for method, path, value in edits:
            with pytest.raises((StepError, PathError)):
                getattr(dbg, method)(path, value)
        assert dbg.view() == before and dbg.pending_edits() == []


def test_help_lists_every_command_and_explains_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["where", "p", "set", "del", "append", "model", "result", "raw", "next", "continue"]
    names += ["until", "break", "clear", "save", "quit", "w", "n", "c", "b", "q", "state", "print"]
    script = "help\n" + "".join(f"help {n}\n" for n in names) + "?\n"
    code, out = step(monkeypatch, capsys, script, ROUNDTRIP)
    assert code == 0 and "***" not in out
    assert out.count("Commands (help COMMAND for more):") == 2
    assert "result CALL_ID OUTPUT: replace a pending tool result" in out
    assert "continue (c): go on to the end" in out


# -- going on: next, continue, until, conditional breakpoints -------------------------------------------


def test_conditional_breakpoints_from_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = step(
        monkeypatch, capsys, "c\nbreak\nc\n", PARALLEL, "--break", "tool=get_current_weather"
    )
    assert code == 0
    assert out.count("> paused at iteration") == 2  # the first breakpoint, then the condition
    assert (
        "> paused at iteration 1: breakpoint 1 (tool get_current_weather): get_current_weather "
        "was called (call_fHCjJqt9Pysde6vcJcvbXGBx, call_3J9foSw3CUb48lrqIXoTky6U)"
    ) in out
    assert "1: tool get_current_weather (hit 1 time)" in out
    assert "the run ended: completed after 2 iterations" in out


def test_break_iteration_until_and_clear(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = step(monkeypatch, capsys, "break iteration 1\nc\nq\n", ROUNDTRIP)
    assert code == 0
    assert "> paused at iteration 1: breakpoint 1 (iteration 1): iteration 1" in out
    assert "the run ended: quit after 1 iteration" in out

    code, out = step(monkeypatch, capsys, "until 1\nwhere\n", ROUNDTRIP)
    assert code == 0 and "> paused at iteration 1: until 1" in out

    code, out = step(monkeypatch, capsys, "b iteration 1\nclear 1\nc\n", ROUNDTRIP)
    assert code == 0 and "cleared 1 breakpoint" in out
    assert "paused at iteration 1" not in out


def test_break_text_matches_the_last_turn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = step(monkeypatch, capsys, "break text 2,869,461\nc\n", ROUNDTRIP)
    assert code == 0
    # The last turn ends the run, so there is no breakpoint after it: it is said at the end.
    assert "breakpoint 1 (text 2,869,461): the text matches '2,869,461'" in out
    assert "(in the last turn)" in out
    assert parse_condition("text=a b") == ("text", "a b")
    assert parse_condition("iter=3") == ("iteration", "3")
    assert parse_condition("tool refund_order") == ("tool", "refund_order")


def test_break_error_stops_after_a_retried_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    faulty = tmp_path / "faulty.jsonl"
    assert (
        main(["replay", ROUNDTRIP, "-q", "--fault", "iter=0:status=500", "--save", str(faulty)])
        == 0
    )
    capsys.readouterr()
    code, out = step(monkeypatch, capsys, "c\nc\n", str(faulty), "--break", "error")
    assert code == 0
    assert "iteration 0, attempt 0: request failed: APIStatusError: HTTP 500" in out
    assert "> paused at iteration 1: breakpoint 1 (error): request failed: APIStatusError" in out


def test_stepping_past_the_end_and_quit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "quit.jsonl"
    code, out = step(
        monkeypatch, capsys, f"n\nn\nn\np last_turn.text\nwhere\nsave {saved}\nq\n", ROUNDTRIP
    )
    assert code == 1  # the third n was refused
    assert "*** the run has ended (completed); look around, save it, or quit" in out
    assert 'last_turn.text = "1231 \u00d7 2331 = **2,869,461**"' in out
    assert "the run has ended: completed | model gpt-5.5" in out
    assert "(rawloop end) q" in out
    assert replays_identically(saved)

    with Debugger.for_trace(ROUNDTRIP) as dbg:
        dbg.start()
        dbg.next()
        assert dbg.quit().result.stop_reason == "quit"  # type: ignore[union-attr]
        dbg.save(tmp_path / "early.jsonl")
    end = Trace.load(tmp_path / "early.jsonl").end()
    assert end is not None and end["stop_reason"] == "quit"


# -- save -> replay is identical ------------------------------------------------------------------------


@pytest.mark.parametrize("trace", sorted(p.name for p in TRACES.glob("*.jsonl")))
def test_a_stepped_run_saves_a_trace_that_replays_identically(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, trace: str
) -> None:
    saved = tmp_path / "saved.jsonl"
    _, out = step(monkeypatch, capsys, f"n\nn\nn\nsave {saved}\n", str(TRACES / trace))
    assert "every request matched the recording" in out
    assert replays_identically(saved)
    original, again = Trace.load(TRACES / trace), Trace.load(saved)
    assert [e.body for e in again.exchanges()] == [e.body for e in original.exchanges()]
    assert [e.request["body"] for e in again.exchanges()] == [
        e.request["body"] for e in original.exchanges()
    ]
    assert len(again.of_kind("edit")) == len(original.of_kind("edit"))


def test_saving_mid_run_includes_the_edits_made_here(tmp_path: Path) -> None:
    with Debugger.for_trace(ROUNDTRIP, after_edit="ignore") as dbg:
        dbg.start()
        dbg.next()
        dbg.set_result(CALL, "42")
        records = dbg.save(tmp_path / "mid.jsonl.gz")
        assert records > 0
        dbg.cont()
    trace = Trace.load(tmp_path / "mid.jsonl.gz")
    assert trace.edits() == {1: [{"op": "replace", "path": "/results/0/output", "value": "42"}]}
    # The run so far, marked as a fork saved at iteration 1 (not cut short like a crash).
    end = trace.end()
    assert end is not None
    assert (end["stop_reason"], end["iterations"], end["error"]) == ("saved-fork", 1, None)
    assert end["usage"]["requests"] == 1
    assert replays_identically(tmp_path / "mid.jsonl.gz")


def test_edits_at_iteration_0_replay_identically(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "first.jsonl"
    script = (
        'append input {"role": "user", "content": "Show your work."}\n'
        "set request_params.temperature 0\n"
        f"c\nsave {saved}\n"
    )
    code, _ = step(monkeypatch, capsys, script, ROUNDTRIP, "--after-edit", "ignore")
    assert code == 0
    trace = Trace.load(saved)
    assert trace.exchanges()[0].request["body"]["input"][1]["content"] == "Show your work."
    # Recorded as whole fields: replay starts from the first request, which holds them already.
    assert [op["path"] for op in trace.edits()[0]] == ["/input", "/request_params"]
    assert replays_identically(saved)


def test_a_recorded_edit_is_replayed_before_the_prompt(tmp_path: Path) -> None:
    with Debugger.for_trace(EDITED) as dbg:
        dbg.start()
        dbg.next()
        assert dbg.state.results[0].output == "2869461 (checked by a human)"
        assert dbg.difference_from_recording() is None  # the recording's own edit
        assert dbg.pending_edits() == []
        pause = dbg.cont()
        assert pause.error is None and dbg.departure is None


# -- after an edit: stop, ignore, live ------------------------------------------------------------------


def test_after_edit_stop_ends_the_run_before_sending(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "stopped.jsonl"
    code, out = step(monkeypatch, capsys, f"n\nresult 0 42\nc\nsave {saved}\n", ROUNDTRIP)
    assert code == 0
    assert (
        'the next request differs from the recorded one at input[2].output (recorded "2869461", '
        'now "42"): going on ends the run here (after-edit stop); '
        "change it with: after-edit stop|live|ignore"
    ) in out
    assert "the run has left the recording at iteration 1" in out
    assert "after-edit stop: the run ends here, before sending it" in out
    assert "the run ended: left-recording after 1 iteration" in out
    trace = Trace.load(saved)
    assert len(trace.exchanges()) == 1  # the edited request was never sent
    assert trace.edits()[1][0]["value"] == "42"
    assert trace.end()["stop_reason"] == "left-recording"  # type: ignore[index]


def test_a_run_stopped_at_a_breakpoint_replays_identically(tmp_path: Path) -> None:
    with Debugger.for_trace(ROUNDTRIP) as dbg:
        dbg.start()
        dbg.next()
        dbg.quit()
        dbg.save(tmp_path / "quit.jsonl")
    assert replays_identically(tmp_path / "quit.jsonl")


def test_after_edit_ignore_answers_from_the_recording(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = step(
        monkeypatch, capsys, "n\nresult 0 42\nc\n", ROUNDTRIP, "--after-edit", "ignore"
    )
    assert code == 0
    assert "after-edit ignore: going on with the recorded responses" in out
    assert "iteration 1: edited (replace /results/0/output)" in out
    assert "the run ended: completed after 2 iterations" in out
    assert (
        "left the recording at iteration 1 (input[2].output), after-edit ignore: 1 request" in out
    )


class FakeAPI:
    """A loopback HTTP server that answers each POST with the next SSE body."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = list(bodies)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                api.requests.append(orjson.loads(self.rfile.read(length)))
                api.paths.append(self.path)
                body = api.bodies.pop(0) if api.bodies else b""
                self.send_response(200 if body else 500)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for start in range(0, len(body), 400):
                    self.wfile.write(body[start : start + 400])
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FakeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "tools.py"
    path.write_text(
        "from rawloop import tool\n\n"
        "@tool\n"
        "def multiply(a: int, b: int) -> int:\n"
        '    """Multiply two numbers."""\n'
        "    return a * b\n"
    )
    return path


def test_after_edit_live_goes_on_against_the_base_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    saved = tmp_path / "live.jsonl"
    with FakeAPI([corpus("responses-text-after-tool-1.sse")]) as api:
        script = f"n\nresult {CALL} 42\nc\nsave {saved}\n"
        code, out = step(monkeypatch, capsys, script, ROUNDTRIP, "--base-url", api.url)
    assert code == 0, out
    assert f"going on sends it to {api.url} (after-edit live)" in out
    assert f"after-edit live: going on against {api.url} (at most 10 requests)" in out
    assert "the run ended: completed after 2 iterations" in out
    assert api.paths == ["/v1/responses"]
    assert api.requests[0]["input"][2] == {
        "type": "function_call_output",
        "call_id": CALL,
        "output": "42",
    }
    assert replays_identically(saved)


def test_live_runs_real_tools_and_stops_where_asked(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tools_file: Path,
) -> None:
    saved = tmp_path / "live.jsonl"
    bodies = [corpus("responses-function-call-1.sse"), corpus("responses-text-after-tool-1.sse")]
    with FakeAPI(bodies) as api:
        code, out = step(
            monkeypatch,
            capsys,
            f"c\nresult\nresult 0 1\nc\nsave {saved}\n",
            "--live",
            "--model",
            "gpt-5.5",
            "--tools",
            str(tools_file),
            "--base-url",
            api.url,
            "--break",
            "tool=multiply",
            "What is 1231 * 2331?",
        )
    assert code == 0, out
    assert f"rawloop step: live, responses at {api.url}" in out
    assert "> paused at iteration 1: breakpoint 1 (tool multiply): multiply was called" in out
    assert f'[0] multiply {CALL} -> "2869461"' in out  # the real handler ran
    assert api.requests[0]["tools"][0]["name"] == "multiply"
    assert api.requests[1]["input"][-1]["output"] == "1"
    assert replays_identically(saved)


def test_live_without_a_handler_tells_the_model_and_the_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = [corpus("responses-function-call-1.sse"), corpus("responses-text-after-tool-1.sse")]
    with FakeAPI(bodies) as api:
        # Leave the recording at iteration 0; the live model then calls a tool nobody runs here.
        script = 'set request_params.temperature 0\nn\nresult 0\nresult 0 "7"\nwhere\nc\n'
        retry = str(TRACES / "retry-after-cut.jsonl")
        code, out = step(monkeypatch, capsys, script, retry, "--base-url", api.url)
    assert code == 0, out
    assert "(error: NoHandler)" in out
    assert "no handler for tool 'multiply' in this debugging session" in out
    assert f'[0] multiply {CALL} -> "7"\n' in out  # the output set by hand, the error cleared
    assert api.requests[1]["input"][-1]["output"] == "7"
    assert "the run ended: completed after 2 iterations" in out


# -- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.jsonl"], "no trace file 'nope.jsonl'"),
        (
            ["What is 2+2?"],
            "to send it as a prompt, run it live: rawloop step --live --model MODEL 'What is 2+2?'",
        ),
        ([], "give a trace to step through, or --live"),
        ([ROUNDTRIP, "--model", "x"], "--model only go with --live"),
        ([ROUNDTRIP, "--break", "tool"], "'tool' needs a tool name"),
        ([ROUNDTRIP, "--after-edit", "live"], "after_edit='live' needs a base URL"),
        ([ROUNDTRIP, "--commands", "missing.txt"], "missing.txt"),
        (["--live", "hi"], "--live needs --model NAME"),
        (["--live", "--model", "m"], "--live needs a prompt"),
        (["--live", "--model", "m", "--after-edit", "stop", "hi"], "--after-edit is for replays"),
        (["--live", "--model", "m", "--tools", "none.py", "hi"], "none.py: no such file"),
    ],
)
def test_bad_invocations_exit_2_with_a_message(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    code, out = step(monkeypatch, capsys, "", *args)
    assert code == 2
    assert message in out and "Traceback" not in out


def test_live_needs_a_key_for_a_remote_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code, out = step(monkeypatch, capsys, "", "--live", "--model", "m", "hi")
    assert code == 2 and "no API key for https://api.openai.com/v1" in out


def test_commands_from_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    commands = tmp_path / "debug.txt"
    commands.write_text("# inspect the call, then finish\nn\n\np last_turn.calls[0].name\n")
    code, out = step(monkeypatch, capsys, "quit\n", ROUNDTRIP, "--commands", str(commands))
    assert code == 0
    assert 'last_turn.calls[0].name = "multiply"' in out
    assert "(rawloop 1) \n" in out  # an empty line does nothing in a script
    assert "the run ended: completed" in out  # the file's end, not stdin's quit


def test_a_run_that_fails_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A hook that changes the state behind the debugger's back makes the replay diverge.
    hook = tmp_path / "meddle.py"
    hook.write_text(
        "def on_breakpoint(state):\n"
        "    if state.iteration == 1:\n"
        "        state.request_params['temperature'] = 2\n"
    )
    code, out = step(monkeypatch, capsys, "c\nwhere\n", ROUNDTRIP, "--hook", str(hook))
    assert code == 2
    # Which value is the recording's, not "<missing> != 2".
    assert (
        "the run failed: ReplayDivergence: iteration 1: the request differs from the recording "
        "at temperature (recorded nothing, now 2)"
    ) in out


# -- from Python -------------------------------------------------------------------------------------


def test_the_programmatic_twin_in_the_docs(tmp_path: Path) -> None:
    """The README's "Breakpoints from Python": a hook's edits are recorded; iter() steps."""
    api = ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse"), chunk_size=300),
            Reply(corpus("responses-text-after-tool-1.sse"), chunk_size=300),
        ]
    )

    class Review:
        def on_breakpoint(self, state: Any) -> None:
            for result in state.results:
                if result.name == "multiply":
                    result.output = "2869461 (checked)"
            state.request_params["temperature"] = 0

    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    async def go() -> list[int]:
        loop = Loop("gpt-5.5", tools=[multiply], http_client=api.client())
        seen = []
        async with loop.iter(
            "What is 1231 * 2331?", hooks=[Review(), TraceRecorder(tmp_path / "r.jsonl")]
        ) as run:
            async for s in run:
                seen.append(s.iteration)
        return seen

    assert anyio.run(go) == [0, 1]
    assert api.bodies[1]["input"][-1]["output"] == "2869461 (checked)"
    assert api.bodies[1]["temperature"] == 0
    assert replays_identically(tmp_path / "r.jsonl")


def test_the_debugger_from_python(tmp_path: Path) -> None:
    lines: list[str] = []
    with Debugger.for_trace(ROUNDTRIP, after_edit="ignore", progress=lines.append) as dbg:
        assert dbg.start().iteration == 0
        pause = dbg.next()
        assert (pause.iteration, pause.ended) == (1, False)
        assert dbg.get("results[0].name") == ("results[0].name", "multiply")
        dbg.set_result("call_sV", "42")
        pause = dbg.cont()
        assert pause.ended and pause.result is not None
        assert pause.result.stop_reason == "completed"
        dbg.save(tmp_path / "edited.jsonl")
        with pytest.raises(StepError, match="the run has ended"):
            dbg.set("model", "x")
    assert 'iteration 0: multiply call_sVidsfFJ6zlzRpelrPkTPlpd -> "2869461"' in lines
    assert replays_identically(tmp_path / "edited.jsonl")


def test_closing_a_paused_debugger_ends_the_run_and_its_thread(tmp_path: Path) -> None:
    before = threading.active_count()
    dbg = Debugger.for_trace(ROUNDTRIP)
    dbg.start()
    recording = dbg.recording
    dbg.close()
    assert not recording.exists()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_the_debugger_parts_are_importable_from_rawloop_debug_debugger() -> None:
    """The engine is split into modules; ``rawloop.debug.debugger`` still names every public part."""
    import rawloop.debug.debugger as debugger
    from rawloop.debug import access, breakpoints, departure, edits, errors, session, wording

    homes = {
        "AFTER_EDIT_MODES": departure,
        "Attempt": session,
        "Departure": session,
        "Condition": breakpoints,
        "CONDITION_KINDS": breakpoints,
        "StepError": errors,
        "describe_difference": wording,
        "describe_turn": wording,
        "parse_condition": breakpoints,
    }
    for name, home in homes.items():
        assert getattr(debugger, name) is getattr(home, name), name
    for name in debugger.__all__:
        assert hasattr(debugger, name), name
    assert issubclass(debugger.Debugger, departure.Departing)
    assert issubclass(debugger.Debugger, access.StateAccess)
    for module in (access, breakpoints, departure, edits, session, wording, errors):
        assert module.__doc__ and all(hasattr(module, n) for n in module.__all__)


# -- paths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tokens"),
    [
        ("input[3].output", ["input", 3, "output"]),
        ("/input/3/output", ["input", "3", "output"]),
        ("$.request_params.temperature", ["request_params", "temperature"]),
        (".model", ["model"]),
        ("input[-1]", ["input", -1]),
        ("input.3.output", ["input", "3", "output"]),
        ('tools[0]["a.b c"]', ["tools", 0, "a.b c"]),
        ("tools[0]['it\\'s']", ["tools", 0, "it's"]),
        ("/a~1b/c~0d", ["a/b", "c~d"]),
        ("", []),
        ("/", []),
        ("$", []),
    ],
)
def test_paths_parse(path: str, tokens: list[Any]) -> None:
    assert parse(path) == tokens


def test_paths_resolve_to_concrete_tokens() -> None:
    doc = {"input": [{"a": 1}, {"b": [True]}], "p": {}}
    assert locate(doc, parse("input[-1].b[0]")) == (["input", 1, "b", 0], True, True)
    assert locate(doc, parse("/input/0/a")) == (["input", 0, "a"], 1, True)
    assert locate(doc, parse("p.new"), missing_ok=True) == (["p", "new"], None, False)
    with pytest.raises(PathError, match=r"p has no key 'new' \(it is empty\)"):
        locate(doc, parse("p.new"))
    with pytest.raises(PathError, match="input has 2 items: index -3 is out of range"):
        locate(doc, parse("input[-3]"))
    assert pointer(["input", 1, "a/b"]) == "/input/1/a~1b"
    assert display(["input", 1, "a b"]) == "input[1]['a b']"
    assert split_path('tools[0]["a b"] {"x": 1}') == ('tools[0]["a b"]', '{"x": 1}')
    assert split_path("model") == ("model", "")


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=50),
            st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
        ),
        max_size=5,
    )
)
def test_any_path_survives_its_pointer_and_its_display(tokens: list[Any]) -> None:
    assert parse(pointer(tokens)) == [str(t) for t in tokens]
    shown = display(tokens)
    if shown != "<root>" and not any(isinstance(t, str) and t.strip() != t for t in tokens):
        reparsed = parse(shown)
        assert [str(t) for t in reparsed] == [str(t) for t in tokens]


# -- a real terminal ---------------------------------------------------------------------------------


def _read_until(fd: int, marker: bytes, buffer: bytearray, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while marker not in buffer:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} within {timeout} s; got {bytes(buffer)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            data = b""
        if not data:
            raise AssertionError(f"the terminal closed before {marker!r}; got {bytes(buffer)!r}")
        buffer.extend(data)
    end = buffer.index(marker) + len(marker)
    out = bytes(buffer[:end])
    del buffer[:end]
    return out


@pytest.fixture
def terminal() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("needs a POSIX pseudo-terminal")
    master, slave = os.openpty()
    env = {**os.environ, "TERM": "dumb", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rawloop.cli", "step", ROUNDTRIP],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    try:
        yield master, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        os.close(master)


def test_a_real_terminal(terminal: tuple[int, subprocess.Popen[bytes]]) -> None:
    fd, process = terminal
    buffer = bytearray()
    first = _read_until(fd, b"(rawloop 0) ", buffer)
    assert b"> paused at iteration 0" in first
    os.write(fd, b"where\n")
    shown = _read_until(fd, b"(rawloop 0) ", buffer)
    assert b"iteration 0 (request 1 of at most 2) | model gpt-5.5" in shown
    os.write(fd, b"b tool multiply\n")
    _read_until(fd, b"(rawloop 0) ", buffer)
    os.write(fd, b"clear\n")
    _read_until(fd, b"Clear all 1 breakpoint? (y/n) ", buffer)  # asked at the terminal
    os.write(fd, b"y\n")
    assert b"cleared 1 breakpoint" in _read_until(fd, b"(rawloop 0) ", buffer)
    os.write(fd, b"c\n")
    ended = _read_until(fd, b"(rawloop end) ", buffer)
    assert b"the run ended: completed after 2 iterations" in ended
    assert b"every request matched the recording" in ended
    os.write(fd, b"q\n")
    assert process.wait(timeout=10) == 0
