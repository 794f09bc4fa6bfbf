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


# -- a trace is untrusted: nothing in it becomes code ----------------------------------------

ROUNDTRIP = TRACES[0].parent / "tool-roundtrip.jsonl"

# What could end a comment, a docstring or a literal, as whole pieces and as characters.
hostile_text = st.lists(
    st.characters(codec="utf-8")
    | st.sampled_from(
        [
            *['"', "'", '"""', "'''", "\\", "\n", "\r", "\r\n", "\u2028", "\u2029", "\x85"],
            *["\x0c", "\x0b", "\x1c", "\x00", "#", "{", "}", "\t", "a", " ", "é", "\\N"],
            *["\nimport os\nos.system('x')\n", '"""\nraise SystemExit\n"""', "\\\n", "\ud7ff"],
        ]
    ),
    max_size=12,
).map("".join)
# Any character but the two a POSIX file name cannot hold.
file_names = st.lists(
    st.sampled_from(['"', "'", '"""', "\\", "\n", "\r", "\u2028", "\x85", "\x0c", "a", " ", "-"]),
    min_size=1,
    max_size=12,
).map(lambda parts: "".join(parts) + ".jsonl")


def hostile_trace(path: Path, name: str, text: str, output: str, argument: str) -> None:
    records = [json.loads(line) for line in ROUNDTRIP.read_text().splitlines()]
    for record in records:
        if record["kind"] == "decision":
            for call in record["turn"]["calls"]:
                call["name"] = name
                call["arguments"] = json.dumps({"a": argument})
            record["turn"]["text"] = text
        if record["kind"] == "result":
            record["name"], record["output"] = name, output
        if record["kind"] == "request" and record["iteration"] == 1:
            record["body"]["input"][2]["output"] = output  # what the run sent
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def skeleton(source: str) -> str:
    """The statements of ``source`` with every string and the test's name blanked."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = "S"
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            node.name = "test_"
    return ast.dump(tree)


def comments(source: str) -> list[str]:
    import tokenize

    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.string for t in tokens if t.type == tokenize.COMMENT]


@settings(max_examples=80, deadline=None)
@given(
    name=hostile_text,
    text=hostile_text,
    output=hostile_text,
    argument=hostile_text,
    file_name=file_names,
)
def test_the_generated_file_holds_only_the_statements_meant(
    name: str, text: str, output: str, argument: str, file_name: str
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        benign_path, hostile_path = folder / "benign.jsonl", folder / file_name
        hostile_trace(benign_path, "multiply", "x", "y", "z")
        hostile_trace(hostile_path, name, text, output, argument)
        expected = to_test(benign_path, folder / "out" / "test_benign.py")
        source = to_test(hostile_path, folder / "out" / "test_hostile.py")
    assert skeleton(source) == skeleton(expected)
    # The comments are the generator's, one per iteration, each on its own line.
    found = comments(source)
    assert len(found) == len(comments(expected)) == 2
    assert all(c.startswith("# Iteration ") for c in found)
    assert not any(sep in line for line in source.split("\n") for sep in "\r\x0b\x0c\x1c\x85")
    assert "\u2028" not in source and "\u2029" not in source
    # The trace's values are in the file as values, unchanged.
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree)
    assert docstring is not None and docstring.startswith("Replay test for ")
    asserted: dict[str, list[Any]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
            left = ast.unparse(node.test.left)
            if left in ("turn.text", "calls(turn)", "outputs(result, turn)"):
                asserted.setdefault(left, []).append(ast.literal_eval(node.test.comparators[0]))
    assert asserted["turn.text"] == [text, text]
    assert asserted["calls(turn)"] == [[(name, {"a": argument})], []]
    assert asserted["outputs(result, turn)"] == [[output]]


def test_a_name_or_file_name_breaking_out_runs_nothing(pytester: pytest.Pytester) -> None:
    """The defect as found: a newline in a function name became a line pytest ran."""
    pwned = pytester.path / "pwned"
    payload = "\n(__import__('pathlib').Path('pwned').write_text('x'))\n"  # pytest's cwd
    folder = pytester.path / "traces"
    folder.mkdir()
    trace = folder / f'evil"""{payload}""".jsonl'
    hostile_trace(trace, "multiply" + payload + "#", "x", "2869461", "1")
    output = pytester.path / "tests" / "test_evil.py"
    source = to_test(trace, output)
    assert payload not in source
    result = run(pytester, str(output))
    assert not pwned.exists()
    result.assert_outcomes(failed=1)  # the trace was changed, so its replay diverges
    assert "Path(" in source and "write_text" in source  # present, but only inside strings
    hostile_trace(folder / "benign.jsonl", "multiply", "x", "2869461", "1")
    assert skeleton(source) == skeleton(to_test(folder / "benign.jsonl", output))
