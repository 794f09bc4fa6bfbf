"""``rawloop export``: a trace as HAR 1.2 (for DevTools and HAR viewers) or OTLP JSON spans.

HAR: one entry per HTTP attempt, in order, with the request body, the
response headers and the whole SSE body as received (base64 when it is not
UTF-8), and timings (``wait`` = time to headers, ``receive`` = the rest of the
stream). ``rawloop import`` reads such a file back (chunk boundaries are lost:
HAR keeps one body).

OTLP: the JSON encoding of an OTLP ``ExportTraceServiceRequest``, spans named
and attributed as ``rawloop.serve.otel``'s hook makes them (the GenAI
semantic conventions): ``invoke_agent rawloop`` per run, ``chat {model}`` per
iteration (covering its attempts; a failed attempt is an ``exception``
event), ``execute_tool {name}`` per tool result. Message contents are left
out unless ``content=True``, as with the hook. IDs are derived from the trace,
so exporting twice gives the same file.

Times: a trace holds times relative to each request and each tool's
duration, not clock instants, so attempts, retry waits and tool runs are
placed end to end from the header's ``created`` time.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from .._version import __version__
from ..core.redact import redact_headers, redact_text
from ..core.redact_stream import redact_stream
from .format import Exchange, Trace
from .runs import Iteration, Run, group_runs, timing

__all__ = ["to_har", "to_otlp"]


# -- when things happened -------------------------------------------------------------------


@dataclass
class _Placed:
    start: float  # seconds from the run's start
    end: float


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


#: The longest duration believed (a year): a trace is untrusted, and dates must stay in range.
_MAX_SECONDS = 365 * 24 * 3600.0


def _num(value: Any) -> float:
    """A duration from the trace: a number in [0, a year], else 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return 0.0
    return min(max(float(value), 0.0), _MAX_SECONDS)


def _schedule(run: Run) -> tuple[dict[int, _Placed], dict[int, _Placed], dict[int, _Placed]]:
    """Attempts (by id), iterations' model calls and tool results (by id), end to end."""
    attempts: dict[int, _Placed] = {}
    calls: dict[int, _Placed] = {}
    results: dict[int, _Placed] = {}
    clock = 0.0
    for iteration in run.iterations:
        began = clock
        for exchange in iteration.exchanges:
            first, last = timing(exchange)
            took = max(_num((exchange.response or {}).get("t")), _num(first), _num(last))
            attempts[id(exchange)] = _Placed(clock, clock + took)
            clock += took
            error = exchange.error or {}
            if error.get("will_retry"):
                clock += _num(error.get("delay"))
        calls[iteration.number] = _Placed(began, clock)
        for result in iteration.results:
            took = _num(result.get("duration"))
            results[id(result)] = _Placed(clock, clock + took)
            clock += took
    return attempts, calls, results


def _created(trace: Trace) -> datetime.datetime:
    text = trace.header.get("created")
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return epoch
    when = when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
    # Far enough from the ends of the calendar that the run's offsets stay representable.
    return when if 1970 <= when.year <= 9000 else epoch


# -- HAR --------------------------------------------------------------------------------------


def to_har(trace: Trace) -> dict[str, Any]:
    """The trace as a HAR 1.2 document (a dict: dump it as JSON)."""
    entries = []
    base = _created(trace)
    for run in group_runs(trace):
        attempts, _, _ = _schedule(run)
        for iteration in run.iterations:
            for exchange in iteration.exchanges:
                entries.append(_entry(exchange, base, attempts[id(exchange)]))
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "rawloop", "version": __version__},
            "pages": [],
            "entries": entries,
            "comment": f"exported from {trace.path} ({trace.dialect} dialect)",
        }
    }


def _headers(headers: Any) -> list[dict[str, str]]:
    if not isinstance(headers, dict):
        return []
    # Recorded values are redacted already (placeholders kept as they are); this is for a
    # hand-made trace that is not.
    safe = redact_headers({str(k): str(v) for k, v in headers.items()})
    return [{"name": k, "value": v} for k, v in safe.items()]


def _entry(exchange: Exchange, base: datetime.datetime, placed: _Placed) -> dict[str, Any]:
    request = exchange.request or {}
    response = exchange.response or {}
    body = request.get("body")
    post = redact_text(orjson.dumps(body).decode()) if body is not None else ""
    data = exchange.body
    error = exchange.error or {}
    if not data and isinstance(error.get("body"), str):
        data = error["body"].encode()
    try:
        # Keys split across chunks or streamed delta by delta are whole only here.
        content: dict[str, Any] = {"text": redact_stream(data).decode()}
    except UnicodeDecodeError:
        content = {"text": base64.b64encode(data).decode(), "encoding": "base64"}
    response_headers = _dict(response.get("headers"))
    content.update(size=len(data), mimeType=str(response_headers.get("content-type", "")))
    url = str(request.get("url", ""))
    wait = _num(response.get("t")) * 1000
    total = (placed.end - placed.start) * 1000
    entry: dict[str, Any] = {
        "startedDateTime": (base + datetime.timedelta(seconds=placed.start)).isoformat(),
        "time": round(total, 3),
        "request": {
            "method": str(request.get("method", "POST")),
            "url": url,
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(request.get("headers")),
            "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query)],
            "postData": {"mimeType": "application/json", "text": post},
            "headersSize": -1,
            "bodySize": len(post.encode()),
        },
        "response": {
            "status": int(response.get("status", 0)) if exchange.response else 0,
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _headers(response_headers),
            "content": content,
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": len(data),
        },
        "cache": {},
        "timings": {
            "send": 0,
            "wait": round(wait, 3),
            "receive": round(max(total - wait, 0.0), 3),
        },
        "_rawloop": {"iteration": exchange.iteration, "attempt": exchange.attempt},
    }
    if exchange.error is not None:
        entry["comment"] = f"{error.get('type')}: {error.get('message')}"
    return entry


# -- OTLP -------------------------------------------------------------------------------------


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items() if v is not None]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Spans:
    """Spans of one export, their IDs derived from the trace and a counter."""

    def __init__(self, trace: Trace, base: datetime.datetime) -> None:
        seed = orjson.dumps(trace.header) + trace.path.encode()
        self.trace_id = hashlib.sha256(seed).hexdigest()[:32]
        self.base_ns = int(base.timestamp() * 1e9)
        self.spans: list[dict[str, Any]] = []

    def add(
        self,
        name: str,
        kind: int,
        placed: _Placed,
        attributes: dict[str, Any],
        parent: str = "",
        error: str | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> str:
        span_id = hashlib.sha256(f"{self.trace_id}/{len(self.spans)}".encode()).hexdigest()[:16]
        span: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": span_id,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": str(self.base_ns + int(placed.start * 1e9)),
            "endTimeUnixNano": str(self.base_ns + int(placed.end * 1e9)),
            "attributes": _attributes(attributes),
            "status": {"code": 2, "message": error} if error else {"code": 1},
        }
        if parent:
            span["parentSpanId"] = parent
        if events:
            span["events"] = events
        self.spans.append(span)
        return span_id

    def at(self, seconds: float) -> str:
        return str(self.base_ns + int(seconds * 1e9))


_INTERNAL, _CLIENT = 1, 3
_PARAMS = {
    "gen_ai.request.max_tokens": ("max_output_tokens", "max_completion_tokens", "max_tokens"),
    "gen_ai.request.temperature": ("temperature",),
    "gen_ai.request.top_p": ("top_p",),
    "gen_ai.request.seed": ("seed",),
}


def to_otlp(trace: Trace, *, content: bool = False) -> dict[str, Any]:
    """The trace as OTLP JSON (``resourceSpans``); ``content`` adds messages and tool I/O."""
    base = _created(trace)
    spans = _Spans(trace, base)
    for run in group_runs(trace):
        _run_spans(spans, run, content)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes({"service.name": "rawloop"})},
                "scopeSpans": [
                    {"scope": {"name": "rawloop", "version": __version__}, "spans": spans.spans}
                ],
            }
        ]
    }


def _run_spans(spans: _Spans, run: Run, content: bool) -> None:
    attempts, calls, results = _schedule(run)
    end = run.end or {}
    total = max([p.end for p in (*calls.values(), *results.values())] + [0.0])
    usage = _dict(end.get("usage"))
    root = spans.add(
        "invoke_agent rawloop",
        _INTERNAL,
        _Placed(0.0, max(total, _num(end.get("duration")))),
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": "openai",
            "gen_ai.agent.name": "rawloop",
            "gen_ai.request.model": run.header.get("model"),
            "gen_ai.usage.input_tokens": _int(usage.get("input_tokens")),
            "gen_ai.usage.output_tokens": _int(usage.get("output_tokens")),
            "rawloop.stop_reason": end.get("stop_reason", "none: the trace was cut short"),
            "rawloop.iterations": _int(end.get("iterations")),
        },
        error=str(end["error"]) if end.get("error") else None,
    )
    for iteration in run.iterations:
        _chat_span(spans, root, iteration, calls[iteration.number], attempts, content)
        described = _descriptions(iteration)
        for result in iteration.results:
            attributes = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": result.get("name"),
                "gen_ai.tool.call.id": result.get("call_id"),
                "gen_ai.tool.type": "function",
                "gen_ai.tool.description": described.get(str(result.get("name"))),
            }
            if content:
                attributes["gen_ai.tool.call.arguments"] = result.get("arguments")
                attributes["gen_ai.tool.call.result"] = redact_text(str(result.get("output")))
            error = result.get("error")
            if error:
                attributes["error.type"] = (
                    error.get("type", "error") if isinstance(error, dict) else "error"
                )
            spans.add(
                f"execute_tool {result.get('name')}",
                _INTERNAL,
                results[id(result)],
                attributes,
                root,
                error=str(attributes.get("error.type")) if error else None,
            )


def _descriptions(iteration: Iteration) -> dict[str, str]:
    """Tool name -> description, from the tools the iteration's request offered."""
    request = iteration.exchanges[-1].request if iteration.exchanges else {}
    out: dict[str, str] = {}
    for tool in _dict(request.get("body")).get("tools") or ():
        definition = _dict(tool)
        function = _dict(definition.get("function")) or definition
        if isinstance(function.get("name"), str) and isinstance(function.get("description"), str):
            out[function["name"]] = function["description"]
    return out


def _chat_span(
    spans: _Spans,
    root: str,
    iteration: Iteration,
    placed: _Placed,
    attempts: dict[int, _Placed],
    content: bool,
) -> None:
    request = iteration.exchanges[0].request if iteration.exchanges else {}
    body = _dict(request.get("body"))
    model = str(body.get("model", "?"))
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
    }
    url = urlsplit(str(request.get("url", "")))
    if url.hostname:
        attributes["server.address"] = url.hostname
        attributes["server.port"] = url.port or {"https": 443, "http": 80}.get(url.scheme)
    for name, keys in _PARAMS.items():
        attributes[name] = next(
            (body[k] for k in keys if isinstance(body.get(k), (int, float))), None
        )
    if content:
        items = body.get("input", body.get("messages"))
        attributes["gen_ai.input.messages"] = redact_text(orjson.dumps(items).decode())
        if body.get("tools"):
            attributes["gen_ai.tool.definitions"] = orjson.dumps(body["tools"]).decode()
    events = []
    for exchange in iteration.exchanges:
        first, _ = timing(exchange)
        if first is not None and "gen_ai.response.time_to_first_chunk" not in attributes:
            attributes["gen_ai.response.time_to_first_chunk"] = first
        if exchange.error is not None:
            events.append(
                {
                    "timeUnixNano": spans.at(attempts[id(exchange)].end),
                    "name": "exception",
                    "attributes": _attributes(
                        {
                            "exception.type": exchange.error.get("type"),
                            "exception.message": redact_text(str(exchange.error.get("message"))),
                            "rawloop.attempt": exchange.attempt,
                            "rawloop.will_retry": bool(exchange.error.get("will_retry")),
                        }
                    ),
                }
            )
    turn = iteration.decisions[-1] if iteration.decisions else None
    error = None
    if turn is None:
        error = "no decision: every attempt failed" if iteration.exchanges else "no request"
        last = iteration.exchanges[-1].error if iteration.exchanges else None
        attributes["error.type"] = str((last or {}).get("type", "error"))
    else:
        usage = _dict(turn.get("usage"))
        calls = turn.get("calls") or []
        reason = turn.get("finish_reason") or ("tool_call" if calls else "stop")
        attributes.update(
            {
                "gen_ai.response.id": turn.get("response_id"),
                "gen_ai.response.model": turn.get("model"),
                "gen_ai.response.finish_reasons": [str(reason)],
                "gen_ai.usage.input_tokens": _int(
                    usage.get("input_tokens", usage.get("prompt_tokens"))
                ),
                "gen_ai.usage.output_tokens": _int(
                    usage.get("output_tokens", usage.get("completion_tokens"))
                ),
            }
        )
        details_in = usage.get("input_tokens_details") or usage.get("prompt_tokens_details")
        details_out = usage.get("output_tokens_details") or usage.get("completion_tokens_details")
        attributes["gen_ai.usage.cache_read.input_tokens"] = _int(
            _dict(details_in).get("cached_tokens")
        )
        attributes["gen_ai.usage.reasoning.output_tokens"] = _int(
            _dict(details_out).get("reasoning_tokens")
        )
        if content:
            attributes["gen_ai.output.messages"] = redact_text(
                orjson.dumps({"text": turn.get("text"), "calls": calls}).decode()
            )
    spans.add(f"chat {model}", _CLIENT, placed, attributes, root, error, events)
