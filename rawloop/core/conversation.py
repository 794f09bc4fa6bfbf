"""What a request's conversation holds, compared across renderings; and JSON answers.

Pure functions for the recording proxy (``rawloop.capture.proxy``, ``rawloop.capture.proxy_runs``)
and the HAR importer (``rawloop.capture.importers``):

* ``item_key`` gives each input item or message a key that different
  renderings of the same item share (an SDK that drops null fields, sends
  ``"type": "message"``, or content parts instead of a string): an item the
  model made is named by its ``call_id`` or ``id``, a message by its role,
  text and tool-call ids. ``chain`` turns keys into one digest per prefix,
  so "does this request start with that conversation" is one comparison.
* ``conversation`` reads a request's items; ``tool_outputs`` reads the tool
  results they carry back, by call id.
* ``turn_from_json`` parses a non-streamed answer (a ``response`` or a
  ``chat.completion`` object) into the ``Turn`` its stream would have given,
  through the dialect's own accumulator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .dialect import get_dialect
from .errors import StreamError
from .sse import ServerSentEvent
from .turn import Turn

__all__ = [
    "body_key",
    "canonical_item",
    "chain",
    "comparable_body",
    "conversation",
    "item_key",
    "tool_outputs",
    "turn_from_json",
]

_CALL_ITEMS = frozenset({"function_call", "custom_tool_call"})
_TERMINAL = {
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.cancelled",
}


# -- comparing conversations ------------------------------------------------------------


def conversation(dialect: str, body: dict[str, Any]) -> list[Any]:
    """The request's conversation: ``input`` (a string is one user message) or ``messages``."""
    items = body.get("messages" if dialect == "chat" else "input")
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return list(items) if isinstance(items, list) else []


def item_key(item: Any) -> bytes:
    """A key for one item or message: different renderings of the same item get the same key."""
    return orjson.dumps(_canonical(item), option=orjson.OPT_SORT_KEYS)


def canonical_item(item: Any) -> Any:
    """The JSON value ``item_key`` encodes: what identifies the item, whatever its rendering."""
    return _canonical(item)


def comparable_body(dialect: str, body: Any) -> Any:
    """``body`` with its conversation's items in their canonical form (``canonical_item``).

    Two requests that say the same thing compare equal (``jsondiff``) in this
    form, however each client rendered its items; a difference's JSON path
    still names the item (``input[2].output``).
    """
    if not isinstance(body, dict):
        return body
    key = "messages" if dialect == "chat" else "input"
    items = body.get(key)
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        return body
    return {**body, key: [_canonical(item) for item in items]}


def _canonical(item: Any) -> Any:
    if not isinstance(item, dict):
        return _compact(item)
    kind, role = item.get("type"), item.get("role")
    if isinstance(role, str):  # a message: who said what (and which calls it made)
        calls = item.get("tool_calls")
        return _compact(
            {
                "role": role,
                "type": None if kind == "message" else kind,
                "content": _text_of(item.get("content")),
                "tool_calls": [c.get("id") if isinstance(c, dict) else c for c in calls]
                if isinstance(calls, list)
                else None,
                "tool_call_id": item.get("tool_call_id"),
                "name": item.get("name"),
            }
        )
    call_id, item_id = item.get("call_id"), item.get("id")
    if kind in _CALL_ITEMS and isinstance(call_id, str) and call_id:
        return {"type": kind, "call_id": call_id}  # a call the model made: its call id names it
    if isinstance(kind, str) and isinstance(item_id, str) and item_id:
        return {"type": kind, "id": item_id}  # any other item the server made: its id
    return _compact(item)


def _compact(value: Any) -> Any:
    """``value`` without null or empty fields, which SDKs add or leave out at will."""
    if isinstance(value, dict):
        out = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _text_of(content: Any) -> Any:
    """Content parts that are all text, joined; a string as it is; anything else compacted."""
    if isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    return _compact(content)


def chain(seed: bytes, keys: Iterable[bytes]) -> list[bytes]:
    """``[seed, digest(seed, k0), digest(digest(seed, k0), k1), ...]``: one digest per prefix."""
    out = [seed]
    for key in keys:
        out.append(hashlib.blake2b(out[-1] + key, digest_size=16).digest())
    return out


def body_key(dialect: str, body: dict[str, Any]) -> bytes:
    """What a retry repeats: the dialect and the whole body but the model (a fallback changes it)."""
    rest = orjson.dumps(
        {k: v for k, v in body.items() if k != "model"}, option=orjson.OPT_SORT_KEYS
    )
    return hashlib.blake2b(dialect.encode() + b"\0" + rest, digest_size=16).digest()


def tool_outputs(dialect: str, items: Sequence[Any]) -> dict[str, str]:
    """Tool outputs by call id: ``function_call_output`` items, or ``tool`` messages."""
    out: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        if dialect == "chat" and item.get("role") == "tool":
            call_id, value = item.get("tool_call_id"), item.get("content")
        elif dialect != "chat" and item.get("type") == "function_call_output":
            call_id, value = item.get("call_id"), item.get("output")
        else:
            continue
        if isinstance(call_id, str):
            text = _text_of(value)
            out[call_id] = text if isinstance(text, str) else orjson.dumps(value).decode()
    return out


# -- non-streamed answers ------------------------------------------------------------------


def turn_from_json(dialect: str, payload: Any) -> Turn:
    """The turn of a non-streamed answer (a ``response`` or ``chat.completion`` object).

    The object is turned into the events a stream of it would have carried
    and parsed by the dialect's own accumulator, so the turn has the same
    fields as a streamed one. Raises ``StreamError`` when it is not such an
    object.
    """
    payloads = _chat_events(payload) if dialect == "chat" else _responses_events(payload)
    accumulator = get_dialect(dialect).accumulator()
    for data in payloads:
        accumulator.feed(ServerSentEvent(data=data if isinstance(data, str) else _dumps(data)))
    return accumulator.finish()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _responses_events(response: Any) -> list[Any]:
    if not isinstance(response, dict) or response.get("object") != "response":
        raise StreamError("the answer is not a Responses API response object")
    events: list[Any] = []
    output = response.get("output")
    for index, item in enumerate(output if isinstance(output, list) else []):
        if not isinstance(item, dict):
            continue
        item_id = item.get("id")
        parts = item.get("content") if item.get("type") == "message" else None
        for number, part in enumerate(parts if isinstance(parts, list) else []):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "output_text" and isinstance(part.get("text"), str):
                events.append(
                    {
                        "type": "response.output_text.done",
                        "item_id": item_id,
                        "output_index": index,
                        "content_index": number,
                        "text": part["text"],
                    }
                )
            elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                events.append(
                    {
                        "type": "response.refusal.delta",
                        "item_id": item_id,
                        "output_index": index,
                        "delta": part["refusal"],
                    }
                )
        summary = item.get("summary") if item.get("type") == "reasoning" else None
        for number, part in enumerate(summary if isinstance(summary, list) else []):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                events.append(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        "item_id": item_id,
                        "output_index": index,
                        "summary_index": number,
                        "delta": part["text"],
                    }
                )
        events.append({"type": "response.output_item.done", "item": item, "output_index": index})
    terminal = _TERMINAL.get(str(response.get("status")), "response.completed")
    events.append({"type": terminal, "response": response})
    return events


def _chat_events(completion: Any) -> list[Any]:
    if not isinstance(completion, dict) or not isinstance(completion.get("choices"), list):
        raise StreamError("the answer is not a Chat Completions object (no choices)")
    choices = []
    for position, choice in enumerate(completion["choices"]):
        if not isinstance(choice, dict):
            raise StreamError(f"choices[{position}] is not an object")
        message = choice.get("message")
        message = message if isinstance(message, dict) else {}
        delta = {
            k: message[k]
            for k in ("role", "content", "refusal", "reasoning_content", "audio")
            if message.get(k) is not None
        }
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            delta["tool_calls"] = [
                {**call, "index": i} if isinstance(call, dict) else call
                for i, call in enumerate(calls)
            ]
        choices.append(
            {
                "index": choice.get("index", position),
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    meta = {k: completion[k] for k in ("id", "created", "model") if k in completion}
    events: list[Any] = [{**meta, "object": "chat.completion.chunk", "choices": choices}]
    if completion.get("usage") is not None:
        events.append(
            {**meta, "object": "chat.completion.chunk", "choices": [], "usage": completion["usage"]}
        )
    events.append("[DONE]")
    return events
