"""Persistent conversations stored as wire traces: one trace file per session.

A session lives at ``root/{agent}/{id}/{session}.jsonl``. Each request runs
the loop once and appends that run to the file (``TraceRecorder`` with
``overwrite=False``), so the file is an ordinary rawloop trace holding
several runs, each starting with its own header line:

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

Files are repaired before appending: a last line cut short by a crash is
removed, so the new run's header starts on a line of its own.

Requests to one session are serialised in process with an ``anyio.Lock`` per
file; several server processes sharing one directory are not coordinated.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..core.dialect import get_dialect
from ..loop.loop import Loop
from ..loop.state import RunResult
from ..trace.format import Trace
from ..trace.recorder import TraceRecorder

__all__ = [
    "DEFAULT_SESSION",
    "MISSING_OUTPUT",
    "SessionStore",
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


@dataclass
class _Lock:
    lock: anyio.Lock
    users: int = 0


class SessionStore:
    """Session files under ``root`` and a lock per session.

    ``await store.run(loop, agent, id, session, message)`` is one turn of a
    conversation: it waits for the session's lock, rebuilds the conversation
    from the file, runs the loop with it and the new message, and appends the
    run to the file.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._locks: dict[Path, _Lock] = {}

    def path(self, agent: str, id: str, session: str | None = None) -> Path:
        """The file of one session (every part checked with ``check_name``)."""
        return (
            self.root
            / check_name(agent, "agent name")
            / check_name(id, "id")
            / f"{check_name(session or DEFAULT_SESSION, 'session')}.jsonl"
        )

    @asynccontextmanager
    async def lock(self, path: Path) -> AsyncIterator[None]:
        """Hold the session's lock (locks no one waits for are forgotten)."""
        entry = self._locks.get(path)
        if entry is None:
            entry = self._locks[path] = _Lock(anyio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[path]

    async def history(self, path: Path, instructions: str | None = None) -> list[dict[str, Any]]:
        """``conversation(path)``, read in a worker thread."""
        return await anyio.to_thread.run_sync(lambda: conversation(path, instructions=instructions))

    def recorder(self, path: Path, metadata: dict[str, Any] | None = None) -> TraceRecorder:
        """A recorder appending one run to ``path`` (a cut last line removed first)."""
        repair(path)
        return TraceRecorder(path, overwrite=False, metadata=metadata)

    async def run(
        self,
        loop: Loop,
        agent: str,
        id: str,
        session: str | None,
        message: str,
        *,
        hooks: Iterable[Any] = (),
    ) -> RunResult:
        """One turn of the conversation; the new run is appended to the session file."""
        path = self.path(agent, id, session)
        async with self.lock(path):
            items = await self.history(path, loop.instructions)
            metadata = {"session": {"agent": agent, "id": id, "name": session or DEFAULT_SESSION}}
            recorder = self.recorder(path, metadata)
            try:
                return await loop.run(
                    [*items, *loop.dialect.normalize_input(message)], hooks=[recorder, *hooks]
                )
            finally:
                recorder.close()  # on_end closes it too; this covers a run that never began
