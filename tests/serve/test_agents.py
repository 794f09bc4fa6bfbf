"""Agents with identity, the in-code harness, agent folders, boot checks and ``rawloop sessions``."""

from __future__ import annotations

import io
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from rawloop.agents import (
    AgentContext,
    Agents,
    Profile,
    SessionFull,
    SessionKey,
    SessionLimits,
    SQLiteStore,
    dispatch,
    init_agent,
    load_agents_dir,
)
from rawloop.cli.main import main
from rawloop.core.errors import ConfigurationError
from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import tool
from rawloop.replay.replayer import replay
from rawloop.serve.app import app
from rawloop.serve.command import check_before_serving, serve_agent
from rawloop.serve.dispatcher import message_of
from rawloop.serve.store import NewTurn
from rawloop.trace.format import Trace

from ..conftest import ScriptedAPI
from .test_app import ANSWER, QUESTION, text_reply, tool_replies

pytestmark = pytest.mark.anyio


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def quiet() -> RetryPolicy:
    return RetryPolicy(max_retries=0, initial_delay=0.0)


# -- profiles and factories ----------------------------------------------------------------


def test_a_profile_extends_with_merged_tools() -> None:
    @tool
    def multiply(a: int, b: int) -> int:  # the same name: replaces the shared one
        """Multiply, differently."""
        return a * b * 1

    shared = Profile(model="gpt-5.5", instructions="Be brief.", tools=(add, multiply_shared()))
    support = shared.extend(instructions="You handle refunds.", tools=[multiply], temperature=0.2)
    assert support.model == "gpt-5.5"
    assert support.instructions == "You handle refunds."
    assert [t.name for t in support.tools] == ["add", "multiply"]
    assert support.tools[1] is multiply
    assert support.options == {"temperature": 0.2}
    loop = support.build()
    assert loop.instructions == "You handle refunds."
    assert loop.tool_definitions == ["add", "multiply"]
    with pytest.raises(ConfigurationError, match="needs a model"):
        Profile().build()


def multiply_shared() -> Any:
    return multiply


async def test_a_factory_gets_the_context_and_fields_extend_the_profile() -> None:
    seen: list[AgentContext] = []

    def support(context: AgentContext) -> dict[str, Any]:
        seen.append(context)
        return {"instructions": f"Customer {context.id}.", "tools": [add]}

    agents = Agents(
        {"support": support, "fixed": Profile(model="gpt-4o")},
        profile=Profile(model="gpt-5.5", tools=(multiply,), options={"retries": quiet()}),
    )
    loop = await agents.loop_for(
        AgentContext("support", "cust-9", "billing", env={"X": "1"}, payload={"a": 1})
    )
    assert loop is not None
    assert (loop.model, loop.instructions) == ("gpt-5.5", "Customer cust-9.")
    assert loop.tool_definitions == ["multiply", "add"]
    assert (seen[0].id, seen[0].session, seen[0].env, seen[0].payload) == (
        "cust-9",
        "billing",
        {"X": "1"},
        {"a": 1},
    )
    fixed = await agents.loop_for(AgentContext("fixed"))
    assert fixed is not None and fixed.model == "gpt-4o" and fixed.tool_definitions == ["multiply"]
    assert await agents.loop_for(AgentContext("nobody")) is None
    assert agents.names == ["fixed", "support"]


async def test_old_style_factories_still_get_the_name() -> None:
    names: list[str] = []

    def factory(name: str) -> Loop:
        names.append(name)
        return Loop("gpt-5.5")

    async def async_factory(ctx: AgentContext) -> Loop:
        return Loop(f"model-for-{ctx.id}")

    assert await Agents(factory).loop_for(AgentContext("helper", "u1")) is not None
    assert names == ["helper"]
    made = await Agents(async_factory).loop_for(AgentContext("x", "u2"))
    assert made is not None and made.model == "model-for-u2"

    def bad(context: AgentContext) -> int:
        return 3

    with pytest.raises(ConfigurationError, match="returned int"):
        await Agents(bad).loop_for(AgentContext("x"))  # type: ignore[arg-type]


# -- the harness -------------------------------------------------------------------------


async def test_init_agent_sessions_prompt_with_the_store_the_server_uses(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    api = ScriptedAPI([*tool_replies(), text_reply("again"), text_reply("other")])

    def calc(context: AgentContext) -> Loop:
        return Loop("gpt-5.5", tools=[multiply], http_client=api.client(), retries=quiet())

    harness = await init_agent(calc, id="cust-1", store=db)
    assert harness.name == "calc"
    billing = await harness.session("billing")  # awaiting a session is allowed
    first = await billing.prompt(QUESTION)
    assert first.text == ANSWER
    second = await harness.session("billing").prompt("And again?")
    assert second.text == "again"
    assert api.bodies[2]["input"][: len(first.items)] == first.items
    other = await harness.session("other").prompt("Hi")
    assert [m.get("content") for m in api.bodies[3]["input"]] == ["Hi"]
    assert other.text == "other"
    await harness.aclose()

    # A server on the same store continues the same session.
    served_api = ScriptedAPI([text_reply("from the server")])

    def served(context: AgentContext) -> Loop:
        return Loop("gpt-5.5", http_client=served_api.client(), retries=quiet())

    transport = httpx.ASGITransport(app({"calc": served}, store=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post(
            "/agents/calc/cust-1", json={"message": "Server?", "session": "billing"}
        )
    assert answer.json()["final_response"] == "from the server"
    assert served_api.bodies[0]["input"][-1] == {"role": "user", "content": "Server?"}
    assert len(served_api.bodies[0]["input"]) == len(second.items) + 1


async def test_an_exported_turn_replays_identically(tmp_path: Path) -> None:
    api = ScriptedAPI([*tool_replies(), text_reply("again")])
    loop = Loop("gpt-5.5", tools=[multiply], http_client=api.client(), retries=quiet())
    async with await init_agent(loop, name="calc", id="u1", store=tmp_path / "s.db") as harness:
        session = harness.session()
        await session.prompt(QUESTION)
        await session.prompt("again?")
        whole = Trace.parse(await session.export())
        last = Trace.parse(await session.export(-1))
    assert len(whole.of_kind("end")) == 2
    assert (await replay(last)).identical
    first_turn = Trace.parse(
        await (await init_agent(loop, name="calc", id="u1", store=tmp_path / "s.db"))
        .session()
        .export(0)
    )
    assert (await replay(first_turn)).identical


async def test_dispatch_in_code_runs_once_per_idempotency_key(tmp_path: Path) -> None:
    api = ScriptedAPI([text_reply("handled")])
    loop = Loop("gpt-5.5", http_client=api.client(), retries=quiet())
    receipt = await dispatch(
        loop,
        name="hooks",
        id="acct",
        input={"event": "paid"},
        store=tmp_path / "s.db",
        idempotency_key="evt-1",
    )
    assert receipt.status == "queued"
    harness = await init_agent(loop, name="hooks", id="acct", store=tmp_path / "s.db")
    again = await harness.dispatch({"event": "paid"}, idempotency_key="evt-1")
    assert again.dispatch_id == receipt.dispatch_id
    (done,) = await harness.drain()
    assert done.status == "done" and done.result["final_response"] == "handled"
    assert await harness.drain() == []
    assert api.bodies[0]["input"] == [{"role": "user", "content": '{"event":"paid"}'}]
    await harness.aclose()


async def test_a_retried_dispatch_answers_from_the_turn_an_earlier_attempt_stored(
    tmp_path: Path,
) -> None:
    api = ScriptedAPI([])  # the model must not be asked again
    loop = Loop("gpt-5.5", http_client=api.client(), retries=quiet())
    harness = await init_agent(loop, name="hooks", id="acct", store=tmp_path / "s.db")
    receipt = await harness.dispatch("pay")
    # A worker claims it, stores the turn, and dies before marking it done.
    assert (await harness.store.claim("dead", lease=0)) is not None
    said = [{"role": "user", "content": "pay"}, {"role": "assistant", "content": "paid"}]
    await harness.store.append_turn(
        SessionKey("hooks", "acct"),
        NewTurn(items=said, metadata={"dispatch_id": receipt.dispatch_id, "text": "paid"}),
    )
    (done,) = await harness.drain()
    assert (done.status, done.attempts) == ("done", 2)
    assert done.result["final_response"] == "paid"
    assert done.result["messages"] == said
    assert api.requests == []
    assert len(await harness.store.turns(SessionKey("hooks", "acct"))) == 1
    await harness.aclose()


def test_what_a_dispatch_says() -> None:
    assert message_of("plain") == "plain"
    assert message_of({"user_instruction": "do it", "x": 1}) == "do it"
    assert message_of({"message": "hi"}) == "hi"
    assert message_of([1, {"a": None}]) == '[1,{"a":null}]'


async def test_a_session_past_its_caps_is_refused(tmp_path: Path) -> None:
    api = ScriptedAPI([text_reply("one")])
    loop = Loop("gpt-5.5", http_client=api.client(), retries=quiet())
    store = SQLiteStore(tmp_path / "s.db", limits=SessionLimits(max_turns=1))
    harness = await init_agent(loop, name="a", id="b", store=store)
    await harness.session().prompt("first")
    with pytest.raises(SessionFull):
        await harness.session().prompt("second")
    assert len(api.requests) == 1
    await harness.aclose()


# -- agent folders and serve-agent's checks --------------------------------------------------


AGENT = """
from rawloop.agents import Profile
agent = Profile(model="gpt-5.5", instructions="I am {name}.", options={{"base_url": "{base}"}})
"""


def test_a_folder_serves_each_module_as_an_agent(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "billing.py").write_text(AGENT.format(name="billing", base="http://127.0.0.1:9/v1"))
    (folder / "support.py").write_text("def make_agent(context):\n    return None\n")
    (folder / "_shared.py").write_text("x = 1\n")
    found = load_agents_dir(folder)
    assert sorted(found) == ["billing", "support"]
    assert isinstance(found["billing"], Profile)
    (folder / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigurationError, match="no agent in it"):
        load_agents_dir(folder)
    with pytest.raises(ConfigurationError, match="not a folder"):
        load_agents_dir(tmp_path / "nowhere")


def test_serve_agent_refuses_to_boot_without_the_key_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    runs: list[Any] = []
    fake = types.ModuleType("uvicorn")
    fake.run = lambda asgi, **options: runs.append(asgi)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "remote.py").write_text(AGENT.format(name="remote", base="https://api.openai.com/v1"))
    with pytest.raises(ConfigurationError, match=r"agent 'remote'.*OPENAI_API_KEY"):
        serve_agent(str(folder))
    assert runs == []
    # A loopback endpoint needs no key.
    (folder / "remote.py").write_text(AGENT.format(name="remote", base="http://127.0.0.1:9/v1"))
    assert serve_agent(str(folder)) == 0
    assert runs[0].agents.names == ["remote"]
    monkeypatch.setenv("OPENAI_API_KEY", "test-" + "value")
    (folder / "remote.py").write_text(AGENT.format(name="remote", base="https://api.openai.com/v1"))
    assert serve_agent(str(folder)) == 0


def test_a_public_address_without_authorize_is_warned_about() -> None:
    agents = Agents(Loop("gpt-5.5", base_url="http://127.0.0.1:9/v1"))
    (warning,) = check_before_serving(agents, "0.0.0.0", None)
    assert "not loopback" in warning and "--authorize" in warning
    assert check_before_serving(agents, "0.0.0.0", lambda *a: True) == []
    assert check_before_serving(agents, "127.0.0.1", None) == []
    assert check_before_serving(agents, "::1", None) == []


def test_the_command_prints_the_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("uvicorn")
    fake.run = lambda asgi, **options: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "uvicorn", fake)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert main(["serve-agent", "rawloop.serve.agents:Profile", "--host", "0.0.0.0"]) == 0
    assert "warning: listening on 0.0.0.0, not loopback" in capsys.readouterr().err


# -- rawloop sessions ------------------------------------------------------------------------


def test_rawloop_sessions_list_show_export(tmp_path: Path) -> None:
    db = tmp_path / "s.db"

    async def converse() -> None:
        api = ScriptedAPI([*tool_replies(), text_reply("again")])
        loop = Loop("gpt-5.5", tools=[multiply], http_client=api.client(), retries=quiet())
        harness = await init_agent(loop, name="calc", id="u1", store=db)
        await harness.session().prompt(QUESTION)
        await harness.session().prompt("again?")
        await harness.aclose()

    anyio.run(converse)

    def run(*argv: str) -> tuple[int, bytes]:
        out = io.BytesIO()
        wrapper = io.TextIOWrapper(out, encoding="utf-8")
        with redirect_stdout(wrapper):
            status = main(list(argv))
            wrapper.flush()
        return status, out.getvalue()

    status, listed = run("sessions", "list", "--store", str(db))
    assert status == 0
    assert listed.decode().split("\t")[:4] == ["calc", "u1", "default", "2 turns"]
    status, shown = run("sessions", "show", "calc", "u1", "--store", str(db))
    assert status == 0 and b"multiply" in shown and b"again" in shown
    exported = tmp_path / "turn.jsonl"
    status, _ = run(
        "sessions", "export", "calc", "u1", "--turn", "-1", "-o", str(exported), "--store", str(db)
    )
    assert status == 0
    assert main(["replay", str(exported)]) == 0  # 0: identical
    status, whole = run("sessions", "export", "calc", "u1", "--store", str(db))
    assert [orjson.loads(line)["kind"] for line in whole.splitlines()].count("header") == 2
    assert main(["sessions", "show", "calc", "nobody", "--store", str(db)]) == 2
    assert main(["sessions", "list", "--store", str(tmp_path / "none.db")]) == 2
    assert main(["sessions", "export", "calc", "u1", "--turn", "7", "--store", str(db)]) == 2
    assert SessionKey("calc", "u1")
