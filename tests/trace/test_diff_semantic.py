"""Semantic diff by default: a proxied capture of a run equals it; --wire, --all, edit patches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from rawloop.capture.proxy import RecordingProxy
from rawloop.cli.main import main
from rawloop.replay.replayer import replay
from rawloop.replay.server import ReplayServer
from rawloop.trace.diff import diff
from rawloop.trace.format import Trace

pytestmark = pytest.mark.anyio

TRACES = Path(__file__).parents[2] / "traces"
KEY = "sk-test-" + "diffsemantic0123456789abcd"  # no key-shaped literal in the source


async def capture(original: Path, out: Path) -> Path:
    """Replay ``original`` through rawloop's loop, via a RecordingProxy, to a ReplayServer of it."""
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            server = ReplayServer([original])
            upstream = f"http://127.0.0.1:{await group.start(server.serve)}"
            proxy = RecordingProxy(upstream, out)
            await group.start(proxy.serve)
            headers = {"authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(base_url=proxy.url, headers=headers) as client:
                report = await replay(original, http_client=client)
            group.cancel_scope.cancel()
    assert report.identical, report
    (path,) = out.glob("run-*.jsonl")
    return path


@pytest.mark.parametrize("name", ["tool-roundtrip", "chat-run", "parallel-tools"])
async def test_a_capture_through_rawloop_record_diffs_equal_to_the_original(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    original = TRACES / f"{name}.jsonl"
    captured = await capture(original, tmp_path)
    result = diff(Trace.load(original), Trace.load(captured))
    assert result.equal, str(result)
    assert main(["diff", str(original), str(captured)]) == 0
    assert "traces are equal" in capsys.readouterr().out
    # on the wire they are two different runs: another host, other transport headers
    wire = diff(Trace.load(original), Trace.load(captured), wire=True, every=True)
    paths = {d.path for d in wire.differences}
    assert {"header.base_url", "request.url", "request.headers.host"} <= paths
    assert any(p.startswith("header.metadata") for p in paths)
    assert main(["diff", str(original), str(captured), "--wire"]) == 1
    assert KEY not in capsys.readouterr().out + captured.read_text()


def rewritten(name: str, change: Any) -> Trace:
    records = [orjson.loads(line) for line in (TRACES / name).read_bytes().splitlines()]
    for record in records:
        change(record)
    return Trace.parse(b"\n".join(map(orjson.dumps, records)), f"changed-{name}")


def test_the_host_of_a_url_is_ignored_but_its_path_is_not() -> None:
    original = Trace.load(TRACES / "tool-roundtrip.jsonl")

    def other_host(record: dict[str, Any]) -> None:
        if record["kind"] == "request":
            record["url"] = record["url"].replace("https://api.openai.com", "http://10.0.0.1:9")
            record["headers"]["host"] = "10.0.0.1:9"

    assert diff(original, rewritten("tool-roundtrip.jsonl", other_host)).equal

    def other_path(record: dict[str, Any]) -> None:
        if record["kind"] == "request":
            record["url"] = record["url"].replace("/v1/", "/v2/")

    result = diff(original, rewritten("tool-roundtrip.jsonl", other_path))
    assert result.first is not None and result.first.path == "request.url"
    assert (result.first.a, result.first.b) == ("/v1/responses", "/v2/responses")


def test_all_lists_every_difference_and_the_first_is_still_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    original = Trace.load(TRACES / "tool-roundtrip.jsonl")

    def louder(record: dict[str, Any]) -> None:
        if record["kind"] == "request":
            record["body"]["store"] = True
        if record["kind"] == "result":
            record["output"] = "42"

    changed = rewritten("tool-roundtrip.jsonl", louder)
    first_only = diff(original, changed)
    every = diff(original, changed, every=True)
    assert [d.path for d in first_only.differences] == ["request.body.store"]
    assert [(d.iteration, d.path) for d in every.differences] == [
        (0, "request.body.store"),
        (0, "result.output"),
        (1, "request.body.store"),
    ]
    assert every.first == first_only.first
    text = str(every)
    assert "difference 1 of 3: iteration 0 attempt 0" in text
    assert "difference 3 of 3: iteration 1 attempt 0" in text


def test_an_edit_shows_its_patch(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(TRACES / "tool-roundtrip.jsonl"), str(TRACES / "breakpoint-edit.jsonl")
    assert main(["diff", a, b]) == 1
    out = capsys.readouterr().out
    assert "(A has a request record where B has an edit)" in out
    assert (
        '  B\'s edit (1 op):\n    replace /results/0/output = "2869461 (checked by a human)"'
        in (out)
    )
    assert main(["diff", a, b, "--all"]) == 1
    out = capsys.readouterr().out
    assert out.count("difference ") > 3 and "B's edit (1 op)" in out


def test_a_shorter_trace_is_named_with_the_right_plural() -> None:
    original = Trace.load(TRACES / "tool-roundtrip.jsonl")
    header_only = Trace.parse((TRACES / "tool-roundtrip.jsonl").read_bytes().split(b"\n")[0])
    result = diff(original, header_only)
    assert result.first is not None and "B ends after 1 record;" in result.first.note
