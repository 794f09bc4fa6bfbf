"""Conversations read from wire traces: session names, and the items a run ended with.

The session store (``rawloop.serve.store``) keeps sessions now; this module
holds what it shares with the trace files older servers wrote, one file per
session at ``root/{agent}/{id}/{session}.jsonl`` (``rawloop.serve.migrate``
imports them). Each turn appended a run to the file, so the file is an
ordinary rawloop trace holding several runs, each starting with its own
header line:

* ``rawloop show FILE`` prints every run, one after the other;
* ``rawloop diff A B`` compares two session files record by record, runs included;
* ``rawloop replay FILE`` replays the *first* run only and then reports the
  later runs' requests as never made (``diverged``). To replay run ``k``,
  take ``session_runs(FILE)[k]`` (a ``Trace`` of that run alone) and pass it
  to ``rawloop.replay.replay``; its first request already holds the earlier
  conversation, so it replays on its own.

How a conversation continues
----------------------------

The trace is the only store: there is no sidecar file to fall out of step
with it. ``conversation(trace)`` rebuilds the item list the last run ended
with, the same list its ``RunResult.items`` held:

1. take the last run that made a request (a run cancelled before its first
   request changed nothing and is skipped);
2. its last ``request`` record's body gives the items the model last saw
   (``input``, or for Chat ``messages`` less the leading system message when
   the loop adds its own from ``instructions``);
3. the ``decision`` of that same iteration, if one was recorded, adds the
   model's output items;
4. the ``result`` records after it add one tool output per call, in the order
   the model made the calls. A call whose result was never recorded (the run
   was cancelled while it ran) gets an output saying so, because the API
   refuses a function call without an output.

The next run's input is that list plus the new user message. So a message
whose run failed or was cancelled after its request went out stays in the
conversation (as in a chat UI where "stop" keeps your message), and the
model's next request shows it. Two limits: a request record refused by the
trace's secret scan is missing from the file, so the conversation continues
from the request before it; and a file edited by hand is trusted as it is.

``repair`` cuts a last line left unfinished by a crash.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from ..core.dialect import get_dialect
from ..trace.format import Trace

__all__ = [
    "DEFAULT_SESSION",
    "MISSING_OUTPUT",
    "check_name",
    "conversation",
    "repair",
    "session_runs",
    "split_runs",
]

DEFAULT_SESSION = "default"

#: The tool output put in place of a result the trace never got.
MISSING_OUTPUT = "Error: the run ended before this tool call returned a result"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_name(value: object, what: str) -> str:
    """``value`` when it is a safe path part; ``ValueError`` naming ``what`` otherwise.

    Allowed: 1 to 128 of ``A-Z a-z 0-9 _ . -``, and not ``.`` or ``..``.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if not _NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{what} {value[:140]!r} is not allowed: use 1 to 128 of A-Z a-z 0-9 _ . - "
            "(and not '.' or '..')"
        )
    return value


# -- reading ----------------------------------------------------------------------


def split_runs(trace: Trace) -> list[Trace]:
    """One ``Trace`` per run of an appended-to trace (each header starts a run)."""
    runs = [Trace(trace.header, [], trace.path, list(trace.warnings))]
    for record in trace.records:
        if record.kind == "header":
            runs.append(Trace(record.data, [], trace.path))
        else:
            runs[-1].records.append(record)
    return runs


def session_runs(path: str | Path) -> list[Trace]:
    """The runs of a session file, oldest first (a cut last line is dropped, not warned)."""
    return split_runs(_load(path))


def _load(path: str | Path) -> Trace:
    # A crash-cut last line is expected here and kept in trace.warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Trace.load(path)


def conversation(
    trace: Trace | str | Path, *, instructions: str | None = None
) -> list[dict[str, Any]]:
    """The items the session's last run ended with (see the module docstring).

    ``instructions`` is the loop's: for Chat, a leading system message in the
    recorded request is dropped when the loop will add its own. A missing
    file is an empty conversation.
    """
    if not isinstance(trace, Trace):
        if not Path(trace).exists():
            return []
        trace = _load(trace)
    for run in reversed(split_runs(trace)):
        items = _items_of(run, instructions)
        if items is not None:
            return items
    return []


def _items_of(run: Trace, instructions: str | None) -> list[dict[str, Any]] | None:
    records = run.records
    last = next((i for i in range(len(records) - 1, -1, -1) if records[i].kind == "request"), None)
    if last is None:
        return None
    request = records[last]
    dialect = get_dialect(run.dialect)
    body = request.data.get("body") or {}
    if dialect.name == "chat":
        items = dialect.normalize_input(body.get("messages") or [])
        if instructions and items and items[0].get("role") == "system":
            items = items[1:]  # the loop sends its own
    else:
        items = dialect.normalize_input(body.get("input") or [])
    iteration = request.iteration
    decision: dict[str, Any] | None = None
    results: dict[str, str] = {}
    for record in records[last + 1 :]:
        if record.iteration != iteration:
            continue
        if record.kind == "decision":
            decision, results = record.data["turn"], {}
        elif record.kind == "result" and decision is not None:
            results[str(record.data["call_id"])] = str(record.data["output"])
    if decision is not None:
        items.extend(decision.get("output") or ())
        calls = [str(c["call_id"]) for c in decision.get("calls") or ()]
        items.extend(dialect.tool_outputs([(c, results.get(c, MISSING_OUTPUT)) for c in calls]))
    return items


# -- writing -------------------------------------------------------------------------


def repair(path: str | Path) -> bool:
    """Cut a last line left unfinished by a crash; True when something was cut."""
    path = Path(path)
    try:
        handle = open(path, "rb+")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return False
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return False
        position, keep = end, 0
        while position > 0:
            step = min(64 * 1024, position)
            position -= step
            handle.seek(position)
            block = handle.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = position + newline + 1
                break
        handle.truncate(keep)
        return True
