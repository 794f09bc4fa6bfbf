"""The layout holds the architecture: layers import only downward, the public API stays put.

The import graph is read from the source with ``ast`` (every ``import`` and
``from ... import``, at module level or inside a function), so an upward import
fails here even when it is lazy.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import rawloop

PACKAGE = Path(rawloop.__file__).parent

#: Each subpackage and the subpackages it may import. Siblings of one rank
#: (debug, capture, serve) never import each other.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "loop": {"core"},
    "trace": {"core", "loop"},
    "replay": {"core", "loop", "trace"},
    "debug": {"core", "loop", "trace", "replay"},
    "capture": {"core", "loop", "trace", "replay"},
    "serve": {"core", "loop", "trace", "replay"},
    "cli": {"core", "loop", "trace", "replay", "debug", "capture", "serve"},
}

#: Upward imports made on purpose, each with its reason.
EXCEPTIONS = {
    # ``Loop.run(trace=PATH)`` is a shorthand for ``hooks=[TraceRecorder(PATH)]``:
    # the loop builds the recorder that sits above it, lazily, only when asked.
    ("rawloop.loop.loop", "rawloop.trace.recorder"),
}

#: Third-party modules the sans-IO core must never import.
IO_MODULES = {"httpx", "anyio", "h11", "socket", "asyncio", "trio", "uvicorn", "sniffio"}

#: ``rawloop.__all__`` as it stands: a name leaves or joins the public API on purpose only.
PUBLIC_API = {
    "HOOK_POINTS", "APIConnectionError", "APIError", "APIStatusError", "ChunkInfo",
    "ConfigurationError", "DecisionInfo", "Delta", "EditInfo", "EndInfo", "ErrorInfo",
    "EventInfo", "EventTooLarge", "FunctionCall", "Handoff", "HandoffInfo", "HookBus",
    "HookError", "IncompleteStream", "InvalidEncoding", "InvalidEventData", "Loop", "LoopRun",
    "LoopState", "OTelHook", "RawloopError", "RecordingProxy", "Redactor", "RemoteTool",
    "RemoteToolError", "ReplayDivergence", "ReplayError", "ReplayReport", "ReplayServer",
    "ReplayTransport", "RequestInfo", "ResponseInfo", "ResultInfo", "RetryPolicy", "RunResult",
    "SSEDecoder", "SecretInTraceError", "ServerSentEvent", "Step", "StopLoop", "StreamError",
    "StreamErrorEvent", "StreamParser", "Tool", "ToolArgumentsError", "ToolResult", "Trace",
    "TraceError", "TraceFormatError", "TraceRecorder", "TraceVersionError", "Turn",
    "UnknownToolError", "__version__", "loop_from_trace", "parse_stream", "remote_session",
    "replay", "replay_over_http", "tool",
    # Added since: the warnings a user may want to filter by class.
    "SlowToolWarning", "UnknownParameterWarning",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute, with relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from . import jsonpath`` imports a module, not a name.
            found.update(
                f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")
            )
    return found


def _is_module(dotted: str) -> bool:
    if not dotted.startswith("rawloop."):
        return False
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


#: Top-level modules besides the layers: the package itself, its version, and thin
#: facades that only re-export a layer's public names under a short path.
FACADES = {"__init__.py", "_version.py", "agents.py", "client.py"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_lives_in_a_layer() -> None:
    top_level = {p.name for p in PACKAGE.glob("*.py")}
    assert top_level <= FACADES
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        ALLOWED
    )


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path) -> None:
    importer = module_name(path)
    layer = layer_of(importer)
    if layer is None:
        return  # rawloop/__init__.py and the facades re-export from the layers
    upward = []
    for target in imports_of(path):
        if not target.startswith("rawloop.") or (importer, target) in EXCEPTIONS:
            continue
        other = layer_of(target)
        if other is not None and other != layer and other not in ALLOWED[layer]:
            upward.append(target)
    assert upward == [], f"{importer} imports above its layer: {upward}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.stem)
def test_the_core_does_no_io(path: Path) -> None:
    roots = {target.split(".")[0] for target in imports_of(path)}
    assert roots & IO_MODULES == set()


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(rawloop.__path__, "rawloop.")]
    optional = {"rawloop.serve.otel"}  # needs the otel extra, which the tests install
    for name in names:
        if name == "rawloop.cli.__main__":
            continue  # runs the CLI on import
        module = importlib.import_module(name)
        assert module.__doc__, f"{name} has no docstring"
    assert optional <= set(names)


#: Modules aim at ~500 lines; past this one is split by job.
MAX_LINES = 560


def test_no_module_is_much_over_500_lines() -> None:
    long = {
        module_name(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_public_api_is_unchanged() -> None:
    assert set(rawloop.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(rawloop, name) is not None


def test_the_pytest_plugin_entry_point_loads() -> None:
    from importlib.metadata import entry_points

    (point,) = [p for p in entry_points(group="pytest11") if p.name == "rawloop"]
    assert point.load().__name__ == "rawloop.capture.pytest_plugin"
    (script,) = [p for p in entry_points(group="console_scripts") if p.name == "rawloop"]
    assert callable(script.load())
