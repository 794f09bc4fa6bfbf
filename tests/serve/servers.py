"""Real servers on 127.0.0.1 for the serving tests: the fake model, uvicorn in a thread or a process.

The model is rawloop's own ``ReplayServer`` serving a script: which turn of
the script answers a request depends only on how many model turns the
request's conversation already holds, so a session's k-th turn always gets
``answer k`` however requests interleave, and a lost or doubled turn shows.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from rawloop.replay.server import ReplayServer
from rawloop.replay.synth import script_to_trace

MODEL = "gpt-5.5"


def script(*turns: dict[str, Any]) -> dict[str, Any]:
    """A Responses script of ``turns``; without any, ``answer 0`` to ``answer 29``."""
    given = list(turns) or [{"text": f"answer {n}"} for n in range(30)]
    return {"dialect": "responses", "model": MODEL, "turns": given}


@asynccontextmanager
async def model_server(spec: dict[str, Any]) -> AsyncIterator[str]:
    """The fake model API serving ``spec``; yields its base URL (``.../v1``)."""
    server = ReplayServer([script_to_trace(spec)])
    async with anyio.create_task_group() as group:
        port = await group.start(server.serve)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            group.cancel_scope.cancel()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def uvicorn_thread(asgi: Any) -> AsyncIterator[str]:
    """``asgi`` served by uvicorn (wsproto WebSockets) in a thread; yields its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(asgi, log_level="warning", lifespan="on", ws="wsproto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await anyio.to_thread.run_sync(thread.join, 10)
        sock.close()
        assert not thread.is_alive()


#: The served app of the subprocess tests: agent ``bot`` with a tool that waits for a file.
APP_MODULE = '''
import os
import pathlib

import anyio

from rawloop.loop.loop import Loop
from rawloop.loop.tools import tool
from rawloop.serve.app import app


@tool
async def wait_for_release(step: int) -> str:
    """Wait until the test creates the release file."""
    marker = pathlib.Path(os.environ["RELEASE_FILE"])
    while not marker.exists():
        await anyio.sleep(0.05)
    with open(os.environ["TOOL_LOG"], "a") as log:
        log.write(f"{os.getpid()} step {step}\\n")
    return "released"


def bot(context):
    return Loop("gpt-5.5", tools=[wait_for_release], base_url=os.environ["MODEL_URL"], retries=0)


application = app(
    {"bot": bot},
    store=os.environ["STORE_PATH"],
    dispatch_lease=float(os.environ.get("DISPATCH_LEASE", "30")),
    dispatch_poll=0.1,
    heartbeat=0,
)
'''


class AppProcess:
    """``uvicorn servedapp:application`` in a subprocess (its own process group)."""

    def __init__(self, folder: Path, model_url: str, *, workers: int = 1, lease: float = 30.0):
        self.folder = folder
        (folder / "servedapp.py").write_text(APP_MODULE)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **os.environ,
            "MODEL_URL": model_url,
            "STORE_PATH": str(folder / "sessions.db"),
            "RELEASE_FILE": str(folder / "release"),
            "TOOL_LOG": str(folder / "tool.log"),
            "DISPATCH_LEASE": str(lease),
            "RAWLOOP_HOME": str(folder / "home"),
        }
        self.process: anyio.abc.Process | None = None

    async def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "servedapp:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--ws",
            "wsproto",
            "--app-dir",
            str(self.folder),
            "--log-level",
            "warning",
        ]
        self.process = await anyio.open_process(
            command,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(30):
                while True:
                    try:
                        answer = await client.get(f"{self.base_url}/dispatches/none")
                        if answer.status_code == 404:
                            return
                    except httpx.HTTPError:
                        pass
                    assert self.process.returncode is None, "the server exited at start"
                    await anyio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL the server (and its workers): nothing gets to clean up."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """A graceful stop (SIGTERM), then SIGKILL if it lingers."""
        await self._signal(signal.SIGTERM)

    async def _signal(self, number: int) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            # Our own process group, made by start_new_session: the server and its workers.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, number)
            with anyio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        self.process = None


@asynccontextmanager
async def app_process(
    folder: Path, model_url: str, *, workers: int = 1, lease: float = 30.0
) -> AsyncIterator[AppProcess]:
    served = AppProcess(folder, model_url, workers=workers, lease=lease)
    await served.start()
    try:
        yield served
    finally:
        with anyio.CancelScope(shield=True):
            await served.stop()
