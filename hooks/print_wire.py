"""Print the wire to stderr: each request, each response status, and the raw SSE chunks.

Load it with ``rawloop run --hook hooks/print_wire.py ...`` (or pass the module
to ``Loop(hooks=[...])``). What it prints, as things happen:

    >>> POST https://api.openai.com/v1/responses  (iteration 0, attempt 0)
        content-type: application/json
        model gpt-5.5, 412 bytes, 1 input item, 1 tool
    <<< 200 OK  (request id req_abc, 0.412 s)
        content-type: text/event-stream
    event: response.created
    data: {"type":"response.created",...}
    ...

Headers other than ``content-type`` are never printed (the request headers
reach hooks already redacted, but there is nothing to learn from them here),
and anything shaped like an API key or a bearer token is replaced in every
printed line (``rawloop.core.redact``). The body goes through a
``ChunkRedactor``, so a key split across two chunks is caught too: a chunk
whose end could be the start of a key is printed with the next one.

Environment variables (read at each call, so they can change between runs):

``RAWLOOP_WIRE_CHUNKS``
    How to print the response body. ``text`` (the default): the bytes decoded
    as UTF-8 and written as they arrive, so the stream reads as it was sent
    (a character split across two chunks is printed whole, with the second).
    ``repr``: one line per chunk with its byte offset, size and arrival time
    and its bytes as a Python literal, which shows chunk boundaries, ``\\r``
    and invalid UTF-8. ``off``: no body, only the summaries. Any other value
    is reported once and treated as ``text``.
``RAWLOOP_WIRE_BODY``
    ``1`` to also print each request's JSON body, indented (default: off).
"""

from __future__ import annotations

import codecs
import http
import os
import sys
from collections import deque

import orjson

from rawloop.core.redact import redact_json, redact_text
from rawloop.core.redact_stream import ChunkRedactor
from rawloop.core.words import plural
from rawloop.loop.hooks import ChunkInfo, EndInfo, ErrorInfo, RequestInfo, ResponseInfo

_CHUNK_MODES = ("text", "repr", "off")

# The text decoder of the body being printed, and whether the output is at a line start.
_decoder: codecs.IncrementalDecoder | None = None
_at_line_start = True
_warned_mode: str | None = None
# The body's key scan, and what the chunks it holds back were (mode, offset, size, time).
_redactor = ChunkRedactor()
_held: deque[tuple[str, int, int, float]] = deque()


def _write(text: str) -> None:
    global _at_line_start
    if not text:
        return
    stream = sys.stderr  # looked up each time: a test or the CLI may swap it
    stream.write(text)
    stream.flush()
    _at_line_start = text.endswith("\n")


def _line(text: str) -> None:
    """Write one line (keys redacted), starting a new one first if a body left the cursor mid-line."""
    _write(("" if _at_line_start else "\n") + redact_text(text) + "\n")


def _chunk_mode() -> str:
    global _warned_mode
    mode = os.environ.get("RAWLOOP_WIRE_CHUNKS", "text").strip().lower() or "text"
    if mode in _CHUNK_MODES:
        return mode
    if _warned_mode != mode:  # say it once, not once per chunk
        _warned_mode = mode
        _line(
            f"print_wire: RAWLOOP_WIRE_CHUNKS={mode!r} is not one of {', '.join(_CHUNK_MODES)}; using text"
        )
    return "text"


def _print_body(pieces: list[bytes]) -> None:
    """Print chunks the key scan released, each as the mode it arrived in asks."""
    global _decoder
    for data in pieces:
        mode, offset, size, elapsed = _held.popleft()
        if mode == "repr":
            _line(f"    [{offset}+{size} at {elapsed:.3f} s] {data!r}")
            continue
        if _decoder is None:  # a chunk with no request seen (the hook was added mid-run)
            _decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        _write(_decoder.decode(data))  # released by the key scan: already redacted


def _flush_decoder() -> None:
    global _decoder, _redactor
    _print_body(_redactor.flush())
    _redactor = ChunkRedactor()
    if _decoder is not None:
        _write(_decoder.decode(b"", final=True))
        _decoder = None


def on_request(info: RequestInfo) -> None:
    global _decoder
    _flush_decoder()
    _decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    _line(f">>> {info.method} {info.url}  (iteration {info.iteration}, attempt {info.attempt})")
    content_type = info.headers.get("content-type")
    if content_type is not None:
        _line(f"    content-type: {content_type}")
    body = info.json
    items = body.get("input", body.get("messages"))
    parts = [f"model {info.model or '?'}", f"{len(info.body)} bytes"]
    if isinstance(items, list):
        parts.append(plural(len(items), "input item"))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        parts.append(plural(len(tools), "tool"))
    _line("    " + ", ".join(parts))
    if os.environ.get("RAWLOOP_WIRE_BODY", "").strip() in ("1", "true", "yes"):
        pretty = orjson.dumps(redact_json(body)[0], option=orjson.OPT_INDENT_2).decode()
        for text in pretty.splitlines():  # each line goes through _line's redaction
            _line("    " + text)


def on_response(info: ResponseInfo) -> None:
    try:
        reason = " " + http.HTTPStatus(info.status).phrase
    except ValueError:
        reason = ""
    extra = [f"request id {info.request_id}"] if info.request_id else []
    extra.append(f"{info.elapsed:.3f} s")
    _line(f"<<< {info.status}{reason}  ({', '.join(extra)})")
    content_type = info.headers.get("content-type")
    if content_type is not None:
        _line(f"    content-type: {content_type}")


def on_chunk(info: ChunkInfo) -> None:
    mode = _chunk_mode()
    if mode == "off":
        return
    _held.append((mode, info.offset, len(info.data), info.elapsed))
    _print_body(_redactor.feed(info.data))


def on_error(info: ErrorInfo) -> None:
    _flush_decoder()
    then = f"; retrying in {info.delay:.2f} s" if info.will_retry else ""
    _line(
        f"!!! {info.where} failed (iteration {info.iteration}, attempt {info.attempt}): "
        f"{type(info.error).__name__}: {info.error}{then}"
    )


def on_end(info: EndInfo) -> None:
    _flush_decoder()
    tokens = info.usage.get("total_tokens")
    usage = f", {tokens} tokens" if tokens is not None else ""
    _line(
        f"=== end: {info.stop_reason} after {plural(info.iterations, 'iteration')}, "
        f"{info.duration:.3f} s{usage}"
    )
