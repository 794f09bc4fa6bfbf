"""Synthetic model answers from a small JSON script: ``rawloop serve --script turns.json``.

A script lists the turns a fake model gives, in order (the format:
``rawloop.replay.script``)::

    {"dialect": "responses", "model": "gpt-5.5",
     "turns": [
        {"status": 429, "retry_after": 0},
        {"calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"text": "6 * 7 = 42", "usage": {"input_tokens": 30, "output_tokens": 8, "total_tokens": 38}}
     ]}

``synthesize_turn`` turns one of them into the bytes a real server would
stream, shaped like the captured corpus streams (every Responses event with
its ``sequence_number``; Chat chunks with role, content deltas, ``tool_calls``
fragments, ``finish_reason``, a usage chunk and ``data: [DONE]``). Ids are
derived from the turn's index, so the same script always gives the same bytes.

``script_to_trace`` turns a whole script into a ``Trace`` that the replay
server serves like a recorded one. A turn that fails (an HTTP ``status`` or an
in-stream ``error``) is one more attempt at the same iteration: the client's
retry gets the next turn. Which iteration a request is at comes from the
request itself (how many model turns its input already holds), see
``rawloop.replay.server``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from .._version import __version__
from ..core.errors import ConfigurationError
from ..trace.format import FORMAT, FORMAT_VERSION, Record, Trace, encode_chunk
from .chunking import split_events
from .script import check_turn, load_script, validate_script

__all__ = ["load_script", "script_to_trace", "synthesize_turn", "validate_script"]

_BASE_TIME = 1_750_000_000  # a fixed "created" time: scripts are deterministic
# Tokens-ish pieces: optional leading whitespace and up to five other characters.
_PIECE = re.compile(r"\s*\S{1,5}|\s+")
_ARG_PIECE = 7


# -- ids ------------------------------------------------------------------------------


def _hex(kind: str, index: int, n: int = 0, length: int = 48) -> str:
    seed = f"rawloop-script:{kind}:{index}:{n}".encode()
    return hashlib.sha256(seed).hexdigest()[:length]


def _call_id(call: Mapping[str, Any], index: int, n: int) -> str:
    given = call.get("call_id")
    return given if isinstance(given, str) else f"call_{_hex('call', index, n, 24)}"


def _arguments(call: Mapping[str, Any]) -> str:
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        return arguments
    return orjson.dumps(arguments).decode()


def _pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def _arg_pieces(text: str) -> list[str]:
    return [text[i : i + _ARG_PIECE] for i in range(0, len(text), _ARG_PIECE)]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


# -- the streams ----------------------------------------------------------------------


def synthesize_turn(turn_spec: Mapping[str, Any], dialect: str, model: str, index: int) -> bytes:
    """The response body for one scripted turn, as a real server would send it.

    A turn with an HTTP ``status`` of 300 or more gives its JSON error body
    (``{"error": {...}}``); any other gives the SSE stream of the dialect.
    ``index`` (the turn's position in the script) seeds the ids.
    """
    check_turn(dict(turn_spec), f"turn {index}")
    status = turn_spec.get("status")
    if isinstance(status, int) and status >= 300:
        body: bytes = orjson.dumps({"error": _status_error(turn_spec, status)})
        return body
    if dialect == "responses":
        return _responses_stream(turn_spec, model, index)
    if dialect == "chat":
        return _chat_stream(turn_spec, model, index)
    raise ConfigurationError(f"dialect must be 'responses' or 'chat', not {dialect!r}")


def _status_error(turn: Mapping[str, Any], status: int) -> dict[str, Any]:
    error = turn.get("error")
    if isinstance(error, dict):
        return dict(error)
    if status == 429:
        return {
            "message": "Rate limit reached (scripted)",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    return {
        "message": f"HTTP {status} (scripted)",
        "type": "server_error" if status >= 500 else "invalid_request_error",
        "param": None,
        "code": None,
    }


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _responses_usage(turn: Mapping[str, Any]) -> dict[str, Any]:
    usage = turn.get("usage")
    if isinstance(usage, dict):
        return dict(usage)
    out = _estimate_tokens(turn.get("text", "")) + sum(
        _estimate_tokens(_arguments(c)) for c in turn.get("calls", ())
    )
    return {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 20 + out,
    }


def _responses_stream(turn: Mapping[str, Any], model: str, index: int) -> bytes:
    response_id = f"resp_{_hex('resp', index)}"
    created = _BASE_TIME + index
    seq = 0
    out: list[bytes] = []

    def emit(event: dict[str, Any]) -> None:
        nonlocal seq
        event["sequence_number"] = seq
        seq += 1
        out.append(_sse(event))

    def response(status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": created,
            "status": status,
            "background": False,
            "completed_at": created + 1 if status == "completed" else None,
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "max_output_tokens": None,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": None,
            "metadata": {},
            **extra,
        }

    emit({"type": "response.created", "response": response("in_progress", [])})
    emit({"type": "response.in_progress", "response": response("in_progress", [])})
    text = str(turn.get("text", ""))
    calls = list(turn.get("calls", ()))
    items: list[dict[str, Any]] = []
    if text or not calls:
        item_id = f"msg_{_hex('msg', index)}"
        position = len(items)
        emit(
            {
                "type": "response.output_item.added",
                "item": {
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "content": [],
                    "role": "assistant",
                },
                "output_index": position,
            }
        )
        empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        emit(
            {
                "type": "response.content_part.added",
                "content_index": 0,
                "item_id": item_id,
                "output_index": position,
                "part": empty_part,
            }
        )
        for piece in _pieces(text):
            emit(
                {
                    "type": "response.output_text.delta",
                    "content_index": 0,
                    "delta": piece,
                    "item_id": item_id,
                    "logprobs": [],
                    "output_index": position,
                }
            )
        emit(
            {
                "type": "response.output_text.done",
                "content_index": 0,
                "item_id": item_id,
                "logprobs": [],
                "output_index": position,
                "text": text,
            }
        )
        part = {**empty_part, "text": text}
        emit(
            {
                "type": "response.content_part.done",
                "content_index": 0,
                "item_id": item_id,
                "output_index": position,
                "part": part,
            }
        )
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "content": [part],
            "role": "assistant",
        }
        emit({"type": "response.output_item.done", "item": item, "output_index": position})
        items.append(item)
    for n, call in enumerate(calls):
        item_id = f"fc_{_hex('fc', index, n)}"
        position = len(items)
        arguments = _arguments(call)
        added = {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": _call_id(call, index, n),
            "name": call["name"],
        }
        emit({"type": "response.output_item.added", "item": added, "output_index": position})
        for piece in _arg_pieces(arguments):
            emit(
                {
                    "type": "response.function_call_arguments.delta",
                    "delta": piece,
                    "item_id": item_id,
                    "output_index": position,
                }
            )
        emit(
            {
                "type": "response.function_call_arguments.done",
                "arguments": arguments,
                "item_id": item_id,
                "output_index": position,
            }
        )
        item = {**added, "status": "completed", "arguments": arguments}
        emit({"type": "response.output_item.done", "item": item, "output_index": position})
        items.append(item)
    error = turn.get("error")
    if isinstance(error, dict):
        emit({"param": None, **error, "type": "error"})
        emit(
            {
                "type": "response.failed",
                "response": response("failed", items, error=dict(error), usage=turn.get("usage")),
            }
        )
    else:
        emit(
            {
                "type": "response.completed",
                "response": response("completed", items, usage=_responses_usage(turn)),
            }
        )
    return b"".join(out)


def _chat_stream(turn: Mapping[str, Any], model: str, index: int) -> bytes:
    base = {
        "id": f"chatcmpl-{_hex('chat', index, 0, 29)}",
        "object": "chat.completion.chunk",
        "created": _BASE_TIME + index,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": f"fp_{_hex('fp', 0, 0, 10)}",
    }
    out: list[bytes] = []

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> None:
        payload: dict[str, Any] = dict(base)
        if delta is None:
            payload["choices"] = []
        else:
            payload["choices"] = [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            ]
        payload["usage"] = None
        payload.update(extra)
        out.append(b"data: " + orjson.dumps(payload) + b"\n\n")

    text = str(turn.get("text", ""))
    calls = list(turn.get("calls", ()))
    chunk({"role": "assistant", "content": "" if text or not calls else None, "refusal": None})
    for piece in _pieces(text):
        chunk({"content": piece})
    for n, call in enumerate(calls):
        chunk(
            {
                "tool_calls": [
                    {
                        "index": n,
                        "id": _call_id(call, index, n),
                        "type": "function",
                        "function": {"name": call["name"], "arguments": ""},
                    }
                ]
            }
        )
        for piece in _arg_pieces(_arguments(call)):
            chunk({"tool_calls": [{"index": n, "function": {"arguments": piece}}]})
    error = turn.get("error")
    if isinstance(error, dict):
        chunk(None, error=dict(error))
    else:
        chunk({}, "tool_calls" if calls else "stop")
        usage = turn.get("usage")
        if not isinstance(usage, dict):
            completion = _estimate_tokens(text) + sum(
                _estimate_tokens(_arguments(c)) for c in calls
            )
            usage = {
                "prompt_tokens": 20,
                "completion_tokens": completion,
                "total_tokens": 20 + completion,
            }
        chunk(None, usage=dict(usage))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


# -- a script as a trace ----------------------------------------------------------------


def _failed(turn: Mapping[str, Any]) -> bool:
    status = turn.get("status")
    return (isinstance(status, int) and status >= 300) or isinstance(turn.get("error"), dict)


def script_to_trace(script: Any, path: str = "<script>") -> Trace:
    """A ``Trace`` holding the script's answers, for the replay server.

    Each turn becomes one recorded exchange. A failing turn (an HTTP status
    of 300 or more, or an in-stream error) is an attempt at the iteration the
    next turn answers; every other turn ends its iteration. The header's
    ``metadata.script`` is true, which tells the server to choose the
    iteration by counting the model turns a request's input already holds
    (a script has no recorded requests to compare with).
    """
    script = validate_script(script, path)
    dialect, model = script["dialect"], script["model"]
    endpoint = "/v1/responses" if dialect == "responses" else "/v1/chat/completions"
    header = {
        "kind": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "rawloop": __version__,
        "dialect": dialect,
        "base_url": "",
        "model": model,
        "created": "1970-01-01T00:00:00+00:00",
        "metadata": {"script": True, "turns": len(script["turns"])},
    }
    records: list[Record] = []

    def add(data: dict[str, Any]) -> None:
        records.append(Record(data["kind"], len(records) + 2, data))

    iteration = attempt = 0
    for index, turn in enumerate(script["turns"]):
        status = turn.get("status")
        status = status if isinstance(status, int) else 200
        body = synthesize_turn(turn, dialect, model, index)
        where = {"iteration": iteration, "attempt": attempt}
        add(
            {
                "kind": "request",
                **where,
                "method": "POST",
                "url": endpoint,
                "headers": {},
                "body": {"model": model, "script_turn": index},
            }
        )
        headers = {"content-type": "application/json" if status >= 300 else "text/event-stream"}
        if turn.get("retry_after") is not None:
            headers["retry-after"] = f"{float(turn['retry_after']):g}"
        add(
            {
                "kind": "response",
                **where,
                "status": status,
                "headers": headers,
                "request_id": f"req_{_hex('req', index, 0, 24)}",
                "t": 0.0,
            }
        )
        pieces = [body] if status >= 300 else split_events(body)
        for piece in pieces:
            add({"kind": "chunk", **where, "t": 0.0, **encode_chunk(piece)})
        if _failed(turn):
            error = turn.get("error") or {}
            add(
                {
                    "kind": "error",
                    **where,
                    "where": "request",
                    "type": "APIStatusError" if status >= 300 else "StreamErrorEvent",
                    "message": str(error.get("message", f"HTTP {status}")),
                    "will_retry": True,
                    "delay": 0.0,
                }
            )
            attempt += 1
        else:
            iteration += 1
            attempt = 0
    return Trace(header, records, path)
