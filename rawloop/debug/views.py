"""What the ``rawloop step`` shell shows: the run's state, its end and its wire, as lines of text.

Each function reads a ``Debugger`` (paused or ended) and returns the lines to
print; the shell (``rawloop.debug.shell``) only writes them. Keeping the
wording here means the commands stay short and one view reads the same from
every command that shows it (``where`` and every pause show ``where_lines``).
Values from the trace are cut to one line by ``shorten`` (newlines escaped),
so a tool output cannot forge a line of the shell's own output.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core.errors import ReplayDivergence
from ..core.jsondiff import Difference
from ..core.words import plural
from .debugger import Debugger, Pause
from .wording import describe_difference, describe_op, describe_turn, shorten

__all__ = [
    "departure_note",
    "end_lines",
    "failure_line",
    "raw_lines",
    "result_lines",
    "usage_text",
    "where_lines",
]


def usage_text(usage: dict[str, int]) -> str:
    """``requests=1 input_tokens=58 ...``, or that nothing was sent yet."""
    return " ".join(f"{k}={v}" for k, v in usage.items()) or "no requests yet"


def where_lines(dbg: Debugger, title: str) -> list[str]:
    """Where the run is: iteration, model, last decision, pending results, usage, edits."""
    state = dbg.state
    if dbg.ended:
        lines = [f"the run has ended: {dbg.end_reason} | model {state.model} | {state.dialect}"]
    else:
        lines = [
            f"iteration {state.iteration} (request {state.iteration + 1} of at most "
            f"{dbg.loop.max_iterations}) | model {state.model} | {state.dialect} | {title}"
        ]
    turn = state.last_turn
    if turn is None:
        lines.append("  last decision: none yet (the first request is next)")
    else:
        lines.append(f"  last decision (iteration {state.iteration - 1}): {describe_turn(turn)}")
        for call in turn.calls:
            lines.append(f"    call {call.name} {call.call_id} {shorten(call.arguments, 120)}")
    if state.results:
        lines.append("  pending results (sent with the next request):")
        lines += result_lines(state.results, indent="    ")
    items = state.input
    if items:
        lines.append(f"  input: {plural(len(items), 'item')}, the last: {_item(items[-1])}")
    lines.append(f"  usage so far: {usage_text(state.usage)}")
    edits = dbg.pending_edits()
    if edits:
        lines.append(f"  changed here: {', '.join(describe_op(o) for o in edits)}")
    note = departure_note(dbg)
    if note:
        lines.append(note)
    if dbg.departure is not None:
        lines.append(f"  off the recording since iteration {dbg.departure.iteration}")
    return lines


def result_lines(
    results: list[Any], *, start: int = 0, indent: str = "", full: bool = False
) -> list[str]:
    """One line per pending tool result: ``[0] multiply call_… -> "2869461"``."""
    if not results:
        return [f"{indent}no pending results"]
    lines = []
    for i, r in enumerate(results, start=start):
        output = orjson.dumps(r.output).decode()
        flag = f" (error: {r.error.get('type')})" if r.error else ""
        lines.append(
            f"{indent}[{i}] {r.name} {r.call_id} -> {output if full else shorten(output)}{flag}"
        )
    return lines


def departure_note(dbg: Debugger) -> str | None:
    """What going on will do when the next request differs from the recording (else None)."""
    found = dbg.difference_from_recording()
    if found is None:
        return None
    effect = {
        "stop": "going on ends the run here (after-edit stop)",
        "live": f"going on sends it to {dbg.live_base_url} (after-edit live)",
        "ignore": "going on answers it with the recorded response anyway (after-edit ignore)",
    }[dbg.after_edit]
    return (
        f"  the next request differs from the recorded one at {describe_difference(found)}: "
        f"{effect}; change it with: after-edit stop|live|ignore"
    )


def failure_line(error: BaseException) -> str:
    """Why the run failed; a divergence says which value is the recording's."""
    if isinstance(error, ReplayDivergence):
        found = Difference(error.path, error.recorded, error.actual)
        return (
            f"the run failed: ReplayDivergence: iteration {error.iteration}: the request differs "
            f"from the recording at {describe_difference(found)}"
        )
    return f"the run failed: {type(error).__name__}: {error}"


def end_lines(dbg: Debugger, pause: Pause) -> list[str]:
    """How the run ended: failure, stop reason, final text, the replay's verdict, late hits."""
    lines = []
    result = pause.result
    if pause.error is not None:
        lines.append(failure_line(pause.error))
    if result is not None:
        lines.append(
            f"the run ended: {result.stop_reason} after "
            f"{plural(result.iterations, 'iteration')} ({usage_text(result.usage)})"
        )
        if result.turns and result.turns[-1].text:
            lines.append(f"  final text: {shorten(result.turns[-1].text, 200)}")
    if dbg.replaying:
        departure = dbg.departure
        if departure is not None:
            line = (
                f"  replay: left the recording at iteration {departure.iteration} "
                f"({departure.difference.path}), after-edit {departure.mode}"
            )
            ignored = dbg.divergences_ignored()
            if ignored:
                line += f": {plural(ignored, 'request')} off the recording answered from it anyway"
            lines.append(line)
        elif pause.error is None:
            lines.append("  replay: every request matched the recording")
    lines += [f"  {hit} (in the last turn)" for hit in dbg.end_hits()]
    return lines


def raw_lines(dbg: Debugger, what: str) -> list[str]:
    """``raw``: the next request body and the last iteration's responses, exactly."""
    lines = []
    if what in ("all", "request"):
        if dbg.ended:
            lines.append("request: none pending (the run has ended)")
        else:
            url, body = dbg.next_request()
            lines.append(
                f"request (iteration {dbg.state.iteration}, not sent yet): "
                f"POST {url}, {len(body)} bytes"
            )
            lines.append(body.decode(errors="replace"))
    if what == "request":
        return lines
    attempts = dbg.last_attempts()
    if not attempts:
        lines.append("response: none yet (no request has been sent)")
    for a in attempts:
        status = f"HTTP {a.status}" if a.status is not None else "no answer"
        lines.append(
            f"response (iteration {a.iteration}, attempt {a.attempt}): {status}, "
            f"{len(a.response)} bytes in {len(a.chunks)} chunks"
            + (f", then {a.error}" if a.error else "")
        )
        if what == "chunks":
            offset = 0
            for number, chunk in enumerate(a.chunks):
                lines.append(f"--- chunk {number}: {len(chunk)} bytes at offset {offset}")
                lines.append(repr(chunk))
                offset += len(chunk)
        elif a.response:
            # Exactly as received; only one final newline is left to the printer.
            text = a.response.decode(errors="replace")
            lines.append(text[:-1] if text.endswith("\n") else text)
    return lines


def _item(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "function_call":
        return f"function_call {item.get('name')}({shorten(str(item.get('arguments')), 60)})"
    if kind == "function_call_output":
        return (
            f"function_call_output {item.get('call_id')} -> {shorten(str(item.get('output')), 60)}"
        )
    if "role" in item:
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
        calls = item.get("tool_calls") or []
        if calls and not content:
            names = [c.get("function", {}).get("name") for c in calls if isinstance(c, dict)]
            return f"{item['role']}: calls {', '.join(str(n) for n in names)}"
        return f"{item['role']}: {shorten(str(content or ''), 80)}"
    return str(kind or "item")
