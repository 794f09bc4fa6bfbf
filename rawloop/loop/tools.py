"""Tools: plain Python functions the model can call.

One module per job, every name importable from here:

- ``rawloop.loop.tool_def``: ``@tool`` and ``Tool`` (a function read once into
  a JSON schema; arguments checked and converted), ``ToolArgumentsError``.
- ``rawloop.loop.tool_run``: ``run_tool`` (one call, whatever happens, as a
  ``ToolResult``), ``format_output``, ``StopLoop``, ``UnknownToolError``,
  ``current_call_id``.
- ``rawloop.loop.tool_registry``: ``ToolRegistry``, a loop's tools by name.
"""

from __future__ import annotations

from .tool_def import Tool as Tool
from .tool_def import ToolArgumentsError as ToolArgumentsError
from .tool_def import tool as tool
from .tool_registry import ToolRegistry as ToolRegistry
from .tool_run import StopLoop as StopLoop
from .tool_run import ToolResult as ToolResult
from .tool_run import UnknownToolError as UnknownToolError
from .tool_run import current_call_id as current_call_id
from .tool_run import format_output as format_output
from .tool_run import run_tool as run_tool

__all__ = [
    "StopLoop",
    "Tool",
    "ToolArgumentsError",
    "ToolRegistry",
    "ToolResult",
    "UnknownToolError",
    "current_call_id",
    "format_output",
    "run_tool",
    "tool",
]
