"""Serve agents over HTTP and WebSocket: a plain ASGI 3 application, no web framework needed.

``app(agents)`` answers (the details, with examples, are in docs/serving.md):

``POST /dispatch``
    ``{"input": {"user_instruction": "..."}, "odyssey_proxy_url"|"proxy_url": optional}``:
    one run, answered when done as ``{"final_response", "messages",
    "metadata": {"model", "total_input_tokens", "total_output_tokens",
    "iterations", "stop_reason"}}`` (the pipelines template's envelope).
``POST /chat``
    ``{"message": "..."}``: one run, answered as Server-Sent Events ``text``,
    ``tool_call``, ``tool_result``, ``retry``, then ``done`` or ``error``
    (see ``answers.EventHooks``), with ``: heartbeat`` comments in silences.
``POST /agents/{name}/{id}``
    ``{"message": "...", "session": optional}``: one turn of a conversation
    kept in the session store (on by default: ``SQLiteStore`` at
    ``default_store_path()``) and continued across requests, restarts and
    worker processes. JSON as for ``/dispatch`` plus ``"session": {"agent",
    "id", "name"}``; events as for ``/chat`` with ``Accept: text/event-stream``.
``WebSocket /agents/{name}/{id}``
    each client frame ``{"message", "session"}`` is one turn; the events of
    ``/chat`` come back as JSON frames ``{"event": NAME, "data": {...}}``.
``POST /agents/{name}/{id}/dispatch``
    ``{"input": <JSON>, "session": optional}``: stored, then ``202
    {"dispatch_id", "accepted_at"}``; a background worker runs it (see
    ``rawloop.serve.dispatcher``). An ``Idempotency-Key`` header makes a
    re-sent request answer the first one's receipt (200).
``GET /dispatches/{dispatch_id}``
    its state: ``queued``, ``running``, ``done`` (with ``result``) or
    ``failed`` (with ``error``).

``agents`` is a ``Loop``, a ``Profile``, a factory, a mapping name -> one of
those, or an ``Agents`` (see ``rawloop.serve.agents``). ``/dispatch`` and
``/chat`` use agent ``"default"``. ``authorize(request, agent, id)`` (sync or
async) is asked before the body is read; anything but ``True`` is a 403.

Tools see the request through ``current_request.get()`` (a
``RequestContext``); ``RemoteTool``s call the request's tool proxy with its
run token (headers ``X-Pipelines-Odyssey-Proxy-Url``/``X-Tool-Proxy-Url``
and ``X-Pipelines-Run-Token``/``X-Run-Token``), and with a proxy the run's
trace events are posted to it (``forward.TraceForwarder``). The token is
never logged, stored, shown in a ``repr`` or written to a trace.

Errors are JSON ``{"error": {"type", "message", "field"}}``: 400 for a body
that is not JSON or a bad name, 422 for a field of the wrong shape, 403,
404, 405, 409 for a full session, 413 past ``max_body_size``, 502 when the
model API failed, 500 otherwise.

The dispatch workers run while the server's lifespan does (uvicorn sends it);
``rawloop serve-agent`` (``rawloop.serve.command``) runs the app with uvicorn.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from ..core.errors import ConfigurationError
from ..loop.loop import Loop
from ..loop.state import RunResult
from .agents import AgentContext, Agents, AgentTarget, Profile
from .answers import EventHooks, failure, log_failure, status_of, summary, transcript
from .asgi import (
    MAX_BODY_SIZE,
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
from .dispatcher import Dispatcher
from .forward import proxied_run
from .harness import open_store
from .requests import (
    Authorize,
    RequestContext,
    current_request,
    field_of,
    json_body,
    path_name,
    proxy_url_of,
    request_context,
    session_name,
    string_field,
)
from .routes import DEFAULT_AGENT, match_route
from .sessions import DEFAULT_SESSION
from .store import (
    DEFAULT_LEASE,
    DispatchRequest,
    SessionFull,
    SessionKey,
    SessionLimits,
    SessionStore,
)
from .store_sqlite import SQLiteStore
from .turns import run_turn

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

#: The longest ``Idempotency-Key`` accepted.
_MAX_KEY = 256

LoopFactory = Callable[..., Any]


def app(agents: AgentTarget | Mapping[str, AgentTarget] | Agents, **options: Any) -> AgentApp:
    """The ASGI application serving ``agents`` (see the module docstring and ``AgentApp``)."""
    return AgentApp(agents, **options)


class AgentApp:
    """The ASGI 3 application ``app()`` returns: ``await app(scope, receive, send)``.

    Args:
        agents: what builds each run's loop (see the module docstring).
        store: the session store, or a path to a SQLite file; the default
            SQLite file (``default_store_path()``) when not given.
        sessions_dir: a folder of session trace files written by an older
            rawloop: the store is ``DIR/sessions.db`` (unless ``store`` is
            given) and the files are imported into it once, left in place.
        authorize: ``(request, agent, id) -> bool`` (or awaitable); false is a 403.
        heartbeat: seconds of silence before an event stream gets a comment (0: none).
        max_body_size: bytes a request body may hold (413 past it).
        hooks: hooks added to every run.
        profile: what factories' mappings and ``Profile`` agents extend.
        session_limits: caps on one session (409 past them).
        dispatch_workers: background workers running dispatches (0: none here).
        dispatch_lease: seconds a dispatch (or a session lock) stays held without
            renewal: how soon the work of a process that died is taken over.
        dispatch_poll: seconds between looks at the queue when idle.
        forward_trace: post trace events to a run's tool proxy.
    """

    def __init__(
        self,
        agents: AgentTarget | Mapping[str, AgentTarget] | Agents,
        *,
        store: SessionStore | str | Path | None = None,
        sessions_dir: str | Path | None = None,
        authorize: Authorize | None = None,
        heartbeat: float = 15.0,
        max_body_size: int = MAX_BODY_SIZE,
        hooks: Iterable[Any] = (),
        profile: Profile | None = None,
        session_limits: SessionLimits | None = None,
        dispatch_workers: int = 1,
        dispatch_lease: float = DEFAULT_LEASE,
        dispatch_poll: float = 0.5,
        forward_trace: bool = True,
    ) -> None:
        if isinstance(agents, Agents):
            self.agents = agents
        else:
            try:
                self.agents = Agents(agents, profile=profile)
            except ConfigurationError:
                raise ConfigurationError(
                    "app() needs a Loop, a Profile, a factory(context) -> Loop, a mapping of "
                    f"them or an Agents, not {type(agents).__name__}"
                ) from None
        if store is None and sessions_dir is not None:
            self.store: SessionStore = SQLiteStore(Path(sessions_dir) / "sessions.db")
        else:
            self.store = open_store(store)
        if session_limits is not None:
            self.store.limits = session_limits
        self.sessions_dir = Path(sessions_dir) if sessions_dir is not None else None
        self.authorize = authorize
        self.heartbeat = heartbeat
        self.max_body_size = max_body_size
        self.hooks = list(hooks)
        self.forward_trace = forward_trace
        self.dispatch_workers = dispatch_workers
        self.dispatcher = Dispatcher(
            self.store,
            self.agents,
            hooks=self.hooks,
            lease=dispatch_lease,
            poll=dispatch_poll,
            forward_trace=forward_trace,
        )
        self._ready = False
        self._ready_lock: anyio.Lock | None = None

    async def ready(self) -> SessionStore:
        """The opened store (opened, and old session files imported, on first use)."""
        if not self._ready:
            if self._ready_lock is None:
                self._ready_lock = anyio.Lock()
            async with self._ready_lock:
                if not self._ready:
                    await self.store.open()
                    if self.sessions_dir is not None:
                        from .migrate import import_session_files

                        await import_session_files(self.store, self.sessions_dir)
                    self._ready = True
        return self.store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind == "websocket":
            from .websocket import serve_websocket

            await serve_websocket(self, scope, receive, send)
            return
        if kind != "http":
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
        route, agent, conversation = match_route(path, scope.get("method"))
        if conversation is not None:
            agent = path_name(agent, "name")
            conversation = path_name(conversation, "id")
        context = request_context(scope, path, route, agent, conversation)
        await self._authorize(context, agent, conversation)
        if route == "status":
            await self._status(send, path.split("/")[2])
            return
        if self.agents.target(agent) is None:
            raise HTTPProblem(404, f"no agent named {agent!r}", type="not_found")
        body = await json_body(scope, receive, self.max_body_size)
        context = replace(context, proxy_url=proxy_url_of(body, context))
        if route == "agent_dispatch":
            await self._accept(context, body, scope, send)
            return
        if route == "dispatch":
            message = string_field(
                field_of(body, "input", dict).get("user_instruction"), "input.user_instruction"
            )
        else:
            message = string_field(body.get("message"), "message")
        context = replace(context, session=session_name(body))
        loop = await self.loop_for(context, body)
        if route == "agent":
            await self._converse(context, loop, message, scope, receive, send)
        else:
            await self._answer(
                context,
                receive,
                send,
                lambda hooks: loop.run(message, hooks=[*self.hooks, *hooks]),
                stream=route == "chat",
            )

    async def loop_for(self, context: RequestContext, payload: Any) -> Loop:
        """The loop of the agent ``context`` names (404 when there is none)."""
        agent_context = AgentContext(
            context.agent, context.conversation_id, context.session, payload=payload
        )
        loop = await self.agents.loop_for(agent_context)
        if loop is None:
            raise HTTPProblem(404, f"no agent named {context.agent!r}", type="not_found")
        return loop

    async def _converse(
        self,
        context: RequestContext,
        loop: Loop,
        message: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        store = await self.ready()
        assert context.conversation_id is not None
        key = SessionKey(context.agent, context.conversation_id, context.session or DEFAULT_SESSION)
        stream = "text/event-stream" in (header(scope, b"accept") or "")
        extra = {"session": key.document()}
        await self._answer(
            context,
            receive,
            send,
            lambda hooks: run_turn(
                store,
                loop,
                key,
                message,
                hooks=[*self.hooks, *hooks],
                lock_lease=self.dispatcher.lease,
            ),
            stream=stream,
            extra=extra,
        )

    async def _accept(
        self, context: RequestContext, body: dict[str, Any], scope: Scope, send: Send
    ) -> None:
        if "input" not in body:
            raise HTTPProblem(422, "input is missing", field="input", type="invalid_field")
        session = session_name(body)
        key = header(scope, b"idempotency-key")
        if key is not None and not (0 < len(key) <= _MAX_KEY and key.isprintable()):
            raise HTTPProblem(
                400,
                f"the Idempotency-Key header must be 1 to {_MAX_KEY} printable characters",
                field="Idempotency-Key",
                type="invalid_header",
            )
        assert context.conversation_id is not None
        await self.ready()
        dispatch, created = await self.dispatcher.accept(
            DispatchRequest(
                agent=context.agent,
                id=context.conversation_id,
                input=body["input"],
                session=session,
                proxy_url=context.proxy_url,
                idempotency_key=key,
            ),
            token=context.run_token,
        )
        await send_json(
            send,
            202 if created else 200,
            {
                "dispatch_id": dispatch.dispatch_id,
                "accepted_at": dispatch.accepted_at,
                "status": dispatch.status,
            },
            [(b"location", f"/dispatches/{dispatch.dispatch_id}".encode())],
        )

    async def _status(self, send: Send, dispatch_id: str) -> None:
        store = await self.ready()
        dispatch = await store.dispatch(dispatch_id[:128])
        if dispatch is None:
            raise HTTPProblem(404, f"no dispatch {dispatch_id[:128]!r}", type="not_found")
        await send_json(send, 200, dispatch.document())

    async def _authorize(self, context: RequestContext, agent: str, id: str | None) -> None:
        if self.authorize is None:
            return
        allowed = self.authorize(context, agent, id)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if allowed is not True:
            raise HTTPProblem(403, "not allowed", type="forbidden")

    # -- running --------------------------------------------------------------------

    @contextlib.contextmanager
    def run_scope(self, context: RequestContext) -> Iterator[list[Any]]:
        """Set what a run sees for ``context``: ``current_request``, the remote tool proxy.

        Yields the hooks the request adds (the trace forwarder, with a proxy).
        """
        token = current_request.set(context)  # task groups copy it into their tasks
        try:
            with proxied_run(
                context.proxy_url, context.run_token, forward_trace=self.forward_trace
            ) as hooks:
                yield hooks
        finally:
            current_request.reset(token)

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
        with self.run_scope(context) as request_hooks:
            if stream:

                async def produce(emit: Emit) -> None:
                    try:
                        result = await run([*request_hooks, EventHooks(emit)])
                    except Exception as exc:
                        log_failure(context, exc)
                        await emit("error", failure(exc)["error"])
                        return
                    await emit("done", {**summary(result), **extra})

                await serve_events(receive, send, produce, heartbeat=self.heartbeat)
                return
            try:
                finished, result = await until_disconnect(receive, lambda: run(request_hooks))
            except SessionFull as exc:
                await send_json(send, 409, error_document(str(exc), type="session_full"))
                return
            except Exception as exc:
                log_failure(context, exc)
                await send_json(send, status_of(exc), failure(exc))
                return
            if finished and result is not None:
                await send_json(send, 200, {**transcript(result), **extra})

    # -- lifespan -----------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message.get("type") != "lifespan.startup":
            return
        try:
            await self.ready()
        except Exception as exc:
            logger.error("rawloop.http: the session store cannot be opened: %s", exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        async with anyio.create_task_group() as group:
            for _ in range(max(self.dispatch_workers, 0)):
                group.start_soon(self._worker)
            await send({"type": "lifespan.startup.complete"})
            while (await receive()).get("type") != "lifespan.shutdown":
                pass
            group.cancel_scope.cancel()
        await self.store.close()
        self._ready = False
        await send({"type": "lifespan.shutdown.complete"})

    async def _worker(self) -> None:
        while True:
            try:
                await self.dispatcher.work()
            except Exception:  # a store hiccup must not end the worker for good
                logger.exception("rawloop.http: the dispatch worker failed; restarting it")
                await anyio.sleep(1.0)
