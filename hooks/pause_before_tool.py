"""Pause at the breakpoint after the model called chosen tools, until Enter is pressed.

At each breakpoint (``on_breakpoint``, before the next request is built), if
the last turn called a tool named in ``RAWLOOP_PAUSE_TOOLS``, this hook
prints every call of that turn with its arguments and its pending result (the
tools have run; their outputs are about to be sent to the model) to stderr
and waits for a line on stdin:

- Enter goes on;
- ``q`` (or ``quit``, ``stop``) stops the run before the results are sent,
  with the stop reason ``paused: stopped by user``.

When stdin is not a terminal (CI, a pipe, a background job) it prints the
same and goes on at once: it never waits for input nobody can give. End of
input (Ctrl-D) also goes on.

Environment variables (read at each breakpoint):

``RAWLOOP_PAUSE_TOOLS``
    Comma-separated tool names to pause on (``multiply,search``); ``*``
    pauses after any tool call. Unset or empty: never pause.
``RAWLOOP_PAUSE_PREVIEW``
    How many characters of each argument string and output to print
    (default 2000); the rest is elided with a note of its length.
"""

from __future__ import annotations

import os
import sys

import anyio.to_thread

from rawloop.core.redact import redact_text
from rawloop.loop.state import LoopState

_STOP_WORDS = frozenset({"q", "quit", "stop"})


def _tools_to_pause_on() -> frozenset[str]:
    raw = os.environ.get("RAWLOOP_PAUSE_TOOLS", "")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _preview_limit() -> int:
    raw = os.environ.get("RAWLOOP_PAUSE_PREVIEW", "2000").strip() or "2000"
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError(f"RAWLOOP_PAUSE_PREVIEW must be a whole number, not {raw!r}") from None
    if limit < 0:
        raise ValueError(f"RAWLOOP_PAUSE_PREVIEW must not be negative, not {limit}")
    return limit


def _preview(text: str, limit: int) -> str:
    text = redact_text(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more of {len(text)} characters]"


def _say(text: str) -> None:
    stream = sys.stderr  # looked up each time: a test or the CLI may swap it
    stream.write(text)
    stream.flush()


def _is_interactive() -> bool:
    stdin = sys.stdin
    try:
        return stdin is not None and not stdin.closed and stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _read_line() -> str:
    return sys.stdin.readline()


async def on_breakpoint(state: LoopState) -> None:
    turn = state.last_turn
    wanted = _tools_to_pause_on()
    if turn is None or not turn.calls or not wanted:
        return
    names = [call.name for call in turn.calls]
    if "*" not in wanted and not wanted.intersection(names):
        return
    limit = _preview_limit()
    results = {result.call_id: result for result in state.results}
    lines = [
        f"--- paused before iteration {state.iteration}: the model called "
        f"{len(turn.calls)} tool{'s' if len(turn.calls) != 1 else ''}"
    ]
    for number, call in enumerate(turn.calls, start=1):
        lines.append(
            f"  [{number}] {call.name}({_preview(call.arguments, limit)})  id={call.call_id}"
        )
        result = results.get(call.call_id)
        if result is None:
            lines.append("      (no pending result)")
            continue
        status = "ok" if result.error is None else f"error {result.error.get('type', '?')}"
        lines.append(
            f"      {status} in {result.duration:.3f} s -> {_preview(result.output, limit)}"
        )
    if not _is_interactive():
        lines.append("--- stdin is not a terminal: going on")
        _say("\n".join(lines) + "\n")
        return
    lines.append("--- Enter to send these results and go on, q to stop the run: ")
    _say("\n".join(lines))
    # Read in a worker thread so the event loop (and other runs on it) keeps going.
    answer = await anyio.to_thread.run_sync(_read_line)
    if answer.strip().lower() in _STOP_WORDS:
        state.stop("paused: stopped by user")
        _say("--- stopping the run\n")
