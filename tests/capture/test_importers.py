"""Importing VCR cassettes and HAR files: the traces replay; bad files are explained."""

from __future__ import annotations

import base64
import gzip
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rawloop import Trace
from rawloop.capture.importers import (
    CassetteError,
    CassetteImportWarning,
    command,
    import_file,
    read_interactions,
    write,
)
from rawloop.core.errors import SecretInTraceError
from rawloop.replay.replayer import replay

from ..conftest import corpus

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parents[1] / "fixtures"
RESPONSES_VCR = FIXTURES / "responses-tool-loop.yaml"
CHAT_HAR = FIXTURES / "chat-tool-loop.har"
LLM_VCR = FIXTURES / "llm-responses-tool.yaml"
URL = "https://api.openai.com/v1/responses"


def interaction(
    body: Any,
    stream: bytes | str,
    *,
    url: str = URL,
    status: int = 200,
    content_type: str = "text/event-stream",
    method: str = "POST",
) -> dict[str, Any]:
    """A VCR.py interaction, as vcrpy writes one."""
    return {
        "request": {
            "body": body if isinstance(body, (str, type(None))) else json.dumps(body),
            "headers": {"authorization": ["Bearer sk-fake-key"]},
            "method": method,
            "uri": url,
        },
        "response": {
            "body": {"string": stream},
            "headers": {"content-type": [content_type]},
            "status": {"code": status, "message": "whatever"},
        },
    }


def cassette(tmp_path: Path, *interactions: dict[str, Any], name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"interactions": list(interactions), "version": 1}))
    return path


def first_request() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(corpus("responses-text-minimal-1.request.json"))
    return body


# -- the fixtures replay -------------------------------------------------------------------------


async def test_a_vcr_cassette_becomes_a_trace_that_replays_identically(tmp_path: Path) -> None:
    trace = import_file(RESPONSES_VCR)
    assert trace.warnings == []
    assert trace.dialect == "responses"
    assert trace.header["model"] == "gpt-5.5"
    assert trace.header["base_url"] == "https://api.openai.com/v1"
    assert trace.header["metadata"] == {
        "imported_from": str(RESPONSES_VCR),
        "source_format": "vcr",
        "chunk_boundaries": "lost",
        "interactions": [0, 1],
    }
    assert [r.kind for r in trace.records] == [
        *("request", "response", "chunk", "decision", "result"),
        *("request", "response", "chunk", "decision", "end"),
    ]
    exchanges = trace.exchanges()
    assert [len(e.chunks) for e in exchanges] == [1, 1]  # one chunk: boundaries were lost
    assert exchanges[0].body == corpus("responses-function-call-1.sse")
    assert exchanges[1].body == corpus("responses-text-after-tool-1.sse")
    assert exchanges[0].response is not None
    assert exchanges[0].response["request_id"] == "req_responses-function-call-1"
    headers = exchanges[0].request["headers"]
    assert headers["authorization"].startswith("Bearer [REDACTED:")
    assert exchanges[0].response["headers"]["set-cookie"].startswith("[REDACTED:")
    assert b"sk-" not in trace.dump()
    assert trace.results()["call_sVidsfFJ6zlzRpelrPkTPlpd"]["output"] == "2869461"
    end = trace.end()
    assert end is not None and end["stop_reason"] == "completed" and end["iterations"] == 2
    assert end["usage"] == {
        "requests": 2,
        "input_tokens": 152,
        "output_tokens": 41,
        "total_tokens": 193,
    }

    for chunking in ("recorded", "hostile"):
        report = await replay(trace, chunking=chunking, seed=7)
        assert report.identical, str(report)
    saved = write(trace, tmp_path / "imported.jsonl.gz")
    report = await replay(saved)
    assert report.identical, str(report)
    assert Trace.load(saved).dump() == trace.dump()


async def test_a_har_file_becomes_a_trace_that_replays_identically() -> None:
    with pytest.warns(CassetteImportWarning, match=r"#1 GET https://api.openai.com/v1/models"):
        trace = import_file(CHAT_HAR)
    assert trace.dialect == "chat" and trace.header["model"] == "gpt-4o-mini"
    assert trace.header["metadata"]["source_format"] == "har"
    assert trace.header["metadata"]["interactions"] == [0, 2]
    assert len(trace.warnings) == 1 and "not a POST" in trace.warnings[0]
    exchanges = trace.exchanges()
    assert exchanges[1].body == corpus("chat-text-after-tool-1.sse")  # was base64 in the HAR
    assert exchanges[0].response is not None and exchanges[0].response["t"] == 0.3105
    assert exchanges[0].chunks[0]["t"] == 0.8125
    assert ":authority" not in exchanges[0].request["headers"]
    assert [r["output"] for r in trace.results().values()] == ["2869461"]
    report = await replay(trace)
    assert report.identical, str(report)
    assert report.result is not None
    assert report.result.text.startswith("The result of")


async def test_a_recording_rawloop_would_not_send_is_flagged_and_diverges_there() -> None:
    """simonw/llm sends the function_call back without its id: the importer says so."""
    with pytest.warns(CassetteImportWarning, match="replay diverges at iteration 1"):
        trace = import_file(LLM_VCR)
    assert "recorded != rawloop at input[1].arguments" in trace.warnings[0]
    assert trace.header["metadata"]["import_warnings"] == trace.warnings
    report = await replay(trace)
    assert report.verdict == "diverged" and report.divergence is not None
    assert (report.divergence.iteration, report.divergence.path) == (1, "input[1].arguments")


# -- shapes of recordings ------------------------------------------------------------------------


async def test_a_retried_429_is_a_failed_attempt_of_the_same_iteration(tmp_path: Path) -> None:
    body = first_request()
    stream = corpus("responses-text-minimal-1.sse").decode()
    path = cassette(
        tmp_path,
        interaction(body, '{"error": {"message": "slow down"}}', status=429, content_type="x/y"),
        interaction(body, stream),
    )
    trace = import_file(path)
    exchanges = trace.exchanges()
    assert [(e.iteration, e.attempt) for e in exchanges] == [(0, 0), (0, 1)]
    assert exchanges[0].error is not None and exchanges[0].error["will_retry"] is True
    assert "HTTP 429" in exchanges[0].error["message"]
    assert exchanges[0].chunks == []
    report = await replay(trace)
    assert report.identical, str(report)
    assert report.result is not None and report.result.text == "pong"


async def test_pydantic_ai_parsed_bodies_and_gzip_bodies_are_read(tmp_path: Path) -> None:
    item = interaction(None, gzip.compress(corpus("responses-text-minimal-1.sse")))
    del item["request"]["body"]
    item["request"]["parsed_body"] = first_request()
    item["response"]["headers"]["content-encoding"] = ["gzip"]
    trace = import_file(cassette(tmp_path, item))
    assert trace.exchanges()[0].body == corpus("responses-text-minimal-1.sse")
    report = await replay(trace)
    assert report.identical, str(report)


def test_a_cut_stream_ends_the_run_with_its_error(tmp_path: Path) -> None:
    stream = corpus("responses-text-minimal-1.sse")
    path = cassette(
        tmp_path,
        interaction(first_request(), stream[: len(stream) // 2].decode(errors="ignore")),
        interaction(first_request(), stream.decode()),
    )
    with pytest.warns(CassetteImportWarning, match="does not parse"):
        trace = import_file(path)
    assert [r.kind for r in trace.records] == ["request", "response", "chunk", "error", "end"]
    end = trace.end()
    assert end is not None and end["stop_reason"] == "error"
    assert end["error"].startswith("IncompleteStream")


def test_other_calls_are_skipped_and_listed(tmp_path: Path) -> None:
    stream = corpus("responses-text-minimal-1.sse").decode()
    path = cassette(
        tmp_path,
        interaction(None, "[]", method="GET", url="https://api.openai.com/v1/models"),
        interaction({"input": "hi", "model": "m"}, "{}", content_type="application/json"),
        interaction({"input": "x"}, "{}", url="https://api.openai.com/v1/embeddings"),
        interaction("not json", stream),
        interaction(first_request(), stream),
        interaction({"messages": []}, stream, url="https://api.openai.com/v1/chat/completions"),
        interaction(first_request(), ""),
    )
    with pytest.warns(CassetteImportWarning) as caught:
        trace = import_file(path)
    message = str(caught[0].message)
    assert "skipped 6 interactions" in message
    for expected in (
        "#0 GET https://api.openai.com/v1/models (not a POST)",
        "#1 POST https://api.openai.com/v1/responses (not streamed: the response is "
        "application/json)",
        "#2 POST https://api.openai.com/v1/embeddings (not /responses or /chat/completions)",
        "#3 POST https://api.openai.com/v1/responses (the request body is not JSON)",
        "#5 POST https://api.openai.com/v1/chat/completions (a chat call in a responses recording)",
    ):
        assert expected in message
    assert trace.header["metadata"]["interactions"] == [4]


def test_a_last_turn_calling_tools_is_flagged(tmp_path: Path) -> None:
    body = json.loads(corpus("responses-function-call-1.request.json"))
    path = cassette(tmp_path, interaction(body, corpus("responses-function-call-1.sse").decode()))
    with pytest.warns(CassetteImportWarning, match="called multiply and the recording ends"):
        trace = import_file(path)
    end = trace.end()
    assert end is not None and end["stop_reason"] == "max_iterations"
    assert trace.results() == {}


# -- refusing -------------------------------------------------------------------------------------


def test_a_key_left_in_a_body_refuses_the_import_without_showing_it(tmp_path: Path) -> None:
    body = first_request()
    secret = "sk-proj-" + "A1b2C3d4" * 4
    body["input"][0]["content"] = f"my key is {secret}"
    path = cassette(tmp_path, interaction(body, corpus("responses-text-minimal-1.sse").decode()))
    with pytest.raises(SecretInTraceError) as caught:
        import_file(path)
    message = str(caught.value)
    assert "#0 POST https://api.openai.com/v1/responses (request record)" in message
    assert secret not in message and "sk-proj" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file is empty"),
        (b"\xff\xfe\x00garbage", "not a text file (byte 0 is not UTF-8)"),
        (b"interactions: [\n  - {request: ", "not valid YAML or JSON (line 2"),
        (b'{"log": {"entries": [}', "not valid JSON (line 1, column 22"),
        (b"just a sentence", "found a string"),
        (b'{"foo": 1, "bar": 2}', "found top-level keys ['bar', 'foo']"),
        (b"interactions: 3", "'interactions' is the number 3, not a list"),
        (b"interactions: []", "the VCR cassette holds no interactions"),
        (b'{"log": {"entries": []}}', "the HAR file holds no interactions"),
        (b'{"log": {"entries": {}}}', "'log.entries' is not a list"),
        (
            b"interactions:\n- request: {method: POST, uri: x}\n",
            "interactions[0].response is missing",
        ),
        (
            b"interactions:\n- request: {method: POST}\n  response: {}\n",
            "interactions[0].request.uri is missing, expected a string",
        ),
        (
            b"interactions:\n- request: {method: POST, uri: x}\n  response: {status: {code: OK}}\n",
            "interactions[0].response.status.code is a string, expected an integer",
        ),
        (
            b"interactions:\n- request: {method: POST, uri: x, headers: [a]}\n"
            b"  response: {status: {code: 200}}\n",
            "interactions[0].request.headers is a list, expected a mapping",
        ),
        (
            b'{"log": {"entries": [{"request": {"method": "POST", "url": "u"}, '
            b'"response": {"status": 200, "content": {"text": "!!", "encoding": "base64"}}}]}}',
            "log.entries[0].response.content.text says base64 but is not valid base64",
        ),
        (
            b'{"log": {"entries": [{"request": {"method": "GET", "url": "u"}, '
            b'"response": {"status": 200}}]}}',
            "no OpenAI streaming call to import (a POST to .../responses or "
            ".../chat/completions answered with text/event-stream); skipped: #0 GET u",
        ),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(CassetteError) as caught:
        import_file(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_and_a_missing_yaml_library_are_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CassetteError, match=r"cannot read .*nope\.yaml"):
        read_interactions(tmp_path / "nope.yaml")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(CassetteError, match=r"needs PyYAML: pip install 'rawloop\[import\]'"):
        read_interactions(RESPONSES_VCR)
    kind, items = read_interactions(CHAT_HAR)  # JSON needs no YAML library
    assert kind == "har" and len(items) == 3
    assert (
        base64.b64decode(
            json.loads(CHAT_HAR.read_text())["log"]["entries"][2]["response"]["content"]["text"]
        )
        == items[2].response_body
    )


def test_the_command_writes_prints_and_checks(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "chat.jsonl"
    assert command(CHAT_HAR, target, check=True, out=out, err=err) == 0
    assert out.getvalue().splitlines() == [
        f"wrote {target}: 2 chat calls from {CHAT_HAR} (interactions 0, 2), one chunk each",
        "replay of the imported trace: identical: 2 iterations replayed, every request "
        "matched the recording",
    ]
    assert err.getvalue().startswith("rawloop: warning: skipped 1 interaction that")
    assert Trace.load(target).dialect == "chat"

    out, err = io.StringIO(), io.StringIO()
    assert command(LLM_VCR, check=True, out=out, err=err) == 1
    printed = Trace.parse(out.getvalue().encode())
    assert printed.header["metadata"]["imported_from"] == str(LLM_VCR)
    assert "replay of the imported trace: diverged: iteration 1" in err.getvalue()
