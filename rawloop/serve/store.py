"""The ``SessionStore`` interface: sessions and the dispatch queue of the agent server.

One store holds what ``serve-agent`` must keep across requests, restarts and
worker processes:

Sessions
    A session is one conversation, named by ``SessionKey(agent, id, name)``.
    Each request adds one *turn*: the conversation items that turn added
    (the user message, the model's output items, the tool outputs), stored
    once, and the turn's trace records, in which each request body refers to
    the conversation instead of repeating it (see ``rawloop.serve.turns``).
    A session therefore grows with what is said, never quadratically, and
    ``SessionLimits`` caps its turns and bytes (``SessionFull`` past them).
    ``lock(key)`` serialises the turns of one session across every process
    using the same store; a lock whose holder died is taken over once its
    lease runs out.
The dispatch queue
    ``enqueue`` stores an accepted piece of background work before the
    server answers 202; ``claim`` hands each queued item to exactly one
    worker under a lease the worker ``renew``s while it runs; the item of a
    worker that died (its lease ran out) is claimed again. ``complete`` and
    ``fail`` record the outcome, only for the worker that holds the lease.
    An idempotency key makes a re-sent request a no-op: ``enqueue`` returns
    the dispatch it already has.

Implementations: ``SQLiteStore`` (``rawloop.serve.store_sqlite``, the
default, one host) and a PostgreSQL store for several hosts. Their shared
behaviour is pinned by ``tests/serve/test_store.py``, run against each.

Times are Unix seconds (``float``). Every JSON value given to a store comes
back equal (``==``) to what was given; a store never holds a secret (the
server keeps run tokens in memory only).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio
import orjson

from ..core.errors import RawloopError
from .sessions import DEFAULT_SESSION, check_name

__all__ = [
    "DEFAULT_LEASE",
    "DISPATCH_STATES",
    "Dispatch",
    "DispatchRequest",
    "DispatchStatus",
    "NewTurn",
    "SessionFull",
    "SessionInfo",
    "SessionKey",
    "SessionLimits",
    "SessionStore",
    "StoreError",
    "StoredTurn",
    "check_limits",
    "dispatch_from_row",
    "leased_lock",
    "session_filter",
]

#: Seconds a claimed dispatch or a session lock stays held without renewal.
DEFAULT_LEASE = 30.0

DispatchStatus = Literal["queued", "running", "done", "failed"]
DISPATCH_STATES: tuple[DispatchStatus, ...] = ("queued", "running", "done", "failed")


class StoreError(RawloopError):
    """The session store failed or holds something it cannot read (names the store and what)."""


class SessionFull(StoreError):
    """A turn would take a session past its ``SessionLimits``; the turn is not stored."""


@dataclass(frozen=True)
class SessionKey:
    """One conversation: agent name, instance id and session name (each checked as a name)."""

    agent: str
    id: str
    name: str = DEFAULT_SESSION

    def __post_init__(self) -> None:
        check_name(self.agent, "agent name")
        check_name(self.id, "id")
        check_name(self.name, "session")

    def __str__(self) -> str:
        return f"{self.agent}/{self.id}/{self.name}"

    def document(self) -> dict[str, str]:
        """``{"agent", "id", "name"}``: how answers and trace headers name the session."""
        return {"agent": self.agent, "id": self.id, "name": self.name}


@dataclass(frozen=True)
class SessionLimits:
    """Caps on one session; ``append_turn`` raises ``SessionFull`` past either."""

    max_turns: int = 10_000
    #: The sum of the stored turns' sizes (``StoredTurn.size``).
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class NewTurn:
    """A turn to append: what the conversation gained, and the run's trace records.

    ``items`` are the conversation items the turn added, in order. ``records``
    are the run's trace records (the header first) as ``rawloop.serve.turns``
    encodes them. ``metadata`` is free JSON (model, usage, stop reason, error).
    """

    items: Sequence[Mapping[str, Any]]
    records: Sequence[Mapping[str, Any]] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredTurn:
    """A turn as stored: ``index`` counts from 0 within its session."""

    key: SessionKey
    index: int
    items: list[dict[str, Any]]
    records: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: float
    #: Bytes the turn takes (its JSON), what ``SessionLimits.max_bytes`` counts.
    size: int


@dataclass(frozen=True)
class SessionInfo:
    """What ``sessions()`` lists: a session's key, turn count, size and times."""

    key: SessionKey
    turns: int
    size: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class DispatchRequest:
    """Background work to accept: run agent ``agent`` for instance ``id`` with ``input``.

    ``input`` is any JSON value. ``proxy_url`` is where remote tools call
    back; ``needs_token`` says a run token came with the request (the token
    itself is never stored). ``idempotency_key`` makes a re-sent request the
    same dispatch.
    """

    agent: str
    id: str
    input: Any
    session: str | None = None
    proxy_url: str | None = None
    needs_token: bool = False
    idempotency_key: str | None = None
    #: Free JSON the server keeps with the work (the envelope it came in, say).
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dispatch:
    """A dispatch as stored, with its state.

    ``status`` moves queued -> running -> done | failed; a running dispatch
    whose lease ran out is claimable again (``attempts`` counts the claims).
    """

    dispatch_id: str
    request: DispatchRequest
    status: DispatchStatus
    accepted_at: float
    attempts: int = 0
    worker: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        """The JSON ``GET /dispatches/{id}`` answers."""
        return {
            "dispatch_id": self.dispatch_id,
            "status": self.status,
            "agent": self.request.agent,
            "id": self.request.id,
            "session": self.request.session,
            "accepted_at": self.accepted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
        }


class SessionStore(abc.ABC):
    """Where sessions and dispatches live (see the module docstring).

    Use it as ``async with store:`` (``open`` then ``close``). Every method is
    safe to call from several tasks and several processes at once.
    """

    limits: SessionLimits = SessionLimits()

    async def __aenter__(self) -> SessionStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema if needed (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections (idempotent)."""

    # -- sessions -------------------------------------------------------------------

    @abc.abstractmethod
    async def append_turn(self, key: SessionKey, turn: NewTurn) -> StoredTurn:
        """Store ``turn`` as the session's next turn (created on first use), atomically.

        Raises:
            SessionFull: the session would pass ``self.limits``.
        """

    @abc.abstractmethod
    async def turns(
        self, key: SessionKey, *, start: int = 0, stop: int | None = None
    ) -> list[StoredTurn]:
        """The session's turns ``start <= index < stop``, oldest first ([] for none)."""

    @abc.abstractmethod
    async def session(self, key: SessionKey) -> SessionInfo | None:
        """The session's summary, or ``None`` when it has no turn."""

    @abc.abstractmethod
    async def sessions(self, agent: str | None = None, id: str | None = None) -> list[SessionInfo]:
        """Every session (of ``agent``, of instance ``id``), ordered by agent, id, name."""

    @abc.abstractmethod
    def lock(
        self, key: SessionKey, *, lease: float = DEFAULT_LEASE
    ) -> AbstractAsyncContextManager[None]:
        """Hold the session's lock across processes while the block runs.

        Waits while another holder has it. The lock is kept alive while held;
        one whose holder died is free once ``lease`` seconds passed without
        renewal.
        """

    async def history(self, key: SessionKey) -> list[dict[str, Any]]:
        """The session's conversation: every turn's items, in order."""
        return [item for turn in await self.turns(key) for item in turn.items]

    async def export(self, key: SessionKey, turn: int | None = None) -> bytes:
        """The session as a rawloop trace (one run per turn), or turn ``turn`` alone
        (negative counts from the end), which replays on its own.

        Raises:
            StoreError: no such session, or no such turn.
        """
        from .turns import session_trace, turn_trace

        turns = await self.turns(key)
        if not turns:
            raise StoreError(f"no session {key} in the store")
        if turn is None:
            return session_trace(turns)
        index = turn if turn >= 0 else len(turns) + turn
        if not 0 <= index < len(turns):
            raise StoreError(f"session {key} has turns 0 to {len(turns) - 1}, not {turn}")
        return turn_trace(turns, index)

    # -- the dispatch queue ------------------------------------------------------------

    @abc.abstractmethod
    async def enqueue(self, request: DispatchRequest) -> tuple[Dispatch, bool]:
        """Store ``request`` as a queued dispatch; ``(dispatch, True)``.

        With an ``idempotency_key`` already used for the same agent and id,
        nothing is stored and the existing dispatch comes back: ``(it, False)``.
        """

    @abc.abstractmethod
    async def claim(self, worker: str, *, lease: float = DEFAULT_LEASE) -> Dispatch | None:
        """Take the oldest claimable dispatch for ``worker``, or ``None``.

        Claimable: queued, or running with its lease run out (a lease of 0
        runs out at once). The dispatch becomes running, held by ``worker``
        until ``lease`` seconds from now; two claims never get the same
        dispatch while its lease holds.
        """

    @abc.abstractmethod
    async def renew(self, dispatch_id: str, worker: str, *, lease: float = DEFAULT_LEASE) -> bool:
        """Extend ``worker``'s lease; False when it no longer holds the dispatch."""

    @abc.abstractmethod
    async def complete(self, dispatch_id: str, worker: str, result: Any) -> bool:
        """Mark done with ``result`` (JSON); False (nothing changed) unless ``worker`` holds it."""

    @abc.abstractmethod
    async def fail(self, dispatch_id: str, worker: str, error: Mapping[str, Any]) -> bool:
        """Mark failed with ``error`` (JSON object); False unless ``worker`` holds it."""

    @abc.abstractmethod
    async def dispatch(self, dispatch_id: str) -> Dispatch | None:
        """The dispatch, or ``None`` when there is no such id."""


# -- for implementations -----------------------------------------------------------


def check_limits(limits: SessionLimits, key: SessionKey, turns: int, size: int, add: int) -> None:
    """Raise ``SessionFull`` when a turn of ``add`` bytes would pass ``limits``.

    ``turns`` and ``size`` are what the session holds before the turn.
    """
    if turns + 1 > limits.max_turns:
        raise SessionFull(f"session {key} has {turns} turns, the most it may hold")
    if size + add > limits.max_bytes:
        raise SessionFull(
            f"session {key} holds {size} bytes; a turn of {add} bytes would pass its "
            f"limit of {limits.max_bytes}"
        )


#: The dispatch columns in the order ``dispatch_from_row`` reads them.
DISPATCH_COLUMNS = (
    "dispatch_id, agent, id, session, input, proxy_url, needs_token, idempotency_key, metadata, "
    "status, accepted_at, attempts, worker, lease_until, started_at, finished_at, result, error"
)


def dispatch_from_row(row: Sequence[Any]) -> Dispatch:
    """A ``Dispatch`` from a row of ``DISPATCH_COLUMNS`` (JSON columns as orjson bytes)."""
    request = DispatchRequest(
        agent=row[1],
        id=row[2],
        session=row[3],
        input=orjson.loads(row[4]),
        proxy_url=row[5],
        needs_token=bool(row[6]),
        idempotency_key=row[7],
        metadata=orjson.loads(row[8]),
    )
    return Dispatch(
        dispatch_id=row[0],
        request=request,
        status=row[9],
        accepted_at=float(row[10]),
        attempts=int(row[11]),
        worker=row[12],
        lease_until=row[13],
        started_at=row[14],
        finished_at=row[15],
        result=orjson.loads(row[16]) if row[16] is not None else None,
        error=orjson.loads(row[17]) if row[17] is not None else None,
    )


@asynccontextmanager
async def leased_lock(
    take: Callable[[], Awaitable[bool]],
    renew: Callable[[], Awaitable[object]],
    release: Callable[[], Awaitable[object]],
    lease: float,
) -> AsyncIterator[None]:
    """Hold a lock row for the block: the part every store's ``lock`` shares.

    Polls ``take`` (with backoff) until it succeeds, calls ``renew`` every third
    of ``lease`` while the block runs (a lease of 0 is never renewed), and
    ``release`` at the end, even when cancelled.
    """
    delay = 0.005
    while not await take():
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.1)
    # The body's exception is raised after the group, not wrapped in an exception group.
    raised: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:

            async def keep_alive() -> None:
                while True:
                    await anyio.sleep(max(lease / 3, 0.01))
                    await renew()

            if lease > 0:
                group.start_soon(keep_alive)
            try:
                yield
            except BaseException as exc:
                raised = exc
            finally:
                group.cancel_scope.cancel()
        if raised is not None:
            raise raised
    finally:
        with anyio.CancelScope(shield=True):
            await release()


def session_filter(
    mark: str, agent: str | None = None, id: str | None = None, name: str | None = None
) -> tuple[str, tuple[str, ...]]:
    """A SQL condition on the sessions' key columns and its arguments.

    ``mark`` is the driver's parameter placeholder (``?`` or ``%s``); a column
    whose value is ``None`` is not filtered on.
    """
    given = [(column, value) for column, value in (("agent", agent), ("id", id), ("name", name))]
    where = [f"{column}={mark}" for column, value in given if value is not None]
    return " AND ".join(where) or "TRUE", tuple(v for _, v in given if v is not None)
