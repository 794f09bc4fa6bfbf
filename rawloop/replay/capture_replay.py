"""Replay a capture as the client sent it: the recorded requests, not a loop's.

A trace recorded by ``rawloop record`` holds what some other client (the
openai SDKs, openai-agents, pydantic-ai, ...) sent, rendered its own way.
Re-driving such a conversation through rawloop's ``Loop`` re-renders every
follow-up request in rawloop's shape, which is not what the client did.
``replay_as_sent`` sends each recorded request body, as recorded, to the
responder (in process, or a ``rawloop serve`` server through ``http_client``),
reads each answer as the client would have (a stream or one JSON object), and
judges the run by its meaning:

* the requests are compared item by item through the conversation's identity
  keys (``rawloop.core.conversation.item_key``): a client that renders an item
  its own way still matches (``meaning_of``);
* each answer must end as the recorded attempt did (the same status, a
  dropped or cut connection where the recording had one), and the turn it
  parses to must equal the recorded decision of that iteration.

A failure the recording did not have (an injected fault) is retried with the
same body, as a client would, up to ``max_retries`` times.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import orjson

from ..core.conversation import conversation, turn_from_json
from ..core.errors import RawloopError, ReplayDivergence, ReplayError
from ..core.jsondiff import Difference, first_difference
from ..core.parse import StreamParser
from ..core.turn import FunctionCall, Turn
from ..loop.state import LoopState, RunResult, add_usage
from ..loop.tools import Tool, ToolResult, run_tool
from ..trace.format import Exchange, Trace
from .faults import Fault
from .responder import DEFAULT_VOLATILE, comparable_turn, meaning_of
from .transport import replay_client

__all__ = ["CAPTURED_BY", "is_capture", "live_runner", "meaning_of", "replay_as_sent"]

#: The ``recorded_by`` metadata of traces written by the recording proxy.
CAPTURED_BY = "rawloop record"

_ENDPOINTS = {"responses": "responses", "chat": "chat/completions"}
_NOWHERE = "http://rawloop.replay/v1/"  # the in-process transport answers any URL


def is_capture(trace: Trace) -> bool:
    """True when ``trace`` was recorded by ``rawloop record`` (its header says so)."""
    metadata = trace.header.get("metadata")
    return isinstance(metadata, dict) and metadata.get("recorded_by") == CAPTURED_BY


class _Outcome:
    """How one attempt ended, as a client sees it."""

    def __init__(self, status: int | None, turn: Turn | None, failure: str | None) -> None:
        self.status = status  # None: no response at all
        self.turn = turn
        self.failure = failure  # why no turn: "drop", "status 429", "cut: ..."

    @property
    def ok(self) -> bool:
        return self.turn is not None


async def replay_as_sent(
    trace: Trace,
    *,
    http_client: httpx.AsyncClient | None = None,
    chunking: str = "recorded",
    seed: int = 0,
    rate: float = 0.0,
    faults: Iterable[Fault | str] = (),
    on_divergence: str = "raise",
    ignore: Sequence[str] = DEFAULT_VOLATILE,
    max_retries: int = 5,
    tools: Iterable[Tool[..., Any]] = (),
) -> Any:
    """Send ``trace``'s recorded requests, as recorded, and judge the answers.

    Returns a ``ReplayReport`` (``rawloop.replay.replayer``) whose ``result``
    gathers the replayed turns, the recorded tool results and the stop
    reason. The options are ``replay()``'s; ``http_client`` (a client of a
    ``rawloop serve`` server, with its ``base_url``) is used as it is and
    left open, and is then the judge of the requests.

    ``tools``: run these handlers live on each replayed turn's calls, and
    send their outputs in place of the recorded ones (in the client's own
    rendering of the rest); the run's ``results`` are then the live ones.
    """
    from .replayer import ReplayReport  # the report type lives with replay()

    exchanges = trace.exchanges()
    if not exchanges:
        raise ReplayError(f"{trace.path}: the trace holds no request to replay")
    client, transport = replay_client(
        trace,
        http_client,
        chunking=chunking,
        seed=seed,
        rate=rate,
        faults=faults,
        ignore=ignore,
        on_divergence=on_divergence,
        compare="meaning",
    )
    report = ReplayReport("identical")
    turns: list[Turn] = []
    tools = list(tools)
    live = _LiveTools(trace.dialect, tools) if tools else None
    try:
        report.divergence = await _send_all(trace, exchanges, client, turns, max_retries, live)
    except ReplayDivergence as exc:  # the in-process responder refused a request
        report.divergence = exc
    except RawloopError as exc:
        report.verdict, report.error = "error", exc
    finally:
        if transport is not None:
            await client.aclose()
    if report.divergence is not None:
        report.verdict = "diverged"
    if transport is not None:
        report.divergences = list(transport.responder.divergences)
        report.unconsumed = transport.responder.unconsumed()
        if report.verdict == "identical" and report.divergences:
            report.verdict, report.divergence = "diverged", report.divergences[0]
    report.result = _result(trace, exchanges, turns, live)
    return report


async def _send_all(
    trace: Trace,
    exchanges: list[Exchange],
    client: httpx.AsyncClient,
    turns: list[Turn],
    max_retries: int,
    live: _LiveTools | None = None,
) -> ReplayDivergence | None:
    """Each recorded attempt in order; the first way the answers leave the recording."""
    decisions = {r.iteration: r.data.get("turn") for r in trace.of_kind("decision")}
    last_attempt = {e.iteration: e.attempt for e in exchanges}
    for exchange in exchanges:
        recorded = _recorded_outcome(exchange)
        body = exchange.request.get("body")
        if live is not None:
            body = live.rewrite(body)
        outcome = await _attempt(trace.dialect, client, body)
        retries = 0
        while recorded == "ok" and not outcome.ok and retries < max_retries:
            retries += 1  # a fault the recording did not have: retry, as the client would
            outcome = await _attempt(trace.dialect, client, body)
        where = f"iteration {exchange.iteration}, attempt {exchange.attempt}"
        if recorded == "ok" and not outcome.ok:
            return ReplayDivergence(
                f"{where}: the recording got an answer, the replay {outcome.failure}",
                iteration=exchange.iteration,
                path="<response>",
                recorded="an answer",
                actual=outcome.failure,
            )
        if recorded != "ok":
            if outcome.ok or outcome.status != _status(exchange):
                return ReplayDivergence(
                    f"{where}: the recording failed ({recorded}), the replay "
                    f"{'got an answer' if outcome.ok else outcome.failure}",
                    iteration=exchange.iteration,
                    path="<response>",
                    recorded=recorded,
                    actual="an answer" if outcome.ok else outcome.failure,
                )
            continue
        assert outcome.turn is not None
        turns.append(outcome.turn)
        decisive = exchange.attempt == last_attempt[exchange.iteration]
        if live is not None and decisive:
            await live.run(outcome.turn)
        decision = decisions.get(exchange.iteration)
        if isinstance(decision, dict) and decisive:
            found = _decision_difference(decision, outcome.turn)
            if found is not None:
                return ReplayDivergence(
                    f"iteration {exchange.iteration}: the decision differs at turn.{found}",
                    iteration=exchange.iteration,
                    path=f"turn.{found.path}",
                    recorded=found.a,
                    actual=found.b,
                )
    return None


def live_runner(tools: Iterable[Tool[..., Any]], *, timeout: float | None = None) -> Any:
    """A ``Loop.tool_runner`` running ``tools``' handlers, whatever definitions the model saw."""
    registry = {t.name: t for t in tools}
    known = list(registry)

    async def run(call: FunctionCall) -> ToolResult:
        tool = registry.get(call.name)
        return await run_tool(
            tool, call.name, call.call_id, call.arguments, timeout=timeout, known=known
        )

    return run


class _LiveTools:
    """The real tools, run on the replayed turns; their outputs replace the recorded ones."""

    def __init__(self, dialect: str, tools: list[Tool[..., Any]]) -> None:
        self.dialect = dialect
        self.runner = live_runner(tools)
        self.outputs: dict[str, str] = {}
        self.results: list[ToolResult] = []

    async def run(self, turn: Turn) -> None:
        for call in turn.calls:
            result = await self.runner(call)
            self.outputs[call.call_id] = result.output
            self.results.append(result)

    def rewrite(self, body: Any) -> Any:
        """``body`` with each tool output the live tools gave in place of the recorded one."""
        key = "messages" if self.dialect == "chat" else "input"
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list) or not self.outputs:
            return body
        out: list[Any] = []
        for item in items:
            if isinstance(item, dict):
                if self.dialect == "chat" and item.get("role") == "tool":
                    live = self.outputs.get(str(item.get("tool_call_id")))
                    item = item if live is None else {**item, "content": live}
                elif self.dialect != "chat" and item.get("type") == "function_call_output":
                    live = self.outputs.get(str(item.get("call_id")))
                    item = item if live is None else {**item, "output": live}
            out.append(item)
        return {**body, key: out}


def _recorded_outcome(exchange: Exchange) -> str:
    if exchange.response is None:
        return "no response"
    status = _status(exchange)
    if status is None or not 200 <= status < 300:
        return f"status {status}"
    if exchange.error is not None:
        return f"broken answer ({exchange.error.get('type')})"
    return "ok"


def _status(exchange: Exchange) -> int | None:
    if exchange.response is None:
        return None
    status = exchange.response.get("status")
    return status if isinstance(status, int) else None


async def _attempt(dialect: str, client: httpx.AsyncClient, body: Any) -> _Outcome:
    """Send ``body``; read the answer as a stream or as one JSON object."""
    endpoint = _ENDPOINTS.get(dialect, "responses")
    url = endpoint if str(client.base_url) else _NOWHERE + endpoint
    headers = {"content-type": "application/json"}
    if isinstance(body, dict) and body.get("stream"):
        headers["accept"] = "text/event-stream"
    status: int | None = None
    try:
        async with client.stream(
            "POST", url, content=orjson.dumps(body), headers=headers
        ) as response:
            status = response.status_code
            if not 200 <= status < 300:
                await response.aread()
                return _Outcome(status, None, f"got status {status}")
            kind = response.headers.get("content-type", "")
            if "event-stream" in kind:
                parser = StreamParser(dialect, deltas=False)
                async for chunk in response.aiter_raw():
                    parser.feed(chunk)
                return _Outcome(status, parser.close(), None)
            payload = orjson.loads(await response.aread())
            return _Outcome(status, turn_from_json(dialect, payload), None)
    except httpx.HTTPError as exc:
        return _Outcome(status, None, f"lost the connection ({type(exc).__name__})")
    except orjson.JSONDecodeError:
        return _Outcome(status, None, "got an answer that is not JSON")
    except ReplayDivergence:
        raise  # the in-process responder refused the request: not a broken answer
    except RawloopError as exc:  # the stream broke or did not parse
        return _Outcome(status, None, f"got a broken answer ({type(exc).__name__}: {exc})")


def _decision_difference(recorded: dict[str, Any], turn: Turn) -> Difference | None:
    return first_difference(comparable_turn(recorded), comparable_turn(turn.to_dict()))


def _result(
    trace: Trace, exchanges: list[Exchange], turns: list[Turn], live: _LiveTools | None = None
) -> RunResult:
    """The run as the capture shows it: the replayed turns, the results the client sent."""
    last = exchanges[-1].request.get("body") if exchanges else None
    body = last if isinstance(last, dict) else {}
    usage: dict[str, int] = {}
    for turn in turns:
        add_usage(usage, turn.usage)
    results = [
        ToolResult(
            str(r.get("call_id")),
            str(r.get("name") or ""),
            str(r.get("arguments") or ""),
            str(r.get("output", "")),
            r.get("error"),
            float(r.get("duration") or 0.0),
        )
        for r in trace.results().values()
    ]
    if live is not None:
        results = list(live.results)
    end = trace.end() or {}
    items = [i for i in conversation(trace.dialect, body) if isinstance(i, dict)]
    state = LoopState(
        iteration=len(turns),
        model=str(body.get("model") or trace.header.get("model") or ""),
        instructions=body.get("instructions") if trace.dialect != "chat" else None,
        input=items,
        tools=list(body.get("tools") or []),
        request_params={},
        dialect=trace.dialect,
        base_url=str(trace.header.get("base_url") or ""),
        last_turn=turns[-1] if turns else None,
        usage=usage,
        stop_reason=str(end.get("stop_reason") or "completed"),
    )
    return RunResult(
        text=turns[-1].text if turns else "",
        turns=turns,
        items=items,
        usage=usage,
        iterations=len(turns),
        stop_reason=state.stop_reason or "completed",
        results=results,
        state=state,
    )
