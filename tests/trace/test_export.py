"""``rawloop export``: HAR 1.2 that ``rawloop import`` reads back equal, OTLP spans like the hook's."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rawloop.capture.importers import import_file
from rawloop.cli.main import main
from rawloop.replay.replayer import replay
from rawloop.serve.otel import OTelHook
from rawloop.trace.diff import diff
from rawloop.trace.export import to_har, to_otlp
from rawloop.trace.format import Trace

TRACES = Path(__file__).parents[2] / "traces"
KEY = "sk-" + "live" + "Q1w2E3r4T5y6U7i8O9p0"  # built at run time: no key-shaped literal


@pytest.mark.parametrize("name", ["tool-roundtrip", "chat-run", "parallel-tools"])
def test_har_round_trips_through_rawloop_import(tmp_path: Path, name: str) -> None:
    original = TRACES / f"{name}.jsonl"
    har = tmp_path / "run.har"
    assert main(["export", str(original), "--har", str(har)]) == 0
    back = import_file(har)
    result = diff(Trace.load(original), back)
    assert result.equal, str(result)
    assert any("came in different chunks" in note for note in result.notes)  # HAR keeps one body


def test_har_entries_carry_the_sse_body_headers_and_timings() -> None:
    trace = Trace.load(TRACES / "retry-after-cut.jsonl")
    log = to_har(trace)["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "rawloop"
    exchanges = trace.exchanges()
    assert len(log["entries"]) == len(exchanges) == 3
    for entry, exchange in zip(log["entries"], exchanges, strict=True):
        assert entry["_rawloop"] == {"iteration": exchange.iteration, "attempt": exchange.attempt}
        assert entry["request"]["url"] == exchange.request["url"]
        assert orjson.loads(entry["request"]["postData"]["text"]) == exchange.request["body"]
        assert entry["response"]["content"]["text"].encode() == exchange.body
        assert entry["response"]["content"]["size"] == len(exchange.body)
        timings = entry["timings"]
        assert set(timings) == {"send", "wait", "receive"}
        assert timings["wait"] >= 0 and timings["receive"] >= 0
        assert entry["time"] == pytest.approx(timings["wait"] + timings["receive"], abs=0.01)
        headers = {h["name"]: h["value"] for h in entry["request"]["headers"]}
        assert headers["authorization"].startswith("Bearer [REDACTED:")
    # the attempt that broke says so, and the retry starts after it and its wait
    assert "HTTP 429" in log["entries"][0]["comment"]
    assert "ReadError" in log["entries"][1]["comment"]
    assert "comment" not in log["entries"][2]
    starts = [entry["startedDateTime"] for entry in log["entries"]]
    assert starts == sorted(starts) and len(set(starts)) == 3


def rewritten(name: str, change: Any) -> Trace:
    records = [orjson.loads(line) for line in (TRACES / name).read_bytes().splitlines()]
    for record in records:
        change(record)
    return Trace.parse(b"\n".join(map(orjson.dumps, records)), name)


def test_har_keeps_binary_chunks_as_base64_and_lets_no_secret_through() -> None:
    def hostile(record: dict[str, Any]) -> None:
        if record["kind"] == "chunk" and record["iteration"] == 1:
            record.pop("text", None)
            record["b64"] = base64.b64encode(b"\xff\xfe not utf-8").decode()
        if record["kind"] == "request":
            record["headers"]["x-api-key"] = KEY  # a hand-made trace that was never redacted
            record["body"]["metadata"] = {"note": f"key {KEY}"}

    har = orjson.dumps(to_har(rewritten("tool-roundtrip.jsonl", hostile))).decode()
    assert KEY not in har and KEY[3:] not in har
    entry = orjson.loads(har)["log"]["entries"][1]
    assert entry["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(entry["response"]["content"]["text"]).startswith(b"\xff\xfe")


def hook_spans(trace: Trace) -> list[tuple[str, set[str]]]:
    """The spans the real OTelHook makes for a replay of ``trace``: (name, attribute keys)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def run() -> None:
        await replay(trace, hooks=[OTelHook(tracer_provider=provider)])

    anyio.run(run)
    return sorted((s.name, set(s.attributes or {})) for s in exporter.get_finished_spans())


@pytest.mark.parametrize("name", ["tool-roundtrip", "chat-run", "parallel-tools"])
def test_otlp_spans_are_the_hooks_spans(tmp_path: Path, name: str) -> None:
    trace = Trace.load(TRACES / f"{name}.jsonl")
    out = tmp_path / "spans.json"
    assert main(["export", str(TRACES / f"{name}.jsonl"), "--otlp", str(out)]) == 0
    (resource,) = orjson.loads(out.read_bytes())["resourceSpans"]
    (scope,) = resource["scopeSpans"]
    spans = scope["spans"]
    exported = sorted((s["name"], {a["key"] for a in s["attributes"]}) for s in spans)
    expected = hook_spans(trace)
    assert [n for n, _ in exported] == [n for n, _ in expected]
    for (name_x, keys_x), (_, keys_h) in zip(exported, expected, strict=True):
        # service tier lives in the raw response object, which a trace's turn does not keep
        assert keys_h - {"openai.response.service_tier"} <= keys_x, name_x
    # one trace, one root; every other span hangs under it; times in order
    (root,) = [s for s in spans if "parentSpanId" not in s]
    assert root["name"] == "invoke_agent rawloop"
    assert all(s.get("parentSpanId") in (None, root["spanId"]) for s in spans)
    assert {s["traceId"] for s in spans} == {root["traceId"]} and len(root["traceId"]) == 32
    assert all(int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"]) for s in spans)
    assert to_otlp(trace) == to_otlp(trace)  # the same trace gives the same file


def test_otlp_content_only_when_asked_and_failed_attempts_are_events() -> None:
    trace = Trace.load(TRACES / "retry-after-cut.jsonl")
    plain = to_otlp(trace)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert not any("messages" in a["key"] for s in plain for a in s["attributes"])
    (chat,) = [s for s in plain if s["name"].startswith("chat ")]
    names = [e["name"] for e in chat["events"]]
    assert names == ["exception", "exception"]
    assert chat["status"] == {"code": 1}  # the third attempt succeeded
    rich = to_otlp(Trace.load(TRACES / "tool-roundtrip.jsonl"), content=True)
    keys = {
        a["key"]
        for s in rich["resourceSpans"][0]["scopeSpans"][0]["spans"]
        for a in s["attributes"]
    }
    assert {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.call.result"} <= keys


def test_export_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(TRACES / "tool-roundtrip.jsonl")]) == 2
    assert "--har OUT.har and/or --otlp OUT.json" in capsys.readouterr().err
