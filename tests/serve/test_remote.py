"""Remote tools: calls forwarded to a tool proxy, and the token kept out of every message."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import rawloop.loop.tools
from rawloop.core.errors import ConfigurationError
from rawloop.loop.loop import Loop
from rawloop.loop.retry import RetryPolicy
from rawloop.loop.tools import Tool, ToolRegistry, run_tool
from rawloop.serve.remote_tools import (
    RemoteContext,
    RemoteTool,
    RemoteToolError,
    remote_context,
    remote_session,
)

from ..conftest import Reply, ScriptedAPI, corpus

pytestmark = pytest.mark.anyio

# Not shaped like an API key, so nothing but RemoteTool's own scrubbing keeps it out.
TOKEN = "proxy-t0ken-5ecret-value"
PROXY = "https://proxy.example"
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


class Proxy:
    """A tool proxy stand-in: records requests, answers with ``answer(request)``."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or self.multiply

    @staticmethod
    def multiply(request: httpx.Request) -> httpx.Response:
        args = json.loads(request.content)
        return httpx.Response(200, json={"response": args["a"] * args["b"]})

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    @property
    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


def echo_auth(status: int) -> Callable[[httpx.Request], httpx.Response]:
    """A careless proxy that quotes the request's Authorization header back."""

    def answer(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        return httpx.Response(status, json={"error": f"bad credentials: {auth}"})

    return answer


def remote(proxy: Proxy, **kwargs: Any) -> RemoteTool:
    kwargs.setdefault("proxy_url", PROXY)
    kwargs.setdefault("token", TOKEN)
    kwargs.setdefault("description", "Multiply two numbers.")
    return RemoteTool("multiply", SCHEMA, http_client=proxy.client(), **kwargs)


async def call(
    tool: RemoteTool, arguments: str = '{"a": 6, "b": 7}'
) -> rawloop.loop.tools.ToolResult:
    return await run_tool(tool, tool.name, "call_1", arguments, timeout=None)


# -- it is a Tool ---------------------------------------------------------------


def test_is_a_tool_with_the_given_schema() -> None:
    tool = RemoteTool("lookup", SCHEMA, proxy_url=PROXY, token=TOKEN, description="Look it up.")
    assert isinstance(tool, Tool)
    assert tool.is_async
    assert tool.responses_schema() == {
        "type": "function",
        "name": "lookup",
        "description": "Look it up.",
        "parameters": SCHEMA,
        "strict": False,
    }
    assert tool.chat_schema()["function"]["name"] == "lookup"
    assert tool.__name__ == "lookup"
    assert list(ToolRegistry([tool])) == ["lookup"]


def test_repr_and_vars_views_never_show_the_token() -> None:
    tool = RemoteTool("lookup", SCHEMA, proxy_url=PROXY, token=TOKEN)
    assert TOKEN not in repr(tool)
    assert TOKEN not in str(tool)
    assert TOKEN not in repr(RemoteContext(PROXY, TOKEN))


def test_bad_definitions_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        RemoteTool("has space", SCHEMA)
    with pytest.raises(ConfigurationError, match="type 'object'"):
        RemoteTool("x", {"type": "string"})
    with pytest.raises(ConfigurationError, match="timeout"):
        RemoteTool("x", SCHEMA, timeout=0)
    with pytest.raises(ConfigurationError, match="not a function tool definition"):
        RemoteTool.from_definition({"type": "web_search"})


def test_from_definition_takes_both_dialects() -> None:
    responses = {
        "type": "function",
        "name": "multiply",
        "description": "Multiply.",
        "parameters": SCHEMA,
        "strict": True,
    }
    chat = {"type": "function", "function": {"name": "multiply", "parameters": SCHEMA}}
    a = RemoteTool.from_definition(responses, proxy_url=PROXY)
    b = RemoteTool.from_definition(chat, proxy_url=PROXY, description="Given.")
    assert (a.name, a.description, a.strict, a.parameters) == (
        "multiply",
        "Multiply.",
        True,
        SCHEMA,
    )
    assert (b.name, b.description, b.strict) == ("multiply", "Given.", False)
    assert a.proxy_url == PROXY


# -- calls ------------------------------------------------------------------------


async def test_a_call_posts_the_arguments_with_the_token() -> None:
    proxy = Proxy()
    result = await call(remote(proxy))
    assert result.ok, result.error
    assert result.output == "42"
    assert result.value == 42
    (request,) = proxy.requests
    assert request.method == "POST"
    assert str(request.url) == f"{PROXY}/tools/multiply"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    # The call's id travels with the arguments, so the proxy can correlate.
    assert proxy.bodies == [{"a": 6, "b": 7, "call_id": "call_1"}]


async def test_a_trailing_slash_on_the_proxy_url_is_fine() -> None:
    proxy = Proxy()
    await call(remote(proxy, proxy_url=PROXY + "/"))
    assert str(proxy.requests[0].url) == f"{PROXY}/tools/multiply"


async def test_a_string_response_is_the_output_as_is() -> None:
    proxy = Proxy(lambda r: httpx.Response(200, json={"response": "six times seven"}))
    assert (await call(remote(proxy))).output == "six times seven"


async def test_no_token_means_no_authorization_header() -> None:
    proxy = Proxy()
    await call(remote(proxy, token=None))
    assert "authorization" not in proxy.requests[0].headers


async def test_arguments_are_checked_before_anything_is_sent() -> None:
    proxy = Proxy()
    result = await call(remote(proxy), '{"a": "six"}')
    assert result.error is not None
    assert result.error["type"] == "ToolArgumentsError"
    assert proxy.requests == []


async def test_call_id_is_sent_only_when_a_call_is_running() -> None:
    proxy = Proxy()
    tool = remote(proxy)
    await call(tool)
    await tool.invoke('{"a": 6, "b": 7}')  # called directly: no function call, no id
    assert proxy.bodies == [{"a": 6, "b": 7, "call_id": "call_1"}, {"a": 6, "b": 7}]


async def test_an_argument_named_call_id_is_not_overwritten() -> None:
    schema = {"type": "object", "properties": {"call_id": {"type": "string"}}}
    proxy = Proxy(lambda r: httpx.Response(200, json={"response": "ok"}))
    tool = RemoteTool("echo", schema, proxy_url=PROXY, http_client=proxy.client())
    await run_tool(tool, "echo", "call_abc", '{"call_id": "mine"}', timeout=None)
    assert proxy.bodies == [{"call_id": "mine"}]


# -- where the proxy is -------------------------------------------------------------


async def test_the_proxy_and_token_can_come_from_the_context() -> None:
    proxy = Proxy()
    tool = RemoteTool("multiply", SCHEMA, http_client=proxy.client())
    with remote_session("https://front.example/proxy", TOKEN) as context:
        assert remote_context.get() is context
        result = await call(tool)
    assert remote_context.get() is None
    assert result.ok, result.error
    assert str(proxy.requests[0].url) == "https://front.example/proxy/tools/multiply"
    assert proxy.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_explicit_arguments_win_over_the_context() -> None:
    proxy = Proxy()
    tool = remote(proxy, token="explicit-token")
    with remote_session("https://front.example", "context-token"):
        await call(tool)
    request = proxy.requests[0]
    assert str(request.url) == f"{PROXY}/tools/multiply"
    assert request.headers["authorization"] == "Bearer explicit-token"


async def test_an_explicit_token_is_used_with_the_context_url() -> None:
    proxy = Proxy()
    tool = RemoteTool("multiply", SCHEMA, token="explicit-token", http_client=proxy.client())
    with remote_session("https://front.example", "context-token"):
        await call(tool)
    request = proxy.requests[0]
    assert str(request.url) == "https://front.example/tools/multiply"
    assert request.headers["authorization"] == "Bearer explicit-token"


async def test_the_context_token_never_goes_to_another_proxy() -> None:
    proxy = Proxy()
    tool = remote(proxy, proxy_url="https://elsewhere.example", token=None)
    with remote_session("https://front.example", TOKEN):
        await call(tool)
    assert "authorization" not in proxy.requests[0].headers
    # ...but it does go to the same proxy named explicitly.
    same = remote(proxy, proxy_url="https://front.example/", token=None)
    with remote_session("https://front.example", TOKEN):
        await call(same)
    assert proxy.requests[1].headers["authorization"] == f"Bearer {TOKEN}"


async def test_no_proxy_anywhere_is_an_error_the_model_reads() -> None:
    tool = RemoteTool("multiply", SCHEMA)
    result = await call(tool)
    assert result.error is not None
    assert result.error["type"] == "RemoteToolError"
    assert "no tool proxy to call" in result.output


# -- failures become error outputs, without the token -----------------------------


def assert_no_token(result: rawloop.loop.tools.ToolResult) -> None:
    assert result.error is not None
    assert TOKEN not in result.output
    assert TOKEN not in json.dumps(result.error)
    assert TOKEN not in repr(result)


@pytest.mark.parametrize("status", [401, 403, 404, 500, 502])
async def test_an_error_status_is_an_error_output(status: int) -> None:
    result = await call(remote(Proxy(echo_auth(status))))
    assert_no_token(result)
    assert result.error is not None
    assert result.error["type"] == "RemoteToolError"
    assert f"answered HTTP {status}: bad credentials: Bearer [REDACTED]" in result.output
    assert result.output.startswith("Error: RemoteToolError: remote tool 'multiply': ")


async def test_an_answer_without_response_is_an_error_output() -> None:
    answer = echo_auth(200)
    result = await call(remote(Proxy(answer)))
    assert_no_token(result)
    assert "without a 'response' field: bad credentials" in result.output

    result = await call(remote(Proxy(lambda r: httpx.Response(200, json=[1, 2]))))
    assert "without a 'response' field: '[1,2]'" in result.output


async def test_an_answer_that_is_not_json_is_an_error_output() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=f"<html>{request.headers['authorization']}</html>")

    result = await call(remote(Proxy(answer)))
    assert_no_token(result)
    assert "not JSON" in result.output


async def test_a_long_error_body_is_cut() -> None:
    proxy = Proxy(lambda r: httpx.Response(500, text="x" * 5000))
    result = await call(remote(proxy))
    assert len(result.output) < 700
    assert result.output.endswith("...")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError, "could not reach the tool proxy at"),
        (httpx.RemoteProtocolError, "could not reach the tool proxy at"),
        (httpx.ReadTimeout, "did not answer within 2.5 s"),
        (httpx.ConnectTimeout, "did not answer within 2.5 s"),
    ],
)
async def test_transport_failures_are_error_outputs(
    exc: type[httpx.TransportError], expected: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise exc(f"failed with {request.headers['authorization']}", request=request)

    result = await call(remote(Proxy(answer), timeout=2.5))
    assert_no_token(result)
    assert expected in result.output


async def test_the_exception_carries_no_cause_with_the_request() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    tool = remote(Proxy(answer))
    with pytest.raises(RemoteToolError) as info:
        await tool.invoke('{"a": 1, "b": 2}')
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert info.value.tool == "multiply"


async def test_a_real_refused_connection_without_a_client_of_our_own() -> None:
    tool = RemoteTool("multiply", SCHEMA, proxy_url="http://127.0.0.1:9", token=TOKEN, timeout=5)
    result = await call(tool)
    assert_no_token(result)
    assert "could not reach the tool proxy at http://127.0.0.1:9/tools/multiply" in result.output


# -- in a loop ------------------------------------------------------------------------


def two_turn_api() -> ScriptedAPI:
    return ScriptedAPI(
        [
            Reply(corpus("responses-function-call-1.sse")),
            Reply(corpus("responses-text-after-tool-1.sse")),
        ]
    )


def loop_with(api: ScriptedAPI, tool: RemoteTool, **kwargs: Any) -> Loop:
    return Loop(
        "gpt-5.5",
        tools=[tool],
        http_client=api.client(),
        api_key="sk-test",
        retries=RetryPolicy(max_retries=0, initial_delay=0.0),
        **kwargs,
    )


async def test_a_loop_runs_a_remote_tool_like_any_other() -> None:
    api, proxy = two_turn_api(), Proxy()
    result = await loop_with(api, remote(proxy)).run("What is 1231 * 2331?")
    assert result.stop_reason == "completed"
    (body,) = proxy.bodies
    assert {k: v for k, v in body.items() if k != "call_id"} == {"a": 1231, "b": 2331}
    assert body["call_id"] == "call_sVidsfFJ6zlzRpelrPkTPlpd"
    first, second = api.bodies
    assert first["tools"][0]["name"] == "multiply"
    assert second["input"][-1] == {
        "type": "function_call_output",
        "call_id": "call_sVidsfFJ6zlzRpelrPkTPlpd",
        "output": str(1231 * 2331),
    }


async def test_the_token_stays_out_of_traces_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api, proxy = two_turn_api(), Proxy(echo_auth(401))
    path = tmp_path / "run.jsonl"
    with remote_session(PROXY, TOKEN):
        result = await loop_with(
            api, RemoteTool("multiply", SCHEMA, http_client=proxy.client())
        ).run("What is 1231 * 2331?", trace=path)
    assert proxy.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    (tool_result,) = result.results
    assert_no_token(tool_result)
    assert TOKEN not in json.dumps(api.bodies)
    text = path.read_text()
    assert "Bearer [REDACTED]" in text  # the echoed header, scrubbed
    assert TOKEN not in text
    assert TOKEN not in caplog.text
