"""The drop-in hook files in hooks/: loaded by path, as the CLI does, and run in a real Loop."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from rawloop.core.errors import APIStatusError, HookError
from rawloop.loop.hooks import HOOK_POINTS, HookBus
from rawloop.loop.loop import Loop
from rawloop.loop.tools import tool
from rawloop.trace.format import Trace
from rawloop.trace.recorder import TraceRecorder

from .conftest import Reply, ScriptedAPI, corpus
from .loop.test_loop import call_reply, loop_for, multiply, text_reply

pytestmark = pytest.mark.anyio

HOOKS = Path(__file__).parents[1] / "hooks"
HOOK_FILES = sorted(HOOKS.glob("*.py"))
_fresh = itertools.count()


def load_hook(name: str) -> ModuleType:
    """Import ``hooks/NAME.py`` from its path, as ``--hook`` does, as a fresh module."""
    path = HOOKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"rawloop_hook_{name}_{next(_fresh)}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two_turn_api(chunk_size: int = 256) -> ScriptedAPI:
    return ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse"), chunk_size=chunk_size),
            Reply(corpus("responses-text-after-tool-1.sse"), chunk_size=chunk_size),
        ]
    )


def multiply_call_api() -> ScriptedAPI:
    return ScriptedAPI([call_reply(("c1", "multiply", '{"a": 2, "b": 3}')), text_reply("fin")])


@tool
def big(size: int) -> str:
    """Return ``size`` characters."""
    return "".join("abcdefghij"[i % 10] for i in range(size))


# -- every file ------------------------------------------------------------------


def test_the_expected_hook_files_exist() -> None:
    names = {p.stem for p in HOOK_FILES}
    assert {"print_wire", "pause_before_tool", "cap_tool_output", "log_jsonl"} <= names
    readme = (HOOKS / "README.md").read_text()
    for name in names:
        assert f"`{name}.py`" in readme, f"hooks/README.md does not list {name}.py"


@pytest.mark.parametrize("path", HOOK_FILES, ids=[p.stem for p in HOOK_FILES])
def test_each_hook_file_loads_by_path_and_the_bus_accepts_it(path: Path) -> None:
    module = load_hook(path.stem)
    bus = HookBus.of([module])
    assert bus.hooks == (module,)
    points = [name for name in HOOK_POINTS if callable(getattr(module, name, None))]
    assert points and all(bus.has(name) for name in points)
    # Configuration is documented where a user looks for it: the module docstring.
    doc = module.__doc__ or ""
    assert "RAWLOOP_" in doc
    for variable in sorted(set(_env_names(path.read_text()))):
        assert variable in doc, f"{path.name} reads {variable} but its docstring does not say so"


def _env_names(source: str) -> list[str]:
    return re.findall(r"environ\.get\(\s*\"(RAWLOOP_[A-Z_]+)\"", source)


# -- print_wire ---------------------------------------------------------------------


async def test_print_wire_prints_requests_responses_and_the_raw_stream(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAWLOOP_WIRE_CHUNKS", raising=False)
    monkeypatch.delenv("RAWLOOP_WIRE_BODY", raising=False)
    hook = load_hook("print_wire")
    api = two_turn_api(chunk_size=97)
    loop = Loop(
        "gpt-5.5",
        tools=[multiply],
        http_client=api.client(),
        api_key="sk-test-" + "0123456789abcdefghijklmnop",
        headers={"x-tenant": "acme-tenant-header"},
        hooks=[hook],
    )
    result = await loop.run("What is 1231 * 2331?")
    assert result.stop_reason == "completed"
    err = capsys.readouterr().err

    assert err.count(">>> POST https://api.openai.com/v1/responses  (iteration ") == 2
    assert "(iteration 0, attempt 0)" in err and "(iteration 1, attempt 0)" in err
    assert "    content-type: application/json" in err
    assert "    model gpt-5.5, " in err and "1 input item, 1 tool" in err
    assert "3 input items, 1 tool" in err  # the second request: user, call, output
    assert err.count("<<< 200 OK") == 2
    assert "    content-type: text/event-stream" in err
    # The raw streams, exactly, whatever the chunking.
    assert corpus("responses-function-call-1.sse").decode() in err
    assert corpus("responses-text-after-tool-1.sse").decode() in err
    assert "=== end: completed after 2 iterations" in err
    # No header but content-type, and never the key.
    for hidden in ("authorization", "Bearer", "sk-test", "accept-encoding", "acme-tenant", "x-"):
        assert hidden not in err.replace("x-request-id", ""), hidden


async def test_print_wire_decodes_characters_split_across_chunks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAWLOOP_WIRE_CHUNKS", raising=False)
    stream = corpus("responses-cjk-1.sse")
    assert len(stream.decode()) != len(stream)  # there are multi-byte characters to split
    api = ScriptedAPI([Reply(stream, chunk_size=7)])
    await loop_for(api, hooks=[load_hook("print_wire")]).run("x")
    err = capsys.readouterr().err
    assert stream.decode() in err and "\ufffd" not in err


async def test_print_wire_repr_mode_prints_one_line_per_chunk(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_WIRE_CHUNKS", "repr")
    stream = corpus("responses-text-minimal-1.sse")
    api = ScriptedAPI([Reply(stream, chunk_size=50)])
    await loop_for(api, hooks=[load_hook("print_wire")]).run("x")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("    [")]
    assert len(lines) == -(-len(stream) // 50)
    assert lines[0].startswith("    [0+50 at ") and lines[1].startswith("    [50+50 at ")
    first = lines[0].split("] ", 1)[1]
    assert first == repr(stream[:50])


async def test_print_wire_can_show_bodies_or_hide_chunks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_WIRE_CHUNKS", "off")
    monkeypatch.setenv("RAWLOOP_WIRE_BODY", "1")
    api = ScriptedAPI([text_reply("hello there")])
    await loop_for(api, hooks=[load_hook("print_wire")]).run("my question")
    err = capsys.readouterr().err
    assert '"input": [' in err and '"content": "my question"' in err
    assert "data:" not in err and "<<< 200 OK" in err


async def test_print_wire_reports_a_bad_mode_once_and_prints_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_WIRE_CHUNKS", "fancy")
    stream = corpus("responses-text-minimal-1.sse")
    api = ScriptedAPI([Reply(stream, chunk_size=40)])
    await loop_for(api, hooks=[load_hook("print_wire")]).run("x")
    err = capsys.readouterr().err
    assert err.count("RAWLOOP_WIRE_CHUNKS='fancy'") == 1 and stream.decode() in err


async def test_print_wire_shows_failed_attempts_and_retries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = ScriptedAPI(
        [
            Reply(
                b'{"error": {"message": "slow down"}}', status=429, headers={"x-request-id": "r1"}
            ),
            text_reply("ok"),
        ]
    )
    await loop_for(api, hooks=[load_hook("print_wire")]).run("x")
    err = capsys.readouterr().err
    assert "<<< 429 Too Many Requests  (request id r1, " in err
    assert "!!! request failed (iteration 0, attempt 0): APIStatusError: HTTP 429" in err
    assert "retrying in 0.00 s" in err and "(iteration 0, attempt 1)" in err


def _split_client(body: bytes, cuts: list[int], status: int = 200) -> httpx.AsyncClient:
    """A fake model API answering with ``body`` cut at ``cuts`` (the boundaries a test needs)."""
    edges = [0, *sorted(cuts), len(body)]
    pieces = [body[a:b] for a, b in itertools.pairwise(edges) if b > a]

    async def stream() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    def handler(request: httpx.Request) -> httpx.Response:
        kind = "text/event-stream" if status < 300 else "application/json"
        return httpx.Response(status, headers={"content-type": kind}, content=stream())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


# Built at run time: no key-shaped literal in the source.
_WIRE_KEY = "sk-" + "proj-" + "Qm7_x-Lp2" * 5
_WIRE_GENERIC = "sk-" + "Hq4Zr8" * 8


@pytest.mark.parametrize("mode", ["text", "repr"])
@pytest.mark.parametrize("key", [_WIRE_KEY, _WIRE_GENERIC], ids=["sk-proj", "sk"])
async def test_print_wire_never_prints_a_key_split_across_chunks_at_any_offset(
    mode: str, key: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_WIRE_CHUNKS", mode)
    body = text_reply(f"here:\n{key}\tthere").body
    start = body.index(key.encode())
    for cut in range(start - 2, start + len(key) + 2):
        hook = load_hook("print_wire")
        loop = Loop("m", http_client=_split_client(body, [cut]), api_key="sk-test")
        await loop.run("x", hooks=[hook])
        err = capsys.readouterr().err
        assert key not in err and key[-20:] not in err and key[3:20] not in err, cut
        assert "[REDACTED:" in err
        if mode == "repr":  # still one line per chunk, with the wire's offsets and sizes
            lines = [line for line in err.splitlines() if line.startswith("    [")]
            assert [line.split(" at ")[0] for line in lines] == [
                f"    [0+{cut}",
                f"    [{cut}+{len(body) - cut}",
            ]


async def test_print_wire_never_prints_a_key_streamed_in_two_deltas(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAWLOOP_WIRE_CHUNKS", raising=False)
    text = f"key:\n{_WIRE_GENERIC} ok"
    start = text.index(_WIRE_GENERIC)
    for split in range(start, start + len(_WIRE_GENERIC) + 1, 5):
        events = [
            {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": d}
            for d in (text[:split], text[split:])
        ]
        created, _, completed = text_reply(text).body.split(b"\n\n")[:3]
        deltas = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
        body = created + b"\n\n" + deltas + completed + b"\n\n"
        api = ScriptedAPI([Reply(body, chunk_size=29)])
        await loop_for(api, hooks=[load_hook("print_wire")]).run("x")
        err = capsys.readouterr().err
        assert _WIRE_GENERIC not in err and _WIRE_GENERIC[-16:] not in err, split
        assert "[REDACTED:" in err


async def test_print_wire_redacts_keys_in_bodies_urls_and_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_WIRE_BODY", "1")
    monkeypatch.delenv("RAWLOOP_WIRE_CHUNKS", raising=False)
    error = json.dumps({"error": {"message": f"Incorrect API key provided:\n{_WIRE_GENERIC}"}})
    api = ScriptedAPI([Reply(error.encode(), status=401)])
    loop = Loop(
        "m",
        http_client=api.client(),
        api_key=_WIRE_KEY,
        base_url=f"https://proxy.example/v1?key={_WIRE_GENERIC}",
    )
    with pytest.raises(APIStatusError):  # a 401 is not retried
        await loop.run(f"mine:\t{_WIRE_KEY}", hooks=[load_hook("print_wire")])
    err = capsys.readouterr().err
    assert "!!! request failed" in err and '"content": "mine:\\t[REDACTED:' in err
    for key in (_WIRE_KEY, _WIRE_GENERIC):
        assert key not in err and key[-16:] not in err


# -- cap_tool_output -------------------------------------------------------------------


async def test_cap_tool_output_truncates_what_the_model_receives_and_is_traced_as_a_patch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_MAX_TOOL_OUTPUT", "100")
    api = ScriptedAPI(
        [
            call_reply(("c1", "big", '{"size": 10000}'), ("c2", "big", '{"size": 100}')),
            text_reply(),
        ]
    )
    path = tmp_path / "run.jsonl"
    loop = loop_for(api, tools=[big], hooks=[load_hook("cap_tool_output")])
    result = await loop.run("x", hooks=[TraceRecorder(path)])
    outputs = {
        i["call_id"]: i["output"]
        for i in api.bodies[1]["input"]
        if i.get("type") == "function_call_output"
    }
    expected = "abcdefghij" * 10 + "\n[cap_tool_output: cut 9900 of 10000 characters]"
    assert outputs == {"c1": expected, "c2": "abcdefghij" * 10}  # at the limit: untouched
    assert result.stop_reason == "completed"

    trace = Trace.load(path)
    # The tool's own result is recorded in full; the cut is the breakpoint's edit.
    assert len(trace.results()["c1"]["output"]) == 10000
    assert trace.edits() == {1: [{"op": "replace", "path": "/results/0/output", "value": expected}]}
    assert trace.exchanges()[1].request["body"]["input"][-2]["output"] == expected


async def test_cap_tool_output_defaults_to_4000_and_leaves_short_outputs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAWLOOP_MAX_TOOL_OUTPUT", raising=False)
    api = ScriptedAPI([call_reply(("c1", "big", '{"size": 4500}')), text_reply()])
    await loop_for(api, tools=[big], hooks=[load_hook("cap_tool_output")]).run("x")
    sent = api.bodies[1]["input"][-1]["output"]
    assert sent == "abcdefghij" * 400 + "\n[cap_tool_output: cut 500 of 4500 characters]"

    path = tmp_path / "short.jsonl"
    short = ScriptedAPI([call_reply(("c1", "big", '{"size": 10}')), text_reply()])
    loop = loop_for(short, tools=[big], hooks=[load_hook("cap_tool_output")])
    await loop.run("x", trace=path)
    assert short.bodies[1]["input"][-1]["output"] == "abcdefghij"
    assert Trace.load(path).edits() == {}


async def test_cap_tool_output_refuses_a_bad_limit_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAWLOOP_MAX_TOOL_OUTPUT", "lots")
    api = ScriptedAPI([call_reply(("c1", "big", '{"size": 10}'))])
    with pytest.raises(HookError, match="RAWLOOP_MAX_TOOL_OUTPUT must be a whole number"):
        await loop_for(api, tools=[big], hooks=[load_hook("cap_tool_output")]).run("x")


# -- log_jsonl --------------------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_log_jsonl_writes_one_line_per_hook_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "logs" / "run.jsonl"  # the folder does not exist yet
    monkeypatch.setenv("RAWLOOP_LOG", str(log))
    monkeypatch.delenv("RAWLOOP_LOG_SKIP", raising=False)
    hook = load_hook("log_jsonl")

    calls: list[str] = []

    class Count:
        """Counts the hook calls the log should mirror, one by one."""

        def __getattr__(self, name: str) -> Any:
            if name in HOOK_POINTS and name != "on_edit":
                return lambda info: calls.append(name)
            raise AttributeError(name)

        def __dir__(self) -> list[str]:
            return [n for n in HOOK_POINTS if n != "on_edit"]

    api = two_turn_api(chunk_size=300)
    loop = Loop(
        "gpt-5.5",
        tools=[multiply],
        http_client=api.client(),
        api_key="sk-test-" + "0123456789abcdefghijklmnop",
        hooks=[hook, Count()],
    )
    result = await loop.run("What is 1231 * 2331?")
    lines = read_log(log)
    assert [line["point"] for line in lines] == calls
    assert lines[0]["point"] == "on_breakpoint" and lines[-1]["point"] == "on_end"
    by_point: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert isinstance(line["time"], float)
        by_point.setdefault(line["point"], []).append(line)

    first_request = by_point["on_request"][0]
    assert first_request["iteration"] == 0 and first_request["attempt"] == 0
    assert first_request["model"] == "gpt-5.5" and first_request["tools"] == 1
    assert first_request["url"] == "https://api.openai.com/v1/responses"
    assert by_point["on_response"][0]["status"] == 200
    assert by_point["on_response"][0]["content_type"] == "text/event-stream"
    chunks = [c for c in by_point["on_chunk"] if c["iteration"] == 0]
    assert [c["offset"] for c in chunks][:3] == [0, 300, 600]
    assert sum(c["size"] for c in chunks) == len(corpus("responses-function-call-1.sse"))
    assert by_point["on_event"][0]["type"] == "response.created"
    decision = by_point["on_decision"][0]
    assert decision["calls"] == [{"call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd", "name": "multiply"}]
    (outcome,) = by_point["on_result"]
    assert (outcome["name"], outcome["ok"], outcome["output"]) == ("multiply", True, "2869461")
    assert by_point["on_breakpoint"][1]["pending_results"] == ["call_sVidsfFJ6zlzRpelrPkTPlpd"]
    end = by_point["on_end"][0]
    assert end["stop_reason"] == "completed" and end["iterations"] == 2
    assert end["usage"] == result.usage and end["error"] is None
    text = log.read_text()
    assert "sk-test" not in text and "authorization" not in text.lower()


async def test_log_jsonl_logs_errors_and_edits_appends_across_runs_and_can_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "run.jsonl"
    monkeypatch.setenv("RAWLOOP_LOG", str(log))
    monkeypatch.setenv("RAWLOOP_LOG_SKIP", "on_chunk, on_event")
    monkeypatch.setenv("RAWLOOP_MAX_TOOL_OUTPUT", "5")
    hooks = [load_hook("log_jsonl"), load_hook("cap_tool_output")]
    api = ScriptedAPI(
        [
            Reply(b'{"error": {"message": "slow down"}}', status=429),
            call_reply(("c1", "big", '{"size": 20}')),
            text_reply(),
        ]
    )
    await loop_for(api, tools=[big], hooks=hooks).run("x")
    await loop_for(ScriptedAPI([text_reply()]), hooks=hooks).run("again")
    lines = read_log(log)
    points = [line["point"] for line in lines]
    assert "on_chunk" not in points and "on_event" not in points
    assert points.count("on_end") == 2  # the second run appended
    (error,) = [line for line in lines if line["point"] == "on_error"]
    assert (error["where"], error["type"], error["will_retry"]) == (
        "request",
        "APIStatusError",
        True,
    )
    assert "HTTP 429" in error["message"]
    (edit,) = [line for line in lines if line["point"] == "on_edit"]
    assert (edit["iteration"], edit["ops"], edit["paths"]) == (1, 1, ["replace /results/0/output"])


# -- pause_before_tool --------------------------------------------------------------------


class FakeStdin:
    """A stdin that says whether it is a terminal and records reads."""

    closed = False

    def __init__(self, text: str = "", *, tty: bool) -> None:
        self.lines = io.StringIO(text)
        self.tty = tty
        self.reads = 0

    def isatty(self) -> bool:
        return self.tty

    def readline(self) -> str:
        self.reads += 1
        if not self.tty:
            raise AssertionError("the hook read a stdin that is not a terminal")
        return self.lines.readline()


async def test_pause_prints_and_goes_on_when_stdin_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_PAUSE_TOOLS", "search, multiply")
    stdin = FakeStdin(tty=False)
    monkeypatch.setattr(sys, "stdin", stdin)
    api = multiply_call_api()
    with anyio.fail_after(10):
        result = await loop_for(api, hooks=[load_hook("pause_before_tool")]).run("x")
    assert result.stop_reason == "completed" and len(api.requests) == 2 and stdin.reads == 0
    err = capsys.readouterr().err
    assert "--- paused before iteration 1: the model called 1 tool" in err
    assert '[1] multiply({"a": 2, "b": 3})  id=c1' in err
    assert "ok in " in err and "-> 6" in err
    assert "stdin is not a terminal: going on" in err


async def test_pause_waits_for_enter_on_a_terminal_and_q_stops_the_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_PAUSE_TOOLS", "multiply")
    stdin = FakeStdin("\n", tty=True)
    monkeypatch.setattr(sys, "stdin", stdin)
    api = multiply_call_api()
    with anyio.fail_after(10):
        result = await loop_for(api, hooks=[load_hook("pause_before_tool")]).run("x")
    assert stdin.reads == 1 and result.stop_reason == "completed" and len(api.requests) == 2
    assert "Enter to send these results and go on, q to stop the run" in capsys.readouterr().err

    monkeypatch.setattr(sys, "stdin", FakeStdin("q\n", tty=True))
    api = multiply_call_api()
    with anyio.fail_after(10):
        result = await loop_for(api, hooks=[load_hook("pause_before_tool")]).run("x")
    assert result.stop_reason == "paused: stopped by user" and len(api.requests) == 1
    # The results computed before the stop are kept in the transcript.
    assert result.items[-1] == {"type": "function_call_output", "call_id": "c1", "output": "6"}


@pytest.mark.parametrize(
    ("setting", "pauses"),
    [(None, False), ("", False), ("search", False), ("*", True), (" multiply ", True)],
)
async def test_pause_only_for_the_named_tools(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
    pauses: bool,
) -> None:
    if setting is None:
        monkeypatch.delenv("RAWLOOP_PAUSE_TOOLS", raising=False)
    else:
        monkeypatch.setenv("RAWLOOP_PAUSE_TOOLS", setting)
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=False))
    await loop_for(multiply_call_api(), hooks=[load_hook("pause_before_tool")]).run("x")
    assert ("paused before iteration" in capsys.readouterr().err) is pauses


PAUSE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys, anyio, httpx
    from rawloop.loop.loop import Loop
    from rawloop.loop.tools import tool

    @tool
    def multiply(a: int, b: int) -> int:
        \"\"\"Multiply two numbers.\"\"\"
        return a * b

    spec = importlib.util.spec_from_file_location("pause", sys.argv[1])
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    REPLIES = [open(p, "rb").read() for p in sys.argv[2:]]

    async def handler(request):
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=REPLIES.pop(0)
        )

    async def main():
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        loop = Loop("m", tools=[multiply], http_client=client, api_key="sk-x", hooks=[hook])
        result = await loop.run("x")
        print(result.stop_reason, flush=True)

    anyio.run(main)
    """
)


def test_pause_never_hangs_a_process_whose_stdin_is_an_open_pipe(tmp_path: Path) -> None:
    script = tmp_path / "pause.py"
    script.write_text(PAUSE_SCRIPT)
    env = {
        **os.environ,
        "RAWLOOP_PAUSE_TOOLS": "multiply",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    streams = [
        corpus_path("responses-function-call-1.sse"),
        corpus_path("responses-text-after-tool-1.sse"),
    ]
    # stdin is a pipe nobody writes to or closes: reading it would block forever.
    proc = subprocess.Popen(
        [sys.executable, str(script), str(HOOKS / "pause_before_tool.py"), *streams],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "completed"
    assert b"stdin is not a terminal: going on" in err and b"-> 2869461" in err


def corpus_path(name: str) -> str:
    return str(Path(__file__).parent / "corpus" / name)


# -- all together ------------------------------------------------------------------------


async def test_all_hook_files_together_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAWLOOP_LOG", str(tmp_path / "log.jsonl"))
    monkeypatch.setenv("RAWLOOP_PAUSE_TOOLS", "*")
    monkeypatch.setenv("RAWLOOP_MAX_TOOL_OUTPUT", "3")
    monkeypatch.delenv("RAWLOOP_WIRE_CHUNKS", raising=False)
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=False))
    hooks = [load_hook(p.stem) for p in HOOK_FILES]
    api = two_turn_api()
    loop = Loop("gpt-5.5", tools=[multiply], http_client=api.client(), api_key="sk-x")
    result = await loop.run("What is 1231 * 2331?", hooks=hooks)
    assert result.stop_reason == "completed"
    assert api.bodies[1]["input"][-1]["output"] == ("286\n[cap_tool_output: cut 4 of 7 characters]")
    err = capsys.readouterr().err
    assert "paused before iteration 1" in err and ">>> POST" in err
    assert any(line["point"] == "on_edit" for line in read_log(tmp_path / "log.jsonl"))
