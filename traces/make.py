"""Regenerate the bundled traces: each one is the recorder's output of a real Loop run.

The model side is real captured streams from tests/corpus (see its MANIFEST),
served through a scripted transport; the tools are real Python functions.
Run from the repository root: ``python traces/make.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from rawloop import Loop, LoopState, RetryPolicy, tool
from rawloop.replay.scripted import Reply, ScriptedAPI

HERE = Path(__file__).parent
CORPUS = HERE.parent / "tests" / "corpus"


def stream(name: str, **kwargs: Any) -> Reply:
    return Reply((CORPUS / name).read_bytes(), **kwargs)


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


@tool
def get_current_weather(location: str, unit: str = "celsius") -> str:
    """Get the current weather in a given location."""
    return f"{location}: 18 degrees {unit}, light rain"


class ShortenResults:
    """A breakpoint hook that rewrites a tool result before it is sent: the edit lands in the trace."""

    def on_breakpoint(self, state: LoopState) -> None:
        for result in state.results:
            result.output = f"{result.output} (checked by a human)"


async def record(
    name: str, replies: list[Reply], run: Callable[[Loop], Awaitable[Any]], **loop_kwargs: Any
) -> None:
    api = ScriptedAPI(replies)
    loop = Loop(
        loop_kwargs.pop("model", "gpt-5.5"),
        http_client=api.client(),
        api_key="sk-example-not-a-real-key",
        retries=RetryPolicy(max_retries=2, initial_delay=0.05),
        **loop_kwargs,
    )
    path = HERE / name
    await run(loop)
    print(f"wrote {path.relative_to(HERE.parent)}")


async def main() -> None:
    ask = "What is 1231 * 2331? Use the multiply tool."
    await record(
        "tool-roundtrip.jsonl",
        [
            stream("responses-function-call-1.sse", chunk_size=300),
            stream("responses-text-after-tool-1.sse", chunk_size=300),
        ],
        lambda loop: loop.run(ask, trace=HERE / "tool-roundtrip.jsonl"),
        tools=[multiply],
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        store=False,
    )
    await record(
        "parallel-tools.jsonl",
        [
            stream("chat-parallel-tools-1.sse", chunk_size=200),
            stream("chat-text-usage-1.sse", chunk_size=200),
        ],
        lambda loop: loop.run(
            "What's the weather in Seattle and San Francisco?", trace=HERE / "parallel-tools.jsonl"
        ),
        model="gpt-4o-mini",
        dialect="chat",
        tools=[get_current_weather],
    )
    await record(
        "chat-run.jsonl",
        [
            stream("chat-tool-call-1.sse", chunk_size=256),
            stream("chat-text-after-tool-1.sse", chunk_size=256),
        ],
        lambda loop: loop.run("What is 1231 * 2331?", trace=HERE / "chat-run.jsonl"),
        model="gpt-4o-mini",
        dialect="chat",
        tools=[multiply],
    )
    minimal = (CORPUS / "responses-text-minimal-1.sse").read_bytes()
    await record(
        "retry-after-cut.jsonl",
        [
            Reply(
                b'{"error": {"message": "Rate limit reached", "type": "requests"}}',
                status=429,
                headers={"retry-after-ms": "50", "x-request-id": "req_example_429"},
            ),
            stream("responses-text-minimal-1.sse", chunk_size=700, cut_after=len(minimal) // 2),
            stream("responses-text-minimal-1.sse", chunk_size=700),
        ],
        lambda loop: loop.run("ping", trace=HERE / "retry-after-cut.jsonl"),
    )
    await record(
        "breakpoint-edit.jsonl",
        [
            stream("responses-function-call-1.sse", chunk_size=300),
            stream("responses-text-after-tool-1.sse", chunk_size=300),
        ],
        lambda loop: loop.run(ask, trace=HERE / "breakpoint-edit.jsonl"),
        tools=[multiply],
        hooks=[ShortenResults()],
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        store=False,
    )


if __name__ == "__main__":
    anyio.run(main)
