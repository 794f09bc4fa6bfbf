"""README's walkthrough, from a customer bug to a regression test that catches it.

capture -> show -> step (correct the result) -> save -> to-test --tools -> red
-> fix -> green, each step through the real CLI (``rawloop.cli.main.main`` in
process) and the generated test run by a real pytest (pytester). The customer's
app is the openai SDK running its own tool loop; its ``multiply`` tool adds
instead of multiplying. The capture goes through ``rawloop record``'s proxy in
front of a scripted fake model, all on 127.0.0.1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from rawloop import Trace
from rawloop.capture.proxy import RecordingProxy
from rawloop.cli.main import main
from rawloop.replay.replayer import expected_outputs, replay
from rawloop.replay.server import ReplayServer
from rawloop.replay.synth import script_to_trace

pytest_plugins = ["pytester"]

SCRIPT = {
    "dialect": "responses",
    "model": "gpt-test",
    "turns": [
        {"calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"text": "6 * 7 = 42"},
    ],
}

BUGGY_TOOLS = '''
from rawloop import tool


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a + b
'''

APP = """
import json

from openai import OpenAI

import tools

TOOLS = [{
    "type": "function", "name": "multiply", "description": "Multiply two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                   "b": {"type": "integer"}}, "required": ["a", "b"]},
}]


def ask(base_url, question):
    client = OpenAI(base_url=base_url, api_key="test", max_retries=0)
    items = [{"role": "user", "content": question}]
    while True:
        events = client.responses.create(model="gpt-test", input=items, tools=TOOLS, stream=True)
        response = [event for event in events][-1].response
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return response.output_text
        for call in calls:
            items.append(call.model_dump(exclude_none=True))
            output = tools.multiply(**json.loads(call.arguments))
            items.append({"type": "function_call_output", "call_id": call.call_id,
                          "output": str(output)})
"""


async def capture_the_bug(folder: Path) -> Path:
    """1. Capture: the customer's app through the recording proxy; the one trace."""
    sys.path.insert(0, str(folder))
    try:
        import app  # type: ignore[import-not-found]

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                model = ReplayServer([script_to_trace(SCRIPT)])
                port = await group.start(model.serve)
                proxy = RecordingProxy(f"http://127.0.0.1:{port}", folder / "captured")
                await group.start(proxy.serve)
                text = await anyio.to_thread.run_sync(app.ask, proxy.url, "What is 6 * 7?")
                assert text == "6 * 7 = 42"
                group.cancel_scope.cancel()
    finally:
        sys.path.remove(str(folder))
        for name in ("app", "tools"):
            sys.modules.pop(name, None)
    (path,) = sorted((folder / "captured").glob("run-*.jsonl"))
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_from_a_customer_bug_to_a_regression_test(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = pytester.path
    (folder / "tools.py").write_text(BUGGY_TOOLS)
    (folder / "app.py").write_text(APP)
    monkeypatch.chdir(folder)
    captured = anyio.run(capture_the_bug, folder)
    trace = Trace.load(captured)
    (call_id,) = trace.results()
    assert expected_outputs(trace) == {call_id: "13"}  # the bug, as the customer's app sent it

    # 2. Show: the tool output is there to read.
    code, out = cli(capsys, "show", str(captured))
    assert code == 0 and "13" in out and "multiply" in out

    # 3-4. Step: correct the result at the breakpoint before it is sent, finish, save.
    commands = folder / "fix.txt"
    commands.write_text(f"n\nresult {call_id} 42\nc\nsave fixed.jsonl\n")
    code, out = cli(
        capsys, "step", str(captured), "--commands", str(commands), "--after-edit", "ignore"
    )
    assert code == 0, out
    fixed = Trace.load(folder / "fixed.jsonl")
    assert expected_outputs(fixed) == {call_id: "42"}  # what the fork sent: the corrected value
    assert fixed.results()[call_id]["output"] == "13"  # what the tool returned, kept
    report = anyio.run(replay, fixed)
    assert report.identical, str(report)
    assert report.result is not None
    assert [r.output for r in report.result.results] == ["42"]  # RunResult.results: what was sent

    # replay --live-tools reports the live output against the corrected one, not masked by the edit.
    code, out = cli(capsys, "replay", "fixed.jsonl", "--tools", "tools.py", "--live-tools", "-q")
    assert code == 1
    assert "'42' != '13'" in out
    assert f"tool output changed: multiply {call_id}: recorded '42', now '13'" in out

    # 5. to-test --tools: a test that runs the tool live.
    code, out = cli(
        capsys, "to-test", "fixed.jsonl", "-o", "tests/test_multiply_bug.py", "--tools", "tools.py"
    )
    assert code == 0, out
    quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "tests/test_multiply_bug.py")

    # Red: the tool still adds.
    result = pytester.runpytest_subprocess(*quiet)
    result.assert_outcomes(failed=1)
    assert "AssertionError: assert ['13'] == ['42']" in result.stdout.str()

    # Fix the tool: green.
    (folder / "tools.py").write_text(BUGGY_TOOLS.replace("a + b", "a * b"))
    pytester.runpytest_subprocess(*quiet).assert_outcomes(passed=1)
    code, out = cli(capsys, "replay", "fixed.jsonl", "--tools", "tools.py", "--live-tools", "-q")
    assert code == 0, out


def test_a_test_from_an_unforked_trace_runs_the_tools_too(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a correction the recorded output is the expected one; a changed tool fails."""
    source = Path(__file__).parents[2] / "traces" / "tool-roundtrip.jsonl"
    folder = pytester.path
    (folder / "trace.jsonl").write_bytes(source.read_bytes())
    (folder / "tools.py").write_text(BUGGY_TOOLS.replace("a + b", "a * b"))
    monkeypatch.chdir(folder)
    code, _ = cli(capsys, "to-test", "trace.jsonl", "-o", "tests/test_t.py", "--tools", "tools.py")
    assert code == 0
    quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "tests/test_t.py")
    pytester.runpytest_subprocess(*quiet).assert_outcomes(passed=1)
    (folder / "tools.py").write_text(BUGGY_TOOLS.replace("a + b", "a * b + 1"))
    result = pytester.runpytest_subprocess(*quiet)
    result.assert_outcomes(failed=1)
    assert "AssertionError: assert ['2869462'] == ['2869461']" in result.stdout.str()
    missing = cli_error(capsys, "to-test", "trace.jsonl", "--tools", "nowhere.py")
    assert "nowhere.py: no such file" in missing


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 2
    return captured.err + captured.out
