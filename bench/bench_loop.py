"""Per-event cost of a whole loop iteration, on the same stream and the same mock transport.

Every row reads one generated Responses text stream (~5000 ``output_text.delta``
events) cut into 4096-byte chunks, served by an ``httpx.MockTransport`` whose
async handler returns a fresh ``httpx.Response`` (an async iterator over the
chunks) per request. Rows:

* ``httpx read``: ``client.stream("POST", ...)`` and ``aiter_bytes()`` to the end:
  the transport alone, no parsing.
* ``rawloop parse``: ``StreamParser("responses")`` ``feed`` per chunk, ``close()``,
  on the chunks in memory: no I/O at all (the floor of the loop).
* ``httpx read + rawloop parse``: the two above together, the loop's floor with I/O.
* ``rawloop Loop``: ``await Loop("m", http_client=..., api_key="sk-x").run("hi")``,
  one iteration (the stream has no tool call), with no hooks, an ``on_event``
  observer that does nothing, an ``on_chunk`` one, and ``run(trace=...)``
  (a ``TraceRecorder`` writing to a temporary file).
* ``openai SDK``: ``await client.responses.create(model="m", input="hi", stream=True)``
  and ``async for`` over every event (one pydantic model per event).
* ``openai-agents``: ``Runner.run_streamed(agent, "hi")`` with an
  ``OpenAIResponsesModel`` over that same ``AsyncOpenAI`` client, tracing
  disabled, ``stream_events()`` to the end.

Before timing, each row is run once and checked: one request was sent, every
event arrived and the text equals the generated text (the hooks and the trace
are checked too). Each sample is one ``asyncio.run`` (event loop start-up is not
timed) repeating the row until ``--min-time`` has passed, then a timed
``gc.collect()``. Rows are sampled in ``--repeats`` rounds; in each round the
two slow rows (SDK, agents) are sampled once and the fast rows before, between
and after them (3 samples each). The best sample is reported, and the median
next to it. Times are printed, never asserted.

Run: ``python bench/bench_loop.py [--json FILE] [--repeats N] [--min-time S]``, or
``--profile [loop|on_event|on_chunk|trace]`` for a cProfile of one rawloop row.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from bench_parse import _WORDS, _message, _message_events, _response, _sse, chunked

from rawloop import Loop
from rawloop.core.parse import StreamParser
from rawloop.loop.hooks import ChunkInfo, EventInfo
from rawloop.trace.format import Trace, chunk_bytes

NETWORK_CHUNK = 4096
TEXT_DELTAS = 5000
BASE_URL = "http://test/v1"


# -- the stream ----------------------------------------------------------------------


@dataclass
class TextStream:
    body: bytes
    text: str
    events: int
    deltas: int
    chunks: list[bytes] = field(default_factory=list)


def generate_text_stream(text_deltas: int = TEXT_DELTAS) -> TextStream:
    """A Responses stream of one assistant message and no tool call: created,
    in_progress, the item and part openers, ``text_deltas`` output_text.delta
    events, the closers and ``response.completed`` (shapes as in bench_parse.py)."""
    rng = random.Random(20260506)
    rid = "resp_0loop00000000000000000000000000000000000000000000000"
    msg_id = "msg_0loop00000000000000000000000000000000000000000000000"
    tokens = [(" " if i else "") + rng.choice(_WORDS) for i in range(text_deltas)]
    text = "".join(tokens)
    message = _message(msg_id, text)
    usage = {
        "input_tokens": 8,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": text_deltas,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8 + text_deltas,
    }

    def response(status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        body = _response(rid, status, output, usage)
        body["tools"] = []  # this stream calls no tool and declares none
        return body

    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": response("in_progress", [], None)},
        {"type": "response.in_progress", "response": response("in_progress", [], None)},
        *_message_events(rng, message, tokens),
        {"type": "response.completed", "response": response("completed", [message], usage)},
    ]
    body = _sse(payloads)
    return TextStream(body, text, len(payloads), len(tokens), chunked(body, NETWORK_CHUNK))


#: The path of every request the mock transports answered (the checks count them).
REQUESTS: list[str] = []


def mock_transport(chunks: list[bytes]) -> httpx.MockTransport:
    """Answers every request with a fresh streamed 200 whose body yields ``chunks``."""

    async def handler(request: httpx.Request) -> httpx.Response:
        REQUESTS.append(request.url.path)

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return httpx.MockTransport(handler)


def mock_client(stream: TextStream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=mock_transport(stream.chunks))


# -- the rows ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run saw: events (or chunks) received, the text, anything else checked."""

    events: int
    text: str | None = None
    problems: list[str] = field(default_factory=list)


Run = Callable[[], Coroutine[Any, Any, Outcome]]


class NoopEventHook:
    """An observer on every event that does nothing."""

    def on_event(self, info: EventInfo) -> None:
        pass


class NoopChunkHook:
    """An observer on every chunk that does nothing."""

    def on_chunk(self, info: ChunkInfo) -> None:
        pass


def httpx_read(stream: TextStream) -> Run:
    client = mock_client(stream)

    async def run() -> Outcome:
        size = chunks = 0
        async with client.stream("POST", BASE_URL + "/responses", content=b"{}") as response:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                chunks += 1
        problems = [] if size == len(stream.body) else [f"{size} bytes, sent {len(stream.body)}"]
        if chunks != len(stream.chunks):
            problems.append(f"{chunks} chunks, sent {len(stream.chunks)}")
        # No parsing here: the event count is the stream's, for the per-event rate.
        return Outcome(stream.events, problems=problems)

    return run


def bare_parse(stream: TextStream) -> Run:
    chunks = stream.chunks

    async def run() -> Outcome:
        parser = StreamParser("responses")
        feed = parser.feed
        for chunk in chunks:
            feed(chunk)
        turn = parser.close()
        return Outcome(turn.event_count, turn.text)

    return run


def httpx_read_parse(stream: TextStream) -> Run:
    client = mock_client(stream)

    async def run() -> Outcome:
        parser = StreamParser("responses")
        feed = parser.feed
        async with client.stream("POST", BASE_URL + "/responses", content=b"{}") as response:
            async for chunk in response.aiter_bytes():
                feed(chunk)
        turn = parser.close()
        return Outcome(turn.event_count, turn.text)

    return run


def rawloop_loop(stream: TextStream, hooks: tuple[Any, ...] = (), trace: Path | None = None) -> Run:
    loop = Loop(
        "m", http_client=mock_client(stream), api_key="sk-x", base_url=BASE_URL, hooks=hooks
    )

    async def run() -> Outcome:
        result = await loop.run("hi", trace=trace)
        problems = []
        if result.stop_reason != "completed" or result.iterations != 1:
            problems.append(f"stop {result.stop_reason!r} after {result.iterations} iterations")
        return Outcome(result.turns[0].event_count if result.turns else 0, result.text, problems)

    return run


def openai_client(stream: TextStream) -> Any:
    """An ``AsyncOpenAI`` over the mock transport. openai 3.x sends with ``httpx2`` by
    default and takes an ``httpx.AsyncClient`` as is (its "legacy httpx" path), so
    the SDK reads through the very same kind of transport as rawloop."""
    import openai

    return openai.AsyncOpenAI(
        api_key="sk-x",
        base_url=BASE_URL,
        http_client=mock_client(stream),  # type: ignore[arg-type,unused-ignore]
    )


def openai_sdk(stream: TextStream) -> Run:
    client = openai_client(stream)

    async def run() -> Outcome:
        events = 0
        parts: list[str] = []
        last = None
        response = await client.responses.create(model="m", input="hi", stream=True)
        async for event in response:
            events += 1
            if event.type == "response.output_text.delta":
                parts.append(event.delta)
            last = event
        problems = []
        if last is None or last.type != "response.completed":
            problems.append(f"last event {getattr(last, 'type', None)!r}")
        return Outcome(events, "".join(parts), problems)

    return run


def openai_agents(stream: TextStream) -> Run:
    from agents import Agent, Runner, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel

    set_tracing_disabled(True)
    client = openai_client(stream)
    agent = Agent(name="bench", model=OpenAIResponsesModel(model="m", openai_client=client))

    async def run() -> Outcome:
        raw = other = 0
        result = Runner.run_streamed(agent, "hi")
        async for event in result.stream_events():
            if event.type == "raw_response_event":
                raw += 1
            else:
                other += 1
        problems = []
        if not result.is_complete:
            problems.append("run not complete")
        if other == 0:
            problems.append("no run-item events")
        output = result.final_output
        return Outcome(raw, output if isinstance(output, str) else repr(output), problems)

    return run


HTTPX = "httpx read (transport only)"
PARSE = "rawloop parse (no I/O)"
HTTPX_PARSE = "httpx read + rawloop parse"
LOOP = "rawloop Loop, no hooks"
LOOP_EVENT = "rawloop Loop, on_event no-op"
LOOP_CHUNK = "rawloop Loop, on_chunk no-op"
LOOP_TRACE = "rawloop Loop, TraceRecorder"
SDK = "openai SDK responses.create"
AGENTS = "openai-agents Runner.run_streamed"
ROWS = (HTTPX, PARSE, HTTPX_PARSE, LOOP, LOOP_EVENT, LOOP_CHUNK, LOOP_TRACE, SDK, AGENTS)


def build_rows(stream: TextStream, trace_path: Path) -> tuple[dict[str, Run], dict[str, str]]:
    """The runnable rows, and for each row that could not be built, why."""
    rows: dict[str, Run] = {
        HTTPX: httpx_read(stream),
        PARSE: bare_parse(stream),
        HTTPX_PARSE: httpx_read_parse(stream),
        LOOP: rawloop_loop(stream),
        LOOP_EVENT: rawloop_loop(stream, hooks=(NoopEventHook(),)),
        LOOP_CHUNK: rawloop_loop(stream, hooks=(NoopChunkHook(),)),
        LOOP_TRACE: rawloop_loop(stream, trace=trace_path),
    }
    missing: dict[str, str] = {}
    for name, factory in ((SDK, openai_sdk), (AGENTS, openai_agents)):
        try:
            rows[name] = factory(stream)
        except ImportError as exc:
            missing[name] = f"not installed: {exc}"
    return rows, missing


# -- checks --------------------------------------------------------------------------


def check(name: str, outcome: Outcome, stream: TextStream) -> list[str]:
    problems = list(outcome.problems)
    if outcome.events != stream.events:
        problems.append(f"{outcome.events} events, generated {stream.events}")
    if outcome.text is not None and outcome.text != stream.text:
        problems.append(f"text differs ({len(outcome.text)} chars, generated {len(stream.text)})")
    if name != HTTPX and outcome.text is None:
        problems.append("no text to compare")
    return problems


class _Count:
    def __init__(self) -> None:
        self.events = 0
        self.chunks = bytearray()

    def on_event(self, info: EventInfo) -> None:
        self.events += 1

    def on_chunk(self, info: ChunkInfo) -> None:
        self.chunks += info.data


async def check_hooks(stream: TextStream, trace_path: Path) -> list[str]:
    """The hook rows' hooks do nothing, so count with a hook of the same kind, and
    read the recorded trace back: every event and every byte must have been seen."""
    problems = []
    counter = _Count()
    loop = Loop("m", http_client=mock_client(stream), api_key="sk-x", base_url=BASE_URL)
    await loop.run("hi", hooks=[counter])
    if counter.events != stream.events:
        problems.append(f"on_event saw {counter.events} events, generated {stream.events}")
    if bytes(counter.chunks) != stream.body:
        problems.append("on_chunk did not see the body's bytes")
    await loop.run("hi", trace=trace_path)
    trace = Trace.load(trace_path)
    chunks = [chunk_bytes(r.data) for r in trace.of_kind("chunk")]
    if len(chunks) != len(stream.chunks) or b"".join(chunks) != stream.body:
        problems.append(f"the trace holds {len(chunks)} chunks, not the {len(stream.chunks)} sent")
    return problems


# -- measurement ---------------------------------------------------------------------


async def _timed(run: Run, loops: int) -> float:
    """Seconds per run. The closing ``gc.collect()`` is timed, as in bench_parse.py."""
    start = time.perf_counter()
    for _ in range(loops):
        await run()
    gc.collect()
    return (time.perf_counter() - start) / loops


def sample(run: Run, loops: int) -> float:
    """One sample in a fresh event loop; starting and closing the loop is not timed."""
    return asyncio.run(_timed(run, loops))


@dataclass
class Results:
    events: int
    best: dict[str, float] = field(default_factory=dict)
    median: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    loops: dict[str, int] = field(default_factory=dict)


def schedule(rows: dict[str, Run], loops: dict[str, int]) -> list[str]:
    """One round: every slow row (one run fills a sample) once, and the fast rows
    before, between and after them. The fast rows, whose small differences are the
    point, get more samples for the same wall time, spread across the round."""
    fast = [name for name in rows if loops[name] > 1]
    slow = [name for name in rows if loops[name] == 1]
    order = list(fast)
    for name in slow:
        order += [name, *fast]
    return order


def measure(rows: dict[str, Run], events: int, repeats: int, min_time: float) -> Results:
    results = Results(events)
    for name, run in rows.items():
        once = sample(run, 1)
        results.loops[name] = max(2, math.ceil(min_time / once)) if once < min_time else 1
        results.samples[name] = []
    order = schedule(rows, results.loops)
    gc.collect()
    for i in range(repeats):
        print(f"  round {i + 1}/{repeats}", file=sys.stderr, flush=True)
        for name in order:
            results.samples[name].append(sample(rows[name], results.loops[name]))
    results.best = {name: min(s) for name, s in results.samples.items()}
    results.median = {name: statistics.median(s) for name, s in results.samples.items()}
    return results


# -- output --------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("rawloop", "httpx", "anyio", "orjson", "openai", "openai-agents", "pydantic"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "?"
    return found


def _ratio(best: dict[str, float], ref: str, t: float) -> str:
    return f"{best[ref] / t:.2f}x" if ref in best else "n/a"


def report(
    stream: TextStream, res: Results, missing: dict[str, str], repeats: int, min_time: float
) -> str:
    best, n = res.best, res.events
    us = {name: t / n * 1e6 for name, t in best.items()}
    counts = sorted({len(s) for s in res.samples.values()})
    lines = [
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{repeats} rounds, {' or '.join(map(str, counts))} samples per row "
        f"of >= {min_time * 1000:.0f} ms each; best sample reported.",
        "",
        f"Stream: {n} events ({stream.deltas} response.output_text.delta), "
        f"{len(stream.body) / 1e6:.2f} MB, {len(stream.chunks)} chunks of {NETWORK_CHUNK} bytes; "
        "one request per run.",
        "",
        "Ratios are the reference's time over this row's (= this row's events/s over the "
        "reference's): above 1x is faster than the reference.",
        "",
        "| implementation | events/s | µs/event | median µs/event | vs Loop (no hooks) "
        "| vs openai SDK | vs openai-agents |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ROWS:
        if name in missing:
            lines.append(f"| {name} | not run (see below) | | | | | |")
            continue
        t = best[name]
        lines.append(
            f"| {name} | {n / t:,.0f} | {us[name]:.2f} | {res.median[name] / n * 1e6:.2f} "
            f"| {_ratio(best, LOOP, t)} | {_ratio(best, SDK, t)} | {_ratio(best, AGENTS, t)} |"
        )

    def over(name: str, ref: str) -> str:
        return f"{us[name] - us[ref]:+.2f} µs/event ({(best[name] / best[ref] - 1) * 100:+.1f}%)"

    lines += [
        "",
        "Overheads, per event (from the best samples):",
        "",
        f"* no-hook Loop over the bare parse: {over(LOOP, PARSE)} (target: < +5%)",
        f"  * the httpx mock transport alone reads the stream in {us[HTTPX]:.2f} µs/event; "
        f"httpx read + parse is {over(HTTPX_PARSE, PARSE)} over the bare parse",
        f"  * the Loop's own cost (no-hook Loop over httpx read + parse): "
        f"{over(LOOP, HTTPX_PARSE)}",
        f"* on_event no-op hook over no hooks: {over(LOOP_EVENT, LOOP)}",
        f"* on_chunk no-op hook over no hooks: {over(LOOP_CHUNK, LOOP)}",
        f"* TraceRecorder over no hooks: {over(LOOP_TRACE, LOOP)}",
    ]
    for name, why in missing.items():
        lines.append(f"* {name}: not run: {why}")
    return "\n".join(lines)


def as_json(
    stream: TextStream, res: Results, missing: dict[str, str], repeats: int, min_time: float
) -> dict[str, Any]:
    return {
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "repeats": repeats,
        "min_time_s": min_time,
        "stream": {
            "bytes": len(stream.body),
            "events": stream.events,
            "text_deltas": stream.deltas,
            "chunk_size": NETWORK_CHUNK,
            "chunks": len(stream.chunks),
        },
        "results": {
            name: {
                "best_s": res.best[name],
                "median_s": res.median[name],
                "events_per_s": res.events / res.best[name],
                "runs_per_sample": res.loops[name],
                "samples_s": res.samples[name],
            }
            for name in res.best
        },
        "not_run": missing,
    }


PROFILE_ROWS = {"loop": LOOP, "on_event": LOOP_EVENT, "on_chunk": LOOP_CHUNK, "trace": LOOP_TRACE}


def profile(name: str, run: Run, runs: int, limit: int) -> None:
    """cProfile of one row, ``runs`` times in one event loop (after one warm-up run)."""
    asyncio.run(run())

    async def many() -> None:
        for _ in range(runs):
            await run()

    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(many())
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    print(f"# {name}, {runs} runs: by own time")
    stats.sort_stats("tottime").print_stats(limit)
    print("# rawloop functions only, by cumulative time")
    stats.sort_stats("cumulative").print_stats(r"rawloop[/\\]", limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the raw numbers here")
    ap.add_argument("--repeats", type=int, default=7, help="rounds of samples (default 7)")
    ap.add_argument(
        "--min-time", type=float, default=0.1, help="seconds per sample, at least (default 0.1)"
    )
    ap.add_argument(
        "--profile",
        nargs="?",
        const="loop",
        choices=sorted(PROFILE_ROWS),
        help="instead of the table, cProfile a rawloop Loop row (default: loop, no hooks)",
    )
    args = ap.parse_args(argv)

    stream = generate_text_stream()
    with tempfile.TemporaryDirectory(prefix="rawloop-bench-") as tmp:
        trace_path = Path(tmp) / "trace.jsonl"
        rows, missing = build_rows(stream, trace_path)
        if args.profile:
            name = PROFILE_ROWS[args.profile]
            profile(name, rows[name], runs=20, limit=40)
            return 0

        # Warm-up, and the checks: a row that lost an event or a byte is not timed.
        # A rawloop row that fails stops the script; an SDK or agents row that cannot
        # run here is left out, and the report says why.
        problems = asyncio.run(check_hooks(stream, trace_path))
        for name, run in list(rows.items()):
            REQUESTS.clear()
            try:
                found = check(name, asyncio.run(run()), stream)
                sent, expected = list(REQUESTS), [] if name == PARSE else ["/v1/responses"]
                if sent != expected:
                    found.append(f"sent {sent}, expected {expected}")
            except Exception as exc:
                if name not in (SDK, AGENTS):
                    raise
                found = [f"raised {type(exc).__name__}: {exc}"]
            if found and name in (SDK, AGENTS):
                missing[name] = "; ".join(found)
                del rows[name]
            else:
                problems += [f"{name}: {p}" for p in found]
        if problems:
            raise SystemExit("check failed:\n  " + "\n  ".join(problems))
        for name, why in missing.items():
            print(f"{name}: not timed: {why}", file=sys.stderr)

        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        print(f"timing {len(rows)} rows ...", file=sys.stderr, flush=True)
        res = measure(rows, stream.events, args.repeats, args.min_time)
        print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    print(report(stream, res, missing, args.repeats, args.min_time))
    if args.json:
        args.json.write_text(
            json.dumps(as_json(stream, res, missing, args.repeats, args.min_time), indent=2)
        )
        print(f"\nraw numbers written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
