"""Durable dispatch: accepted work is stored first, then run once by a background worker.

``Dispatcher.accept`` stores a ``DispatchRequest`` (the store answers the
same dispatch for a re-sent idempotency key) before the caller answers 202.
``Dispatcher.work`` claims queued dispatches one at a time and runs each as a
turn of the instance's session (``run_turn``), renewing its lease while it
runs. A worker that loses its lease (it was too slow to renew, and another
worker took the dispatch over) cancels its run, so only one run's outcome
is ever recorded: a turn is stored only while its worker still holds the
dispatch, and an attempt that finds the turn of an earlier one (whose worker
died between storing it and saying so) answers from it instead of running
again. Work accepted by a process that died is claimed again
after a restart: at once when it was still queued, once its lease ran out
when it was running.

What a dispatch runs: ``input`` becomes the user message: a string as it
is; an object's ``user_instruction`` or ``message`` string; any other JSON
value as its JSON text. The factory sees the whole ``input`` as
``context.payload``.

Run tokens are credentials and are never stored: ``accept`` keeps a
dispatch's token in this process's memory until its run. A dispatch that
came with a token and is run after a restart fails with ``RunTokenLost``
(re-send it with a new idempotency key).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import anyio
import orjson

from ..core.errors import RawloopError
from ..loop.state import RunResult
from .agents import AgentContext, Agents
from .answers import failure, transcript
from .forward import proxied_run
from .sessions import DEFAULT_SESSION
from .store import DEFAULT_LEASE, Dispatch, DispatchRequest, SessionKey, SessionStore
from .turns import run_turn

__all__ = ["Dispatcher", "RunFailed", "RunTokenLost", "UnknownAgent", "message_of"]

logger = logging.getLogger("rawloop.http")


class RunTokenLost(RawloopError):
    """A dispatch needs the run token it came with, which a restart lost (tokens are never stored)."""


class RunFailed(RawloopError):
    """An earlier attempt of a dispatch stored a failed turn before its worker died."""


class UnknownAgent(RawloopError):
    """A dispatch names an agent the server does not serve."""


def message_of(value: Any) -> str:
    """The user message a dispatch's ``input`` stands for (see the module docstring)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for name in ("user_instruction", "message"):
            if isinstance(value.get(name), str):
                return str(value[name])
    return orjson.dumps(value).decode()


class Dispatcher:
    """Accepts dispatches into ``store`` and runs them with ``agents``.

    Args:
        store: where dispatches and sessions live.
        agents: what builds each run's loop.
        hooks: hooks added to every run.
        lease: seconds a claimed dispatch is held without renewal.
        poll: seconds between looks at the queue when idle (work accepted by
            another process is seen within it).
        forward_trace: post each run's trace events to its tool proxy.
    """

    def __init__(
        self,
        store: SessionStore,
        agents: Agents,
        *,
        hooks: Iterable[Any] = (),
        lease: float = DEFAULT_LEASE,
        poll: float = 0.5,
        forward_trace: bool = True,
    ) -> None:
        self.store = store
        self.agents = agents
        self.hooks = list(hooks)
        self.lease = lease
        self.poll = poll
        self.forward_trace = forward_trace
        self.worker_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._tokens: dict[str, str] = {}
        self._wake = anyio.Event()

    async def accept(
        self, request: DispatchRequest, token: str | None = None
    ) -> tuple[Dispatch, bool]:
        """Store ``request`` (queued) and return ``(dispatch, created)``."""
        request = _with_token_flag(request, token)
        dispatch, created = await self.store.enqueue(request)
        if created and token:
            self._tokens[dispatch.dispatch_id] = token
        self._wake.set()
        return dispatch, created

    async def work(self) -> None:
        """Run dispatches for ever: claim, run, repeat; wait when the queue is empty."""
        while True:
            if await self.run_next() is None:
                with anyio.move_on_after(self.poll):
                    await self._wake.wait()
                self._wake = anyio.Event()

    async def drain(self) -> list[Dispatch]:
        """Run every claimable dispatch now; the finished dispatches, in order."""
        finished = []
        while (done := await self.run_next()) is not None:
            finished.append(done)
        return finished

    async def run_next(self) -> Dispatch | None:
        """Claim and run one dispatch; its final state, or ``None`` when none was claimable."""
        claimed = await self.store.claim(self.worker_id, lease=self.lease)
        if claimed is None:
            return None
        await self._run(claimed)
        return await self.store.dispatch(claimed.dispatch_id)

    async def _run(self, dispatch: Dispatch) -> None:
        dispatch_id, worker = dispatch.dispatch_id, self.worker_id
        outcome: dict[str, Any] = {}
        async with anyio.create_task_group() as group:

            async def keep_lease() -> None:
                while True:
                    await anyio.sleep(max(self.lease / 3, 0.01))
                    if not await self.store.renew(dispatch_id, worker, lease=self.lease):
                        logger.warning("rawloop.http: dispatch %s was taken over", dispatch_id)
                        outcome["lost"] = True
                        group.cancel_scope.cancel()
                        return

            async def run() -> None:
                try:
                    outcome["result"] = await self._execute(dispatch)
                except Exception as exc:
                    outcome["error"] = exc
                group.cancel_scope.cancel()

            group.start_soon(keep_lease)
            group.start_soon(run)
        if outcome.get("lost"):
            return
        with anyio.CancelScope(shield=True):
            if "result" in outcome:
                result = outcome["result"]
                document = result if isinstance(result, dict) else transcript(result)
                await self.store.complete(dispatch_id, worker, document)
            else:
                error: Exception = outcome["error"]
                logger.warning("rawloop.http: dispatch %s failed: %s", dispatch_id, error)
                await self.store.fail(dispatch_id, worker, failure(error)["error"])

    async def _execute(self, dispatch: Dispatch) -> RunResult | dict[str, Any]:
        request = dispatch.request
        key = SessionKey(request.agent, request.id, request.session or DEFAULT_SESSION)
        if dispatch.attempts > 1:
            # An earlier attempt may have stored its turn and died before saying so.
            stored = await self._stored_outcome(dispatch, key)
            if stored is not None:
                return stored
        token = self._tokens.pop(dispatch.dispatch_id, None)
        if request.needs_token and token is None:
            raise RunTokenLost(
                f"dispatch {dispatch.dispatch_id} came with a run token, which is kept in "
                "memory only and was lost in a restart: send it again with a new idempotency key"
            )
        context = AgentContext(request.agent, request.id, key.name, payload=request.input)
        loop = await self.agents.loop_for(context)
        if loop is None:
            raise UnknownAgent(f"no agent named {request.agent!r}")
        message = message_of(request.input)
        worker = self.worker_id

        async def still_ours() -> bool:
            # Store the turn only while this worker holds the dispatch.
            return await self.store.renew(dispatch.dispatch_id, worker, lease=self.lease)

        with proxied_run(request.proxy_url, token, forward_trace=self.forward_trace) as hooks:
            return await run_turn(
                self.store,
                loop,
                key,
                message,
                hooks=[*self.hooks, *hooks],
                lock_lease=self.lease,
                turn_metadata={"dispatch_id": dispatch.dispatch_id},
                keep=still_ours,
            )

    async def _stored_outcome(self, dispatch: Dispatch, key: SessionKey) -> dict[str, Any] | None:
        """The answer of an attempt whose turn was stored, or ``None`` when none was."""
        turns = await self.store.turns(key)
        for position, turn in enumerate(turns):
            if turn.metadata.get("dispatch_id") != dispatch.dispatch_id:
                continue
            if turn.metadata.get("error"):
                raise RunFailed(f"an earlier attempt failed: {turn.metadata['error']}")
            items = [item for t in turns[: position + 1] for item in t.items]
            usage = turn.metadata.get("usage") or {}
            return {
                "final_response": turn.metadata.get("text") or "",
                "messages": items,
                "metadata": {
                    "model": turn.metadata.get("model"),
                    "total_input_tokens": usage.get("input_tokens", 0),
                    "total_output_tokens": usage.get("output_tokens", 0),
                    "stop_reason": turn.metadata.get("stop_reason"),
                    "recovered": True,
                },
            }
        return None


def _with_token_flag(request: DispatchRequest, token: str | None) -> DispatchRequest:
    if bool(token) == request.needs_token:
        return request
    return replace(request, needs_token=bool(token))
