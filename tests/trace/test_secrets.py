"""No secret escapes: keys of every shape, planted everywhere, driven through the real paths.

Keys are built at run time (no key-shaped literal in the source). Each test
plants one where a customer's run could carry it (user input after an
escape, tool arguments and results, streamed text cut at every offset,
headers, error bodies, in-stream errors), runs a real ``Loop`` with a
``TraceRecorder`` against a scripted API (or the recording proxy on
127.0.0.1), then reads every place the key could reach: the trace file,
``rawloop show`` (timeline, ``--json``, ``--raw``), logs, exception text.
"""

from __future__ import annotations

import itertools
import json
import random
import string
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from rawloop.capture.proxy import RecordingProxy
from rawloop.cli.main import main
from rawloop.core.errors import APIStatusError, StreamErrorEvent
from rawloop.core.redact import placeholder
from rawloop.loop.hooks import EditInfo
from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import tool
from rawloop.serve.app import app
from rawloop.trace.format import Trace
from rawloop.trace.recorder import Redactor, TraceRecorder

from ..conftest import Reply, ScriptedAPI
from ..loop.test_loop import call_reply, text_reply

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(max_retries=0, initial_delay=0.0)
_rng = random.Random(12)


def _chars(count: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(count))


#: shape -> (what is planted, the secret part that must never show)
_BEARER_TOKEN = (
    "eyJ" + _chars(20) + "." + _chars(24, string.ascii_letters + "_-") + "." + _chars(12)
)
KEYS: dict[str, tuple[str, str]] = {
    name: (planted, secret)
    for name, planted, secret in [
        ("sk", "sk-" + _chars(48), None),
        ("sk-proj", "sk-" + "proj-" + _chars(40, string.ascii_letters + "_-0123"), None),
        ("sk-ant", "sk-" + "ant-" + "api03-" + _chars(60, string.ascii_letters + "-_9"), None),
        ("sk-svcacct", "sk-" + "svcacct-" + _chars(44), None),
        ("bearer", "Bearer " + _BEARER_TOKEN, _BEARER_TOKEN),
    ]
    for secret in [secret or planted]
}
#: Where a key sits in a user message: after an escape, at the start, at the end...
PLACES = {
    "after-newline": "my key:\n{}",
    "after-tab": "key\t{}\tok",
    "after-quote": 'the key "{}" here',
    "after-crlf": "line\r\n{} done",
    "after-accent": "clé é{} fin",
    "at-start": "{} is my key",
    "at-end": "my key is {}",
    "alone": "{}",
    "after-control": "\x01{}\x7f",
}


def fragments(secret: str) -> list[str]:
    """The secret and its long pieces: no 16 characters of it may show anywhere."""
    return [secret] + [secret[i : i + 16] for i in range(0, len(secret) - 15, 4)]


def assert_nowhere(secret: str, texts: Iterable[str | bytes]) -> None:
    for text in texts:
        data = text.decode(errors="replace") if isinstance(text, bytes) else text
        for piece in fragments(secret):
            assert piece not in data, f"{piece!r} leaked in {data[:300]!r}"


def show_everything(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """``rawloop show`` of ``path`` as a timeline, ``--json`` and ``--raw``: what each printed."""
    out = []
    for extra in ([], ["--json"], ["--raw"]):
        assert main(["show", str(path), *extra]) == 0
        captured = capsys.readouterr()
        out += [captured.out, captured.err]
    return out


def split_api(body: bytes, cuts: Iterable[int], status: int = 200) -> httpx.AsyncClient:
    """A fake model API answering every request with ``body`` cut at ``cuts``."""
    edges = [0, *sorted(set(cuts)), len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(edges) if b > a]

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        kind = "text/event-stream" if status < 300 else "application/json"
        return httpx.Response(status, headers={"content-type": kind}, content=stream())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@tool
def echo(note: str) -> str:
    """Give the note back."""
    return f"you said: {note}"


# -- user input, through the recorder and show ----------------------------------------------


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("shape", sorted(KEYS))
async def test_a_key_in_user_input_reaches_no_file_output_or_log(
    shape: str,
    place: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    planted, secret = KEYS[shape]
    message = PLACES[place].format(planted)
    # The model echoes the message: the key is in the request, the stream and the turn.
    api = ScriptedAPI([text_reply(message)])
    path = tmp_path / "run.jsonl"
    recorder = TraceRecorder(path)
    loop = Loop("m", http_client=api.client(), api_key="sk-test", retries=NO_RETRY)
    result = await loop.run(message, hooks=[recorder])
    assert secret in result.text  # the run itself is untouched: only what is written changes
    trace = Trace.load(path)
    # Nothing was dropped: the request and the end are there and say what was withheld.
    kinds = [r.kind for r in trace.records]
    assert kinds[0] == "request" and kinds[-1] == "end" and "decision" in kinds
    request = trace.of_kind("request")[0].data
    assert request["withheld"] == ["/body/input/0/content"]
    assert "[REDACTED:" in request["body"]["input"][0]["content"]
    assert recorder.records_withheld >= 3  # the request, a chunk, the decision
    assert "API key at /body/input/0/content" in caplog.text
    assert_nowhere(secret, [path.read_text(), caplog.text, *show_everything(path, capsys)])


async def test_keys_are_found_after_every_json_escape_in_the_serialized_record(
    tmp_path: Path,
) -> None:
    # The look-behind of the old scan saw the "n" of "\n" and took the key for a word's middle.
    path = tmp_path / "run.jsonl"
    recorder = TraceRecorder(path)
    recorder.write_header("responses", "m", "https://api.example.com/v1")
    planted = KEYS["sk"][0]
    recorder.on_edit(EditInfo(0, [{"op": "add", "path": "/x", "value": f"a\n{planted}"}]))
    recorder.close()
    assert_nowhere(planted, [path.read_text()])
    (edit,) = Trace.load(path).of_kind("edit")
    assert edit.data["withheld"] == ["/patch/0/value"]


# -- streamed text cut at every offset -----------------------------------------------------


@pytest.mark.parametrize("shape", sorted(KEYS))
async def test_a_key_in_the_stream_is_caught_whatever_the_chunk_boundary(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted, secret = KEYS[shape]
    body = text_reply(f"here:\n{planted}\tthere").body
    start = body.index(secret.encode())
    for cut in range(start - 3, start + len(secret) + 3):
        path = tmp_path / f"cut-{cut}.jsonl"
        loop = Loop("m", http_client=split_api(body, [cut]), api_key="sk-test", retries=NO_RETRY)
        result = await loop.run("q", trace=path)
        assert secret in result.text
        trace = Trace.load(path)
        (exchange,) = trace.exchanges()
        assert len(exchange.chunks) == 2  # the boundary is kept where the wire had it
        assert any(c.get("redacted") and c.get("withheld") for c in exchange.chunks)
        assert_nowhere(secret, [path.read_text()])
    # And show, on the last one (cut after the key): the joined body still holds no key.
    assert_nowhere(secret, show_everything(path, capsys))


async def test_a_key_cut_into_many_small_chunks_is_still_caught(tmp_path: Path) -> None:
    planted, secret = KEYS["sk-proj"]
    body = text_reply(f"x\n{planted}").body
    start = body.index(secret.encode())
    cuts = range(start - 2, start + len(secret) + 2, 3)  # a piece of 3 bytes at a time
    path = tmp_path / "run.jsonl"
    loop = Loop("m", http_client=split_api(body, cuts), api_key="sk-test", retries=NO_RETRY)
    await loop.run("q", trace=path)
    (exchange,) = Trace.load(path).exchanges()
    assert len(exchange.chunks) == len(cuts) + 1
    assert_nowhere(secret, [path.read_text()])


async def test_show_redacts_a_trace_that_was_written_with_the_key_split_across_chunks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trace is untrusted input: one written with allow_secrets (or by another tool).
    planted, secret = KEYS["sk"]
    # The key only in the delta (the final text says less), so only joining chunks shows it.
    whole = json.dumps(f"k:\n{planted}").encode()
    body = text_reply(f"k:\n{planted}").body
    last = body.rindex(whole)
    body = body[:last] + b'"k"' + body[last + len(whole) :]
    assert body.count(secret.encode()) == 1
    cut = body.index(secret.encode()) + 20
    path = tmp_path / "leaky.jsonl"
    loop = Loop("m", http_client=split_api(body, [cut]), api_key="sk-test", retries=NO_RETRY)
    await loop.run("q", hooks=[TraceRecorder(path, redact=Redactor(allow_secrets=True))])
    assert secret in path.read_text()  # the test plants what show must hide
    (exchange,) = Trace.load(path).exchanges()
    assert all(secret.encode() not in bytes(c["text"], "utf-8") for c in exchange.chunks)
    assert_nowhere(secret, show_everything(path, capsys))


def _deltas_reply(pieces: list[str], dialect: str = "responses") -> Reply:
    """A stream that sends ``pieces`` as one text delta event each."""
    text = "".join(pieces)
    if dialect == "chat":
        events: list[Any] = [
            {"id": "c", "choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces
        ]
        events.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        return Reply(body + b"data: [DONE]\n\n", chunk_size=41)
    reply = text_reply(text)
    delta = json.dumps(
        {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "delta": text}
    ).encode()
    split = b"".join(
        b"data: "
        + json.dumps(
            {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0}
            | {"delta": piece}
        ).encode()
        + b"\n\n"
        for piece in pieces
    )
    body = reply.body.replace(b"data: " + delta + b"\n\n", split, 1)
    assert body != reply.body
    return Reply(body, chunk_size=41)


@pytest.mark.parametrize("dialect", ["responses", "chat"])
@pytest.mark.parametrize("shape", sorted(KEYS))
async def test_a_key_streamed_in_two_deltas_is_caught_at_every_split(
    shape: str, dialect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted, secret = KEYS[shape]
    text = f"here:\n{planted}\tthere"
    start = text.index(secret)
    for split in range(start - 2, start + len(secret) + 2):
        path = tmp_path / f"split-{split}.jsonl"
        api = ScriptedAPI([_deltas_reply([text[:split], text[split:]], dialect)])
        loop = Loop("m", http_client=api.client(), api_key="sk-test", dialect=dialect)
        result = await loop.run("q", trace=path)
        assert result.text == text
        assert_nowhere(secret, [path.read_text()])
    assert_nowhere(secret, show_everything(path, capsys))


async def test_a_key_streamed_token_by_token_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted, secret = KEYS["sk"]
    text = f"Your key is {planted}."
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    path = tmp_path / "run.jsonl"
    api = ScriptedAPI([_deltas_reply(pieces)])
    loop = Loop("m", http_client=api.client(), api_key="sk-test")
    assert (await loop.run("q", trace=path)).text == text
    assert_nowhere(secret, [path.read_text(), *show_everything(path, capsys)])
    # The deltas still add up to valid events: a replay of the trace gives the redacted text.
    trace = Trace.load(path)
    (exchange,) = trace.exchanges()
    deltas = [
        json.loads(line[6:])["delta"]
        for line in exchange.body.split(b"\n")
        if line.startswith(b"data: ") and b"output_text.delta" in line
    ]
    assert len(deltas) == len(pieces)
    assert "".join(deltas) == text.replace(planted, placeholder(planted))


# -- tool arguments and results -----------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(KEYS))
async def test_a_key_in_tool_arguments_and_results_is_redacted(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted, secret = KEYS[shape]
    arguments = json.dumps({"note": f"use\n{planted}"})
    api = ScriptedAPI([call_reply(("c1", "echo", arguments)), text_reply("done")])
    path = tmp_path / "run.jsonl"
    loop = Loop("m", tools=[echo], http_client=api.client(), api_key="sk-test")
    await loop.run("q", trace=path)
    trace = Trace.load(path)
    (result,) = trace.of_kind("result")
    assert result.data["withheld"] and "[REDACTED:" in result.data["output"]
    assert [r.kind for r in trace.records][-1] == "end"
    assert_nowhere(secret, [path.read_text(), *show_everything(path, capsys)])


# -- headers, error bodies, in-stream errors ----------------------------------------------


async def test_keys_in_headers_never_reach_the_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, _ = KEYS["sk-proj"]
    other, _ = KEYS["sk"]
    api = ScriptedAPI([Reply(text_reply("ok").body, headers={"x-echo": f"k={other}"})])
    path = tmp_path / "run.jsonl"
    loop = Loop(
        "m",
        http_client=api.client(),
        api_key=key,
        headers={"x-note": f"from\t{other}", "x-api-key": key},
    )
    await loop.run("q", trace=path)
    request = Trace.load(path).of_kind("request")[0].data
    assert request["headers"]["authorization"].startswith("Bearer [REDACTED:")
    assert_nowhere(key, [path.read_text(), *show_everything(path, capsys), repr(loop)])
    assert_nowhere(other, [path.read_text()])


@pytest.mark.parametrize("shape", sorted(KEYS))
async def test_a_key_in_an_error_body_reaches_no_exception_log_or_trace(
    shape: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    planted, secret = KEYS[shape]
    body = json.dumps({"error": {"message": f"Incorrect API key provided:\n{planted}"}}).encode()
    api = ScriptedAPI([Reply(body, status=401)])
    path = tmp_path / "run.jsonl"
    loop = Loop("m", http_client=api.client(), api_key="sk-test", retries=NO_RETRY)
    with pytest.raises(APIStatusError) as caught:
        await loop.run("q", trace=path)
    error = caught.value
    assert error.status == 401 and b"Incorrect API key" in error.body
    assert_nowhere(
        secret,
        [str(error), repr(error), error.body, caplog.text, path.read_text()],
    )
    assert_nowhere(secret, show_everything(path, capsys))


def _failed_stream(message: str) -> bytes:
    events = [
        {"type": "response.created", "response": {"id": "r", "status": "in_progress"}},
        {"type": "error", "code": "invalid_api_key", "message": message},
        {
            "type": "response.failed",
            "response": {
                "id": "r",
                "status": "failed",
                "error": {"code": "invalid_api_key", "message": message},
                "output": [],
            },
        },
    ]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


@pytest.mark.parametrize("shape", sorted(KEYS))
async def test_an_in_stream_error_event_is_redacted_at_its_source(
    shape: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    planted, secret = KEYS[shape]
    api = ScriptedAPI([Reply(_failed_stream(f"bad key\n{planted}"), chunk_size=23)])
    path = tmp_path / "run.jsonl"
    loop = Loop("m", http_client=api.client(), api_key="sk-test", retries=NO_RETRY)
    with pytest.raises(StreamErrorEvent) as caught:
        await loop.run("q", trace=path)
    error = caught.value
    assert "[REDACTED:" in str(error) and "[REDACTED:" in error.error["message"]
    assert_nowhere(
        secret,
        [str(error), repr(error), json.dumps(error.error), caplog.text, path.read_text()],
    )
    assert_nowhere(secret, show_everything(path, capsys))


async def test_serve_agent_answers_502_without_the_key_and_logs_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    planted, secret = KEYS["sk-proj"]
    api = ScriptedAPI([Reply(_failed_stream(f"bad key:\n{planted}"))])
    loop = Loop("m", http_client=api.client(), api_key="sk-test", retries=NO_RETRY)
    transport = httpx.ASGITransport(app(loop))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/dispatch", json={"input": {"user_instruction": "q"}})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "StreamErrorEvent"
    assert "[REDACTED:" in response.text
    assert_nowhere(secret, [response.text, caplog.text])


# -- rawloop record ------------------------------------------------------------------------


async def test_the_recording_proxy_writes_no_key_from_requests_or_split_streams(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, _ = KEYS["sk-proj"]
    planted, secret = KEYS["sk-ant"]
    body = text_reply(f"echo:\n{planted}").body
    cut = body.index(secret.encode()) + 17
    out = tmp_path / "traces"
    upstream = split_api(body, [cut])
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            proxy = RecordingProxy("http://upstream.invalid", out, http_client=upstream)
            await group.start(proxy.serve)
            async with httpx.AsyncClient(base_url=proxy.url) as client:
                response = await client.post(
                    "/v1/responses",
                    json={"model": "m", "input": f"mine:\t{planted}", "stream": True},
                    headers={"authorization": f"Bearer {key}"},
                )
            group.cancel_scope.cancel()
    # The client got the upstream's bytes untouched; the recording holds no key.
    assert response.status_code == 200 and secret in response.text
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for file in files:
        assert_nowhere(secret, [file.read_bytes()])
        assert_nowhere(key, [file.read_bytes()])
    assert_nowhere(secret, [caplog.text])


async def test_serve_agent_session_storage_holds_no_key(tmp_path: Path) -> None:
    planted, secret = KEYS["sk-ant"]
    api = ScriptedAPI([text_reply(f"noted:\n{planted}"), text_reply("again")])
    loop = Loop("m", http_client=api.client(), api_key="sk-test", retries=NO_RETRY)
    store = tmp_path / "sessions.db"
    transport = httpx.ASGITransport(app(loop, store=store))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for message in (f"remember:\n{planted}", "and now?"):
            response = await client.post("/agents/bot/u1", json={"message": message})
            assert response.status_code == 200
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert store in files
    # The conversation is stored readable (so the check below means something)...
    assert any(b"remember:" in file.read_bytes() for file in files)
    for file in files:
        assert_nowhere(secret, [file.read_bytes()])


async def test_rawloop_diff_of_two_leaky_traces_prints_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for shape in ("sk", "sk-proj"):
        planted, _ = KEYS[shape]
        path = tmp_path / f"{shape}.jsonl"
        api = ScriptedAPI([text_reply("same")])
        loop = Loop("m", http_client=api.client(), api_key="sk-test")
        leaky = TraceRecorder(path, redact=Redactor(allow_secrets=True))
        await loop.run(f"key:\n{planted}", hooks=[leaky])
        paths.append(str(path))
    assert main(["diff", *paths]) == 1
    out = capsys.readouterr().out
    assert "body.input[0].content" in out  # the difference is reported, its value redacted
    for shape in ("sk", "sk-proj"):
        assert_nowhere(KEYS[shape][1], [out])


# -- pages and exports of an untrusted trace -----------------------------------------------


async def test_html_pages_and_exports_of_a_leaky_trace_hold_no_key_streamed_in_pieces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A trace written by another tool (or with allow_secrets) holds a key the model
    # streamed three characters a delta: only joining the deltas shows it whole.
    planted, secret = KEYS["sk-proj"]
    text = f"Your key is {planted}."
    path = tmp_path / "leaky.jsonl"
    api = ScriptedAPI([_deltas_reply([text[i : i + 3] for i in range(0, len(text), 3)])])
    loop = Loop("m", http_client=api.client(), api_key="sk-test")
    await loop.run("q", hooks=[TraceRecorder(path, redact=Redactor(allow_secrets=True))])
    assert secret[:20] in path.read_text().replace('"', "")  # planted, in pieces
    page, diff_page = tmp_path / "run.html", tmp_path / "diff.html"
    har, otlp = tmp_path / "run.har", tmp_path / "run.otlp.json"
    assert main(["show", str(path), "--html", "-o", str(page)]) == 0
    assert main(["diff", str(path), str(path), "--html", "-o", str(diff_page)]) == 0
    assert main(["export", str(path), "--har", str(har), "--otlp", str(otlp), "--content"]) == 0
    captured = capsys.readouterr()
    outputs = [p.read_text() for p in (page, diff_page, har, otlp)]
    # Pages and exports escape JSON: compare the key's characters, quotes and escapes removed.
    flattened = [o.replace('"', "").replace("\\", "") for o in outputs]
    assert_nowhere(secret, [*outputs, *flattened, captured.out, captured.err])
    # A HAR viewer shows the stream: its deltas joined hold no key either.
    stream = json.loads(outputs[2])["log"]["entries"][0]["response"]["content"]["text"]
    joined = "".join(
        json.loads(line[6:]).get("delta", "")
        for line in stream.splitlines()
        if line.startswith("data: ") and "output_text.delta" in line
    )
    assert joined.startswith("Your key is ")
    assert_nowhere(secret, [joined])
