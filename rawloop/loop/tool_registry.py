"""The tools of a loop, by name: ``ToolRegistry``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..core.errors import ConfigurationError
from .tool_def import Tool, tool
from .tool_run import ToolResult, run_tool

__all__ = ["ToolRegistry"]


class ToolRegistry(Mapping[str, Tool[..., Any]]):
    """The tools of a loop, by name, in registration order.

    Built from ``Tool`` objects or plain functions (wrapped with ``tool()``).
    Raises ``ConfigurationError`` on a duplicate name.
    """

    def __init__(self, tools: Iterable[Tool[..., Any] | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools.values() if isinstance(tools, Mapping) else tools:
            self.add(item)

    def add(self, item: Tool[..., Any] | Callable[..., Any]) -> Tool[..., Any]:
        """Register a tool (or a function, wrapped with ``tool()``) and return it."""
        new = item if isinstance(item, Tool) else tool(item)
        if new.name in self._tools:
            raise ConfigurationError(
                f"two tools are named {new.name!r}: {self._tools[new.name].handler!r} "
                f"and {new.handler!r}; pass name= to tell them apart"
            )
        self._tools[new.name] = new
        return new

    def __getitem__(self, name: str) -> Tool[..., Any]:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)!r})"

    def responses_schemas(self) -> list[dict[str, Any]]:
        """All tools as Responses API ``tools`` entries."""
        return [t.responses_schema() for t in self._tools.values()]

    def chat_schemas(self) -> list[dict[str, Any]]:
        """All tools as Chat Completions ``tools`` entries."""
        return [t.chat_schema() for t in self._tools.values()]

    async def run(
        self, name: str, call_id: str, arguments: str, *, timeout: float | None = None
    ) -> ToolResult:
        """``run_tool`` for the tool called ``name`` (an unknown name lists the known ones)."""
        return await run_tool(
            self._tools.get(name), name, call_id, arguments, timeout=timeout, known=list(self)
        )
