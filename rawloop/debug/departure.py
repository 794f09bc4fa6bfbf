"""A replay leaving its recording: noticing it, and what the run does then.

A replayed run answers every request and every tool call from its trace. An
edit at a breakpoint can make the next request differ from the recorded one;
on resuming, ``Departing`` notices that (``difference_from_recording``) and
does what ``after_edit`` says: ``stop`` ends the run there (stop reason
``left-recording``), ``live`` switches the wire to ``live_base_url`` and runs
tools with the session's own handlers, ``ignore`` keeps answering with the
recorded responses. ``after_edit`` may change at any breakpoint until the run
has left (``set_after_edit``). ``Debugger`` extends this class and sets every
attribute it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.turn import FunctionCall
from ..loop.retry import RetryPolicy
from ..loop.tools import Tool, ToolResult, run_tool
from ..replay.replayer import Replayer
from .access import StateAccess
from .errors import StepError
from .session import Departure, ReplayOrLiveTransport

__all__ = ["AFTER_EDIT_MODES", "LEFT_RECORDING", "Departing", "check_after_edit"]

#: What a replayed run does once an edit took it off the recording.
AFTER_EDIT_MODES = ("stop", "live", "ignore")

#: The stop reason of a replay ended by ``after_edit="stop"``.
LEFT_RECORDING = "left-recording"


def check_after_edit(mode: str, replaying: bool, live_base_url: str | None) -> None:
    """Refuse an ``after_edit`` mode that cannot work, saying why."""
    if mode not in AFTER_EDIT_MODES:
        raise StepError(f"after_edit must be one of {', '.join(AFTER_EDIT_MODES)}, not {mode!r}")
    if replaying and mode == "live" and not live_base_url:
        raise StepError("after_edit='live' needs a base URL to continue against (--base-url)")


class Departing(StateAccess):
    """The replay's side of the debugger: recorded answers until an edit leaves them."""

    after_edit: str
    live_base_url: str | None
    live_max_iterations: int
    handlers: dict[str, Tool[..., Any]]
    progress: Callable[[str], None]
    _switch: ReplayOrLiveTransport | None
    _replayer: Replayer | None
    _errors: list[str]

    def set_after_edit(self, mode: str) -> None:
        """Change what the run does once an edit takes it off the recording (replay only)."""
        if self.trace is None:
            raise StepError("after-edit is for replays; a live run has no recording to leave")
        if self.ended:
            raise StepError(f"cannot change after-edit: the run has ended ({self.end_reason})")
        if self.departure is not None:
            raise StepError(
                f"the run left the recording at iteration {self.departure.iteration} "
                f"already (after-edit {self.departure.mode}); it cannot change now"
            )
        check_after_edit(mode, True, self.live_base_url)
        self.after_edit = mode

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
                "after-edit stop: the run ends here, before sending it (save it with "
                "save FILE; after-edit ignore or live, set before going on, sends it instead)"
            )
        elif self.after_edit == "live":
            assert self.live_base_url is not None and self._switch is not None
            self._switch.go_live()
            self.loop.base_url = self.live_base_url
            self.loop.retry_policy = RetryPolicy()
            self.loop.max_iterations = max(self.loop.max_iterations, self.live_max_iterations)
            self.progress(
                f"after-edit live: going on against {self.live_base_url} "
                f"(at most {self.loop.max_iterations} requests)"
            )
        else:
            assert self._switch is not None
            self._switch.ignore_divergence()
            self.progress(
                "after-edit ignore: going on with the recorded responses "
                "(they answer the recorded requests, not the edited ones)"
            )

    def divergences_ignored(self) -> int:
        """Requests that differed from the recording and were answered anyway (``ignore``)."""
        return len(self._switch.replay.responder.divergences) if self._switch else 0

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
        if self._replayer.results.get(call.call_id) is not None:
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
