"""The loop's state, plain and mutable, and what a run gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.turn import Turn
from .tools import ToolResult

__all__ = ["LoopState", "RunResult", "Step", "add_usage"]

# The fields of LoopState a breakpoint may change, in the order to_dict lists them.
EDITABLE = ("model", "instructions", "input", "tools", "request_params", "results")


@dataclass
class LoopState:
    """What the next request is made of; the breakpoint hook may change any of it.

    ``input`` is the item (Responses) or message (Chat) list sent so far plus
    the last turn's output; ``results`` are the tool results of the last turn,
    appended to ``input`` right after the breakpoint. So what goes on the wire
    next is ``input`` + ``results``, with ``model``, ``instructions``, ``tools``
    and ``request_params``.
    """

    iteration: int
    model: str
    instructions: str | None
    input: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    request_params: dict[str, Any]
    dialect: str = "responses"
    base_url: str = ""
    last_turn: Turn | None = None
    results: list[ToolResult] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None

    def stop(self, reason: str = "stopped") -> None:
        """End the run before the next request; ``reason`` becomes the stop reason."""
        self.stop_reason = reason

    def to_dict(self) -> dict[str, Any]:
        """The editable part as plain JSON (the document breakpoint patches apply to)."""
        return {
            "iteration": self.iteration,
            "model": self.model,
            "instructions": self.instructions,
            "input": self.input,
            "tools": self.tools,
            "request_params": self.request_params,
            "results": [_result_to_dict(r) for r in self.results],
        }

    def update_from(self, data: dict[str, Any]) -> None:
        """Take the editable fields from a document shaped like ``to_dict``."""
        self.model = data["model"]
        self.instructions = data["instructions"]
        self.input = data["input"]
        self.tools = data["tools"]
        self.request_params = data["request_params"]
        self.results = [ToolResult(**r) for r in data["results"]]


def _result_to_dict(result: ToolResult) -> dict[str, Any]:
    return {
        "call_id": result.call_id,
        "name": result.name,
        "arguments": result.arguments,
        "output": result.output,
        "error": result.error,
        "duration": result.duration,
    }


@dataclass
class Step:
    """One iteration, as ``Loop.iter`` yields it: the turn and the tool results it led to."""

    iteration: int
    state: LoopState
    turn: Turn
    results: list[ToolResult]


@dataclass
class RunResult:
    """Everything a run did. ``items`` continues the conversation when passed back to ``run``."""

    text: str
    turns: list[Turn]
    items: list[dict[str, Any]]
    usage: dict[str, int]
    iterations: int
    stop_reason: str
    results: list[ToolResult]
    state: LoopState


def add_usage(total: dict[str, int], usage: dict[str, Any] | None) -> None:
    """Add one model call's usage to running totals, in either dialect's names.

    The totals use the Responses names (``input_tokens``, ``output_tokens``,
    ``total_tokens``) and count ``requests``.
    """
    total["requests"] = total.get("requests", 0) + 1
    if not usage:
        return
    tokens_in = usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0
    tokens_out = usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0
    total["input_tokens"] = total.get("input_tokens", 0) + tokens_in
    total["output_tokens"] = total.get("output_tokens", 0) + tokens_out
    total["total_tokens"] = total.get("total_tokens", 0) + (
        usage.get("total_tokens") or tokens_in + tokens_out
    )
