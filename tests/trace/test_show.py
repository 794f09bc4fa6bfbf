"""The trace timeline, the raw bytes and the JSON form, from traces of real (scripted) runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.state import LoopState
from rawloop.loop.tools import tool
from rawloop.trace.format import Trace
from rawloop.trace.show import as_json, raw, render

from ..conftest import Reply, ScriptedAPI, corpus
from ..loop.test_loop import call_reply, multiply, text_reply

pytestmark = pytest.mark.anyio

KEY = "sk-test-show-" + "0123456789abcdefghij"  # no key-shaped literal in the source
NO_WAIT = RetryPolicy(max_retries=2, initial_delay=0.0)
SEPARATOR = re.compile(rb"--- iteration (\d+) attempt (\d+): (.*?) \((\d+) bytes\) ---\n")


# -- making real traces (also used by test_tracediff and test_cli) ---------------------------


async def record(path: Path, replies: list[Reply], **kwargs: Any) -> Path:
    """Run the loop against scripted replies and record its trace at ``path``."""
    api = ScriptedAPI(replies)
    kwargs.setdefault("tools", [multiply])
    kwargs.setdefault("retries", NO_WAIT)
    question = kwargs.pop("question", "What is 1231 * 2331?")
    loop = Loop(kwargs.pop("model", "gpt-5.5"), http_client=api.client(), api_key=KEY, **kwargs)
    await loop.run(question, trace=path)
    return path


async def two_turns(path: Path, chunk_size: int = 256, **kwargs: Any) -> Path:
    """A Responses run: the model calls ``multiply``, then answers."""
    replies = [
        Reply(corpus("responses-function-call-1.sse"), chunk_size=chunk_size),
        Reply(corpus("responses-text-after-tool-1.sse"), chunk_size=chunk_size),
    ]
    return await record(path, replies, **kwargs)


async def chat_run(path: Path) -> Path:
    replies = [Reply(corpus("chat-tool-call-1.sse")), Reply(corpus("chat-text-after-tool-1.sse"))]
    return await record(path, replies, model="gpt-4o-mini", dialect="chat")


async def retry_run(path: Path) -> Path:
    replies = [
        Reply(
            b'{"error": {"message": "slow down"}}',
            status=429,
            headers={"retry-after-ms": "10", "x-request-id": "req_429"},
        ),
        Reply(corpus("responses-text-minimal-1.sse")),
    ]
    return await record(path, replies, question="ping")


class ChangeOutput:
    """A breakpoint hook that replaces the first tool output before it is sent."""

    def __init__(self, output: str = "42") -> None:
        self.output = output

    def on_breakpoint(self, state: LoopState) -> None:
        if state.iteration == 1:
            state.results[0].output = self.output


async def edited_run(path: Path) -> Path:
    return await two_turns(path, hooks=[ChangeOutput()])


def cut(path: Path, lines: int, to: Path) -> Path:
    """A copy of the trace without its last ``lines`` lines, as a crash leaves it."""
    kept = path.read_bytes().splitlines(keepends=True)[:-lines]
    to.write_bytes(b"".join(kept))
    return to


# -- the timeline ------------------------------------------------------------------------------


async def test_a_tool_run_shows_requests_calls_results_text_and_the_end(tmp_path: Path) -> None:
    trace = Trace.load(await two_turns(tmp_path / "run.jsonl"))
    text = render(trace)
    header = text.splitlines()[1]
    for field in (
        "dialect=responses",
        "model=gpt-5.5",
        "base_url=https://api.openai.com/v1",
        "created=",
        "rawloop=",
    ):
        assert field in header
    assert "iteration 0" in text and "iteration 1" in text
    assert "attempt 0: POST https://api.openai.com/v1/responses" in text
    assert "1 input item: user" in text and "tools: multiply" in text
    assert (
        "3 input items: user, function_call multiply, "
        "function_call_output call_sVidsfFJ6zlzRpelrPkTPlpd"
    ) in text
    assert re.search(r"response 200, headers after [\d.]+ ms", text)
    assert re.search(r"stream: 29 chunks, 7352 bytes, first byte [\d.]+ ms, last byte", text)
    assert 'call multiply({"a":1231,"b":2331}) id=call_sVidsfFJ6zlzRpelrPkTPlpd' in text
    assert "result multiply id=call_sVidsfFJ6zlzRpelrPkTPlpd" in text
    lines = text.splitlines()
    output_at = lines.index("    output:")
    assert lines[output_at + 1] == "      2869461"
    assert "      1231 × 2331 = **2,869,461**" in lines  # noqa: RUF001 - the model's text
    assert "usage: input_tokens=58 output_tokens=23 total_tokens=81" in text
    assert re.search(r"^end: completed, 2 iterations, in [\d.]+ m?s$", text, re.M)
    assert "usage: requests=2 input_tokens=152 output_tokens=41 total_tokens=193" in text
    assert "NO END RECORD" not in text


async def test_no_secret_and_no_request_header_value_is_shown(tmp_path: Path) -> None:
    trace = Trace.load(await two_turns(tmp_path / "run.jsonl"))
    for text in (
        render(trace),
        orjson.dumps(as_json(trace)).decode(),
        raw(trace).decode(errors="replace"),
    ):
        assert KEY not in text and KEY[8:] not in text
        assert "[REDACTED" not in text and "Bearer" not in text
        assert "python-httpx" not in text  # no header values at all
    assert "headers: 8 sent (redacted: authorization)" in render(trace)


async def test_a_chat_run(tmp_path: Path) -> None:
    text = render(Trace.load(await chat_run(tmp_path / "chat.jsonl")))
    assert "dialect=chat" in text and "model=gpt-4o-mini" in text
    assert "attempt 0: POST https://api.openai.com/v1/chat/completions" in text
    assert "1 message: user" in text
    assert "3 messages: user, assistant tool_calls multiply, tool call_" in text
    assert "finish_reason tool_calls" in text and "finish_reason stop" in text
    assert re.search(r'call multiply\(\{"a": ?1231, ?"b": ?2331\}\) id=call_', text)
    assert "The result of \\( 1231 \\times 2331 \\) is \\( 2,869,461 \\)." in text
    assert "end: completed, 2 iterations" in text


async def test_a_retry_shows_each_attempt_its_error_and_delay(tmp_path: Path) -> None:
    text = render(Trace.load(await retry_run(tmp_path / "retry.jsonl")))
    first, second = text.split("  attempt 1: ")
    assert "attempt 0: POST" in first
    assert "response 429, request id req_429" in first
    assert (
        "error: APIStatusError: HTTP 429 (request id req_429): slow down; retrying in 10.0 ms"
        in (first)
    )
    assert "same request body as attempt 0" in second and "response 200" in second
    assert "text (4 chars):" in second and "      pong" in second.splitlines()


async def test_breakpoint_edits_are_listed_before_the_request_they_changed(
    tmp_path: Path,
) -> None:
    text = render(Trace.load(await edited_run(tmp_path / "edit.jsonl")))
    iteration_1 = text.split("iteration 1 (112 tokens)\n")[1]
    assert iteration_1.startswith(
        "  breakpoint edits (1):\n"
        '    replace /results/0/output: was "2869461", now "42"\n'
        "  attempt 0: POST"
    )


async def test_tool_errors_and_long_outputs(tmp_path: Path) -> None:
    @tool
    def boom() -> str:
        """Fails."""
        raise RuntimeError("disk on fire")

    @tool
    def long() -> str:
        """A lot of text."""
        return "x" * 1000

    replies = [call_reply(("c1", "boom", "{}"), ("c2", "long", "{}")), text_reply("ok")]
    text = render(Trace.load(await record(tmp_path / "t.jsonl", replies, tools=[boom, long])))
    assert "result boom id=c1" in text and "error: RuntimeError: disk on fire" in text
    assert "output (first 200 of 1000 chars; --full shows all):" in text
    assert "      " + "x" * 200 + " ..." in text.splitlines()
    assert "x" * 201 not in text


async def test_a_cut_trace_says_so(tmp_path: Path) -> None:
    path = await two_turns(tmp_path / "run.jsonl")
    text = render(Trace.load(cut(path, 3, tmp_path / "cut.jsonl")))
    assert "NO END RECORD: the trace was cut short after line" in text
    assert "end: completed" not in text
    # A last line cut in the middle is dropped by the reader and mentioned too.
    half = tmp_path / "half.jsonl"
    half.write_bytes(path.read_bytes()[:-20])
    with pytest.warns(RuntimeWarning, match="cut short"):
        trace = Trace.load(half)
    text = render(trace)
    assert "warning: " in text and "is cut short" in text and "NO END RECORD" in text


async def test_colour_only_when_asked_and_trace_content_cannot_drive_the_terminal(
    tmp_path: Path,
) -> None:
    evil = "red\x1b[31m alert\x07 \x9b2J done"
    trace = Trace.load(await record(tmp_path / "t.jsonl", [text_reply(evil)]))
    plain = render(trace)
    assert "\x1b" not in plain and "\x07" not in plain and "\x9b" not in plain
    assert "red\\x1b[31m alert\\x07 \\x9b2J done" in plain
    coloured = render(trace, color=True)
    assert "\x1b[1m" in coloured and "\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain  # colour adds codes, nothing else


# -- raw -----------------------------------------------------------------------------------------


def split_raw(data: bytes) -> list[tuple[bytes, bytes]]:
    """(separator line, body) pairs of ``raw`` output, read by each separator's byte count."""
    parts, at = [], 0
    while at < len(data):
        mark = SEPARATOR.match(data, at)
        assert mark is not None, data[at : at + 80]
        size = int(mark.group(4))
        parts.append((mark.group(0), data[mark.end() : mark.end() + size]))
        at = mark.end() + size
    return parts


async def test_raw_gives_back_each_body_byte_for_byte(tmp_path: Path) -> None:
    trace = Trace.load(await two_turns(tmp_path / "run.jsonl", chunk_size=100))
    parts = split_raw(raw(trace))
    assert [body for _, body in parts] == [
        corpus("responses-function-call-1.sse"),
        corpus("responses-text-after-tool-1.sse"),
    ]
    assert parts[0][0] == (
        b"--- iteration 0 attempt 0: POST https://api.openai.com/v1/responses -> 200 "
        b"(7352 bytes) ---\n"
    )
    assert parts[1][0].startswith(b"--- iteration 1 attempt 0: ")


async def test_raw_keeps_bytes_split_inside_utf8_and_failed_attempts(tmp_path: Path) -> None:
    stream = corpus("responses-cjk-1.sse")
    trace = Trace.load(await record(tmp_path / "cjk.jsonl", [Reply(stream, chunk_size=7)]))
    assert any("b64" in c for e in trace.exchanges() for c in e.chunks)
    assert split_raw(raw(trace))[0][1] == stream
    parts = split_raw(raw(Trace.load(await retry_run(tmp_path / "retry.jsonl"))))
    assert [sep.split(b": ", 1)[0] for sep, _ in parts] == [
        b"--- iteration 0 attempt 0",
        b"--- iteration 0 attempt 1",
    ]
    assert b"-> 429" in parts[0][0]
    assert parts[1][1] == corpus("responses-text-minimal-1.sse")


# -- JSON ---------------------------------------------------------------------------------------


async def test_json_form_groups_iterations_attempts_decisions_results_and_edits(
    tmp_path: Path,
) -> None:
    trace = Trace.load(await edited_run(tmp_path / "edit.jsonl"))
    data = as_json(trace)
    assert orjson.loads(orjson.dumps(data)) == data  # plain JSON
    assert data["complete"] is True and data["warnings"] == [] and data["later_runs"] == []
    assert data["header"]["dialect"] == "responses" and data["header"]["model"] == "gpt-5.5"
    first, second = data["iterations"]
    assert [first["iteration"], second["iteration"]] == [0, 1]
    (attempt,) = first["attempts"]
    assert attempt["request"]["method"] == "POST"
    assert attempt["request"]["body"]["input"] == [
        {"role": "user", "content": "What is 1231 * 2331?"}
    ]
    assert attempt["request"]["headers"]["redacted"] == ["authorization"]
    assert "authorization" in attempt["request"]["headers"]["names"]
    assert attempt["response"]["status"] == 200
    assert attempt["stream"]["bytes"] == len(corpus("responses-function-call-1.sse"))
    assert attempt["stream"]["first_byte"] <= attempt["stream"]["last_byte"]
    assert attempt["error"] is None
    assert first["decision"]["calls"][0]["name"] == "multiply"
    assert first["results"][0]["output"] == "2869461" and first["edits"] == []
    assert second["edits"] == [{"op": "replace", "path": "/results/0/output", "value": "42"}]
    assert second["attempts"][0]["request"]["body"]["input"][2]["output"] == "42"
    assert second["decision"]["text"].endswith("**2,869,461**")
    assert data["end"]["stop_reason"] == "completed" and data["end"]["iterations"] == 2


async def test_json_form_of_a_retry_and_of_a_cut_trace(tmp_path: Path) -> None:
    data = as_json(Trace.load(await retry_run(tmp_path / "retry.jsonl")))
    failed, ok = data["iterations"][0]["attempts"]
    assert failed["response"]["status"] == 429 and failed["response"]["request_id"] == "req_429"
    assert failed["error"]["type"] == "APIStatusError" and failed["error"]["will_retry"] is True
    assert failed["error"]["delay"] == pytest.approx(0.01)
    assert ok["error"] is None and ok["response"]["status"] == 200
    path = await two_turns(tmp_path / "run.jsonl")
    cut_data = as_json(Trace.load(cut(path, 1, tmp_path / "cut.jsonl")))
    assert cut_data["complete"] is False and cut_data["end"] is None
