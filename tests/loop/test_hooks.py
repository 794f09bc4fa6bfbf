"""The hook bus on its own: registration, sync and async callbacks, and failure handling."""

from __future__ import annotations

import contextlib
import types
import warnings
from typing import Any

import anyio
import pytest

from rawloop.core.errors import ConfigurationError, HookError
from rawloop.loop.hooks import HOOK_POINTS, ErrorInfo, HookBus
from rawloop.loop.state import LoopState

from ..conftest import Reply, ScriptedAPI, corpus
from .test_loop import call_reply, loop_for, text_reply

pytestmark = pytest.mark.anyio


def make_state(iteration: int = 3) -> LoopState:
    return LoopState(iteration, "m", None, [], [], {})


class Seen:
    """A hook listening on every point, recording (point, info)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        for name in HOOK_POINTS:
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str) -> Any:
        return lambda info: self.calls.append((name, info))


# -- registration ----------------------------------------------------------------


def test_the_hook_points() -> None:
    assert HOOK_POINTS == (
        "on_request",
        "on_response",
        "on_chunk",
        "on_event",
        "on_decision",
        "on_result",
        "on_breakpoint",
        "on_edit",
        "on_handoff",
        "on_error",
        "on_end",
    )


def test_modules_instances_and_namespaces_are_hooks() -> None:
    module = types.ModuleType("mine")
    module.on_end = lambda info: None  # type: ignore[attr-defined]

    class Instance:
        def on_request(self, info: Any) -> None: ...

    namespace = types.SimpleNamespace(on_chunk=lambda info: None)
    instance = Instance()
    bus = HookBus.of([module, instance, namespace])
    assert bus.hooks == (module, instance, namespace)
    assert bus.has("on_end") and bus.has("on_request") and bus.has("on_chunk")
    assert not bus.has("on_event") and not bus.strict
    assert HookBus.of([], strict=True).strict


def test_an_unknown_on_name_is_refused_listing_the_valid_names() -> None:
    class Typo:
        def on_requets(self, info: Any) -> None: ...

    with pytest.raises(ConfigurationError) as info:
        HookBus.of([Typo()])
    message = str(info.value)
    assert "hook Typo has 'on_requets', which is not a hook point" in message
    assert "valid names: " + ", ".join(HOOK_POINTS) in message

    module = types.ModuleType("typo_module")
    module.on_finish = lambda info: None  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"hook module typo_module has 'on_finish'"):
        HookBus().add(module)


def test_an_object_with_no_hook_functions_is_refused() -> None:
    class Nothing:
        def request(self, info: Any) -> None: ...

    for hook in (Nothing(), types.ModuleType("empty"), object()):
        with pytest.raises(ConfigurationError, match=r"has no hook functions.*on_request"):
            HookBus.of([hook])
    bus = HookBus()
    with pytest.raises(ConfigurationError):
        bus.add(Nothing())
    assert bus.hooks == () and not any(bus.has(p) for p in HOOK_POINTS)


def test_a_hook_point_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"on_request is not callable"):
        HookBus.of([types.SimpleNamespace(on_request="print")])


def test_dunder_like_names_are_not_hook_points() -> None:
    hook = types.SimpleNamespace(on__private=1, on_end=lambda info: None)
    assert HookBus.of([hook]).has("on_end")


def test_a_refused_hook_registers_nothing() -> None:
    bad = types.SimpleNamespace(on_end=lambda info: None, on_nope=lambda info: None)
    bus = HookBus()
    with pytest.raises(ConfigurationError):
        bus.add(bad)
    assert bus.hooks == () and not bus.has("on_end")


async def test_remove_unregisters_only_that_hook() -> None:
    first, second = Seen(), Seen()
    bus = HookBus.of([first, second])
    bus.remove(first)
    assert bus.hooks == (second,)
    await bus.emit("on_end", "info")
    assert first.calls == [] and second.calls == [("on_end", "info")]
    bus.remove(second)
    assert not bus.hooks and not bus.has("on_end")


async def test_has_tracks_listeners_per_point() -> None:
    bus = HookBus()
    assert not any(bus.has(point) for point in HOOK_POINTS)
    hook = types.SimpleNamespace(on_chunk=lambda info: None)
    bus.add(hook)
    assert [p for p in HOOK_POINTS if bus.has(p)] == ["on_chunk"]
    bus.remove(hook)
    assert not bus.has("on_chunk")


# -- calling ------------------------------------------------------------------------


async def test_sync_and_async_callbacks_run_in_registration_order() -> None:
    order: list[str] = []

    def sync_hook(info: Any) -> None:
        order.append(f"sync {info}")

    async def async_hook(info: Any) -> None:
        await anyio.sleep(0)
        order.append(f"async {info}")

    class Method:
        async def on_decision(self, info: Any) -> None:
            order.append(f"method {info}")

    bus = HookBus.of(
        [
            types.SimpleNamespace(on_decision=sync_hook),
            types.SimpleNamespace(on_decision=async_hook),
            Method(),
        ]
    )
    await bus.emit("on_decision", 1)
    assert order == ["sync 1", "async 1", "method 1"]


async def test_breakpoint_passes_the_state_to_sync_and_async_hooks() -> None:
    def first(state: LoopState) -> None:
        state.model = "changed"

    async def second(state: LoopState) -> None:
        state.request_params["seen_model"] = state.model

    bus = HookBus.of(
        [types.SimpleNamespace(on_breakpoint=first), types.SimpleNamespace(on_breakpoint=second)]
    )
    state = make_state()
    await bus.breakpoint(state)
    assert state.model == "changed" and state.request_params == {"seen_model": "changed"}
    await HookBus().breakpoint(state)  # nothing registered: nothing happens


async def test_emit_with_no_listeners_does_nothing() -> None:
    await HookBus().emit("on_request", object())


# -- failures -------------------------------------------------------------------------


class Failing:
    def __init__(self, point: str = "on_decision", exc: Exception | None = None) -> None:
        self.exc = exc or ValueError("observer bug")
        self.calls = 0
        setattr(self, point, self._fail)

    def _fail(self, info: Any) -> None:
        self.calls += 1
        raise self.exc


async def test_a_failing_observer_warns_reports_to_on_error_and_the_rest_still_run() -> None:
    seen = Seen()
    failing = Failing()
    after: list[Any] = []
    bus = HookBus.of([failing, seen, types.SimpleNamespace(on_decision=after.append)])
    with pytest.warns(RuntimeWarning, match=r"hook Failing._fail failed in on_decision: .*bug"):
        await bus.emit("on_decision", "turn", iteration=2, attempt=1)
    assert after == ["turn"]  # the next observer still ran
    errors = [info for name, info in seen.calls if name == "on_error"]
    (error,) = errors
    assert isinstance(error, ErrorInfo)
    assert (error.iteration, error.attempt, error.where) == (2, 1, "hook:Failing._fail")
    assert isinstance(error.error, ValueError) and not error.will_retry and error.delay == 0.0
    assert ("on_decision", "turn") in seen.calls


async def test_async_observer_failures_are_handled_the_same_way() -> None:
    errors: list[ErrorInfo] = []

    async def broken(info: Any) -> None:
        await anyio.sleep(0)
        raise RuntimeError("async bug")

    bus = HookBus.of(
        [types.SimpleNamespace(on_event=broken), types.SimpleNamespace(on_error=errors.append)]
    )
    with pytest.warns(RuntimeWarning, match="async bug"):
        await bus.emit("on_event", None)
    assert errors[0].where.endswith("broken") and isinstance(errors[0].error, RuntimeError)


async def test_strict_makes_a_failing_observer_a_hook_error() -> None:
    seen = Seen()
    bus = HookBus.of([Failing(), seen], strict=True)
    with pytest.raises(HookError, match=r"hook Failing._fail failed in on_decision") as info:
        await bus.emit("on_decision", "turn")
    assert isinstance(info.value.__cause__, ValueError)
    assert seen.calls == []  # fatal at once: the observers after it did not run


async def test_a_failing_breakpoint_is_always_a_hook_error_naming_the_iteration() -> None:
    failing = Failing("on_breakpoint", KeyError("nope"))
    seen = Seen()
    bus = HookBus.of([failing, seen])  # not strict
    with pytest.raises(HookError, match=r"breakpoint hook Failing._fail failed at iteration 3"):
        await bus.breakpoint(make_state(3))
    assert failing.calls == 1
    assert not [name for name, _ in seen.calls if name == "on_error"]


async def test_a_failing_on_error_hook_does_not_recurse_forever() -> None:
    # Whether it ends up fatal or a warning, a broken on_error hook is called once per
    # failure it is told about, never again for its own failure.
    for first_point in ("on_result", "on_error"):
        failing_error_hook = Failing("on_error")
        hooks: list[Any] = [failing_error_hook]
        if first_point == "on_result":
            hooks.insert(0, Failing("on_result"))
        bus = HookBus.of(hooks)
        with warnings.catch_warnings(), contextlib.suppress(HookError):
            warnings.simplefilter("ignore")
            await bus.emit(first_point, "info")
        assert failing_error_hook.calls == 1, first_point

    alone = Failing("on_error")
    with pytest.raises(HookError, match="failed in on_error"):
        await HookBus.of([alone], strict=True).emit("on_error", "x")
    assert alone.calls == 1


async def test_a_failing_on_error_observer_only_warns_when_not_strict() -> None:
    # The module's contract: "An observer that raises is reported ... as a warning, and the
    # run goes on (strict=True makes it fatal)." An on_error hook is an observer too.
    failing_error_hook = Failing("on_error")
    bus = HookBus.of([Failing("on_result"), failing_error_hook])
    with pytest.warns(RuntimeWarning) as caught:
        await bus.emit("on_result", "r")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "failed in on_result" in messages[0]
    assert "failed in on_error" in messages[1]
    assert failing_error_hook.calls == 1


async def test_a_broken_on_error_logger_does_not_end_a_run_that_would_succeed() -> None:
    failing_error_hook = Failing("on_error")
    api = ScriptedAPI([Reply(b"{}", status=503), text_reply("ok")])
    with pytest.warns(RuntimeWarning, match="failed in on_error"):
        result = await loop_for(api, hooks=[failing_error_hook]).run("x")
    assert result.text == "ok" and failing_error_hook.calls == 1


# -- on_end fires once, last, however the run ends ----------------------------------------


class EndWatch:
    def __init__(self) -> None:
        self.points: list[str] = []
        self.ends: list[Any] = []

    def on_request(self, info: Any) -> None:
        self.points.append("on_request")

    def on_end(self, info: Any) -> None:
        self.points.append("on_end")
        self.ends.append(info)


async def test_on_end_fires_once_last_after_completion_and_after_an_error() -> None:
    watch = EndWatch()
    await loop_for(ScriptedAPI([text_reply()]), hooks=[watch]).run("x")
    assert watch.points == ["on_request", "on_end"]
    assert watch.ends[0].stop_reason == "completed" and watch.ends[0].error is None

    watch = EndWatch()
    api = ScriptedAPI([Reply(b'{"error": {"message": "bad"}}', status=400)])
    with pytest.raises(Exception, match="bad"):
        await loop_for(api, hooks=[watch]).run("x")
    (end,) = watch.ends
    assert watch.points[-1] == "on_end" and end.stop_reason == "error" and end.error is not None


async def test_on_end_fires_when_the_run_is_cancelled() -> None:
    # loop.py shields on_end "because it was cancelled: still tell the hooks", but the
    # call is skipped when the run had no stop reason, which is the cancelled case.
    async def stall() -> None:
        await anyio.sleep(30)

    watch = EndWatch()
    api = ScriptedAPI([Reply(corpus("responses-text-minimal-1.sse"), before=stall)])
    with anyio.move_on_after(0.2):
        await loop_for(api, hooks=[watch]).run("x")
    assert len(watch.ends) == 1 and watch.points[-1] == "on_end"


async def test_on_end_fires_when_a_stepped_run_is_closed_early() -> None:
    watch = EndWatch()
    api = ScriptedAPI([call_reply(("c1", "multiply", '{"a": 2, "b": 3}')), text_reply()])
    async with loop_for(api, hooks=[watch]).iter("x") as run:
        async for _step in run:
            break
    assert run.result is not None and run.result.stop_reason == "stopped"
    assert len(watch.ends) == 1 and watch.ends[0].stop_reason == "stopped"
