"""The debugger's plumbing around one run: its hooks, its recording, its replay-or-live wire.

A ``Debugger`` gives its run these hooks, in this order: ``RecordedEdits``
(replays only), the caller's own hooks, the ``SessionRecorder`` and last the
``Watcher``, so the recorder and the watcher see the state after every other
hook changed it.

- ``Attempt`` and ``Departure`` are what the debugger keeps of the run: each
  HTTP attempt as it went over the wire, and where a replay left its recording.
- ``Watcher`` hands each breakpoint to the debugger (which pauses there or
  not), keeps every HTTP attempt as an ``Attempt``, notes the iteration's
  failures (the ``error`` breakpoint reads them) and reports one line per
  thing the run does.
- ``RecordedEdits`` puts the recording's own breakpoint edits back, as
  ``rawloop replay`` does, and once the run has left the recording still
  applies the ones that fit.
- ``SessionRecorder`` writes the session as a trace, edits included, so that
  ``Debugger.save`` is a copy of its file.
- ``ReplayOrLiveTransport`` answers from the trace until the debugger switches
  it to a real connection: the run keeps one httpx client from start to end,
  so the switch has to happen below the client.

These talk to the debugger only through what they are given (callables and
lists), never through the ``Debugger`` itself. Every ``on_*`` attribute of a
hook is taken for a hook point, so only the hook methods are named that way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from ..core import jsonpath, patch
from ..core.jsondiff import Difference
from ..loop.hooks import (
    ChunkInfo,
    DecisionInfo,
    EditInfo,
    ErrorInfo,
    RequestInfo,
    ResponseInfo,
    ResultInfo,
)
from ..loop.state import LoopState
from ..loop.tools import ToolResult
from ..replay.replayer import Replayer, ReplayTransport
from ..trace.recorder import TraceRecorder
from .edits import state_document
from .wording import describe_difference, describe_op, describe_turn, shorten

__all__ = [
    "Attempt",
    "Departure",
    "RecordedEdits",
    "ReplayOrLiveTransport",
    "SessionRecorder",
    "Watcher",
]


@dataclass
class Departure:
    """Where a replayed run left its recording, and what it does about it."""

    iteration: int
    difference: Difference
    mode: str

    def __str__(self) -> str:
        return (
            f"the run has left the recording at iteration {self.iteration}: the request "
            f"differs from the recorded one at {describe_difference(self.difference)}"
        )


@dataclass
class Attempt:
    """One HTTP attempt as it went over the wire: the request and the raw answer."""

    iteration: int
    attempt: int
    method: str
    url: str
    body: bytes
    status: int | None = None
    chunks: list[bytes] = field(default_factory=list)
    error: str | None = None

    @property
    def response(self) -> bytes:
        """The response body, exactly as received."""
        return b"".join(self.chunks)


class Watcher:
    """The debugger's hook: pauses at breakpoints, keeps the wire, reports progress.

    Args:
        pause: awaited at every breakpoint; returns when the run may go on.
        report: gets one line of text for each thing the run does.
        attempts: where each HTTP attempt is appended.
        errors: where the failures of the current iteration are appended
            (whoever owns the list empties it at each breakpoint).
    """

    def __init__(
        self,
        pause: Callable[[LoopState], Awaitable[None]],
        report: Callable[[str], None],
        attempts: list[Attempt],
        errors: list[str],
    ) -> None:
        self.pause = pause
        self.report = report
        self.attempts = attempts
        self.errors = errors

    async def on_breakpoint(self, state: LoopState) -> None:
        await self.pause(state)

    def on_request(self, info: RequestInfo) -> None:
        self.attempts.append(
            Attempt(info.iteration, info.attempt, info.method, info.url, info.body)
        )

    def on_response(self, info: ResponseInfo) -> None:
        if self.attempts:
            self.attempts[-1].status = info.status

    def on_chunk(self, info: ChunkInfo) -> None:
        if self.attempts:
            self.attempts[-1].chunks.append(info.data)

    def on_error(self, info: ErrorInfo) -> None:
        text = f"{type(info.error).__name__}: {info.error}"
        if info.where == "request" and self.attempts:
            self.attempts[-1].error = text
        failed = f"{info.where} failed: {shorten(text)}"
        self.errors.append(failed)
        retry = f"; retrying in {info.delay:g} s" if info.will_retry else ""
        self.report(f"iteration {info.iteration}, attempt {info.attempt}: {failed}{retry}")

    def on_decision(self, info: DecisionInfo) -> None:
        self.report(f"iteration {info.iteration}: {describe_turn(info.turn)}")

    def on_result(self, info: ResultInfo) -> None:
        result: ToolResult = info.result
        if result.error is not None:
            self.errors.append(f"tool {result.name} failed: {result.error.get('type')}")
        flag = f" (error: {result.error.get('type')})" if result.error else ""
        output = shorten(orjson.dumps(result.output).decode())
        self.report(f"iteration {info.iteration}: {result.name} {result.call_id} -> {output}{flag}")

    def on_edit(self, info: EditInfo) -> None:
        ops = ", ".join(describe_op(o) for o in info.patch)
        self.report(f"iteration {info.iteration}: edited ({ops})")


class RecordedEdits:
    """Puts the recording's own breakpoint edits back (as replay does), while they still fit.

    Args:
        replayer: the recording's edits and stop.
        still_recorded: whether the run still matches its recording; once it
            does not, an edit that no longer applies is left out (and
            reported), and the recorded stop no longer applies.
        report: gets one line of text for each edit left out.
    """

    def __init__(
        self,
        replayer: Replayer,
        still_recorded: Callable[[], bool],
        report: Callable[[str], None],
    ) -> None:
        self.replayer = replayer
        self.still_recorded = still_recorded
        self.report = report

    def on_breakpoint(self, state: LoopState) -> None:
        if self.still_recorded():
            self.replayer.on_breakpoint(state)
            return
        ops = self.replayer.edits.get(state.iteration)
        if not ops:
            return
        try:
            state.update_from(patch.apply(state.to_dict(), ops))
        except patch.PatchError as exc:
            self.report(
                f"iteration {state.iteration}: the recorded edit no longer fits the run "
                f"and was left out ({exc})"
            )


class SessionRecorder(TraceRecorder):
    """The session's recording. Iteration 0 edits are written as whole-field replacements.

    ``replay`` builds its first state from the first recorded request, which
    already holds the iteration-0 edits, and then applies them again: an
    ``add /input/-`` would add the item twice. Replacing whole fields means the
    same either way, so the saved trace replays identically.

    ``state`` returns the run's current state (the edits are recorded as of it).
    """

    def __init__(self, path: Path, state: Callable[[], LoopState]) -> None:
        super().__init__(path, metadata={"rawloop_step": True})
        self.state = state

    def ops(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``ops`` as they are recorded at the current iteration."""
        state = self.state()
        if state.iteration != 0:
            return ops
        doc = state_document(state)
        fields = dict.fromkeys(jsonpath.parse(o["path"])[0] for o in ops if o.get("path"))
        return [{"op": "replace", "path": f"/{f}", "value": doc[str(f)]} for f in fields]

    def on_edit(self, info: EditInfo) -> None:
        if info.iteration == 0:
            info = EditInfo(0, self.ops(info.patch))
        super().on_edit(info)


class ReplayOrLiveTransport(httpx.AsyncBaseTransport):
    """Replays until told to go live (``LoopRun`` holds on to its client for the whole run)."""

    def __init__(self, replay: ReplayTransport) -> None:
        self.replay = replay
        self._live: httpx.AsyncHTTPTransport | None = None

    @property
    def target(self) -> httpx.AsyncBaseTransport:
        """Where requests go now: the replay, or the live connection once there is one."""
        return self.replay if self._live is None else self._live

    def go_live(self) -> None:
        self._live = httpx.AsyncHTTPTransport()

    def ignore_divergence(self) -> None:
        self.replay.responder.on_divergence = "warn"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.target.handle_async_request(request)

    async def aclose(self) -> None:
        await self.replay.aclose()
        if self._live is not None:
            await self._live.aclose()
