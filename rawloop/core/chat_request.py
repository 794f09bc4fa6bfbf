"""The Chat Completions dialect, request side: messages, request bodies, tool shapes.

The stream side (the accumulator) is ``rawloop.core.chat``.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError

__all__ = ["build_request", "normalize_input", "tool_result_messages", "tool_schema"]


def type_name(value: object) -> str:
    """A value's Python type name for messages (``null`` for None)."""
    return "null" if value is None else type(value).__name__


def build_request(
    model: str,
    input: list[dict[str, Any]],
    *,
    instructions: str | None,
    tools: list[dict[str, Any]],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The JSON body of a streaming ``POST /v1/chat/completions``.

    ``instructions`` becomes a leading system message; ``tools`` (in the
    ``tool_schema`` shape) is sent only when non-empty; ``params`` (e.g.
    ``temperature``, ``n``, or a different ``stream_options``) is merged last
    and so overrides the defaults.
    """
    messages: list[dict[str, Any]] = (
        [{"role": "system", "content": instructions}] if instructions else []
    )
    messages.extend(input)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = tools
    body.update(params)
    return body


def tool_result_messages(results: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``role: tool`` messages answering tool calls, from ``(call_id, output_text)`` pairs."""
    return [
        {"role": "tool", "tool_call_id": call_id, "content": output} for call_id, output in results
    ]


def normalize_input(input: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The message list for a run's input.

    A string is one user message; a list of message dicts is copied (the list,
    not the dicts). Anything else raises ``ConfigurationError``.
    """
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    if isinstance(input, list):
        for i, message in enumerate(input):
            if not isinstance(message, dict):
                raise ConfigurationError(
                    f"input[{i}] is {type_name(message)}; chat input messages must be dicts"
                )
        return list(input)
    raise ConfigurationError(
        f"input is {type_name(input)}; expected a string or a list of message dicts"
    )


def tool_schema(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """A function tool in the Chat Completions ``tools`` shape."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }
