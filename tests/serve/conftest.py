"""Fixtures for the serve tests: a session store of each kind.

``store_factory`` makes stores that share one database, as several processes
would; ``store`` is one opened store. Both are parametrised by the kind of
store: each kind added to ``STORE_KINDS`` runs every test of
``test_store.py`` (the contract every ``SessionStore`` keeps).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from rawloop.serve.store import SessionStore
from rawloop.serve.store_postgres import PostgresStore
from rawloop.serve.store_sqlite import SQLiteStore

from .postgres import PostgresServer

StoreFactory = Callable[[], SessionStore]

#: The kinds of store the contract tests run against.
STORE_KINDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def rawloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Sessions on by default must never reach the real home folder from a test."""
    home = tmp_path / "rawloop-home"
    monkeypatch.setenv("RAWLOOP_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for this test session (skips when none can run)."""
    reason = PostgresServer.unavailable()
    if reason is not None:
        pytest.skip(f"no PostgreSQL server: {reason}")
    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:  # the skip says why; the log is in the server's folder
        server.stop()
        pytest.skip(f"PostgreSQL would not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``make()`` -> a new, unopened store on this test's own database."""
    kind = request.param
    if kind == "sqlite":
        path = tmp_path / "sessions.db"
        yield lambda: SQLiteStore(path)
    elif kind == "postgresql":
        server = request.getfixturevalue("postgres_server")
        url = server.create_database(f"t_{uuid.uuid4().hex}")
        yield lambda: PostgresStore(url)
    else:  # pragma: no cover - a kind listed without a branch here
        raise AssertionError(f"no factory for store kind {kind!r}")


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[SessionStore]:
    """An opened store, closed after the test."""
    async with store_factory() as opened:
        yield opened
