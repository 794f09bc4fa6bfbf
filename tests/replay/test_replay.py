"""Replay in process: bundled traces replay identically; changes and faults are caught."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from rawloop import Loop, Trace, tool
from rawloop.core.errors import InvalidEventData, ReplayDivergence
from rawloop.replay.faults import parse_fault
from rawloop.replay.replayer import (
    ReplayTransport,
    Responder,
    expected_outputs,
    loop_from_trace,
    replay,
)

pytestmark = pytest.mark.anyio

TRACES = sorted((Path(__file__).parents[2] / "traces").glob("*.jsonl"))
ROUNDTRIP = Path(__file__).parents[2] / "traces" / "tool-roundtrip.jsonl"
RETRY = Path(__file__).parents[2] / "traces" / "retry-after-cut.jsonl"


@pytest.mark.parametrize("chunking", ["recorded", "events", "bytes"])
@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
async def test_every_bundled_trace_replays_identically(path: Path, chunking: str) -> None:
    report = await replay(path, chunking=chunking)
    assert report.identical, str(report)
    end = Trace.load(path).end()
    assert end is not None and report.result is not None
    assert report.result.stop_reason == end["stop_reason"]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.stem)
async def test_every_bundled_trace_survives_hostile_chunking(path: Path, seed: int) -> None:
    report = await replay(path, chunking="hostile", seed=seed)
    assert report.identical, str(report)


async def test_a_changed_instruction_is_a_divergence_at_iteration_0() -> None:
    trace = Trace.load(ROUNDTRIP)
    loop = loop_from_trace(trace)
    loop.instructions = "You are terse."
    report = await replay(trace, loop)
    assert report.verdict == "diverged" and report.divergence is not None
    assert (report.divergence.iteration, report.divergence.path) == (0, "instructions")
    assert report.divergence.recorded is not None or report.divergence.actual == "You are terse."


async def test_a_changed_tool_result_is_caught_at_the_next_iteration() -> None:
    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b + 1  # the regression

    # The user's own loop, as their code builds it: no key, no transport.
    loop = Loop(
        "gpt-5.5",
        tools=[multiply],
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        store=False,
    )
    report = await replay(ROUNDTRIP, loop, live_tools=True)
    assert report.verdict == "diverged" and report.divergence is not None
    assert report.divergence.iteration == 1
    assert report.divergence.path == "input[2].output"
    assert (report.divergence.recorded, report.divergence.actual) == ("2869461", "2869462")


async def test_warn_mode_goes_on_and_lists_tool_differences() -> None:
    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return 7

    loop = Loop(
        "gpt-5.5",
        tools=[multiply],
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        store=False,
    )
    with pytest.warns(RuntimeWarning, match=r"input\[2\]\.output"):
        report = await replay(ROUNDTRIP, loop, live_tools=True, on_divergence="warn")
    assert report.verdict == "diverged" and len(report.divergences) == 1
    assert report.tool_differences == [
        {
            "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
            "name": "multiply",
            "recorded": "2869461",
            "actual": "7",
        }
    ]
    assert report.result is not None and report.result.iterations == 2


async def test_unconsumed_recordings_are_reported() -> None:
    loop = loop_from_trace(Trace.load(ROUNDTRIP))
    loop.max_iterations = 1
    report = await replay(ROUNDTRIP, loop)
    assert report.verdict == "diverged" and report.divergence is not None
    assert "1 recorded request never made" in str(report.divergence)
    assert report.unconsumed[0].iteration == 1


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        "iter=1,attempt=0:status=429,retry-after=0",
        "iter=0:status=503,count=2",
        "iter=0,attempt=0:cut-after-events=5",
        "iter=1,attempt=0:cut-after-bytes=100",
        "iter=0,attempt=0:drop",
        "iter=0:stall=0.001",
    ],
)
async def test_recoverable_faults_are_retried_and_the_run_matches(fault: str) -> None:
    events: list[Any] = []
    watcher = type("W", (), {"on_error": lambda self, info: events.append(info)})()
    report = await replay(ROUNDTRIP, faults=[fault], hooks=[watcher])
    assert report.identical, str(report)
    if "stall" not in fault:
        assert events and all(e.will_retry for e in events)


async def test_a_malformed_event_is_a_typed_error_with_the_partial_turn() -> None:
    report = await replay(ROUNDTRIP, faults=["iter=0:malformed=3"])
    assert report.verdict == "error" and isinstance(report.error, InvalidEventData)
    assert report.error.event_index == 4 and report.error.partial is not None
    assert report.result is not None and report.result.stop_reason == "error"


async def test_duplicated_and_dropped_events_change_the_decision() -> None:
    text_trace = Path(__file__).parents[2] / "traces" / "retry-after-cut.jsonl"
    dup = await replay(text_trace, faults=["iter=0,attempt=2:duplicate-event=4"])
    assert dup.verdict == "diverged" and dup.divergence is not None
    # The done event corrects the text; the repeat still shows, as warnings.
    assert dup.divergence.path == "turn.warnings[0]"
    assert dup.result is not None and dup.result.text == "pong"
    assert any("differs between deltas" in w for w in dup.result.turns[0].warnings)
    dropped = await replay(ROUNDTRIP, faults=["iter=0:drop-event=3"])
    assert dropped.verdict == "diverged" and dropped.divergence is not None
    assert dropped.divergence.path.startswith("turn.")


def test_fault_specs_are_parsed_and_bad_ones_explained() -> None:
    fault = parse_fault("iter=1,attempt=0:status=429,retry-after=1.5,count=2")
    assert (fault.action, fault.value, fault.iteration, fault.attempt) == ("status", 429, 1, 0)
    assert (fault.retry_after, fault.count) == (1.5, 2)
    assert parse_fault("cut-after-events=5").iteration is None
    from rawloop import ConfigurationError

    for bad, words in [
        ("iter=0:explode=1", "exactly one action"),
        ("iter=0:status=abc", "needs a number"),
        ("when=0:drop", "unknown selector"),
        ("iter=0:drop,colour=red", "unknown option"),
    ]:
        with pytest.raises(ConfigurationError, match=words):
            parse_fault(bad)


# -- the responder alone ----------------------------------------------------------------


def test_a_request_past_the_end_of_the_trace_is_a_divergence() -> None:
    trace = Trace.load(ROUNDTRIP)
    responder = Responder(trace)
    for exchange in trace.exchanges():
        responder.answer(exchange.request["body"])
    with pytest.raises(ReplayDivergence, match="has no recorded answer"):
        responder.answer({"model": "x"})


def test_recorded_pacing_is_scaled_by_rate() -> None:
    trace = Trace.load(ROUNDTRIP)
    exchange = trace.exchanges()[0]
    times = [exchange.response["t"], *(c["t"] for c in exchange.chunks)]  # type: ignore[index]
    gaps = [b - a for a, b in pairwise(times)]
    answer = Responder(trace, rate=2.0).answer(exchange.request["body"])
    assert answer.delays == pytest.approx([max(g, 0) * 2.0 for g in gaps])
    assert Responder(trace).answer(exchange.request["body"]).delays == [0.0] * len(exchange.chunks)


def test_recorded_chunk_boundaries_are_kept() -> None:
    trace = Trace.load(ROUNDTRIP)
    exchange = trace.exchanges()[0]
    answer = Responder(trace).answer(exchange.request["body"])
    assert [len(c) for c in answer.chunks] == [len(c["text"]) for c in exchange.chunks]


async def test_the_transport_serves_the_recorded_headers_and_status() -> None:
    trace = Trace.load(Path(__file__).parents[2] / "traces" / "retry-after-cut.jsonl")
    first = trace.exchanges()[0]
    async with httpx.AsyncClient(transport=ReplayTransport(trace)) as client:
        response = await client.post("http://x/v1/responses", json=first.request["body"])
    assert response.status_code == 429
    assert response.headers["retry-after-ms"] == "50"
    assert b"Rate limit reached" in response.content


async def test_replaying_with_the_users_loop_keeps_it_unchanged() -> None:
    trace = Trace.load(ROUNDTRIP)
    loop = loop_from_trace(trace)
    report = await replay(trace, loop)
    assert report.identical
    assert loop.tool_runner is None
    assert isinstance(loop, Loop)


def test_shape_serves_the_exchange_it_is_given_and_moves_no_counter() -> None:
    trace = Trace.load(RETRY)
    responder = Responder(trace, faults=["iter=0,attempt=0:status=503"])
    limited, broken, ok = responder.exchanges
    injected = responder.shape(ok, 0, 0)
    assert (injected.status, injected.injected, injected.attempt) == (503, True, 0)
    answer = responder.shape(ok, 0, 1)
    assert (answer.status, answer.injected, answer.fail) == (200, False, None)
    assert b"".join(answer.chunks) == ok.body
    assert responder.shape(broken, 0, 1).fail == "cut"  # the recorded reset
    assert responder.shape(limited, 0, 1).status == 429
    # Nothing was chosen: answer() still starts at the first recording.
    assert responder.unconsumed() == responder.exchanges and responder.served == 0
    # A caller's own faults keep their own counts.
    faults = [parse_fault("iter=0:status=500,count=1")]
    assert responder.shape(ok, 0, 5, faults=faults).status == 500
    assert responder.shape(ok, 0, 6, faults=faults).status == 200
    assert faults[0].used == 1 and responder.faults[0].used == 1


def test_answer_is_choose_compare_then_shape() -> None:
    trace = Trace.load(ROUNDTRIP)
    chooser, shaper = (Responder(trace, chunking="hostile", seed=3) for _ in range(2))
    for exchange, own in zip(trace.exchanges(), shaper.exchanges):
        answer = chooser.answer(exchange.request["body"])
        assert b"".join(answer.chunks) != exchange.body  # hostile: cut and changed...
        assert answer.chunks == shaper.shape(own, own.iteration, 0).chunks  # ...the same way


async def test_replay_through_a_given_client_uses_it_and_leaves_it_open() -> None:
    trace = Trace.load(ROUNDTRIP)
    transport = ReplayTransport(trace)
    urls: list[str] = []

    async def seen(request: httpx.Request) -> None:
        urls.append(str(request.url))

    async with httpx.AsyncClient(
        transport=transport, base_url="http://replay.test/v1/", event_hooks={"request": [seen]}
    ) as client:
        report = await replay(trace, http_client=client)
        assert not client.is_closed
    assert report.identical, str(report)
    assert urls == ["http://replay.test/v1/responses"] * 2
    assert transport.responder.served == 2


async def test_with_a_given_client_the_run_is_still_compared_with_the_recording() -> None:
    trace = Trace.load(ROUNDTRIP)
    loop = loop_from_trace(trace)
    loop.max_iterations = 1
    transport = ReplayTransport(trace)
    async with httpx.AsyncClient(transport=transport) as client:
        report = await replay(trace, loop, http_client=client)
    # Whatever answers judges the requests: its unconsumed recordings are its own...
    assert len(transport.responder.unconsumed()) == 1
    assert report.unconsumed == [] and report.divergences == []
    # ...but the run itself is compared with the recording.
    assert report.verdict == "diverged" and report.divergence is not None
    assert report.divergence.path == "end.stop_reason"


async def test_an_iteration_0_edit_is_not_applied_twice(tmp_path: Path) -> None:
    from rawloop import LoopState
    from rawloop.replay.scripted import Reply, ScriptedAPI

    class AddSystem:
        def on_breakpoint(self, state: LoopState) -> None:
            if state.iteration == 0:
                state.input.insert(0, {"role": "system", "content": "be brief"})

    corpus = Path(__file__).parents[1] / "corpus"
    api = ScriptedAPI([Reply((corpus / "responses-text-minimal-1.sse").read_bytes())])
    path = tmp_path / "edited.jsonl"
    await Loop("m", http_client=api.client(), api_key="sk-x").run(
        "ping", trace=path, hooks=[AddSystem()]
    )
    assert Trace.load(path).edits()[0]  # the edit is on record
    report = await replay(path)
    assert report.identical, str(report)


# -- a corrected result: what was sent is what is expected ---------------------------------

EDITED = Path(__file__).parents[2] / "traces" / "breakpoint-edit.jsonl"


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


async def test_the_run_results_are_what_was_sent() -> None:
    """A result edited at a breakpoint is in RunResult.results as sent, not as the tool gave it."""
    report = await replay(EDITED)
    assert report.identical, str(report)
    assert report.result is not None
    assert [r.output for r in report.result.results] == ["2869461 (checked by a human)"]
    sent = report.result.items[2]["output"]
    assert sent == report.result.results[0].output
    assert expected_outputs(Trace.load(EDITED)) == {
        "call_sVidsfFJ6zlzRpelrPkTPlpd": "2869461 (checked by a human)"
    }


async def test_live_tools_are_compared_with_the_corrected_result_not_masked_by_it() -> None:
    report = await replay(EDITED, tools=[multiply], live_tools=True)
    # The live tool says 2869461; the recording corrected it: the edit is not laid over it.
    assert report.verdict == "diverged"
    assert report.divergence is not None and report.divergence.path == "input[2].output"
    assert report.tool_differences == [
        {
            "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
            "name": "multiply",
            "recorded": "2869461 (checked by a human)",
            "actual": "2869461",
        }
    ]
    assert report.result is not None and report.result.results[0].output == "2869461"


async def test_live_tools_keep_the_recorded_definitions() -> None:
    @tool
    def multiply(a: int, b: int, c: int = 0) -> int:  # its schema differs from the recorded one
        """Multiply two numbers."""
        return a * b

    report = await replay(ROUNDTRIP, tools=[multiply], live_tools=True)
    assert report.identical, str(report)
    assert report.tool_differences == []


async def test_the_verdict_counts_iterations_in_words() -> None:
    one = await replay(RETRY)  # one iteration, retried once
    assert str(one).startswith("identical: 1 iteration replayed,")
    two = await replay(ROUNDTRIP)
    assert str(two).startswith("identical: 2 iterations replayed,")
