"""Which trace a test names: the ``rawloop_trace`` marker, read for the plugin's fixtures.

The path is taken relative to the test file's directory, then to the
rootdir; without one it is ``traces/<test module>/<test name>.jsonl`` next to
the test file, where the test name leaves out an ``anyio_backend``
parameter (``test_x[asyncio]`` and ``test_x[trio]`` replay one trace).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

__all__ = ["MARKER", "OPTIONS", "trace_of"]

MARKER = "rawloop_trace"
#: The marker's options: the replay transport's, the server's, and recording's.
OPTIONS = frozenset(
    {"chunking", "seed", "rate", "faults", "ignore", "on_divergence", "strict"}
    | {"live_tools", "redact", "metadata"}
)


def trace_of(request: pytest.FixtureRequest) -> tuple[Path, dict[str, Any], str]:
    """The marker's trace file, its options, and the path as shown in messages."""
    path_arg, options = _marker_arguments(request.node.get_closest_marker(MARKER))
    rootdir = Path(request.config.rootpath)
    path = _resolve(path_arg, Path(request.node.path), rootdir, _test_name(request.node))
    return path, options, _display(path, rootdir)


def _test_name(node: Any) -> str:
    """The test's name for its trace file, without the ``anyio_backend`` parameter."""
    callspec = getattr(node, "callspec", None)
    backend = callspec.params.get("anyio_backend") if callspec is not None else None
    if backend is None:
        return str(node.name)
    backend = backend[0] if isinstance(backend, tuple) else backend
    parts = str(getattr(callspec, "id", "")).split("-")
    if str(backend) in parts:
        parts.remove(str(backend))
    return str(node.originalname) + (f"[{'-'.join(parts)}]" if parts else "")


def _marker_arguments(marker: pytest.Mark | None) -> tuple[str | None, dict[str, Any]]:
    if marker is None:
        return None, {}
    if len(marker.args) > 1:
        raise pytest.UsageError(f"{MARKER} takes one path, not {len(marker.args)} arguments")
    options = dict(marker.kwargs)
    path = marker.args[0] if marker.args else options.pop("path", None)
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise pytest.UsageError(
            f"{MARKER}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(OPTIONS))}"
        )
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise pytest.UsageError(f"{MARKER}: the path must be a string, not {path!r}")
    return (os.fspath(path) if path is not None else None), options


def _resolve(path: str | None, test_file: Path, rootdir: Path, test_name: str) -> Path:
    """The trace file: relative to the test file's directory, then the rootdir."""
    here = test_file.parent
    if path is None:
        name = re.sub(r"[^\w.-]+", "-", test_name).strip("-") or "test"
        return here / "traces" / test_file.stem / f"{name}.jsonl"
    given = Path(path)
    if given.is_absolute():
        return given
    candidates = (here / given, rootdir / given)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    # Missing: record where its directory already is, else next to the test.
    for candidate in candidates:
        if candidate.parent.is_dir():
            return candidate
    return candidates[0]


def _display(path: Path, rootdir: Path) -> str:
    try:
        return str(path.resolve().relative_to(rootdir.resolve()))
    except ValueError:
        return str(path)
