"""What the Responses and Chat accumulators share: JSON parsing of event data,
event counting, and the finish rules.

An accumulator is sans-IO: ``feed(event)`` returns deltas, ``finish()`` returns
the Turn. The loop calls ``parse`` and ``apply`` separately so that the
``on_event`` hook sees the parsed JSON without it being parsed twice.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import IncompleteStream, InvalidEventData
from .sse import ServerSentEvent, utf8_error
from .turn import Delta, Turn

__all__ = ["Accumulator", "FieldTypeError", "event_of", "int_field", "kind", "str_field"]


class FieldTypeError(Exception):
    """A field of an event's JSON has the wrong type.

    Raised by the field readers below inside a handler, where the event is not
    at hand; the accumulator turns it into ``InvalidEventData`` naming the event.
    """


def kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "boolean"
    return _KINDS.get(type(value), type(value).__name__)


_KINDS = {str: "string", int: "integer", float: "number", list: "array", dict: "object"}


def str_field(obj: dict[str, Any], key: str, where: str = "") -> str | None:
    """``obj[key]`` when it is a string, None when absent or null, else ``FieldTypeError``."""
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise FieldTypeError(f"{where}{key} is {kind(value)}, not a string")


def int_field(obj: dict[str, Any], key: str, default: int = 0, where: str = "") -> int:
    """``obj[key]`` when it is an integer (not a boolean), ``default`` when absent or null."""
    value = obj.get(key)
    if value is None:
        return default
    if type(value) is int:
        return value
    raise FieldTypeError(f"{where}{key} is {kind(value)}, not an integer")


def event_of(name: str, data: bytes, offset: int, last_id: str | None) -> ServerSentEvent:
    """The ``ServerSentEvent`` of a raw event: the data decoded as the decoder would."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise utf8_error(exc, offset) from None
    return ServerSentEvent(name, text, last_id, None, offset)


DONE_SENTINEL = "[DONE]"


class Accumulator:
    """Base class: subclasses implement ``apply``."""

    dialect = ""
    #: Build ``Delta`` objects for the frequent fragment events. A caller that
    #: only wants the Turn (the loop, with no ``on_event`` hook) turns this off.
    want_deltas = True

    def __init__(self) -> None:
        self.turn = Turn(dialect=self.dialect)
        #: True once a terminal event (completed/incomplete/failed, ``[DONE]``) arrived.
        self.done = False
        #: True once the server reported an error inside the stream.
        self.errored = False
        self.event_index = -1
        #: The parsed JSON of the event fed last (None for ``[DONE]``), for hooks.
        self.last_payload: Any = None

    def parse(self, event: ServerSentEvent) -> Any:
        """Parse one event's data; ``None`` for the ``[DONE]`` sentinel.

        Raises ``InvalidEventData`` (with the event index and byte offset) when
        the data is not a JSON object.
        """
        self.event_index += 1
        data = event.data
        if data == DONE_SENTINEL:
            self.last_payload = None
            return None
        try:
            payload = self.last_payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise self._bad(event, f"data is not valid JSON ({exc.msg})") from None
        if not isinstance(payload, dict):
            raise self._bad(event, f"data is JSON {type(payload).__name__}, not an object")
        return payload

    def apply(self, payload: Any, event: ServerSentEvent) -> list[Delta]:
        """Fold one parsed event into the turn; return its deltas."""
        raise NotImplementedError

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        """``parse`` then ``apply``."""
        return self.apply(self.parse(event), event)

    #: Event types this accumulator can take undecoded through ``feed_raw``.
    raw_names: frozenset[str] = frozenset()

    def feed_raw(self, name: str, data: bytes, offset: int, last_id: str | None) -> list[Delta]:
        """``feed`` for an event handed over undecoded (see ``SSEDecoder.raw_names``)."""
        return self.feed(event_of(name, data, offset, last_id))

    def finish(self) -> Turn:
        """The finished turn.

        A stream that ended with neither a terminal event nor an error event
        raises ``IncompleteStream`` carrying the partial turn.
        """
        self.partial_turn()
        if not self.done and not self.errored:
            raise IncompleteStream(
                f"stream ended after {self.turn.event_count} events without a terminal event",
                partial=self.turn,
            )
        return self.turn

    def partial_turn(self) -> Turn:
        """The turn as far as the stream got, without the terminal-event check."""
        self._finalize()
        self.turn.event_count = self.event_index + 1
        return self.turn

    def _finalize(self) -> None:
        """Hook for subclasses: build the derived fields of the turn."""

    def _bad(self, event: ServerSentEvent, what: str) -> InvalidEventData:
        self.partial_turn()
        return InvalidEventData(
            f"event {self.event_index} (at byte {event.offset}, type {event.event!r}): {what}",
            event_index=self.event_index,
            offset=event.offset,
            partial=self.turn,
        )
