"""Tests for rawloop.tools: Tool objects, argument checking, running handlers, the registry.

What schemas the type hints give is in test_schema.py, the validator on its
own in test_validate.py.
"""

import datetime
import functools
import threading
import time
from typing import Any, Literal

import anyio
import pytest

from rawloop.core.errors import ConfigurationError, RawloopError
from rawloop.loop.tools import (
    StopLoop,
    Tool,
    ToolArgumentsError,
    ToolRegistry,
    ToolResult,
    UnknownToolError,
    format_output,
    run_tool,
    tool,
)

from .test_schema import Color, Level, Movie, NotJSON, Path, Point


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def call(t: Tool[..., Any] | None, arguments: str, **kwargs: Any) -> ToolResult:
    name = t.name if t is not None else "missing"
    return await run_tool(t, name, "call_1", arguments, timeout=kwargs.pop("timeout", 5), **kwargs)


# -- schemas -------------------------------------------------------------------


def test_explicit_schema_and_options_override() -> None:
    schema = {
        "type": "object",
        "properties": {"q": {"type": "string", "minLength": 1}},
        "required": ["q"],
    }

    @tool(name="find", description="Find things.", schema=schema)
    def f(q: NotJSON) -> str:  # an unsupported hint is fine when the schema is given
        """Ignored docstring."""
        return "x"

    assert f.name == "find"
    assert f.description == "Find things."
    assert f.parameters == schema
    assert f.parameters is not schema  # a copy: later edits to the caller's dict do not leak in


def test_explicit_schema_must_be_an_object_schema() -> None:
    def f(x: str) -> None:
        pass

    with pytest.raises(ConfigurationError, match="type 'object'"):
        tool(f, schema={"type": "string"})


def test_dialect_shapes() -> None:
    def weather(city: str) -> str:
        """Current weather."""
        return "sunny"

    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    loose, strict = tool(weather), tool(weather, strict=True)
    assert loose.responses_schema() == {
        "type": "function",
        "name": "weather",
        "description": "Current weather.",
        "parameters": parameters,
        # Sent even when False: the Responses API makes an omitted strict strict.
        "strict": False,
    }
    assert strict.responses_schema()["strict"] is True
    assert loose.chat_schema() == {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Current weather.",
            "parameters": parameters,
        },
    }
    assert strict.chat_schema()["function"]["strict"] is True


# -- definition errors -----------------------------------------------------------


def test_var_args_are_refused() -> None:
    def star(*items: int) -> None:
        pass

    def double_star(**options: int) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"'star'.*\*items"):
        tool(star)
    with pytest.raises(ConfigurationError, match=r"'double_star'.*\*\*options"):
        tool(double_star)


def test_bad_names() -> None:
    with pytest.raises(ConfigurationError, match="not valid"):
        tool(lambda: None)
    with pytest.raises(ConfigurationError, match="not valid"):
        tool(name="has space")(lambda: None)
    assert tool(name="ok")(lambda: None).name == "ok"


def test_configuration_error_is_a_rawloop_error() -> None:
    assert issubclass(ConfigurationError, RawloopError)
    assert issubclass(ToolArgumentsError, RawloopError)
    assert issubclass(UnknownToolError, RawloopError)


# -- the Tool object ----------------------------------------------------------------


def test_decorated_functions_still_work_as_before() -> None:
    @tool
    def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    @tool(name="shout")
    async def loud(text: str) -> str:
        return text.upper()

    assert isinstance(add, Tool)
    assert add(2) == 3
    assert add(2, b=5) == 7
    assert add.__name__ == "add"
    assert add.__doc__ == "Add."
    assert (add.name, add.is_async, loud.name, loud.is_async) == ("add", False, "shout", True)
    assert anyio.run(loud, "hi") == "HI"


def test_methods_partials_and_callable_instances() -> None:
    class Calculator:
        def double(self, x: int) -> int:
            """Double x."""
            return x * 2

        async def __call__(self, y: str) -> str:
            """Exclaim."""
            return y + "!"

    def add(a: int, b: int) -> int:
        return a + b

    method = tool(Calculator().double)
    instance = tool(Calculator(), name="exclaim")
    partial = tool(functools.partial(add, 1), name="inc")
    assert (method.name, method.description, method.is_async) == ("double", "Double x.", False)
    assert list(method.parameters["properties"]) == ["x"]
    assert (instance.description, instance.is_async) == ("Exclaim.", True)
    assert partial.parameters["properties"] == {"b": {"type": "integer"}}

    async def main() -> list[str]:
        results = [
            await call(method, '{"x": 4}'),
            await call(instance, '{"y": "hi"}'),
            await call(partial, '{"b": 2}'),
        ]
        return [r.output for r in results]

    assert anyio.run(main) == ["8", "hi!", "3"]


def test_retooling_a_tool_makes_a_copy() -> None:
    @tool
    def add(a: int) -> int:
        return a

    renamed = tool(add, name="plus")
    assert (add.name, renamed.name, renamed.handler) == ("add", "plus", add.handler)


# -- running: arguments --------------------------------------------------------------


@pytest.mark.anyio
async def test_success_result() -> None:
    @tool
    def add(a: int, b: int) -> int:
        return a + b

    result = await run_tool(add, "add", "call_9", '{"a": 2, "b": 3}', timeout=None)
    assert result.call_id == "call_9"
    assert result.name == "add"
    assert result.arguments == '{"a": 2, "b": 3}'
    assert (result.output, result.value, result.error, result.ok) == ("5", 5, None, True)
    assert result.duration >= 0


@pytest.mark.anyio
async def test_empty_arguments_mean_no_arguments() -> None:
    @tool
    def ping(n: int = 1) -> str:
        return f"pong {n}"

    assert (await call(ping, "")).output == "pong 1"
    assert (await call(ping, "{}")).output == "pong 1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ('{"a": 1', "arguments for tool 'f' are not valid JSON: "),
        ("[1, 2]", "arguments for tool 'f' must be a JSON object, got array"),
        ("null", "arguments for tool 'f' must be a JSON object, got null"),
        ("{}", "invalid arguments for tool 'f': $: missing required property 'a'"),
        ('{"a": "1"}', "invalid arguments for tool 'f': $.a: expected integer, got string"),
        ('{"a": true}', "invalid arguments for tool 'f': $.a: expected integer, got boolean"),
        ('{"a": 1, "zz": 0}', "invalid arguments for tool 'f': $: unexpected property 'zz'"),
        ('{"a": 1, "mode": "medium"}', '$.mode: expected one of "fast", "slow", got "medium"'),
        ('{"a": 1, "ratio": "x"}', "$.ratio: expected number, got string"),
        ('{"a": 1, "flag": 0}', "$.flag: expected boolean, got integer"),
        ('{"a": 1, "names": "x"}', "$.names: expected array or null, got string"),
        ('{"a": 1, "names": ["x", 2]}', "$.names[1]: expected string, got integer"),
        ('{"a": 1, "opts": []}', "$.opts: expected object or null, got array"),
        ('{"a": 1, "maybe": "x"}', "$.maybe: expected integer or null, got string"),
        ('{"a": 1, "points": [{"x": 1}, {}]}', "$.points[1]: missing required property 'x'"),
        ('{"a": 1, "points": [{"x": 1, "q": 2}]}', "$.points[0]: unexpected property 'q'"),
        ('{"a": 1, "pair": [1]}', "$.pair: expected at least 2 items, got 1"),
    ],
)
async def test_bad_arguments_become_error_results(arguments: str, message: str) -> None:
    calls: list[Any] = []

    @tool
    def f(
        a: int,
        mode: Literal["fast", "slow"] = "fast",
        ratio: float = 1.0,
        flag: bool = False,
        names: list[str] | None = None,
        opts: dict[str, Any] | None = None,
        maybe: int | None = None,
        points: list[Point] | None = None,
        pair: tuple[int, int] = (0, 0),
    ) -> None:
        calls.append(a)

    result = await call(f, arguments)
    assert result.error is not None
    assert result.error["type"] == "ToolArgumentsError"
    assert message in result.error["message"]
    assert result.output == "Error: " + result.error["message"]
    assert result.value is None
    assert calls == []


@pytest.mark.anyio
async def test_all_problems_are_listed() -> None:
    @tool
    def f(a: int, b: str) -> None:
        pass

    result = await call(f, '{"a": "x", "c": 1}')
    assert result.output == (
        "Error: invalid arguments for tool 'f': $: missing required property 'b'; "
        "$.a: expected integer, got string; $: unexpected property 'c'"
    )


@pytest.mark.anyio
async def test_integral_float_is_an_integer() -> None:
    @tool
    def f(a: int) -> str:
        return type(a).__name__

    assert (await call(f, '{"a": 3.0}')).output == "int"
    assert "expected integer, got number" in (await call(f, '{"a": 3.5}')).output


@pytest.mark.anyio
async def test_unknown_tool() -> None:
    result = await run_tool(None, "nope", "c", "{}", timeout=None, known=["add", "search"])
    assert result.error == {
        "type": "UnknownToolError",
        "message": "unknown tool 'nope'; available tools: add, search",
    }
    assert result.output == "Error: unknown tool 'nope'; available tools: add, search"
    bare = await run_tool(None, "nope", "c", "{}", timeout=None)
    assert bare.output == "Error: unknown tool 'nope'; no tools are available"


@pytest.mark.anyio
async def test_explicit_schema_is_what_gets_checked() -> None:
    @tool(schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    def search(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    ok = await call(search, '{"q": "x", "extra": 1}')
    assert ok.value == {"q": "x", "extra": 1}
    bad = await call(search, '{"q": 1}')
    assert (
        bad.output
        == "Error: invalid arguments for tool 'search': $.q: expected string, got integer"
    )


@pytest.mark.anyio
async def test_explicit_schema_that_misses_a_required_parameter() -> None:
    @tool(schema={"type": "object", "properties": {}})
    def f(a: int, b: int = 0) -> int:
        return a + b

    result = await call(f, '{"b": 1}')
    assert (
        result.output == "Error: invalid arguments for tool 'f': $: missing required property 'a'"
    )
    result = await call(f, '{"a": 1, "c": 1}')
    assert result.output == "Error: invalid arguments for tool 'f': $: unexpected property 'c'"


@pytest.mark.anyio
async def test_positional_only_parameters() -> None:
    @tool
    def f(a: int, b: int = 2, /, c: int = 3) -> tuple[int, int, int]:
        return (a, b, c)

    assert (await call(f, '{"a": 1, "c": 5}')).value == (1, 2, 5)


@pytest.mark.anyio
async def test_sync_wrapper_around_a_coroutine_function_is_awaited() -> None:
    async def fetch(key: str) -> str:
        return key * 2

    def logged(func: Any) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)  # a coroutine, created in the worker thread

        return wrapper

    t = tool(logged(fetch))
    assert not t.is_async
    assert (await call(t, '{"key": "ab"}')).output == "abab"


def test_parse_arguments_lists_problems() -> None:
    def f(a: int, b: int, c: int) -> None:
        pass

    t = tool(f)
    assert t.parse_arguments('{"a": 1, "b": 2, "c": 3}') == {"a": 1, "b": 2, "c": 3}
    assert t.parse_arguments({"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ToolArgumentsError) as info:
        t.parse_arguments(",".join(['{"a": "x"', *(f'"x{i}": 0' for i in range(12))]) + "}")
    assert info.value.tool == "f"
    assert len(info.value.problems) == 15  # b, c missing; a wrong; 12 unexpected
    assert str(info.value).endswith("... and 5 more")


def test_schema_methods_hand_out_copies() -> None:
    def f(p: Point) -> None:
        pass

    t = tool(f)
    t.responses_schema()["parameters"]["properties"]["p"]["required"].append("y")
    t.chat_schema()["function"]["parameters"]["required"].clear()
    assert t.parameters["properties"]["p"]["required"] == ["x"]
    assert t.parameters["required"] == ["p"]


# -- running: conversion ---------------------------------------------------------------


@pytest.mark.anyio
async def test_dataclass_enum_and_container_arguments_are_converted() -> None:
    seen: dict[str, Any] = {}

    @tool
    def f(
        path: Path,
        color: Color,
        level: Level,
        pair: tuple[int, str],
        many: tuple[int, ...],
        tags: set[str],
        by_name: dict[str, Color],
        maybe: Point | None,
        member: Literal[Color.GREEN] = Color.GREEN,
        movie: Movie | None = None,
    ) -> None:
        seen.update(locals())

    result = await call(
        f,
        """{"path": {"points": [{"x": 1}, {"x": 2, "y": 3, "tags": ["a"]}], "color": "green"},
            "color": "red", "level": 2, "pair": [1, "a"], "many": [1, 2], "tags": ["a", "a"],
            "by_name": {"k": "green"}, "maybe": {"x": 5}, "member": "green",
            "movie": {"title": "Heat"}}""",
    )
    assert result.error is None
    assert seen["path"] == Path(points=[Point(1), Point(2, 3, ["a"])], color=Color.GREEN)
    assert seen["color"] is Color.RED
    assert seen["level"] is Level.HIGH
    assert seen["pair"] == (1, "a")
    assert seen["many"] == (1, 2)
    assert seen["tags"] == {"a"}
    assert seen["by_name"] == {"k": Color.GREEN}
    assert seen["maybe"] == Point(5)
    assert seen["member"] is Color.GREEN
    assert seen["movie"] == {"title": "Heat"}  # a TypedDict stays a dict

    await call(f, result.arguments.replace('"maybe": {"x": 5}', '"maybe": null'))
    assert seen["maybe"] is None


# -- running: outputs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "output"),
    [
        ("plain text", "plain text"),
        ("", ""),
        (None, ""),
        (42, "42"),
        (1.5, "1.5"),
        (True, "true"),
        ({"a": [1, None]}, '{"a":[1,null]}'),
        ([1, "x"], '[1,"x"]'),
        ((1, 2), "[1,2]"),
        ({1: "x"}, '{"1":"x"}'),
        (Point(1), '{"x":1,"y":0,"tags":[],"label":""}'),
        (Color.RED, '"red"'),
        (datetime.date(2024, 5, 1), '"2024-05-01"'),
        ({"s": {"only"}}, '{"s":["only"]}'),
        (NotJSON, str(NotJSON)),
        (b"\x00", str(b"\x00")),
    ],
)
def test_format_output(value: Any, output: str) -> None:
    assert format_output(value) == output


@pytest.mark.anyio
async def test_output_and_value_in_result() -> None:
    point = Point(1, 2)

    @tool
    def f() -> Point:
        return point

    result = await call(f, "")
    assert result.value is point
    assert result.output == '{"x":1,"y":2,"tags":[],"label":""}'


# -- running: errors -------------------------------------------------------------------


@pytest.mark.anyio
async def test_handler_exceptions_become_error_results() -> None:
    @tool
    def sync_boom() -> None:
        raise ValueError("boom")

    @tool
    async def async_boom() -> None:
        raise KeyError("k")

    @tool
    def silent() -> None:
        raise RuntimeError

    result = await call(sync_boom, "")
    assert result.error == {"type": "ValueError", "message": "boom"}
    assert result.output == "Error: ValueError: boom"
    assert result.value is None
    assert not result.ok
    assert (await call(async_boom, "")).output == "Error: KeyError: 'k'"
    assert (await call(silent, "")).output == "Error: RuntimeError"


@pytest.mark.anyio
async def test_exception_groups_do_not_escape() -> None:
    @tool
    async def one() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_raise, ValueError("inner"))

    @tool
    async def two() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_raise, ValueError("a"))
            tg.start_soon(_raise, KeyError("b"))

    single = await call(one, "")
    assert single.error == {"type": "ValueError", "message": "inner"}
    double = await call(two, "")
    assert double.error is not None
    assert double.error["type"] == "ExceptionGroup"
    assert "ValueError: a" in double.error["message"]
    assert "KeyError: 'b'" in double.error["message"]


async def _raise(exc: BaseException) -> None:
    await anyio.sleep(0)
    raise exc


@pytest.mark.anyio
async def test_timeout_of_an_async_handler() -> None:
    @tool
    async def slow() -> None:
        await anyio.sleep(10)

    result = await call(slow, "", timeout=0.05)
    assert result.error == {"type": "TimeoutError", "message": "tool 'slow' timed out after 0.05 s"}
    assert result.output == "Error: tool 'slow' timed out after 0.05 s"


@pytest.mark.anyio
async def test_timeout_of_a_sync_handler_does_not_wait_for_the_thread() -> None:
    release = threading.Event()
    finished: list[bool] = []

    @tool
    def blocked() -> None:
        release.wait(5)
        finished.append(True)

    try:
        result = await call(blocked, "", timeout=0.05)
        # run_tool came back while the handler's thread was still blocked.
        assert finished == []
    finally:
        release.set()  # let the abandoned thread finish
    assert result.error is not None
    assert result.error["type"] == "TimeoutError"


@pytest.mark.anyio
async def test_handler_raising_timeout_error_is_its_own_error() -> None:
    @tool
    async def gives_up() -> None:
        raise TimeoutError("upstream took too long")

    result = await call(gives_up, "", timeout=5)
    assert result.output == "Error: TimeoutError: upstream took too long"


# -- running: what propagates ------------------------------------------------------------


@pytest.mark.anyio
async def test_stop_loop_propagates_from_sync_and_async_handlers() -> None:
    stop = StopLoop("done")

    @tool
    def sync_stop() -> None:
        raise stop

    @tool
    async def async_stop() -> None:
        raise StopLoop()

    with pytest.raises(StopLoop) as info:
        await call(sync_stop, "")
    assert info.value is stop
    assert info.value.reason == "done"
    with pytest.raises(StopLoop) as info:
        await call(async_stop, "")
    assert info.value.reason == ""


@pytest.mark.anyio
async def test_stop_loop_inside_a_task_group_is_unwrapped() -> None:
    @tool
    async def f() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_raise, StopLoop("from a task"))

    with pytest.raises(StopLoop, match="from a task"):
        await call(f, "")


@pytest.mark.anyio
async def test_cancellation_is_not_swallowed() -> None:
    started = anyio.Event()
    after: list[ToolResult] = []

    @tool
    async def slow() -> None:
        started.set()
        await anyio.sleep(10)

    async def runner() -> None:
        after.append(await call(slow, "", timeout=None))

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        await started.wait()
        tg.cancel_scope.cancel()
    assert after == []  # run_tool did not turn the cancellation into a result


# -- running: threads and concurrency ---------------------------------------------------


@pytest.mark.anyio
async def test_sync_handlers_run_in_a_worker_thread_async_ones_in_the_loop() -> None:
    threads: dict[str, int] = {}

    @tool
    def sync_handler() -> None:
        threads["sync"] = threading.get_ident()

    @tool
    async def async_handler() -> None:
        threads["async"] = threading.get_ident()

    await call(sync_handler, "")
    await call(async_handler, "")
    loop_thread = threading.get_ident()
    assert threads["sync"] != loop_thread
    assert threads["async"] == loop_thread


@pytest.mark.anyio
async def test_slow_sync_tools_run_concurrently() -> None:
    spans: dict[str, tuple[float, float]] = {}

    @tool
    def slow(label: str) -> str:
        start = time.perf_counter()
        time.sleep(0.2)
        spans[label] = (start, time.perf_counter())
        return label

    results: list[ToolResult] = []

    async def one(label: str) -> None:
        results.append(await call(slow, f'{{"label": "{label}"}}'))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a")
        tg.start_soon(one, "b")
    assert sorted(r.output for r in results) == ["a", "b"]
    (a_start, a_end), (b_start, b_end) = spans["a"], spans["b"]
    # Each started before the other ended: the two sleeps overlapped.
    assert a_start < b_end
    assert b_start < a_end


# -- registry -----------------------------------------------------------------------------


def test_registry_from_tools_and_functions() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    @tool(name="search")
    def find(q: str) -> list[str]:
        return []

    registry = ToolRegistry([add, find])
    assert list(registry) == ["add", "search"]
    assert len(registry) == 2
    assert registry["search"] is find
    assert isinstance(registry["add"], Tool)
    assert "add" in registry
    assert registry.get("missing") is None
    assert [s["name"] for s in registry.responses_schemas()] == ["add", "search"]
    assert [s["function"]["name"] for s in registry.chat_schemas()] == ["add", "search"]
    assert list(ToolRegistry(registry)) == ["add", "search"]


def test_registry_refuses_duplicate_names() -> None:
    def add(a: int) -> int:
        return a

    with pytest.raises(ConfigurationError, match="two tools are named 'add'"):
        ToolRegistry([add, tool(add)])
    registry = ToolRegistry([add])
    with pytest.raises(ConfigurationError):
        registry.add(add)
    assert registry.add(tool(add, name="add2")).name == "add2"


@pytest.mark.anyio
async def test_registry_run_lists_known_tools_for_unknown_names() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    def mul(a: int, b: int) -> int:
        return a * b

    registry = ToolRegistry([add, mul])
    assert (await registry.run("mul", "c1", '{"a": 2, "b": 4}')).output == "8"
    missing = await registry.run("div", "c2", "{}")
    assert missing.output == "Error: unknown tool 'div'; available tools: add, mul"


# -- the module split --------------------------------------------------------------------------


def test_every_tools_name_is_importable_from_the_facade_and_rawloop() -> None:
    import importlib

    import rawloop
    import rawloop.loop.tools as facade

    for name in facade.__all__:
        value = getattr(facade, name)
        home = importlib.import_module(
            next(
                f"rawloop.loop.{m}"
                for m in ("tool_def", "tool_run", "tool_registry")
                if name in importlib.import_module(f"rawloop.loop.{m}").__all__
            )
        )
        assert getattr(home, name) is value, name  # one object, not a copy
        if name in rawloop.__all__:
            assert getattr(rawloop, name) is value, name
    # The ContextVar handlers read is the one run_tool sets.
    assert (
        facade.current_call_id is importlib.import_module("rawloop.loop.tool_run").current_call_id
    )
