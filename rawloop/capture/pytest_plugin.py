"""Replay tests as a pytest plugin: a marker, two fixtures, and record modes.

Registered through the ``pytest11`` entry point, so installing rawloop is
enough. A test names its trace with ``@pytest.mark.rawloop_trace(path=None,
**options)`` (``path`` relative to the test file's directory, then to the
rootdir; without it ``traces/<test module>/<test name>.jsonl`` next to the
test file, the name without an ``anyio_backend`` parameter) and asks for:

* ``rawloop_replay``, a ``RawloopReplay`` (``rawloop.capture.pytest_replay``):
  ``.loop`` (a ``Loop`` built from the trace, tool calls answered from its
  ``result`` records) or ``.make_loop(model, instructions, tools, **kwargs)``
  (your configuration, replay transport underneath); ``await .run(input=None)``
  (async tests need an async plugin's marker, e.g. ``@pytest.mark.anyio``) or
  ``.run_sync(...)`` in a plain test; ``.report`` is the ``ReplayReport`` so
  far. A divergence fails the test with the report; so do recorded requests
  never made (``.check = False`` to inspect ``.report`` yourself).
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

from collections.abc import Generator
from typing import Any

import httpx
import pytest

from ..core.errors import ReplayDivergence
from ..core.words import plural
from ..loop.tool_run import exception_leaves
from .pytest_markers import MARKER, trace_of
from .pytest_replay import RECORDED, RawloopReplay
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

_STATE = pytest.StashKey[RawloopReplay]()
_SERVER = pytest.StashKey[RawloopServer]()


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
    found = (leaf for leaf in exception_leaves(exc) if isinstance(leaf, ReplayDivergence))
    return next(found, None)


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
        if name == RECORDED
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
