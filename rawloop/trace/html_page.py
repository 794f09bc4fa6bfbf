"""``rawloop show TRACE --html``: one self-contained HTML page that shows a whole run.

The page holds a header (models, dialect, start, duration, iterations, stop
reason, tokens, cost), a waterfall of every attempt and tool run on one time
axis, and one collapsible section per iteration with everything in full: the
request's input items, tools, params and (redacted) headers, the streamed
text, reasoning, calls, tool results, edits and errors. The raw SSE of an
attempt is built on demand from JSON embedded in the page.

Time axis: a trace records times relative to each request (``response.t``,
``chunk.t``) and each tool's duration, not wall-clock instants, so attempts,
retry waits and tool runs are laid end to end in the order they happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .format import Exchange, Trace, chunk_bytes
from .html_kit import Price, chunk_texts, cost, document, esc, pretty
from .html_waterfall import num, waterfall
from .runs import (
    UNKNOWN,
    Iteration,
    Run,
    edit_before,
    group_runs,
    is_redacted,
    item_text,
    plural,
    secs,
    status_of,
    target,
    timing,
    tool_name,
)

__all__ = ["show_page", "turn_summary", "usage_rows"]

_BODY_KEYS = frozenset({"model", "input", "messages", "tools", "instructions"})


def show_page(trace: Trace, *, prices: Mapping[str, Price] | None = None) -> str:
    """The trace as one HTML page (a string); ``prices`` adds a cost to the header."""
    runs = group_runs(trace)
    raw: dict[str, list[dict[str, Any]]] = {}
    parts = [_top(trace, runs, prices)]
    parts.append("<main>")
    for number, run in enumerate(runs):
        if len(runs) > 1:
            parts.append(f"<h2>run {number + 1} of {len(runs)}</h2>")
        parts.append(waterfall(run, number))
        for iteration in run.iterations:
            parts.append(_iteration(run, iteration, number, raw))
        for record in run.loose:
            parts.append(f'<pre class="warn">{esc(record.data)}</pre>')
        parts.append(_end(run))
    parts.append("</main>")
    return document(f"rawloop: {trace.path}", "\n".join(parts), raw)


# -- the header -------------------------------------------------------------------------------


def usage_rows(run: Run) -> list[tuple[str, int, int]]:
    """``(model, input tokens, output tokens)`` per decision that reported usage."""
    rows = []
    for iteration in run.iterations:
        request = iteration.exchanges[-1].request if iteration.exchanges else {}
        body: dict[str, Any] = request["body"] if isinstance(request.get("body"), dict) else {}
        for turn in iteration.decisions:
            usage = turn.get("usage")
            if not isinstance(usage, dict):
                continue
            model = str(turn.get("model") or body.get("model") or run.header.get("model") or "?")
            tokens_in = usage.get("input_tokens", usage.get("prompt_tokens"))
            tokens_out = usage.get("output_tokens", usage.get("completion_tokens"))
            rows.append((model, _int(tokens_in), _int(tokens_out)))
    return rows


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _top(trace: Trace, runs: list[Run], prices: Mapping[str, Price] | None) -> str:
    header = trace.header
    rows = [row for run in runs for row in usage_rows(run)]
    models = sorted({row[0] for row in rows} | {str(header.get("model", "?"))})
    end = runs[-1].end
    facts = [
        ("models", ", ".join(models)),
        ("dialect", header.get("dialect", "?")),
        ("started", header.get("created", "?")),
        ("duration", _duration(end)),
        ("iterations", sum(len(run.iterations) for run in runs)),
        ("stop reason", end.get("stop_reason") if end else "none: the trace was cut short"),
        ("tokens", f"{sum(r[1] for r in rows)} in / {sum(r[2] for r in rows)} out"),
    ]
    if prices is not None:
        dollars, unpriced = cost(rows, prices)
        note = f" (no price for {', '.join(unpriced)})" if unpriced else ""
        facts.append(("cost", f"${dollars:.6f}{note}"))
    facts.append(("base url", header.get("base_url", "?")))
    items = "".join(f"<span>{esc(k)} <b>{esc(str(v))}</b></span>" for k, v in facts)
    warnings = "".join(f'<div class="warn">warning: {esc(w)}</div>' for w in trace.warnings)
    return (
        f'<header class="top"><h1>{esc(trace.path)}</h1><div class="facts">{items}</div>'
        f"{warnings}"
        '<div class="tools"><input id="search" type="search" placeholder="filter iterations '
        '(text, tool, argument, output...)" aria-label="filter iterations">'
        '<span id="match-count" class="hint"></span>'
        '<span class="hint">j / k: next / previous iteration, o: open or close, /: search</span>'
        "</div></header>"
    )


def _duration(end: dict[str, Any] | None) -> str:
    if end is None or not isinstance(end.get("duration"), (int, float)):
        return "?"
    return secs(float(end["duration"]))


# -- one iteration ------------------------------------------------------------------------------


def turn_summary(iteration: Iteration) -> str:
    """A few words on what the iteration did: the calls it made or the start of its answer."""
    if not iteration.decisions:
        return "no decision recorded"
    turn = iteration.decisions[-1]
    calls = [str(c.get("name")) for c in turn.get("calls") or () if isinstance(c, dict)]
    if calls:
        return f"calls {plural(len(calls), 'tool')}: {', '.join(calls)}"
    text = str(turn.get("text") or "")
    if text:
        return f"answers: {text[:80]}" + ("…" if len(text) > 80 else "")
    return str(turn.get("status", "?"))


def _iteration(run: Run, iteration: Iteration, number: int, raw: dict[str, list[Any]]) -> str:
    anchor = f"run{number}-iter{iteration.number}"
    tags = []
    if len(iteration.exchanges) > 1:
        tags.append(f'<span class="tag amber">{len(iteration.exchanges)} attempts</span>')
    if iteration.edits:
        tags.append(f'<span class="tag">{plural(len(iteration.edits), "edit")}</span>')
    if any(r.kind == "error" for r in iteration.notes) or any(
        r.get("error") for r in iteration.results
    ):
        tags.append('<span class="tag red">error</span>')
    usage: list[dict[str, Any]] = [
        t["usage"] for t in iteration.decisions if isinstance(t.get("usage"), dict)
    ]
    tokens = f" · {sum(_int(u.get('total_tokens')) for u in usage)} tokens" if usage else ""
    parts = [
        f'<details class="iter" open id="{anchor}" data-section data-iteration="{iteration.number}">'
        f"<summary>iteration {iteration.number} · {esc(turn_summary(iteration))}{esc(tokens)}"
        f'{"".join(tags)}</summary><div class="body">'
    ]
    for record in iteration.notes:
        if record.kind == "handoff":
            data = record.data
            parts.append(
                f'<div class="edit">handoff: {esc(str(data.get("from_model")))} → '
                f"{esc(str(data.get('to_model')))} {esc(str(data.get('reason') or ''))}</div>"
            )
    if iteration.edits:
        parts.append(f'<h2 class="edit">breakpoint edits ({len(iteration.edits)})</h2>')
        for op in iteration.edits:
            parts.append(_edit(run, iteration, op))
    previous: dict[str, Any] | None = None
    for exchange in iteration.exchanges:
        key = f"r{number}-i{iteration.number}-a{exchange.attempt}"
        raw[key] = _raw_chunks(exchange)
        parts.append(_attempt(exchange, previous, key))
        previous = exchange.request or previous
    for turn in iteration.decisions:
        parts.append(_decision(turn))
    for result in iteration.results:
        parts.append(_result(result))
    for record in iteration.notes:
        if record.kind == "error":
            parts.append(f'<pre class="bad">error: {esc(record.data)}</pre>')
        elif record.kind != "handoff":
            parts.append(f'<pre class="warn">{esc(record.kind)} record: {esc(record.data)}</pre>')
    parts.append("</div></details>")
    return "\n".join(parts)


def _edit(run: Run, iteration: Iteration, op: dict[str, Any]) -> str:
    before = edit_before(run, iteration, op)
    head = f"{op.get('op', '?')} {op.get('path', '')}" + (
        f" from {op['from']}" if "from" in op else ""
    )
    cells = [f'<div class="item-head edit">{esc(head)}</div><div class="grid2">']
    shown = "(not recorded in the trace)" if before is UNKNOWN else pretty(before)
    cells.append(f'<div><div class="item-head">before</div><pre>{esc(shown)}</pre></div>')
    after = pretty(op["value"]) if "value" in op else "(removed)"
    cells.append(f'<div><div class="item-head">after</div><pre>{esc(after)}</pre></div></div>')
    return "".join(cells)


def _raw_chunks(exchange: Exchange) -> list[dict[str, Any]]:
    pieces = [chunk_bytes(c) for c in exchange.chunks]
    texts = chunk_texts(pieces)
    return [
        {"s": text, "n": len(piece), "t": num(chunk.get("t"))}
        for text, piece, chunk in zip(texts, pieces, exchange.chunks)
    ]


def _attempt(exchange: Exchange, previous: dict[str, Any] | None, key: str) -> str:
    response = exchange.response
    status = response.get("status") if response else None
    failed = exchange.error is not None or not (isinstance(status, int) and status < 300)
    parts = [
        f'<div class="attempt{" failed" if failed else ""}"><div><b>attempt {exchange.attempt}</b>'
        f' <span class="mono">{esc(target(exchange))}</span> → '
        f'<b class="{"bad" if failed else "ok"}">{esc(status_of(exchange))}</b></div>'
    ]
    request = exchange.request
    body = request.get("body") if request else None
    if previous is not None and isinstance(body, dict) and body == previous.get("body"):
        parts.append(
            f'<div class="hint">same request body as attempt {esc(str(previous.get("attempt")))}</div>'
        )
    elif isinstance(body, dict):
        parts.append(_request_body(body))
    if request:
        parts.append(_headers("request headers", request.get("headers")))
    if response is not None:
        first, last = timing(exchange)
        size = len(exchange.body)
        facts = [f"request id {response.get('request_id')}"] if response.get("request_id") else []
        if num(response.get("t")) is not None:
            facts.append(f"headers after {secs(float(response['t']))}")
        if first is not None and last is not None:
            facts.append(f"first byte {secs(first)}, last byte {secs(last)}")
        facts.append(f"{plural(len(exchange.chunks), 'chunk')}, {size} bytes")
        parts.append(f'<div class="hint">{esc(", ".join(facts))}</div>')
        parts.append(_headers("response headers", response.get("headers")))
        if failed and exchange.chunks:
            text = "".join(chunk_texts([chunk_bytes(c) for c in exchange.chunks]))
            parts.append(f'<pre class="bad">{esc(text)}</pre>')
    if exchange.chunks:
        parts.append(
            f'<details class="sub" data-raw="{key}"><summary>raw SSE '
            f"({plural(len(exchange.chunks), 'chunk')})</summary>"
            f'<label class="hint"><input type="checkbox" data-bounds="sse-{key}"> '
            f'show chunk boundaries</label><pre class="sse" id="sse-{key}"></pre></details>'
        )
    if exchange.error is not None:
        error = exchange.error
        retry = "; retried" if error.get("will_retry") else ""
        parts.append(
            f'<pre class="{"warn" if retry else "bad"}">error: {esc(str(error.get("type")))}: '
            f"{esc(str(error.get('message', '')))}{retry}</pre>"
        )
    parts.append("</div>")
    return "\n".join(parts)


def _headers(title: str, headers: Any) -> str:
    """Headers in a closed box; credentials (by name, or already redacted) as ``[redacted]``."""
    if not isinstance(headers, dict):
        headers = {}
    rows = "".join(
        f'<span>{esc(str(k))}</span><span class="mono">'
        f"{'[redacted]' if is_redacted(str(k), v) else esc(str(v))}</span>"
        for k, v in headers.items()
    )
    return (
        f'<details class="sub"><summary>{title} ({len(headers)})</summary>'
        f'<div class="kv">{rows}</div></details>'
    )


def _request_body(body: dict[str, Any]) -> str:
    parts = [f'<div class="hint">model <b>{esc(str(body.get("model", "?")))}</b></div>']
    if body.get("instructions") is not None:
        parts.append(
            f'<div class="item-head">instructions</div><pre>{esc(str(body["instructions"]))}</pre>'
        )
    items = body.get("input", body.get("messages"))
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if isinstance(items, list):
        inner = "".join(_input_item(n, item) for n, item in enumerate(items))
        parts.append(
            f'<details class="sub" open><summary>request input ({len(items)})</summary>{inner}</details>'
        )
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        names = ", ".join(tool_name(t) for t in tools)
        parts.append(
            f'<details class="sub"><summary>tools: {esc(names)}</summary><pre>{esc(pretty(tools))}</pre></details>'
        )
    params = {k: v for k, v in body.items() if k not in _BODY_KEYS}
    params.setdefault("stream", "(not set)")  # not null: the request did not say
    rows = "".join(
        f'<span>{esc(k)}</span><span class="mono">{esc(_compact(v))}</span>'
        for k, v in params.items()
    )
    parts.append(
        f'<details class="sub"><summary>params</summary><div class="kv">{rows}</div></details>'
    )
    return "\n".join(parts)


def _compact(value: Any) -> str:
    return (
        pretty(value)
        if isinstance(value, (dict, list))
        else (
            "null"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
    )


def _input_item(number: int, item: Any) -> str:
    head, text = item_text(item)
    return (
        f'<div class="item-head">#{number} {esc(head)}</div>'
        f"<pre>{esc(text.strip() or '(empty)')}</pre>"
    )


def _decision(turn: dict[str, Any]) -> str:
    calls = [c for c in turn.get("calls") or () if isinstance(c, dict)]
    verdict = f"calls {plural(len(calls), 'tool')}" if calls else str(turn.get("status", "?"))
    facts = [
        f for f in (turn.get("finish_reason"), turn.get("response_id"), turn.get("model")) if f
    ]
    parts = [
        f'<h2>model turn: {esc(verdict)} <span class="hint">{esc(" · ".join(map(str, facts)))}</span></h2>'
    ]
    if turn.get("reasoning"):
        parts.append(
            f'<div class="item-head">reasoning</div><pre>{esc(str(turn["reasoning"]))}</pre>'
        )
    if turn.get("text"):
        parts.append(f'<div class="item-head">text</div><pre>{esc(str(turn["text"]))}</pre>')
    if turn.get("refusal"):
        parts.append(
            f'<div class="item-head bad">refusal</div><pre class="bad">{esc(str(turn["refusal"]))}</pre>'
        )
    for call in calls:
        parts.append(
            f'<div class="item-head call">call <b>{esc(str(call.get("name")))}</b> '
            f"{esc(str(call.get('call_id')))}</div><pre>{esc(pretty(call.get('arguments', '')))}</pre>"
        )
    if isinstance(turn.get("usage"), dict):
        words = " ".join(f"{k}={v}" for k, v in turn["usage"].items() if not isinstance(v, dict))
        parts.append(f'<div class="hint">usage: {esc(words)}</div>')
    if turn.get("error"):
        parts.append(f'<pre class="bad">stream error: {esc(turn["error"])}</pre>')
    for warning in turn.get("warnings") or ():
        parts.append(f'<div class="warn">warning: {esc(str(warning))}</div>')
    return "\n".join(parts)


def _result(result: dict[str, Any]) -> str:
    took = num(result.get("duration"))
    error = result.get("error")
    head = (
        f'<h2 class="{"bad" if error else "ok"}">tool result: {esc(str(result.get("name")))} '
        f'<span class="hint">{esc(str(result.get("call_id")))}{" · " + esc(secs(took)) if took is not None else ""}'
        "</span></h2>"
    )
    output = result.get("output")
    text = output if isinstance(output, str) else pretty(output)
    body = f'<pre class="tool-output">{esc(text)}</pre>'
    if error:
        body += f'<pre class="bad">error: {esc(error)}</pre>'
    return head + body


def _end(run: Run) -> str:
    end = run.end
    if end is None:
        return '<h2 class="bad">no end record: the trace was cut short (crashed, killed or still going)</h2>'
    parts = [f"end: {end.get('stop_reason')}"]
    if end.get("iterations") is not None:
        parts.append(plural(_int(end.get("iterations")), "iteration"))
    if num(end.get("duration")) is not None:
        parts.append(f"in {secs(float(end['duration']))}")
    html = f'<h2 class="{"bad" if end.get("error") else "ok"}">{esc(", ".join(parts))}</h2>'
    if end.get("error"):
        html += f'<pre class="bad">{esc(end["error"])}</pre>'
    return html
