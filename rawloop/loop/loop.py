"""The tool-calling loop: request, stream, decide, run tools, repeat, with hooks at every step.

One iteration is: the breakpoint (hooks may change the state), the pending tool
results are appended to the input, one model call (with retries and fallback
models), the decision hooks, the output items appended to the input, and the
tool calls run concurrently. The run ends when a turn calls no tools, a hook or
a tool stops it, or ``max_iterations`` model calls were made. Whatever way it
ends, the work done so far is returned (or, on an error, attached to the
exception as ``.result``).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

from ..core import patch
from ..core.addresses import is_loopback_url
from ..core.dialect import Dialect, get_dialect
from ..core.errors import (
    ConfigurationError,
    RawloopError,
)
from ..core.turn import Turn
from .attempts import call_model
from .calls import ToolRunner, run_calls
from .hooks import (
    DecisionInfo,
    EditInfo,
    EndInfo,
    HandoffInfo,
    HookBus,
    ResultInfo,
)
from .params import check_request_params
from .retry import RetryPolicy
from .state import LoopState, RunResult, Step, add_usage
from .tools import Tool, ToolRegistry, ToolResult
from .wire import open_client

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_TOOL_WARN_AFTER",
    "Handoff",
    "Loop",
    "LoopRun",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Seconds of silence allowed while waiting for the headers or between two chunks.
#: Reasoning models can think for a long while between two events: not too short.
DEFAULT_READ_TIMEOUT = 120.0
#: Seconds allowed to open the connection.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds after which a tool call still running is reported.
DEFAULT_TOOL_WARN_AFTER = 60.0


@dataclass
class Handoff:
    """Return this from a tool to hand the conversation to another loop.

    The next request uses ``target``'s model, instructions, tools and request
    parameters; the transcript so far is kept. Hooks see ``on_handoff`` and an
    ``on_edit`` patch, and traces record both, so a replay switches too.
    """

    target: Loop
    reason: str = ""

    def __str__(self) -> str:
        # What the model reads as the tool's output.
        return f"Handing the conversation over to {self.target.model}" + (
            f": {self.reason}" if self.reason else ""
        )


class Loop:
    """An async tool-calling loop for the Responses API (or Chat Completions).

    Args:
        model: the model to call.
        instructions: system instructions (Responses ``instructions``, Chat system message).
        tools: ``@tool`` objects, plain functions, or tool definitions as dicts
            (hosted tools such as ``{"type": "web_search"}``, or functions
            declared to the model but run by ``tool_runner``), sent as they are.
        dialect: ``"responses"`` or ``"chat"``.
        base_url: API root; defaults to ``OPENAI_BASE_URL``, then OpenAI's.
        api_key: defaults to ``OPENAI_API_KEY``. Required for a non-loopback
            endpoint unless ``http_client`` is given (replay, tests).
        http_client: an ``httpx.AsyncClient`` to send with: the seam for replay.
        hooks: hook objects (see ``rawloop.loop.hooks``).
        max_iterations: the most model calls one run makes.
        tool_timeout: seconds each tool call may take (no limit by default).
        tool_warn_after: seconds after which a tool call still running is
            reported (``SlowToolWarning``, and ``on_error`` with ``where="tool"``);
            ``None``: never.
        read_timeout: the longest silence, in seconds, while waiting for the
            answer's headers or between two chunks; past it the attempt fails
            with ``APIConnectionError`` naming the stall, and is retried like a
            dropped connection. Applies through ``http_client=`` too.
        connect_timeout: seconds allowed to open the connection.
        retries: a ``RetryPolicy`` or the number of retries.
        fallback_models: models to try, in order, when the model keeps failing.
        strict_hooks: make a failing observer hook abort the run.
        headers: extra request headers.
        tool_runner: ``async (FunctionCall) -> ToolResult`` to run instead of the
            registered handlers (replay uses it to answer from a trace).
        extra_body: more request body fields, sent as they are and not checked:
            for a parameter this version of rawloop does not know.
        **request_params: request parameters sent in every body (``temperature``,
            ``reasoning``...); a name the dialect does not have is sent too, with
            an ``UnknownParameterWarning`` naming the closest known one.
    """

    def __init__(
        self,
        model: str,
        instructions: str | None = None,
        tools: Iterable[Tool[..., Any] | Callable[..., Any] | dict[str, Any]] = (),
        *,
        dialect: str = "responses",
        base_url: str | None = None,
        api_key: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        hooks: Iterable[Any] = (),
        max_iterations: int = 10,
        tool_timeout: float | None = None,
        tool_warn_after: float | None = DEFAULT_TOOL_WARN_AFTER,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retries: int | RetryPolicy = 2,
        fallback_models: Sequence[str] = (),
        strict_hooks: bool = False,
        headers: dict[str, str] | None = None,
        tool_runner: ToolRunner | None = None,
        extra_body: Mapping[str, Any] | None = None,
        **request_params: Any,
    ) -> None:
        if max_iterations < 1:
            raise ConfigurationError(f"max_iterations must be at least 1, not {max_iterations}")
        for name, value in (
            ("read_timeout", read_timeout),
            ("connect_timeout", connect_timeout),
            ("tool_warn_after", 1.0 if tool_warn_after is None else tool_warn_after),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, not {value!r}"
                )
        self.model = model
        self.instructions = instructions
        self.dialect: Dialect = get_dialect(dialect)
        tools = list(tools)
        self.tools = ToolRegistry()
        # What the model is told, in the order given: registered names and raw definitions.
        self.tool_definitions: list[str | dict[str, Any]] = [
            dict(t) if isinstance(t, dict) else self.tools.add(t).name for t in tools
        ]
        self.tool_runner = tool_runner
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.http_client = http_client
        self.hooks = HookBus.of(hooks, strict=strict_hooks)
        self.max_iterations = max_iterations
        self.tool_timeout = tool_timeout
        self.tool_warn_after = tool_warn_after
        # write and pool waits are silences too; connect has its own limit.
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.retry_policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries)
        self.fallback_models = tuple(fallback_models)
        self.headers = dict(headers or {})
        self.request_params = check_request_params(
            self.dialect.name, request_params, extra_body, _OPTIONS
        )

    def __repr__(self) -> str:
        # Never show the key.
        return (
            f"Loop(model={self.model!r}, dialect={self.dialect.name!r}, base_url={self.base_url!r})"
        )

    def add_hook(self, hook: Any) -> None:
        """Add a hook after construction."""
        self.hooks.add(hook)

    def remove_hook(self, hook: Any) -> None:
        """Remove a hook added earlier."""
        self.hooks.remove(hook)

    def iter(self, input: str | list[dict[str, Any]], *, hooks: Iterable[Any] = ()) -> LoopRun:
        """Step through a run: ``async with loop.iter(x) as run: async for step in run: ...``.

        ``hooks`` are added for this run only. After the last step,
        ``run.result`` holds the ``RunResult``.
        """
        return LoopRun(self, input, hooks)

    async def run(
        self,
        input: str | list[dict[str, Any]],
        *,
        trace: str | Path | None = None,
        hooks: Iterable[Any] = (),
    ) -> RunResult:
        """Run to the end and return everything it did.

        ``trace`` records the run to that file (a ``TraceRecorder`` with the
        default redaction); ``hooks`` are added for this run only.
        """
        extra = list(hooks)
        if trace is not None:
            from ..trace.recorder import TraceRecorder

            extra.append(TraceRecorder(trace))
        async with self.iter(input, hooks=extra) as run:
            async for _ in run:
                pass
        assert run.result is not None
        return run.result

    # -- used by LoopRun --------------------------------------------------

    def _check_ready(self) -> None:
        """Fail before any request when a real endpoint would refuse us anyway."""
        try:
            parts = urlsplit(self.base_url)
        except ValueError:
            parts = None  # unparsable: the wire shell names it when it builds the request
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            # A trace's base_url is untrusted: "//host/v1" or "u" would reach httpx as a
            # relative URL and fail inside it.
            raise ConfigurationError(
                f"base_url must be an absolute http(s) URL, not {self.base_url!r}"
            )
        if not self._api_key and self.http_client is None and not is_loopback_url(self.base_url):
            raise ConfigurationError(
                f"no API key for {self.base_url}: set OPENAI_API_KEY or pass api_key= "
                "(to replay a trace, use rawloop.replay or pass http_client=)"
            )

    def _request_headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            # Uncompressed, so the chunks the hooks and traces see are the server's.
            "accept-encoding": "identity",
        }
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        headers.update({k.lower(): v for k, v in self.headers.items()})
        return headers

    def _initial_state(self, input: str | list[dict[str, Any]]) -> LoopState:
        chat = self.dialect.name == "chat"
        schemas = [
            dict(t)
            if isinstance(t, dict)
            else (self.tools[t].chat_schema() if chat else self.tools[t].responses_schema())
            for t in self.tool_definitions
        ]
        return LoopState(
            iteration=0,
            model=self.model,
            instructions=self.instructions,
            input=self.dialect.normalize_input(input),
            tools=schemas,
            request_params=dict(self.request_params),
            dialect=self.dialect.name,
            base_url=self.base_url,
        )


class LoopRun:
    """One run, stepped: an async iterator of ``Step``; ``result`` once it ends."""

    def __init__(
        self, loop: Loop, input: str | list[dict[str, Any]], hooks: Iterable[Any] = ()
    ) -> None:
        loop._check_ready()
        self.loop = loop
        #: The loop whose model, instructions and tools are in force (changes on a handoff).
        self.agent = loop
        self._handoff: Handoff | None = None
        extra = list(hooks)
        # A bus of its own, so per-run hooks never leak into concurrent runs.
        self.hooks = (
            HookBus.of([*loop.hooks.hooks, *extra], strict=loop.hooks.strict)
            if extra
            else loop.hooks
        )
        self.state = loop._initial_state(input)
        self.turns: list[Turn] = []
        self.results: list[ToolResult] = []
        self._unsent = 0  # how many of ``results`` (the last ones) are not sent yet
        self.result: RunResult | None = None
        self._steps = self._run()

    def __aiter__(self) -> LoopRun:
        return self

    async def __anext__(self) -> Step:
        return await self._steps.__anext__()

    async def __aenter__(self) -> LoopRun:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the run where it is and close its HTTP connection."""
        await self._steps.aclose()
        if self.result is None:
            self.result = self._result("stopped")

    # -- the loop itself ----------------------------------------------------

    async def _run(self) -> AsyncGenerator[Step, None]:
        loop, state = self.loop, self.state
        started = time.monotonic()
        error: BaseException | None = None
        try:
            async with open_client(loop.http_client, loop.timeout) as client:
                while True:
                    if state.iteration >= loop.max_iterations:
                        state.stop_reason = "max_iterations"
                        break
                    await self._breakpoint()
                    if state.stop_reason:
                        break
                    self._flush_results()
                    turn = await call_model(client, loop, state, self.hooks)
                    self.turns.append(turn)
                    add_usage(state.usage, turn.usage)
                    await self.hooks.emit(
                        "on_decision",
                        DecisionInfo(state.iteration, turn),
                        iteration=state.iteration,
                    )
                    state.input.extend(turn.output)
                    state.last_turn = turn
                    results = await self._run_tools(turn) if turn.calls else []
                    state.results = results
                    iteration = state.iteration
                    state.iteration += 1
                    yield Step(iteration, state, turn, results)
                    if state.stop_reason:
                        break
                    if not turn.calls:
                        state.stop_reason = (
                            "incomplete" if turn.status == "incomplete" else "completed"
                        )
                        break
        except Exception as exc:
            error = exc
            self.result = self._result("error")
            if isinstance(exc, RawloopError):
                exc.result = self.result
            raise
        finally:
            if self.result is None:
                self.result = self._result(state.stop_reason or "stopped")
            # Always, even when cancelled or closed early: a recorder closes its trace here.
            await _emit_end(self.hooks, self.result, time.monotonic() - started, error)

    async def _breakpoint(self) -> None:
        bus, state = self.hooks, self.state
        handoff, self._handoff = self._handoff, None
        if not bus.has("on_breakpoint") and handoff is None:
            return
        watch = bus.has("on_edit")
        before = _plain(state.to_dict()) if watch else None
        if handoff is not None:
            # A state change like any other: on_edit and traces see it as a patch,
            # so a replay switches too.
            await self._switch(handoff)
        await bus.breakpoint(state)
        if watch:
            ops = patch.diff(before, _plain(state.to_dict()))
            if ops:
                await bus.emit("on_edit", EditInfo(state.iteration, ops), iteration=state.iteration)

    async def _switch(self, handoff: Handoff) -> None:
        state, target = self.state, handoff.target
        info = HandoffInfo(state.iteration, self.agent.model, target.model, handoff.reason)
        self.agent = target
        fresh = target._initial_state([])
        state.model, state.instructions, state.tools = fresh.model, fresh.instructions, fresh.tools
        state.request_params = fresh.request_params
        await self.hooks.emit("on_handoff", info, iteration=state.iteration)

    def _flush_results(self) -> None:
        state = self.state
        # The run's results are what is sent: a breakpoint may have changed them.
        self.results[len(self.results) - self._unsent :] = state.results
        self._unsent = 0
        if state.results:
            pairs = [(r.call_id, r.output) for r in state.results]
            state.input.extend(self.loop.dialect.tool_outputs(pairs))
            state.results = []

    async def _run_tools(self, turn: Turn) -> list[ToolResult]:
        loop, state = self.agent, self.state
        done, stops = await run_calls(
            turn.calls,
            loop.tools,
            self.loop.tool_runner,
            timeout=loop.tool_timeout,
            warn_after=loop.tool_warn_after,
            bus=self.hooks,
            iteration=state.iteration,
        )
        self.results.extend(done)
        self._unsent = len(done)
        for result in done:
            await self.hooks.emit(
                "on_result", ResultInfo(state.iteration, result), iteration=state.iteration
            )
        if stops:
            state.stop(stops[0].reason or "stopped")
        handoffs = [r.value for r in done if isinstance(r.value, Handoff)]
        if handoffs:
            if handoffs[-1].target.dialect.name != state.dialect:
                raise ConfigurationError(
                    f"a handoff cannot change the dialect ({state.dialect} -> "
                    f"{handoffs[-1].target.dialect.name}): the transcript would not fit"
                )
            self._handoff = handoffs[-1]  # the last one asked wins; applied before the next request
        return done

    def _result(self, stop_reason: str) -> RunResult:
        state = self.state
        items = list(state.input)
        if state.results:  # computed but never sent: keep them in the transcript
            items.extend(
                self.loop.dialect.tool_outputs([(r.call_id, r.output) for r in state.results])
            )
        return RunResult(
            text=self.turns[-1].text if self.turns else "",
            turns=list(self.turns),
            items=items,
            usage=dict(state.usage),
            iterations=len(self.turns),
            stop_reason=stop_reason,
            results=list(self.results),
            state=state,
        )


async def _emit_end(
    bus: HookBus, result: RunResult, duration: float, error: BaseException | None
) -> None:
    if not bus.has("on_end"):
        return
    info = EndInfo(result.stop_reason, result.iterations, result.usage, duration, error)
    # The run may be ending because it was cancelled: still tell the hooks.
    with anyio.CancelScope(shield=True):
        await bus.emit("on_end", info)


# Loop's own keywords: what a misspelt one is most likely meant to be.
_OPTIONS = tuple(inspect.signature(Loop.__init__).parameters)[1:-1]


def _plain(data: Any) -> Any:
    """A deep copy through JSON: fast, and exactly what a trace would store."""
    return orjson.loads(orjson.dumps(data))
