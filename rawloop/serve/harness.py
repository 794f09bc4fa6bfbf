"""Drive an agent from code, with the server's store and hooks: ``init_agent`` and ``dispatch``.

::

    from rawloop.agents import init_agent

    harness = await init_agent(make_support, id="cust-42")
    session = harness.session("billing")
    result = await session.prompt("Where is my refund?")   # a RunResult

``harness.session(name)`` is a named conversation of that instance, kept in
the store (the default SQLite file unless ``store=`` is given), exactly as
``POST /agents/{name}/{id}`` keeps it: a server and a script sharing the
store continue each other's sessions. ``await harness.dispatch(input)``
queues background work as ``POST .../dispatch`` does; ``await
harness.drain()`` runs what is queued (a server runs it in its workers).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ..core.errors import ConfigurationError
from ..loop.loop import Loop
from ..loop.state import RunResult
from .agents import AgentContext, Agents, AgentTarget, Profile
from .dispatcher import Dispatcher
from .sessions import DEFAULT_SESSION, check_name
from .store import Dispatch, DispatchRequest, SessionKey, SessionStore
from .store_postgres import PostgresStore, is_postgres_url
from .store_sqlite import SQLiteStore
from .turns import run_turn

__all__ = ["AgentHarness", "AgentSession", "dispatch", "init_agent", "open_store"]


def open_store(store: SessionStore | str | Path | None) -> SessionStore:
    """The store ``store`` names.

    A ``SessionStore`` is used as it is; a ``postgresql://`` URL gives a
    ``PostgresStore`` (``pip install 'rawloop[postgres]'``); any other string or
    path a ``SQLiteStore`` there. ``None`` reads ``RAWLOOP_STORE`` (either form),
    else the default SQLite file.
    """
    if isinstance(store, SessionStore):
        return store
    if store is None:
        store = os.environ.get("RAWLOOP_STORE") or None
    if isinstance(store, str) and is_postgres_url(store):
        return PostgresStore(store)
    return SQLiteStore(store)


class AgentSession:
    """One named conversation of an agent instance; ``await session.prompt(text)``."""

    def __init__(self, harness: AgentHarness, name: str) -> None:
        self.harness = harness
        self.key = SessionKey(harness.name, harness.id, name)  # checks the name
        self.name = self.key.name

    def __repr__(self) -> str:
        return f"<AgentSession {self.key}>"

    def __await__(self) -> Generator[Any, None, AgentSession]:
        # ``session = await harness.session("billing")`` reads well too.
        if False:  # pragma: no cover - makes this a generator
            yield
        return self

    async def prompt(
        self, text: str | list[dict[str, Any]], *, payload: Any = None, hooks: Iterable[Any] = ()
    ) -> RunResult:
        """One turn: the agent answers ``text`` with the session's history; the turn is stored."""
        harness = self.harness
        context = AgentContext(harness.name, harness.id, self.name, harness.env, payload)
        loop = await harness.loop_for(context)
        await harness.open()
        return await run_turn(harness.store, loop, self.key, text, hooks=[*harness.hooks, *hooks])

    async def history(self) -> list[dict[str, Any]]:
        """The conversation so far (every turn's items)."""
        await self.harness.open()
        return await self.harness.store.history(self.key)

    async def export(self, turn: int | None = None) -> bytes:
        """The session as a trace (every turn), or turn ``turn`` alone (which replays)."""
        await self.harness.open()
        return await self.harness.store.export(self.key, turn)


class AgentHarness:
    """An agent instance (``name``, ``id``) over a store; make it with ``init_agent``."""

    def __init__(
        self,
        agents: Agents,
        name: str,
        id: str,
        store: SessionStore,
        *,
        hooks: Iterable[Any] = (),
        env: Mapping[str, str] | None = None,
        payload: Any = None,
    ) -> None:
        self.agents = agents
        self.name = check_name(name, "agent name")
        self.id = check_name(id, "id")
        self.store = store
        self.hooks = list(hooks)
        self.env: Mapping[str, str] = dict(os.environ) if env is None else env
        self.payload = payload
        self.dispatcher = Dispatcher(store, agents, hooks=self.hooks)
        self._opened = False

    def __repr__(self) -> str:
        return f"<AgentHarness {self.name}/{self.id} store={self.store!r}>"

    async def open(self) -> None:
        """Open the store (done by every method that needs it)."""
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def aclose(self) -> None:
        """Close the store."""
        if self._opened:
            await self.store.close()
            self._opened = False

    async def __aenter__(self) -> AgentHarness:
        await self.open()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def session(self, name: str = DEFAULT_SESSION) -> AgentSession:
        """The named conversation ``name`` of this instance."""
        return AgentSession(self, name)

    async def loop_for(self, context: AgentContext) -> Loop:
        loop = await self.agents.loop_for(context)
        if loop is None:
            raise ConfigurationError(f"no agent named {context.name!r}")
        return loop

    async def dispatch(
        self,
        input: Any,
        *,
        session: str | None = None,
        idempotency_key: str | None = None,
        wait: bool = False,
    ) -> Dispatch:
        """Queue ``input`` as background work for this instance; the receipt (or, with
        ``wait``, the finished dispatch: everything queued is run first)."""
        await self.open()
        if session is not None:
            check_name(session, "session")
        receipt, _ = await self.dispatcher.accept(
            DispatchRequest(
                agent=self.name,
                id=self.id,
                input=input,
                session=session,
                idempotency_key=idempotency_key,
            )
        )
        if not wait:
            return receipt
        await self.dispatcher.drain()
        done = await self.store.dispatch(receipt.dispatch_id)
        assert done is not None
        return done

    async def drain(self) -> list[Dispatch]:
        """Run every queued dispatch of the store now; the finished ones."""
        await self.open()
        return await self.dispatcher.drain()


def _agents_of(target: AgentTarget | Agents, name: str, profile: Profile | None) -> Agents:
    if isinstance(target, Agents):
        return target
    return Agents({name: target}, profile=profile)


def _name_of(target: Any) -> str:
    name = getattr(target, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else "agent"


async def init_agent(
    target: AgentTarget | Agents,
    *,
    id: str,
    name: str | None = None,
    store: SessionStore | str | Path | None = None,
    profile: Profile | None = None,
    hooks: Iterable[Any] = (),
    env: Mapping[str, str] | None = None,
    payload: Any = None,
) -> AgentHarness:
    """A harness for instance ``id`` of the agent ``target`` builds (a Loop, a Profile, a factory).

    ``name`` defaults to the factory's ``__name__`` (``"agent"`` otherwise);
    ``store`` to the default SQLite file; ``profile`` is what factories'
    mappings extend; ``hooks`` are added to every run.
    """
    agent_name = name or _name_of(target)
    harness = AgentHarness(
        _agents_of(target, agent_name, profile),
        agent_name,
        id,
        open_store(store),
        hooks=hooks,
        env=env,
        payload=payload,
    )
    await harness.open()
    return harness


async def dispatch(
    target: AgentTarget | Agents | AgentHarness,
    *,
    id: str | None = None,
    input: Any,
    session: str | None = None,
    name: str | None = None,
    store: SessionStore | str | Path | None = None,
    idempotency_key: str | None = None,
    wait: bool = False,
) -> Dispatch:
    """Queue ``input`` for agent ``target``'s instance ``id``; the in-code twin of
    ``POST /agents/{name}/{id}/dispatch`` (see ``AgentHarness.dispatch``)."""
    if isinstance(target, AgentHarness):
        return await target.dispatch(
            input, session=session, idempotency_key=idempotency_key, wait=wait
        )
    if id is None:
        raise ConfigurationError("dispatch() needs id= (the agent instance)")
    async with await init_agent(target, id=id, name=name, store=store) as harness:
        return await harness.dispatch(
            input, session=session, idempotency_key=idempotency_key, wait=wait
        )
