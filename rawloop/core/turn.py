"""What a dialect's accumulator produces: deltas while streaming, a Turn at the end.

These types are shared by the Responses and the Chat Completions dialects so
that the loop, the hooks and the trace never care which one is on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["Delta", "DeltaKind", "FunctionCall", "Turn"]

DeltaKind = Literal[
    "text",  # assistant text
    "arguments",  # a fragment of a function call's JSON arguments
    "call",  # a function call whose arguments are complete
    "reasoning",  # reasoning text or reasoning summary text
    "refusal",  # refusal text
    "lifecycle",  # created, in_progress, item added/done, completed, ...
    "error",  # an error reported inside the stream
    "unknown",  # an event this version does not know; kept on the Turn
]


class Delta:
    """One thing a streamed event told us.

    ``kind`` is a ``DeltaKind``; ``type`` is the wire event type that produced
    it (``response.output_text.delta``, ``chat.completion.chunk``...).
    ``index`` is the Responses ``output_index`` or the Chat choice index. For
    ``arguments`` and ``call`` deltas ``call_id`` and ``name`` say which call,
    when the stream has said so by then.
    """

    # Written out rather than a dataclass: one is made per event, and this
    # __init__ is measurably cheaper than the generated one.
    __slots__ = ("call_id", "index", "item_id", "kind", "name", "text", "type")

    def __init__(
        self,
        kind: DeltaKind,
        text: str = "",
        type: str = "",
        item_id: str | None = None,
        index: int = 0,
        call_id: str | None = None,
        name: str | None = None,
    ) -> None:
        self.kind = kind
        self.text = text
        self.type = type
        self.item_id = item_id
        self.index = index
        self.call_id = call_id
        self.name = name

    def _fields(self) -> tuple[Any, ...]:
        return (self.kind, self.text, self.type, self.item_id, self.index, self.call_id, self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Delta) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}"
            for name, value in zip(
                ("kind", "text", "type", "item_id", "index", "call_id", "name"), self._fields()
            )
            if value not in ("", None) or name in ("kind", "index")
        )
        return f"Delta({shown})"


@dataclass(slots=True)
class FunctionCall:
    """A function call the model asked for; ``arguments`` is the raw JSON text as streamed."""

    call_id: str
    name: str
    arguments: str
    item_id: str | None = None

    def parsed_arguments(self) -> Any:
        """``arguments`` parsed as JSON (raises ``orjson.JSONDecodeError``)."""
        return orjson.loads(self.arguments or "{}")


@dataclass
class Turn:
    """Everything one model response said, in either dialect.

    ``output`` holds what to send back as the next request's input: for the
    Responses API the output items exactly as the server sent them, for Chat
    Completions the assistant message (with ``tool_calls``). ``status`` is
    ``completed``, ``incomplete``, ``failed``, ``cancelled``, or ``in_progress``
    for a stream that never finished. ``warnings`` lists oddities that did not
    stop the parse (gaps in ``sequence_number``, a missing blank line at the
    end). ``unknown_events`` keeps, verbatim, every event this version of
    rawloop does not understand.
    """

    dialect: str = "responses"
    response_id: str | None = None
    model: str | None = None
    status: str = "in_progress"
    text: str = ""
    calls: list[FunctionCall] = field(default_factory=list)
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    finish_reason: str | None = None
    reasoning: str = ""
    refusal: str = ""
    warnings: list[str] = field(default_factory=list)
    unknown_events: list[dict[str, Any]] = field(default_factory=list)
    event_count: int = 0
    #: The final response object (Responses) when the stream carried one.
    response: dict[str, Any] | None = None
    #: Chat Completions with ``n > 1``: one Turn per choice; this Turn is choice 0.
    choices: list[Turn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A plain-JSON view, as hooks and traces store it."""
        return {
            "dialect": self.dialect,
            "response_id": self.response_id,
            "model": self.model,
            "status": self.status,
            "text": self.text,
            "calls": [
                {
                    "call_id": c.call_id,
                    "name": c.name,
                    "arguments": c.arguments,
                    "item_id": c.item_id,
                }
                for c in self.calls
            ],
            "output": self.output,
            "usage": self.usage,
            "error": self.error,
            "finish_reason": self.finish_reason,
            "reasoning": self.reasoning,
            "refusal": self.refusal,
            "warnings": self.warnings,
            "unknown_events": self.unknown_events,
            "event_count": self.event_count,
            "choices": [c.to_dict() for c in self.choices],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        """Inverse of ``to_dict`` (``response`` is not stored there, so it stays None)."""
        return cls(
            dialect=data.get("dialect", "responses"),
            response_id=data.get("response_id"),
            model=data.get("model"),
            status=data.get("status", "in_progress"),
            text=data.get("text", ""),
            calls=[FunctionCall(**c) for c in data.get("calls", ())],
            output=list(data.get("output", ())),
            usage=data.get("usage"),
            error=data.get("error"),
            finish_reason=data.get("finish_reason"),
            reasoning=data.get("reasoning", ""),
            refusal=data.get("refusal", ""),
            warnings=list(data.get("warnings", ())),
            unknown_events=list(data.get("unknown_events", ())),
            event_count=data.get("event_count", 0),
            choices=[cls.from_dict(c) for c in data.get("choices", ())],
        )
