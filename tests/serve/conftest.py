"""Fixtures for the serve tests: a session store of each kind.

``store_factory`` makes stores that share one database, as several processes
would; ``store`` is one opened store. Both are parametrised by the kind of
store: each kind added to ``STORE_KINDS`` runs every test of
``test_store.py`` (the contract every ``SessionStore`` keeps).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from rawloop.serve.store import SessionStore
from rawloop.serve.store_sqlite import SQLiteStore

StoreFactory = Callable[[], SessionStore]

#: The kinds of store the contract tests run against.
STORE_KINDS = ["sqlite"]


@pytest.fixture(params=STORE_KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """``make()`` -> a new, unopened store on this test's own database."""
    kind = request.param
    if kind == "sqlite":
        path = tmp_path / "sessions.db"
        yield lambda: SQLiteStore(path)
    else:  # pragma: no cover - a kind listed without a branch here
        raise AssertionError(f"no factory for store kind {kind!r}")


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[SessionStore]:
    """An opened store, closed after the test."""
    async with store_factory() as opened:
        yield opened
