"""``PostgresStore``: sessions and the dispatch queue in PostgreSQL, shared by many hosts.

Strategy: the same tables as ``SQLiteStore``, and the same rule that no
transaction is held while a model runs. Each write is one short transaction;
what SQLite gets from its single writer, PostgreSQL gets from row locks:

* a turn's index comes from its session row, read ``FOR UPDATE``, so two
  processes appending to one session queue on that row and get consecutive
  indices;
* a claim picks the oldest claimable dispatch ``FOR UPDATE SKIP LOCKED``, so
  two workers never take the same one and never wait on each other;
* the per-session lock is a row with a holder and a lease (as in SQLite),
  renewed while held: a holder on a host that died frees its sessions once
  the lease runs out, whatever the state of its connection.

Leases and timestamps are read from the database's clock, the one clock all
hosts share. The schema is versioned (``rawloop_schema``) and migrated on
``open()`` under an advisory lock, so several processes starting at once
migrate it once.

psycopg 3 is an optional dependency: ``pip install 'rawloop[postgres]'``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
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

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "PostgresStore", "is_postgres_url"]

T = TypeVar("T")

#: Each entry migrates the schema from its index to the next version.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE rawloop_sessions (
        agent TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
        turns INTEGER NOT NULL, size BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (agent, id, name)
    );
    CREATE TABLE rawloop_turns (
        agent TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, idx INTEGER NOT NULL,
        items BYTEA NOT NULL, records BYTEA NOT NULL, metadata BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL,
        PRIMARY KEY (agent, id, name, idx)
    );
    CREATE TABLE rawloop_locks (
        agent TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
        holder TEXT NOT NULL, lease_until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (agent, id, name)
    );
    CREATE TABLE rawloop_dispatches (
        seq BIGSERIAL PRIMARY KEY,
        dispatch_id TEXT NOT NULL UNIQUE,
        agent TEXT NOT NULL, id TEXT NOT NULL, session TEXT,
        input BYTEA NOT NULL, proxy_url TEXT, needs_token BOOLEAN NOT NULL,
        idempotency_key TEXT, metadata BYTEA NOT NULL,
        status TEXT NOT NULL, accepted_at DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL,
        worker TEXT, lease_until DOUBLE PRECISION, started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION, result BYTEA, error BYTEA
    );
    CREATE UNIQUE INDEX rawloop_dispatches_idempotency
        ON rawloop_dispatches (agent, id, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX rawloop_dispatches_claimable ON rawloop_dispatches (status, seq);
    """,
)

#: The version ``open()`` migrates a database to.
SCHEMA_VERSION = len(_MIGRATIONS)

#: Any fixed number: the advisory lock under which ``open()`` migrates.
_MIGRATION_LOCK = 0x7261776C6F6F70  # "rawloop"

_NOW = "extract(epoch from clock_timestamp())"


def is_postgres_url(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return target.startswith(("postgresql://", "postgres://"))


def _without_password(url: str) -> str:
    """The URL as it may appear in an error or a log: no password in it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "a postgresql:// store needs psycopg 3: pip install 'rawloop[postgres]'"
        ) from None
    return psycopg


class PostgresStore(SessionStore):
    """Sessions and dispatches in the PostgreSQL database at ``url``.

    Args:
        url: a libpq connection URL, ``postgresql://user:pass@host:port/db``
            (the password never appears in an error or a log).
        limits: caps on one session.
        connect_timeout: seconds to wait for the server when connecting.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        limits: SessionLimits | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        url = url or os.environ.get("RAWLOOP_STORE", "")
        if not is_postgres_url(url):
            raise StoreError(
                f"not a PostgreSQL URL: {_without_password(url)!r} (postgresql://host/db)"
            )
        self.url = url
        self.limits = limits or SessionLimits()
        self.connect_timeout = connect_timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # One connection, one statement at a time: psycopg connections are not
        # for concurrent use, and the store's transactions are all short.
        self._busy = anyio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({_without_password(self.url)!r})"

    # -- plumbing -------------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None:
            await self._call(lambda conn: _noop())

    async def close(self) -> None:
        async with self._busy:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        pg = _import_psycopg()
        try:
            conn: psycopg.AsyncConnection[Any] = await pg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))
            )
        except pg.Error as exc:
            raise StoreError(f"cannot open the session store {self!r}: {_message(exc)}") from None
        try:
            await self._migrate(conn)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        return conn

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Bring the schema to ``SCHEMA_VERSION``, once, whoever else starts at the same time."""
        pg = _import_psycopg()
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS rawloop_schema (version INTEGER NOT NULL)"
                )
                row = await (await conn.execute("SELECT version FROM rawloop_schema")).fetchone()
                version = int(row[0]) if row else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self!r}: the schema is version {version}, newer than this rawloop "
                        f"reads ({SCHEMA_VERSION}); upgrade rawloop"
                    )
                for migration in _MIGRATIONS[version:]:
                    await conn.execute(migration)
                if row is None:
                    await conn.execute("INSERT INTO rawloop_schema VALUES (%s)", (SCHEMA_VERSION,))
                else:
                    await conn.execute("UPDATE rawloop_schema SET version=%s", (SCHEMA_VERSION,))
        except pg.Error as exc:
            raise StoreError(f"cannot open the session store {self!r}: {_message(exc)}") from None

    async def _call(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        pg = _import_psycopg()
        async with self._busy:
            if self._conn is None or self._conn.closed:
                self._conn = await self._connect()
            try:
                return await work(self._conn)
            except pg.Error as exc:
                raise StoreError(f"session store {self!r}: {_message(exc)}") from None

    # -- sessions -----------------------------------------------------------------

    async def append_turn(self, key: SessionKey, turn: NewTurn) -> StoredTurn:
        items = _dumps(list(turn.items))
        records = _dumps(list(turn.records))
        metadata = _dumps(dict(turn.metadata))
        size = len(items) + len(records) + len(metadata)
        ident = (key.agent, key.id, key.name)

        async def work(conn: psycopg.AsyncConnection[Any]) -> StoredTurn:
            async with conn.transaction():
                # One upsert counts the turn and locks the session row until the
                # commit: two processes appending to one session queue here.
                cursor = await conn.execute(
                    "INSERT INTO rawloop_sessions AS s "
                    f"VALUES (%s,%s,%s,1,%s,{_NOW},{_NOW}) ON CONFLICT (agent, id, name) "
                    "DO UPDATE SET turns=s.turns+1, size=s.size+excluded.size, "
                    "updated_at=excluded.updated_at RETURNING s.turns, s.size, s.updated_at",
                    (*ident, size),
                )
                count, total, now = await _one(cursor)
                index = int(count) - 1
                # Raising here rolls the count back with the transaction.
                check_limits(self.limits, key, index, int(total) - size, size)
                await conn.execute(
                    "INSERT INTO rawloop_turns VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (*ident, index, items, records, metadata, now, size),
                )
            return StoredTurn(
                key,
                index,
                orjson.loads(items),
                orjson.loads(records),
                orjson.loads(metadata),
                float(now),
                size,
            )

        return await self._call(work)

    async def turns(
        self, key: SessionKey, *, start: int = 0, stop: int | None = None
    ) -> list[StoredTurn]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[StoredTurn]:
            cursor = await conn.execute(
                "SELECT idx, items, records, metadata, created_at, size FROM rawloop_turns "
                "WHERE agent=%s AND id=%s AND name=%s AND idx>=%s AND idx<%s ORDER BY idx",
                (key.agent, key.id, key.name, start, stop if stop is not None else 2**31 - 1),
                binary=True,  # bytea as bytes, not hex text
            )
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
                for r in await cursor.fetchall()
            ]

        return await self._call(work)

    async def history(self, key: SessionKey) -> list[dict[str, Any]]:
        # What every turn reads first: only the items, not the trace records.
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cursor = await conn.execute(
                "SELECT items FROM rawloop_turns WHERE agent=%s AND id=%s AND name=%s ORDER BY idx",
                (key.agent, key.id, key.name),
                binary=True,
            )
            return [item for (items,) in await cursor.fetchall() for item in orjson.loads(items)]

        return await self._call(work)

    async def session(self, key: SessionKey) -> SessionInfo | None:
        found = await self._list(*session_filter("%s", key.agent, key.id, key.name))
        return found[0] if found else None

    async def sessions(self, agent: str | None = None, id: str | None = None) -> list[SessionInfo]:
        return await self._list(*session_filter("%s", agent, id))

    async def _list(self, where: str, args: Sequence[Any]) -> list[SessionInfo]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[SessionInfo]:
            cursor = await conn.execute(
                "SELECT agent, id, name, turns, size, created_at, updated_at "
                f"FROM rawloop_sessions WHERE turns > 0 AND {where} ORDER BY agent, id, name",
                args,
            )
            return [
                SessionInfo(SessionKey(r[0], r[1], r[2]), int(r[3]), int(r[4]), r[5], r[6])
                for r in await cursor.fetchall()
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

        async def take(conn: psycopg.AsyncConnection[Any]) -> bool:
            # Taken when free, when its lease ran out, or when already ours.
            cursor = await conn.execute(
                f"INSERT INTO rawloop_locks VALUES (%s,%s,%s,%s,{_NOW} + %s) "
                "ON CONFLICT (agent, id, name) DO UPDATE "
                "SET holder=excluded.holder, lease_until=excluded.lease_until "
                f"WHERE rawloop_locks.lease_until <= {_NOW} OR rawloop_locks.holder=excluded.holder",
                (*ident, holder, lease),
            )
            return cursor.rowcount == 1

        async def renew(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                f"UPDATE rawloop_locks SET lease_until={_NOW} + %s "
                "WHERE agent=%s AND id=%s AND name=%s AND holder=%s",
                (lease, *ident, holder),
            )

        async def release(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "DELETE FROM rawloop_locks WHERE agent=%s AND id=%s AND name=%s AND holder=%s",
                (*ident, holder),
            )

        async with leased_lock(
            lambda: self._call(take), lambda: self._call(renew), lambda: self._call(release), lease
        ):
            yield

    # -- the dispatch queue -------------------------------------------------------

    async def enqueue(self, request: DispatchRequest) -> tuple[Dispatch, bool]:
        dispatch_id = "dsp_" + uuid.uuid4().hex
        values = (
            dispatch_id,
            request.agent,
            request.id,
            request.session,
            _dumps(request.input),
            request.proxy_url,
            request.needs_token,
            request.idempotency_key,
            _dumps(dict(request.metadata)),
        )

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[Dispatch, bool]:
            cursor = await conn.execute(
                "INSERT INTO rawloop_dispatches (dispatch_id, agent, id, session, input, "
                "proxy_url, needs_token, idempotency_key, metadata, status, accepted_at, attempts) "
                f"VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,'queued',{_NOW},0) "
                "ON CONFLICT (agent, id, idempotency_key) WHERE idempotency_key IS NOT NULL "
                f"DO NOTHING RETURNING {DISPATCH_COLUMNS}",
                values,
            )
            row = await cursor.fetchone()
            if row is not None:
                return dispatch_from_row(row), True
            cursor = await conn.execute(
                f"SELECT {DISPATCH_COLUMNS} FROM rawloop_dispatches "
                "WHERE agent=%s AND id=%s AND idempotency_key=%s",
                (request.agent, request.id, request.idempotency_key),
            )
            return dispatch_from_row(await _one(cursor)), False

        return await self._call(work)

    async def claim(self, worker: str, *, lease: float = DEFAULT_LEASE) -> Dispatch | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> Dispatch | None:
            cursor = await conn.execute(
                f"UPDATE rawloop_dispatches SET status='running', worker=%s, "
                f"lease_until={_NOW} + %s, attempts=attempts+1, "
                f"started_at=COALESCE(started_at, {_NOW}) "
                "WHERE dispatch_id = (SELECT dispatch_id FROM rawloop_dispatches "
                f"WHERE status='queued' OR (status='running' AND lease_until <= {_NOW}) "
                "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {DISPATCH_COLUMNS}",
                (worker, lease),
            )
            row = await cursor.fetchone()
            return dispatch_from_row(row) if row is not None else None

        return await self._call(work)

    async def renew(self, dispatch_id: str, worker: str, *, lease: float = DEFAULT_LEASE) -> bool:
        return await self._update(
            f"UPDATE rawloop_dispatches SET lease_until={_NOW} + %s "
            "WHERE dispatch_id=%s AND worker=%s AND status='running'",
            (lease, dispatch_id, worker),
        )

    async def complete(self, dispatch_id: str, worker: str, result: Any) -> bool:
        return await self._update(
            f"UPDATE rawloop_dispatches SET status='done', result=%s, finished_at={_NOW}, "
            "lease_until=NULL WHERE dispatch_id=%s AND worker=%s AND status='running'",
            (_dumps(result), dispatch_id, worker),
        )

    async def fail(self, dispatch_id: str, worker: str, error: Mapping[str, Any]) -> bool:
        return await self._update(
            f"UPDATE rawloop_dispatches SET status='failed', error=%s, finished_at={_NOW}, "
            "lease_until=NULL WHERE dispatch_id=%s AND worker=%s AND status='running'",
            (_dumps(dict(error)), dispatch_id, worker),
        )

    async def _update(self, sql: str, args: Sequence[Any]) -> bool:
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cursor = await conn.execute(sql, args)
            return cursor.rowcount == 1

        return await self._call(work)

    async def dispatch(self, dispatch_id: str) -> Dispatch | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> Dispatch | None:
            cursor = await conn.execute(
                f"SELECT {DISPATCH_COLUMNS} FROM rawloop_dispatches WHERE dispatch_id=%s",
                (dispatch_id,),
            )
            row = await cursor.fetchone()
            return dispatch_from_row(row) if row is not None else None

        return await self._call(work)


async def _noop() -> None:
    return None


async def _one(cursor: psycopg.AsyncCursor[Any]) -> Any:
    row = await cursor.fetchone()
    if row is None:  # pragma: no cover - each caller selects a row it just made sure exists
        raise StoreError("the session store lost a row it had just written")
    return row


def _message(exc: BaseException) -> str:
    # A libpq message can quote the connection string; never the password.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
