"""A capture replays as the client sent it: ``rawloop replay`` on ``rawloop record`` traces.

Each capture is made for real: the openai SDK drives a two-turn tool loop
through a ``RecordingProxy`` in front of a ``ReplayServer`` serving a bundled
trace, on 127.0.0.1. The follow-up request is rendered the client's own way
(as the SDK dumps its output items, or as pydantic-ai and the node SDK do:
no ``status``, an extra ``parsed_arguments``), streamed or not. The capture
then replays ``identical`` in process and over a loopback server, without
re-rendering anything through rawloop's loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest

from rawloop import Trace, tool
from rawloop.capture.proxy import RecordingProxy
from rawloop.cli.main import main
from rawloop.replay.capture_replay import is_capture, meaning_of
from rawloop.replay.replayer import replay
from rawloop.replay.server import ReplayServer, replay_over_http

from .clients import CLIENTS, EXPECTED_TEXT, node_available, node_session
from .clients import capture as capture_client

pytestmark = pytest.mark.anyio

TRACES = Path(__file__).parents[2] / "traces"
ROUNDTRIP = TRACES / "tool-roundtrip.jsonl"
CHAT = TRACES / "chat-run.jsonl"
SECRET = "sk-test-" + "0123456789abcdefghijklmnopqrstuv"  # no key-shaped literal in the source
DEADLINE = 20.0

Render = Callable[[dict[str, Any]], dict[str, Any]]


def as_the_sdk_dumps_it(item: dict[str, Any]) -> dict[str, Any]:
    return item


def without_status(item: dict[str, Any]) -> dict[str, Any]:
    """pydantic-ai sends its function calls back without ``status`` (and without ``id``)."""
    return {k: v for k, v in item.items() if k not in ("status", "id")}


def with_parsed_arguments(item: dict[str, Any]) -> dict[str, Any]:
    """The node SDK's ``responses.stream()`` keeps ``parsed_arguments`` on its items."""
    return {**item, "parsed_arguments": json.loads(item.get("arguments") or "{}")}


def recorded_body(path: Path, n: int) -> dict[str, Any]:
    body = Trace.load(path).exchanges()[n].request["body"]
    assert isinstance(body, dict)
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}


async def responses_client(sdk: openai.AsyncOpenAI, how: str, render: Render) -> None:
    """Two turns of the Responses tool loop, the follow-up rendered by ``render``."""
    params = recorded_body(ROUNDTRIP, 0)
    if how == "helper":  # responses.stream(): the SDK's own stream manager
        async with sdk.responses.stream(**params) as stream:
            response = await stream.get_final_response()
    elif how == "stream":
        events = [e async for e in await sdk.responses.create(**params, stream=True)]
        response = events[-1].response
    else:
        response = await sdk.responses.create(**params)
    call = response.output[0]
    assert call.type == "function_call"
    items = [
        *params["input"],
        render(call.model_dump(exclude_none=True)),
        {"type": "function_call_output", "call_id": call.call_id, "output": "2869461"},
    ]
    follow = {**params, "input": items}
    if how == "helper":
        async with sdk.responses.stream(**follow) as stream:
            final = await stream.get_final_response()
    elif how == "stream":
        final = [e async for e in await sdk.responses.create(**follow, stream=True)][-1].response
    else:
        final = await sdk.responses.create(**follow)
    assert "2,869,461" in final.output_text


async def chat_client(sdk: openai.AsyncOpenAI, how: str, render: Render) -> None:
    """Two turns of the Chat tool loop; ``render`` applies to the assistant message."""
    params = recorded_body(CHAT, 0)
    if how == "stream":
        chunks = [c async for c in await sdk.chat.completions.create(**params, stream=True)]
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
        call_id, name, arguments = (
            calls[0].id,
            calls[0].function.name,
            "".join(t.function.arguments or "" for t in calls),
        )
    else:
        completion = await sdk.chat.completions.create(**params)
        call = completion.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
    messages = [
        *params["messages"],
        render(assistant),
        {"role": "tool", "tool_call_id": call_id, "content": "2869461"},
    ]
    if how == "stream":
        follow = await sdk.chat.completions.create(**params | {"messages": messages}, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in follow if c.choices])
    else:
        completion = await sdk.chat.completions.create(**params | {"messages": messages})
        text = completion.choices[0].message.content or ""
    assert "2,869,461" in text.replace("\u202f", ",")


async def capture(
    out: Path, client: Callable[[openai.AsyncOpenAI, str, Render], Any], how: str, render: Render
) -> Trace:
    """Record ``client`` through ``rawloop record`` against a fake upstream; the one trace."""
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            server = ReplayServer([ROUNDTRIP, CHAT])
            upstream = f"http://127.0.0.1:{await group.start(server.serve)}"
            proxy = RecordingProxy(upstream, out)
            await group.start(proxy.serve)
            async with openai.AsyncOpenAI(base_url=proxy.url, api_key=SECRET, max_retries=0) as sdk:
                await client(sdk, how, render)
            group.cancel_scope.cancel()
    (path,) = sorted(out.glob("run-*.jsonl"))
    return Trace.load(path)


CASES = [
    pytest.param(responses_client, "stream", as_the_sdk_dumps_it, id="responses-stream"),
    pytest.param(responses_client, "json", as_the_sdk_dumps_it, id="responses-json"),
    pytest.param(responses_client, "helper", with_parsed_arguments, id="responses-stream-helper"),
    pytest.param(responses_client, "json", without_status, id="responses-json-no-status"),
    pytest.param(chat_client, "stream", as_the_sdk_dumps_it, id="chat-stream-no-usage"),
    pytest.param(chat_client, "json", as_the_sdk_dumps_it, id="chat-json"),
]


@pytest.mark.parametrize(("client", "how", "render"), CASES)
async def test_an_unchanged_capture_replays_identical_in_process_and_over_a_server(
    tmp_path: Path, client: Any, how: str, render: Render
) -> None:
    trace = await capture(tmp_path, client, how, render)
    assert is_capture(trace)
    assert [(e.iteration, e.attempt) for e in trace.exchanges()] == [(0, 0), (1, 0)]
    with anyio.fail_after(DEADLINE):
        in_process = await replay(trace)
        over_http = await replay_over_http(trace)
    for report in (in_process, over_http):
        assert report.verdict == "identical", str(report)
        assert report.result is not None and report.result.iterations == 2
        assert [r.output for r in report.result.results] == ["2869461"]
        assert "2,869,461" in report.result.text.replace("\u202f", ",")
    # Hostile chunking breaks no answer the client reads.
    hostile = await replay(trace, chunking="hostile", seed=7)
    assert hostile.identical, str(hostile)


async def test_the_loop_replay_re_renders_what_the_client_sent(tmp_path: Path) -> None:
    """Why a capture is not replayed through rawloop's loop by default."""
    trace = await capture(tmp_path, responses_client, "json", without_status)
    as_sent = await replay(trace)
    through_loop = await replay(trace, as_sent=False)
    assert as_sent.identical, str(as_sent)
    assert through_loop.verdict == "diverged"


async def test_a_changed_answer_diverges_at_the_decision(tmp_path: Path) -> None:
    trace = await capture(tmp_path, responses_client, "stream", as_the_sdk_dumps_it)
    decision = trace.of_kind("decision")[1]
    decision.data["turn"]["text"] = "something else"
    report = await replay(trace)
    assert report.verdict == "diverged"
    assert report.divergence is not None
    assert report.divergence.path == "turn.text"
    assert report.divergence.iteration == 1


async def test_an_injected_fault_is_retried_as_the_client_would(tmp_path: Path) -> None:
    trace = await capture(tmp_path, responses_client, "stream", as_the_sdk_dumps_it)
    report = await replay(trace, faults=["iter=1,attempt=0:status=500"])
    assert report.identical, str(report)
    dropped = await replay(trace, faults=["iter=0:drop"])  # every attempt: the retries run out
    assert dropped.verdict == "diverged"
    assert "lost the connection" in str(dropped)


def test_items_are_compared_by_what_identifies_them() -> None:
    call = {
        "type": "function_call",
        "call_id": "call_1",
        "name": "f",
        "arguments": "{}",
        "status": "completed",
    }
    body = {"model": "m", "input": [{"role": "user", "content": "hi"}, call]}
    other = {
        "model": "m",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            with_parsed_arguments(without_status(call)),
        ],
    }
    assert meaning_of("responses", body) == meaning_of("responses", other)
    changed = {**other, "input": [{"role": "user", "content": "bye"}, call]}
    assert meaning_of("responses", body) != meaning_of("responses", changed)


def test_the_cli_says_identical_and_loop_is_explicit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = anyio.run(capture, tmp_path, responses_client, "json", without_status)
    assert main(["replay", trace.path]) == 0
    out = capsys.readouterr().out
    assert "as the client sent them" in out and "identical" in out
    assert main(["replay", "--server", trace.path]) == 0
    assert "identical" in capsys.readouterr().out
    assert main(["replay", "--loop", "-q", trace.path]) == 1
    assert "diverged" in capsys.readouterr().out


# -- every client of the matrix (tests/capture/clients.py) ----------------------------------

MATRIX_PYTHON = [name for name, client in CLIENTS.items() if not client.node]
MATRIX_NODE = [name for name, client in CLIENTS.items() if client.node]


async def _replays_identical(path: Path) -> None:
    trace = Trace.load(path)
    assert is_capture(trace)
    with anyio.fail_after(DEADLINE):
        reports = {
            "in process": await replay(trace),
            "--server": await replay_over_http(trace),
            "hostile": await replay(trace, chunking="hostile", seed=3),
            "hostile --server": await replay_over_http(trace, chunking="hostile", seed=3),
        }
    for how, report in reports.items():
        assert report.verdict == "identical", f"{how}: {report}"
        assert report.result is not None
        assert report.result.iterations == 2, how
        assert [r.output for r in report.result.results] == ["42"], how
        assert report.result.text == EXPECTED_TEXT, how


@pytest.mark.parametrize("name", MATRIX_PYTHON)
async def test_each_python_clients_capture_replays_identical(name: str, tmp_path: Path) -> None:
    path, _ = await capture_client(name, tmp_path)
    await _replays_identical(path)


@pytest.mark.skipif(not node_available(), reason="node or its openai package is not installed")
@pytest.mark.parametrize("name", MATRIX_NODE)
async def test_each_node_clients_capture_replays_identical(name: str, tmp_path: Path) -> None:
    async with node_session():
        path, _ = await capture_client(name, tmp_path)
    await _replays_identical(path)


async def test_live_tools_on_a_capture_answer_in_the_clients_rendering(tmp_path: Path) -> None:
    """--live-tools on a capture: the real tools' outputs go in the client's own requests."""
    trace = await capture(tmp_path, responses_client, "json", without_status)

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    good = await replay(trace, tools=[multiply], live_tools=True)
    assert good.identical, str(good)
    assert good.tool_differences == []
    assert good.result is not None and [r.output for r in good.result.results] == ["2869461"]

    def buggy_tools() -> Any:
        @tool
        def multiply(a: int, b: int) -> int:
            """Multiply two numbers."""
            return a + b

        return multiply

    bad = await replay(trace, tools=[buggy_tools()], live_tools=True)
    assert bad.verdict == "diverged"
    assert bad.divergence is not None and bad.divergence.path.startswith("input[2]")
    assert [(d["recorded"], d["actual"]) for d in bad.tool_differences] == [("2869461", "3562")]
    assert bad.result is not None and [r.output for r in bad.result.results] == ["3562"]
