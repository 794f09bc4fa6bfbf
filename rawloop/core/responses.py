"""The Responses API dialect: an accumulator from stream events to a Turn.

The request side (bodies, tool schemas) is ``rawloop.core.responses_request``.

Theory of operation
-------------------
Every streamed event carries a ``type`` in its JSON (the ``event:`` line is a
copy of it on OpenAI, and absent on OpenRouter), so dispatch is one dict
lookup from the type to a handler. Handlers keep three kinds of state:

* output items by ``output_index``: announced by ``response.output_item.added``,
  replaced by the finished item in ``response.output_item.done``;
* function calls by ``item_id``: on the real API ``function_call_arguments.*``
  events carry neither ``call_id`` nor ``name``, so those come from the item
  that ``output_item.added`` announced;
* text, reasoning and refusal fragments by (item, part), joined at the end.

The terminal events (``response.completed``, ``.incomplete``, ``.failed``,
``.cancelled``) carry the whole response object; its ``output`` list is what
the next request sends back as input. Events this module does not know are
kept verbatim on ``Turn.unknown_events``: a debugging tool must not drop what
it does not understand. Gaps in ``sequence_number`` become warnings; streams
from early 2025 have no ``sequence_number`` at all, which is fine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .accumulator import Accumulator, FieldTypeError, event_of, int_field, kind, str_field
from .responses_fields import checked_response, delta_text, output_item, part_key
from .sse import ServerSentEvent
from .turn import Delta, FunctionCall

__all__ = ["ResponsesAccumulator"]

_TERMINAL_STATUS = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
    "response.cancelled": "cancelled",
}

_TEXT_DELTA = "response.output_text.delta"

# Returned when deltas are not wanted; never mutated.
_NO_DELTAS: list[Delta] = []

# Events that only report progress: they become lifecycle deltas and change
# nothing on the Turn (the items they describe arrive in output_item.done).
_PROGRESS_EVENTS = (
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.annotation.added",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.done",
    "response.reasoning_text.done",
    "response.refusal.done",
    "response.web_search_call.in_progress",
    "response.web_search_call.searching",
    "response.web_search_call.completed",
    "response.file_search_call.in_progress",
    "response.file_search_call.searching",
    "response.file_search_call.completed",
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call.interpreting",
    "response.code_interpreter_call.completed",
    "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call_code.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "response.mcp_call.failed",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_list_tools.in_progress",
    "response.mcp_list_tools.completed",
    "response.mcp_list_tools.failed",
    "response.image_generation_call.in_progress",
    "response.image_generation_call.generating",
    "response.image_generation_call.partial_image",
    "response.image_generation_call.completed",
    "response.custom_tool_call_input.delta",
    "response.custom_tool_call_input.done",
)


@dataclass(slots=True)
class _CallState:
    item_id: str
    output_index: int
    call_id: str | None
    name: str | None
    fragments: list[str] = field(default_factory=list)
    arguments: str | None = None  # from function_call_arguments.done
    announced: bool = False  # a "call" delta went out


Handler = Callable[["ResponsesAccumulator", dict[str, Any], str], list[Delta]]


class ResponsesAccumulator(Accumulator):
    """Folds Responses API stream events into deltas and a ``Turn``."""

    dialect = "responses"

    def __init__(self) -> None:
        super().__init__()
        self._items: dict[int, dict[str, Any]] = {}
        self._index_of_item: dict[str, int] = {}
        self._calls: dict[str, _CallState] = {}
        self._text: dict[tuple[str, int], list[str]] = {}
        self._reasoning: dict[tuple[str, int], list[str]] = {}
        self._refusal: list[str] = []
        self._last_seq: int | None = None
        self._last_part_key: tuple[str | None, int] = (None, -1)
        self._last_part: list[str] = []
        self._stand_in = ServerSentEvent()

    #: The frequent fragment events: StreamParser hands these over undecoded
    #: (orjson reads the bytes), sparing a decode and an event object each.
    raw_names = frozenset(
        {
            "response.output_text.delta",
            "response.function_call_arguments.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_text.delta",
        }
    )

    def feed(self, event: ServerSentEvent) -> list[Delta]:
        # parse() and apply() in one call, with the commonest event (a text
        # delta) handled inline: this runs once per event, thousands of times
        # per response, and every method call here is measurable.
        data = event.data
        if not data.startswith('{"type":"response.output_text.delta"'):
            return self.apply(self.parse(event), event)
        try:
            p = self.last_payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self.apply(self.parse(event), event)  # parse() explains the problem
        if p.get("type") != _TEXT_DELTA:  # a longer type with the same prefix
            self.event_index += 1
            return self.apply(p, event)
        return self._text_delta(p, event.event, event.offset)

    def feed_raw(self, name: str, data: bytes, offset: int, last_id: str | None) -> list[Delta]:
        try:
            p = self.last_payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            # Not JSON, or not UTF-8: the ordinary path says which, and where.
            return self.feed(event_of(name, data, offset, last_id))
        if type(p) is not dict:
            return self.feed(event_of(name, data, offset, last_id))
        if p.get("type") != _TEXT_DELTA:
            self.event_index += 1
            # Handlers read only the event's type and offset (for error messages),
            # so one stand-in event is reused rather than one made per event.
            stand_in = self._stand_in
            stand_in.event, stand_in.offset, stand_in.id = name, offset, last_id
            return self.apply(p, stand_in)
        return self._text_delta(p, name, offset)

    def _text_delta(self, p: dict[str, Any], name: str, offset: int) -> list[Delta]:
        self.event_index += 1
        try:
            seq = p.get("sequence_number")
            if seq is not None:
                self._sequence(seq)
            return self._on_text_delta(p, _TEXT_DELTA)
        except FieldTypeError as exc:
            raise self._bad(
                ServerSentEvent(name, "", None, None, offset),
                f"unexpected shape for {_TEXT_DELTA}: {exc}",
            ) from None

    def apply(self, payload: Any, event: ServerSentEvent) -> list[Delta]:
        if payload is None:  # "data: [DONE]", sent by OpenRouter after the terminal event
            if not self.done:
                self.turn.warnings.append("[DONE] arrived before any terminal response event")
            return []
        etype = payload.get("type")
        if not isinstance(etype, str):
            etype = event.event
            if etype == "message":
                raise self._bad(event, "event has no 'type' in its data and no 'event:' line")
        try:
            seq = payload.get("sequence_number")
            if seq is not None:
                self._sequence(seq)
            handler = _HANDLERS.get(etype)
            if handler is None:
                self.turn.unknown_events.append(payload)
                return [Delta("unknown", type=str(etype))]
            return handler(self, payload, etype)
        except FieldTypeError as exc:
            raise self._bad(event, f"unexpected shape for {etype}: {exc}") from None
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise self._bad(event, f"unexpected shape for {etype}: {exc!r}") from None

    def _sequence(self, seq: Any) -> None:
        """Note a gap in ``sequence_number`` (a lost or repeated event) as a warning."""
        if type(seq) is not int:
            raise FieldTypeError(f"sequence_number is {kind(seq)}, not an integer")
        last = self._last_seq
        if last is not None and seq != last + 1:
            self.turn.warnings.append(
                f"sequence_number jumps from {last} to {seq} at event {self.event_index}"
            )
        self._last_seq = seq

    def _part(self, item_id: str, content_index: int) -> list[str]:
        """The text fragments of one content part, remembered as the current part."""
        key = (item_id, content_index)
        parts = self._text.get(key)
        if parts is None:
            parts = self._text[key] = []
        self._last_part_key, self._last_part = key, parts
        return parts

    # -- handlers, most frequent first ----------------------------------------

    def _on_text_delta(self, p: dict[str, Any], etype: str) -> list[Delta]:
        # The hot path: every check is a type() identity test.
        item_id = p.get("item_id") or ""
        content_index = p.get("content_index") or 0
        if type(item_id) is not str or type(content_index) is not int:
            item_id, content_index = part_key(p, "content_index")
        key = self._last_part_key
        if item_id == key[0] and content_index == key[1]:
            parts = self._last_part  # thousands of deltas in a row go to one part
        else:
            parts = self._part(item_id, content_index)
        delta = delta_text(p)
        parts.append(delta)
        if not self.want_deltas:
            return _NO_DELTAS
        return [Delta("text", delta, etype, item_id, int_field(p, "output_index"))]

    def _on_args_delta(self, p: dict[str, Any], etype: str) -> list[Delta]:
        call = self._call_for(p)
        delta = delta_text(p)
        call.fragments.append(delta)
        if not self.want_deltas:
            return _NO_DELTAS
        return [
            Delta(
                "arguments", delta, etype, call.item_id, call.output_index, call.call_id, call.name
            )
        ]

    def _on_args_done(self, p: dict[str, Any], etype: str) -> list[Delta]:
        call = self._call_for(p)
        arguments = p.get("arguments")
        if isinstance(arguments, str):
            streamed = "".join(call.fragments)
            if call.fragments and streamed != arguments:
                self.turn.warnings.append(
                    f"arguments of {call.item_id} differ between deltas and "
                    "function_call_arguments.done; using the done event's"
                )
            call.arguments = arguments
        return self._announce(call, etype)

    def _on_text_done(self, p: dict[str, Any], etype: str) -> list[Delta]:
        text = p.get("text")
        key = part_key(p, "content_index")
        parts = self._text.get(key)
        if isinstance(text, str) and (parts is None or "".join(parts) != text):
            if parts is not None:
                self.turn.warnings.append(
                    f"text of {key[0]} differs between deltas and output_text.done; "
                    "using the done event's"
                )
            self._text[key] = [text]
            self._last_part_key = (None, -1)
        index = int_field(p, "output_index")
        return [Delta("lifecycle", type=etype, item_id=key[0], index=index)]

    def _on_item_added(self, p: dict[str, Any], etype: str) -> list[Delta]:
        item = output_item(p["item"], "item.")
        index = int_field(p, "output_index", len(self._items))
        self._items[index] = item
        item_id = item.get("id")
        if item_id:
            self._index_of_item[item_id] = index
            if item.get("type") == "function_call":
                self._calls[item_id] = _CallState(
                    item_id, index, item.get("call_id"), item.get("name")
                )
        return [Delta("lifecycle", type=etype, item_id=item_id, index=index)]

    def _on_item_done(self, p: dict[str, Any], etype: str) -> list[Delta]:
        item = output_item(p["item"], "item.")
        item_id = item.get("id")
        index = int_field(p, "output_index", -1)
        if index < 0:
            index = (
                self._index_of_item.get(item_id, len(self._items)) if item_id else len(self._items)
            )
        self._items[index] = item
        deltas = [Delta("lifecycle", type=etype, item_id=item_id, index=index)]
        if item.get("type") == "function_call" and item_id:
            call = self._calls.get(item_id)
            if call is None:
                call = self._calls[item_id] = _CallState(item_id, index, None, None)
            call.call_id = item.get("call_id") or call.call_id
            call.name = item.get("name") or call.name
            if isinstance(item.get("arguments"), str):
                call.arguments = item["arguments"]
            deltas.extend(self._announce(call, etype))
        return deltas

    def _on_reasoning_delta(self, p: dict[str, Any], etype: str) -> list[Delta]:
        key = part_key(p, "summary_index" if "summary_index" in p else "content_index")
        parts = self._reasoning.get(key)
        if parts is None:
            parts = self._reasoning[key] = []
        delta = delta_text(p)
        parts.append(delta)
        return [Delta("reasoning", delta, etype, key[0], int_field(p, "output_index"))]

    def _on_refusal_delta(self, p: dict[str, Any], etype: str) -> list[Delta]:
        delta = delta_text(p)
        self._refusal.append(delta)
        index = int_field(p, "output_index")
        return [Delta("refusal", delta, etype, str_field(p, "item_id"), index)]

    def _on_progress(self, p: dict[str, Any], etype: str) -> list[Delta]:
        delta = p.get("delta")
        return [
            Delta(
                "lifecycle",
                delta if isinstance(delta, str) else "",
                etype,
                str_field(p, "item_id"),
                int_field(p, "output_index"),
            )
        ]

    def _on_response_update(self, p: dict[str, Any], etype: str) -> list[Delta]:
        self._take_response(p["response"], None)
        return [Delta("lifecycle", type=etype)]

    def _on_terminal(self, p: dict[str, Any], etype: str) -> list[Delta]:
        response = p["response"]
        self._take_response(response, _TERMINAL_STATUS[etype])
        self.turn.response = response
        self.done = True
        return [Delta("lifecycle", type=etype)]

    def _on_error(self, p: dict[str, Any], etype: str) -> list[Delta]:
        error = p.get("error")
        if not isinstance(error, dict):
            error = {k: v for k, v in p.items() if k not in ("type", "sequence_number")}
        self.turn.error = error
        self.turn.status = "failed"
        self.errored = True
        return [Delta("error", str(error.get("message", "")), etype)]

    # -- helpers --------------------------------------------------------------

    def _take_response(self, response: Any, status: str | None) -> None:
        response = checked_response(response)
        turn = self.turn
        turn.response_id = response.get("id") or turn.response_id
        turn.model = response.get("model") or turn.model
        turn.status = response.get("status") or status or turn.status
        if response.get("usage") is not None:
            turn.usage = response["usage"]
        if response.get("error"):
            turn.error = response["error"]
        details = response.get("incomplete_details")
        if isinstance(details, dict) and details.get("reason"):
            turn.finish_reason = str_field(details, "reason", "response.incomplete_details.")

    def _call_for(self, p: dict[str, Any]) -> _CallState:
        item_id = p["item_id"]
        if type(item_id) is not str:
            raise FieldTypeError(f"item_id is {kind(item_id)}, not a string")
        call = self._calls.get(item_id)
        if call is None:
            # A resumed stream may start after output_item.added: keep going,
            # call_id and name arrive with output_item.done.
            self.turn.warnings.append(
                f"arguments for {item_id} arrived before its item was announced"
            )
            call = self._calls[item_id] = _CallState(
                item_id, int_field(p, "output_index"), None, None
            )
        return call

    def _announce(self, call: _CallState, etype: str) -> list[Delta]:
        if call.announced or call.call_id is None or call.name is None:
            return []
        call.announced = True
        return [
            Delta(
                "call",
                self._arguments(call),
                etype,
                call.item_id,
                call.output_index,
                call.call_id,
                call.name,
            )
        ]

    @staticmethod
    def _arguments(call: _CallState) -> str:
        return call.arguments if call.arguments is not None else "".join(call.fragments)

    def _finalize(self) -> None:
        turn = self.turn
        turn.text = "".join("".join(parts) for parts in self._text.values())
        turn.reasoning = "\n\n".join("".join(parts) for parts in self._reasoning.values())
        turn.refusal = "".join(self._refusal)
        streamed = [self._items[i] for i in sorted(self._items)]
        final = turn.response.get("output") if turn.response else None
        if isinstance(final, list) and final:
            if len(final) != len(streamed):
                turn.warnings.append(
                    f"the terminal response lists {len(final)} output items, "
                    f"the stream announced {len(streamed)}"
                )
            turn.output = final
        else:
            turn.output = streamed
        turn.calls = self._collect_calls(turn.output)

    def _collect_calls(self, output: list[dict[str, Any]]) -> list[FunctionCall]:
        calls: list[FunctionCall] = []
        seen: set[str] = set()
        for item in output:
            if not isinstance(item, dict) or item.get("type") != "function_call":
                continue
            item_id = item.get("id")
            state = self._calls.get(item_id) if item_id else None
            arguments = item.get("arguments")
            # An item that only output_item.added announced holds empty
            # arguments; the streamed fragments are the truth until it is done.
            if state is not None and (
                item.get("status") != "completed" or not isinstance(arguments, str)
            ):
                arguments = self._arguments(state)
            elif not isinstance(arguments, str):
                arguments = ""
            calls.append(
                FunctionCall(
                    call_id=item.get("call_id") or (state.call_id if state else "") or "",
                    name=item.get("name") or (state.name if state else "") or "",
                    arguments=arguments,
                    item_id=item_id,
                )
            )
            if item_id:
                seen.add(item_id)
        # Calls still streaming when the stream stopped (a partial turn).
        for state in sorted(self._calls.values(), key=lambda c: c.output_index):
            if state.item_id not in seen:
                calls.append(
                    FunctionCall(
                        state.call_id or "", state.name or "", self._arguments(state), state.item_id
                    )
                )
        return calls


# One table for every accumulator: plain functions, so an accumulator holds no
# bound methods of itself (no reference cycle for the garbage collector to find).
_HANDLERS: dict[str, Handler] = {
    "response.output_text.delta": ResponsesAccumulator._on_text_delta,
    "response.output_text.done": ResponsesAccumulator._on_text_done,
    "response.function_call_arguments.delta": ResponsesAccumulator._on_args_delta,
    "response.function_call_arguments.done": ResponsesAccumulator._on_args_done,
    "response.output_item.added": ResponsesAccumulator._on_item_added,
    "response.output_item.done": ResponsesAccumulator._on_item_done,
    "response.reasoning_summary_text.delta": ResponsesAccumulator._on_reasoning_delta,
    "response.reasoning_text.delta": ResponsesAccumulator._on_reasoning_delta,
    "response.refusal.delta": ResponsesAccumulator._on_refusal_delta,
    "response.created": ResponsesAccumulator._on_response_update,
    "response.in_progress": ResponsesAccumulator._on_response_update,
    "response.queued": ResponsesAccumulator._on_response_update,
    "response.completed": ResponsesAccumulator._on_terminal,
    "response.incomplete": ResponsesAccumulator._on_terminal,
    "response.failed": ResponsesAccumulator._on_terminal,
    "response.cancelled": ResponsesAccumulator._on_terminal,
    "error": ResponsesAccumulator._on_error,
    **dict.fromkeys(_PROGRESS_EVENTS, ResponsesAccumulator._on_progress),
}
