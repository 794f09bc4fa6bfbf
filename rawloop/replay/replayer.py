"""Replay a whole run: drive a trace through a loop and judge where it leaves the recording.

``replay()`` runs a whole trace through a real ``Loop``: tool results come
from the trace (or the real handlers with ``live_tools=True``), breakpoint
edits are applied again, and the verdict is ``identical``, ``diverged`` (with
the first divergence: iteration, JSON path, both values) or ``error``.

The answers come from the sans-IO ``Responder`` (``rawloop.replay.responder``)
through the in-process ``ReplayTransport`` (``rawloop.replay.transport``);
both are importable from here too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..core import patch
from ..core.conversation import conversation, tool_outputs
from ..core.errors import RawloopError, ReplayDivergence, ReplayError
from ..core.jsondiff import first_difference
from ..core.turn import FunctionCall
from ..core.words import plural
from ..loop.loop import Loop
from ..loop.retry import RetryPolicy
from ..loop.state import LoopState, RunResult
from ..loop.tools import StopLoop, Tool, ToolResult
from ..trace.format import Exchange, Trace
from .capture_replay import is_capture, live_runner, replay_as_sent
from .faults import Fault
from .responder import DEFAULT_VOLATILE, Answer, Responder, comparable_turn
from .transport import ReplayTransport, load, replay_client

__all__ = [
    "DEFAULT_VOLATILE",
    "Answer",
    "ReplayReport",
    "ReplayTransport",
    "Replayer",
    "Responder",
    "expected_outputs",
    "first_input",
    "judge",
    "live_runner",
    "loop_from_trace",
    "replay",
    "tool_differences",
]

# Stop reasons a replayed loop reaches by itself; any other came from a hook.
_NATURAL_STOPS = frozenset({"completed", "incomplete", "max_iterations", "error"})


# -- replaying a whole run ------------------------------------------------------------


@dataclass
class ReplayReport:
    """The outcome of ``replay()``."""

    verdict: str  # "identical", "diverged" or "error"
    divergence: ReplayDivergence | None = None
    divergences: list[ReplayDivergence] = field(default_factory=list)
    result: RunResult | None = None
    error: BaseException | None = None
    unconsumed: list[Exchange] = field(default_factory=list)
    tool_differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.verdict == "identical"

    def __str__(self) -> str:
        if self.verdict == "identical":
            iterations = self.result.iterations if self.result else 0
            replayed = plural(iterations, "iteration")
            return f"identical: {replayed} replayed, every request matched the recording"
        if self.divergence is not None:
            return f"diverged: {self.divergence}"
        return f"error: {type(self.error).__name__}: {self.error}"


class Replayer:
    """Hooks and tool runner that put a trace's decisions back into a live loop.

    Use it as a hook (it re-applies recorded breakpoint edits, and stops where
    a hook stopped the recording) and as ``Loop.tool_runner`` (``run_tool``
    answers each call with its recorded result).

    With ``live_tools`` the real tools answer, and recorded edits of the tool
    results are not applied over their outputs: a result corrected at a
    breakpoint is what the live tool must now return, not a mask over it.
    """

    def __init__(self, trace: Trace, *, live_tools: bool = False) -> None:
        self.live_tools = live_tools
        self.edits = trace.edits()
        self.results = trace.results()
        end = trace.end() or {}
        self.stop_reason = end.get("stop_reason")
        self.iterations = end.get("iterations")

    def on_breakpoint(self, state: LoopState) -> None:
        # Iteration 0's edits are already in the recorded first request, which
        # is where a replay starts from: applying them again would double them.
        ops = self.edits.get(state.iteration) if state.iteration else None
        if ops and self.live_tools:
            ops = [op for op in ops if not _touches_results(op)]
        if ops:
            state.update_from(patch.apply(state.to_dict(), ops))
        if (
            self.stop_reason not in _NATURAL_STOPS
            and self.stop_reason is not None
            and state.iteration == self.iterations
        ):
            state.stop(self.stop_reason)  # a breakpoint hook stopped the recorded run here

    async def run_tool(self, call: FunctionCall) -> ToolResult:
        recorded = self.results.get(call.call_id)
        if recorded is None:
            raise ReplayDivergence(
                f"the model called {call.name} (call_id {call.call_id}), which the trace never ran",
                iteration=-1,
                path=f"results.{call.call_id}",
                actual=call.arguments,
            )
        error = recorded.get("error")
        if error and error.get("type") == "StopLoop":
            raise StopLoop(error.get("message", ""))
        return ToolResult(
            call.call_id,
            call.name,
            call.arguments,
            output=recorded["output"],
            error=error,
            duration=float(recorded.get("duration", 0.0)),
        )


def _touches_results(op: dict[str, Any]) -> bool:
    paths = (op.get("path"), op.get("from"))
    return any(isinstance(p, str) and (p == "/results" or p.startswith("/results/")) for p in paths)


def expected_outputs(trace: Trace) -> dict[str, Any]:
    """Each call's tool output as the run sent it, by call id.

    The recorded ``result`` records, overridden by what the next requests
    carried: a result corrected at a breakpoint (``rawloop step``'s ``result``)
    is recorded as the tool returned it and sent as corrected. The corrected
    value is the expected one.
    """
    out: dict[str, Any] = {k: r.get("output") for k, r in trace.results().items()}
    for exchange in trace.exchanges():
        body = exchange.request.get("body")
        if isinstance(body, dict):
            out.update(tool_outputs(trace.dialect, conversation(trace.dialect, body)))
    return out


def loop_from_trace(
    trace: Trace,
    *,
    http_client: httpx.AsyncClient | None = None,
    rate: float = 0.0,
    tools: Iterable[Tool[..., Any]] = (),
) -> Loop:
    """A Loop configured as the recorded one was, as far as its first request shows.

    It talks to ``http_client``, by default a client replaying ``trace``.
    ``tools`` replace the recorded definitions of the same name, so their
    handlers can run (``replay(..., live_tools=True)``).
    """
    exchanges = trace.exchanges()
    if not exchanges:
        raise ReplayError(f"{trace.path}: the trace holds no request to replay")
    body = dict(exchanges[0].request["body"])
    chat = trace.dialect == "chat"
    model = body.pop("model", trace.header.get("model", ""))
    instructions = None if chat else body.pop("instructions", None)
    handlers = {t.name: t for t in tools}
    definitions = [
        handlers.pop(d.get("name") or d.get("function", {}).get("name"), d)
        for d in body.pop("tools", [])
    ]
    definitions.extend(handlers.values())  # tools the recording did not have
    for key in ("input", "messages", "stream"):
        body.pop(key, None)
    attempts = max(e.attempt for e in exchanges) + 1
    return Loop(
        model,
        instructions,
        tools=definitions,
        dialect=trace.dialect,
        base_url=trace.header.get("base_url") or None,
        http_client=http_client or httpx.AsyncClient(transport=ReplayTransport(trace)),
        max_iterations=_iteration_budget(trace, exchanges),
        # Retry as often as the recording did, without the waits unless pacing is asked for.
        retries=RetryPolicy(
            max_retries=max(attempts, 3), initial_delay=0.0, max_retry_after=60.0 if rate else 0.0
        ),
        extra_body=body,  # as recorded: never checked, never taken for a Loop option
    )


def _iteration_budget(trace: Trace, exchanges: list[Exchange]) -> int:
    """As many model calls as the recording made; one more when a hook stopped it.

    A run stopped at a breakpoint reached that breakpoint's iteration without
    sending its request: the replay must get there too to stop the same way.
    """
    budget = max(exchanges[-1].iteration + 1, 1)
    end = trace.end() or {}
    if end.get("stop_reason") not in _NATURAL_STOPS and end.get("iterations") is not None:
        budget = max(budget, int(end["iterations"]) + 1)
    return budget


def first_input(trace: Trace, loop: Loop) -> list[dict[str, Any]]:
    """The input a replay of ``trace`` starts from: the first recorded request's."""
    body = trace.exchanges()[0].request["body"]
    if trace.dialect != "chat":
        return list(body.get("input") or [])
    messages = list(body.get("messages") or [])
    if loop.instructions is not None and messages and messages[0].get("role") == "system":
        messages = messages[1:]  # the loop adds its own system message
    return messages


async def replay(
    trace: Trace | str | Path,
    loop: Loop | None = None,
    *,
    rate: float = 0.0,
    chunking: str = "recorded",
    seed: int = 0,
    faults: Iterable[Fault | str] = (),
    live_tools: bool = False,
    on_divergence: str = "raise",
    ignore: Sequence[str] = DEFAULT_VOLATILE,
    hooks: Iterable[Any] = (),
    http_client: httpx.AsyncClient | None = None,
    as_sent: bool | None = None,
    tools: Iterable[Tool[..., Any]] = (),
) -> ReplayReport:
    """Run ``trace`` end to end through a loop and compare it with the recording.

    Without ``loop``, one is built from the trace (``tools``: the handlers that
    ``live_tools`` runs, under the recorded definitions); a given one is
    copied, so it stays as it was. Tool results come from the trace unless ``live_tools``:
    then the real handlers run, recorded edits of the results are not applied
    over their outputs, and each output that differs from the one the run
    sent (``expected_outputs``: a corrected result counts as corrected) is
    listed in ``tool_differences``. ``hooks`` see the replayed run.

    The answers come from an in-process ``ReplayTransport`` (``rate``,
    ``chunking``, ``seed``, ``faults``, ``on_divergence``, ``ignore``: see
    ``Responder``), or from ``http_client`` when one is given: a client of a
    ``rawloop serve`` server, say. That client is used as it is and left
    open; when it has a ``base_url``, the loop sends there. Whatever answers
    it is then the judge of the requests: the report's ``divergences`` and
    ``unconsumed`` stay empty, and only the decisions, the stop reason and
    (with ``live_tools``) the tool outputs are compared.

    ``as_sent``: send the recorded requests as they are instead of running a
    loop (``rawloop.replay.capture_replay``; live ``tools`` then answer in the
    client's rendering). By default (None) a capture recorded by ``rawloop
    record`` is replayed so, unless a ``loop``, ``hooks`` or ``live_tools``
    without ``tools`` ask for rawloop's loop to take the client's place.
    """
    trace = load(trace)
    tools = list(tools)
    if as_sent is None:
        # Live tools run as sent too (in the client's rendering); hooks need a loop.
        as_sent = (
            is_capture(trace) and loop is None and not hooks and (bool(tools) or not live_tools)
        )
    if as_sent:
        report: ReplayReport = await replay_as_sent(
            trace,
            http_client=http_client,
            chunking=chunking,
            seed=seed,
            rate=rate,
            faults=faults,
            on_divergence=on_divergence,
            ignore=ignore,
            tools=tools if live_tools else (),
        )
        if live_tools and report.result is not None:
            report.tool_differences = tool_differences(report.result, trace)
        return report
    client, transport = replay_client(
        trace,
        http_client,
        chunking=chunking,
        seed=seed,
        rate=rate,
        faults=faults,
        ignore=ignore,
        on_divergence=on_divergence,
    )
    if loop is None:
        # Live tools answer under the recorded definitions: only their handlers are new.
        loop = loop_from_trace(
            trace, http_client=client, rate=rate, tools=() if live_tools else tools
        )
    else:
        loop = copy.copy(loop)
        loop.http_client = client
    if http_client is not None and str(http_client.base_url):
        loop.base_url = str(http_client.base_url).rstrip("/")
    replayer = Replayer(trace, live_tools=live_tools)
    if not live_tools:
        loop.tool_runner = replayer.run_tool
    elif tools:
        loop.tool_runner = live_runner(tools, timeout=loop.tool_timeout)
    report = ReplayReport("identical")
    try:
        report.result = await loop.run(first_input(trace, loop), hooks=[replayer, *hooks])
    except ReplayDivergence as exc:
        report.verdict, report.divergence = "diverged", exc
        report.result = exc.result
    except RawloopError as exc:
        report.verdict, report.error = "error", exc
        report.result = exc.result
    finally:
        if transport is not None:  # the client is ours
            await client.aclose()
    if transport is not None:  # the in-process transport judged the requests too
        report.divergences = list(transport.responder.divergences)
        report.unconsumed = transport.responder.unconsumed()
    if report.verdict == "identical":
        judge(report, trace, live_tools)
    elif live_tools and report.result is not None:
        report.tool_differences = tool_differences(report.result, trace)
    return report


def tool_differences(result: RunResult, trace: Trace) -> list[dict[str, Any]]:
    """The live tool outputs that differ from the ones the recorded run sent."""
    expected = expected_outputs(trace)
    return [
        {"call_id": r.call_id, "name": r.name, "recorded": expected[r.call_id], "actual": r.output}
        for r in result.results
        if r.call_id in expected and expected[r.call_id] != r.output
    ]


def judge(report: ReplayReport, trace: Trace, live_tools: bool) -> None:
    """Look past the requests: unused recordings, changed decisions, changed tool outputs."""
    result = report.result
    assert result is not None
    if live_tools:
        report.tool_differences = tool_differences(result, trace)
    if report.divergences:
        report.verdict, report.divergence = "diverged", report.divergences[0]
        return
    if report.unconsumed:
        first = report.unconsumed[0]
        report.verdict = "diverged"
        report.divergence = ReplayDivergence(
            f"the run ended with {plural(len(report.unconsumed), 'recorded request')} never made "
            f"(first: iteration {first.iteration}, attempt {first.attempt})",
            iteration=first.iteration,
            path="<unconsumed>",
        )
        return
    decisions = trace.of_kind("decision")
    for record, turn in zip(decisions, result.turns):
        found = first_difference(
            comparable_turn(record.data["turn"]), comparable_turn(turn.to_dict())
        )
        if found is not None:
            report.verdict = "diverged"
            report.divergence = ReplayDivergence(
                f"iteration {record.iteration}: the decision differs at turn.{found}",
                iteration=record.iteration,
                path=f"turn.{found.path}",
                recorded=found.a,
                actual=found.b,
            )
            return
    end = trace.end()
    if end is not None and end.get("stop_reason") != result.stop_reason:
        report.verdict = "diverged"
        report.divergence = ReplayDivergence(
            f"the run stopped with {result.stop_reason!r}, the recording with {end.get('stop_reason')!r}",
            iteration=result.iterations,
            path="end.stop_reason",
            recorded=end.get("stop_reason"),
            actual=result.stop_reason,
        )
