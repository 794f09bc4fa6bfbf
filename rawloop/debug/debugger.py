"""A debugger for tool loops: pause a run at its breakpoints, look, change, go on.

``Debugger`` is the engine behind ``rawloop step`` (``rawloop.debug.console``
is the shell around it), and it is usable from Python as it is::

    from rawloop.debug.debugger import Debugger

    with Debugger.for_trace("traces/tool-roundtrip.jsonl", after_edit="ignore") as dbg:
        dbg.start()                                   # paused at iteration 0
        dbg.next()                                    # paused at iteration 1
        dbg.set_result("call_sV", "42")               # the multiply result, before it is sent
        dbg.cont()                                    # on to the end
        dbg.save("edited.jsonl")                      # replays identically

How it works: the loop runs in a worker thread with its own event loop (an
anyio blocking portal). The debugger's breakpoint hook hands control to the
calling thread through a pair of queues and waits (in ``anyio.to_thread``)
until it is told to go on; while it waits, the caller reads and changes the
``LoopState``, which nothing else touches then. Every change goes
``LoopState.to_dict()`` -> RFC 6902 patch -> ``update_from``, so the loop
reports it to ``on_edit`` and the session's recorder writes it as an ``edit``
record: ``save`` copies that recording.

A replayed run (``for_trace``) answers from the trace. When an edit makes the
next request differ from the recorded one, the run has left the recording;
``after_edit`` says what happens on resuming: ``stop`` ends the run there,
``live`` sends it (and what follows) to ``live_base_url`` with a plain httpx
transport, ``ignore`` keeps answering with the recorded responses.

The worker thread stops when the run ends, and a debugger still open at
interpreter exit is closed then, so a script that never calls ``close()``
exits; ``with`` (or ``close()``) also cancels a run left paused and removes
the session's files at once.

This module is the engine: the thread handoff, the stepping API, the
conditional breakpoints' bookkeeping and leaving the recording. The parts it
uses live apart, and their public names can be imported from here too:
reading, changing and saving the paused state in ``rawloop.debug.access``
(``StateAccess``) and leaving the recording in ``rawloop.debug.departure``
(``Departing``; ``Debugger`` extends both), conditional breakpoints in
``rawloop.debug.breakpoints``, turning edits into checked patches in
``rawloop.debug.edits``, the run's hooks, recorder and replay-or-live
transport in ``rawloop.debug.session``, one-line wording in
``rawloop.debug.wording``.

The same pause without this engine: ``Loop.iter()`` with an ``on_breakpoint``
hook, which may change the state in place (see the README, "Breakpoints from
Python").
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx

from ..loop.loop import Loop, LoopRun
from ..loop.state import LoopState, RunResult
from ..loop.tools import Tool
from ..replay.replayer import Replayer, ReplayTransport, first_input, loop_from_trace
from ..trace.format import Trace
from .breakpoints import CONDITION_KINDS as CONDITION_KINDS  # still importable from here
from .breakpoints import Condition, parse_condition
from .departure import AFTER_EDIT_MODES as AFTER_EDIT_MODES  # importable from here
from .departure import LEFT_RECORDING as LEFT_RECORDING
from .departure import Departing, check_after_edit
from .edits import state_document
from .errors import StepError
from .session import (
    Attempt,
    Departure,
    RecordedEdits,
    ReplayOrLiveTransport,
    SessionRecorder,
    Watcher,
)
from .wording import describe_difference, describe_turn

__all__ = [
    "AFTER_EDIT_MODES",
    "Attempt",
    "Condition",
    "Debugger",
    "Departure",
    "Pause",
    "StepError",
    "describe_difference",
    "describe_turn",
    "parse_condition",
]

#: Debuggers whose worker may still run: closed at interpreter exit, before its finalisers.
_OPEN: weakref.WeakSet[Debugger] = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
    for debugger in list(_OPEN):
        debugger.close()


@dataclass
class Pause:
    """Control is back with the caller: paused at a breakpoint, or the run ended."""

    iteration: int
    reasons: list[str] = field(default_factory=list)
    ended: bool = False
    result: RunResult | None = None
    error: BaseException | None = None


class Debugger(Departing):
    """Runs a loop in a worker thread and pauses it at breakpoints (see the module docstring).

    Args:
        loop: the loop to run (``for_trace`` builds one from a trace).
        input: the run's input.
        hooks: more hooks for this run (they see the state before the debugger does).
        conditions: conditional breakpoints as specs (``"tool=refund_order"``).
        progress: called with one line of text for each thing the run does
            while it is not paused (a decision, a tool result, a retry).
        trace: for a replay, the trace the loop answers from (``for_trace`` sets
            it up: use that rather than passing it here).
        after_edit: ``stop``, ``live`` or ``ignore`` (replay only).
        live_base_url: where ``after_edit="live"`` sends requests.
        handlers: tools to run for real once a replay has gone live.
        live_max_iterations: the request limit once a replay has gone live.
    """

    def __init__(
        self,
        loop: Loop,
        input: str | list[dict[str, Any]],
        *,
        hooks: Iterable[Any] = (),
        conditions: Iterable[str] = (),
        progress: Callable[[str], None] | None = None,
        trace: Trace | None = None,
        after_edit: str = "stop",
        live_base_url: str | None = None,
        handlers: Iterable[Tool[..., Any]] = (),
        live_max_iterations: int = 10,
        _switch: ReplayOrLiveTransport | None = None,
    ) -> None:
        if trace is not None and _switch is None:
            raise StepError("to replay a trace, use Debugger.for_trace(trace, ...)")
        check_after_edit(after_edit, trace is not None, live_base_url)
        self.loop = loop
        self.input = input
        self.trace = trace
        self.after_edit = after_edit
        self.live_base_url = live_base_url.rstrip("/") if live_base_url else None
        self.live_max_iterations = live_max_iterations
        self.progress: Callable[[str], None] = progress or (lambda line: None)
        self.conditions: list[Condition] = []
        self._numbers = 0
        for spec in conditions:
            self.add_condition(*parse_condition(spec))
        self.handlers = {t.name: t for t in handlers}
        self.attempts: list[Attempt] = []
        self.departure: Departure | None = None
        self.ended = False
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.paused = False
        # Worker -> caller: progress lines, then a Pause. Caller -> worker: the mode to go on in.
        self._events: queue.Queue[Pause | str] = queue.Queue()
        self._commands: queue.Queue[str] = queue.Queue()
        self._errors: list[str] = []  # this iteration's failures; emptied in place (shared)
        self._switch = _switch
        self._replayer: Replayer | None = None
        self._recorded: dict[int, Any] = {}  # iteration -> the request body it sent first
        own: list[Any] = []
        if trace is not None:
            replayer = self._replayer = Replayer(trace)
            self._recorded = {
                e.iteration: e.request.get("body") for e in reversed(trace.exchanges())
            }
            loop.tool_runner = self._run_tool
            own.append(RecordedEdits(replayer, lambda: self.departure is None, self._events.put))
        self._tmp = Path(tempfile.mkdtemp(prefix="rawloop-step-"))
        # Removes the session's files when the debugger is collected or at exit, unclosed.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        self.recording = self._tmp / "session.jsonl"
        self.recorder = SessionRecorder(self.recording, lambda: self.state)
        watcher = Watcher(self._breakpoint, self._events.put, self.attempts, self._errors)
        self._hooks = [*own, *hooks, self.recorder, watcher]
        self._run: LoopRun | None = None
        self._mode = "step"
        self._until = 0
        self._interrupted = False
        self._snapshot: Any = None
        self._portal_cm: contextlib.AbstractContextManager[anyio.from_thread.BlockingPortal] | None
        self._portal_cm = None
        self._future: Future[None] | None = None
        self._warnings: contextlib.ExitStack | None = None

    @classmethod
    def for_trace(
        cls,
        trace: Trace | str | Path,
        *,
        after_edit: str = "stop",
        live_base_url: str | None = None,
        handlers: Iterable[Tool[..., Any]] = (),
        hooks: Iterable[Any] = (),
        conditions: Iterable[str] = (),
        progress: Callable[[str], None] | None = None,
        live_max_iterations: int = 10,
    ) -> Debugger:
        """A debugger replaying ``trace``: the loop is rebuilt with ``loop_from_trace``."""
        if not isinstance(trace, Trace):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a cut last line: in .warnings
                trace = Trace.load(trace)
        switch = ReplayOrLiveTransport(ReplayTransport(trace))
        client = httpx.AsyncClient(transport=switch, timeout=httpx.Timeout(600.0, connect=10.0))
        loop = loop_from_trace(trace, http_client=client)
        return cls(
            loop,
            first_input(trace, loop),
            hooks=hooks,
            conditions=conditions,
            progress=progress,
            trace=trace,
            after_edit=after_edit,
            live_base_url=live_base_url,
            handlers=handlers,
            live_max_iterations=live_max_iterations,
            _switch=switch,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Debugger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> Pause:
        """Start the run; returns at its first breakpoint (iteration 0) or its end."""
        if self._run is not None:
            raise StepError("the run has already started")
        # Made here, so a loop that cannot run (no API key...) fails before any thread starts.
        self._run = self.loop.iter(self.input, hooks=self._hooks)
        self._started = time.monotonic()
        if self.trace is not None:
            # "ignore" answers diverged requests anyway; the warning is ours to report.
            self._warnings = contextlib.ExitStack()
            self._warnings.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message="rawloop replay:", category=RuntimeWarning)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        portal = self._portal_cm.__enter__()
        _OPEN.add(self)  # closed at exit if still paused there
        self._future = portal.start_task_soon(self._drive)
        return self._wait()

    def next(self) -> Pause:
        """Go on to the next breakpoint."""
        return self.resume("step")

    def cont(self) -> Pause:
        """Go on to the end, or to the next conditional breakpoint that fires."""
        return self.resume("continue")

    def until(self, iteration: int) -> Pause:
        """Go on to the breakpoint of ``iteration`` (or a conditional one before it)."""
        current = self.state.iteration
        if iteration <= current:
            raise StepError(
                f"the run is at iteration {current}: until needs a later one, not {iteration}"
            )
        self._until = iteration
        return self.resume("until")

    def finish(self) -> Pause:
        """Run to the end without stopping at any breakpoint."""
        return self.resume("finish")

    def quit(self) -> Pause:
        """End the run here (stop reason ``quit``); nothing more is sent."""
        self._require_paused("quit")
        self.state.stop("quit")
        return self.resume("finish", check=False)

    def resume(self, mode: str, *, check: bool = True) -> Pause:
        """Go on in ``mode`` (``step``, ``continue``, ``until``, ``finish``) until control comes back."""
        self._require_paused("go on")
        if check:
            self._check_departure()
        self._mode = mode
        self.paused = False
        self._commands.put(mode)
        return self._wait()

    def interrupt(self) -> None:
        """Pause at the next breakpoint, whatever the mode (a first Ctrl-C)."""
        self._interrupted = True

    def abort(self) -> None:
        """Cancel the run now, wherever it is (a second Ctrl-C)."""
        if self._future is not None and not self._future.done():
            self._future.cancel()
            self._commands.put("quit")  # wake a breakpoint that is waiting

    def close(self) -> None:
        """Stop the worker (cancelling an unfinished run) and remove the session's files.

        Optional: the worker stops by itself when the run ends, and a debugger
        still open at interpreter exit is closed then (``with`` closes it early).
        """
        self.abort()
        self._stop_worker()
        self.recorder.close()
        self._cleanup()

    def _stop_worker(self) -> None:
        # Exiting the portal joins its thread: done on the caller's thread while the
        # interpreter still runs, never left to a finaliser at exit (where the portal's
        # daemon thread is frozen and joining it would hang the process).
        if self._portal_cm is not None:
            with contextlib.suppress(BaseException):
                self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None
        if self._warnings is not None:
            self._warnings.close()
            self._warnings = None

    def _wait(self) -> Pause:
        interrupts = 0
        while True:
            try:
                event = self._events.get()
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts == 1:
                    self.interrupt()
                    self.progress(
                        "interrupted: pausing at the next breakpoint (Ctrl-C again aborts)"
                    )
                else:
                    self.progress("interrupted again: aborting the run")
                    self.abort()
                continue
            if isinstance(event, str):
                self.progress(event)
                continue
            if event.ended:
                self.ended, self.result, self.error = True, event.result, event.error
                self._stop_worker()  # nothing more runs: the thread goes, the files stay
            else:
                self.paused = True
            return event

    async def _drive(self) -> None:
        run = self._run
        assert run is not None
        result: RunResult | None = None
        error: BaseException | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self._switch is not None and self.loop.http_client is not None:
                    await stack.enter_async_context(self.loop.http_client)  # ours: close it
                async with run:
                    async for _ in run:
                        pass
            result = run.result
        except Exception as exc:
            error = exc
            result = getattr(exc, "result", None) or run.result
        except BaseException as exc:  # cancelled: still report the end, then let it unwind
            self._events.put(Pause(run.state.iteration, ["aborted"], True, run.result, exc))
            raise
        self._events.put(Pause(run.state.iteration, [], True, result, error))

    # -- called by the hooks, in the worker ----------------------------------------------

    async def _breakpoint(self, state: LoopState) -> None:
        reasons = self._reasons(state)
        self._errors.clear()
        if not reasons:
            return
        self._interrupted = False
        self._snapshot = state_document(state)
        self._events.put(Pause(state.iteration, reasons))
        await anyio.to_thread.run_sync(self._commands.get, abandon_on_cancel=True)

    def _reasons(self, state: LoopState) -> list[str]:
        reasons: list[str] = []
        if self._interrupted:
            reasons.append("interrupted")
        if self._mode == "step":
            reasons.append("step")
        elif self._mode == "until" and state.iteration >= self._until:
            reasons.append(f"until {self._until}")
        if self._mode == "finish":
            return reasons
        for condition in self.conditions:
            hit = condition.hit(state, self._errors)
            if hit:
                condition.hits += 1
                reasons.append(hit)
        return reasons

    # -- conditional breakpoints -------------------------------------------------------------

    def add_condition(self, kind: str, arg: str = "") -> Condition:
        """Add a conditional breakpoint (see ``Condition``); returns it with its number."""
        kind, arg = parse_condition(f"{kind} {arg}".strip())
        self._numbers += 1
        condition = Condition(self._numbers, kind, arg)
        self.conditions.append(condition)
        return condition

    def clear_conditions(self, number: int | None = None) -> list[Condition]:
        """Remove one conditional breakpoint by number, or all of them; returns the removed."""
        if number is None:
            removed, self.conditions = self.conditions, []
            return removed
        removed = [c for c in self.conditions if c.number == number]
        if not removed:
            have = ", ".join(str(c.number) for c in self.conditions) or "none"
            raise StepError(f"no breakpoint number {number} (breakpoints: {have})")
        self.conditions = [c for c in self.conditions if c.number != number]
        return removed

    def end_hits(self) -> list[str]:
        """Conditional breakpoints the last turn of an ended run would have hit."""
        if not self.ended or self._run is None:
            return []
        hits = (c.hit(self.state, self._errors) for c in self.conditions if c.kind != "iteration")
        return [hit for hit in hits if hit]
