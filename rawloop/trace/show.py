"""Reading a wire trace: the raw bytes and a machine form (the timeline lives in ``timeline``).

``raw(trace)`` gives back every response body exactly as received,
``as_json(trace)`` the trace grouped the way the timeline is, as plain JSON.
``render`` (the terminal timeline ``rawloop show`` prints) is re-exported
from ``rawloop.trace.timeline`` for the callers that import it from here.

Request headers are never shown: only how many were sent and which were
redacted.
"""

from __future__ import annotations

from typing import Any

from ..core.redact import redact_json
from ..core.redact_stream import redact_stream
from .format import Exchange, Trace
from .runs import (
    Iteration,
    Run,
    group_runs,
    header_summary,
    safe,
    safe_headers,
    status_of,
    target,
    timing,
)
from .timeline import render

__all__ = ["as_json", "raw", "render"]


# -- raw ------------------------------------------------------------------------------------


def raw(trace: Trace) -> bytes:
    """Every response body exactly as received, one separator line before each exchange.

    A separator reads ``--- iteration 0 attempt 0: POST <url> -> 200 (1234 bytes) ---``
    and ends with a newline; the bytes after it, up to the next separator, are
    the recorded chunks joined, unchanged (a body need not end with a newline).
    """
    runs = group_runs(trace)
    out = bytearray()
    for number, run in enumerate(runs, start=1):
        prefix = f"run {number} " if len(runs) > 1 else ""
        for iteration in run.iterations:
            for exchange in iteration.exchanges:
                body = exchange.body
                line = (
                    f"--- {prefix}iteration {exchange.iteration} attempt {exchange.attempt}: "
                    f"{target(exchange)} -> {status_of(exchange)} ({len(body)} bytes) ---\n"
                )
                out += safe(line).encode()
                out += redact_stream(body)  # joined: a key split by chunks or deltas is found
    return bytes(out)


# -- JSON -----------------------------------------------------------------------------------


def as_json(trace: Trace) -> dict[str, Any]:
    """The trace as plain JSON, grouped the way the timeline is.

    ``{"path", "format", "version", "complete", "warnings", "header", "iterations",
    "other", "end", "later_runs"}``. Each iteration holds ``edits`` (RFC 6902
    ops), ``attempts`` (each with ``request`` — method, URL, a header summary
    and the body —, ``response`` — status, request id, time to headers and the
    response headers minus sensitive ones —, ``stream`` counts and timings,
    and ``error``), ``decision`` (the turn), ``results`` and ``errors``.
    ``later_runs`` lists further runs appended to the same file, in the same shape.
    """
    runs = group_runs(trace)
    first = _run_json(runs[0])
    document = {
        "path": trace.path,
        "format": trace.header.get("format"),
        "version": trace.header.get("version"),
        "complete": runs[-1].end is not None,
        "warnings": list(trace.warnings),
        **first,
        "later_runs": [_run_json(run) for run in runs[1:]],
    }
    return redact_json(document, limit=0)[0]  # a trace is untrusted: it may hold a key


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "header": run.header,
        "iterations": [_iteration_json(i) for i in run.iterations],
        "other": [r.data for r in run.loose],
        "end": run.end,
    }


def _iteration_json(iteration: Iteration) -> dict[str, Any]:
    return {
        "iteration": iteration.number,
        "edits": iteration.edits,
        "attempts": [_exchange_json(e) for e in iteration.exchanges],
        "decision": iteration.decisions[-1] if iteration.decisions else None,
        "results": [_strip(r) for r in iteration.results],
        "errors": [_strip(r.data) for r in iteration.notes if r.kind == "error"],
        "other": [r.data for r in iteration.notes if r.kind != "error"]
        + [{"kind": "decision", "turn": t} for t in iteration.decisions[:-1]],
    }


def _exchange_json(exchange: Exchange) -> dict[str, Any]:
    request = exchange.request
    response = exchange.response
    first, last = timing(exchange)
    return {
        "attempt": exchange.attempt,
        "request": {
            "method": request.get("method"),
            "url": request.get("url"),
            "headers": header_summary(request.get("headers")),
            "body": request.get("body"),
        }
        if request
        else None,
        "response": {
            "status": response.get("status"),
            "request_id": response.get("request_id"),
            "t": response.get("t"),
            "headers": safe_headers(response.get("headers")),
        }
        if response is not None
        else None,
        "stream": {
            "chunks": len(exchange.chunks),
            "bytes": len(exchange.body),
            "first_byte": first,
            "last_byte": last,
        },
        "error": _strip(exchange.error) if exchange.error is not None else None,
    }


def _strip(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("kind", "iteration")}
