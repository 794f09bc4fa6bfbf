"""What the ``rawloop_replay`` fixture hands a test: ``RawloopReplay``.

It replays a trace through a ``Loop`` (the trace's own, or one the test makes
with ``make_loop``) and judges the run as ``rawloop.replay`` would, or, in a
record mode, writes the trace with a ``TraceRecorder`` and moves it into place
when the test passes. The pytest hooks that call it are in
``rawloop.capture.pytest_plugin``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ..core.errors import RawloopError, ReplayDivergence, TraceError
from ..core.turn import Turn
from ..core.words import plural
from ..loop.hooks import DecisionInfo, EndInfo, ResultInfo
from ..loop.loop import Loop
from ..loop.state import LoopState, RunResult
from ..loop.tools import ToolResult
from ..replay.replayer import (
    Replayer,
    ReplayReport,
    ReplayTransport,
    first_input,
    judge,
    loop_from_trace,
)
from ..trace.format import Trace
from ..trace.recorder import Redactor, TraceRecorder

__all__ = ["RECORDED", "RawloopReplay"]

#: The ``user_properties`` name a recorded trace is reported under.
RECORDED = "rawloop_recorded"

_TRANSPORT_OPTIONS = ("chunking", "seed", "rate", "faults", "ignore", "on_divergence")


class _Watch:
    """A hook that keeps what a run did, however the test ran the loop."""

    def __init__(self) -> None:
        self.state: LoopState | None = None
        self.turns: list[Turn] = []
        self.results: list[ToolResult] = []
        self.stop_reason: str | None = None
        self.iterations = 0

    def on_breakpoint(self, state: LoopState) -> None:
        self.state = state

    def on_decision(self, info: DecisionInfo) -> None:
        self.turns.append(info.turn)

    def on_result(self, info: ResultInfo) -> None:
        self.results.append(info.result)

    def on_end(self, info: EndInfo) -> None:
        self.stop_reason = info.stop_reason
        self.iterations = info.iterations

    def result(self) -> RunResult | None:
        if self.state is None or self.stop_reason is None:
            return None
        return RunResult(
            text=self.turns[-1].text if self.turns else "",
            turns=list(self.turns),
            items=list(self.state.input),
            usage=dict(self.state.usage),
            iterations=self.iterations,
            stop_reason=self.stop_reason,
            results=list(self.results),
            state=self.state,
        )


class RawloopReplay:
    """What the ``rawloop_replay`` fixture hands a test (see the module docstring).

    Attributes:
        path: the trace file.
        recording: True when this test records the trace instead of replaying it.
        trace: the loaded ``Trace`` (None while recording).
        transport: the ``ReplayTransport`` answering the loop (None while recording).
        check: fail the test after it when the replay diverged or was not fully used.
        result: the ``RunResult`` of ``run()``.
        error: the error a run ended with, if any.
    """

    def __init__(
        self,
        path: Path,
        options: dict[str, Any],
        *,
        recording: bool = False,
        record_client: httpx.AsyncClient | None = None,
        shown: str | None = None,
        test: str = "",
    ) -> None:
        self.path = path
        self.shown = shown or str(path)
        self.test = test
        self.options = dict(options)
        self.recording = recording
        self.live_tools = bool(self.options.get("live_tools", False))
        self.check = True
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.trace: Trace | None = None
        self.transport: ReplayTransport | None = None
        self._loop: Loop | None = None
        self._watch = _Watch()
        if recording:
            self.client = record_client
            self.part = path.with_name(path.name + ".part")
            metadata = {"recorded_by": "rawloop.pytest_plugin", "test": test}
            metadata.update(self.options.get("metadata") or {})
            redact = self.options.get("redact")
            self.recorder: TraceRecorder | None = TraceRecorder(
                self.part,
                redact=redact if isinstance(redact, Redactor) else None,
                metadata=metadata,
            )
            return
        self.recorder = None
        transport_options = {k: self.options[k] for k in _TRANSPORT_OPTIONS if k in self.options}
        try:
            trace = Trace.load(path)
            self.transport = ReplayTransport(trace, **transport_options)
        except (RawloopError, TypeError, ValueError) as exc:
            pytest.fail(f"rawloop: cannot replay {self.shown}: {exc}", pytrace=False)
        self.trace = trace
        self.client = httpx.AsyncClient(transport=self.transport)
        self._replayer = Replayer(trace, live_tools=self.live_tools)

    @property
    def mode(self) -> str:
        """``"record"`` or ``"replay"``."""
        return "record" if self.recording else "replay"

    # -- the loop ------------------------------------------------------------------------

    @property
    def loop(self) -> Loop:
        """The test's loop: the one ``make_loop`` made, else one built from the trace."""
        if self._loop is None:
            if self.recording:
                pytest.fail(
                    f"rawloop: recording {self.shown} needs the loop built with "
                    "rawloop_replay.make_loop(model, instructions, tools, ...): without a trace "
                    "the fixture cannot know how the loop is configured",
                    pytrace=False,
                )
            assert self.trace is not None
            loop = loop_from_trace(
                self.trace, http_client=self.client, rate=float(self.options.get("rate", 0.0))
            )
            self._attach(loop, apply_edits=True)
        assert self._loop is not None
        return self._loop

    def make_loop(
        self,
        model: str,
        instructions: str | None = None,
        tools: Iterable[Any] = (),
        **kwargs: Any,
    ) -> Loop:
        """A ``Loop`` configured as your code configures it, wired to the trace.

        Replaying, it talks to the replay transport and (unless ``live_tools``)
        answers tool calls from the trace. Recording, it talks to the
        ``rawloop_record_client`` and a ``TraceRecorder`` writes the trace.
        """
        hooks = list(kwargs.pop("hooks", ()))
        kwargs.pop("http_client", None)
        loop = Loop(
            model, instructions, list(tools), http_client=self.client, hooks=hooks, **kwargs
        )
        if self.recording:
            assert self.recorder is not None
            loop.add_hook(self.recorder)
            loop.add_hook(self._watch)
            self._loop = loop
        else:
            self._attach(loop, apply_edits=not hooks)
        return loop

    def _attach(self, loop: Loop, *, apply_edits: bool) -> None:
        if apply_edits:
            loop.add_hook(self._replayer)
        if not self.live_tools:
            loop.tool_runner = self._replayer.run_tool
        loop.add_hook(self._watch)
        self._loop = loop

    # -- running -------------------------------------------------------------------------

    async def run(
        self, input: str | list[dict[str, Any]] | None = None, *, check: bool = True
    ) -> RunResult:
        """Run the loop to the end and return its ``RunResult``.

        ``input`` defaults to the recorded first input (required when
        recording). Replaying, a divergence fails the test here with the report
        unless ``check=False`` (then read ``report``).
        """
        loop = self.loop
        if input is None:
            if self.trace is None:
                pytest.fail(
                    f"rawloop: recording {self.shown}: run() needs the input to send",
                    pytrace=False,
                )
            input = first_input(self.trace, loop)
        if self.recording:
            self.result = await loop.run(input)
            return self.result
        try:
            self.result = await loop.run(input)
        except RawloopError as exc:  # a divergence, or the run failed as the replay went
            self.error = exc
            self.result = exc.result
        if check:
            message = self.failure_message()
            if message:
                pytest.fail(message, pytrace=False)
        assert self.result is not None
        return self.result

    def run_sync(
        self, input: str | list[dict[str, Any]] | None = None, *, check: bool = True
    ) -> RunResult:
        """``run`` for a plain (not async) test function."""
        result: RunResult = anyio.run(partial(self.run, input, check=check))
        return result

    # -- verdicts ------------------------------------------------------------------------

    @property
    def report(self) -> ReplayReport:
        """The replay's verdict so far, as ``rawloop.replay`` would give it."""
        if self.trace is None or self.transport is None:
            raise RuntimeError("rawloop: a recording test has no replay report")
        report = ReplayReport("identical")
        report.result = self.result or self._watch.result()
        if isinstance(self.error, ReplayDivergence):
            report.verdict, report.divergence = "diverged", self.error
        elif self.error is not None:
            report.verdict, report.error = "error", self.error
        responder = self.transport.responder
        report.divergences = list(responder.divergences)
        report.unconsumed = responder.unconsumed()
        if report.verdict != "identical":
            return report
        if report.result is not None:
            judge(report, self.trace, self.live_tools)
        elif report.unconsumed:
            report.verdict = "diverged"
            report.divergence = ReplayDivergence(
                f"the test never ran the loop: {plural(len(report.unconsumed), 'recorded request')} "
                "never made",
                iteration=0,
                path="<unconsumed>",
            )
        return report

    def failure_message(self) -> str | None:
        """The message the test fails with, or None when the replay matched the trace."""
        report = self.report
        if report.identical:
            return None
        hint = (
            f"\n(if the change is intended, record the trace again: "
            f"pytest --rawloop-record=all {self.test})"
            if report.verdict == "diverged"
            else ""
        )
        return f"rawloop replay of {self.shown}: {report}{hint}"

    # -- recording -----------------------------------------------------------------------

    def commit(self, item: pytest.Item) -> None:
        """The test passed: move the recording into place (fail if nothing was recorded)."""
        assert self.recorder is not None
        self.recorder.close()
        if self._loop is None or not self.part.exists():
            pytest.fail(
                f"rawloop: recording {self.shown}: the test ran no loop made with "
                "rawloop_replay.make_loop(...), so nothing was recorded",
                pytrace=False,
            )
        try:
            Trace.load(self.part)
        except TraceError as exc:
            pytest.fail(f"rawloop: the recording of {self.shown} is not readable: {exc}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.part, self.path)
        item.user_properties.append((RECORDED, self.shown))

    def abandon(self, item: pytest.Item) -> None:
        """The test failed: keep the partial recording beside the trace, never in its place."""
        assert self.recorder is not None
        self.recorder.close()
        if self.part.exists():
            item.add_report_section(
                "call", "rawloop", f"the failed test's recording was left at {self.part}"
            )
