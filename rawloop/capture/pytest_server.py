"""The ``rawloop_server`` fixture's object: a capture served to the customer's own code.

A test marked ``@pytest.mark.rawloop_trace("captured/run.jsonl")`` that asks
for ``rawloop_server`` gets a ``ReplayServer`` serving that trace on a
127.0.0.1 port (in a thread of its own, so the app under test may be sync or
async, on any event loop) and points the unchanged application at
``rawloop_server.base_url``: the openai SDK, openai-agents, pydantic-ai, with
their real tools. The server is strict: a request the capture does not hold
is answered 409 with a ``replay_divergence`` error, and after the test the
plugin fails it with the divergence report, whatever the app made of the 409.

Marker options used here: ``strict`` (default True), ``chunking``, ``seed``,
``rate``, ``faults``, ``ignore``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest

from ..core.errors import RawloopError
from ..core.words import plural
from ..trace.format import Trace

__all__ = ["SERVER_OPTIONS", "RawloopServer"]

#: The ``rawloop_trace`` marker options the server takes (the others are the loop's).
SERVER_OPTIONS = ("strict", "chunking", "seed", "rate", "faults", "ignore")


class RawloopServer:
    """A running fake server for one trace (what the ``rawloop_server`` fixture gives).

    Attributes:
        path: the trace file; ``trace``: the loaded ``Trace``.
        base_url: ``http://127.0.0.1:PORT/v1``, for ``base_url=`` of any OpenAI client.
        url: the same without ``/v1``.
        server: the ``rawloop.replay.server.ReplayServer`` (``.divergences``, ``.served``).
        check: fail the test after it when the app sent what the capture did not
            (set it to False in a test that expects that and reads ``divergences``).
    """

    def __init__(
        self, path: Path, options: dict[str, Any], *, shown: str = "", test: str = ""
    ) -> None:
        from ..replay.server import ReplayServer

        self.path = path
        self.shown = shown or str(path)
        self.test = test
        self.check = True
        settings = {k: options[k] for k in SERVER_OPTIONS if k in options}
        settings.setdefault("strict", True)
        try:
            self.trace = Trace.load(path)
            self.server = ReplayServer([self.trace], **settings)
        except (RawloopError, TypeError, ValueError) as exc:
            pytest.fail(f"rawloop: cannot serve {self.shown}: {exc}", pytrace=False)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        portal = self._portal_cm.__enter__()
        try:
            self._task, port = portal.start_task(self.server.serve)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"

    @property
    def divergences(self) -> list[Any]:
        """Every request the capture did not hold, as ``ReplayDivergence`` objects."""
        return list(self.server.divergences)

    def failure_message(self) -> str | None:
        """What the test fails with: the divergence report, or None when all matched."""
        if not self.check:
            return None
        if self.divergences:
            lines = [f"  - {d}" for d in self.divergences]
            return (
                f"rawloop_server: the app sent what the capture {self.shown} does not hold "
                f"({plural(len(lines), 'request')}):\n"
                + "\n".join(lines)
                + "\n(if the change is intended, record the capture again with rawloop record)"
            )
        if self.server.served == 0:
            return (
                f"rawloop_server: the test sent no request to {self.base_url}: point the app's "
                "base_url at rawloop_server.base_url (or set rawloop_server.check = False)"
            )
        return None

    def close(self) -> None:
        """Stop the server and its thread."""
        self._task.cancel()
        self._portal_cm.__exit__(None, None, None)
