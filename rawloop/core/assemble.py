"""Non-streaming answers, assembled from recorded streams.

Theory of operation. A trace records what the API streamed. A client that
asks without ``"stream": true`` expects one JSON object instead, which the
stream already holds: ``assemble`` parses the recorded bytes with the same
``StreamParser`` a live loop uses, and returns what the API would have sent.
For Responses that is the final ``response`` object of the terminal event,
exactly as recorded. For Chat Completions it is a ``chat.completion`` built
from the parsed turn (message, tool calls, finish reason, usage) and the
fields every chunk repeats (``created``, ``service_tier``,
``system_fingerprint``). A stream that ended in an error event gives that
error with status 500 (a Responses stream's terminal ``response`` is the
answer even when it failed). Pure functions, no I/O.
"""

from __future__ import annotations

from typing import Any

from .errors import StreamError
from .parse import StreamParser
from .turn import Turn

__all__ = ["assemble", "chat_completion"]


def assemble(raw: bytes, dialect: str) -> tuple[int, dict[str, Any]]:
    """(status, JSON object) for the recorded stream ``raw``; ``StreamError`` if it holds none."""
    parser = StreamParser(dialect)
    payloads = [p for _, p, _ in parser.feed_events(raw) if isinstance(p, dict)]
    turn = parser.close()
    if dialect == "responses" and turn.response is not None:
        return 200, turn.response  # a failed or incomplete response included: it is the answer
    if turn.error:
        return 500, {"error": turn.error}
    if dialect == "responses":
        raise StreamError("the stream holds no terminal response event")
    return 200, chat_completion(turn, payloads)


def chat_completion(turn: Turn, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` object for a parsed Chat turn and its chunks' payloads."""
    first = payloads[0] if payloads else {}
    choices = []
    for index, choice in enumerate(turn.choices or [turn]):
        message: dict[str, Any] = dict(choice.output[0]) if choice.output else {"role": "assistant"}
        message.setdefault("content", choice.text or None)
        message.setdefault("refusal", choice.refusal or None)
        message.setdefault("annotations", [])
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    out: dict[str, Any] = {
        "id": turn.response_id,
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": turn.model,
        "choices": choices,
        "usage": turn.usage,
    }
    for key in ("service_tier", "system_fingerprint"):
        if key in first:
            out[key] = first[key]
    return out
