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

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError
from ..loop.loop import Loop
from ..loop.state import RunResult
from .answers import EventHooks, failure, log_failure, status_of, summary, transcript
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
    route_path,
    send_json,
    serve_events,
    until_disconnect,
)
from .requests import (
    Authorize,
    RequestContext,
    current_request,
    field_of,
    json_body,
    path_name,
    proxy_url_of,
    request_context,
    string_field,
)
from .sessions import SessionStore

__all__ = [
    "DEFAULT_AGENT",
    "MAX_BODY_SIZE",
    "AgentApp",
    "Authorize",
    "HTTPProblem",
    "LoopFactory",
    "RequestContext",
    "app",
    "current_request",
]

logger = logging.getLogger("rawloop.http")

DEFAULT_AGENT = "default"
MAX_BODY_SIZE = 1024 * 1024

LoopFactory = Callable[[str], Loop | Awaitable[Loop] | None]


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
            agent = path_name(agent, "name")
            conversation = path_name(conversation, "id")
        context = request_context(scope, path, route, agent, conversation)
        await self._authorize(context, agent, conversation)
        loop = await self._loop(agent)
        body = await json_body(scope, receive, self.max_body_size)
        if route == "dispatch":
            instruction = string_field(
                field_of(body, "input", dict).get("user_instruction"), "input.user_instruction"
            )
            context = replace(context, proxy_url=proxy_url_of(body, context))
            await self._answer(
                context,
                receive,
                send,
                lambda hooks: loop.run(instruction, hooks=hooks),
                stream=False,
            )
        elif route == "chat":
            message = string_field(body.get("message"), "message")
            context = replace(context, proxy_url=proxy_url_of(body, context))
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
        message = string_field(body.get("message"), "message")
        session = body.get("session")
        if session is not None:
            session = path_name(session, "session")
        context = replace(context, session=session, proxy_url=proxy_url_of(body, context))
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
                        result = await run([EventHooks(emit)])
                    except Exception as exc:
                        log_failure(context, exc)
                        await emit("error", failure(exc)["error"])
                        return
                    await emit("done", {**summary(result), **extra})

                await serve_events(receive, send, produce, heartbeat=self.heartbeat)
                return
            try:
                finished, result = await until_disconnect(receive, lambda: run([]))
            except Exception as exc:
                log_failure(context, exc)
                await send_json(send, status_of(exc), failure(exc))
                return
            if finished and result is not None:
                await send_json(send, 200, {**transcript(result), **extra})
        finally:
            current_request.reset(token)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message.get("type") == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
