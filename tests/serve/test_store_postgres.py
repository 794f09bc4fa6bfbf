"""Several hosts on one PostgreSQL: two ``rawloop serve-agent`` processes share sessions and work.

Everything is real: a PostgreSQL server on 127.0.0.1 (``postgres.py``), a
fake model server in its own process that echoes what it was asked, and two
``serve-agent`` processes on their own ports with ``--store postgresql://``.
The model's answer says how many user messages its request held, so a turn
that missed or repeated an earlier one shows in its reply.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from rawloop.serve.store import SessionKey, StoreError
from rawloop.serve.store_postgres import PostgresStore

from .postgres import PostgresServer

pytestmark = pytest.mark.anyio

#: A Responses-API stand-in: answers every request with the text
#: "<last user message>#<number of user messages>", after a short pause so
#: work is in flight when a process is killed. It logs each question it got.
MODEL = textwrap.dedent(
    """
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    LOG = open(sys.argv[1], "a", buffering=1)

    def event(kind, **fields):
        return f"event: {kind}\\ndata: {json.dumps({'type': kind, **fields})}\\n\\n"

    class Model(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            users = [
                item for item in body["input"]
                if isinstance(item, dict) and item.get("role") == "user"
            ]
            last = users[-1]["content"]
            if isinstance(last, list):
                last = last[0]["text"]
            LOG.write(last + "\\n")
            time.sleep(0.05)
            text = f"{last}#{len(users)}"
            message = {"type": "message", "id": "msg_1", "role": "assistant",
                       "status": "completed",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]}
            response = {"id": "resp_1", "object": "response", "model": body["model"],
                        "status": "completed", "output": [message],
                        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}
            stream = (
                event("response.created", sequence_number=0,
                      response={**response, "status": "in_progress", "output": []})
                + event("response.output_item.added", sequence_number=1, output_index=0,
                        item={**message, "status": "in_progress", "content": []})
                + event("response.output_text.delta", sequence_number=2, item_id="msg_1",
                        output_index=0, content_index=0, delta=text)
                + event("response.output_item.done", sequence_number=3, output_index=0,
                        item=message)
                + event("response.completed", sequence_number=4, response=response)
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(stream)))
            self.end_headers()
            self.wfile.write(stream)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)

AGENT = textwrap.dedent(
    """
    import os
    from rawloop import Loop

    echo = Loop("fake-model", base_url=os.environ["FAKE_MODEL_URL"], api_key="not-needed")
    """
)


@pytest.fixture
def database(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database(f"hosts_{os.getpid()}_{time.monotonic_ns()}")


@pytest.fixture
def model(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The fake model's base URL and the log of the questions it was asked."""
    script, log = tmp_path / "model.py", tmp_path / "questions.log"
    script.write_text(MODEL)
    log.touch()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Host:
    """One ``rawloop serve-agent`` process on its own port."""

    def __init__(self, tmp_path: Path, database: str, model_url: str, *extra: str) -> None:
        agent = tmp_path / "echo_agent.py"
        agent.write_text(AGENT)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "rawloop.cli", "serve-agent", f"{agent}:echo",
                "--port", str(self.port), "--store", database, "--log-level", "warning",
                *extra,
            ],
            env={**os.environ, "FAKE_MODEL_URL": model_url, "RAWLOOP_HOME": str(tmp_path)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise AssertionError(f"serve-agent did not start: {err[-2000:]}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def test_turns_to_one_session_from_two_hosts_all_land_in_order(
    tmp_path: Path, database: str, model: tuple[str, Path]
) -> None:
    model_url, _ = model
    a = Host(tmp_path, database, model_url)
    b = Host(tmp_path, database, model_url)
    replies: dict[int, str] = {}
    try:
        async with httpx.AsyncClient(timeout=120) as client:

            async def turn(i: int) -> None:
                host = (a, b)[i % 2]
                answer = await client.post(
                    f"{host.url}/agents/echo/customer-1",
                    json={"message": f"m{i}", "session": "billing"},
                )
                assert answer.status_code == 200, answer.text
                replies[i] = answer.json()["final_response"]

            async with anyio.create_task_group() as group:
                for i in range(50):
                    group.start_soon(turn, i)
    finally:
        a.stop()
        b.stop()

    # Each turn saw every earlier turn once: its reply counts 1..50 user messages, once each.
    counts = sorted(int(reply.rpartition("#")[2]) for reply in replies.values())
    assert counts == list(range(1, 51))
    assert all(reply.startswith(f"m{i}#") for i, reply in replies.items())
    async with PostgresStore(database) as store:
        turns = await store.turns(SessionKey("echo", "customer-1", "billing"))
    assert [t.index for t in turns] == list(range(50))
    # Stored in the order they ran: turn j's reply counted j+1 user messages.
    asked = []
    for j, stored in enumerate(turns):
        (user,) = [item for item in stored.items if item.get("role") == "user"]
        text = user["content"] if isinstance(user["content"], str) else user["content"][0]["text"]
        asked.append(text)
        assert replies[int(text[1:])] == f"{text}#{j + 1}"
    assert sorted(asked) == sorted(f"m{i}" for i in range(50))


async def test_dispatches_accepted_by_two_hosts_run_once_even_when_one_is_killed(
    tmp_path: Path, database: str, model: tuple[str, Path]
) -> None:
    model_url, questions = model
    options = ("--dispatch-workers", "3", "--dispatch-lease", "4")
    a = Host(tmp_path, database, model_url, *options)
    b = Host(tmp_path, database, model_url, *options)
    ids: dict[str, int] = {}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(100):
                host = (a, b)[i % 2]
                receipt = await client.post(
                    f"{host.url}/agents/echo/job-{i}/dispatch", json={"input": f"job{i}"}
                )
                assert receipt.status_code == 202, receipt.text
                ids[receipt.json()["dispatch_id"]] = i
            # Let a take some work, then kill it mid-way: its running work must move to b.
            with anyio.fail_after(30):
                while len(questions.read_text().splitlines()) < 20:
                    await anyio.sleep(0.05)
            a.kill()
            done: dict[str, dict[str, object]] = {}
            with anyio.fail_after(90):
                while len(done) < len(ids):
                    for dispatch_id in [d for d in ids if d not in done]:
                        state = (await client.get(f"{b.url}/dispatches/{dispatch_id}")).json()
                        assert state["status"] in ("queued", "running", "done"), state
                        if state["status"] == "done":
                            done[dispatch_id] = state
                    await anyio.sleep(0.1)
    finally:
        a.stop()
        b.stop()

    for dispatch_id, state in done.items():
        result = state["result"]
        assert isinstance(result, dict)
        assert result["final_response"] == f"job{ids[dispatch_id]}#1"
    asked = questions.read_text().splitlines()
    assert sorted(set(asked)) == sorted(f"job{i}" for i in range(100))
    async with PostgresStore(database) as store:
        reclaimed = 0
        for dispatch_id, i in ids.items():
            # One stored turn per dispatch: the run's outcome was recorded once.
            assert len(await store.turns(SessionKey("echo", f"job-{i}"))) == 1
            stored = await store.dispatch(dispatch_id)
            assert stored is not None and stored.status == "done"
            # The model is asked again only by a worker that took the work over
            # (the killed host's, or one whose lease lapsed): never more often.
            assert asked.count(f"job{i}") <= stored.attempts
            reclaimed += stored.attempts - 1
    # The killed host held work: someone took it over.
    assert reclaimed >= 1


async def test_a_bad_url_and_an_unreachable_server_are_store_errors_without_the_password() -> None:
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        PostgresStore("mysql://x/y")
    port = free_port()  # nothing listens there
    store = PostgresStore(f"postgresql://user:hunter2@127.0.0.1:{port}/db", connect_timeout=2)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(store)


async def test_a_schema_newer_than_this_rawloop_is_refused(database: str) -> None:
    async with PostgresStore(database) as store:
        await store._call(lambda conn: conn.execute("UPDATE rawloop_schema SET version=99"))
    with pytest.raises(StoreError, match="version 99"):
        await PostgresStore(database).open()


async def test_stores_opening_at_once_migrate_the_schema_once(database: str) -> None:
    stores = [PostgresStore(database) for _ in range(5)]
    async with anyio.create_task_group() as group:
        for store in stores:
            group.start_soon(store.open)
    versions = await stores[0]._call(
        lambda conn: conn.execute("SELECT count(*), max(version) FROM rawloop_schema")
    )
    assert await versions.fetchone() == (1, 1)
    for store in stores:
        await store.close()
