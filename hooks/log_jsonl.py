"""Append one JSON line per hook call to a log file: a compact, greppable account of a run.

Every hook point is logged. Each line is an object with ``point`` (the hook
point, ``on_request``...), ``time`` (Unix seconds), ``iteration`` (and
``attempt`` for the wire-level points) and a short summary of what the hook
received, for example::

    {"point":"on_request","time":1732233845.12,"iteration":0,"attempt":0,"method":"POST",...}
    {"point":"on_chunk","time":1732233845.53,"iteration":0,"attempt":0,"offset":0,"size":512,...}
    {"point":"on_result","time":1732233846.01,"iteration":0,"call_id":"call_1","name":"multiply",...}

Summaries hold sizes, names, ids and short previews, not whole bodies or
chunks (a trace, ``rawloop.trace``, is the place for those). Previews and
error messages go through ``rawloop.core.redact.redact_text``; headers are never
logged. The file is opened, appended to and closed for each line, so several
runs (or processes) can share one log and a crash loses nothing written.

Environment variables (read at each call):

``RAWLOOP_LOG``
    The file to append to (default ``rawloop-log.jsonl`` in the working
    directory). Its folder is created if needed.
``RAWLOOP_LOG_SKIP``
    Comma-separated hook points not to log, e.g. ``on_chunk,on_event`` to
    leave out the per-chunk and per-event lines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from rawloop.core.redact import redact_text
from rawloop.loop.hooks import (
    ChunkInfo,
    DecisionInfo,
    EditInfo,
    EndInfo,
    ErrorInfo,
    EventInfo,
    HandoffInfo,
    RequestInfo,
    ResponseInfo,
    ResultInfo,
)
from rawloop.loop.state import LoopState

DEFAULT_PATH = "rawloop-log.jsonl"
PREVIEW = 120  # characters of text kept in previews


def log_path() -> Path:
    """Where lines go (``RAWLOOP_LOG``, else ``rawloop-log.jsonl``)."""
    return Path(os.environ.get("RAWLOOP_LOG", "").strip() or DEFAULT_PATH)


def _skipped() -> frozenset[str]:
    raw = os.environ.get("RAWLOOP_LOG_SKIP", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _preview(text: str) -> str:
    text = redact_text(text)
    return text if len(text) <= PREVIEW else text[:PREVIEW] + "..."


def _log(point: str, fields: dict[str, Any]) -> None:
    if point in _skipped():
        return
    record = {"point": point, "time": round(time.time(), 6), **fields}
    line = orjson.dumps(record, default=str) + b"\n"
    path = log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(line)


def on_request(info: RequestInfo) -> None:
    body = info.json
    items = body.get("input", body.get("messages"))
    tools = body.get("tools")
    _log(
        "on_request",
        {
            "iteration": info.iteration,
            "attempt": info.attempt,
            "method": info.method,
            "url": info.url,
            "model": info.model,
            "bytes": len(info.body),
            "items": len(items) if isinstance(items, list) else None,
            "tools": len(tools) if isinstance(tools, list) else 0,
        },
    )


def on_response(info: ResponseInfo) -> None:
    _log(
        "on_response",
        {
            "iteration": info.iteration,
            "attempt": info.attempt,
            "status": info.status,
            "content_type": info.headers.get("content-type"),
            "request_id": info.request_id,
            "elapsed": round(info.elapsed, 6),
        },
    )


def on_chunk(info: ChunkInfo) -> None:
    _log(
        "on_chunk",
        {
            "iteration": info.iteration,
            "attempt": info.attempt,
            "offset": info.offset,
            "size": len(info.data),
            "elapsed": round(info.elapsed, 6),
        },
    )


def on_event(info: EventInfo) -> None:
    payload = info.payload
    _log(
        "on_event",
        {
            "iteration": info.iteration,
            "attempt": info.attempt,
            "event": info.sse.event,
            "type": payload.get("type") if payload is not None else None,
            "offset": info.sse.offset,
            "deltas": [delta.kind for delta in info.deltas],
        },
    )


def on_decision(info: DecisionInfo) -> None:
    turn = info.turn
    _log(
        "on_decision",
        {
            "iteration": info.iteration,
            "response_id": turn.response_id,
            "status": turn.status,
            "text": _preview(turn.text),
            "calls": [{"call_id": c.call_id, "name": c.name} for c in turn.calls],
            "usage": turn.usage,
        },
    )


def on_result(info: ResultInfo) -> None:
    result = info.result
    error = result.error
    _log(
        "on_result",
        {
            "iteration": info.iteration,
            "call_id": result.call_id,
            "name": result.name,
            "ok": error is None,
            "error": error.get("type") if isinstance(error, dict) else None,
            "output_chars": len(result.output),
            "output": _preview(result.output),
            "duration": round(result.duration, 6),
        },
    )


def on_breakpoint(state: LoopState) -> None:
    _log(
        "on_breakpoint",
        {
            "iteration": state.iteration,
            "model": state.model,
            "items": len(state.input),
            "pending_results": [r.call_id for r in state.results],
        },
    )


def on_edit(info: EditInfo) -> None:
    _log(
        "on_edit",
        {
            "iteration": info.iteration,
            "ops": len(info.patch),
            "paths": [f"{op.get('op')} {op.get('path')}" for op in info.patch],
        },
    )


def on_handoff(info: HandoffInfo) -> None:
    _log(
        "on_handoff",
        {
            "iteration": info.iteration,
            "from_model": info.from_model,
            "to_model": info.to_model,
            "reason": info.reason,
        },
    )


def on_error(info: ErrorInfo) -> None:
    _log(
        "on_error",
        {
            "iteration": info.iteration,
            "attempt": info.attempt,
            "where": info.where,
            "type": type(info.error).__name__,
            "message": _preview(str(info.error)),
            "will_retry": info.will_retry,
            "delay": info.delay,
        },
    )


def on_end(info: EndInfo) -> None:
    error = info.error
    _log(
        "on_end",
        {
            "stop_reason": info.stop_reason,
            "iterations": info.iterations,
            "usage": info.usage,
            "duration": round(info.duration, 6),
            "error": None if error is None else f"{type(error).__name__}: {_preview(str(error))}",
        },
    )
