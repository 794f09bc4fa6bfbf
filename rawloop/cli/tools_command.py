"""``rawloop tools FILE.py``: the JSON definitions of the ``@tool`` functions in a file.

The output is a JSON array of tool definitions exactly as rawloop sends them
in a request's ``tools`` (Responses or Chat Completions shape), ready to paste
into a platform's tool registry or a hand-written request.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import ConfigurationError
from ..loop.tool_files import load_module, tools_in
from ..loop.tools import Tool, ToolRegistry

__all__ = ["DIALECTS", "add_parser", "tools_command"]

#: The shapes a definition can be printed in.
DIALECTS = ("responses", "chat")


def tools_command(path: str, dialect: str = "responses") -> str:
    """The tool definitions of every ``@tool`` at the top level of ``path``, as pretty JSON.

    Args:
        path: a Python file defining ``@rawloop.tool`` functions (imported to read them).
        dialect: ``"responses"`` for Responses API ``tools`` entries, ``"chat"``
            for Chat Completions ones.

    Returns:
        A JSON array, indented by two spaces, without a trailing newline.

    Raises:
        ConfigurationError: an unknown dialect, a missing file or one that is
            not a Python module, one that fails to import, one that defines no
            tools, or two tools with the same name.
    """
    if dialect not in DIALECTS:
        raise ConfigurationError(f"unknown dialect {dialect!r}; choose from {', '.join(DIALECTS)}")
    file = Path(path)
    if file.is_dir():
        raise ConfigurationError(f"{path}: is a directory; give a Python file with @tool functions")
    if not file.exists():
        raise ConfigurationError(f"{path}: no such file")
    tools = _unique(tools_in(load_module(file)))
    registry = ToolRegistry(tools)  # refuses two different tools with one name
    schemas: list[dict[str, Any]] = (
        registry.chat_schemas() if dialect == "chat" else registry.responses_schemas()
    )
    return orjson.dumps(schemas, option=orjson.OPT_INDENT_2).decode()


def _unique(tools: list[Tool[..., Any]]) -> list[Tool[..., Any]]:
    """Drop repeats of one tool object (a module may bind it to two names)."""
    seen: set[int] = set()
    unique: list[Tool[..., Any]] = []
    for tool in tools:
        if id(tool) not in seen:
            seen.add(id(tool))
            unique.append(tool)
    return unique


def _cmd_tools(args: argparse.Namespace) -> int:
    sys.stdout.write(tools_command(args.file, args.dialect) + "\n")
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``tools`` subcommand to ``sub`` (what ``add_subparsers()`` returned).

    The parser's ``func`` default returns the exit status (0); errors are
    raised as ``ConfigurationError`` for the caller to report.
    """
    p: argparse.ArgumentParser = sub.add_parser(
        "tools",
        help="print the JSON definitions of the @tool functions in a file",
        description="Import FILE and print the definitions of its @rawloop.tool functions "
        "as a JSON array, as rawloop sends them, ready for a platform's tool registry.",
    )
    p.add_argument("file", help="a Python file defining @rawloop.tool functions")
    p.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="responses",
        help="Responses API entries (default) or Chat Completions ones",
    )
    p.set_defaults(func=_cmd_tools)
    return p
