"""A trace grouped the way people read it: runs, iterations, attempts; and small formatters.

``group_runs(trace)`` is shared by the terminal timeline (``timeline``), the
JSON and raw forms (``show``), the HTML page (``html_page``) and the exports.
Everything here that turns trace content into text for a person escapes
control characters (``safe``): a trace is untrusted input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.errors import RawloopError
from ..core.patch import parse_pointer
from ..core.redact import SENSITIVE_HEADERS, redact_text
from ..core.words import plural
from .format import Exchange, Record, Trace

__all__ = [
    "UNKNOWN",
    "Iteration",
    "Run",
    "clip",
    "content_text",
    "edit_before",
    "group_runs",
    "header_summary",
    "is_redacted",
    "item_text",
    "plural",
    "pretty",
    "request_items",
    "safe",
    "safe_headers",
    "secs",
    "status_of",
    "target",
    "timing",
    "to_json",
    "tool_name",
    "usage_text",
]


# -- grouping records ---------------------------------------------------------------


@dataclass
class Iteration:
    """One loop iteration: its edits, attempts, decisions, results and other records."""

    number: int
    edits: list[dict[str, Any]] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    # errors not tied to an HTTP attempt (tools, hooks) and record kinds this module does not know
    notes: list[Record] = field(default_factory=list)


@dataclass
class Run:
    """One run of a trace file (a file appended to holds several)."""

    header: dict[str, Any]
    iterations: list[Iteration] = field(default_factory=list)
    loose: list[Record] = field(default_factory=list)  # records without an iteration
    end: dict[str, Any] | None = None
    last: Record | None = None


def group_runs(trace: Trace) -> list[Run]:
    """The records grouped by run (a file appended to holds several), iteration and attempt."""
    runs = [Run(trace.header)]
    by_number: dict[int, Iteration] = {}
    exchanges: dict[tuple[int, int], Exchange] = {}
    for record in trace.records:
        if record.kind == "header":
            runs.append(Run(record.data))
            by_number, exchanges = {}, {}
            continue
        run = runs[-1]
        run.last = record
        if record.kind == "end":
            run.end = record.data
            continue
        if "iteration" not in record.data:
            run.loose.append(record)
            continue
        number = record.iteration
        iteration = by_number.get(number)
        if iteration is None:
            iteration = by_number[number] = Iteration(number)
            run.iterations.append(iteration)
        kind, data = record.kind, record.data
        key = (number, record.attempt)
        if kind == "request":
            exchange = exchanges[key] = Exchange(number, record.attempt, data)
            iteration.exchanges.append(exchange)
        elif kind in ("response", "chunk") or (kind == "error" and data.get("where") == "request"):
            exchange = exchanges.get(key) or Exchange(number, record.attempt, {})
            if key not in exchanges:  # its request record is missing (refused, or cut)
                exchanges[key] = exchange
                iteration.exchanges.append(exchange)
            if kind == "response":
                exchange.response = data
            elif kind == "chunk":
                exchange.chunks.append(data)
            elif exchange.error is None:
                exchange.error = data
            else:
                iteration.notes.append(record)
        elif kind == "edit" and isinstance(data["patch"], list):
            # A trace is untrusted: an op that is not an object is kept as a note.
            iteration.edits.extend(op for op in data["patch"] if isinstance(op, dict))
        elif kind == "decision" and isinstance(data["turn"], dict):
            iteration.decisions.append(data["turn"])
        elif kind == "result":
            iteration.results.append(data)
        else:
            iteration.notes.append(record)
    return runs


def target(exchange: Exchange) -> str:
    """``METHOD URL`` of an attempt, or a note that its request was not recorded."""
    request = exchange.request
    if not request:
        return "(request not recorded)"
    return f"{request.get('method', 'POST')} {request.get('url', '?')}"


def status_of(exchange: Exchange) -> str:
    """The response status as text, or ``no response``."""
    if exchange.response is not None:
        return str(exchange.response.get("status"))
    return "no response"


def header_summary(headers: Any) -> dict[str, Any]:
    """How many request headers went out and which were redacted: never their values."""
    if not isinstance(headers, dict):
        return {"count": 0, "names": [], "redacted": []}
    return {
        "count": len(headers),
        "names": sorted(headers),
        "redacted": sorted(k for k, v in headers.items() if is_redacted(k, v)),
    }


def safe_headers(headers: Any) -> dict[str, str]:
    """Headers minus the sensitive and redacted ones."""
    if not isinstance(headers, dict):
        return {}
    return {k: str(v) for k, v in headers.items() if not is_redacted(k, v)}


def is_redacted(name: str, value: Any) -> bool:
    """Whether a header is a credential by name or was redacted by the recorder."""
    return name.lower() in SENSITIVE_HEADERS or "[REDACTED" in str(value)


def timing(exchange: Exchange) -> tuple[float | None, float | None]:
    """Seconds from the request to the first and the last chunk (None without chunks)."""
    times = [c["t"] for c in exchange.chunks if isinstance(c.get("t"), (int, float))]
    return (times[0], times[-1]) if times else (None, None)


# -- edits ---------------------------------------------------------------------------


class _Unknown:
    def __repr__(self) -> str:
        return "<not recorded>"


#: What ``edit_before`` gives when the trace does not hold the value an edit replaced.
UNKNOWN: Any = _Unknown()


def edit_before(run: Run, iteration: Iteration, op: dict[str, Any]) -> Any:
    """The value an edit op replaced or removed, as far as the trace tells it, else ``UNKNOWN``.

    The state a breakpoint edits is not recorded whole: its ``model``,
    ``instructions`` and ``tools`` are those of the previous request, its
    ``results`` those of the previous iteration. Its ``input`` is only known
    after the edit, so an edit of the input has no recorded "before".
    """
    if op.get("op") not in ("replace", "remove") or not isinstance(op.get("path"), str):
        return UNKNOWN
    index = run.iterations.index(iteration) if iteration in run.iterations else -1
    if index <= 0:
        return UNKNOWN
    previous = run.iterations[index - 1]
    body = previous.exchanges[-1].request.get("body") if previous.exchanges else None
    state: dict[str, Any] = {"results": previous.results}
    if isinstance(body, dict):
        state.update({k: body.get(k) for k in ("model", "instructions", "tools")})
    try:
        tokens = parse_pointer(op["path"])
    except RawloopError:
        return UNKNOWN
    if not tokens or tokens[0] not in state:
        return UNKNOWN
    value: Any = state
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return UNKNOWN
    return value


# -- input items -----------------------------------------------------------------------


def request_items(body: Any) -> list[Any]:
    """A request body's ``input`` (a string is one user message) or ``messages``, else ``[]``."""
    if not isinstance(body, dict):
        return []
    items = body.get("input", body.get("messages"))
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return items if isinstance(items, list) else []


def item_text(item: Any) -> tuple[str, str]:
    """An input item or message as ``(heading, full text)``: role or type, then its content."""
    if not isinstance(item, dict):
        return type(item).__name__, pretty(item)
    kind, role = item.get("type"), item.get("role")
    if kind == "function_call":
        head = f"function_call {item.get('name')} ({item.get('call_id')})"
        return head, pretty(item.get("arguments"))
    if kind == "function_call_output":
        return f"function_call_output ({item.get('call_id')})", content_text(item.get("output"))
    if role == "tool":
        return f"tool ({item.get('tool_call_id')})", content_text(item.get("content"))
    if role:
        text = content_text(item.get("content")) if item.get("content") is not None else ""
        for call in item.get("tool_calls") or ():
            function = call.get("function", {}) if isinstance(call, dict) else {}
            if isinstance(function, dict):
                text += f"\ncall {function.get('name')}({function.get('arguments')})"
        return str(role), text.strip()
    return str(kind or "item"), pretty(item)


def tool_name(tool: Any) -> str:
    """The name of a tool definition (Responses or Chat Completions shape), else its type or ``?``."""
    if not isinstance(tool, dict):
        return "?"
    function = tool.get("function")
    name = tool.get("name") or (function.get("name") if isinstance(function, dict) else None)
    return str(name or tool.get("type") or "?")


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list (else JSON)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [str(p.get("text")) for p in content if isinstance(p, dict) and "text" in p]
        if len(texts) == len(content):
            return "\n".join(texts)
    return pretty(content)


def pretty(value: Any) -> str:
    """Indented JSON for people; a string holding JSON is shown as that JSON."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return str(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return repr(value)


# -- text for people ---------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: str) -> str:
    """Control characters (ESC above all) made visible, so trace content cannot drive a terminal."""
    # Keys first: once a tab is shown as "\\x09", the key after it no longer starts a word.
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", redact_text(text))


def usage_text(usage: Any) -> str:
    """Token usage as ``key=value`` words, nested details only when non-zero."""
    if not isinstance(usage, dict):
        return to_json(usage)
    # Nested details (cached_tokens, reasoning_tokens...) only when they say something.
    return " ".join(
        f"{k}={v}" for k, v in _flatten(usage, "") if v is not None and ("." not in k or v)
    )


def _flatten(value: dict[str, Any], prefix: str) -> Iterable[tuple[str, Any]]:
    for key, item in value.items():
        if isinstance(item, dict):
            yield from _flatten(item, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", item


def to_json(value: Any, limit: int | None = None) -> str:
    """Compact JSON text (``repr`` for what JSON cannot hold), clipped to ``limit``."""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return clip(text, limit) if limit is not None else text


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in ``...`` when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def secs(seconds: float) -> str:
    """A duration for people: milliseconds under a second."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"
