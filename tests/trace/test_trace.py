"""Traces: what the recorder writes, what the reader accepts, and that no secret gets in."""

from __future__ import annotations

import gzip
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from rawloop import APIStatusError, TraceFormatError, TraceVersionError
from rawloop.core.redact import placeholder
from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.trace.format import Trace, chunk_bytes, encode_chunk
from rawloop.trace.recorder import Redactor, TraceRecorder

from ..conftest import Reply, ScriptedAPI, corpus
from ..loop.test_loop import multiply

pytestmark = pytest.mark.anyio


def two_turn_api(chunk_size: int = 256) -> ScriptedAPI:
    return ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse"), chunk_size=chunk_size),
            Reply(corpus("responses-text-after-tool-1.sse"), chunk_size=chunk_size),
        ]
    )


async def record_two_turns(path: Path, **loop_kwargs: Any) -> Any:
    api = two_turn_api()
    loop = Loop("gpt-5.5", tools=[multiply], http_client=api.client(), **loop_kwargs)
    return await loop.run("What is 1231 * 2331?", trace=path)


async def test_a_recorded_run_reads_back_record_for_record(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    result = await record_two_turns(path, api_key="sk-test")
    trace = Trace.load(path)
    assert trace.header["format"] == "rawloop-trace" and trace.header["version"] == 1
    assert (trace.header["dialect"], trace.header["model"]) == ("responses", "gpt-5.5")
    assert trace.header["base_url"] == "https://api.openai.com/v1"
    kinds = [r.kind for r in trace.records]
    assert kinds[0] == "request" and kinds[-1] == "end"
    assert (
        kinds.count("request") == 2 and kinds.count("decision") == 2 and kinds.count("result") == 1
    )
    first, second = trace.exchanges()
    assert first.body == corpus("responses-function-call-1.sse")
    assert second.body == corpus("responses-text-after-tool-1.sse")
    assert [len(chunk_bytes(c)) for c in first.chunks][:2] == [256, 256]
    assert first.response is not None and first.response["status"] == 200
    assert second.request["body"]["input"][-1]["output"] == "2869461"
    assert trace.results()["call_sVidsfFJ6zlzRpelrPkTPlpd"]["output"] == "2869461"
    end = trace.end()
    assert end is not None and end["stop_reason"] == "completed" and end["iterations"] == 2
    assert end["usage"] == result.usage
    decision = trace.of_kind("decision")[1].data["turn"]
    assert decision["text"] == result.text


async def test_round_trip_keeps_chunk_bytes_identical(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    await record_two_turns(path, api_key="sk-test")
    trace = Trace.load(path)
    again = Trace.parse(trace.dump())
    assert [e.body for e in again.exchanges()] == [e.body for e in trace.exchanges()]
    assert [c for e in again.exchanges() for c in e.chunks] == [
        c for e in trace.exchanges() for c in e.chunks
    ]
    assert again.dump() == trace.dump()


def test_chunks_split_inside_utf8_are_stored_as_base64_and_restored() -> None:
    data = "naïve → ok".encode()
    pieces = [data[:3], data[3:9], data[9:]]  # cuts inside ï and →
    records = [encode_chunk(p) for p in pieces]
    assert "b64" in records[0] and "b64" in records[1]
    assert b"".join(chunk_bytes(r) for r in records) == data


async def test_the_api_key_reaches_no_trace_log_error_or_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "sk-test-" + secrets.token_urlsafe(24)
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "run.jsonl"
    await record_two_turns(path, api_key=key)
    # A failing call too: the error and its trace must not carry the key either.
    failing = ScriptedAPI(
        [Reply(b'{"error": {"message": "Incorrect API key provided"}}', status=401)]
    )
    loop = Loop("m", http_client=failing.client(), api_key=key, retries=RetryPolicy(0))
    with pytest.raises(APIStatusError) as info:
        await loop.run("x", trace=tmp_path / "fail.jsonl")
    from rawloop.cli.main import main

    for args in (["show", str(path)], ["show", str(path), "--raw"], ["show", str(path), "--json"]):
        assert main(args) == 0
    texts = [
        path.read_text(),
        (tmp_path / "fail.jsonl").read_text(),
        str(info.value),
        repr(info.value),
        repr(loop),
        caplog.text,
        capsys.readouterr().out,
    ]
    for text in texts:
        assert key not in text
        assert key[8:] not in text
    # The header was there, redacted to a stable placeholder.
    request = Trace.load(path).of_kind("request")
    placeholders = {r.data["headers"]["authorization"] for r in request}
    assert len(placeholders) == 1 and placeholders.pop().startswith("Bearer [REDACTED:")


async def test_a_record_that_still_holds_a_key_is_written_with_a_placeholder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = ScriptedAPI([Reply(corpus("responses-text-minimal-1.sse"))])
    loop = Loop("m", http_client=api.client(), api_key="sk-x")
    path = tmp_path / "run.jsonl"
    leaked = "sk-proj-" + "a" * 30
    recorder = TraceRecorder(path)
    await loop.run(f"my key is {leaked}", hooks=[recorder])
    assert leaked not in path.read_text() and leaked not in caplog.text
    assert "API key at /body/input/0/content" in caplog.text
    assert recorder.records_withheld == 1
    records = Trace.load(path).records
    # The request is there, readable, and says what was withheld (where, never what).
    assert [r.kind for r in records][:2] == ["request", "response"]
    assert records[0].data["withheld"] == ["/body/input/0/content"]
    assert records[0].data["body"]["input"][0]["content"] == f"my key is {placeholder(leaked)}"


async def test_user_redaction_rules_for_headers_json_paths_and_patterns(tmp_path: Path) -> None:
    api = ScriptedAPI([Reply(corpus("responses-text-minimal-1.sse"))])
    loop = Loop("m", http_client=api.client(), api_key="sk-x", headers={"x-tenant": "acme"})
    path = tmp_path / "run.jsonl"
    redactor = Redactor(
        headers=["x-tenant"], json_paths=["/input/*/content"], patterns=[r"pong", r"\d{3}-\d{4}"]
    )
    await loop.run("call me at 555-1234", hooks=[TraceRecorder(path, redact=redactor)])
    text = path.read_text()
    assert "acme" not in text and "555-1234" not in text and "pong" not in text
    request = Trace.load(path).of_kind("request")[0].data
    assert request["headers"]["x-tenant"].startswith("[REDACTED:")
    assert request["body"]["input"][0]["content"].startswith("[REDACTED:")
    chunks = Trace.load(path).of_kind("chunk")
    # Chunks whose text a rule changed say so; the others are the wire bytes.
    assert any(c.data.get("redacted") for c in chunks)
    assert all("pong" not in c.data["text"] for c in chunks)
    assert all(c.data.get("redacted") for c in chunks if "[REDACTED:" in c.data["text"])
    # The live request itself was not changed by redaction.
    assert api.bodies[0]["input"][0]["content"] == "call me at 555-1234"


async def test_gzip_traces_record_and_load(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl.gz"
    await record_two_turns(path, api_key="sk-test")
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    trace = Trace.load(path)
    assert trace.exchanges()[0].body == corpus("responses-function-call-1.sse")


def test_a_truncated_gzip_trace_loads_its_flushed_prefix(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    header = json.dumps({"kind": "header", "format": "rawloop-trace", "version": 1}) + "\n"
    with gzip.GzipFile(path, "wb") as handle:
        handle.write(header.encode())
        handle.flush()
        handle.write(b'{"kind": "end", "stop_reason": "completed"}\n')
    raw = path.read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(raw[:-12])  # no trailer, as after a kill
    with pytest.warns(RuntimeWarning, match="line 2 is cut short"):
        trace = Trace.load(tmp_path / "cut.jsonl.gz")
    assert trace.header["format"] == "rawloop-trace" and trace.records == []


# -- the reader on bad input -----------------------------------------------------

HEADER = b'{"kind":"header","format":"rawloop-trace","version":1,"dialect":"responses"}\n'


def test_a_bad_line_names_its_number() -> None:
    with pytest.raises(TraceFormatError, match="line 3") as info:
        Trace.parse(
            HEADER + b'{"kind":"end","stop_reason":"x"}\n{oops\n{"kind":"end","stop_reason":"y"}\n'
        )
    assert info.value.line == 3
    with pytest.raises(TraceFormatError, match=r"line 2: .*chunk record has neither"):
        Trace.parse(HEADER + b'{"kind":"chunk","iteration":0,"attempt":0}\n')
    with pytest.raises(TraceFormatError, match=r"line 2: .*'kind'"):
        Trace.parse(HEADER + b"[1, 2]\n")
    with pytest.raises(TraceFormatError, match="header"):
        Trace.parse(b'{"kind":"end","stop_reason":"x"}\n')
    with pytest.raises(TraceFormatError, match="not a rawloop trace"):
        Trace.parse(b'{"kind":"header","format":"other","version":1}\n')


def test_a_newer_version_is_refused_clearly() -> None:
    with pytest.raises(TraceVersionError, match=r"version 2.*reads up to version 1.*upgrade"):
        Trace.parse(b'{"kind":"header","format":"rawloop-trace","version":2}\n')


def test_unknown_record_kinds_are_kept() -> None:
    trace = Trace.parse(HEADER + b'{"kind":"hook_provenance","stage":"x"}\n')
    assert trace.records[0].kind == "hook_provenance" and trace.records[0].data["stage"] == "x"
    assert b"hook_provenance" in trace.dump()


def test_a_cut_last_line_loads_with_a_warning() -> None:
    with pytest.warns(RuntimeWarning, match="cut short"):
        trace = Trace.parse(HEADER + b'{"kind":"end","stop_reason":"ok"}\n{"kind":"chu')
    assert [r.kind for r in trace.records] == ["end"] and trace.warnings


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot read trace"):
        Trace.load(tmp_path / "nope.jsonl")


# -- a crash mid-run -----------------------------------------------------------------

CRASHER = textwrap.dedent(
    """
    import sys, anyio, httpx
    from rawloop.loop.loop import Loop

    STREAM = open(sys.argv[2], "rb").read()

    async def handler(request):
        async def body():
            for i in range(0, len(STREAM), 200):
                yield STREAM[i : i + 200]
                if i >= 1000:
                    print("streaming", flush=True)
                    await anyio.sleep(60)  # killed here
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    async def main():
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        await Loop("m", http_client=client, api_key="sk-x").run("hi", trace=sys.argv[1])

    anyio.run(main)
    """
)


def test_a_killed_recorder_leaves_a_readable_prefix(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASHER)
    path = tmp_path / "run.jsonl"
    stream = Path(__file__).parents[1] / "corpus" / "responses-large-text-1.sse"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(stream)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"streaming"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    trace = Trace.load(path)
    assert [r.kind for r in trace.records][:2] == ["request", "response"]
    (exchange,) = trace.exchanges()
    assert len(exchange.chunks) == 6
    assert exchange.body == stream.read_bytes()[:1200]
    assert trace.end() is None


def test_an_empty_file_says_so() -> None:
    with pytest.raises(TraceFormatError, match="the file is empty"):
        Trace.parse(b"")


# -- field types and sizes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"kind": "request", "iteration": "0", "attempt": 0, "body": {}}, "iteration is string"),
        ({"kind": "request", "iteration": 0, "attempt": -1, "body": {}}, "attempt is integer"),
        ({"kind": "request", "iteration": 0, "attempt": 0, "body": []}, "body is array"),
        (
            {"kind": "request", "iteration": 0, "attempt": 0, "body": {}, "headers": {"a": 1}},
            "headers is object",
        ),
        ({"kind": "response", "iteration": 0, "attempt": 0, "status": "200"}, "status is string"),
        ({"kind": "response", "iteration": 0, "attempt": 0, "status": True}, "status is boolean"),
        ({"kind": "chunk", "iteration": 0, "attempt": 0, "text": 5}, "text is integer"),
        ({"kind": "chunk", "iteration": 0, "attempt": 0, "b64": ["x"]}, "b64 is array"),
        ({"kind": "decision", "iteration": 0, "turn": "t"}, "turn is string"),
        ({"kind": "decision", "iteration": 0, "turn": {"text": 3}}, "turn.text is integer"),
        (
            {"kind": "decision", "iteration": 0, "turn": {"calls": [{"name": ["f"]}]}},
            "turn.calls[0].name is array",
        ),
        ({"kind": "decision", "iteration": 0, "turn": {"output": [1]}}, "turn.output[0]"),
        ({"kind": "result", "iteration": 0, "call_id": 7, "output": "x"}, "call_id is integer"),
        ({"kind": "edit", "iteration": 0, "patch": [{"op": "add"}]}, "patch is array"),
        ({"kind": "edit", "iteration": 0, "patch": {"op": "add"}}, "patch is object"),
        ({"kind": "handoff", "iteration": 0, "to_model": 4}, "to_model is integer"),
        ({"kind": "error", "where": "request", "message": {}}, "message is object"),
        ({"kind": "end", "stop_reason": None}, "stop_reason is null"),
        ({"kind": "end", "stop_reason": "x", "usage": 3}, "usage is integer"),
        ({"kind": "end", "stop_reason": "x", "withheld": "/a"}, "withheld is string"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_the_line(
    record: dict[str, Any], words: str
) -> None:
    good = b'{"kind":"end","stop_reason":"completed"}\n'
    with pytest.raises(TraceFormatError) as info:
        Trace.parse(HEADER + good + json.dumps(record).encode() + b"\n")
    assert info.value.line == 3
    assert words in str(info.value) and str(info.value).startswith("line 3: ")


def test_a_header_of_the_wrong_type_is_refused() -> None:
    bad = b'{"kind":"header","format":"rawloop-trace","version":1,"dialect":"soap"}\n'
    with pytest.raises(TraceFormatError, match=r"line 1: .*dialect"):
        Trace.parse(bad)
    with pytest.raises(TraceFormatError, match=r"line 1: .*metadata is array"):
        Trace.parse(HEADER[:-2] + b',"metadata":[]}\n')


def test_records_of_every_bundled_trace_pass_the_checks() -> None:
    for path in sorted((Path(__file__).parents[2] / "traces").glob("*.jsonl")):
        assert Trace.load(path).records, path


def test_a_gzip_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.jsonl.gz"
    # 100 MiB of newlines in about 100 KB: one gzip member repeated (a valid file).
    member = gzip.compress(b"\n" * (1 << 20), compresslevel=9)
    path.write_bytes(gzip.compress(HEADER) + member * 100)
    assert path.stat().st_size < 200_000
    with pytest.raises(TraceFormatError, match="expands to more than"):
        Trace.load(path)
    # A caller who knows the file may raise the cap; a small one refuses earlier.
    with pytest.raises(TraceFormatError, match="more than 1000 bytes"):
        Trace.load(path, max_expanded=1000)


def test_a_file_of_newlines_costs_no_object_per_line() -> None:
    import tracemalloc

    raw = HEADER + b"\n" * (8 << 20) + b'{"kind":"end","stop_reason":"ok"}\n'
    tracemalloc.start()
    try:
        trace = Trace.parse(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert trace.records[0].line == (8 << 20) + 2
    assert peak < 4 << 20, f"{peak} bytes to parse 8 MiB of newlines"


def test_where_a_trace_points_replay_must_be_a_url() -> None:
    bad = HEADER[:-2] + b',"base_url":" https://api.openai.com/v1"}\n'
    with pytest.raises(TraceFormatError, match=r"line 1: .*base_url"):
        Trace.parse(bad)
    with pytest.raises(TraceFormatError, match=r"line 1: .*base_url"):
        Trace.parse(HEADER[:-2] + b',"base_url":"http://[DONE]/v1"}\n')
    request = {"kind": "request", "iteration": 0, "attempt": 0, "body": {}, "url": "ftp://x"}
    with pytest.raises(TraceFormatError, match=r"line 2: .*url is string, not an http"):
        Trace.parse(HEADER + json.dumps(request).encode() + b"\n")


def test_iteration_is_checked_on_records_of_any_kind() -> None:
    for kind in ("end", "hook_provenance"):
        record = {"kind": kind, "stop_reason": "x", "iteration": ""}
        with pytest.raises(TraceFormatError, match=r"line 2: .*iteration is string"):
            Trace.parse(HEADER + json.dumps(record).encode() + b"\n")
