"""The trace as a timeline for people: what ``rawloop show`` prints on a terminal.

Per iteration: the breakpoint edits, each HTTP attempt (request summary,
status, timing, errors and retries), the model's decision and the tool
results, then how the run ended. Everything taken from the trace is shown
with control characters escaped, so a hostile stream cannot drive the terminal.
"""

from __future__ import annotations

from typing import Any

from .format import Exchange, Record, Trace
from .runs import (
    UNKNOWN,
    Iteration,
    Run,
    clip,
    edit_before,
    group_runs,
    header_summary,
    item_text,
    plural,
    request_items,
    safe_headers,
    secs,
    target,
    timing,
    to_json,
    tool_name,
    usage_text,
)
from .styled_lines import StyledLines

__all__ = ["render"]

#: How much of a tool output the timeline shows.
OUTPUT_LIMIT = 200
#: How many of the last input items a request summary names.
LAST_ITEMS = 3
#: How much of an edit's value the timeline shows.
EDIT_LIMIT = 200
#: How many lines, and characters per line, of a user or system message the timeline shows.
MESSAGE_LINES = 3
MESSAGE_WIDTH = 200

#: The roles whose messages are shown: what people said, not what the model or tools did.
_PEOPLE = frozenset({"system", "developer", "user"})

_BODY_KEYS = frozenset({"model", "input", "messages", "tools", "instructions", "stream"})


def render(
    trace: Trace,
    *,
    color: bool = False,
    full: bool = False,
    iteration: int | None = None,
    tool: str | None = None,
    width: int | None = None,
) -> str:
    """The trace as a timeline a person can read.

    ``color`` adds ANSI colour; ``full`` shows every text whole (tool outputs,
    edits, messages, error bodies); ``iteration`` and ``tool`` keep only that
    iteration, or the iterations that call or answer that tool; ``width``
    wraps lines to that many columns, keeping their indent.
    """
    out = StyledLines(full=full, width=width)
    runs = group_runs(trace)
    out.add(0, f"trace {trace.path}", "bold")
    for warning in trace.warnings:
        out.add(0, f"warning: {warning}", "yellow")
    for number, run in enumerate(runs, start=1):
        if len(runs) > 1:
            out.add(0, f"=== run {number} of {len(runs)} ===", "bold")
        _render_header(out, run.header)
        seen: set[str] = set()
        shown = 0
        for step in run.iterations:
            if (iteration is None or step.number == iteration) and (
                tool is None or _uses_tool(step, tool)
            ):
                _render_iteration(out, run, step, seen)
                shown += 1
            else:  # what it sent still counts as seen: only new messages are shown
                _remember_inputs(step, seen)
        if shown == 0 and (iteration is not None or tool is not None):
            wanted = [f"iteration {iteration}"] if iteration is not None else []
            wanted += [f"tool {tool}"] if tool is not None else []
            out.add(0, "")
            out.add(0, f"no iteration matches {' and '.join(wanted)}", "yellow")
        for record in run.loose:
            _render_note(out, 0, record)
        _render_end(out, run, trace)
    return out.text(color)


def _render_header(out: StyledLines, header: dict[str, Any]) -> None:
    fields = [
        f"dialect={header.get('dialect', '?')}",
        f"model={header.get('model', '?')}",
        f"base_url={header.get('base_url', '?')}",
        f"created={header.get('created', '?')}",
        f"rawloop={header.get('rawloop', '?')}",
        f"format={header.get('format', '?')} v{header.get('version', '?')}",
    ]
    out.add(0, " ".join(fields))
    if header.get("metadata"):
        out.add(0, f"metadata: {to_json(header['metadata'])}")


def _uses_tool(iteration: Iteration, name: str) -> bool:
    calls = [c for t in iteration.decisions for c in t.get("calls") or () if isinstance(c, dict)]
    return any(c.get("name") == name for c in calls) or any(
        r.get("name") == name for r in iteration.results
    )


def _inputs(iteration: Iteration) -> list[Any]:
    request = iteration.exchanges[-1].request if iteration.exchanges else {}
    return request_items(request.get("body") if request else None)


def _remember_inputs(iteration: Iteration, seen: set[str]) -> None:
    seen.update(to_json(item) for item in _inputs(iteration))


def _render_iteration(out: StyledLines, run: Run, iteration: Iteration, seen: set[str]) -> None:
    out.add(0, "")
    usage = [t["usage"] for t in iteration.decisions if isinstance(t.get("usage"), dict)]
    tokens = [u.get("total_tokens") for u in usage if isinstance(u.get("total_tokens"), int)]
    out.add(
        0, f"iteration {iteration.number}" + (f" ({sum(tokens)} tokens)" if tokens else ""), "bold"
    )
    # A handoff happens before the breakpoint: say so before its edits.
    for record in iteration.notes:
        if record.kind == "handoff":
            _render_note(out, 1, record)
    if iteration.edits:
        out.add(1, f"breakpoint edits ({len(iteration.edits)}):", "magenta")
        for op in iteration.edits:
            out.add(2, _describe_op(out, op, edit_before(run, iteration, op)), "magenta")
    previous: dict[str, Any] | None = None
    for exchange in iteration.exchanges:
        first = previous is None
        _render_exchange(out, exchange, previous, iteration if first else None, seen)
        previous = exchange.request or previous
    _remember_inputs(iteration, seen)
    for turn in iteration.decisions:
        _render_decision(out, turn)
    for result in iteration.results:
        _render_result(out, result)
    for record in iteration.notes:
        if record.kind != "handoff":
            _render_note(out, 1, record)


def _describe_op(out: StyledLines, op: dict[str, Any], before: Any) -> str:
    text = f"{op.get('op', '?')} {op.get('path', '')}"
    if "from" in op:
        text += f" from {op['from']}"
    if before is not UNKNOWN:
        text += f": was {out.clip(to_json(before), EDIT_LIMIT)}"
    if "value" in op:
        text += (
            f", now {out.clip(to_json(op['value']), EDIT_LIMIT)}"
            if before is not UNKNOWN
            else f" = {out.clip(to_json(op['value']), EDIT_LIMIT)}"
        )
    return text


def _render_messages(out: StyledLines, iteration: Iteration, seen: set[str]) -> None:
    """The system, developer and user messages this iteration sends for the first time."""
    for item in _inputs(iteration):
        if not isinstance(item, dict) or item.get("role") not in _PEOPLE:
            continue
        if to_json(item) in seen:
            continue
        head, text = item_text(item)
        lines = text.splitlines() or [""]
        if out.full or len(lines) <= MESSAGE_LINES:
            kept, more = lines, ""
        else:
            kept = lines[:MESSAGE_LINES]
            more = f"(+{len(lines) - MESSAGE_LINES} more lines; --full shows all)"
        out.add(2, f"{head}:", "bold")
        for line in kept:
            out.add(3, out.clip(line, MESSAGE_WIDTH))
        if more:
            out.add(3, more, "dim")


def _render_exchange(
    out: StyledLines,
    exchange: Exchange,
    previous: dict[str, Any] | None,
    messages_of: Iteration | None,
    seen: set[str],
) -> None:
    out.add(1, f"attempt {exchange.attempt}: {target(exchange)}", "bold")
    request = exchange.request
    if request:
        body = request.get("body")
        if previous is not None and body == previous.get("body"):
            out.add(2, f"same request body as attempt {previous.get('attempt')}", "dim")
        elif isinstance(body, dict):
            for line in _request_summary(out, body):
                out.add(2, line)
            if messages_of is not None:
                _render_messages(out, messages_of, seen)
        headers = header_summary(request.get("headers"))
        redacted = f" (redacted: {', '.join(headers['redacted'])})" if headers["redacted"] else ""
        out.add(2, f"headers: {headers['count']} sent{redacted}", "dim")
    response = exchange.response
    if response is None:
        out.add(2, "no response", "red")
    else:
        status = response.get("status")
        parts = [f"response {status}"]
        if response.get("request_id"):
            parts.append(f"request id {response['request_id']}")
        if isinstance(response.get("t"), (int, float)):
            parts.append(f"headers after {secs(response['t'])}")
        processing = safe_headers(response.get("headers")).get("openai-processing-ms")
        if processing:
            parts.append(f"openai-processing-ms {processing}")
        ok = isinstance(status, int) and status < 300
        out.add(2, ", ".join(parts), "green" if ok else "red")
    if exchange.chunks:
        first, last = timing(exchange)
        received = exchange.body
        when = ""
        if first is not None and last is not None:
            when = f", first byte {secs(first)}, last byte {secs(last)}"
        chunks = plural(len(exchange.chunks), "chunk")
        out.add(2, f"stream: {chunks}, {len(received)} bytes{when}", "dim")
        status = response.get("status") if response is not None else None
        if isinstance(status, int) and status >= 300:  # an error answer: short, and telling
            out.add(2, f"body: {out.clip(received.decode(errors='replace'), 300)}", "red")
    elif response is not None:
        out.add(2, "stream: no body recorded", "dim")
    if exchange.error is not None:
        out.add(2, _describe_error(exchange.error), "yellow" if _retried(exchange.error) else "red")


def _request_summary(out: StyledLines, body: dict[str, Any]) -> list[str]:
    lines = [f"model: {body.get('model', '?')}"]
    if "instructions" in body and body["instructions"] is not None:
        lines.append(f"instructions: {out.clip(str(body['instructions']), 100)}")
    items = body.get("input", body.get("messages"))
    noun = "message" if "messages" in body else "input item"
    if isinstance(items, list):
        kinds = [_item_kind(i) for i in items[-LAST_ITEMS:]]
        more = "..., " if len(items) > LAST_ITEMS else ""
        lines.append(f"{plural(len(items), noun)}: {more}{', '.join(kinds)}")
    elif isinstance(items, str):
        lines.append(f"input: text, {len(items)} chars: {clip(items, 100)}")
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        lines.append(f"tools: {', '.join(tool_name(t) for t in tools)}")
    params = [
        f"{k}={to_json(v, 60)}"
        for k, v in body.items()
        if k not in _BODY_KEYS and not (k == "stream_options" and v == {"include_usage": True})
    ]
    if "stream" not in body:  # not "stream=null": the request did not say
        params.append("stream not set")
    elif body["stream"] is not True:
        params.append(f"stream={to_json(body['stream'])}")
    if params:
        lines.append(f"params: {' '.join(params)}")
    return lines


def _item_kind(item: Any) -> str:
    """A few words for one input item or message: its type or role, and the call it is about."""
    if not isinstance(item, dict):
        return type(item).__name__
    kind, role = item.get("type"), item.get("role")
    if kind == "function_call":
        return f"function_call {item.get('name')}"
    if kind == "function_call_output":
        return f"function_call_output {item.get('call_id')}"
    if role == "assistant" and item.get("tool_calls"):
        names = [str(c.get("function", {}).get("name")) for c in item["tool_calls"]]
        return f"assistant tool_calls {','.join(names)}"
    if role == "tool":
        return f"tool {item.get('tool_call_id')}"
    if role:
        return str(role) if kind in (None, "message") else f"{kind} {role}"
    return str(kind or "?")


def _render_decision(
    out: StyledLines, turn: dict[str, Any], depth: int = 1, label: str = "decision"
) -> None:
    calls = [c for c in turn.get("calls") or () if isinstance(c, dict)]
    if calls and turn.get("status") == "completed":  # a turn that continues is no finish
        names = ", ".join(dict.fromkeys(str(c.get("name")) for c in calls))
        parts = [f"{label}: calls {plural(len(calls), 'tool')} ({names})"]
    else:
        parts = [f"{label}: {turn.get('status', '?')}"]
    if turn.get("finish_reason"):
        parts.append(f"finish_reason {turn['finish_reason']}")
    if turn.get("response_id"):
        parts.append(f"response {turn['response_id']}")
    if turn.get("model"):
        parts.append(f"model {turn['model']}")
    if turn.get("event_count"):
        parts.append(f"{turn['event_count']} events")
    out.add(depth, ", ".join(parts), "bold")
    text = turn.get("text") or ""
    if text:
        out.add(depth + 1, f"text ({len(text)} chars):")
        out.block(depth + 2, text, "green")
    if turn.get("reasoning"):
        out.add(depth + 1, f"reasoning: {len(turn['reasoning'])} chars", "dim")
    if turn.get("refusal"):
        out.add(depth + 1, "refusal:", "red")
        out.block(depth + 2, str(turn["refusal"]), "red")
    for call in calls:
        out.add(
            depth + 1,
            f"call {call.get('name')}({call.get('arguments', '')}) id={call.get('call_id')}",
            "cyan",
        )
    if turn.get("usage"):
        out.add(depth + 1, f"usage: {usage_text(turn['usage'])}", "dim")
    if turn.get("error"):
        out.add(depth + 1, f"error: {out.clip(to_json(turn['error']), 300)}", "red")
    for warning in turn.get("warnings") or ():
        out.add(depth + 1, f"warning: {warning}", "yellow")
    unknown = turn.get("unknown_events") or ()
    if unknown:
        types = sorted({str(e.get("type", "?")) if isinstance(e, dict) else "?" for e in unknown})
        out.add(depth + 1, f"unknown events: {len(unknown)} ({', '.join(types)})", "yellow")
    for number, choice in enumerate(turn.get("choices") or ()):
        if number:  # choice 0 is the turn itself
            _render_decision(out, choice, depth + 1, f"choice {number}")


def _render_result(out: StyledLines, result: dict[str, Any]) -> None:
    duration = result.get("duration")
    took = f" ({secs(duration)})" if isinstance(duration, (int, float)) else ""
    error = result.get("error")
    out.add(
        1,
        f"result {result.get('name')} id={result.get('call_id')}{took}",
        "red bold" if error else "bold",
    )
    output = result.get("output")
    text = output if isinstance(output, str) else to_json(output)
    if len(text) > OUTPUT_LIMIT and not out.full:
        out.add(2, f"output (first {OUTPUT_LIMIT} of {len(text)} chars; --full shows all):")
        out.block(3, text[:OUTPUT_LIMIT] + " ...")
    else:
        out.add(2, "output:")
        out.block(3, text)
    if error:
        if isinstance(error, dict):
            out.add(2, f"error: {error.get('type', '?')}: {error.get('message', '')}", "red")
        else:
            out.add(2, f"error: {error}", "red")


def _render_note(out: StyledLines, depth: int, record: Record) -> None:
    if record.kind == "error":
        out.add(depth, _describe_error(record.data), "red")
    elif record.kind == "handoff":
        data = record.data
        reason = f": {data['reason']}" if data.get("reason") else ""
        out.add(depth, f"handoff: {data.get('from_model')} -> {data.get('to_model')}{reason}")
    else:
        fields = {k: v for k, v in record.data.items() if k != "kind"}
        out.add(depth, f"[{record.kind} record, line {record.line}] {to_json(fields, 300)}", "dim")


def _describe_error(error: dict[str, Any]) -> str:
    where = error.get("where")
    place = f" ({where})" if where and where != "request" else ""
    text = f"error{place}: {error.get('type', '?')}: {error.get('message', '')}"
    if _retried(error):
        delay = error.get("delay")
        text += f"; retrying in {secs(delay) if isinstance(delay, (int, float)) else '?'}"
    elif where == "request":
        text += "; not retried"
    return text


def _retried(error: dict[str, Any]) -> bool:
    return bool(error.get("will_retry"))


def _render_end(out: StyledLines, run: Run, trace: Trace) -> None:
    out.add(0, "")
    end = run.end
    if end is None:
        where = f"line {run.last.line} ({run.last.kind} record)" if run.last else "the header"
        out.add(
            0,
            f"NO END RECORD: the trace was cut short after {where}; "
            "the run crashed, was killed, or was still going",
            "red bold",
        )
        if trace.warnings:
            out.add(1, "(and its last line was incomplete: see the warning above)", "red")
        return
    parts = [f"end: {end.get('stop_reason')}"]
    if end.get("iterations") is not None:
        parts.append(f"{plural(int(end['iterations']), 'iteration')}")
    if isinstance(end.get("duration"), (int, float)):
        parts.append(f"in {secs(end['duration'])}")
    failed = bool(end.get("error"))
    out.add(0, ", ".join(parts), "red bold" if failed else "bold")
    if end.get("usage"):
        out.add(1, f"usage: {usage_text(end['usage'])}")
    if failed:
        out.add(1, f"error: {end['error']}", "red")
