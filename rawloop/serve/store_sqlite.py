"""``SQLiteStore``: the default ``SessionStore``, one SQLite file (standard library ``sqlite3``).

Strategy: the database is in WAL mode, so readers never wait for the writer
and several worker processes of one host (``uvicorn --workers N``) can share
the file. Every write is one short ``BEGIN IMMEDIATE`` transaction, which
takes SQLite's write lock at once: a read-then-write (the next turn index,
a claim) can never interleave with another process's. No transaction is
held while a model runs: the per-session lock is a row (``locks``) holding
its holder and a lease, renewed while held, so a process that dies frees its
sessions once the lease runs out.

Calls run in worker threads (``anyio.to_thread``) on one connection per
store, one call at a time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson

from .store import (
    DEFAULT_LEASE,
    DISPATCH_COLUMNS,
    Dispatch,
    DispatchRequest,
    NewTurn,
    SessionInfo,
    SessionKey,
    SessionLimits,
    SessionStore,
    StoredTurn,
    StoreError,
    check_limits,
    dispatch_from_row,
    leased_lock,
    session_filter,
)

__all__ = ["SQLiteStore", "default_store_path"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    agent TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    turns INTEGER NOT NULL, size INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (agent, id, name)
);
CREATE TABLE IF NOT EXISTS turns (
    agent TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, idx INTEGER NOT NULL,
    items BLOB NOT NULL, records BLOB NOT NULL, metadata BLOB NOT NULL,
    created_at REAL NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (agent, id, name, idx)
);
CREATE TABLE IF NOT EXISTS locks (
    agent TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    holder TEXT NOT NULL, lease_until REAL NOT NULL,
    PRIMARY KEY (agent, id, name)
);
CREATE TABLE IF NOT EXISTS dispatches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dispatch_id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL, id TEXT NOT NULL, session TEXT,
    input BLOB NOT NULL, proxy_url TEXT, needs_token INTEGER NOT NULL,
    idempotency_key TEXT, metadata BLOB NOT NULL,
    status TEXT NOT NULL, accepted_at REAL NOT NULL, attempts INTEGER NOT NULL,
    worker TEXT, lease_until REAL, started_at REAL, finished_at REAL,
    result BLOB, error BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS dispatches_idempotency
    ON dispatches (agent, id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS dispatches_claimable ON dispatches (status, seq);
"""


def default_store_path() -> Path:
    """Where sessions live when nothing else is said.

    ``$RAWLOOP_HOME/sessions.db`` when ``RAWLOOP_HOME`` is set, else
    ``$XDG_DATA_HOME/rawloop/sessions.db`` (``~/.local/share/rawloop/sessions.db``).
    """
    home = os.environ.get("RAWLOOP_HOME")
    if home:
        return Path(home).expanduser() / "sessions.db"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "rawloop" / "sessions.db"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class SQLiteStore(SessionStore):
    """Sessions and dispatches in the SQLite file ``path`` (created with its folder).

    Args:
        path: the database file; ``default_store_path()`` when ``None``.
        limits: caps on one session.
        busy_timeout: seconds a write waits for another process's transaction.
        clock: the time source (Unix seconds), for leases and timestamps.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        limits: SessionLimits | None = None,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.limits = limits or SessionLimits()
        self.busy_timeout = busy_timeout
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self._guard = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> None:
        if self._db is None:
            await self._call(lambda db: None)

    async def close(self) -> None:
        with self._guard:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the session store {self.path}: {exc}") from None
        return db

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self._guard:
                if self._db is None:
                    self._db = self._connect()
                try:
                    return work(self._db)
                except sqlite3.Error as exc:
                    raise StoreError(f"session store {self.path}: {exc}") from None

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    # -- sessions -----------------------------------------------------------------

    async def append_turn(self, key: SessionKey, turn: NewTurn) -> StoredTurn:
        items = _dumps(list(turn.items))
        records = _dumps(list(turn.records))
        metadata = _dumps(dict(turn.metadata))
        size = len(items) + len(records) + len(metadata)
        now = self.clock()

        def work(db: sqlite3.Connection) -> StoredTurn:
            with _transaction(db):
                row = db.execute(
                    "SELECT turns, size FROM sessions WHERE agent=? AND id=? AND name=?",
                    (key.agent, key.id, key.name),
                ).fetchone()
                count, total = (row[0], row[1]) if row else (0, 0)
                check_limits(self.limits, key, count, total, size)
                db.execute(
                    "INSERT INTO turns VALUES (?,?,?,?,?,?,?,?,?)",
                    (key.agent, key.id, key.name, count, items, records, metadata, now, size),
                )
                db.execute(
                    "INSERT INTO sessions VALUES (?,?,?,1,?,?,?) ON CONFLICT (agent, id, name) "
                    "DO UPDATE SET turns=turns+1, size=size+excluded.size, updated_at=excluded.updated_at",
                    (key.agent, key.id, key.name, size, now, now),
                )
            return StoredTurn(
                key,
                count,
                orjson.loads(items),
                orjson.loads(records),
                orjson.loads(metadata),
                now,
                size,
            )

        return await self._call(work)

    async def turns(
        self, key: SessionKey, *, start: int = 0, stop: int | None = None
    ) -> list[StoredTurn]:
        def work(db: sqlite3.Connection) -> list[StoredTurn]:
            rows = db.execute(
                "SELECT idx, items, records, metadata, created_at, size FROM turns "
                "WHERE agent=? AND id=? AND name=? AND idx>=? AND idx<? ORDER BY idx",
                (key.agent, key.id, key.name, start, stop if stop is not None else 2**62),
            ).fetchall()
            return [
                StoredTurn(
                    key,
                    int(r[0]),
                    orjson.loads(r[1]),
                    orjson.loads(r[2]),
                    orjson.loads(r[3]),
                    float(r[4]),
                    int(r[5]),
                )
                for r in rows
            ]

        return await self._call(work)

    async def session(self, key: SessionKey) -> SessionInfo | None:
        found = await self._list(*session_filter("?", key.agent, key.id, key.name))
        return found[0] if found else None

    async def sessions(self, agent: str | None = None, id: str | None = None) -> list[SessionInfo]:
        return await self._list(*session_filter("?", agent, id))

    async def _list(self, where: str, args: tuple[Any, ...]) -> list[SessionInfo]:
        def work(db: sqlite3.Connection) -> list[SessionInfo]:
            rows = db.execute(
                "SELECT agent, id, name, turns, size, created_at, updated_at FROM sessions "
                f"WHERE {where} ORDER BY agent, id, name",
                args,
            ).fetchall()
            return [
                SessionInfo(SessionKey(r[0], r[1], r[2]), int(r[3]), int(r[4]), r[5], r[6])
                for r in rows
            ]

        return await self._call(work)

    def lock(
        self, key: SessionKey, *, lease: float = DEFAULT_LEASE
    ) -> AbstractAsyncContextManager[None]:
        return self._lock(key, lease)

    @asynccontextmanager
    async def _lock(self, key: SessionKey, lease: float) -> AsyncIterator[None]:
        holder = f"{os.getpid()}-{uuid.uuid4().hex}"
        ident = (key.agent, key.id, key.name)

        def take(db: sqlite3.Connection) -> bool:
            now = self.clock()
            with _transaction(db):
                row = db.execute(
                    "SELECT holder, lease_until FROM locks WHERE agent=? AND id=? AND name=?", ident
                ).fetchone()
                if row is not None and row[0] != holder and row[1] > now:
                    return False
                db.execute(
                    "INSERT OR REPLACE INTO locks VALUES (?,?,?,?,?)", (*ident, holder, now + lease)
                )
                return True

        def renew(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE locks SET lease_until=? WHERE agent=? AND id=? AND name=? AND holder=?",
                (self.clock() + lease, *ident, holder),
            )

        def release(db: sqlite3.Connection) -> None:
            db.execute(
                "DELETE FROM locks WHERE agent=? AND id=? AND name=? AND holder=?", (*ident, holder)
            )

        async with leased_lock(
            lambda: self._call(take), lambda: self._call(renew), lambda: self._call(release), lease
        ):
            yield

    # -- the dispatch queue -------------------------------------------------------

    async def enqueue(self, request: DispatchRequest) -> tuple[Dispatch, bool]:
        dispatch_id = "dsp_" + uuid.uuid4().hex
        now = self.clock()
        values = (
            dispatch_id,
            request.agent,
            request.id,
            request.session,
            _dumps(request.input),
            request.proxy_url,
            int(request.needs_token),
            request.idempotency_key,
            _dumps(dict(request.metadata)),
            "queued",
            now,
            0,
        )

        def work(db: sqlite3.Connection) -> tuple[Dispatch, bool]:
            with _transaction(db):
                if request.idempotency_key is not None:
                    row = db.execute(
                        f"SELECT {DISPATCH_COLUMNS} FROM dispatches "
                        "WHERE agent=? AND id=? AND idempotency_key=?",
                        (request.agent, request.id, request.idempotency_key),
                    ).fetchone()
                    if row is not None:
                        return dispatch_from_row(row), False
                db.execute(
                    "INSERT INTO dispatches (dispatch_id, agent, id, session, input, proxy_url, "
                    "needs_token, idempotency_key, metadata, status, accepted_at, attempts) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    values,
                )
                return _select(db, dispatch_id), True

        return await self._call(work)

    async def claim(self, worker: str, *, lease: float = DEFAULT_LEASE) -> Dispatch | None:
        def work(db: sqlite3.Connection) -> Dispatch | None:
            now = self.clock()
            with _transaction(db):
                row = db.execute(
                    "SELECT dispatch_id, started_at FROM dispatches WHERE status='queued' "
                    "OR (status='running' AND lease_until<=?) ORDER BY seq LIMIT 1",
                    (now,),
                ).fetchone()
                if row is None:
                    return None
                db.execute(
                    "UPDATE dispatches SET status='running', worker=?, lease_until=?, "
                    "attempts=attempts+1, started_at=? WHERE dispatch_id=?",
                    (worker, now + lease, row[1] if row[1] is not None else now, row[0]),
                )
                return _select(db, row[0])

        return await self._call(work)

    async def renew(self, dispatch_id: str, worker: str, *, lease: float = DEFAULT_LEASE) -> bool:
        return await self._update(
            "UPDATE dispatches SET lease_until=? WHERE dispatch_id=? AND worker=? "
            "AND status='running'",
            lambda: (self.clock() + lease, dispatch_id, worker),
        )

    async def complete(self, dispatch_id: str, worker: str, result: Any) -> bool:
        data = _dumps(result)
        return await self._update(
            "UPDATE dispatches SET status='done', result=?, finished_at=?, lease_until=NULL "
            "WHERE dispatch_id=? AND worker=? AND status='running'",
            lambda: (data, self.clock(), dispatch_id, worker),
        )

    async def fail(self, dispatch_id: str, worker: str, error: Mapping[str, Any]) -> bool:
        data = _dumps(dict(error))
        return await self._update(
            "UPDATE dispatches SET status='failed', error=?, finished_at=?, lease_until=NULL "
            "WHERE dispatch_id=? AND worker=? AND status='running'",
            lambda: (data, self.clock(), dispatch_id, worker),
        )

    async def _update(self, sql: str, args: Callable[[], tuple[Any, ...]]) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return db.execute(sql, args()).rowcount == 1

        return await self._call(work)

    async def dispatch(self, dispatch_id: str) -> Dispatch | None:
        def work(db: sqlite3.Connection) -> Dispatch | None:
            row = db.execute(
                f"SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id=?", (dispatch_id,)
            ).fetchone()
            return dispatch_from_row(row) if row is not None else None

        return await self._call(work)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


def _select(db: sqlite3.Connection, dispatch_id: str) -> Dispatch:
    row = db.execute(
        f"SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE dispatch_id=?", (dispatch_id,)
    ).fetchone()
    return dispatch_from_row(row)
