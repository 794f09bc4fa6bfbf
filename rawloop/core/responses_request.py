"""The Responses API dialect, request side: input items, request bodies, tool shapes."""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError

__all__ = ["build_request", "normalize_input", "tool_result_items", "tool_schema"]


def normalize_input(input: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A user string becomes one user message; a list of items is copied (not the items)."""
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    if isinstance(input, list) and all(isinstance(item, dict) for item in input):
        return list(input)
    raise ConfigurationError(
        f"input must be a string or a list of item dicts, not {type(input).__name__}"
    )


def build_request(
    model: str,
    input: list[dict[str, Any]],
    *,
    instructions: str | None,
    tools: list[dict[str, Any]],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The JSON body of one streamed ``POST /responses``."""
    body: dict[str, Any] = {"model": model, "input": input}
    if instructions is not None:
        body["instructions"] = instructions
    if tools:
        body["tools"] = tools
    body["stream"] = True
    body.update(params)
    return body


def tool_result_items(results: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``function_call_output`` input items for (call_id, output) pairs."""
    return [
        {"type": "function_call_output", "call_id": call_id, "output": output}
        for call_id, output in results
    ]


def tool_schema(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A function tool definition in the Responses shape."""
    return {"type": "function", "name": name, "description": description, "parameters": parameters}
