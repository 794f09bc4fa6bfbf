"""The WebSocket route driven through ASGI by hand: bad frames, refusals, cancellation on close."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import tool
from rawloop.serve.app import app
from rawloop.serve.asgi import Message
from rawloop.serve.store import SessionKey

from ..conftest import ScriptedAPI
from .test_app import QUESTION, text_reply, tool_replies

pytestmark = pytest.mark.anyio


class Socket:
    """One WebSocket connection to an ASGI app: frames in, messages out."""

    def __init__(self, asgi: Any, path: str) -> None:
        self.asgi = asgi
        self.scope = {
            "type": "websocket",
            "path": path,
            "headers": [],
            "client": ("127.0.0.1", 5000),
        }
        self.inbox, self._incoming = anyio.create_memory_object_stream[Message](16)
        self.sent: list[Message] = []
        self.arrived = anyio.Event()

    async def receive(self) -> Message:
        return await self._incoming.receive()

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        self.arrived.set()

    async def frame(self, data: Any) -> None:
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        await self.inbox.send({"type": "websocket.receive", "text": text})

    def events(self) -> list[tuple[str, Any]]:
        return [
            (e["event"], e["data"])
            for e in (orjson.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send")
        ]

    async def until(self, count: int) -> None:
        """Wait until ``count`` events (done or error) have come."""
        with anyio.fail_after(10):
            while sum(1 for name, _ in self.events() if name in ("done", "error")) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()


def quiet_loop(api: ScriptedAPI, *tools: Any) -> Loop:
    retries = RetryPolicy(max_retries=0, initial_delay=0.0)
    return Loop("gpt-5.5", tools=tools, http_client=api.client(), retries=retries)


async def test_bad_frames_get_an_error_and_the_connection_goes_on(tmp_path: Path) -> None:
    asgi = app(quiet_loop(ScriptedAPI([text_reply("fine")])), store=tmp_path / "s.db")
    socket = Socket(asgi, "/agents/bot/u1")
    async with anyio.create_task_group() as group:
        group.start_soon(asgi, socket.scope, socket.receive, socket.send)
        await socket.inbox.send({"type": "websocket.connect"})
        await socket.frame("not json")
        await socket.frame([1, 2])
        await socket.frame({"message": ""})
        await socket.frame({"message": "hi", "session": "../etc"})
        await socket.frame({"message": "hi"})
        await socket.until(5)
        await socket.inbox.send({"type": "websocket.disconnect", "code": 1000})
    assert socket.sent[0] == {"type": "websocket.accept"}
    events = socket.events()
    errors = [data for name, data in events if name == "error"]
    assert [e["type"] for e in errors] == ["invalid_frame"] * 3 + ["invalid_name"]
    assert errors[2]["field"] == "message" and errors[3]["field"] == "session"
    assert events[-1][0] == "done" and events[-1][1]["text"] == "fine"


async def test_refused_handshakes_close_before_accepting(tmp_path: Path) -> None:
    asgi = app(
        {"bot": quiet_loop(ScriptedAPI([]))},
        store=tmp_path / "s.db",
        authorize=lambda request, agent, id: id != "mallory",
    )
    for path in ("/agents/nobody/u1", "/agents/bot/mallory", "/elsewhere", "/agents/bot/a b"):
        socket = Socket(asgi, path)
        await socket.inbox.send({"type": "websocket.connect"})
        with anyio.fail_after(5):
            await asgi(socket.scope, socket.receive, socket.send)
        assert socket.sent == [{"type": "websocket.close", "code": 1008}], path


async def test_closing_the_socket_cancels_the_running_turn(tmp_path: Path) -> None:
    entered = anyio.Event()
    cancelled = anyio.Event()

    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply, never finishing."""
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return a * b

    asgi = app(quiet_loop(ScriptedAPI(tool_replies()), multiply), store=tmp_path / "s.db")
    socket = Socket(asgi, "/agents/calc/u1")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(asgi, socket.scope, socket.receive, socket.send)
            await socket.inbox.send({"type": "websocket.connect"})
            await socket.frame({"message": QUESTION})
            await entered.wait()
            await socket.inbox.send({"type": "websocket.disconnect", "code": 1001})
            await cancelled.wait()
    assert [name for name, _ in socket.events()] == ["tool_call"]
    # The cancelled turn is kept, with an output standing in for the call that never returned.
    (turn,) = await asgi.store.turns(SessionKey("calc", "u1"))
    assert [i.get("type", i.get("role")) for i in turn.items] == [
        "user",
        "function_call",
        "function_call_output",
    ]


frames = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda m, s: orjson.dumps({"message": m, "session": s}).decode(),
        st.one_of(st.none(), st.integers(-(2**53), 2**53), st.text(max_size=5)),
        st.one_of(st.none(), st.integers(-(2**53), 2**53), st.text(max_size=5)),
    ),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sent=st.lists(frames, min_size=1, max_size=4))
def test_every_frame_gets_one_answer_and_the_socket_stays_open(sent: list[str]) -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as folder:
            replies = [text_reply(f"r{n}") for n in range(len(sent))]
            asgi = app(quiet_loop(ScriptedAPI(replies)), store=Path(folder) / "s.db")
            socket = Socket(asgi, "/agents/bot/u1")
            async with anyio.create_task_group() as group:
                group.start_soon(asgi, socket.scope, socket.receive, socket.send)
                await socket.inbox.send({"type": "websocket.connect"})
                for frame in sent:
                    await socket.frame(frame)
                await socket.until(len(sent))
                await socket.inbox.send({"type": "websocket.disconnect", "code": 1000})
            answers = [n for n, _ in socket.events() if n in ("done", "error")]
            assert len(answers) == len(sent)
            assert not any(m["type"] == "websocket.close" for m in socket.sent)
            await asgi.store.close()

    anyio.run(main)
