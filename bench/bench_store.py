"""Turns per second of the session stores, SQLite and PostgreSQL, side by side in one run.

What a served turn asks of its store, as ``rawloop.serve.turns`` does it: take
the session's lock, read the session's history, append the turn (its new
items and its trace records, ~2 KB of JSON), let the lock go. Rows:

* ``one session``: every turn to one session, from ``--tasks`` concurrent
  tasks on one store (they queue on the session lock);
* ``many sessions``: each task its own session, on one store;
* ``two stores``: two stores on one database (two processes' worth of
  connections), each with its own sessions.

PostgreSQL is a real server: ``--postgres URL``, or one started on 127.0.0.1
in a temporary folder as the tests start it (Debian's ``postgresql``).
Numbers are printed, never asserted; the ratio column is PostgreSQL over SQLite.

Run: ``python bench/bench_store.py [--turns N] [--tasks N] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from rawloop.serve.store import NewTurn, SessionKey, SessionStore
from rawloop.serve.store_postgres import PostgresStore
from rawloop.serve.store_sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]

ITEMS = [
    {"role": "user", "content": "What is 6 times 7? " * 10},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "multiply",
        "arguments": '{"a":6,"b":7}',
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "42"}]},
]
RECORDS = [{"kind": "request", "t": 0.0, "body": {"model": "m", "input": "see items"}}] * 8


async def one_turn(store: SessionStore, key: SessionKey) -> None:
    async with store.lock(key):
        await store.history(key)
        await store.append_turn(key, NewTurn(ITEMS, RECORDS, {"model": "m"}))


async def run_tasks(tasks: int, turns: int, work: Callable[[int, int], Awaitable[None]]) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for task in range(tasks):

            async def loop(task: int = task) -> None:
                for n in range(turns // tasks):
                    await work(task, n)

            group.start_soon(loop)
    return turns / (time.perf_counter() - started)


async def measure(make: Callable[[], SessionStore], turns: int, tasks: int) -> dict[str, float]:
    rows: dict[str, float] = {}
    async with make() as store:
        run = uuid.uuid4().hex[:8]
        shared = SessionKey("bench", f"one-{run}")
        rows["one session"] = await run_tasks(tasks, turns, lambda t, n: one_turn(store, shared))
        rows["many sessions"] = await run_tasks(
            tasks, turns, lambda t, n: one_turn(store, SessionKey("bench", f"many-{run}-{t}"))
        )
        async with make() as other:
            stores = (store, other)
            rows["two stores"] = await run_tasks(
                tasks,
                turns,
                lambda t, n: one_turn(stores[t % 2], SessionKey("bench", f"two-{run}-{t}")),
            )
    return rows


def start_postgres() -> tuple[str, Callable[[], None]]:
    sys.path.insert(0, str(ROOT))
    from tests.serve.postgres import PostgresServer

    reason = PostgresServer.unavailable()
    if reason:
        raise SystemExit(f"no PostgreSQL: {reason} (or pass --postgres URL)")
    server = PostgresServer()
    server.start()
    return server.create_database("bench"), server.stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=400, help="turns per row (default 400)")
    ap.add_argument("--tasks", type=int, default=8, help="concurrent tasks (default 8)")
    ap.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use")
    args = ap.parse_args()
    url, stop = (args.postgres, lambda: None) if args.postgres else start_postgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            sqlite = anyio.run(measure, lambda: SQLiteStore(path), args.turns, args.tasks)
            postgres = anyio.run(measure, lambda: PostgresStore(url), args.turns, args.tasks)
    finally:
        stop()
    print(f"### session stores: {args.turns} turns per row, {args.tasks} concurrent tasks\n")
    print("| row | SQLite turns/s | PostgreSQL turns/s | PostgreSQL / SQLite |")
    print("|---|---:|---:|---:|")
    for row, value in sqlite.items():
        print(f"| {row} | {value:,.0f} | {postgres[row]:,.0f} | {postgres[row] / value:.2f}x |")


if __name__ == "__main__":
    main()
