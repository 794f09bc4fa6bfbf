"""A debugger for tool loops: pause a run at its breakpoints, look, change, go on.

``Debugger`` is the engine behind ``rawloop step`` (``rawloop.step`` is the
shell around it), and it is usable from Python as it is::

    from rawloop.debugger import Debugger

    with Debugger.for_trace("traces/tool-roundtrip.jsonl", after_edit="ignore") as dbg:
        dbg.start()                                   # paused at iteration 0
        dbg.next()                                    # paused at iteration 1
        dbg.set_result("call_sV", "42")               # the multiply result, before it is sent
        dbg.cont()                                    # on to the end
        dbg.save("edited.jsonl")                      # replays identically

How it works: the loop runs in a worker thread with its own event loop (an
anyio blocking portal). The debugger's ``on_breakpoint`` hook hands control
to the calling thread through a pair of queues and waits (in
``anyio.to_thread``) until it is told to go on; while it waits, the caller
reads and changes the ``LoopState``, which nothing else touches then. Every
change goes ``LoopState.to_dict()`` -> RFC 6902 patch -> ``update_from``, so
the loop reports it to ``on_edit`` and the session's ``TraceRecorder`` writes
it as an ``edit`` record: ``save`` copies that recording.

A replayed run (``for_trace``) answers from the trace. When an edit makes the
next request differ from the recorded one, the run has left the recording;
``after_edit`` says what happens on resuming: ``stop`` ends the run there,
``live`` sends it (and what follows) to ``live_base_url`` with a plain httpx
transport, ``ignore`` keeps answering with the recorded responses.

The same pause without this engine: ``Loop.iter()`` with an ``on_breakpoint``
hook, which may change the state in place (see the README, "Breakpoints from
Python").
"""

from __future__ import annotations

import contextlib
import gzip
import queue
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import orjson

from . import jsonpath, patch
from .errors import RawloopError
from .hooks import (
    ChunkInfo,
    DecisionInfo,
    EditInfo,
    ErrorInfo,
    RequestInfo,
    ResponseInfo,
    ResultInfo,
)
from .jsondiff import MISSING, Difference, first_difference
from .loop import Loop, LoopRun
from .replay import DEFAULT_VOLATILE, Replayer, ReplayTransport, first_input, loop_from_trace
from .retry import RetryPolicy
from .state import EDITABLE, LoopState, RunResult
from .tools import Tool, ToolResult, run_tool
from .trace import Trace, TraceRecorder
from .turn import FunctionCall

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

#: What a replayed run does once an edit took it off the recording.
AFTER_EDIT_MODES = ("stop", "live", "ignore")

#: Kinds of conditional breakpoint.
CONDITION_KINDS = ("tool", "iteration", "text", "error")

#: The stop reason of a replay ended by ``after_edit="stop"``.
LEFT_RECORDING = "left-recording"

_VIEW_ONLY = ("last_turn", "usage", "dialect", "base_url", "stop_reason")
_RESULT_KEYS = frozenset({"call_id", "name", "arguments", "output", "error", "duration"})
_NATURAL_STOPS = frozenset({"completed", "incomplete", "max_iterations", "error"})


class StepError(RawloopError):
    """A debugger command that cannot be done as asked (the message says why)."""


# -- conditional breakpoints ---------------------------------------------------------


@dataclass
class Condition:
    """A conditional breakpoint, checked at each breakpoint against the last iteration.

    ``tool NAME``: the last turn called NAME (its result is about to be sent);
    ``iteration N``: the breakpoint before request N (0-based); ``text REGEX``:
    the last turn's text matches; ``error``: a request attempt or a tool failed
    in the last iteration.
    """

    number: int
    kind: str
    arg: str = ""
    hits: int = 0
    pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.arg}".strip()

    def check(self, state: LoopState, errors: Sequence[str]) -> str | None:
        """Why this breakpoint fires at ``state`` (None when it does not)."""
        turn = state.last_turn
        if self.kind == "iteration":
            return f"iteration {state.iteration}" if state.iteration == int(self.arg) else None
        if self.kind == "error":
            return errors[0] if errors else None
        if turn is None:
            return None
        if self.kind == "tool":
            ids = [c.call_id for c in turn.calls if c.name == self.arg]
            return f"{self.arg} was called ({', '.join(ids)})" if ids else None
        assert self.pattern is not None
        match = self.pattern.search(turn.text or "")
        return f"the text matches {self.arg!r} ({match.group(0)!r})" if match else None


def parse_condition(spec: str) -> tuple[str, str]:
    """``"tool=refund_order"``, ``"tool refund_order"``, ``"iteration=2"``, ``"text=REGEX"``, ``"error"``."""
    text = spec.strip()
    kind, _, arg = text.partition("=") if "=" in text.split(" ", 1)[0] else text.partition(" ")
    kind, arg = kind.strip().lower(), arg.strip()
    kind = {"iter": "iteration", "i": "iteration", "errors": "error"}.get(kind, kind)
    if kind not in CONDITION_KINDS:
        raise StepError(
            f"unknown breakpoint {text!r}; use tool NAME, iteration N, text REGEX or error"
        )
    if kind == "error":
        if arg:
            raise StepError(f"'error' takes no argument, got {arg!r}")
        return kind, ""
    if not arg:
        what = {"tool": "a tool name", "iteration": "an iteration number", "text": "a regex"}[kind]
        raise StepError(f"'{kind}' needs {what}, e.g. {kind} {_EXAMPLES[kind]}")
    if kind == "iteration" and not (arg.isascii() and arg.isdigit()):
        raise StepError(f"'iteration' needs a number (0 is the first request), not {arg!r}")
    if kind == "text":
        try:
            re.compile(arg)
        except re.error as exc:
            raise StepError(f"bad regex {arg!r}: {exc}") from None
    return kind, arg


_EXAMPLES = {"tool": "refund_order", "iteration": "2", "text": "'refund(ed)?'"}


# -- what the run tells the caller ------------------------------------------------------


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
class Pause:
    """Control is back with the caller: paused at a breakpoint, or the run ended."""

    iteration: int
    reasons: list[str] = field(default_factory=list)
    ended: bool = False
    result: RunResult | None = None
    error: BaseException | None = None


# -- the engine ---------------------------------------------------------------------------


class Debugger:
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
        _switch: _SwitchTransport | None = None,
    ) -> None:
        if after_edit not in AFTER_EDIT_MODES:
            raise StepError(
                f"after_edit must be one of {', '.join(AFTER_EDIT_MODES)}, not {after_edit!r}"
            )
        if trace is not None and _switch is None:
            raise StepError("to replay a trace, use Debugger.for_trace(trace, ...)")
        if trace is not None and after_edit == "live" and not live_base_url:
            raise StepError("after_edit='live' needs a base URL to continue against (--base-url)")
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
        self._switch = _switch
        self._replayer = Replayer(trace) if trace is not None else None
        self._recorded: dict[int, Any] = {}
        if trace is not None:
            for exchange in reversed(trace.exchanges()):
                self._recorded[exchange.iteration] = exchange.request.get("body")
            loop.tool_runner = self._run_tool
        self._tmp = Path(tempfile.mkdtemp(prefix="rawloop-step-"))
        self.recording = self._tmp / "session.jsonl"
        self.recorder = _SessionRecorder(self, self.recording)
        own: list[Any] = [_RecordedEdits(self)] if trace is not None else []
        self._hooks = [*own, *hooks, self.recorder, _Watcher(self)]
        self._run: LoopRun | None = None
        self._events: queue.Queue[Pause | str] = queue.Queue()
        self._commands: queue.Queue[str] = queue.Queue()
        self._mode = "step"
        self._until = 0
        self._interrupted = False
        self._errors: list[str] = []
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
        switch = _SwitchTransport(ReplayTransport(trace))
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

    @property
    def state(self) -> LoopState:
        """The run's state (read and change it only while paused)."""
        if self._run is None:
            raise StepError("the run has not started yet")
        return self._run.state

    @property
    def replaying(self) -> bool:
        return self.trace is not None

    def start(self) -> Pause:
        """Start the run; returns at its first breakpoint (iteration 0) or its end."""
        if self._run is not None:
            raise StepError("the run has already started")
        # Made here, so a loop that cannot run (no API key...) fails before any thread starts.
        self._run = self.loop.iter(self.input, hooks=self._hooks)
        if self.trace is not None:
            # "ignore" answers diverged requests anyway; the warning is ours to report.
            self._warnings = contextlib.ExitStack()
            self._warnings.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message="rawloop replay:", category=RuntimeWarning)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        portal = self._portal_cm.__enter__()
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
        if check and self.trace is not None and self.departure is None:
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
        """Stop the worker (cancelling an unfinished run) and remove the session's files."""
        self.abort()
        if self._portal_cm is not None:
            with contextlib.suppress(BaseException):
                self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None
        if self._warnings is not None:
            self._warnings.close()
            self._warnings = None
        self.recorder.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

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
        self._errors = []
        if not reasons:
            return
        self._interrupted = False
        self._snapshot = _plain(state.to_dict())
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
            why = condition.check(state, self._errors)
            if why:
                condition.hits += 1
                reasons.append(f"breakpoint {condition.number} ({condition}): {why}")
        return reasons

    async def _run_tool(self, call: FunctionCall) -> ToolResult:
        """Replay's tool runner: recorded results on the recording, real handlers once live."""
        assert self._replayer is not None
        if self.departure is None or self.departure.mode != "live":
            return await self._replayer.run_tool(call)
        handler = self.handlers.get(call.name)
        if handler is not None:
            return await run_tool(
                handler,
                call.name,
                call.call_id,
                call.arguments,
                timeout=self.loop.tool_timeout,
                known=list(self.handlers),
            )
        recorded = self._replayer.results.get(call.call_id)
        if recorded is not None:
            return await self._replayer.run_tool(call)
        message = (
            f"no handler for tool {call.name!r} in this debugging session "
            "(give one with --tools FILE.py, or set this output at the next breakpoint "
            f"with: result {call.call_id} TEXT)"
        )
        self._errors.append(f"{call.name} ({call.call_id}) has no handler")
        return ToolResult(
            call.call_id,
            call.name,
            call.arguments,
            output=f"Error: {message}",
            error={"type": "NoHandler", "message": message},
        )

    # -- reading the state ---------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The state as one JSON document: the editable fields, then the read-only ones."""
        state = self.state
        doc: dict[str, Any] = _plain(state.to_dict())
        doc["last_turn"] = _plain(state.last_turn.to_dict()) if state.last_turn else None
        doc["usage"] = dict(state.usage)
        doc["dialect"] = state.dialect
        doc["base_url"] = self.loop.base_url
        doc["stop_reason"] = state.stop_reason
        return doc

    def get(self, path: str) -> tuple[str, Any]:
        """The readable path and the value at ``path`` (dotted or JSON Pointer)."""
        tokens = jsonpath.parse(path)
        concrete, value, _ = jsonpath.locate(self.view(), tokens, root="the state")
        return jsonpath.display(concrete), value

    def next_request(self) -> tuple[str, bytes]:
        """The URL and exact body of the request the run will send next (as ``loop.py`` builds it)."""
        self._require_paused("build the next request")
        state, dialect = self.state, self.loop.dialect
        items = list(state.input)
        if state.results:  # what _flush_results appends right after the breakpoint
            items.extend(dialect.tool_outputs([(r.call_id, r.output) for r in state.results]))
        body = dialect.build_request(
            state.model,
            items,
            instructions=state.instructions,
            tools=list(state.tools),
            params=dict(state.request_params),
        )
        return self.loop.base_url + dialect.path, orjson.dumps(body)

    def last_attempts(self) -> list[Attempt]:
        """Every attempt of the last iteration that sent a request."""
        if not self.attempts:
            return []
        last = self.attempts[-1].iteration
        return [a for a in self.attempts if a.iteration == last]

    def pending_edits(self) -> list[dict[str, Any]]:
        """What was changed at this breakpoint so far, as an RFC 6902 patch."""
        if not self.paused or self._snapshot is None:
            return []
        return patch.diff(self._snapshot, _plain(self.state.to_dict()))

    def difference_from_recording(self) -> Difference | None:
        """Where the next request differs from the recorded one (replay, while paused)."""
        if self.trace is None or not self.paused or self.departure is not None:
            return None
        recorded = self._recorded.get(self.state.iteration)
        _, body = self.next_request()
        if recorded is None:
            return Difference("<request>", MISSING, orjson.loads(body))
        return first_difference(recorded, orjson.loads(body), DEFAULT_VOLATILE)

    # -- changing the state --------------------------------------------------------------

    def set(self, path: str, value: Any) -> list[dict[str, Any]]:
        """Put ``value`` at ``path`` (a missing last key is added); returns the operations."""
        return self._edit("set", path, value)

    def delete(self, path: str) -> list[dict[str, Any]]:
        """Remove what is at ``path``."""
        return self._edit("del", path)

    def append(self, path: str, value: Any) -> list[dict[str, Any]]:
        """Add ``value`` at the end of the list at ``path``."""
        return self._edit("append", path, value)

    def set_model(self, name: str) -> list[dict[str, Any]]:
        """Send the next request (and the ones after it) to model ``name``."""
        if not name.strip():
            raise StepError("give a model name, e.g. model gpt-5.5")
        return self._edit("set", "model", name.strip())

    def find_result(self, ref: str) -> int:
        """The index in ``state.results`` of a call id, a unique prefix of one, or an index."""
        self._require_paused("change a result")
        results = self.state.results
        if not results:
            raise StepError(
                f"no pending results at iteration {self.state.iteration}: "
                "the last turn called no tools"
            )
        ids = ", ".join(f"[{i}] {r.call_id} ({r.name})" for i, r in enumerate(results))
        exact = [i for i, r in enumerate(results) if r.call_id == ref]
        if exact:
            return exact[0]
        if ref.isascii() and ref.isdigit():
            if int(ref) < len(results):
                return int(ref)
            raise StepError(f"there are {len(results)} pending results, not {int(ref) + 1}: {ids}")
        found = [i for i, r in enumerate(results) if r.call_id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if found:
            raise StepError(f"{ref!r} could be more than one call: {ids}")
        raise StepError(f"no pending result for call {ref!r}; pending: {ids}")

    def set_result(self, ref: str, output: str) -> list[dict[str, Any]]:
        """Replace the output of a pending tool result (and clear its error) before it is sent."""
        index = self.find_result(ref)
        ops: list[dict[str, Any]] = [
            {"op": "replace", "path": f"/results/{index}/output", "value": output}
        ]
        if self.state.results[index].error is not None:
            ops.append({"op": "replace", "path": f"/results/{index}/error", "value": None})
        return self._apply(ops)

    def _edit(self, kind: str, path: str, value: Any = None) -> list[dict[str, Any]]:
        self._require_paused("change the state")
        tokens = jsonpath.parse(path)
        if not tokens:
            raise StepError(
                f"{kind} needs a path into the state (e.g. input[0].content): "
                "the whole state cannot be replaced"
            )
        head = str(tokens[0])
        if head not in EDITABLE:
            editable = ", ".join(EDITABLE)
            if head in (*_VIEW_ONLY, "iteration"):
                raise StepError(f"{head} is read-only; what you can change: {editable}")
            raise StepError(f"the state has no {head!r}; what you can change: {editable}")
        doc = _plain(self.state.to_dict())
        if kind == "set":
            concrete, _, exists = jsonpath.locate(doc, tokens, missing_ok=True, root="the state")
            op = "replace" if exists else "add"
            ops = [{"op": op, "path": jsonpath.pointer(concrete), "value": value}]
        elif kind == "del":
            if len(tokens) == 1:
                raise StepError(f"{head} cannot be deleted; set it instead (set {head} JSON)")
            concrete, _, _ = jsonpath.locate(doc, tokens, root="the state")
            ops = [{"op": "remove", "path": jsonpath.pointer(concrete)}]
        else:
            concrete, target, _ = jsonpath.locate(doc, tokens, root="the state")
            if not isinstance(target, list):
                raise StepError(
                    f"{jsonpath.display(concrete)} is {jsonpath.describe(target)}, not a list: "
                    "append adds to a list (use set for anything else)"
                )
            ops = [{"op": "add", "path": jsonpath.pointer(concrete) + "/-", "value": value}]
        return self._apply(ops)

    def _apply(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        new = patch.apply(_plain(self.state.to_dict()), ops)
        _check_document(new)
        self.state.update_from(new)
        return ops

    # -- conditional breakpoints -------------------------------------------------------------

    def add_condition(self, kind: str, arg: str = "") -> Condition:
        """Add a conditional breakpoint (see ``Condition``); returns it with its number."""
        kind, arg = parse_condition(f"{kind} {arg}".strip())
        self._numbers += 1
        pattern = re.compile(arg) if kind == "text" else None
        condition = Condition(self._numbers, kind, arg, pattern=pattern)
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
        state = self.state
        hits = []
        for condition in self.conditions:
            if condition.kind == "iteration":
                continue
            why = condition.check(state, self._errors)
            if why:
                hits.append(f"breakpoint {condition.number} ({condition}): {why}")
        return hits

    def known_tools(self) -> list[str]:
        """Names of the tools the model is told about."""
        names = []
        for definition in self.state.tools if self._run else []:
            name = definition.get("name") or definition.get("function", {}).get("name")
            if name:
                names.append(str(name))
        return names

    # -- saving ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> int:
        """Write the run so far as a trace (with this breakpoint's edits); returns its records."""
        if self._run is None:
            raise StepError("nothing to save: the run has not started")
        data = self.recording.read_bytes() if self.recording.exists() else b""
        if not data:
            raise StepError("nothing recorded yet")
        pending = self.pending_edits()
        if pending and not self.ended:
            iteration = self.state.iteration
            record = {"kind": "edit", "iteration": iteration, "patch": self.recorder.ops(pending)}
            data += orjson.dumps(self.recorder.redactor.strings(record)) + b"\n"
        target = Path(path)
        if target.suffix == ".gz":
            data = gzip.compress(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        raw = gzip.decompress(data) if target.suffix == ".gz" else data
        return raw.count(b"\n") - 1

    # -- leaving the recording ---------------------------------------------------------------

    def _check_departure(self) -> None:
        found = self.difference_from_recording()
        if found is None:
            return
        state = self.state
        self.departure = Departure(state.iteration, found, self.after_edit)
        self.progress(str(self.departure))
        if self.after_edit == "stop":
            state.stop(LEFT_RECORDING)
            self.progress(
                "--after-edit stop: the run ends here, before sending it "
                "(save it with save FILE; --after-edit live|ignore goes on)"
            )
        elif self.after_edit == "live":
            assert self.live_base_url is not None and self._switch is not None
            self._switch.go_live()
            self.loop.base_url = self.live_base_url
            self.loop.retry_policy = RetryPolicy()
            self.loop.max_iterations = max(self.loop.max_iterations, self.live_max_iterations)
            self.progress(
                f"--after-edit live: going on against {self.live_base_url} "
                f"(at most {self.loop.max_iterations} requests)"
            )
        else:
            assert self._switch is not None
            self._switch.ignore_divergence()
            self.progress(
                "--after-edit ignore: going on with the recorded responses "
                "(they answer the recorded requests, not the edited ones)"
            )

    def divergences_ignored(self) -> int:
        """Requests that differed from the recording and were answered anyway (``ignore``)."""
        return len(self._switch.replay.responder.divergences) if self._switch else 0

    def _require_paused(self, what: str) -> None:
        if self._run is None:
            raise StepError(f"cannot {what}: the run has not started")
        if self.ended:
            reason = self.result.stop_reason if self.result else "error"
            raise StepError(f"cannot {what}: the run has ended ({reason})")
        if not self.paused:
            raise StepError(f"cannot {what}: the run is not paused")


# -- hooks -----------------------------------------------------------------------------------


class _Watcher:
    """The debugger's hook: pauses at breakpoints, keeps the wire, reports progress."""

    def __init__(self, debugger: Debugger) -> None:
        self.d = debugger

    async def on_breakpoint(self, state: LoopState) -> None:
        await self.d._breakpoint(state)

    def on_request(self, info: RequestInfo) -> None:
        self.d.attempts.append(
            Attempt(info.iteration, info.attempt, info.method, info.url, info.body)
        )

    def on_response(self, info: ResponseInfo) -> None:
        if self.d.attempts:
            self.d.attempts[-1].status = info.status

    def on_chunk(self, info: ChunkInfo) -> None:
        if self.d.attempts:
            self.d.attempts[-1].chunks.append(info.data)

    def on_error(self, info: ErrorInfo) -> None:
        text = f"{type(info.error).__name__}: {info.error}"
        if info.where == "request" and self.d.attempts:
            self.d.attempts[-1].error = text
        retry = f"; retrying in {info.delay:g} s" if info.will_retry else ""
        self.d._errors.append(f"{info.where} failed: {_short(text)}")
        self.d._events.put(
            f"iteration {info.iteration}, attempt {info.attempt}: {info.where} failed: "
            f"{_short(text)}{retry}"
        )

    def on_decision(self, info: DecisionInfo) -> None:
        self.d._events.put(f"iteration {info.iteration}: {describe_turn(info.turn)}")

    def on_result(self, info: ResultInfo) -> None:
        result: ToolResult = info.result
        if result.error is not None:
            self.d._errors.append(f"tool {result.name} failed: {result.error.get('type')}")
        flag = f" (error: {result.error.get('type')})" if result.error else ""
        self.d._events.put(
            f"iteration {info.iteration}: {result.name} {result.call_id} -> "
            f"{_short(orjson.dumps(result.output).decode())}{flag}"
        )

    def on_edit(self, info: EditInfo) -> None:
        self.d._events.put(
            f"iteration {info.iteration}: edited ({', '.join(_op_text(o) for o in info.patch)})"
        )


class _RecordedEdits:
    """Puts the recording's own breakpoint edits back (as replay does), while they still fit."""

    def __init__(self, debugger: Debugger) -> None:
        self.d = debugger

    def on_breakpoint(self, state: LoopState) -> None:
        replayer = self.d._replayer
        assert replayer is not None
        if self.d.departure is None:
            replayer.on_breakpoint(state)
            return
        ops = replayer.edits.get(state.iteration)
        if not ops:
            return
        try:
            state.update_from(patch.apply(state.to_dict(), ops))
        except patch.PatchError as exc:
            self.d._events.put(
                f"iteration {state.iteration}: the recorded edit no longer fits the run "
                f"and was left out ({exc})"
            )


class _SessionRecorder(TraceRecorder):
    """The session's recording. Iteration 0 edits are written as whole-field replacements.

    ``replay`` builds its first state from the first recorded request, which
    already holds the iteration-0 edits, and then applies them again: an
    ``add /input/-`` would add the item twice. Replacing whole fields means the
    same either way, so the saved trace replays identically.
    """

    def __init__(self, debugger: Debugger, path: Path) -> None:
        super().__init__(path, metadata={"rawloop_step": True})
        self.d = debugger

    def ops(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``ops`` as they are recorded at the current iteration."""
        if self.d.state.iteration != 0:
            return ops
        doc = _plain(self.d.state.to_dict())
        fields = dict.fromkeys(jsonpath.parse(o["path"])[0] for o in ops if o.get("path"))
        return [{"op": "replace", "path": f"/{f}", "value": doc[str(f)]} for f in fields]

    def on_edit(self, info: EditInfo) -> None:
        if info.iteration == 0:
            info = EditInfo(0, self.ops(info.patch))
        super().on_edit(info)


class _SwitchTransport(httpx.AsyncBaseTransport):
    """Replays until told to go live (``LoopRun`` holds on to its client for the whole run)."""

    def __init__(self, replay: ReplayTransport) -> None:
        self.replay = replay
        self.target: httpx.AsyncBaseTransport = replay
        self._live: httpx.AsyncHTTPTransport | None = None

    def go_live(self) -> None:
        self._live = httpx.AsyncHTTPTransport()
        self.target = self._live

    def ignore_divergence(self) -> None:
        self.replay.responder.on_divergence = "warn"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.target.handle_async_request(request)

    async def aclose(self) -> None:
        await self.replay.aclose()
        if self._live is not None:
            await self._live.aclose()


# -- helpers ------------------------------------------------------------------------------------


def _check_document(doc: dict[str, Any]) -> None:
    """Refuse an edited state the loop could not send, saying which part is wrong."""
    if not isinstance(doc["model"], str) or not doc["model"]:
        raise StepError(f"model must be a non-empty string, not {jsonpath.describe(doc['model'])}")
    if doc["instructions"] is not None and not isinstance(doc["instructions"], str):
        raise StepError("instructions must be a string or null")
    for name in ("input", "tools"):
        if not isinstance(doc[name], list):
            raise StepError(f"{name} must be a list, not {jsonpath.describe(doc[name])}")
        for i, item in enumerate(doc[name]):
            if not isinstance(item, dict):
                raise StepError(f"{name}[{i}] must be an object, not {jsonpath.describe(item)}")
    if not isinstance(doc["request_params"], dict):
        raise StepError("request_params must be an object")
    if not isinstance(doc["results"], list):
        raise StepError("results must be a list")
    for i, result in enumerate(doc["results"]):
        if not isinstance(result, dict):
            raise StepError(f"results[{i}] must be an object, not {jsonpath.describe(result)}")
        missing = [k for k in ("call_id", "name", "arguments", "output") if k not in result]
        if missing:
            raise StepError(f"results[{i}] needs {', '.join(missing)}")
        extra = sorted(set(result) - _RESULT_KEYS)
        if extra:
            raise StepError(
                f"results[{i}] has unknown keys {', '.join(extra)} "
                f"(a result has: {', '.join(sorted(_RESULT_KEYS))})"
            )
        if not isinstance(result["output"], (str, list)):
            raise StepError(
                f"results[{i}].output must be a string (what the model reads), not "
                f"{jsonpath.describe(result['output'])}: quote JSON as a string, or use "
                "result CALL_ID JSON"
            )
        if not isinstance(result["call_id"], str):
            raise StepError(f"results[{i}].call_id must be a string")


def describe_turn(turn: Any) -> str:
    """One line for a turn: its calls, or its text."""
    if turn.calls:
        calls = ", ".join(f"{c.name}({_short(c.arguments, 60)})" for c in turn.calls)
        return f"{turn.status}, called {calls}"
    if turn.text:
        return f"{turn.status}, text {_short(orjson.dumps(turn.text).decode())}"
    return f"{turn.status}, no text and no calls"


def describe_difference(found: Difference) -> str:
    """``input[2].output (recorded "2869461", now "42")``."""
    return f"{found.path or '<root>'} (recorded {_value(found.a)}, now {_value(found.b)})"


def _value(value: Any) -> str:
    if value is MISSING:
        return "nothing"
    try:
        return _short(orjson.dumps(value).decode(), 60)
    except TypeError:
        return _short(repr(value), 60)


def _op_text(op: dict[str, Any]) -> str:
    return f"{op.get('op')} {op.get('path')}"


def _short(text: str, limit: int = 100) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(data: Any) -> Any:
    return orjson.loads(orjson.dumps(data))
