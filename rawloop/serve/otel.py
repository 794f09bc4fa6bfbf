"""OpenTelemetry spans for rawloop runs, named after the GenAI semantic conventions.

``OTelHook`` is a hook (see ``rawloop.loop.hooks``); add it to a loop or a run::

    from rawloop import OTelHook

    loop = Loop("gpt-5.5", tools=[multiply], hooks=[OTelHook()])

It needs the ``otel`` extra (``pip install 'rawloop[otel]'``); importing this
module works without it, making an ``OTelHook`` then raises ``ImportError``.

Spans (names and attributes from the OpenTelemetry GenAI conventions, the
latest experimental version, which is what ``OTEL_SEMCONV_STABILITY_OPT_IN=
gen_ai_latest_experimental`` asks instrumentations for):

``invoke_agent {agent_name}`` (INTERNAL)
    One per run, a child of whatever span is current when the run starts. At
    the end it holds the run's token totals, ``rawloop.stop_reason`` and
    ``rawloop.iterations``, ``gen_ai.fallback.used`` (true, only when a
    fallback model answered a call), the cost ``rawloop.usage.cost_usd`` when ``prices``
    are given, and ``error.type`` if the run failed.
``chat {model}`` (CLIENT)
    One per iteration, a child of the run span. It covers every attempt of
    the model call (retries and fallback models): it begins at the
    iteration's first ``on_request`` and ends at ``on_decision``, or when the
    run ends if the call never succeeded. Each failed attempt is an
    ``exception`` event on it; ``error.type`` is set only when the call
    finally failed. Request parameters, response id, model, finish reasons,
    token usage, ``server.address``/``server.port`` and the time to the
    first chunk are attributes.
``execute_tool {name}`` (INTERNAL)
    One per function call, a child of the run span. It starts when the model
    asked for the call (the tools start right after ``on_decision``) and ends
    ``ToolResult.duration`` later. ``error.type`` is the handler's exception
    type (a ``StopLoop`` is a clean stop, not an error).

Message contents (``gen_ai.input.messages``, ``gen_ai.output.messages``,
``gen_ai.system_instructions``, ``gen_ai.tool.definitions``, tool call
arguments and results, and tool error messages) are recorded only with
``capture_content=True``, as JSON strings.

Hooks are callbacks, not context managers, so the spans are started and
ended explicitly and never made current: spans opened by the HTTP client or
by tool handlers are not nested under them. Every span is ended, however the
run ends: ``on_end`` fires after errors and cancellation too, and ends
whatever is still open (``error.type`` is the run's error, or ``cancelled``).

One ``OTelHook`` can follow many runs: concurrent runs in different tasks
(``asyncio.gather``, a task group) are kept apart through a context
variable, and a run started inside another run's tool handler (an agent used
as a tool) nests under that tool call's span, the outer run going on after
it. Runs stepped in turn inside a single task need a hook each
(``loop.iter(x, hooks=[OTelHook()])``). Telemetry never breaks a
run: a failure inside the hook is reported as a ``RuntimeWarning``.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from .._version import __version__
from . import otel_attributes as attrs
from .otel_attributes import (
    current_call_id,
    descriptions,
    input_messages,
    json_string,
    message_of,
    output_messages,
    price_of,
    read_prices,
    set_int,
    set_response,
)
from .otel_request import request_attributes

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from ..core.turn import Turn
    from ..loop.hooks import (
        ChunkInfo,
        DecisionInfo,
        EndInfo,
        ErrorInfo,
        HandoffInfo,
        RequestInfo,
        ResultInfo,
    )
    from ..loop.state import LoopState

__all__ = ["COST_ATTRIBUTE", "OTelHook"]

#: The attribute holding a call's (and a run's) cost in US dollars, when prices are given.
COST_ATTRIBUTE = "rawloop.usage.cost_usd"

_INSTALL_HINT = (
    "rawloop.otel needs OpenTelemetry; install the extra: pip install 'rawloop[otel]' "
    "(or opentelemetry-api and opentelemetry-sdk)"
)

_PROVIDER = "openai"
_Info = TypeVar("_Info")


def _load_otel() -> ModuleType:
    """The ``opentelemetry.trace`` module, or an ``ImportError`` that says what to install."""
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return trace


def _safe(
    method: Callable[[OTelHook, _Info], None],
) -> Callable[[OTelHook, _Info], None]:
    """Run a callback so that a telemetry failure is a warning, never a broken run."""

    @functools.wraps(method)
    def wrapper(self: OTelHook, info: _Info) -> None:
        try:
            method(self, info)
        except Exception as exc:
            warnings.warn(
                f"rawloop.otel: {method.__name__} failed: {exc!r}", RuntimeWarning, stacklevel=2
            )

    return wrapper


@dataclass(eq=False)
class _Run:
    """The open spans of one run."""

    span: Span
    context: Context
    #: The run this one was started inside (a tool that runs a loop), if any.
    outer: _Run | None = None
    chat: Span | None = None
    chat_iteration: int = -1
    chat_model: str = ""
    #: call_id -> open tool spans with their start times (ns), in call order.
    tools: dict[str, list[tuple[Span, int]]] = field(default_factory=dict)
    #: tool name -> description, from the tools sent in the last request.
    descriptions: dict[str, str] = field(default_factory=dict)
    #: The model the run asks first (a handoff changes it); any other answering is a fallback.
    primary: str = ""
    fallback_used: bool = False
    cost: float = 0.0
    priced: bool = False


class OTelHook:
    """A hook that turns each run into OpenTelemetry spans (see the module docstring).

    Args:
        tracer_provider: where the spans go; the global provider by default.
        capture_content: also record message contents, tool definitions and
            tool call arguments, results and error messages (they may hold
            personal data: off by default).
        agent_name: ``gen_ai.agent.name``, and the run span's name
            ``invoke_agent {agent_name}``.
        prices: ``{model: {"input": $, "output": $}}`` in dollars per million
            tokens (a dated model name takes the price of the longest name it
            starts with): each ``chat`` span and the run span then get
            ``rawloop.usage.cost_usd``.

    Raises:
        ImportError: OpenTelemetry is not installed (the ``otel`` extra).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        capture_content: bool = False,
        agent_name: str = "rawloop",
        prices: Mapping[str, Any] | None = None,
    ) -> None:
        self._api = _load_otel()
        self.prices = read_prices(prices or {})
        self.tracer: Tracer = self._api.get_tracer(
            "rawloop", __version__, tracer_provider=tracer_provider
        )
        self.capture_content = capture_content
        self.agent_name = agent_name
        # Per hook object: a context variable set inside a task is seen by
        # that task only, which keeps concurrent runs apart.
        self._current: ContextVar[_Run | None] = ContextVar(
            f"rawloop_otel_run_{id(self):x}", default=None
        )
        self._active: list[_Run] = []

    def __repr__(self) -> str:
        return f"OTelHook(agent_name={self.agent_name!r}, capture_content={self.capture_content})"

    # -- the run ------------------------------------------------------------

    def _begin(self, model: str | None) -> _Run:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": _PROVIDER,
            "gen_ai.agent.name": self.agent_name,
        }
        if model:
            attributes["gen_ai.request.model"] = model
        outer = self._current.get()
        if outer not in self._active:
            outer = None
        span = self.tracer.start_span(
            f"invoke_agent {self.agent_name}",
            context=self._parent_of_nested(outer) if outer is not None else None,
            kind=self._api.SpanKind.INTERNAL,
            attributes=attributes,
        )
        run = _Run(span, self._api.set_span_in_context(span), outer, primary=model or "")
        self._current.set(run)
        self._active.append(run)
        return run

    def _parent_of_nested(self, outer: _Run) -> Context:
        """Where a run started inside another run's tool goes: under that tool's span."""
        call_id = current_call_id()
        spans = outer.tools.get(call_id, []) if call_id is not None else []
        if not spans:
            open_spans = [pair for pairs in outer.tools.values() for pair in pairs]
            spans = open_spans if len(open_spans) == 1 else []
        if spans:
            return self._api.set_span_in_context(spans[0][0])  # type: ignore[no-any-return]
        return outer.context

    def _run(self, model: str | None = None) -> _Run:
        """The run this callback belongs to (begun now if no breakpoint began it)."""
        run = self._current.get()
        return run if run is not None else self._begin(model)

    @_safe
    def on_breakpoint(self, state: LoopState) -> None:
        """The first breakpoint of a run begins its span."""
        if state.iteration == 0 or self._current.get() is None:
            self._begin(state.model)

    @_safe
    def on_handoff(self, info: HandoffInfo) -> None:
        """A handoff is an event on the run span (the new model is no fallback)."""
        run = self._run()
        run.primary = info.to_model
        run.span.add_event(
            "rawloop.handoff",
            {
                "rawloop.handoff.from_model": info.from_model,
                "rawloop.handoff.to_model": info.to_model,
                "rawloop.handoff.reason": info.reason,
            },
        )

    @_safe
    def on_end(self, info: EndInfo) -> None:
        """End every span of the run that is still open, then the run span."""
        run = self._current.get()
        if run is None or run not in self._active:
            # on_end can run in another task (an abandoned generator finalised
            # later): take the only run in progress, if that is unambiguous.
            if len(self._active) != 1:
                return
            run = self._active[0]
        self._active.remove(run)
        if self._current.get() is run:
            # Back to the run this one was nested in, if it is still going.
            self._current.set(run.outer if run.outer in self._active else None)
        now = time.time_ns()
        error = info.error
        error_type = attrs.error_type(error) if error is not None else "cancelled"
        if run.chat is not None:
            self._fail(run.chat, error_type, error, now)
            run.chat = None
        for spans in run.tools.values():
            for span, _ in spans:
                self._fail(span, error_type, error if self.capture_content else None, now)
        run.tools.clear()
        span = run.span
        usage = info.usage or {}
        set_int(span, "gen_ai.usage.input_tokens", usage.get("input_tokens"))
        set_int(span, "gen_ai.usage.output_tokens", usage.get("output_tokens"))
        span.set_attribute("rawloop.stop_reason", info.stop_reason)
        span.set_attribute("rawloop.iterations", info.iterations)
        if run.fallback_used:
            span.set_attribute("gen_ai.fallback.used", True)
        if run.priced:
            span.set_attribute(COST_ATTRIBUTE, round(run.cost, 10))
        if error is not None:
            span.record_exception(error, timestamp=now)
            self._fail(span, error_type, error, now)
        else:
            span.end(end_time=now)

    def _fail(self, span: Span, error_type: str, error: BaseException | None, end: int) -> None:
        span.set_attribute("error.type", error_type)
        description = message_of(error) if error is not None else error_type
        span.set_status(self._api.Status(self._api.StatusCode.ERROR, description))
        span.end(end_time=end)

    # -- model calls ----------------------------------------------------------

    @_safe
    def on_request(self, info: RequestInfo) -> None:
        """The first attempt of an iteration begins its ``chat`` span; later ones join it."""
        run = self._run(info.model)
        span = run.chat
        if span is not None and run.chat_iteration == info.iteration:
            if info.model != run.chat_model:  # a fallback model took over
                run.chat_model = info.model
                span.update_name(f"chat {info.model}")
                span.set_attribute("gen_ai.request.model", info.model)
            return
        if span is not None:  # an iteration that never decided: not expected, but close it
            span.end()
        body = info.json
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": _PROVIDER,
            "gen_ai.request.model": info.model,
        }
        attributes.update(request_attributes(info.url, body))
        tools = body.get("tools")
        run.descriptions = descriptions(tools)
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json_string(input_messages(body))
            instructions = body.get("instructions")
            if isinstance(instructions, str) and instructions:
                attributes["gen_ai.system_instructions"] = json_string(
                    [{"type": "text", "content": instructions}]
                )
            if tools:
                attributes["gen_ai.tool.definitions"] = json_string(tools)
        run.chat = self.tracer.start_span(
            f"chat {info.model}",
            context=run.context,
            kind=self._api.SpanKind.CLIENT,
            attributes=attributes,
        )
        run.chat_iteration = info.iteration
        run.chat_model = info.model

    @_safe
    def on_chunk(self, info: ChunkInfo) -> None:
        """The first chunk of an attempt gives ``gen_ai.response.time_to_first_chunk``."""
        if info.offset:
            return
        run = self._current.get()
        if run is not None and run.chat is not None:
            run.chat.set_attribute("gen_ai.response.time_to_first_chunk", info.elapsed)

    @_safe
    def on_error(self, info: ErrorInfo) -> None:
        """A failed attempt is an event on the ``chat`` span; other problems on the run span."""
        run = self._current.get()
        if run is None:
            return
        attributes: dict[str, str | int | bool] = {
            "rawloop.where": info.where,
            "rawloop.attempt": info.attempt,
            "rawloop.will_retry": info.will_retry,
        }
        if info.where == "request" and run.chat is not None:
            run.chat.record_exception(info.error, attributes=attributes)
        else:
            run.span.record_exception(info.error, attributes=attributes)

    @_safe
    def on_decision(self, info: DecisionInfo) -> None:
        """End the ``chat`` span with the response; begin a tool span per function call."""
        run = self._run()
        turn = info.turn
        span = run.chat
        if span is not None:
            set_response(span, turn)
            self._account(run, span, turn)
            if self.capture_content:
                span.set_attribute("gen_ai.output.messages", json_string(output_messages(turn)))
            span.end()
            run.chat = None
        start = time.time_ns()
        for call in turn.calls:
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": call.name,
                "gen_ai.tool.call.id": call.call_id,
                "gen_ai.tool.type": "function",
            }
            description = run.descriptions.get(call.name)
            if description:
                attributes["gen_ai.tool.description"] = description
            if self.capture_content:
                attributes["gen_ai.tool.call.arguments"] = call.arguments
            tool_span = self.tracer.start_span(
                f"execute_tool {call.name}",
                context=run.context,
                kind=self._api.SpanKind.INTERNAL,
                attributes=attributes,
                start_time=start,
            )
            run.tools.setdefault(call.call_id, []).append((tool_span, start))

    def _account(self, run: _Run, span: Span, turn: Turn) -> None:
        """Fallback and cost of the call that just answered, on its span and the run's."""
        model = run.chat_model or turn.model or ""
        if run.primary and run.chat_model and run.chat_model != run.primary:
            run.fallback_used = True
            span.set_attribute("gen_ai.fallback.used", True)
            span.set_attribute("rawloop.fallback.from_model", run.primary)
        if not self.prices:
            return
        price = price_of(turn.model or model, self.prices) or price_of(model, self.prices)
        if price is None:
            return
        usage = turn.usage or {}
        tokens_in = usage.get("input_tokens", usage.get("prompt_tokens")) or 0
        tokens_out = usage.get("output_tokens", usage.get("completion_tokens")) or 0
        if not isinstance(tokens_in, int) or not isinstance(tokens_out, int):
            return
        cost = (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000
        span.set_attribute(COST_ATTRIBUTE, round(cost, 10))
        run.cost += cost
        run.priced = True

    # -- tool calls -----------------------------------------------------------

    @_safe
    def on_result(self, info: ResultInfo) -> None:
        """End the call's tool span, ``ToolResult.duration`` after it started."""
        run = self._run()
        result = info.result
        now = time.time_ns()
        duration = max(0, int(result.duration * 1e9))
        spans = run.tools.get(result.call_id)
        if spans:
            span, start = spans.pop(0)
            if not spans:
                del run.tools[result.call_id]
        else:  # a result no decision announced (a runner, a replay): place it before now
            start = now - duration
            span = self.tracer.start_span(
                f"execute_tool {result.name}",
                context=run.context,
                kind=self._api.SpanKind.INTERNAL,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": result.name,
                    "gen_ai.tool.call.id": result.call_id,
                    "gen_ai.tool.type": "function",
                },
                start_time=start,
            )
        end = min(start + duration, now) if duration else now
        if self.capture_content:
            span.set_attribute("gen_ai.tool.call.result", result.output)
        error = result.error
        if error is not None and error.get("type") != "StopLoop":
            span.set_attribute("error.type", error.get("type") or "error")
            description = (
                error.get("message", "") if self.capture_content else error.get("type", "")
            )
            span.set_status(self._api.Status(self._api.StatusCode.ERROR, description))
        span.end(end_time=end)
