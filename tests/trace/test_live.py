"""The live timeline: as a loop hook, and behind ``rawloop record --tail`` with real sockets."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from rawloop.capture.proxy import RecordingProxy
from rawloop.cli.main import build_parser
from rawloop.replay.replayer import replay
from rawloop.replay.server import ReplayServer
from rawloop.trace.format import Trace
from rawloop.trace.live import LiveTimeline

pytestmark = pytest.mark.anyio

TRACES = Path(__file__).parents[2] / "traces"
ANSWER = "1231 × 2331 = **2,869,461**"  # noqa: RUF001 - the model's text


class Writes(io.StringIO):
    """A text stream that keeps each write apart, to see text arrive piece by piece."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_as_a_hook_it_prints_the_run_as_it_goes() -> None:
    out = Writes()
    report = await replay(TRACES / "tool-roundtrip.jsonl", hooks=[LiveTimeline(out)])
    assert report.identical
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "iteration 0 attempt 0: POST https://api.openai.com/v1/responses (model gpt-5.5)"
    )
    assert lines[1].startswith("response 200 after ")
    assert "calls 1 tool:" in lines
    assert '  multiply({"a":1231,"b":2331}) id=call_sVidsfFJ6zlzRpelrPkTPlpd' in lines
    assert any(
        line.startswith("result multiply in ") and line.endswith(": 2869461") for line in lines
    )
    assert f"text: {ANSWER}" in lines
    assert lines[-1].startswith("end: completed, 2 iterations, ") and lines[-1].endswith(
        ", 193 tokens"
    )
    # the answer came in deltas, written as they were parsed, before the turn's line
    pieces = [w for w in out.writes if w and w in ANSWER]
    assert len(pieces) > 1 and "".join(pieces) == ANSWER


async def capture_with_tail(original: Path, out: Path, watch: Any) -> Path:
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            server = ReplayServer([original])
            upstream = f"http://127.0.0.1:{await group.start(server.serve)}"
            proxy = RecordingProxy(upstream, out)
            proxy.table.watch = watch
            await group.start(proxy.serve)
            async with httpx.AsyncClient(base_url=proxy.url) as client:
                report = await replay(original, http_client=client)
            group.cancel_scope.cancel()
    assert report.identical
    (path,) = out.glob("run-*.jsonl")
    return path


async def test_record_tail_prints_each_run_live_with_its_file_name(tmp_path: Path) -> None:
    out = Writes()
    path = await capture_with_tail(
        TRACES / "tool-roundtrip.jsonl", tmp_path, LiveTimeline(out).watch
    )
    prefix = f"[{path.name}] "
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith(prefix) for line in lines)
    assert f"{prefix}text: {ANSWER}" in lines
    assert f"{prefix}calls 1 tool:" in lines
    assert any(line.startswith(f"{prefix}result multiply in ") for line in lines)
    assert lines[-1].startswith(f"{prefix}end: completed, 2 iterations")


async def test_a_failing_watcher_does_not_stop_the_recording(tmp_path: Path) -> None:
    calls: list[str] = []

    def broken(label: str, point: str, info: Any) -> None:
        calls.append(point)
        raise BrokenPipeError("the terminal went away")

    path = await capture_with_tail(TRACES / "tool-roundtrip.jsonl", tmp_path, broken)
    assert calls == ["on_request"]  # dropped after the first failure
    assert Trace.load(path).end() is not None


def test_streamed_text_cannot_drive_the_terminal() -> None:
    class Info:
        iteration, attempt, method, model = 0, 0, "POST", "m"
        url = "http://x/v1/chat/completions"

    out = Writes()
    timeline = LiveTimeline(out)
    timeline.watch("run\x1b[2J.jsonl", "on_request", Info())
    chunk = 'data: {"choices":[{"index":0,"delta":{"content":"hi\\u001b[31m red\\nnext"}}]}\n\n'

    class Chunk:
        data = chunk.encode()

    timeline.watch("run\x1b[2J.jsonl", "on_chunk", Chunk())
    text = out.getvalue()
    assert "\x1b" not in text and "[run\\x1b[2J.jsonl] text: hi\\x1b[31m red\nnext" in text


def test_record_has_a_tail_flag() -> None:
    args = build_parser().parse_args(
        ["record", "--upstream", "http://127.0.0.1:9", "--out", "x", "--tail"]
    )
    assert args.tail is True
