"""The WebSocket surface: ``/agents/{name}/{id}``, several turns over one connection.

Each text frame from the client is one turn: ``{"message": "...", "session":
optional}``. The server answers with the events of the ``/chat`` stream, one
JSON frame each: ``{"event": "text"|"tool_call"|"tool_result"|"retry"|
"done"|"error", "data": {...}}``; ``done`` carries the run's summary and
``"session": {"agent", "id", "name"}``. Turns run one after another in the
order their frames came; a bad frame gets an ``error`` event (``type``
``invalid_frame``) and the connection stays open. Closing the connection
cancels the running turn (which is stored like any cancelled turn).

The handshake is refused (closed before accept, a 403 to the client) for a
route other than ``/agents/{name}/{id}``, a bad name, an unknown agent or a
request ``authorize`` refuses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from .answers import EventHooks, failure, log_failure, summary
from .asgi import HTTPProblem, Receive, Scope, Send, route_path
from .requests import path_name, request_context, session_name
from .sessions import DEFAULT_SESSION
from .store import SessionKey
from .turns import run_turn

if TYPE_CHECKING:
    from .app import AgentApp

__all__ = ["serve_websocket"]


async def serve_websocket(app: AgentApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one WebSocket connection of ``app`` (see the module docstring)."""
    parts = route_path(scope).split("/")
    try:
        if not (len(parts) == 4 and parts[:2] == ["", "agents"]):
            raise HTTPProblem(404, "no such route", type="not_found")
        agent, id = path_name(parts[2], "name"), path_name(parts[3], "id")
        context = request_context(scope, route_path(scope), "websocket", agent, id)
        await app._authorize(context, agent, id)
        if app.agents.target(agent) is None:
            raise HTTPProblem(404, f"no agent named {agent!r}", type="not_found")
        await app.ready()
    except HTTPProblem:
        await send({"type": "websocket.close", "code": 1008})
        return
    if (await receive()).get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    lock = anyio.Lock()
    closed = False

    async def emit(event: str, data: Any) -> None:
        nonlocal closed
        async with lock:
            if closed:
                return
            try:
                text = orjson.dumps({"event": event, "data": data}, default=str).decode()
                await send({"type": "websocket.send", "text": text})
            except OSError:  # the client is gone; the reader ends the connection
                closed = True

    outbox, inbox = anyio.create_memory_object_stream[str](64)

    async def turns() -> None:
        async with inbox:
            async for frame in inbox:
                await _turn(app, context, frame, emit)

    async with anyio.create_task_group() as group:
        group.start_soon(turns)
        async with outbox:
            while True:
                message = await receive()
                kind = message.get("type")
                if kind == "websocket.disconnect":
                    closed = True
                    group.cancel_scope.cancel()
                    break
                if kind != "websocket.receive":
                    continue
                text = message.get("text")
                if text is None:
                    data = message.get("bytes") or b""
                    text = bytes(data).decode("utf-8", errors="replace")
                if len(text) > app.max_body_size:
                    await emit("error", _invalid(f"a frame over {app.max_body_size} bytes"))
                    continue
                await outbox.send(text)


def _invalid(message: str, field: str | None = None) -> dict[str, Any]:
    return {"type": "invalid_frame", "message": message, "field": field}


async def _turn(app: AgentApp, context: Any, frame: str, emit: Any) -> None:
    try:
        body = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        await emit("error", _invalid(f"the frame is not JSON: {exc}"))
        return
    if not isinstance(body, dict):
        await emit("error", _invalid("a frame must be a JSON object"))
        return
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        await emit("error", _invalid("message must be a non-empty string", "message"))
        return
    try:
        context = replace(context, session=session_name(body))
        loop = await app.loop_for(context, body)
    except HTTPProblem as problem:
        await emit("error", {**problem.document()["error"]})
        return
    key = SessionKey(context.agent, context.conversation_id, context.session or DEFAULT_SESSION)
    extra = {"session": key.document()}
    with app.run_scope(context) as request_hooks:
        try:
            result = await run_turn(
                app.store,
                loop,
                key,
                message,
                hooks=[*app.hooks, *request_hooks, EventHooks(emit)],
                lock_lease=app.dispatcher.lease,
            )
        except Exception as exc:
            log_failure(context, exc)
            await emit("error", failure(exc)["error"])
            return
    await emit("done", {**summary(result), **extra})
