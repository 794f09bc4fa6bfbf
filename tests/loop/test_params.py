"""Loop's extra keywords: request parameters are checked, a misspelt option is named."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import pytest

from rawloop import ConfigurationError, Loop
from rawloop.loop.params import CHAT_PARAMS, RESPONSES_PARAMS, UnknownParameterWarning

from ..conftest import ScriptedAPI
from .test_loop import loop_for, text_reply

LOCAL = "http://127.0.0.1:9/v1"
TRACE = Path(__file__).parents[2] / "traces" / "tool-roundtrip.jsonl"


def test_a_misspelt_loop_option_warns_with_the_option_it_resembles() -> None:
    with pytest.warns(UnknownParameterWarning, match="did you mean 'read_timeout'"):
        Loop("m", base_url=LOCAL, read_timout=5)
    with pytest.warns(UnknownParameterWarning, match="did you mean 'extra_body'"):
        Loop("m", base_url=LOCAL, extra_bdy={"top_k": 1})


def test_a_misspelt_request_parameter_warns_with_the_closest_parameter() -> None:
    with pytest.warns(UnknownParameterWarning, match="did you mean 'temperature'"):
        Loop("m", base_url=LOCAL, temprature=0.2)
    with pytest.warns(UnknownParameterWarning, match="not a chat request parameter"):
        Loop("m", base_url=LOCAL, dialect="chat", max_output_tokens=5)


def test_known_parameters_of_each_dialect_pass_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Loop("m", base_url=LOCAL, temperature=0.2, reasoning={"effort": "low"}, store=False)
        Loop("m", base_url=LOCAL, dialect="chat", max_tokens=5, n=1, stream=True)
        Loop("m", base_url=LOCAL, extra_body={"top_k": 3, "temprature": 1})


@pytest.mark.anyio
async def test_options_never_reach_the_body_and_extra_body_goes_as_is() -> None:
    api = ScriptedAPI([text_reply()])
    loop = loop_for(
        api, read_timeout=5, connect_timeout=2, temperature=0.1, extra_body={"top_k": 3}
    )
    await loop.run("hi")
    (body,) = api.bodies
    assert body["temperature"] == 0.1 and body["top_k"] == 3
    assert not {"read_timeout", "connect_timeout", "extra_body"} & set(body)


@pytest.mark.anyio
async def test_an_unknown_keyword_is_still_sent_after_the_warning() -> None:
    api = ScriptedAPI([text_reply()])
    with pytest.warns(UnknownParameterWarning):
        loop = loop_for(api, top_k=3)
    await loop.run("hi")
    assert api.bodies[0]["top_k"] == 3


def test_fields_the_loop_writes_itself_are_refused() -> None:
    for name in ("input", "messages", "stream"):
        with pytest.raises(ConfigurationError, match=rf" {name}=\.\.\.\) cannot be set"):
            Loop("m", base_url=LOCAL, **{name: False})
    with pytest.raises(ConfigurationError, match="extra_body must be a mapping"):
        Loop("m", base_url=LOCAL, extra_body=[("a", 1)])  # type: ignore[arg-type]


def test_the_lists_match_the_installed_openai_sdk() -> None:
    responses = pytest.importorskip("openai.resources.responses")
    completions = pytest.importorskip("openai.resources.chat.completions")
    owned = {"self", "model", "input", "messages", "instructions", "tools", "stream"}
    transport = {"extra_headers", "extra_query", "extra_body", "timeout"}
    for create, ours in (
        (responses.AsyncResponses.create, RESPONSES_PARAMS),
        (completions.AsyncCompletions.create, CHAT_PARAMS),
    ):
        sdk = set(inspect.signature(create).parameters) - owned - transport
        # A newer SDK may know more (they warn until listed); ours must all exist there.
        assert ours <= sdk, sorted(ours - sdk)


def test_a_replayed_body_is_sent_as_recorded_never_taken_for_options(tmp_path: Path) -> None:
    from rawloop.replay.replayer import loop_from_trace
    from rawloop.trace.format import Trace

    records = [json.loads(line) for line in TRACE.read_text().splitlines()]
    for record in records:
        if record.get("kind") == "request":
            record["body"].update(top_k=3, hooks=1, read_timeout="x")  # a hostile or odd trace
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop = loop_from_trace(Trace.load(path))
    assert loop.request_params["top_k"] == 3 and loop.request_params["hooks"] == 1
    assert loop.timeout.read == 120.0  # the body's read_timeout is a body field, not the option
