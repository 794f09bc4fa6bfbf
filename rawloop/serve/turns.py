"""One turn of a stored session: run it, store it once, and give it back as a trace.

Theory of operation
-------------------

A turn is one run of the loop over the conversation so far plus a new
message. It is recorded with an ordinary ``TraceRecorder`` (so the same
redaction and secret scan apply) into a scratch file, then stored as a
``NewTurn``:

* ``items``: what the conversation gained, the items the run ended with
  (``rawloop.serve.sessions.conversation``) less the ones it started with;
* ``records``: the run's trace records, except that each request body's
  conversation list (``input``, or ``messages`` for Chat) is replaced by a
  reference ``{"$rawloop.conversation": {"head": [...], "items": k,
  "tail": [...]}}``: ``head`` (a Chat system message, say), then the first
  ``k`` items of the session's conversation as of the end of this turn, then
  ``tail``. A body is only referenced when that rebuilds it exactly.

So a session of n turns stores each item once (not once per later request),
and ``turn_trace`` rebuilds any turn as the very trace the recorder wrote,
which ``rawloop replay`` replays on its own (its first request holds the
earlier conversation). A run cancelled before its first request stores
nothing; a failed or cancelled run that made a request keeps the user's
message (see ``sessions.conversation``).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson

from ..loop.loop import Loop
from ..loop.state import RunResult
from ..trace.format import Trace
from ..trace.recorder import TraceRecorder
from .sessions import conversation
from .store import (
    DEFAULT_LEASE,
    NewTurn,
    SessionFull,
    SessionKey,
    SessionStore,
    StoredTurn,
    StoreError,
)

__all__ = [
    "REFERENCE",
    "encode_run",
    "expand_records",
    "run_turn",
    "session_trace",
    "turn_trace",
]

#: The key of a request body's conversation list stored as a reference.
REFERENCE = "$rawloop.conversation"
_LIST_KEYS = ("input", "messages")


def _compress(body: Mapping[str, Any], items: Sequence[Any]) -> dict[str, Any]:
    out = dict(body)
    for name in _LIST_KEYS:
        value = body.get(name)
        if not isinstance(value, list):
            continue
        best: tuple[int, int] = (0, 0)  # (k, head)
        for head in (0, 1):
            k = 0
            while k < len(items) and head + k < len(value) and value[head + k] == items[k]:
                k += 1
            best = max(best, (k, head))
        k, head = best
        if k:
            out[name] = {REFERENCE: {"head": value[:head], "items": k, "tail": value[head + k :]}}
    return out


def _expand(body: Mapping[str, Any], items: Sequence[Any]) -> dict[str, Any]:
    out = dict(body)
    for name in _LIST_KEYS:
        value = body.get(name)
        if isinstance(value, dict) and REFERENCE in value:
            ref = value[REFERENCE]
            if not isinstance(ref, dict) or not isinstance(ref.get("items"), int):
                raise StoreError(f"a stored request's {name} holds a bad conversation reference")
            k = ref["items"]
            if k > len(items):
                raise StoreError(
                    f"a stored request refers to {k} conversation items; the session has "
                    f"{len(items)}"
                )
            out[name] = [*(ref.get("head") or ()), *items[:k], *(ref.get("tail") or ())]
    return out


def encode_run(
    run: Trace | None,
    before: Sequence[Mapping[str, Any]],
    *,
    instructions: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> NewTurn | None:
    """The ``NewTurn`` of a recorded run that began with ``before``.

    ``None`` when there is no run or it never sent a request (it changed nothing).
    """
    if run is None or not any(r.kind == "request" for r in run.records):
        return None
    records = [run.header, *(r.data for r in run.records)]
    after = conversation(run, instructions=instructions)
    common = 0
    while common < min(len(before), len(after)) and before[common] == after[common]:
        common += 1
    if common < len(before):
        # An edit (a breakpoint, a hook) rewrote earlier items: the stored
        # history keeps what was said; this turn adds what followed it.
        warnings.warn(
            "rawloop.serve: a turn changed earlier conversation items; only its new items are kept",
            RuntimeWarning,
            stacklevel=2,
        )
    new = after[common:] if common == len(before) else after[len(before) :]
    full = [*before, *new]
    stored = [
        {**r, "body": _compress(r["body"], full)}
        if r.get("kind") == "request" and isinstance(r.get("body"), Mapping)
        else dict(r)
        for r in records
    ]
    end = next((r for r in reversed(records) if r.get("kind") == "end"), None)
    decision = next((r for r in reversed(records) if r.get("kind") == "decision"), None)
    meta = dict(metadata or {})
    if decision is not None and isinstance(decision.get("turn"), Mapping):
        meta.setdefault("text", decision["turn"].get("text"))
    if end is not None:
        meta.setdefault("stop_reason", end.get("stop_reason"))
        meta.setdefault("usage", end.get("usage"))
        meta.setdefault("error", end.get("error"))
    return NewTurn(items=new, records=stored, metadata=meta)


def expand_records(turns: Sequence[StoredTurn], index: int) -> list[dict[str, Any]]:
    """Turn ``index``'s records as recorded (``turns`` holds at least turns 0..index)."""
    by_index = {t.index: t for t in turns}
    if index not in by_index:
        raise StoreError(f"no turn {index} in this session")
    items = [item for i in range(index + 1) for item in by_index[i].items]
    return [
        {**r, "body": _expand(r["body"], items)}
        if r.get("kind") == "request" and isinstance(r.get("body"), Mapping)
        else r
        for r in by_index[index].records
    ]


def turn_trace(turns: Sequence[StoredTurn], index: int) -> bytes:
    """Turn ``index`` as a trace file of its own, which replays alone."""
    return b"".join(orjson.dumps(r) + b"\n" for r in expand_records(turns, index))


def session_trace(turns: Sequence[StoredTurn]) -> bytes:
    """Every turn, one run after another (each run starts with its header), as one file."""
    return b"".join(turn_trace(turns, t.index) for t in sorted(turns, key=lambda t: t.index))


def _read_run(path: Path) -> Trace | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cut last line: dropped
        return Trace.load(path)


async def run_turn(
    store: SessionStore,
    loop: Loop,
    key: SessionKey,
    message: str | list[dict[str, Any]],
    *,
    hooks: Iterable[Any] = (),
    metadata: Mapping[str, Any] | None = None,
    lock_lease: float = DEFAULT_LEASE,
    turn_metadata: Mapping[str, Any] | None = None,
    keep: Callable[[], Awaitable[bool]] | None = None,
) -> RunResult:
    """One turn of session ``key``: lock it, run ``loop`` on its history and ``message``, store it.

    The turn is stored however the run ends (an error or a cancellation
    included) once it sent a request. Raises ``SessionFull`` before running
    when the session holds its most turns. ``lock_lease``: seconds before the
    lock of a process that died is taken over. ``turn_metadata`` goes into the
    stored turn's metadata; ``keep()``, when given, is asked before storing and
    a false answer drops the turn (a dispatch whose lease another worker took).
    """
    async with store.lock(key, lease=lock_lease):
        info = await store.session(key)
        if info is not None and info.turns >= store.limits.max_turns:
            raise SessionFull(f"session {key} has {info.turns} turns, the most it may hold")
        before = await store.history(key)
        header_meta = {"session": key.document(), **(metadata or {})}
        with tempfile.TemporaryDirectory(prefix="rawloop-turn-") as scratch:
            path = Path(scratch) / "turn.jsonl"
            recorder = TraceRecorder(path, metadata=header_meta)
            try:
                return await loop.run(
                    [*before, *loop.dialect.normalize_input(message)], hooks=[recorder, *hooks]
                )
            finally:
                recorder.close()
                with anyio.CancelScope(shield=True):
                    run = await anyio.to_thread.run_sync(_read_run, path)
                    turn = encode_run(
                        run,
                        before,
                        instructions=loop.instructions,
                        metadata={"model": loop.model, **(turn_metadata or {})},
                    )
                    if turn is not None and (keep is None or await keep()):
                        await store.append_turn(key, turn)
