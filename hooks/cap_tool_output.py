"""Cap each tool output before it is sent to the model.

At each breakpoint (``on_breakpoint``) this hook cuts every pending tool
result (``state.results[i].output``) longer than the limit down to its first
``RAWLOOP_MAX_TOOL_OUTPUT`` characters and appends a marker saying how much
was cut::

    ...first 4000 characters...
    [cap_tool_output: cut 12345 of 16345 characters]

This is an edit of the loop state, so it is what the model receives, and a
trace of the run records it as a breakpoint patch (an ``edit`` record with a
``replace`` of ``/results/N/output``); the ``result`` records keep the full
outputs the tools returned. Outputs at or under the limit are left alone.

Environment variables (read at each breakpoint):

``RAWLOOP_MAX_TOOL_OUTPUT``
    The most characters of each output to keep (default 4000). A value that
    is not a whole number >= 0 stops the run with a ``HookError`` naming it.
"""

from __future__ import annotations

import os

from rawloop.loop.state import LoopState

DEFAULT_LIMIT = 4000


def max_chars() -> int:
    """The configured limit (``RAWLOOP_MAX_TOOL_OUTPUT``, else 4000)."""
    raw = os.environ.get("RAWLOOP_MAX_TOOL_OUTPUT", "").strip()
    if not raw:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError(f"RAWLOOP_MAX_TOOL_OUTPUT must be a whole number, not {raw!r}") from None
    if limit < 0:
        raise ValueError(f"RAWLOOP_MAX_TOOL_OUTPUT must not be negative, not {limit}")
    return limit


def cap(output: str, limit: int) -> str:
    """``output`` cut to ``limit`` characters plus a marker, or unchanged if it fits."""
    if len(output) <= limit:
        return output
    cut = len(output) - limit
    return f"{output[:limit]}\n[cap_tool_output: cut {cut} of {len(output)} characters]"


def on_breakpoint(state: LoopState) -> None:
    limit = max_chars()
    for result in state.results:
        capped = cap(result.output, limit)
        if capped != result.output:
            result.output = capped
