"""Events per second of SSE decoding + JSON parsing, on the same bytes, in one run.

Compared, on every input:

* ``floor``: ``b"".join(chunks).split(b"\\n\\n")``, then ``orjson.loads`` of each
  block's ``data:`` line. It ignores chunking, field rules, CR line ends and
  multi-line data: the cheapest parse that is still correct on these streams.
* ``openai+json``: the openai SDK's own decoder (``openai._streaming.SSEDecoder
  .iter_bytes`` over the chunks) and ``json.loads`` of each event's data, which
  is what ``Stream.__stream__`` does before it builds pydantic models (the
  models are not built here).
* ``httpx-sse+json``: an ``httpx.Response`` whose stream yields the chunks,
  read through ``httpx_sse.EventSource(response).iter_sse()``, and
  ``json.loads`` of each event's data.
* ``rawloop decoder+orjson``: ``rawloop.core.sse.SSEDecoder.feed`` per chunk, ``close()``,
  and ``orjson.loads`` of each event's data.
* ``rawloop full``: ``StreamParser("responses")``: ``feed`` per chunk, then
  ``close()``, i.e. decoder + accumulator, producing deltas and a finished Turn.

Every implementation turns each event's data into a Python object; only
``rawloop full`` also folds the events into deltas and a Turn.

Run: ``python bench/bench_parse.py [--json FILE] [--repeats N] [--profile]``.
Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import random
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import orjson
from openai._streaming import SSEDecoder as OpenAISSEDecoder

from rawloop.core.parse import StreamParser
from rawloop.core.sse import SSEDecoder

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
CORPUS_INPUTS = (
    "responses-logprobs-large-1.sse",
    "responses-reasoning-summary-1.sse",
    "responses-large-text-1.sse",
)
NETWORK_CHUNK = 4096
SMALL_CHUNK = 64
DONE = "[DONE]"

Impl = Callable[[list[bytes]], int]


# -- the implementations: each parses every event's data and returns the count --


def floor(chunks: list[bytes]) -> int:
    """Split on blank lines, ``orjson.loads`` the ``data:`` line of each block."""
    loads = orjson.loads
    n = 0
    for block in b"".join(chunks).split(b"\n\n"):
        _, sep, rest = block.partition(b"data: ")
        if not sep:
            continue
        line = rest.partition(b"\n")[0]
        if line != b"[DONE]":
            loads(line)
            n += 1
    return n


def openai_json(chunks: list[bytes]) -> int:
    """The openai SDK decoder, consumed as ``Stream.__stream__`` does, and ``json.loads``."""
    loads = json.loads
    n = 0
    for sse in OpenAISSEDecoder().iter_bytes(iter(chunks)):
        data = sse.data
        if data.startswith(DONE):
            break
        loads(data)
        n += 1
    return n


class _ChunkStream(httpx.SyncByteStream):
    """A response body that yields the given chunks, as a socket read would."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


def httpx_sse_json(chunks: list[bytes]) -> int:
    """httpx-sse over an ``httpx.Response`` streaming the chunks, and ``json.loads``."""
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_ChunkStream(chunks)
    )
    loads = json.loads
    n = 0
    for sse in httpx_sse.EventSource(response).iter_sse():
        data = sse.data
        if data == DONE:
            break
        loads(data)
        n += 1
    response.close()
    return n


def rawloop_decoder(chunks: list[bytes]) -> int:
    """``rawloop.core.sse.SSEDecoder`` and ``orjson.loads`` of each event's data."""
    decoder = SSEDecoder()
    feed = decoder.feed
    loads = orjson.loads
    n = 0
    for chunk in chunks:
        for event in feed(chunk):
            if event.data != DONE:
                loads(event.data)
                n += 1
    for event in decoder.close():
        if event.data != DONE:
            loads(event.data)
            n += 1
    return n


def rawloop_full(chunks: list[bytes]) -> int:
    """``StreamParser("responses")``: decoder + accumulator, deltas and a Turn."""
    parser = StreamParser("responses")
    feed = parser.feed
    for chunk in chunks:
        feed(chunk)
    return parser.close().event_count


def rawloop_turn_only(chunks: list[bytes]) -> int:
    """``StreamParser("responses", deltas=False)``: the Turn without per-fragment deltas.

    This is what the loop runs when no ``on_event`` hook wants the deltas.
    """
    parser = StreamParser("responses", deltas=False)
    feed = parser.feed
    for chunk in chunks:
        feed(chunk)
    return parser.close().event_count


IMPLS: dict[str, Impl] = {
    "floor (split + orjson)": floor,
    "openai SSEDecoder + json": openai_json,
    "httpx-sse + json": httpx_sse_json,
    "rawloop decoder + orjson": rawloop_decoder,
    "rawloop full (Turn)": rawloop_full,
    "rawloop full, no deltas": rawloop_turn_only,
}
FLOOR = "floor (split + orjson)"
OPENAI = "openai SSEDecoder + json"
HTTPX_SSE = "httpx-sse + json"
RAWLOOP_FULL = "rawloop full (Turn)"


# -- input (a): a generated Responses stream -------------------------------------

_PROSE = (
    "the stream of server sent events carries each token as its own delta and "
    "the client joins them back into text while the tool call arguments arrive "
    "in small fragments that only parse once the call is done; naïve parsers "
    "copy every byte twice — café, déjà vu, 東京, 🙂 — and then allocate again"
)
_WORDS = _PROSE.split()


def _obfuscation(rng: random.Random, delta: str) -> str:
    # The API pads short deltas: the corpus has len(delta) + len(obfuscation) ~ 16.
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choices(alphabet, k=max(1, 16 - len(delta))))


def _response(rid: str, status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    # Shape copied from tests/corpus/responses-function-call-1.sse.
    return {
        "id": rid,
        "object": "response",
        "created_at": 1778037182,
        "status": status,
        "background": False,
        "completed_at": 1778037199 if status == "completed" else None,
        "error": None,
        "frequency_penalty": 0.0,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": "gpt-5.5-2026-04-23",
        "moderation": None,
        "output": output,
        "parallel_tool_calls": True,
        "presence_penalty": 0.0,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "prompt_cache_retention": "24h",
        "reasoning": {"effort": "low", "summary": None},
        "safety_identifier": None,
        "service_tier": "default" if status == "completed" else "auto",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [
            {
                "type": "function",
                "description": "Write a file.",
                "name": "write_file",
                "parameters": {
                    "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                    "required": ["path", "content"],
                    "type": "object",
                    "additionalProperties": False,
                },
                "strict": True,
            }
        ],
        "top_logprobs": 0,
        "top_p": 0.98,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _message(msg_id: str, text: str) -> dict[str, Any]:
    """The finished assistant message item holding ``text``."""
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {
        "id": msg_id,
        "type": "message",
        "status": "completed",
        "content": [part],
        "phase": "final_answer",
        "role": "assistant",
    }


def _message_events(
    rng: random.Random, message: dict[str, Any], tokens: list[str]
) -> list[dict[str, Any]]:
    """The events of ``message`` (output index 0): opened, one output_text.delta per
    token, closed."""
    msg_id, part_done = message["id"], message["content"][0]
    payloads: list[dict[str, Any]] = [
        {
            "type": "response.output_item.added",
            "item": {**message, "status": "in_progress", "content": []},
            "output_index": 0,
        },
        {
            "type": "response.content_part.added",
            "content_index": 0,
            "item_id": msg_id,
            "output_index": 0,
            "part": {**part_done, "text": ""},
        },
    ]
    for token in tokens:
        payloads.append(
            {
                "type": "response.output_text.delta",
                "content_index": 0,
                "delta": token,
                "item_id": msg_id,
                "logprobs": [],
                "obfuscation": _obfuscation(rng, token),
                "output_index": 0,
            }
        )
    payloads += [
        {
            "type": "response.output_text.done",
            "content_index": 0,
            "item_id": msg_id,
            "logprobs": [],
            "output_index": 0,
            "text": part_done["text"],
        },
        {
            "type": "response.content_part.done",
            "content_index": 0,
            "item_id": msg_id,
            "output_index": 0,
            "part": part_done,
        },
        {"type": "response.output_item.done", "item": message, "output_index": 0},
    ]
    return payloads


def _sse(payloads: list[dict[str, Any]]) -> bytes:
    """The stream of ``payloads``, numbered in order (``sequence_number``)."""
    blocks = []
    for seq, payload in enumerate(payloads):
        payload["sequence_number"] = seq
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        blocks.append(f"event: {payload['type']}\ndata: {data}\n\n")
    return "".join(blocks).encode()


@dataclass
class Synthetic:
    body: bytes
    text: str
    arguments: str
    events: int


def generate_stream(text_deltas: int = 5000, argument_deltas: int = 1000) -> Synthetic:
    """A Responses stream: one message of ``text_deltas`` output_text.delta events,
    then one function call of ``argument_deltas`` function_call_arguments.delta events,
    with the event shapes of the recorded corpus."""
    rng = random.Random(20260505)
    rid = "resp_0bench0000000000000000000000000000000000000000000000"
    msg_id = "msg_0bench0000000000000000000000000000000000000000000000"
    fc_id = "fc_0bench00000000000000000000000000000000000000000000000"
    call_id = "call_bEnChMaRkCaLlId0000000"

    tokens = [(" " if i else "") + rng.choice(_WORDS) for i in range(text_deltas)]
    text = "".join(tokens)
    content = ""
    while len(content) < argument_deltas * 3:
        content += " " + rng.choice(_WORDS)
    arguments = json.dumps({"path": "notes.md", "content": content.strip()}, ensure_ascii=False)
    cuts = sorted(rng.sample(range(1, len(arguments)), argument_deltas - 1))
    fragments = [arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)])]

    message = _message(msg_id, text)
    call = {
        "id": fc_id,
        "type": "function_call",
        "status": "completed",
        "arguments": arguments,
        "call_id": call_id,
        "name": "write_file",
    }
    usage = {
        "input_tokens": 58,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": text_deltas + argument_deltas,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 58 + text_deltas + argument_deltas,
    }

    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(rid, "in_progress", [], None)},
        {"type": "response.in_progress", "response": _response(rid, "in_progress", [], None)},
        *_message_events(rng, message, tokens),
        {
            "type": "response.output_item.added",
            "item": {**call, "status": "in_progress", "arguments": ""},
            "output_index": 1,
        },
    ]
    for fragment in fragments:
        payloads.append(
            {
                "type": "response.function_call_arguments.delta",
                "delta": fragment,
                "item_id": fc_id,
                "obfuscation": _obfuscation(rng, fragment),
                "output_index": 1,
            }
        )
    payloads += [
        {
            "type": "response.function_call_arguments.done",
            "arguments": arguments,
            "item_id": fc_id,
            "output_index": 1,
        },
        {"type": "response.output_item.done", "item": call, "output_index": 1},
        {
            "type": "response.completed",
            "response": _response(rid, "completed", [message, call], usage),
        },
    ]
    return Synthetic(_sse(payloads), text, arguments, len(payloads))


# -- measurement ------------------------------------------------------------------


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass
class Case:
    name: str
    data: bytes
    chunk_size: int
    chunks: list[bytes] = field(init=False)
    events: int = 0
    best: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.chunks = chunked(self.data, self.chunk_size)


def _time(fn: Impl, chunks: list[bytes], loops: int) -> float:
    """Seconds per pass. The closing ``gc.collect()`` is timed: garbage that only the
    cycle collector can free is paid for by the implementation that made it."""
    start = time.perf_counter()
    for _ in range(loops):
        fn(chunks)
    gc.collect()
    return (time.perf_counter() - start) / loops


def run_case(case: Case, repeats: int, min_time: float) -> None:
    """Warm up and check every implementation, then time them round-robin.

    Each sample runs the whole stream ``loops`` times (enough for ``min_time``
    seconds); the reported time is the best sample, per pass over the stream.
    The garbage collector stays on, as in real use; ``main`` freezes the heap
    built before timing so that collections only see what the parsers made.
    """
    loops: dict[str, int] = {}
    for name, fn in IMPLS.items():
        count = fn(case.chunks)  # warm-up, and a sanity check of the parse
        if case.events == 0:
            case.events = count
        elif count != case.events:
            raise RuntimeError(f"{name} parsed {count} events, expected {case.events}")
        once = _time(fn, case.chunks, 1)
        loops[name] = max(1, math.ceil(min_time / once)) if once < min_time else 1
        case.samples[name] = []
    gc.collect()
    for _ in range(repeats):
        for name, fn in IMPLS.items():
            case.samples[name].append(_time(fn, case.chunks, loops[name]))
    case.best = {name: min(s) for name, s in case.samples.items()}


# -- output -----------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("rawloop", "orjson", "openai", "httpx-sse", "httpx"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "?"
    return found


RATIO_NOTE = (
    "Ratios are this row's events/s divided by the reference's events/s "
    "(= reference time / this row's time): above 1x is faster than the reference, "
    'so "0.6x" under *vs floor* means 60% of the floor\'s throughput.'
)


def table(case: Case) -> str:
    size = f"{len(case.data) / 1e6:.2f} MB" if len(case.data) >= 1e5 else f"{len(case.data)} B"
    lines = [
        f"### {case.name}: {case.events} events, {size}, {case.chunk_size}-byte chunks",
        "",
        "| implementation | events/s | MB/s | vs httpx-sse+json | vs openai+json | vs floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in IMPLS:
        t = case.best[name]
        lines.append(
            f"| {name} | {case.events / t:,.0f} | {len(case.data) / t / 1e6:,.1f} "
            f"| {case.best[HTTPX_SSE] / t:.2f}x | {case.best[OPENAI] / t:.2f}x "
            f"| {case.best[FLOOR] / t:.2f}x |"
        )
    return "\n".join(lines)


def report(cases: list[Case], repeats: int, min_time: float) -> str:
    v = versions()
    head = [
        "## SSE parse throughput",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs; "
        f"best of {repeats} samples of >= {min_time * 1000:.0f} ms each.",
        "",
        RATIO_NOTE,
    ]
    return "\n".join([*head, "", "\n\n".join(table(c) for c in cases)])


def as_json(cases: list[Case], repeats: int, min_time: float) -> dict[str, Any]:
    return {
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "repeats": repeats,
        "min_time_s": min_time,
        "cases": [
            {
                "input": c.name,
                "bytes": len(c.data),
                "chunk_size": c.chunk_size,
                "chunks": len(c.chunks),
                "events": c.events,
                "results": {
                    name: {
                        "best_s": c.best[name],
                        "events_per_s": c.events / c.best[name],
                        "samples_s": c.samples[name],
                    }
                    for name in IMPLS
                },
            }
            for c in cases
        ],
    }


def check_synthetic(stream: Synthetic, chunks: list[bytes]) -> None:
    """The generated stream must parse to the text and call it was built from."""
    parser = StreamParser("responses")
    for chunk in chunks:
        parser.feed(chunk)
    turn = parser.close()
    problems = []
    if turn.status != "completed" or turn.warnings:
        problems.append(f"status {turn.status!r}, warnings {turn.warnings}")
    if turn.text != stream.text:
        problems.append("text differs")
    if [c.arguments for c in turn.calls] != [stream.arguments]:
        problems.append("call arguments differ")
    if turn.event_count != stream.events:
        problems.append(f"{turn.event_count} events, generated {stream.events}")
    if problems:
        raise RuntimeError("generated stream does not round-trip: " + "; ".join(problems))


def profile(chunks: list[bytes], passes: int, limit: int) -> None:
    """cProfile of ``rawloop full`` over the chunks, ``passes`` times."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(passes):
        rawloop_full(chunks)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    print(f"# rawloop full, {passes} passes over {len(chunks)} chunks: by own time")
    stats.sort_stats("tottime").print_stats(limit)
    print("# the same, rawloop functions only, by cumulative time")
    stats.sort_stats("cumulative").print_stats(r"rawloop[/\\]", limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--json", metavar="FILE", type=Path, help="also write the raw numbers here")
    ap.add_argument("--repeats", type=int, default=7, help="samples per cell (default 7)")
    ap.add_argument(
        "--min-time", type=float, default=0.05, help="seconds per sample, at least (default 0.05)"
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="instead of the tables, cProfile rawloop full on the generated stream",
    )
    args = ap.parse_args(argv)

    stream = generate_stream()
    synthetic = "generated Responses stream (a)"
    check_synthetic(stream, chunked(stream.body, NETWORK_CHUNK))
    check_synthetic(stream, chunked(stream.body, 7))

    if args.profile:
        profile(chunked(stream.body, NETWORK_CHUNK), passes=10, limit=30)
        return 0

    cases = [
        Case(synthetic, stream.body, NETWORK_CHUNK),
        Case(synthetic, stream.body, SMALL_CHUNK),
    ]
    cases += [Case(name, (CORPUS / name).read_bytes(), NETWORK_CHUNK) for name in CORPUS_INPUTS]

    # Move the imported modules and the inputs out of the collector's sight: a full
    # collection then costs what the parsers left behind, not ~80k objects of openai.
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for case in cases:
        print(f"timing {case.name} @ {case.chunk_size} B ...", file=sys.stderr, flush=True)
        run_case(case, args.repeats, args.min_time)
    print(f"done in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    print(report(cases, args.repeats, args.min_time))
    if args.json:
        args.json.write_text(json.dumps(as_json(cases, args.repeats, args.min_time), indent=2))
        print(f"\nraw numbers written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
