"""The clients our users' customers run, each making a capture through ``rawloop record``.

Every client runs the same conversation, a tool round trip: the fake model
(a ``ReplayServer`` serving ``SCRIPT``) calls ``multiply(6, 7)``, the client
runs the tool and sends the result back, the model answers ``6 * 7 = 42``.

* ``CLIENTS`` maps a client's name to its ``Client``: the dialect it speaks
  and ``run(base_url)``, the customer's own code pointed at ``base_url``,
  which returns what the user would see (the final text) and the tool calls
  it ran.
* ``capture(name, out)`` runs a client through a ``RecordingProxy`` in front
  of the scripted upstream and returns the trace the proxy wrote.
* ``run_against(name, trace, **server_options)`` runs the same client code
  against a ``ReplayServer`` serving that trace (``strict=True``, a
  chunking...) and returns its ``Outcome`` and the server.

The Python clients run in process; each node client is one ``node`` process
(``node_available()`` says whether node and its ``openai`` package are
there). Everything listens on 127.0.0.1 with ports the kernel picks, under a
deadline. Importable by other test modules (``tests.capture.clients``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson
from anyio.streams.buffered import BufferedByteReceiveStream

from rawloop.capture.proxy import RecordingProxy
from rawloop.replay.server import ReplayServer
from rawloop.replay.synth import script_to_trace
from rawloop.trace.format import Trace

__all__ = [
    "CLIENTS",
    "DEADLINE",
    "EXPECTED_TEXT",
    "NODE_MODULES",
    "SCRIPT",
    "Client",
    "Outcome",
    "capture",
    "node_available",
    "node_session",
    "run_against",
    "upstream_script",
]

DEADLINE = 30.0
MODEL = "gpt-test"
PROMPT = "What is 6 * 7?"
INSTRUCTIONS = "Use the multiply tool."
EXPECTED_TEXT = "6 * 7 = 42"
#: The fake upstream: one function call, then text.
SCRIPT: dict[str, Any] = {
    "dialect": "responses",
    "model": MODEL,
    "turns": [
        {"calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"text": EXPECTED_TEXT},
    ],
}
NODE_MODULES = Path(__file__).parents[2] / ".venv" / "node" / "node_modules"
# Not a key: the SDKs want one, the fake servers never check it.
API_KEY = "test"


@dataclass
class Outcome:
    """What the customer's code got: the final text and the tool calls it ran."""

    text: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Client:
    """One customer client: the dialect it speaks, whether it streams, its code given a base URL."""

    name: str
    dialect: str
    streams: bool
    run: Callable[[str], Awaitable[Outcome]]
    node: bool = False


def upstream_script(dialect: str) -> dict[str, Any]:
    """The fake upstream's script in ``dialect``."""
    return {**SCRIPT, "dialect": dialect}


def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


TOOL_PARAMETERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
RESPONSES_TOOL = {
    "type": "function",
    "name": "multiply",
    "description": "Multiply two numbers.",
    "parameters": TOOL_PARAMETERS,
    "strict": True,
}
CHAT_TOOL = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "Multiply two numbers.",
        "parameters": TOOL_PARAMETERS,
    },
}


# -- the openai Python SDK ---------------------------------------------------------------


def _openai(base_url: str) -> Any:
    import openai

    return openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=2)


def _run_calls(output: list[Any], outcome: Outcome) -> list[dict[str, Any]]:
    """The ``function_call_output`` items for the calls in ``output`` (SDK objects)."""
    results = []
    for item in output:
        if getattr(item, "type", None) == "function_call":
            arguments = orjson.loads(item.arguments)
            outcome.calls.append((item.name, arguments))
            results.append(
                {
                    "type": "function_call_output",
                    "call_id": item.call_id,
                    "output": str(multiply(**arguments)),
                }
            )
    return results


async def _openai_responses(base_url: str, mode: str) -> Outcome:
    client = _openai(base_url)
    outcome = Outcome("")
    items: list[Any] = [{"role": "user", "content": PROMPT}]
    async with client:
        for _ in range(4):  # bounded: the script answers in two turns
            options: dict[str, Any] = {
                "model": MODEL,
                "instructions": INSTRUCTIONS,
                "input": items,
                "tools": [RESPONSES_TOOL],
            }
            if mode == "create":
                response = await client.responses.create(**options)
            elif mode == "create-stream":
                response = None
                async with await client.responses.create(**options, stream=True) as events:
                    async for event in events:
                        if event.type == "response.completed":
                            response = event.response
                assert response is not None, "the stream ended without response.completed"
            else:  # responses.stream()
                async with client.responses.stream(**options) as stream:
                    async for _event in stream:
                        pass
                    response = await stream.get_final_response()
            results = _run_calls(response.output, outcome)
            if not results:
                outcome.text = response.output_text
                return outcome
            items += [item.model_dump(exclude_none=True) for item in response.output]
            items += results
    raise AssertionError("the conversation did not end")


async def _openai_chat(base_url: str, stream: bool = True) -> Outcome:
    client = _openai(base_url)
    outcome = Outcome("")
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": PROMPT},
    ]
    async with client:
        for _ in range(4):
            text, calls = "", dict[int, dict[str, str]]()
            if not stream:
                completion = await client.chat.completions.create(
                    model=MODEL, messages=messages, tools=[CHAT_TOOL]
                )
                message = completion.choices[0].message
                text = message.content or ""
                for n, call in enumerate(message.tool_calls or ()):
                    function = call.function
                    calls[n] = {"id": call.id, "name": function.name, "args": function.arguments}
            else:
                chunks = await client.chat.completions.create(
                    model=MODEL, messages=messages, tools=[CHAT_TOOL], stream=True
                )
                async with chunks:
                    async for chunk in chunks:
                        for choice in chunk.choices:
                            text += choice.delta.content or ""
                            for call in choice.delta.tool_calls or ():
                                entry = calls.setdefault(
                                    call.index, {"id": "", "name": "", "args": ""}
                                )
                                entry["id"] = call.id or entry["id"]
                                if call.function is not None:
                                    entry["name"] += call.function.name or ""
                                    entry["args"] += call.function.arguments or ""
            if not calls:
                outcome.text = text
                return outcome
            messages.append(
                {
                    "role": "assistant",
                    "content": text or None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["args"]},
                        }
                        for c in calls.values()
                    ],
                }
            )
            for c in calls.values():
                arguments = orjson.loads(c["args"])
                outcome.calls.append((c["name"], arguments))
                messages.append(
                    {"role": "tool", "tool_call_id": c["id"], "content": str(multiply(**arguments))}
                )
    raise AssertionError("the conversation did not end")


# -- openai-agents ------------------------------------------------------------------------


async def _agents(base_url: str, streamed: bool, previous_id: bool = False) -> Outcome:
    import openai
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # the one line: no traces sent to OpenAI's platform
    outcome = Outcome("")

    @function_tool
    def multiply_tool(a: int, b: int) -> int:
        """Multiply two numbers."""
        outcome.calls.append(("multiply", {"a": a, "b": b}))
        return multiply(a, b)

    multiply_tool.name = "multiply"
    client = openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=2)
    agent = Agent(
        name="calculator",
        instructions=INSTRUCTIONS,
        tools=[multiply_tool],
        model=OpenAIResponsesModel(MODEL, openai_client=client),
    )
    async with client:
        if streamed:
            streaming = Runner.run_streamed(
                agent, PROMPT, max_turns=4, auto_previous_response_id=previous_id
            )
            async for _event in streaming.stream_events():
                pass
            final = streaming.final_output
        else:
            run = Runner.run(agent, PROMPT, max_turns=4, auto_previous_response_id=previous_id)
            final = (await run).final_output
    outcome.text = str(final)
    return outcome


# -- pydantic-ai ----------------------------------------------------------------------------


async def _pydantic_ai(base_url: str, streamed: bool) -> Outcome:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    outcome = Outcome("")
    model = OpenAIResponsesModel(MODEL, provider=OpenAIProvider(base_url=base_url, api_key=API_KEY))
    agent = Agent(model, instructions=INSTRUCTIONS)

    @agent.tool_plain(name="multiply")
    def multiply_tool(a: int, b: int) -> int:
        """Multiply two numbers."""
        outcome.calls.append(("multiply", {"a": a, "b": b}))
        return multiply(a, b)

    if streamed:
        async with agent.run_stream(PROMPT) as result:
            outcome.text = str(await result.get_output())
    else:
        outcome.text = str((await agent.run(PROMPT)).output)
    return outcome


# -- node's openai ---------------------------------------------------------------------------

# One node process serves every run of a session: a JSON line in ({"url", "mode"}), a
# JSON line out ({"text", "calls"} or {"error"}).
_NODE_SCRIPT = r"""
const OpenAI = require("openai");
const readline = require("readline");
const tool = JSON.parse(process.env.RAWLOOP_TOOL);

async function conversation(baseURL, mode) {
  const client = new OpenAI({ baseURL, apiKey: "test", maxRetries: 2 });
  const input = [{ role: "user", content: process.env.RAWLOOP_PROMPT }];
  const calls = [];
  for (let i = 0; i < 4; i++) {
    const options = { model: process.env.RAWLOOP_MODEL, instructions: process.env.RAWLOOP_INSTRUCTIONS,
                      input, tools: [tool] };
    let response = null;
    if (mode === "create-stream") {
      const stream = await client.responses.create({ ...options, stream: true });
      for await (const event of stream) {
        if (event.type === "response.completed") response = event.response;
      }
    } else {
      const stream = client.responses.stream(options);
      for await (const _event of stream) {}
      response = await stream.finalResponse();
    }
    if (!response) throw new Error("the stream ended without response.completed");
    const results = [];
    for (const item of response.output) {
      if (item.type === "function_call") {
        const args = JSON.parse(item.arguments);
        calls.push([item.name, args]);
        results.push({ type: "function_call_output", call_id: item.call_id, output: String(args.a * args.b) });
      }
    }
    if (results.length === 0) {
      // output_text is the helper's convenience; a raw stream event's response lacks it.
      const text = response.output.filter((item) => item.type === "message")
        .flatMap((item) => item.content).filter((part) => part.type === "output_text")
        .map((part) => part.text).join("");
      return { text, calls };
    }
    input.push(...response.output, ...results);
  }
  throw new Error("the conversation did not end");
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  const { url, mode } = JSON.parse(line);
  let answer;
  try {
    answer = await conversation(url, mode);
  } catch (err) {
    answer = { error: String((err && err.stack) || err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
});
"""


def node_available() -> bool:
    """Whether ``node`` and its ``openai`` package are installed."""
    return shutil.which("node") is not None and (NODE_MODULES / "openai").is_dir()


class NodeSession:
    """One ``node`` process running the node client's conversation once per ``run``."""

    def __init__(self, process: anyio.abc.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def run(self, url: str, mode: str) -> Outcome:
        await self._stdin.send(orjson.dumps({"url": url, "mode": mode}) + b"\n")
        result = orjson.loads(await self._stdout.receive_until(b"\n", 1 << 20))
        if "error" in result:
            raise AssertionError(f"node {mode}: {result['error']}")
        return Outcome(result["text"], [(name, args) for name, args in result["calls"]])


_session: NodeSession | None = None


@asynccontextmanager
async def node_session() -> AsyncIterator[NodeSession]:
    """A node process for the block: every node client run inside it uses that one process."""
    global _session
    node = shutil.which("node")
    assert node is not None
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NODE_PATH": str(NODE_MODULES),
        "RAWLOOP_MODEL": MODEL,
        "RAWLOOP_PROMPT": PROMPT,
        "RAWLOOP_INSTRUCTIONS": INSTRUCTIONS,
        "RAWLOOP_TOOL": orjson.dumps(RESPONSES_TOOL).decode(),
    }
    async with await anyio.open_process([node, "-e", _NODE_SCRIPT], env=env) as process:
        _session = NodeSession(process)
        try:
            yield _session
        finally:
            _session = None
            await process.stdin.aclose()  # type: ignore[union-attr]
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def _node(base_url: str, mode: str) -> Outcome:
    if _session is not None:
        return await _session.run(base_url, mode)
    async with node_session() as session:
        return await session.run(base_url, mode)


CLIENTS: dict[str, Client] = {
    c.name: c
    for c in (
        Client(
            "openai-responses-stream",
            "responses",
            True,
            lambda u: _openai_responses(u, "create-stream"),
        ),
        Client(
            "openai-responses-create", "responses", False, lambda u: _openai_responses(u, "create")
        ),
        Client(
            "openai-responses-helper", "responses", True, lambda u: _openai_responses(u, "helper")
        ),
        Client("openai-chat-stream", "chat", True, _openai_chat),
        Client("openai-chat-create", "chat", False, lambda u: _openai_chat(u, stream=False)),
        Client("agents-run", "responses", False, lambda u: _agents(u, streamed=False)),
        Client("agents-run-streamed", "responses", True, lambda u: _agents(u, streamed=True)),
        # The follow-up sends only the tool output and the id of the answer it follows.
        Client(
            "agents-run-previous-id",
            "responses",
            False,
            lambda u: _agents(u, streamed=False, previous_id=True),
        ),
        Client("pydantic-ai-run", "responses", False, lambda u: _pydantic_ai(u, streamed=False)),
        Client(
            "pydantic-ai-run-stream", "responses", True, lambda u: _pydantic_ai(u, streamed=True)
        ),
        Client(
            "node-responses-stream", "responses", True, lambda u: _node(u, "create-stream"), True
        ),
        Client("node-responses-helper", "responses", True, lambda u: _node(u, "helper"), True),
    )
}


# -- capturing and serving ---------------------------------------------------------------------


@asynccontextmanager
async def serving(server: ReplayServer) -> AsyncIterator[str]:
    """``server`` on 127.0.0.1 for the block; yields its base URL."""
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            group.cancel_scope.cancel()


async def capture(
    name: str, out: Path, script: dict[str, Any] | None = None
) -> tuple[Path, Outcome]:
    """Run client ``name`` through ``rawloop record`` against the scripted upstream.

    ``script`` replaces ``SCRIPT`` (in the client's dialect). Returns the one
    trace the proxy wrote (in ``out``) and what the client got.
    """
    client = CLIENTS[name]
    turns = {**(script or SCRIPT), "dialect": client.dialect}
    upstream = ReplayServer([script_to_trace(turns)])
    with anyio.fail_after(DEADLINE):
        async with serving(upstream) as upstream_url:
            proxy = RecordingProxy(upstream_url.removesuffix("/v1"), out)
            async with anyio.create_task_group() as group:
                await group.start(proxy.serve)
                try:
                    outcome = await client.run(proxy.url)
                finally:
                    group.cancel_scope.cancel()
    paths = sorted(out.glob("*.jsonl"))
    if len(paths) != 1:
        raise AssertionError(f"{name}: expected one trace in {out}, found {len(paths)}")
    return paths[0], outcome


async def run_against(name: str, trace: Path, **options: Any) -> tuple[Outcome, ReplayServer]:
    """Run client ``name`` against a ``ReplayServer`` serving ``trace`` (with ``options``)."""
    server = ReplayServer([Trace.load(trace)], **options)
    with anyio.fail_after(DEADLINE):
        async with serving(server) as url:
            outcome = await CLIENTS[name].run(url)
    return outcome, server


if __name__ == "__main__":  # make one capture by hand: python -m tests.capture.clients NAME DIR
    print(anyio.run(capture, sys.argv[1], Path(sys.argv[2]))[0])
