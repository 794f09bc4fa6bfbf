"""Serve a loop over HTTP: a plain ASGI 3 application, no web framework needed.

``rawloop.http.app(loop_or_factory)`` answers:

``POST /dispatch``
    ``{"input": {"user_instruction": "..."}, "proxy_url": optional}``: one run,
    answered as JSON ``{"final_response", "messages", "metadata"}`` where
    ``messages`` is the whole transcript (``RunResult.items``) and
    ``metadata`` holds ``model``, ``total_input_tokens``,
    ``total_output_tokens``, ``iterations`` and ``stop_reason``.
``POST /chat``
    ``{"message": "..."}``: one run, answered as Server-Sent Events:
    ``text`` (``{"text"}``, each streamed piece), ``tool_call`` (``{"call_id",
    "name", "arguments", "iteration"}``, once its arguments are complete),
    ``tool_result`` (``{"call_id", "name", "output", "error", "iteration"}``),
    ``retry`` (``{"iteration", "attempt", "message", "delay"}``: that
    model call failed and is made again, so drop the text it streamed),
    and last ``done`` (``{"text", "stop_reason", "iterations", "usage",
    "model"}``) or ``error`` (``{"type", "message"}``). A ``: heartbeat``
    comment goes out whenever nothing else was sent for ``heartbeat``
    seconds (while tools run, say).
``POST /agents/{name}/{id}``
    ``{"message": "...", "session": optional}``: one turn of a conversation
    kept in a trace file under ``sessions_dir`` and continued across
    requests and server restarts (see ``rawloop.sessions``). JSON as for
    ``/dispatch`` plus ``"session": {"agent", "id", "name"}``; Server-Sent
    Events as for ``/chat`` when the request says ``Accept: text/event-stream``.

``loop_or_factory`` is a ``Loop``, used for every route and every agent name,
or ``factory(agent_name) -> Loop`` (or an awaitable of one); a factory that
returns ``None`` or raises ``LookupError`` makes the agent unknown (404).
``/dispatch`` and ``/chat`` use agent ``"default"``.

``authorize(request, agent, id)`` (sync or async) is asked before the body is
read, for every route (``id`` is ``None`` for ``/dispatch`` and ``/chat``);
anything but ``True`` is a 403. ``request`` is the ``RequestContext``.

A client that disconnects cancels its run; the loop then closes its HTTP
stream to the model. Runs are plain async code, so a long one never holds up
other requests; two requests to one session wait for each other.

Tools see the request they run for through ``current_request.get()``: a
``RequestContext`` with ``proxy_url`` (the body's ``proxy_url``, else the
``x-tool-proxy-url`` header) and ``run_token`` (the ``x-run-token`` header),
for tools that call back through a proxy. The token is never logged, shown in
a ``repr`` or written to a trace by this module.

Errors are JSON ``{"error": {"type", "message", "field"}}``: 400 for a body
that is not JSON or a bad name (a path part or ``session``), 422 for a field
of the wrong shape (``field`` names it, e.g. ``input.user_instruction``), 403,
404, 405, 413 past ``max_body_size``, 502 when the model API failed, 500
otherwise.

``serve_agent("module:attr")`` runs the app with uvicorn (``pip install
'rawloop[serve]'``); ``rawloop serve-agent`` is its command line.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import APIError, ConfigurationError, RawloopError, StreamError
from ..core.redact import redact_headers
from ..loop.hooks import ErrorInfo, EventInfo, ResultInfo
from ..loop.loop import Loop
from ..loop.state import RunResult
from ..loop.tool_files import load_module
from ..loop.validate import json_type
from .asgi import (
    ClientDisconnected,
    Emit,
    HTTPProblem,
    Message,
    Receive,
    Scope,
    Send,
    error_document,
    header,
    read_body,
    route_path,
    send_json,
    serve_events,
    until_disconnect,
)
from .sessions import SessionStore, check_name

__all__ = [
    "DEFAULT_AGENT",
    "MAX_BODY_SIZE",
    "AgentApp",
    "Authorize",
    "HTTPProblem",
    "LoopFactory",
    "RequestContext",
    "add_serve_agent_command",
    "app",
    "current_request",
    "load_target",
    "serve_agent",
]

logger = logging.getLogger("rawloop.http")

DEFAULT_AGENT = "default"
MAX_BODY_SIZE = 1024 * 1024

LoopFactory = Callable[[str], Loop | Awaitable[Loop] | None]


@dataclass(frozen=True)
class RequestContext:
    """The HTTP request a run serves, as tools see it through ``current_request``.

    ``route`` is ``dispatch``, ``chat`` or ``agent``. ``headers`` are lower-cased
    with credentials (``authorization``, cookies, ``x-run-token``...) redacted;
    the run token itself is ``run_token``, left out of ``repr``.
    """

    method: str
    path: str
    route: str
    agent: str
    conversation_id: str | None = None
    session: str | None = None
    proxy_url: str | None = None
    run_token: str | None = field(default=None, repr=False)
    client: tuple[str, int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    scope: Scope = field(default_factory=dict, repr=False, compare=False)


#: The request the current run serves (``None`` outside one).
current_request: ContextVar[RequestContext | None] = ContextVar(
    "rawloop.http.current_request", default=None
)

Authorize = Callable[[RequestContext, str, str | None], bool | Awaitable[bool]]


def app(
    loop_or_factory: Loop | LoopFactory,
    *,
    sessions_dir: str | Path | None = None,
    authorize: Authorize | None = None,
    heartbeat: float = 15.0,
    max_body_size: int = MAX_BODY_SIZE,
) -> AgentApp:
    """The ASGI application serving ``loop_or_factory`` (see the module docstring).

    Args:
        loop_or_factory: a ``Loop``, or ``factory(agent_name) -> Loop``.
        sessions_dir: where ``/agents/{name}/{id}`` keeps its conversations;
            without it that route answers 404.
        authorize: ``(request, agent, id) -> bool`` (or awaitable), asked for
            every request; false is a 403.
        heartbeat: seconds of silence before an event stream gets a
            ``: heartbeat`` comment (0 for none).
        max_body_size: bytes a request body may hold (413 past it).
    """
    return AgentApp(
        loop_or_factory,
        sessions_dir=sessions_dir,
        authorize=authorize,
        heartbeat=heartbeat,
        max_body_size=max_body_size,
    )


class AgentApp:
    """The ASGI 3 application ``app()`` returns: ``await app(scope, receive, send)``."""

    def __init__(
        self,
        loop_or_factory: Loop | LoopFactory,
        *,
        sessions_dir: str | Path | None = None,
        authorize: Authorize | None = None,
        heartbeat: float = 15.0,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        if not isinstance(loop_or_factory, Loop) and not callable(loop_or_factory):
            raise ConfigurationError(
                f"app() needs a Loop or a factory(agent_name) -> Loop, "
                f"not {type(loop_or_factory).__name__}"
            )
        self.loop_or_factory = loop_or_factory
        self.sessions = SessionStore(sessions_dir) if sessions_dir is not None else None
        self.authorize = authorize
        self.heartbeat = heartbeat
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self._handle(scope, receive, tracked_send)
        except HTTPProblem as problem:
            if not started:
                await send_json(send, problem.status, problem.document(), problem.headers)
        except ClientDisconnected:
            return
        except Exception:
            logger.exception("rawloop.http: %s %s failed", scope.get("method"), route_path(scope))
            if not started:
                await send_json(send, 500, error_document("internal error", type="internal_error"))

    # -- routing ------------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        parts = path.split("/")
        if path in ("/dispatch", "/chat"):
            route, agent, conversation = path[1:], DEFAULT_AGENT, None
        elif len(parts) == 4 and parts[:2] == ["", "agents"] and parts[2] and parts[3]:
            route, agent, conversation = "agent", parts[2], parts[3]
        else:
            raise HTTPProblem(404, f"no route {path}", type="not_found")
        if scope.get("method") != "POST":
            raise HTTPProblem(
                405,
                f"{path} answers POST, not {scope.get('method')}",
                type="method_not_allowed",
                headers=[(b"allow", b"POST")],
            )
        if route == "agent":
            if self.sessions is None:
                raise HTTPProblem(
                    404,
                    "conversations are off: serve with app(..., sessions_dir=DIR) to keep them",
                    type="not_found",
                )
            agent = _name(agent, "name")
            conversation = _name(conversation, "id")
        context = _context(scope, path, route, agent, conversation)
        await self._authorize(context, agent, conversation)
        loop = await self._loop(agent)
        body = await self._json_body(scope, receive)
        if route == "dispatch":
            instruction = _string(
                _field(body, "input", dict).get("user_instruction"), "input.user_instruction"
            )
            context = replace(context, proxy_url=_proxy_url(body, context))
            await self._answer(
                context,
                receive,
                send,
                lambda hooks: loop.run(instruction, hooks=hooks),
                stream=False,
            )
        elif route == "chat":
            message = _string(body.get("message"), "message")
            context = replace(context, proxy_url=_proxy_url(body, context))
            await self._answer(
                context, receive, send, lambda hooks: loop.run(message, hooks=hooks), stream=True
            )
        else:
            await self._converse(context, loop, body, scope, receive, send)

    async def _converse(
        self,
        context: RequestContext,
        loop: Loop,
        body: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        assert self.sessions is not None
        sessions, agent, conversation = self.sessions, context.agent, context.conversation_id
        assert conversation is not None
        message = _string(body.get("message"), "message")
        session = body.get("session")
        if session is not None:
            session = _name(session, "session")
        context = replace(context, session=session, proxy_url=_proxy_url(body, context))
        stream = "text/event-stream" in (header(scope, b"accept") or "")
        extra = {"session": {"agent": agent, "id": conversation, "name": session or "default"}}
        await self._answer(
            context,
            receive,
            send,
            lambda hooks: sessions.run(loop, agent, conversation, session, message, hooks=hooks),
            stream=stream,
            extra=extra,
        )

    async def _authorize(self, context: RequestContext, agent: str, id: str | None) -> None:
        if self.authorize is None:
            return
        allowed = self.authorize(context, agent, id)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if allowed is not True:
            raise HTTPProblem(403, "not allowed", type="forbidden")

    async def _loop(self, agent: str) -> Loop:
        if isinstance(self.loop_or_factory, Loop):
            return self.loop_or_factory
        try:
            made = self.loop_or_factory(agent)
            if inspect.isawaitable(made):
                made = await made
        except LookupError:
            made = None
        if made is None:
            raise HTTPProblem(404, f"no agent named {agent!r}", type="not_found")
        return made

    async def _json_body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        raw = await read_body(scope, receive, self.max_body_size)
        if not raw.strip():
            raise HTTPProblem(
                400, "the request body is empty: send a JSON object", type="invalid_json"
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(
                400, f"the request body is not JSON: {exc}", type="invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise HTTPProblem(
                422,
                f"the request body must be a JSON object, not {_json_type(body)}",
                type="invalid_field",
            )
        return body

    # -- running --------------------------------------------------------------------

    async def _answer(
        self,
        context: RequestContext,
        receive: Receive,
        send: Send,
        run: Callable[[list[Any]], Awaitable[RunResult]],
        *,
        stream: bool,
        extra: dict[str, Any] | None = None,
    ) -> None:
        extra = extra or {}
        token = current_request.set(context)  # task groups copy it into their tasks
        try:
            if stream:

                async def produce(emit: Emit) -> None:
                    try:
                        result = await run([_EventHooks(emit)])
                    except Exception as exc:
                        _log_failure(context, exc)
                        await emit("error", _failure(exc)["error"])
                        return
                    await emit("done", {**_summary(result), **extra})

                await serve_events(receive, send, produce, heartbeat=self.heartbeat)
                return
            try:
                finished, result = await until_disconnect(receive, lambda: run([]))
            except Exception as exc:
                _log_failure(context, exc)
                await send_json(send, _status_of(exc), _failure(exc))
                return
            if finished and result is not None:
                await send_json(send, 200, {**_transcript(result), **extra})
        finally:
            current_request.reset(token)


class _EventHooks:
    """Per-run hooks turning the loop's deltas and results into client events."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit

    async def on_event(self, info: EventInfo) -> None:
        for delta in info.deltas:
            if delta.kind == "text":
                await self._emit("text", {"text": delta.text})
            elif delta.kind == "call":
                await self._emit(
                    "tool_call",
                    {
                        "call_id": delta.call_id,
                        "name": delta.name,
                        "arguments": delta.text,
                        "iteration": info.iteration,
                    },
                )

    async def on_result(self, info: ResultInfo) -> None:
        result = info.result
        await self._emit(
            "tool_result",
            {
                "call_id": result.call_id,
                "name": result.name,
                "output": result.output,
                "error": result.error,
                "iteration": info.iteration,
            },
        )

    async def on_error(self, info: ErrorInfo) -> None:
        if info.where == "request" and info.will_retry:
            await self._emit(
                "retry",
                {
                    "iteration": info.iteration,
                    "attempt": info.attempt,
                    "message": str(info.error),
                    "delay": info.delay,
                },
            )


# -- answers ---------------------------------------------------------------------------


def _summary(result: RunResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "stop_reason": result.stop_reason,
        "iterations": result.iterations,
        "usage": result.usage,
        "model": result.state.model,
    }


def _transcript(result: RunResult) -> dict[str, Any]:
    return {
        "final_response": result.text,
        "messages": result.items,
        "metadata": {
            "model": result.state.model,
            "total_input_tokens": result.usage.get("input_tokens", 0),
            "total_output_tokens": result.usage.get("output_tokens", 0),
            "iterations": result.iterations,
            "stop_reason": result.stop_reason,
        },
    }


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, (APIError, StreamError)):
        return 502  # the model API failed, not this server
    return 500


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RawloopError):
        return error_document(str(exc), type=type(exc).__name__)
    # Anything else is a bug somewhere: its text stays in the server's log.
    return error_document(f"internal error ({type(exc).__name__})", type="internal_error")


def _log_failure(context: RequestContext, exc: BaseException) -> None:
    if isinstance(exc, RawloopError):
        logger.warning("rawloop.http: run for %s %s failed: %s", context.route, context.agent, exc)
    else:
        logger.error(
            "rawloop.http: run for %s %s failed", context.route, context.agent, exc_info=exc
        )


# -- requests -----------------------------------------------------------------------------

# Never shown to tools as plain headers: they get run_token instead.
_SECRET_HEADERS = ("x-run-token",)


def _context(
    scope: Scope, path: str, route: str, agent: str, conversation: str | None
) -> RequestContext:
    headers: dict[str, str] = {}
    for key, value in scope.get("headers") or ():
        headers[bytes(key).decode("latin-1").lower()] = bytes(value).decode("latin-1")
    client = scope.get("client")
    return RequestContext(
        method=str(scope.get("method", "")),
        path=path,
        route=route,
        agent=agent,
        conversation_id=conversation,
        proxy_url=headers.get("x-tool-proxy-url"),
        run_token=headers.get("x-run-token"),
        client=(str(client[0]), int(client[1])) if client else None,
        headers=redact_headers(headers, _SECRET_HEADERS),
        scope=scope,
    )


def _name(value: object, field: str) -> str:
    try:
        return check_name(value, field)
    except ValueError as exc:
        raise HTTPProblem(400, str(exc), field=field, type="invalid_name") from None


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        expected = "an object" if kind is dict else kind.__name__
        raise HTTPProblem(
            422,
            f"{name} must be {expected}, not {_json_type(value)}"
            if name in body
            else f"{name} is missing",
            field=name,
            type="invalid_field",
        )
    return value


def _string(value: object, field: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    problem = (
        "is missing"
        if value is None
        else (
            "is empty" if isinstance(value, str) else f"must be a string, not {_json_type(value)}"
        )
    )
    raise HTTPProblem(422, f"{field} {problem}", field=field, type="invalid_field")


def _proxy_url(body: dict[str, Any], context: RequestContext) -> str | None:
    value = body.get("proxy_url")
    if value is None:
        return context.proxy_url
    if not isinstance(value, str):
        raise HTTPProblem(
            422,
            f"proxy_url must be a string, not {_json_type(value)}",
            field="proxy_url",
            type="invalid_field",
        )
    return value


# How error messages name a JSON value's type ("must be a string, not a number").
_SPOKEN_TYPES = {
    "null": "null",
    "boolean": "a boolean",
    "integer": "a number",
    "number": "a number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
}


def _json_type(value: object) -> str:
    name = json_type(value)
    return _SPOKEN_TYPES.get(name, name)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- serving ----------------------------------------------------------------------------

_APP_OPTIONS = ("sessions_dir", "authorize", "heartbeat", "max_body_size")


def load_target(target: str) -> Any:
    """The object ``module:attr`` (or ``path/to/file.py:attr``) names.

    ``attr`` may be dotted (``agents:registry.get``). The current directory
    is importable, as with uvicorn.
    """
    source, colon, attr = target.rpartition(":")
    if not colon or not source or not attr:
        raise ConfigurationError(
            f"{target!r}: expected MODULE:ATTR, e.g. myagent:loop or agents/main.py:make_loop"
        )
    if source.endswith(".py") or "/" in source or os.sep in source:
        module: Any = load_module(source)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            raise ConfigurationError(f"{target!r}: cannot import {source}: {exc}") from exc
    value = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"{target!r}: {source} has no attribute {attr}") from None
    return value


def serve_agent(target: str, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> int:
    """Serve the loop or factory ``target`` (``module:attr``) with uvicorn; returns 0.

    ``sessions_dir``, ``authorize`` (a callable or a ``module:attr`` string),
    ``heartbeat`` and ``max_body_size`` go to ``app()``; any other option to
    ``uvicorn.run`` (``log_level="info"``...). Raises ``ConfigurationError``
    when uvicorn is missing or the target cannot be loaded.
    """
    try:
        uvicorn = importlib.import_module("uvicorn")
    except ImportError:
        raise ConfigurationError(
            "serving needs uvicorn, which is not installed: pip install 'rawloop[serve]'"
        ) from None
    app_options = {name: options.pop(name) for name in _APP_OPTIONS if name in options}
    if isinstance(app_options.get("authorize"), str):
        app_options["authorize"] = load_target(app_options["authorize"])
    agent = load_target(target)
    asgi = app(agent, **app_options)
    uvicorn.run(asgi, host=host, port=port, **options)
    return 0


def _cmd_serve_agent(args: argparse.Namespace) -> int:
    return serve_agent(
        args.target,
        host=args.host,
        port=args.port,
        sessions_dir=args.sessions_dir,
        authorize=args.authorize,
        heartbeat=args.heartbeat,
        max_body_size=args.max_body_size,
        log_level=args.log_level,
    )


def add_serve_agent_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve-agent`` to the ``rawloop`` command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-agent",
        help="serve a Loop over HTTP (/dispatch, /chat, /agents/NAME/ID) with uvicorn",
        description="Serve TARGET, a rawloop Loop or a factory(agent_name) -> Loop named as "
        "MODULE:ATTR or FILE.py:ATTR, as an ASGI app with uvicorn "
        "(pip install 'rawloop[serve]').",
    )
    p.add_argument("target", help="MODULE:ATTR or FILE.py:ATTR naming a Loop or a factory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--sessions-dir", metavar="DIR", help="keep /agents/NAME/ID conversations here")
    p.add_argument(
        "--authorize",
        metavar="MODULE:ATTR",
        help="a function (request, agent, id) -> bool deciding access",
    )
    p.add_argument(
        "--heartbeat", type=float, default=15.0, help="seconds between SSE heartbeats (0: none)"
    )
    p.add_argument(
        "--max-body-size", type=int, default=MAX_BODY_SIZE, help="largest request body in bytes"
    )
    p.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")
    p.set_defaults(func=_cmd_serve_agent)
    return p
