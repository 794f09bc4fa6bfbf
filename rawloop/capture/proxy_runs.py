"""Which tool-loop run a proxied request belongs to, and that run's trace.

The recording proxy (``rawloop.capture.proxy``) sees HTTP requests, not runs. This
module decides, from each request body alone, which run it continues, and
writes each run's trace with the real ``TraceRecorder``. It never touches a
socket; the proxy feeds each ``Attempt`` (``rawloop.capture.proxy_attempt``)
what crossed the wire.

Theory of operation. ``RunTable.claim(dialect, body)`` compares the request
with the runs it has open (at most ``max_runs``, least recently used first
to go):

1. **A retry**: the run's last attempt failed (a non-2xx status, a broken or
   unparsable stream, a client that went away) and this body equals that
   attempt's, ``model`` aside (a fallback model counts as another attempt
   too). It becomes the next ``attempt`` of the same ``iteration``.
2. **The next iteration**: the run's last attempt produced a turn with tool
   calls, and this request's ``input`` (Responses) or ``messages`` (Chat)
   starts with that attempt's conversation followed by the turn's output, or
   names the turn's response in ``previous_response_id``. The items after
   that prefix hold the tool outputs (``function_call_output`` items, ``tool``
   messages): they become the ``result`` records of the previous iteration.
3. Anything else starts a new run: a new trace file.

Items are compared by their ``rawloop.core.conversation.item_key``, so that a
client which renders the same item differently (an SDK that drops null
fields, or sends ``"type": "message"``) still continues its run. A run's
conversation is kept as a chain of digests, one per prefix, and the table
indexes its runs by what may continue them (a failed body's key, a
conversation's digest, a response id): a claim costs one digest and one
dictionary lookup per item of the request, however many runs are open.

The proxy cannot see the tools run, so a ``result`` record's ``duration`` is
the client's whole pause between the answer and its next request, and its
``error`` is null (a failed tool's text is its output, as the model sees it).

A run ends when a turn calls no tool (``end`` with ``completed``, or
``incomplete`` when the server cut it short), as a loop's does; runs still
open when the table is closed, or pushed out of it by newer ones, end with
``recording-stopped``. A run busy with an attempt is never pushed out.
"""

from __future__ import annotations

import datetime
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.conversation import body_key, chain, conversation, item_key, tool_outputs
from ..core.redact import redact_text
from ..core.turn import Turn
from ..loop.hooks import EndInfo, ResultInfo
from ..loop.tools import ToolResult
from ..trace.recorder import Redactor, TraceRecorder
from .proxy_attempt import Attempt

__all__ = ["DEFAULT_MAX_RUNS", "STOPPED", "Attempt", "Run", "RunTable"]

logger = logging.getLogger("rawloop.proxy")

#: Runs kept open at once; past that the least recently used idle one ends.
DEFAULT_MAX_RUNS = 256
#: The stop reason of a run the recording stopped (shutdown, or pushed out of the table).
STOPPED = "recording-stopped"


# -- runs ---------------------------------------------------------------------------------


@dataclass(eq=False)
class Run:
    """One tool-loop run as the proxy saw it, written to its own trace file.

    ``state`` is ``busy`` (an attempt is in flight), ``failed`` (its last
    attempt failed: a retry may follow), ``waiting`` (its last turn called
    tools: the next iteration may follow) or ``ended``.
    """

    number: int
    path: Path
    recorder: TraceRecorder
    dialect: str
    started: float
    iteration: int = 0
    attempt: int = 0
    state: str = "busy"
    retry_key: bytes = b""  # what a retry of the last attempt repeats
    history: bytes = b""  # the digest of the conversation a continuation starts with
    turn: Turn | None = None  # the last turn, while waiting for its tool outputs
    turn_done: float = 0.0
    turns: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None  # why the last attempt failed
    used: int = 0  # when the run was last used, in claims: larger is more recent
    keys: list[bytes] = field(default_factory=list)  # where the table's index lists the run
    watch: Callable[[str, str, Any], None] | None = None  # sees each record (record --tail)

    @property
    def name(self) -> str:
        return self.path.name

    def write(self, point: str, info: Any, iteration: int = 0, attempt: int = 0) -> None:
        """Call ``recorder.<point>(info)``, then the watcher (``record --tail``).

        The recorder writes every record: what looks like a key is replaced and
        the record says so (``withheld``), so nothing here is refused.
        """
        getattr(self.recorder, point)(info)
        if self.watch is not None:
            try:
                self.watch(self.name, point, info)
            except Exception as exc:  # a watcher (a closed terminal) never stops the recording
                logger.warning("%s: watching failed: %s", self.name, exc)
                self.watch = None

    def end(self, stop_reason: str, now: float, error: BaseException | None = None) -> None:
        """Write the ``end`` record and close the file."""
        if self.state == "ended":
            return
        self.state = "ended"
        self.turn = None
        info = EndInfo(stop_reason, self.turns, dict(self.usage), now - self.started, error)
        self.write("on_end", info)
        self.recorder.close()


# -- the table --------------------------------------------------------------------------------


class RunTable:
    """The open runs, and the trace files they are written to.

    Args:
        directory: where trace files go (``run-<UTC timestamp>-<n>.jsonl``).
        redact: the ``Redactor`` every recorder uses (the default headers are
            always redacted).
        metadata: goes into every trace's header.
        max_runs: open runs kept; past that the least recently used idle run
            ends with ``recording-stopped``.

    ``paths`` lists every trace file started, in order.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        redact: Redactor | None = None,
        metadata: dict[str, Any] | None = None,
        max_runs: int = DEFAULT_MAX_RUNS,
        watch: Callable[[str, str, Any], None] | None = None,
    ) -> None:
        if max_runs < 1:
            raise ValueError(f"max_runs must be at least 1, not {max_runs}")
        self.directory = Path(directory)
        self.redact = redact or Redactor()
        self.metadata = dict(metadata or {})
        self.max_runs = max_runs
        self.watch = watch  # given (run file name, hook point, info) for each record
        self.paths: list[Path] = []
        self.runs: OrderedDict[int, Run] = OrderedDict()  # least recently used first
        # What may continue a run -> the runs: ``retry:`` + the failed body's key,
        # ``follow:`` + the digest of the conversation so far, ``response:`` + its id.
        self._index: dict[bytes, dict[int, Run]] = {}
        self._count = 0
        self._used = 0

    def claim(
        self, dialect: str, body: dict[str, Any], *, base_url: str, now: float, raw: bytes = b""
    ) -> Attempt:
        """The attempt ``body`` is: a retry, the next iteration of an open run, or a new run.

        ``base_url`` goes into a new run's header; ``raw`` is the body's bytes.
        """
        items = conversation(dialect, body)
        digests = chain(dialect.encode(), (item_key(item) for item in items))
        retry_key = body_key(dialect, body)
        run: Run | None = None
        found = self._index.get(b"retry:" + retry_key)
        if found:  # the most recent failure with this body
            run = max(found.values(), key=lambda r: r.used)
            run.attempt += 1
        else:
            # The longest conversation this one continues; among equal ones, the turn that
            # finished first. Then a turn named by previous_response_id (every item is new).
            start = len(items)
            while start > 0 and not self._index.get(b"follow:" + digests[start]):
                start -= 1
            if start > 0:
                found = self._index[b"follow:" + digests[start]]
            else:
                previous = body.get("previous_response_id")
                if isinstance(previous, str):
                    found = self._index.get(f"response:{dialect}:{previous}".encode())
            if found:
                run = min(found.values(), key=lambda r: r.turn_done)
                self._results(run, items[start:], now)
                run.iteration, run.attempt, run.turn = run.iteration + 1, 0, None
        if run is None:
            run = self._start(dialect, body, base_url, now)
        run.retry_key = retry_key
        self.park(run, "busy")
        return Attempt(self, run, dialect, body, now, digests[-1], raw)

    def park(self, run: Run, state: str) -> None:
        """Put ``run`` in ``state`` and index it by what may continue it; it is the most recent."""
        self._unindex(run)
        run.state = state
        if state == "failed":
            self._add(run, b"retry:" + run.retry_key)
        elif state == "waiting":
            assert run.turn is not None
            self._add(run, b"follow:" + run.history)
            if run.turn.response_id:
                self._add(run, f"response:{run.dialect}:{run.turn.response_id}".encode())
        self._used += 1
        run.used = self._used
        if run.number in self.runs:
            self.runs.move_to_end(run.number)

    def end(self, run: Run, stop_reason: str, now: float) -> None:
        """End ``run`` (its ``end`` record, with the last error if its last attempt failed)."""
        self.runs.pop(run.number, None)
        self._unindex(run)
        run.end(stop_reason, now, run.error if run.state == "failed" else None)

    def close(self, now: float, stop_reason: str = STOPPED) -> None:
        """End every open run: what the proxy does when it stops."""
        for run in list(self.runs.values()):
            self.end(run, stop_reason, now)

    # -- helpers ------------------------------------------------------------------------------

    def _add(self, run: Run, key: bytes) -> None:
        self._index.setdefault(key, {})[run.number] = run
        run.keys.append(key)

    def _unindex(self, run: Run) -> None:
        for key in run.keys:
            found = self._index.get(key)
            if found is not None:
                found.pop(run.number, None)
                if not found:
                    del self._index[key]
        run.keys.clear()

    def _results(self, run: Run, new_items: Sequence[Any], now: float) -> None:
        """The previous turn's tool results, as the client sent them back."""
        assert run.turn is not None
        outputs = tool_outputs(run.dialect, new_items)
        # The proxy cannot see the tools run: the duration is the client's whole pause.
        duration = max(now - run.turn_done, 0.0)
        for call in run.turn.calls:
            if call.call_id in outputs:
                result = ToolResult(
                    call.call_id, call.name, call.arguments, outputs[call.call_id], None, duration
                )
                run.write("on_result", ResultInfo(run.iteration, result), run.iteration)

    def _start(self, dialect: str, body: dict[str, Any], base_url: str, now: float) -> Run:
        self._make_room(now)
        self._count += 1
        path = self._reserve()
        # Appending to the empty file just made: no truncation (which on ext4 makes every
        # close of the file wait for the disk).
        recorder = TraceRecorder(path, redact=self.redact, metadata=self.metadata, overwrite=False)
        run = Run(self._count, path, recorder, dialect, now, watch=self.watch)
        # Redacted before, not refused after: a trace without its header would not load.
        recorder.write_header(
            dialect, redact_text(str(body.get("model", ""))), redact_text(base_url)
        )
        self.runs[run.number] = run
        self.paths.append(path)
        logger.debug("new run %s", path.name)
        return run

    def _make_room(self, now: float) -> None:
        while len(self.runs) >= self.max_runs:
            idle = next((r for r in self.runs.values() if r.state != "busy"), None)
            if idle is None:
                return  # every run is mid-attempt: go over the bound for a while
            self.end(idle, STOPPED, now)

    def _reserve(self) -> Path:
        """A new file name, created empty so that no other process takes it."""
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        number = self._count
        while True:
            path = self.directory / f"run-{stamp}-{number}.jsonl"
            try:
                path.touch(exist_ok=False)
            except FileExistsError:
                number += 1
                continue
            except FileNotFoundError:  # the first run (or the directory was removed)
                self.directory.mkdir(parents=True, exist_ok=True)
                continue
            return path
