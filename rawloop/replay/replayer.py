"""Replay: answer a loop's requests from a trace, and say where the run leaves it.

Three layers, from pure to I/O:

* ``Responder`` answers in three steps: choose the recorded exchange (a
  cursor through the trace), compare the request with the recorded one, and
  ``shape`` the ``Answer`` (status, headers, chunks, delays) with faults,
  re-chunking and pacing. No I/O. The HTTP server (``rawloop.server``)
  chooses by itself, from the request, and calls ``shape`` only.
* ``ReplayTransport`` is an ``httpx.AsyncBaseTransport`` serving Answers in
  process, with the chunk boundaries (and, if asked, the timing) of the answer.
* ``replay()`` runs a whole trace through a real ``Loop``: tool results come
  from the trace (or the real handlers with ``live_tools=True``), breakpoint
  edits are applied again, and the verdict is ``identical``, ``diverged``
  (with the first divergence: iteration, JSON path, both values) or ``error``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from ..core import patch
from ..core.errors import ConfigurationError, RawloopError, ReplayDivergence, ReplayError
from ..core.jsondiff import first_difference
from ..core.turn import FunctionCall
from ..loop.loop import Loop
from ..loop.retry import RetryPolicy
from ..loop.state import LoopState, RunResult
from ..loop.tools import StopLoop, Tool, ToolResult
from ..trace.format import Exchange, Trace, chunk_bytes
from .chunking import rechunk, split_events
from .faults import Fault, apply_to_events, parse_fault

__all__ = [
    "DEFAULT_VOLATILE",
    "Answer",
    "ReplayReport",
    "ReplayTransport",
    "Replayer",
    "Responder",
    "first_input",
    "judge",
    "loop_from_trace",
    "replay",
]

#: Request-body keys ignored when comparing with the recording: they change
#: between runs without changing what the model is asked.
DEFAULT_VOLATILE = ("prompt_cache_key", "safety_identifier")

# Hop-by-hop and framing headers describe the recorded connection, not the answer.
_DROPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
)
# Stop reasons a replayed loop reaches by itself; any other came from a hook.
_NATURAL_STOPS = frozenset({"completed", "incomplete", "max_iterations", "error"})


@dataclass
class Answer:
    """What to send back for one request.

    ``delays[i]`` is the wait before ``chunks[i]``. ``fail``: ``"drop"``
    (close before any byte) or ``"cut"`` (reset after the chunks).
    ``injected``: a fault answered instead of the recording, which the next
    attempt still gets.
    """

    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    delays: list[float]
    iteration: int
    attempt: int
    fail: str | None = None
    injected: bool = False


class Responder:
    """Chooses, checks and shapes the recorded answer for each request (sans-IO).

    ``answer(body)`` serves the exchanges in recorded order: a fault that
    replaces an answer does not use up the exchange, so the client's retry
    gets it. ``shape`` is the last step alone, for callers that choose the
    exchange themselves.

    Args:
        trace: the trace to answer from.
        chunking: ``recorded``, ``events``, ``bytes`` or ``hostile`` (``rawloop.chunking``).
        seed: seeds ``hostile`` chunking.
        rate: multiplies the recorded gaps between chunks (0: no waiting).
        faults: ``Fault`` objects or their string specs (``rawloop.faults``).
        ignore: request-body keys left out of the comparison.
        on_divergence: ``"raise"`` (``ReplayDivergence``) or ``"warn"`` (record,
            warn, and answer with the recording anyway).
    """

    def __init__(
        self,
        trace: Trace,
        *,
        chunking: str = "recorded",
        seed: int = 0,
        rate: float = 0.0,
        faults: Iterable[Fault | str] = (),
        ignore: Sequence[str] = DEFAULT_VOLATILE,
        on_divergence: str = "raise",
    ) -> None:
        if on_divergence not in ("raise", "warn"):
            raise ConfigurationError(
                f"on_divergence must be 'raise' or 'warn', not {on_divergence!r}"
            )
        rechunk([], chunking)  # fail now on an unknown mode, not mid-run
        self.trace = trace
        self.exchanges = trace.exchanges()
        self.chunking = chunking
        self.seed = seed
        self.rate = rate
        self.faults = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
        self.ignore = tuple(ignore)
        self.on_divergence = on_divergence
        self.divergences: list[ReplayDivergence] = []
        self.served = 0  # requests answered, faults included
        self._cursor = 0
        self._attempts: dict[int, int] = {}
        # Each exchange's 1-based place in the trace seeds its re-chunking. The
        # exchanges live as long as the responder, so their ids are stable.
        self._places = {id(e): i for i, e in enumerate(self.exchanges, 1)}

    def unconsumed(self) -> list[Exchange]:
        """Recorded exchanges no request has used yet."""
        return self.exchanges[self._cursor :]

    def answer(self, body: Any) -> Answer:
        """The answer to the next request, whose JSON body is ``body``: choose, compare, shape."""
        exchange = self._choose(body)
        attempt = self._attempts.get(exchange.iteration, 0)
        self._attempts[exchange.iteration] = attempt + 1
        self._compare(exchange, body)
        answer = self.shape(exchange, exchange.iteration, attempt)
        if not answer.injected:  # an injected fault leaves the recording to the retry
            self._cursor += 1
        return answer

    def shape(
        self,
        exchange: Exchange,
        iteration: int,
        attempt: int,
        *,
        faults: Sequence[Fault] | None = None,
    ) -> Answer:
        """What ``exchange`` sends back as request ``attempt`` (0-based) of ``iteration``.

        The first fault matching (iteration, attempt) applies: one that
        replaces the answer is served instead (``Answer.injected``; its
        ``used`` count goes up), the others change the recorded bytes or
        pacing. A recorded attempt that got no response is a dropped
        connection; a recorded connection failure is its bytes, then a cut.
        Chunks are re-chunked as configured (``hostile`` seeded by ``seed``
        plus the exchange's 1-based place in the trace) and paced by ``rate``.

        Nothing is chosen or compared and no counter moves: the caller says
        which exchange and which attempt (the HTTP server keeps a counter per
        request body). ``faults`` replaces the responder's own list, so that
        a caller can keep separate ``used`` counts.
        """
        candidates = self.faults if faults is None else faults
        fault = next((f for f in candidates if f.matches(iteration, attempt)), None)
        if fault is not None and fault.replaces_answer:
            fault.used += 1
            answer = self._fault_answer(fault, exchange, iteration, attempt)
            answer.injected = True
            return answer
        if exchange.response is None:  # the recorded attempt never got an answer
            return Answer(0, {}, [], [], iteration, attempt, fail="drop")
        raw = [chunk_bytes(c) for c in exchange.chunks]
        # A recorded connection failure is served as one: same bytes, then a reset.
        broke = exchange.error is not None and exchange.error.get("type") == "APIConnectionError"
        if fault is not None and fault.action in ("malformed", "duplicate-event", "drop-event"):
            raw = [apply_to_events(b"".join(raw), fault)]
        place = self._places.get(id(exchange), 0)
        chunks = rechunk(raw, self.chunking, seed=self.seed + place)
        delays = self._delays(exchange, len(chunks))
        if fault is not None and fault.action == "stall":
            delays = [d + fault.value for d in delays]
        return Answer(
            int(exchange.response["status"]),
            _answer_headers(exchange.response.get("headers") or {}),
            chunks,
            delays,
            iteration,
            attempt,
            fail="cut" if broke else None,
        )

    def _choose(self, body: Any) -> Exchange:
        """The recorded exchange at the cursor; a divergence once the trace is used up."""
        self.served += 1
        if self._cursor >= len(self.exchanges):
            last = self.exchanges[-1].iteration if self.exchanges else 0
            raise ReplayDivergence(
                f"request #{self.served} has no recorded answer: the trace holds "
                f"{len(self.exchanges)} requests (the run went past iteration {last})",
                iteration=last + 1,
                path="<request>",
                actual=body,
            )
        return self.exchanges[self._cursor]

    def _compare(self, exchange: Exchange, body: Any) -> None:
        recorded = exchange.request.get("body")
        found = first_difference(recorded, body, self.ignore)
        if found is None:
            return
        divergence = ReplayDivergence(
            f"iteration {exchange.iteration}: the request differs from the recording at {found}",
            iteration=exchange.iteration,
            path=found.path,
            recorded=found.a,
            actual=found.b,
        )
        if self.on_divergence == "raise":
            raise divergence
        self.divergences.append(divergence)
        warnings.warn(f"rawloop replay: {divergence}", RuntimeWarning, stacklevel=2)

    def _fault_answer(
        self, fault: Fault, exchange: Exchange, iteration: int, attempt: int
    ) -> Answer:
        if fault.action == "drop":
            return Answer(0, {}, [], [], iteration, attempt, fail="drop")
        if fault.action == "status":
            headers = {"content-type": "application/json"}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            message = {
                "error": {
                    "message": f"injected fault: HTTP {fault.value:g}",
                    "type": "rawloop_fault",
                }
            }
            return Answer(
                int(fault.value), headers, [orjson.dumps(message)], [0.0], iteration, attempt
            )
        body = b"".join(chunk_bytes(c) for c in exchange.chunks)
        if fault.action == "cut-after-bytes":
            body = body[: int(fault.value)]
        else:  # cut-after-events
            body = b"".join(split_events(body)[: int(fault.value)])
        status = int(exchange.response["status"]) if exchange.response else 200
        headers = (
            _answer_headers(exchange.response.get("headers") or {}) if exchange.response else {}
        )
        chunks = rechunk([body], self.chunking, seed=self.seed) if body else []
        return Answer(status, headers, chunks, [0.0] * len(chunks), iteration, attempt, fail="cut")

    def _delays(self, exchange: Exchange, count: int) -> list[float]:
        if not self.rate:
            return [0.0] * count
        times = [float(c.get("t", 0.0)) for c in exchange.chunks]
        start = float(exchange.response.get("t", 0.0)) if exchange.response else 0.0
        if self.chunking != "recorded" or len(times) != count:
            # Re-chunked: keep the time to first byte, then spread the rest evenly.
            first = max(times[0] - start, 0.0) if times else 0.0
            rest = max(times[-1] - times[0], 0.0) / max(count - 1, 1) if times else 0.0
            return [first * self.rate] + [rest * self.rate] * (count - 1)
        gaps = [max(b - a, 0.0) for a, b in zip([start, *times], times)]
        return [g * self.rate for g in gaps]


def _answer_headers(recorded: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in recorded.items() if k.lower() not in _DROPPED_HEADERS}


class _AnswerStream(httpx.AsyncByteStream):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for delay, chunk in zip(self.answer.delays, self.answer.chunks):
            if delay > 0:
                await anyio.sleep(delay)
            yield chunk
        if self.answer.fail == "cut":
            raise httpx.ReadError("connection reset by peer (rawloop replay fault)")


class ReplayTransport(httpx.AsyncBaseTransport):
    """An httpx transport answering from a trace (see ``Responder`` for the options)."""

    def __init__(self, trace: Trace | str | Path, **options: Any) -> None:
        self.responder = Responder(_load(trace), **options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = await request.aread()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        answer = self.responder.answer(body)
        if answer.fail == "drop":
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response (rawloop replay)", request=request
            )
        return httpx.Response(
            answer.status, headers=answer.headers, stream=_AnswerStream(answer), request=request
        )


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
            return (
                f"identical: {iterations} iterations replayed, every request matched the recording"
            )
        if self.divergence is not None:
            return f"diverged: {self.divergence}"
        return f"error: {type(self.error).__name__}: {self.error}"


class Replayer:
    """Hooks and tool runner that put a trace's decisions back into a live loop.

    Use it as a hook (it re-applies recorded breakpoint edits, and stops where
    a hook stopped the recording) and as ``Loop.tool_runner`` (``run_tool``
    answers each call with its recorded result).
    """

    def __init__(self, trace: Trace) -> None:
        self.edits = trace.edits()
        self.results = trace.results()
        end = trace.end() or {}
        self.stop_reason = end.get("stop_reason")
        self.iterations = end.get("iterations")

    def on_breakpoint(self, state: LoopState) -> None:
        # Iteration 0's edits are already in the recorded first request, which
        # is where a replay starts from: applying them again would double them.
        ops = self.edits.get(state.iteration) if state.iteration else None
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
        **body,
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
) -> ReplayReport:
    """Run ``trace`` end to end through a loop and compare it with the recording.

    Without ``loop``, one is built from the trace; a given one is copied, so
    it stays as it was. Tool results come from the trace unless
    ``live_tools`` (then the real handlers run and differing outputs are
    listed in ``tool_differences``). ``hooks`` see the replayed run.

    The answers come from an in-process ``ReplayTransport`` (``rate``,
    ``chunking``, ``seed``, ``faults``, ``on_divergence``, ``ignore``: see
    ``Responder``), or from ``http_client`` when one is given: a client of a
    ``rawloop serve`` server, say. That client is used as it is and left
    open; when it has a ``base_url``, the loop sends there. Whatever answers
    it is then the judge of the requests: the report's ``divergences`` and
    ``unconsumed`` stay empty, and only the decisions, the stop reason and
    (with ``live_tools``) the tool outputs are compared.
    """
    trace = _load(trace)
    transport: ReplayTransport | None = None
    client = http_client
    if client is None:
        transport = ReplayTransport(
            trace,
            chunking=chunking,
            seed=seed,
            rate=rate,
            faults=faults,
            ignore=ignore,
            on_divergence=on_divergence,
        )
        client = httpx.AsyncClient(transport=transport)
    if loop is None:
        loop = loop_from_trace(trace, http_client=client, rate=rate)
    else:
        loop = copy.copy(loop)
        loop.http_client = client
    if http_client is not None and str(http_client.base_url):
        loop.base_url = str(http_client.base_url).rstrip("/")
    replayer = Replayer(trace)
    if not live_tools:
        loop.tool_runner = replayer.run_tool
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
    return report


def judge(report: ReplayReport, trace: Trace, live_tools: bool) -> None:
    """Look past the requests: unused recordings, changed decisions, changed tool outputs."""
    result = report.result
    assert result is not None
    if live_tools:
        recorded = trace.results()
        for r in result.results:
            before = recorded.get(r.call_id)
            if before is not None and before.get("output") != r.output:
                report.tool_differences.append(
                    {
                        "call_id": r.call_id,
                        "name": r.name,
                        "recorded": before.get("output"),
                        "actual": r.output,
                    }
                )
    if report.divergences:
        report.verdict, report.divergence = "diverged", report.divergences[0]
        return
    if report.unconsumed:
        first = report.unconsumed[0]
        report.verdict = "diverged"
        report.divergence = ReplayDivergence(
            f"the run ended with {len(report.unconsumed)} recorded request(s) never made "
            f"(first: iteration {first.iteration}, attempt {first.attempt})",
            iteration=first.iteration,
            path="<unconsumed>",
        )
        return
    decisions = trace.of_kind("decision")
    for record, turn in zip(decisions, result.turns):
        found = first_difference(_comparable(record.data["turn"]), _comparable(turn.to_dict()))
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


# Re-chunking may drop the final blank line on purpose; that warning says nothing
# about the decision. Every other warning (a sequence gap, text that disagrees
# with its done event) does.
_CHUNKING_WARNING = "stream ended without a blank line after the last event"


def _comparable(turn: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in turn.items() if k != "event_count"}
    out["warnings"] = [w for w in turn.get("warnings", ()) if w != _CHUNKING_WARNING]
    return out


def _load(trace: Trace | str | Path) -> Trace:
    return trace if isinstance(trace, Trace) else Trace.load(trace)
