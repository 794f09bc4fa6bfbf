"""The pytest plugin, driven through pytester: replay, divergence, unconsumed traces, recording."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import textwrap
from pathlib import Path

import pytest

from rawloop import Trace

pytest_plugins = ["pytester"]

REPO = Path(__file__).parents[2]
TRACES = REPO / "traces"
CORPUS = REPO / "tests" / "corpus"


def _plugin_args() -> list[str]:
    """Load the plugin by hand unless its pytest11 entry point already does."""
    points = importlib.metadata.entry_points(group="pytest11")
    if any(point.value == "rawloop.capture.pytest_plugin" for point in points):
        return []
    return ["-p", "rawloop.capture.pytest_plugin"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A scratch project holding copies of the bundled traces."""
    (pytester.path / "traces").mkdir()
    for name in ("tool-roundtrip.jsonl", "chat-run.jsonl", "breakpoint-edit.jsonl"):
        shutil.copy(TRACES / name, pytester.path / "traces" / name)
    return pytester


def source(*parts: str) -> str:
    """Test-file source from pieces indented each their own way."""
    return "\n".join(textwrap.dedent(part) for part in parts)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # hypothesis's plugin costs most of a second per inner session and is not needed here.
    quiet = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    return pytester.runpytest(*_plugin_args(), *quiet, *args)


MULTIPLY = '''
from rawloop import tool

@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b

ROUNDTRIP = dict(
    include=["reasoning.encrypted_content"], reasoning={"effort": "low"}, store=False
)
ASK = "What is 1231 * 2331? Use the multiply tool."
'''


def test_a_matching_replay_passes_in_every_style(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_ok=source(
            """
        import pytest
        from rawloop.replay.replayer import ReplayTransport
        """,
            MULTIPLY,
            """
        @pytest.mark.anyio
        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        async def test_fixture_loop(rawloop_replay):
            result = await rawloop_replay.run()
            assert "2,869,461" in result.text
            assert isinstance(rawloop_replay.transport, ReplayTransport)
            assert rawloop_replay.trace.dialect == "responses"
            assert rawloop_replay.report.identical

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl", chunking="hostile", seed=4)
        def test_sync_with_own_loop(rawloop_replay):
            rawloop_replay.make_loop("gpt-5.5", tools=[multiply], **ROUNDTRIP)
            result = rawloop_replay.run_sync(ASK)
            assert result.stop_reason == "completed"
            assert [r.output for r in result.results] == ["2869461"]

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl", live_tools=True)
        def test_live_tools(rawloop_replay):
            rawloop_replay.make_loop("gpt-5.5", tools=[multiply], **ROUNDTRIP)
            assert rawloop_replay.run_sync(ASK).iterations == 2

        @pytest.mark.anyio
        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl",
                                   faults=["iter=1:status=429,retry-after=0"])
        async def test_loop_used_directly_with_a_fault(rawloop_replay):
            result = await rawloop_replay.loop.run(ASK)
            assert result.iterations == 2

        @pytest.mark.rawloop_trace("traces/chat-run.jsonl")
        def test_chat(rawloop_replay):
            assert rawloop_replay.run_sync().turns[0].calls[0].name == "multiply"

        @pytest.mark.rawloop_trace("traces/breakpoint-edit.jsonl")
        def test_recorded_edits_are_applied(rawloop_replay):
            result = rawloop_replay.run_sync()
            assert result.items[2]["output"].endswith("(checked by a human)")
        """,
        ),
    )
    result = run(project, "-v")
    result.assert_outcomes(passed=6)


def test_a_diverging_run_fails_with_the_trace_path_and_where(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_diverge=source(
            """
        import pytest
        """,
            MULTIPLY,
            """
        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_changed_instructions(rawloop_replay):
            rawloop_replay.make_loop("gpt-5.5", "Be terse.", tools=[multiply], **ROUNDTRIP)
            rawloop_replay.run_sync(ASK)
            raise AssertionError("not reached: run() fails first")

        @pytest.mark.anyio
        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl", live_tools=True)
        async def test_changed_tool_used_directly(rawloop_replay):
            @tool
            def multiply(a: int, b: int) -> int:
                \"\"\"Multiply two numbers.\"\"\"
                return a * b + 1
            loop = rawloop_replay.make_loop("gpt-5.5", tools=[multiply], **ROUNDTRIP)
            await loop.run(ASK)

        @pytest.mark.anyio
        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        async def test_inside_a_task_group(rawloop_replay):
            import anyio
            loop = rawloop_replay.make_loop("gpt-5.5", "Be brief.", tools=[multiply], **ROUNDTRIP)
            async with anyio.create_task_group() as group:
                group.start_soon(loop.run, ASK)

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_checked_by_hand(rawloop_replay):
            rawloop_replay.check = False
            rawloop_replay.make_loop("gpt-5.5", "Be terse.", tools=[multiply], **ROUNDTRIP)
            rawloop_replay.run_sync(ASK, check=False)
            assert rawloop_replay.report.verdict == "diverged"
            assert rawloop_replay.report.divergence.path == "instructions"
        """,
        ),
    )
    result = run(project)
    result.assert_outcomes(failed=3, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*rawloop replay of traces/tool-roundtrip.jsonl: diverged: iteration 0: "
            "the request differs from the recording at instructions*",
            "*rawloop replay of traces/tool-roundtrip.jsonl: diverged: iteration 1: "
            "the request differs from the recording at input[[]2[]].output: "
            "'2869461' != '2869462'*",
            "*test_inside_a_task_group*",
            "rawloop replay of traces/tool-roundtrip.jsonl: diverged: iteration 0: "
            "the request differs from the recording at instructions: <missing> != 'Be brief.'",
        ]
    )
    assert "not reached" not in result.stdout.str()


def test_an_unconsumed_trace_fails_the_test(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_unconsumed="""
        import pytest

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_stops_early(rawloop_replay):
            rawloop_replay.loop.max_iterations = 1
            rawloop_replay.run_sync(check=False)

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_never_runs(rawloop_replay):
            assert rawloop_replay.trace.end()["stop_reason"] == "completed"
        """,
    )
    result = run(project)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_stops_early*",
            "*rawloop replay of traces/tool-roundtrip.jsonl: diverged: the run ended with "
            "1 recorded request never made (first: iteration 1, attempt 0)*",
            "*test_never_runs*",
            "*rawloop replay of traces/tool-roundtrip.jsonl: diverged: the test never ran "
            "the loop: 2 recorded requests never made*",
        ]
    )


def test_a_missing_trace_fails_clearly_in_replay_mode(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_missing="""
        import pytest

        @pytest.mark.rawloop_trace("traces/nope.jsonl")
        def test_it(rawloop_replay):
            raise AssertionError("not reached")
        """,
    )
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*rawloop: trace traces/nope.jsonl does not exist (record mode 'none'); record it "
            "with pytest --rawloop-record=once test_missing.py::test_it*"
        ]
    )


def test_bad_marker_options_and_bad_traces_are_explained(project: pytest.Pytester) -> None:
    (project.path / "traces" / "broken.jsonl").write_text('{"kind": "request"}\n')
    project.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl", chunkin="bytes")
        def test_typo(rawloop_replay):
            pass

        @pytest.mark.rawloop_trace("traces/broken.jsonl")
        def test_broken(rawloop_replay):
            pass
        """,
    )
    result = run(project)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*rawloop_trace: unknown option(s) chunkin; valid: chunking, *",
            "*rawloop: cannot replay traces/broken.jsonl: line 1: *the first record must be "
            "the header*",
        ]
    )


RECORDING = (
    f"""
import json
from pathlib import Path

import pytest
from rawloop.replay.scripted import Reply, ScriptedAPI

CORPUS = Path({str(CORPUS)!r})
"""
    + MULTIPLY
    + '''

@pytest.fixture
def rawloop_record_client():
    """Record against scripted corpus streams instead of the network."""
    with open("client-used.log", "a") as log:
        log.write("used\\n")
    return ScriptedAPI(
        [
            Reply((CORPUS / "responses-function-call-1.sse").read_bytes(), chunk_size=300),
            Reply((CORPUS / "responses-text-after-tool-1.sse").read_bytes(), chunk_size=300),
        ]
    ).client()


@pytest.mark.rawloop_trace("traces/new.jsonl")
def test_roundtrip(rawloop_replay):
    rawloop_replay.make_loop("gpt-5.5", tools=[multiply], **ROUNDTRIP)
    result = rawloop_replay.run_sync(ASK)
    assert result.text == "1231 \\u00d7 2331 = **2,869,461**"
'''
)


def test_record_once_records_a_missing_trace_then_replays_it(project: pytest.Pytester) -> None:
    project.makepyfile(test_record=RECORDING)
    trace_path = project.path / "traces" / "new.jsonl"
    used = project.path / "client-used.log"

    result = run(project, "--rawloop-record=once", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*rawloop: recorded 1 trace -*", "traces/new.jsonl"])
    trace = Trace.load(trace_path)
    assert trace.header["metadata"]["recorded_by"] == "rawloop.pytest_plugin"
    assert trace.end() is not None and trace.end()["stop_reason"] == "completed"  # type: ignore[index]
    assert [r.data["output"] for r in trace.of_kind("result")] == ["2869461"]
    assert "sk-" not in trace_path.read_text()
    assert not (project.path / "traces" / "new.jsonl.part").exists()
    assert used.read_text().count("used") == 1
    recorded = trace_path.read_bytes()

    # Now a replay test: the default mode and "once" both replay, never touching the client.
    for mode in ("none", "once"):
        result = run(project, f"--rawloop-record={mode}")
        result.assert_outcomes(passed=1)
        assert used.read_text().count("used") == 1
        assert trace_path.read_bytes() == recorded

    # "all" records again.
    result = run(project, "--rawloop-record=all")
    result.assert_outcomes(passed=1)
    assert used.read_text().count("used") == 2
    assert Trace.load(trace_path).header["created"] != trace.header["created"]


def test_a_failed_recording_never_replaces_the_trace(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_record=RECORDING.replace("2,869,461", "a wrong expectation")
        + """

@pytest.mark.rawloop_trace("traces/other.jsonl")
def test_records_without_make_loop(rawloop_replay):
    rawloop_replay.loop
"""
    )
    result = run(project, "--rawloop-record=once")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*rawloop: recording traces/other.jsonl needs the loop built with "
            "rawloop_replay.make_loop(*",
            "*the failed test's recording was left at *new.jsonl.part*",
        ]
    )
    assert not (project.path / "traces" / "new.jsonl").exists()
    assert (project.path / "traces" / "new.jsonl.part").exists()


def test_paths_resolve_from_the_test_file_then_the_rootdir(project: pytest.Pytester) -> None:
    tests = project.mkpydir("sub")
    (tests / "traces").mkdir()
    shutil.copy(TRACES / "chat-run.jsonl", tests / "traces" / "local.jsonl")
    (tests / "test_paths.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.rawloop_trace("traces/local.jsonl")\n'
        "def test_next_to_the_test(rawloop_replay):\n"
        "    assert rawloop_replay.path.parent.parent.name == 'sub'\n"
        "    rawloop_replay.run_sync()\n\n"
        '@pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")\n'
        "def test_from_the_rootdir(rawloop_replay):\n"
        "    rawloop_replay.run_sync()\n\n"
        "def test_default_name(rawloop_replay):\n"
        "    pass\n"
    )
    result = run(project)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*trace sub/traces/test_paths/test_default_name.jsonl does not*"])


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="pytest-xdist not installed")
def test_replays_run_under_xdist(project: pytest.Pytester) -> None:
    body = "\n".join(
        f"""
@pytest.mark.rawloop_trace("traces/{name}")
def test_{n}(rawloop_replay):
    rawloop_replay.run_sync()
"""
        for n, name in enumerate(["tool-roundtrip.jsonl", "chat-run.jsonl"] * 3)
    )
    project.makepyfile(test_parallel="import pytest\n" + body)
    result = run(project, "-n", "2")
    result.assert_outcomes(passed=6)


# -- rawloop_server: the customer's own code against a capture ------------------------------

OPENAI_APP = '''
import json

import pytest
from openai import OpenAI

TOOLS = [{
    "type": "function", "name": "multiply", "description": "Multiply two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                   "b": {"type": "integer"}}, "required": ["a", "b"],
                   "additionalProperties": False},
    "strict": False,
}]


def multiply(a, b):
    return a * b


def ask(client, question):
    """The customer's tool loop, as it runs in production."""
    items = [{"role": "user", "content": question}]
    while True:
        response = client.responses.create(
            model="gpt-5.5", input=items, tools=TOOLS, include=["reasoning.encrypted_content"],
            reasoning={"effort": "low"}, store=False,
        )
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            return response.output_text
        for call in calls:
            items.append(call.model_dump(exclude_none=True))
            output = multiply(**json.loads(call.arguments))
            items.append({"type": "function_call_output", "call_id": call.call_id,
                          "output": str(output)})
'''


def test_the_customers_openai_code_runs_against_the_capture(project: pytest.Pytester) -> None:
    project.makepyfile(
        app=OPENAI_APP,
        test_app=source(
            """
        import pytest
        from openai import OpenAI

        import app

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_unchanged(rawloop_server):
            client = OpenAI(base_url=rawloop_server.base_url, api_key="test", max_retries=0)
            assert "2,869,461" in app.ask(client, "What is 1231 * 2331? Use the multiply tool.")
            assert rawloop_server.server.served == 2

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_tool_bug(rawloop_server, monkeypatch):
            monkeypatch.setattr(app, "multiply", lambda a, b: a + b)
            client = OpenAI(base_url=rawloop_server.base_url, api_key="test", max_retries=0)
            app.ask(client, "What is 1231 * 2331? Use the multiply tool.")

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_other_question(rawloop_server):
            client = OpenAI(base_url=rawloop_server.base_url, api_key="test", max_retries=0)
            app.ask(client, "Tell me a joke.")

        @pytest.mark.rawloop_trace("traces/tool-roundtrip.jsonl")
        def test_not_pointed_at_the_server(rawloop_server):
            pass
        """
        ),
    )
    result = run(project, "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=3)
    out = result.stdout.str()
    assert "the app sent what the capture traces/tool-roundtrip.jsonl does not hold" in out
    assert "input[2].output: '2869461' != '3562'" in out  # the tool bug, named
    assert "ConflictError" not in out  # the report, not the app's error over the 409
    assert "the test sent no request to http://127.0.0.1:" in out


AGENTS_APP = '''
import openai
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

set_tracing_disabled(True)  # no traces sent to OpenAI's platform


@function_tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def calculator(base_url: str) -> Agent:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    model = OpenAIResponsesModel("gpt-test", openai_client=client)
    return Agent(name="calculator", instructions="Use the multiply tool.", tools=[multiply],
                 model=model)
'''

AGENTS_SCRIPT = {
    "dialect": "responses",
    "model": "gpt-test",
    "turns": [
        {"calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"text": "6 * 7 = 42"},
    ],
}


async def _capture_agents(project: pytest.Pytester) -> Path:
    """The agents app run through ``rawloop record`` against a scripted model; the trace."""
    import sys

    import anyio

    from rawloop.capture.proxy import RecordingProxy
    from rawloop.replay.server import ReplayServer
    from rawloop.replay.synth import script_to_trace

    sys.path.insert(0, str(project.path))
    try:
        import app_agents  # type: ignore[import-not-found]
        from agents import Runner

        out = project.path / "captured"
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                upstream = ReplayServer([script_to_trace(AGENTS_SCRIPT)])
                port = await group.start(upstream.serve)
                proxy = RecordingProxy(f"http://127.0.0.1:{port}", out)
                await group.start(proxy.serve)
                result = await Runner.run(app_agents.calculator(proxy.url), "What is 6 * 7?")
                assert result.final_output == "6 * 7 = 42"
                group.cancel_scope.cancel()
    finally:
        sys.path.remove(str(project.path))
        sys.modules.pop("app_agents", None)
    (path,) = sorted(out.glob("run-*.jsonl"))
    return path.rename(out / "agents.jsonl")


def test_the_customers_openai_agents_code_runs_against_the_capture(
    project: pytest.Pytester,
) -> None:
    import anyio

    project.makepyfile(app_agents=AGENTS_APP)
    anyio.run(_capture_agents, project)
    project.makepyfile(
        test_agents=source(
            """
        import pytest
        from agents import Runner, function_tool

        import app_agents

        @pytest.mark.rawloop_trace("captured/agents.jsonl")
        def test_agent(rawloop_server):
            agent = app_agents.calculator(rawloop_server.base_url)
            assert Runner.run_sync(agent, "What is 6 * 7?").final_output == "6 * 7 = 42"

        @pytest.mark.rawloop_trace("captured/agents.jsonl")
        def test_agent_with_a_tool_bug(rawloop_server):
            @function_tool
            def multiply(a: int, b: int) -> int:
                \"\"\"Multiply two numbers.\"\"\"
                return a + b

            agent = app_agents.calculator(rawloop_server.base_url).clone(tools=[multiply])
            Runner.run_sync(agent, "What is 6 * 7?")
        """
        ),
    )
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the app sent what the capture captured/agents.jsonl*"])
    assert "'42' != '13'" in result.stdout.str()


def test_async_tests_name_their_marker_and_the_backend_stays_out_of_trace_names(
    project: pytest.Pytester,
) -> None:
    """README's async example runs with anyio's marker; ``[asyncio]`` is not in the file name."""
    project.makeconftest(
        """
        import pytest

        @pytest.fixture(params=["asyncio"])
        def anyio_backend(request):
            return request.param
        """
    )
    project.makepyfile(
        test_named=source(
            """
        import pytest

        @pytest.mark.anyio
        async def test_auto_named(rawloop_replay):
            assert rawloop_replay.path.name == "test_auto_named.jsonl"
            rawloop_replay.check = False

        @pytest.mark.anyio
        @pytest.mark.parametrize("n", [1])
        async def test_with_params(rawloop_replay, n):
            assert rawloop_replay.path.name == "test_with_params-1.jsonl"
            rawloop_replay.check = False
        """
        ),
    )
    for name in ("test_auto_named.jsonl", "test_with_params-1.jsonl"):
        target = project.path / "traces" / "test_named" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TRACES / "tool-roundtrip.jsonl", target)
    run(project).assert_outcomes(passed=2)


def test_live_tools_on_a_corrected_fork_fail_while_the_tool_is_buggy(
    project: pytest.Pytester,
) -> None:
    """breakpoint-edit.jsonl sent a corrected result: a live tool must return it, not be masked."""
    project.makepyfile(
        test_fork=source(
            """
        import pytest
        from rawloop import tool

        @tool
        def multiply(a: int, b: int) -> int:
            \"\"\"Multiply two numbers.\"\"\"
            return a * b

        @pytest.mark.rawloop_trace("traces/breakpoint-edit.jsonl", live_tools=True)
        def test_fork(rawloop_replay):
            rawloop_replay.make_loop(
                "gpt-5.5", tools=[multiply], include=["reasoning.encrypted_content"],
                reasoning={"effort": "low"}, store=False,
            )
            rawloop_replay.run_sync("What is 1231 * 2331? Use the multiply tool.")
        """
        ),
    )
    result = run(project)
    result.assert_outcomes(failed=1)
    assert "input[2].output: '2869461 (checked by a human)' != '2869461'" in result.stdout.str()
