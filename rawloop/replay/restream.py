"""A recorded JSON answer as the stream the API would have sent for it.

A client that recorded without ``"stream": true`` holds one JSON object per
answer; served to a client that asks for a stream, that object becomes the
events the API sends for it, in the API's order and with its ids:

* Responses: ``response.created``, ``response.in_progress``, then per output
  item ``output_item.added``, its parts (``content_part.added``,
  ``output_text.delta``/``.done``, ``content_part.done``; refusals,
  reasoning summaries), ``function_call_arguments.delta``/``.done`` for a
  call, ``output_item.done``; and the terminal event the response's status
  names (``response.completed``, ``.incomplete``, ``.failed``). Every event
  has its ``sequence_number``; item ids, call ids and the response id are
  the recorded ones.
* Chat: ``chat.completion.chunk`` objects (role, content pieces, tool-call
  fragments, finish reason), a usage chunk only when the request asked for
  it (``stream_options.include_usage``), then ``data: [DONE]``.

Pure functions; the same object always gives the same bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from ..core.errors import StreamError

__all__ = ["chat_stream", "responses_stream", "restream", "wants_usage"]

# Token-sized pieces, as the API streams them: leading space and a few characters.
_PIECE = re.compile(r"\s*\S{1,5}|\s+")
_ARG_PIECE = 7
_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.cancelled",
}


def restream(payload: Any, dialect: str, *, include_usage: bool = False) -> bytes:
    """The SSE body for a recorded JSON answer; ``StreamError`` if it is not an answer object."""
    if dialect == "chat":
        return chat_stream(payload, include_usage=include_usage)
    return responses_stream(payload)


def wants_usage(body: Any) -> bool:
    """Whether a Chat request asked for the usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True


def _pieces(text: str) -> list[str]:
    return _PIECE.findall(text) or [""]


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


# -- Responses -------------------------------------------------------------------------


def responses_stream(response: Any) -> bytes:
    """The Responses event stream of a ``response`` object."""
    if not isinstance(response, dict) or response.get("object") != "response":
        raise StreamError("the recorded answer is not a Responses API response object")
    out: list[bytes] = []

    def emit(event: dict[str, Any]) -> None:
        out.append(_sse({**event, "sequence_number": len(out)}))

    start = {**response, "status": "in_progress", "output": [], "usage": None}
    for key in ("completed_at", "error", "incomplete_details"):
        if key in start:
            start[key] = None
    emit({"type": "response.created", "response": start})
    emit({"type": "response.in_progress", "response": start})
    output = response.get("output")
    for index, item in enumerate(output if isinstance(output, list) else []):
        if isinstance(item, dict):
            for event in _item_events(item, index):
                emit(event)
    terminal = _TERMINAL.get(str(response.get("status")), "response.completed")
    emit({"type": terminal, "response": response})
    return b"".join(out)


def _item_events(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    kind, item_id = item.get("type"), item.get("id")
    where = {"item_id": item_id, "output_index": index}
    added: dict[str, Any] = {**item}
    if "status" in item:
        added["status"] = "in_progress"
    events: list[dict[str, Any]] = []
    if kind == "message":
        added["content"] = []
        events.append({"type": "response.output_item.added", "item": added, "output_index": index})
        parts = item.get("content")
        for number, part in enumerate(parts if isinstance(parts, list) else []):
            if isinstance(part, dict):
                events += _part_events(part, {**where, "content_index": number})
    elif kind in ("function_call", "custom_tool_call"):
        field, prefix = (
            ("arguments", "response.function_call_arguments")
            if kind == "function_call"
            else ("input", "response.custom_tool_call_input")
        )
        value = item.get(field)
        value = value if isinstance(value, str) else ""
        added[field] = ""
        events.append({"type": "response.output_item.added", "item": added, "output_index": index})
        for start in range(0, len(value), _ARG_PIECE):
            delta = value[start : start + _ARG_PIECE]
            events.append({"type": f"{prefix}.delta", **where, "delta": delta})
        events.append({"type": f"{prefix}.done", **where, field: value})
    elif kind == "reasoning":
        added["summary"] = []
        events.append({"type": "response.output_item.added", "item": added, "output_index": index})
        summary = item.get("summary")
        for number, part in enumerate(summary if isinstance(summary, list) else []):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                at = {**where, "summary_index": number}
                empty = {**part, "text": ""}
                text = part["text"]
                events.append(
                    {"type": "response.reasoning_summary_part.added", **at, "part": empty}
                )
                for piece in _pieces(text):
                    events.append(
                        {"type": "response.reasoning_summary_text.delta", **at, "delta": piece}
                    )
                events.append({"type": "response.reasoning_summary_text.done", **at, "text": text})
                events.append({"type": "response.reasoning_summary_part.done", **at, "part": part})
    else:
        events.append({"type": "response.output_item.added", "item": added, "output_index": index})
    events.append({"type": "response.output_item.done", "item": item, "output_index": index})
    return events


def _part_events(part: dict[str, Any], where: dict[str, Any]) -> list[dict[str, Any]]:
    kind = part.get("type")
    extra: dict[str, Any]
    if kind == "output_text" and isinstance(part.get("text"), str):
        field, prefix, extra = "text", "response.output_text", {"logprobs": []}
    elif kind == "refusal" and isinstance(part.get("refusal"), str):
        field, prefix, extra = "refusal", "response.refusal", {}
    else:  # a part we do not stream piece by piece: added whole, then done
        return [
            {"type": "response.content_part.added", **where, "part": part},
            {"type": "response.content_part.done", **where, "part": part},
        ]
    value = part[field]
    empty = {**part, field: ""}
    if "annotations" in empty:
        empty["annotations"] = []
    events = [{"type": "response.content_part.added", **where, "part": empty}]
    for piece in _pieces(value):
        events.append({"type": f"{prefix}.delta", **where, "delta": piece, **extra})
    events.append({"type": f"{prefix}.done", **where, field: value, **extra})
    events.append({"type": "response.content_part.done", **where, "part": part})
    return events


# -- Chat ----------------------------------------------------------------------------------


def chat_stream(completion: Any, *, include_usage: bool = False) -> bytes:
    """The ``chat.completion.chunk`` stream of a ``chat.completion`` object."""
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        raise StreamError("the recorded answer is not a Chat Completions object (no choices)")
    base: dict[str, Any] = {k: completion[k] for k in ("id", "created", "model") if k in completion}
    base["object"] = "chat.completion.chunk"
    for key in ("service_tier", "system_fingerprint"):
        if key in completion:
            base[key] = completion[key]
    out: list[bytes] = []

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> None:
        payload = {**base, "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            payload["usage"] = None
        out.append(b"data: " + orjson.dumps(payload) + b"\n\n")

    for position, choice in enumerate(completion["choices"]):
        if not isinstance(choice, dict):
            raise StreamError(f"the recorded answer's choices[{position}] is not an object")
        index = choice.get("index", position)
        for delta in _chat_deltas(choice.get("message")):
            chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])
        finish = choice.get("finish_reason")
        chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        chunk([], usage=completion.get("usage"))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def _chat_deltas(message: Any) -> list[dict[str, Any]]:
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    calls = message.get("tool_calls")
    calls = calls if isinstance(calls, list) else []
    first: dict[str, Any] = {"role": message.get("role", "assistant")}
    first["content"] = "" if isinstance(content, str) or not calls else None
    if "refusal" in message:
        first["refusal"] = None
    deltas = [first]
    if isinstance(content, str):
        deltas += [{"content": piece} for piece in _pieces(content) if piece]
    if isinstance(message.get("refusal"), str):
        deltas.append({"refusal": message["refusal"]})
    for n, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        arguments = function.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        head = {
            "index": n,
            "id": call.get("id"),
            "type": call.get("type", "function"),
            "function": {"name": function.get("name"), "arguments": ""},
        }
        deltas.append({"tool_calls": [head]})
        for start in range(0, len(arguments), _ARG_PIECE):
            piece = arguments[start : start + _ARG_PIECE]
            deltas.append({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
    return deltas
