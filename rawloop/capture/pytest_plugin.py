"""Replay tests as a pytest plugin: a marker, two fixtures, and record modes.

Registered through the ``pytest11`` entry point, so installing rawloop is
enough. A test names its trace with ``@pytest.mark.rawloop_trace(path=None,
**options)`` (``path`` relative to the test file's directory, then to the
rootdir; without it ``traces/<test module>/<test name>.jsonl`` next to the
test file, the name without an ``anyio_backend`` parameter) and asks for:

* ``rawloop_replay``, a ``RawloopReplay``: ``.loop`` (a ``Loop`` built from the
  trace, tool calls answered from its ``result`` records) or ``.make_loop(model,
  instructions, tools, **kwargs)`` (your configuration, replay transport
  underneath); ``await .run(input=None)`` (async tests need an async plugin's
  marker, e.g. ``@pytest.mark.anyio``) or ``.run_sync(...)`` in a plain test;
  ``.report`` is the ``ReplayReport`` so far. A divergence fails the test with
  the report; so do recorded requests never made (``.check = False`` to
  inspect ``.report`` yourself).
* ``rawloop_server``, a ``RawloopServer`` (``rawloop.capture.pytest_server``):
  the trace served on 127.0.0.1 at ``.base_url`` for the customer's own,
  unchanged code; the test fails with the divergence report when the code
  sends a request the capture does not hold.

Options: ``chunking``, ``seed``, ``rate``, ``faults``, ``ignore``,
``on_divergence`` (as for ``rawloop.replay``), ``live_tools`` (run the real
handlers of a ``make_loop`` loop), ``strict`` (the server's; default True),
``redact`` and ``metadata`` (for recording).

Recording, as pytest-recording's ``--record-mode``: ``--rawloop-record=none``
(the default) only replays, a missing trace fails the test; ``once`` records a
missing trace against the API; ``all`` records every trace again. Recording
needs the loop built through ``rawloop_replay.make_loop(...)``; real tools run;
the trace is written to ``<trace>.part`` and moved into place when the test
passes. The client recordings use is the ``rawloop_record_client`` fixture
(``None``: the real API with ``OPENAI_API_KEY``); override it to record against
anything else, e.g. ``ScriptedAPI([Reply(stream_bytes)]).client()``.

Recorded breakpoint edits are applied again on replay for ``.loop`` and for
``make_loop`` loops given no hooks of their own; a loop made with ``hooks=`` is
trusted to make its edits itself (so a changed hook shows up as a divergence).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
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
from .pytest_markers import MARKER, trace_of
from .pytest_server import RawloopServer

__all__ = [
    "MARKER",
    "RECORD_MODES",
    "RawloopReplay",
    "pytest_addoption",
    "pytest_configure",
    "rawloop_record_client",
    "rawloop_replay",
    "rawloop_server",
    "replay_message",
]

RECORD_MODES = ("none", "once", "all")

_TRANSPORT_OPTIONS = ("chunking", "seed", "rate", "faults", "ignore", "on_divergence")
_STATE = pytest.StashKey["RawloopReplay"]()
_SERVER = pytest.StashKey[RawloopServer]()
_RECORDED = "rawloop_recorded"


# -- pytest hooks ------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--rawloop-record``."""
    group = parser.getgroup("rawloop", "rawloop replay tests")
    group.addoption(
        "--rawloop-record",
        action="store",
        default="none",
        choices=RECORD_MODES,
        dest="rawloop_record",
        metavar="MODE",
        help="none: replay traces only, a missing one fails (default); once: record missing "
        "traces against the API; all: record every trace again",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``rawloop_trace`` marker."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(path=None, **options): replay this test's rawloop loop from a wire trace "
        "(path relative to the test file, then the rootdir; options as for rawloop.replay)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After the test: fail it when its replay diverged or left the trace unconsumed."""
    diverged: ReplayDivergence | None = None
    served: str | None = None
    try:
        outcome = yield
    except BaseException as exc:
        replay = item.stash.get(_STATE, None)
        server = item.stash.get(_SERVER, None)
        # The app's own error over a 409 says less than the divergence report.
        served = server.failure_message() if server is not None else None
        if replay is None and served is None:
            raise
        if replay is not None and replay.recording:
            replay.abandon(item)
            raise
        diverged = _divergence_in(exc)
        if diverged is None and served is None:
            raise
        if replay is not None:
            replay.error = replay.error or diverged
    if served is not None or diverged is not None:  # outside the except: no chained traceback
        pytest.fail(served or replay_message(item) or str(diverged), pytrace=False)
    server = item.stash.get(_SERVER, None)
    message = server.failure_message() if server is not None else None
    if message:
        pytest.fail(message, pytrace=False)
    replay = item.stash.get(_STATE, None)
    if replay is not None:
        if replay.recording:
            replay.commit(item)
        elif replay.check:
            message = replay.failure_message()
            if message:
                pytest.fail(message, pytrace=False)
    return outcome


def _divergence_in(exc: BaseException) -> ReplayDivergence | None:
    """The ``ReplayDivergence`` that ``exc`` is, or holds (inside exception groups)."""
    if isinstance(exc, ReplayDivergence):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _divergence_in(inner)
        if found is not None:
            return found
    return None


def replay_message(item: pytest.Item) -> str | None:
    """The failure message of ``item``'s replay, or None (no replay, or it matched)."""
    replay = item.stash.get(_STATE, None)
    return None if replay is None else replay.failure_message()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the traces recorded in this session (from every xdist worker)."""
    recorded = [
        value
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", ())
        if name == _RECORDED
    ]
    if recorded:
        terminalreporter.write_sep("-", f"rawloop: recorded {plural(len(recorded), 'trace')}")
        for path in recorded:
            terminalreporter.write_line(str(path))


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def rawloop_record_client() -> httpx.AsyncClient | None:
    """The HTTP client recordings are made with; ``None`` means the real API.

    Override it (in a test module or conftest.py) to record against a stand-in,
    e.g. ``ScriptedAPI([...]).client()``. It is only requested when recording.
    """
    return None


@pytest.fixture
def rawloop_replay(request: pytest.FixtureRequest) -> RawloopReplay:
    """A ``RawloopReplay`` for the trace the test's ``rawloop_trace`` marker names."""
    path, options, shown = trace_of(request)
    mode = str(request.config.getoption("rawloop_record"))
    recording = mode == "all" or (mode == "once" and not path.exists())
    if not recording and not path.exists():
        pytest.fail(
            f"rawloop: trace {shown} does not exist (record mode {mode!r}); record it with "
            f"pytest --rawloop-record=once {request.node.nodeid}",
            pytrace=False,
        )
    client: httpx.AsyncClient | None = None
    if recording:
        client = request.getfixturevalue("rawloop_record_client")
    replay = RawloopReplay(
        path,
        options,
        recording=recording,
        record_client=client,
        shown=shown,
        test=request.node.nodeid,
    )
    request.node.stash[_STATE] = replay
    return replay


@pytest.fixture
def rawloop_server(request: pytest.FixtureRequest) -> Generator[RawloopServer, None, None]:
    """The marker's trace served on 127.0.0.1 (``.base_url``) for the app under test."""
    path, options, shown = trace_of(request)
    if not path.exists():
        pytest.fail(f"rawloop: trace {shown} does not exist", pytrace=False)
    server = RawloopServer(path, options, shown=shown, test=request.node.nodeid)
    request.node.stash[_SERVER] = server
    try:
        yield server
    finally:
        server.close()


# -- what the test gets --------------------------------------------------------------------


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
        item.user_properties.append((_RECORDED, self.shown))

    def abandon(self, item: pytest.Item) -> None:
        """The test failed: keep the partial recording beside the trace, never in its place."""
        assert self.recorder is not None
        self.recorder.close()
        if self.part.exists():
            item.add_report_section(
                "call", "rawloop", f"the failed test's recording was left at {self.part}"
            )
