"""The attributes and messages ``OTelHook`` writes, in the GenAI conventions' shapes.

Pure functions over turns and request bodies: no span is started here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ..core.turn import Turn

__all__ = [
    "current_call_id",
    "descriptions",
    "error_type",
    "finish_reason",
    "input_messages",
    "json_string",
    "message_of",
    "output_messages",
    "price_of",
    "read_prices",
    "set_int",
    "set_response",
]


# ---------------------------------------------------------------------------
# Attributes


def current_call_id() -> str | None:
    """The id of the tool call being run here, if ``rawloop.loop.tools`` publishes it."""
    from ..loop import tools

    var = getattr(tools, "current_call_id", None)
    value = var.get(None) if isinstance(var, ContextVar) else None
    return value if isinstance(value, str) else None


def error_type(error: BaseException) -> str:
    """A low-cardinality name for what went wrong (HTTP status, provider code, class)."""
    status = getattr(error, "status", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return str(status)
    details = getattr(error, "error", None)
    if isinstance(details, Mapping):
        code = details.get("code") or details.get("type")
        if isinstance(code, str) and code:
            return code
    return type(error).__qualname__


def message_of(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def set_int(span: Span, name: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        span.set_attribute(name, value)


def set_response(span: Span, turn: Turn) -> None:
    if turn.response_id:
        span.set_attribute("gen_ai.response.id", turn.response_id)
    if turn.model:
        span.set_attribute("gen_ai.response.model", turn.model)
    span.set_attribute(
        "gen_ai.response.finish_reasons", [finish_reason(t) for t in (turn.choices or [turn])]
    )
    usage = turn.usage or {}
    set_int(
        span, "gen_ai.usage.input_tokens", usage.get("input_tokens", usage.get("prompt_tokens"))
    )
    set_int(
        span,
        "gen_ai.usage.output_tokens",
        usage.get("output_tokens", usage.get("completion_tokens")),
    )
    details_in = usage.get("input_tokens_details") or usage.get("prompt_tokens_details")
    if isinstance(details_in, Mapping):
        set_int(span, "gen_ai.usage.cache_read.input_tokens", details_in.get("cached_tokens"))
    details_out = usage.get("output_tokens_details") or usage.get("completion_tokens_details")
    if isinstance(details_out, Mapping):
        set_int(span, "gen_ai.usage.reasoning.output_tokens", details_out.get("reasoning_tokens"))
    tier = (turn.response or {}).get("service_tier")
    if isinstance(tier, str):
        span.set_attribute("openai.response.service_tier", tier)


def finish_reason(turn: Turn) -> str:
    """The provider's finish reason; for the Responses API (which has none) one derived
    from the status: ``tool_call``, ``stop``, the incomplete reason, or ``error``."""
    if turn.finish_reason:
        return turn.finish_reason
    if turn.status == "failed":
        return "error"
    if turn.calls:
        return "tool_call"
    if turn.status == "completed":
        return "stop"
    return turn.status


def descriptions(tools: Any) -> dict[str, str]:
    """Tool name -> description, from a request's ``tools`` (either dialect)."""
    found: dict[str, str] = {}
    if not isinstance(tools, list):
        return found
    for entry in tools:
        if not isinstance(entry, Mapping):
            continue
        function = entry.get("function", entry)
        if isinstance(function, Mapping):
            name, description = function.get("name"), function.get("description")
            if isinstance(name, str) and isinstance(description, str) and description:
                found[name] = description
    return found


def json_string(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


# ---------------------------------------------------------------------------
# Messages, in the GenAI conventions' shape (roles with typed parts)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return raw
    return raw


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, Sequence):
        parts: list[dict[str, Any]] = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append({"type": "text", "content": part["text"]})
            elif isinstance(part, Mapping) and isinstance(part.get("refusal"), str):
                parts.append({"type": "refusal", "content": part["refusal"]})
            elif isinstance(part, Mapping):
                parts.append({"type": str(part.get("type", "unknown")), "content": dict(part)})
            else:
                parts.append({"type": "text", "content": str(part)})
        return parts
    return [{"type": "unknown", "content": content}]


def _chatmessage_of(message: Mapping[str, Any]) -> dict[str, Any]:
    role = str(message.get("role", "user"))
    if role == "tool":
        parts: list[dict[str, Any]] = [
            {
                "type": "tool_call_response",
                "id": message.get("tool_call_id"),
                "response": message.get("content"),
            }
        ]
    else:
        parts = _content_parts(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _arguments(function.get("arguments")),
                }
            )
    out: dict[str, Any] = {"role": role, "parts": parts}
    if isinstance(message.get("name"), str):
        out["name"] = message["name"]
    return out


def _responses_item(item: Mapping[str, Any]) -> dict[str, Any]:
    kind = item.get("type", "message")
    if kind == "message":
        return {"role": str(item.get("role", "user")), "parts": _content_parts(item.get("content"))}
    if kind == "function_call":
        part = {
            "type": "tool_call",
            "id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": _arguments(item.get("arguments")),
        }
        return {"role": "assistant", "parts": [part]}
    if kind == "function_call_output":
        part = {
            "type": "tool_call_response",
            "id": item.get("call_id"),
            "response": item.get("output"),
        }
        return {"role": "tool", "parts": [part]}
    if kind == "reasoning":
        summary = " ".join(
            s.get("text", "") for s in item.get("summary") or () if isinstance(s, Mapping)
        )
        return {"role": "assistant", "parts": [{"type": "reasoning", "content": summary}]}
    return {
        "role": str(item.get("role", "assistant")),
        "parts": [{"type": str(kind), "content": dict(item)}],
    }


def input_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if isinstance(messages, list):
        return [_chatmessage_of(m) for m in messages if isinstance(m, Mapping)]
    given = body.get("input")
    if isinstance(given, str):
        return [{"role": "user", "parts": [{"type": "text", "content": given}]}]
    if isinstance(given, list):
        return [_responses_item(i) for i in given if isinstance(i, Mapping)]
    return []


def output_messages(turn: Turn) -> list[dict[str, Any]]:
    messages = []
    for choice in turn.choices or [turn]:
        parts: list[dict[str, Any]] = []
        if choice.reasoning:
            parts.append({"type": "reasoning", "content": choice.reasoning})
        if choice.text:
            parts.append({"type": "text", "content": choice.text})
        if choice.refusal:
            parts.append({"type": "refusal", "content": choice.refusal})
        for call in choice.calls:
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.call_id,
                    "name": call.name,
                    "arguments": _arguments(call.arguments),
                }
            )
        messages.append(
            {"role": "assistant", "parts": parts, "finish_reason": finish_reason(choice)}
        )
    return messages


def read_prices(given: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{model: {"input": $, "output": $}}`` or ``{model: (in, out)}``, dollars per 1M tokens."""
    prices: dict[str, tuple[float, float]] = {}
    for model, entry in given.items():
        pair = (entry.get("input"), entry.get("output")) if isinstance(entry, Mapping) else entry
        try:
            low, high = pair
            prices[str(model)] = (float(low), float(high))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(
                f"OTelHook prices: {model!r} must be {{'input': $, 'output': $}} per 1M tokens"
            ) from None
    return prices


def price_of(model: str, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    # "gpt-5.5-2026-04-23" is priced as "gpt-5.5": the longest name it starts with.
    if model in prices:
        return prices[model]
    names = [name for name in prices if model.startswith(name)]
    return prices[max(names, key=len)] if names else None
