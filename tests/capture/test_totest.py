"""``rawloop to-test``: the generated tests pass, read well, and catch a changed trace."""

from __future__ import annotations

import ast
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawloop import Loop
from rawloop.capture.to_test import command, python_literal, to_test
from rawloop.replay.scripted import Reply, ScriptedAPI

from ..conftest import corpus

pytest_plugins = ["pytester"]

TRACES = sorted((Path(__file__).parents[2] / "traces").glob("*.jsonl"))
RUFF = shutil.which("ruff")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Plain test files: no plugin of ours, and hypothesis's costs a second per session.
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args)


def generate(pytester: pytest.Pytester, trace: Path, **kwargs: Any) -> tuple[Path, str]:
    (pytester.path / "traces").mkdir(exist_ok=True)
    copy = pytester.path / "traces" / trace.name
    shutil.copy(trace, copy)
    output = pytester.path / "tests" / f"test_{trace.stem.replace('-', '_')}.py"
    return output, to_test(copy, output, **kwargs)


def ruff_format_check(path: Path, line_length: int = 88) -> None:
    if RUFF is None:
        return
    done = subprocess.run(
        [RUFF, "format", "--isolated", "--line-length", str(line_length), "--diff", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [RUFF, "check", "--isolated", "--line-length", str(line_length), "--select",
         "E,F,W,I,B,UP,SIM,RUF", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_test_generated_for_each_bundled_trace_passes(pytester: pytest.Pytester) -> None:
    outputs = [generate(pytester, trace)[0] for trace in TRACES]
    result = run(pytester, str(pytester.path / "tests"))
    result.assert_outcomes(passed=len(TRACES))
    for output in outputs:
        ruff_format_check(output)


def test_the_generated_test_reads_as_the_conversation(pytester: pytest.Pytester) -> None:
    output, source = generate(pytester, TRACES[0].parent / "tool-roundtrip.jsonl")
    assert output.read_text() == source
    assert 'TRACE = Path(__file__).parent / "../traces/tool-roundtrip.jsonl"' in source
    assert "rawloop to-test " in source and "-o " in source
    for line in (
        '    assert report.verdict == "identical", str(report)',
        '    assert result.stop_reason == "completed"',
        "    assert result.iterations == 2",
        "    # Iteration 0: the model calls multiply.",
        '    assert calls(turn) == [("multiply", {"a": 1231, "b": 2331})]',
        '    assert outputs(result, turn) == ["2869461"]',
        "    # Iteration 1: the model answers.",
        '    assert turn.text == "1231 \\u00d7 2331 = **2,869,461**"',
    ):
        assert line in source.splitlines()
    without_output = to_test(pytester.path / "traces" / "tool-roundtrip.jsonl")
    assert "TRACE = Path(" in without_output and "-o <this file>" in without_output


def _mutate(path: Path, change: Any) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def test_the_generated_test_fails_when_the_trace_changes(pytester: pytest.Pytester) -> None:
    trace = TRACES[0].parent / "tool-roundtrip.jsonl"
    output, _ = generate(pytester, trace)
    copy = pytester.path / "traces" / trace.name

    # A consistent change (the tool output and the request carrying it): the replay
    # still matches its trace, the literal expectations catch it.
    def new_tool_output(records: list[dict[str, Any]]) -> None:
        for record in records:
            if record["kind"] == "result":
                record["output"] = "42"
            if record["kind"] == "request" and record["iteration"] == 1:
                record["body"]["input"][2]["output"] = "42"

    _mutate(copy, new_tool_output)
    result = run(pytester, str(output))
    result.assert_outcomes(failed=1)
    assert "At index 0 diff: '42' != '2869461'" in result.stdout.str()

    # A recorded decision the stream no longer gives: the replay verdict catches it.
    shutil.copy(trace, copy)

    def new_text(records: list[dict[str, Any]]) -> None:
        records[-2]["turn"]["text"] = "something else"

    _mutate(copy, new_text)
    result = run(pytester, str(output))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: diverged: iteration 1: the decision differs*"])

    # Stopping for another reason.
    shutil.copy(trace, copy)

    def new_end(records: list[dict[str, Any]]) -> None:
        records[-1]["stop_reason"] = "max_iterations"

    _mutate(copy, new_end)
    result = run(pytester, str(output))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*diverged: the run stopped with 'completed'*"])


def test_long_texts_are_wrapped_and_still_pass(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A long answer with a narrow no-break space: a parenthesised literal, escaped."""
    trace = tmp_path / "web-search.jsonl"

    async def record() -> None:
        api = ScriptedAPI([Reply(corpus("responses-web-search-1.sse"))])
        loop = Loop("gpt-4.1", http_client=api.client(), tools=[{"type": "web_search"}])
        await loop.run("What time is it in Redmond?", trace=trace)

    anyio.run(record)
    output, source = generate(pytester, trace, line_length=100)
    assert "    assert turn.text == (\n" in source
    assert "\\u202f" in source
    assert max(len(line) for line in source.splitlines()) <= 100
    run(pytester, str(output)).assert_outcomes(passed=1)
    ruff_format_check(output, line_length=100)


# -- literals ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(value=json_values, width=st.integers(40, 120), start=st.integers(0, 30))
def test_literals_evaluate_back_to_the_value(value: Any, width: int, start: int) -> None:
    source = python_literal(value, width=width, start=start)
    assert ast.literal_eval(source) == value


@settings(max_examples=60, deadline=None)
@given(text=st.text(st.characters(codec="utf-8"), max_size=400))
def test_long_strings_become_wrapped_concatenations(text: str) -> None:
    source = python_literal(text, width=60, start=20)
    assert ast.literal_eval(source) == text
    lines = source.splitlines()
    if len(lines) > 1:
        assert lines[0] == "(" and lines[-1] == ")"
        # Each piece fits unless one word alone is longer than a line.
        assert all(len(line) <= 60 or " " not in line.strip()[1:-1] for line in lines)


def test_nested_values_are_laid_out_one_item_a_line() -> None:
    value = [("get_weather", {"location": "San Francisco, CA", "unit": "celsius"})] * 2
    assert python_literal(value, width=80, start=26) == (
        "[\n"
        '    ("get_weather", {"location": "San Francisco, CA", "unit": "celsius"}),\n'
        '    ("get_weather", {"location": "San Francisco, CA", "unit": "celsius"}),\n'
        "]"
    )
    assert python_literal('say "hi"', width=80) == "'say \"hi\"'"
    assert python_literal("tab\there\x00", width=80) == '"tab\\there\\x00"'
    assert python_literal("Here\u2019s 日本語, café", width=80) == '"Here\\u2019s 日本語, café"'


def test_the_command_prints_or_writes(tmp_path: Path) -> None:
    trace = TRACES[0].parent / "chat-run.jsonl"
    out = io.StringIO()
    assert command(trace, out=out) == 0
    assert out.getvalue().startswith('"""Replay test for ')
    out = io.StringIO()
    target = tmp_path / "test_chat.py"
    assert command(trace, target, line_length=100, out=out) == 0
    assert out.getvalue() == f"wrote {target}: a replay test for {trace}\n"
    compile(target.read_text(), str(target), "exec")
