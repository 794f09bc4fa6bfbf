"""Reading, changing and saving the state of a paused run: the debugger's state API.

``StateAccess`` is the half of ``Debugger`` that works on the ``LoopState``
while the worker waits at a breakpoint (nothing else touches the state then):
``view``/``get`` read it as one JSON document, ``set``/``delete``/``append``/
``set_model``/``set_result`` change it through checked RFC 6902 patches (so
the loop reports each change to ``on_edit`` and the session records it),
``next_request`` builds the exact body about to be sent, and ``save`` copies
the session's recording. The engine that runs the loop and pauses it is
``rawloop.debug.debugger``; this class only reads the attributes it sets.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import orjson

from ..core import jsonpath, patch
from ..core.jsondiff import MISSING, Difference, first_difference
from ..loop.loop import Loop, LoopRun
from ..loop.state import LoopState, RunResult
from ..replay.replayer import DEFAULT_VOLATILE
from ..trace.format import Trace
from .edits import apply_patch, path_patch, plain_json, state_document
from .errors import StepError
from .session import Attempt, Departure, SessionRecorder

__all__ = ["SAVED_FORK", "StateAccess"]

#: The stop reason of a trace saved at a breakpoint, before its run ended.
SAVED_FORK = "saved-fork"


class StateAccess:
    """Reads and changes a paused run's state; ``Debugger`` sets every attribute below."""

    loop: Loop
    trace: Trace | None
    paused: bool
    ended: bool
    result: RunResult | None
    departure: Departure | None
    attempts: list[Attempt]
    recording: Path
    recorder: SessionRecorder
    _run: LoopRun | None
    _snapshot: Any
    _started: float  # time.monotonic() when the run started
    _recorded: dict[int, Any]  # iteration -> the request body it sent first

    @property
    def state(self) -> LoopState:
        """The run's state (read and change it only while paused)."""
        if self._run is None:
            raise StepError("the run has not started yet")
        return self._run.state

    @property
    def replaying(self) -> bool:
        return self.trace is not None

    @property
    def end_reason(self) -> str:
        """Why the run ended: its stop reason, or ``error`` when it failed without a result."""
        return self.result.stop_reason if self.result else "error"

    # -- reading the state ---------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """The state as one JSON document: the editable fields, then the read-only ones."""
        state = self.state
        doc = state_document(state)
        doc["last_turn"] = plain_json(state.last_turn.to_dict()) if state.last_turn else None
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
        return patch.diff(self._snapshot, state_document(self.state))

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
        return apply_patch(self.state, ops)

    def _edit(self, kind: str, path: str, value: Any = None) -> list[dict[str, Any]]:
        self._require_paused("change the state")
        return apply_patch(self.state, path_patch(state_document(self.state), kind, path, value))

    def known_tools(self) -> list[str]:
        """Names of the tools the model is told about."""
        if self._run is None:
            return []
        names = (d.get("name") or d.get("function", {}).get("name") for d in self.state.tools)
        return [str(name) for name in names if name]

    # -- saving ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> int:
        """Write the run so far as a trace (with this breakpoint's edits); returns its records.

        Saved before the run ended, the trace is a fork: it ends with an ``end``
        record of stop reason ``saved-fork`` at this breakpoint (so it reads as
        saved, not as a crash, and a replay stops at the same place).
        """
        if self._run is None:
            raise StepError("nothing to save: the run has not started")
        data = self.recording.read_bytes() if self.recording.exists() else b""
        if not data or not self.attempts:
            raise StepError(
                "nothing to save yet: no request has been sent (a trace needs one; go on with n)"
            )
        pending = self.pending_edits()  # only while paused: the run has not recorded them yet
        if pending:
            iteration = self.state.iteration
            record = {"kind": "edit", "iteration": iteration, "patch": self.recorder.ops(pending)}
            data += orjson.dumps(self.recorder.redactor.strings(record)) + b"\n"
        if not self.ended:
            data += orjson.dumps(self._fork_end()) + b"\n"
        records = data.count(b"\n") - 1  # every line but the header
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(data) if target.suffix == ".gz" else data)
        return records

    def _fork_end(self) -> dict[str, Any]:
        state = self.state
        return {
            "kind": "end",
            "stop_reason": SAVED_FORK,
            "iterations": state.iteration,
            "usage": dict(state.usage),
            "duration": round(time.monotonic() - self._started, 6),
            "error": None,
        }

    def _require_paused(self, what: str) -> None:
        if self._run is None:
            raise StepError(f"cannot {what}: the run has not started")
        if self.ended:
            raise StepError(f"cannot {what}: the run has ended ({self.end_reason})")
        if not self.paused:
            raise StepError(f"cannot {what}: the run is not paused")
