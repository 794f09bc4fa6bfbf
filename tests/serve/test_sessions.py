"""The /agents/{name}/{id} route over the session store, and reading old session trace files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import tool
from rawloop.replay.replayer import replay
from rawloop.serve.app import app
from rawloop.serve.sessions import (
    MISSING_OUTPUT,
    check_name,
    conversation,
    repair,
    session_runs,
    split_runs,
)
from rawloop.serve.store import SessionKey, SessionLimits
from rawloop.serve.turns import session_trace, turn_trace
from rawloop.trace.format import Trace
from rawloop.trace.recorder import TraceRecorder
from rawloop.trace.show import as_json, render

from ..conftest import Reply, ScriptedAPI, corpus
from .test_app import ANSWER, QUESTION, Exchange, drive, post, text_reply, tool_replies

pytestmark = pytest.mark.anyio


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def make_loop(api: ScriptedAPI, *tools: Any, **kwargs: Any) -> Loop:
    kwargs.setdefault("retries", RetryPolicy(max_retries=0, initial_delay=0.0))
    return Loop(
        kwargs.pop("model", "gpt-5.5"),
        tools=tools or [multiply],
        http_client=api.client(),
        api_key="sk-test",
        **kwargs,
    )


async def ask(asgi: Any, path: str, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with anyio.fail_after(10):
            return await client.post(path, json=body)


# -- the HTTP route --------------------------------------------------------------------------


async def test_a_session_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    first_api = ScriptedAPI(tool_replies())
    first = await ask(
        app(make_loop(first_api), store=db), "/agents/calc/user-1", {"message": QUESTION}
    )
    assert first.status_code == 200
    assert first.json()["final_response"] == ANSWER
    assert first.json()["session"] == {"agent": "calc", "id": "user-1", "name": "default"}

    # A new app, as after a restart: only the store's file is shared.
    second_api = ScriptedAPI([text_reply("It is 2869461.")])
    second_app = app(make_loop(second_api), store=db)
    second = await ask(second_app, "/agents/calc/user-1", {"message": "Say that again?"})
    assert second.status_code == 200
    (sent,) = second_api.bodies
    first_exchange = first.json()["messages"]
    assert sent["input"] == [*first_exchange, {"role": "user", "content": "Say that again?"}]
    assert sent["input"][0] == {"role": "user", "content": QUESTION}
    assert second.json()["messages"][: len(sent["input"])] == sent["input"]
    assert second.json()["final_response"] == "It is 2869461."

    turns = await second_app.store.turns(SessionKey("calc", "user-1"))
    assert [t.index for t in turns] == [0, 1]
    assert [t.records[0]["metadata"]["session"]["id"] for t in turns] == ["user-1", "user-1"]
    assert [t.metadata["stop_reason"] for t in turns] == ["completed", "completed"]
    # Each turn holds what it added: the second one only its question and answer.
    assert [len(t.items) for t in turns] == [4, 2]


async def test_sessions_and_ids_are_kept_apart(tmp_path: Path) -> None:
    api = ScriptedAPI([text_reply("a1"), text_reply("b1"), text_reply("other"), text_reply("a2")])
    asgi = app(make_loop(api), store=tmp_path / "s.db")
    await ask(asgi, "/agents/bot/u1", {"message": "one"})
    await ask(asgi, "/agents/bot/u1", {"message": "first b", "session": "b"})
    await ask(asgi, "/agents/bot/u2", {"message": "other user"})
    await ask(asgi, "/agents/bot/u1", {"message": "two"})
    inputs = [[item.get("content") for item in body["input"]] for body in api.bodies]
    assert inputs[1] == ["first b"]
    assert inputs[2] == ["other user"]
    assert inputs[3] == ["one", [{"type": "output_text", "text": "a1"}], "two"]
    assert [(str(s.key), s.turns) for s in await asgi.store.sessions()] == [
        ("bot/u1/b", 1),
        ("bot/u1/default", 2),
        ("bot/u2/default", 1),
    ]


async def test_a_long_session_grows_linearly(tmp_path: Path) -> None:
    """Issue 12: each request of a session file used to repeat the whole conversation."""
    big = "x" * 20_000
    api = ScriptedAPI([text_reply(f"answer {n}") for n in range(12)])
    asgi = app(make_loop(api), store=tmp_path / "s.db")
    for n in range(12):
        response = await ask(asgi, "/agents/bot/u1", {"message": f"{n} {big}"})
        assert response.status_code == 200
    sizes = [t.size for t in await asgi.store.turns(SessionKey("bot", "u1"))]
    # Every turn stores its own ~20 kB once; the last request alone carried ~240 kB.
    assert max(sizes) < 1.5 * min(sizes)
    assert len(orjson.dumps(api.bodies[-1])) > 10 * max(sizes) / 1.5


async def test_a_full_session_is_refused_with_409(tmp_path: Path) -> None:
    api = ScriptedAPI([text_reply("one"), text_reply("two")])
    asgi = app(make_loop(api), store=tmp_path / "s.db", session_limits=SessionLimits(max_turns=1))
    assert (await ask(asgi, "/agents/bot/u1", {"message": "first"})).status_code == 200
    full = await ask(asgi, "/agents/bot/u1", {"message": "second"})
    assert full.status_code == 409
    assert full.json()["error"]["type"] == "session_full"
    assert len(api.requests) == 1  # refused before the model was asked


async def test_requests_to_one_session_wait_for_each_other(tmp_path: Path) -> None:
    release = anyio.Event()
    entered = anyio.Event()

    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, when allowed to."""
        entered.set()
        await release.wait()
        return a * b

    api = ScriptedAPI([*tool_replies(), text_reply("second answer")])
    asgi = app(make_loop(api, multiply), store=tmp_path / "s.db")
    answers: dict[str, Any] = {}

    async def send(name: str, message: str) -> None:
        answers[name] = (await ask(asgi, "/agents/calc/u1", {"message": message})).json()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(send, "first", QUESTION)
            await entered.wait()
            group.start_soon(send, "second", "and now?")
            await anyio.sleep(0.1)
            assert len(api.requests) == 1  # the second waits for the first to finish
            release.set()
    assert answers["first"]["final_response"] == ANSWER
    assert api.bodies[2]["input"] == [
        *answers["first"]["messages"],
        {"role": "user", "content": "and now?"},
    ]


async def test_a_session_answers_with_events_when_asked(tmp_path: Path) -> None:
    api = ScriptedAPI([*tool_replies(), text_reply("again")])
    asgi = app(make_loop(api), store=tmp_path / "s.db")
    accept = [(b"accept", b"text/event-stream")]
    streamed: Exchange = await drive(
        asgi, "/agents/calc/u1", post({"message": QUESTION, "session": "s.1"}), headers=accept
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    names = streamed.names()
    assert names[:2] == ["tool_call", "tool_result"] and names[-1] == "done"
    done = streamed.events()[-1][1]
    assert done["text"] == ANSWER
    assert done["session"] == {"agent": "calc", "id": "u1", "name": "s.1"}
    # The streamed run was recorded like any other: the next request continues it.
    follow = await ask(asgi, "/agents/calc/u1", {"message": "more", "session": "s.1"})
    assert follow.json()["final_response"] == "again"
    assert api.bodies[2]["input"][-1] == {"role": "user", "content": "more"}
    assert len(api.bodies[2]["input"]) == 5


async def test_a_failed_run_keeps_the_message(tmp_path: Path) -> None:
    api = ScriptedAPI(
        [Reply(b'{"error": {"message": "overloaded"}}', status=400), text_reply("ok")]
    )
    asgi = app(make_loop(api), store=tmp_path / "s.db")
    failed = await ask(asgi, "/agents/bot/u1", {"message": "first"})
    assert failed.status_code == 502
    fine = await ask(asgi, "/agents/bot/u1", {"message": "second"})
    assert fine.status_code == 200
    assert [item["content"] for item in api.bodies[1]["input"]] == ["first", "second"]


# -- rebuilding the conversation from the trace --------------------------------------------------


async def test_conversation_is_what_each_run_ended_with(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    assert conversation(path) == []  # no file yet
    api = ScriptedAPI([*tool_replies(), text_reply("second")])
    loop = make_loop(api)
    one = await loop.run(QUESTION, hooks=[TraceRecorder(path, overwrite=False)])
    assert conversation(path) == one.items
    two = await loop.run(
        [*conversation(path), {"role": "user", "content": "next"}],
        hooks=[TraceRecorder(path, overwrite=False)],
    )
    assert conversation(path) == two.items
    assert len(session_runs(path)) == 2


async def test_chat_conversations_leave_out_the_loops_system_message(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    api = ScriptedAPI(
        [Reply(corpus("chat-tool-call-1.sse")), Reply(corpus("chat-text-after-tool-1.sse"))]
    )
    loop = make_loop(api, model="gpt-4o-mini", dialect="chat", instructions="Be brief.")
    result = await loop.run("What is 1231 * 2331?", hooks=[TraceRecorder(path)])
    assert api.bodies[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    items = conversation(path, instructions="Be brief.")
    assert items == result.items
    assert [m["role"] for m in items] == ["user", "assistant", "tool", "assistant"]
    # Without instructions of its own, the loop keeps the recorded system message.
    assert conversation(path)[0] == {"role": "system", "content": "Be brief."}


async def test_a_run_cancelled_while_a_tool_ran_gets_an_output_for_the_call(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    entered = anyio.Event()

    @tool
    async def multiply(a: int, b: int) -> int:
        """Multiply two numbers, never."""
        entered.set()
        await anyio.sleep_forever()
        return a * b

    loop = make_loop(ScriptedAPI(tool_replies()), multiply)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: loop.run(QUESTION, hooks=[TraceRecorder(path)]))
            await entered.wait()
            group.cancel_scope.cancel()
    items = conversation(path)
    assert [item.get("type", item.get("role")) for item in items] == [
        "user",
        "function_call",
        "function_call_output",
    ]
    assert items[-1] == {
        "type": "function_call_output",
        "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
        "output": MISSING_OUTPUT,
    }


async def test_a_run_that_never_sent_a_request_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    api = ScriptedAPI([text_reply("hi")])
    loop = make_loop(api)
    first = await loop.run("hello", hooks=[TraceRecorder(path, overwrite=False)])

    def stop_at_once(state: Any) -> None:
        state.stop("not now")

    stopper = type("Stopper", (), {"on_breakpoint": staticmethod(stop_at_once)})()
    await loop.run("ignored", hooks=[TraceRecorder(path, overwrite=False), stopper])
    assert len(session_runs(path)) == 2
    assert conversation(path) == first.items


def test_repair_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    assert repair(path) is False  # no file
    path.write_bytes(b"")
    assert repair(path) is False
    path.write_bytes(b'{"a": 1}\n{"b": ')
    assert repair(path) is True
    assert path.read_bytes() == b'{"a": 1}\n'
    assert repair(path) is False
    path.write_bytes(b"x" * 100_000)  # no newline at all
    assert repair(path) is True
    assert path.read_bytes() == b""


async def test_old_session_files_are_imported_and_continued(tmp_path: Path) -> None:
    # A session file as an older rawloop wrote it: one appended run per turn.
    path = tmp_path / "bot" / "u1" / "default.jsonl"
    old = make_loop(ScriptedAPI([text_reply("one"), text_reply("two")]))
    first = await old.run("first", hooks=[TraceRecorder(path, overwrite=False)])
    await old.run(
        [*first.items, {"role": "user", "content": "second"}],
        hooks=[TraceRecorder(path, overwrite=False)],
    )
    with path.open("ab") as handle:
        handle.write(b'{"kind": "chunk", "iteration": 0, "att')  # a crash mid-write
    before = path.read_bytes()

    api = ScriptedAPI([text_reply("three"), text_reply("other")])
    asgi = app(make_loop(api), sessions_dir=tmp_path)
    third = await ask(asgi, "/agents/bot/u1", {"message": "third"})
    assert third.status_code == 200
    assert [item.get("content") for item in api.bodies[0]["input"]][::2] == [
        "first",
        "second",
        "third",
    ]
    assert path.read_bytes() == before  # left as it was, still readable
    assert (tmp_path / "sessions.db").is_file()
    # A restart imports nothing twice.
    again = app(make_loop(api), sessions_dir=tmp_path)
    await ask(again, "/agents/bot/u2", {"message": "hi"})
    assert [s.turns for s in await again.store.sessions()] == [3, 1]


# -- the existing tools on an exported session ---------------------------------------------------


async def test_show_and_replay_work_on_an_exported_session(tmp_path: Path) -> None:
    api = ScriptedAPI([*tool_replies(), text_reply("It is 2869461.")])
    asgi = app(make_loop(api), store=tmp_path / "s.db")
    await ask(asgi, "/agents/calc/u1", {"message": QUESTION})
    await ask(asgi, "/agents/calc/u1", {"message": "again?"})
    turns = await asgi.store.turns(SessionKey("calc", "u1"))

    trace = Trace.parse(session_trace(turns))
    shown = render(trace, color=False)
    assert shown.count("multiply") >= 2 and "It is 2869461." in shown
    assert len(as_json(trace)["later_runs"]) == 1

    first, second = split_runs(trace)
    assert (await replay(first)).identical
    assert (await replay(second)).identical  # its first request holds the earlier exchange
    alone = Trace.parse(turn_trace(turns, 1))
    assert alone.records == second.records or [r.data for r in alone.records] == [
        r.data for r in second.records
    ]
    assert (await replay(alone)).identical
    # The requests are rebuilt exactly as they were sent.
    sent = [r.data["body"] for r in trace.records if r.kind == "request"] + [
        r.data["body"] for r in second.records if r.kind == "request"
    ]
    assert sent[-1] == api.bodies[-1]


def test_names_are_checked() -> None:
    for good in ("a", "A-b_c.9", "x" * 128, "..a"):
        assert check_name(good, "id") == good
    for bad in ("", ".", "..", "a/b", "a b", "é", "x" * 129, "a\x00"):
        with pytest.raises(ValueError, match="id"):
            check_name(bad, "id")
    with pytest.raises(ValueError, match="must be a string"):
        check_name(3, "session")
