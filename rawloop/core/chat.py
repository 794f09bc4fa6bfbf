"""The Chat Completions dialect: request bodies, and an accumulator for its streams.

Theory of operation
-------------------
A Chat Completions stream is a run of ``data:`` events, each a JSON
``chat.completion.chunk``, closed by the ``data: [DONE]`` sentinel. A chunk
holds ``choices``; each choice has an ``index`` and a ``delta`` with a piece of
``content`` (or ``refusal``, or reasoning: ``reasoning_content`` on DeepSeek,
``reasoning`` on Groq and OpenRouter), or fragments of ``tool_calls``. Tool
call fragments are keyed by the choice index and the tool call's own
``index``: the first fragment names the call (``id``, ``function.name``), the
later ones only append to ``function.arguments``. One chunk may carry several
fragments for the same tool index (vLLM, openai-python #3201), so every
fragment is appended in order. A choice ends with its ``finish_reason``; with
``stream_options.include_usage`` a last chunk with ``choices: []`` carries
``usage`` (DeepSeek puts it on the final choice chunk instead).

``ChatAccumulator.apply`` keeps one small ``_Choice`` record per choice index
(text pieces in lists, calls by tool index) and hands back deltas at once;
nothing is joined or copied until ``_finalize`` builds the ``Turn``. The Turn
is choice 0; with ``n > 1`` ``Turn.choices`` has one Turn per choice.
``response_id`` and ``model`` come from the first chunk that has them.
``status`` is ``failed`` after an error in the stream, ``incomplete`` when the
choice finished with ``length`` (the Responses word for hitting max tokens),
``completed`` after ``[DONE]`` or once every choice finished, else
``in_progress``. ``output`` is the one assistant message to send back:
``content`` (the text, or None), plus ``tool_calls``, ``refusal`` and
``audio: {id}`` when the stream had them; reasoning is not sent back.

What real servers do that the reference does not say, and what is done here:

- Azure sends a first chunk with ``choices: []``, empty ``id``/``model`` and
  ``prompt_filter_results``: it is accepted and the empty fields are skipped.
- Audio output (``gpt-audio``) sends chunks with no ``choices`` key at all,
  and no ``finish_reason`` on any choice: such chunks are accepted, and
  ``[DONE]`` alone completes the turn. The audio ``id`` is kept in the
  assistant message so that the next request can refer to it.
- Errors arrive inside a chunk (OpenRouter: an ``error`` object next to
  ``choices``) or as an ``event: error`` block that ends the stream with no
  ``[DONE]`` (Groq). Either sets ``Turn.error`` and status ``failed``.
- A stream may end without ``[DONE]`` after every choice finished: that turn
  is returned with a warning, not an ``IncompleteStream``.
- Some servers reuse tool index 0 for every call or omit ``index``: a new
  ``id`` on an index that already has a different one starts a new call.

A data object that is not recognizably a chunk is kept verbatim in
``Turn.unknown_events``; a chunk whose fields have the wrong JSON types raises
``InvalidEventData`` naming the field.
"""

from __future__ import annotations

from typing import Any

from .accumulator import Accumulator

# The request side lives in chat_request; its names stay importable from here.
from .chat_request import build_request, normalize_input, tool_result_messages, tool_schema
from .chat_request import type_name as _kind
from .errors import InvalidEventData
from .sse import ServerSentEvent
from .turn import Delta, FunctionCall, Turn

__all__ = [
    "ChatAccumulator",
    "build_request",
    "normalize_input",
    "tool_result_messages",
    "tool_schema",
]

_CHUNK = "chat.completion.chunk"
_NO_DONE_WARNING = "stream ended without [DONE]"


class _Call:
    """One streamed tool call: its id and name, and its argument fragments."""

    __slots__ = ("emitted", "id", "name", "parts")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.parts: list[str] = []
        self.emitted = False

    def arguments(self) -> str:
        parts = self.parts
        if len(parts) > 1:
            joined = "".join(parts)
            self.parts = [joined]
            return joined
        return parts[0] if parts else ""


class _Choice:
    """What one choice index has said so far."""

    __slots__ = (
        "audio_id",
        "by_index",
        "calls",
        "finish_reason",
        "index",
        "reasoning",
        "refusal",
        "text",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        #: Calls in the order they were first seen.
        self.calls: list[_Call] = []
        #: Tool ``index`` -> the call fragments with that index go to now.
        self.by_index: dict[int, _Call] = {}
        self.finish_reason: str | None = None
        self.audio_id: str | None = None


class ChatAccumulator(Accumulator):
    """Folds Chat Completions stream events into deltas and a ``Turn``.

    Feed it every ``ServerSentEvent`` of one response (``feed``, or ``parse``
    then ``apply``), then call ``finish()``. The turn is complete after
    ``[DONE]``, or once every choice seen has a ``finish_reason`` (with a
    warning when ``[DONE]`` never came); an error reported in the stream makes
    ``finish()`` return a failed turn; any other early end raises
    ``IncompleteStream`` with the partial turn.
    """

    dialect = "chat"

    def __init__(self) -> None:
        super().__init__()
        self._choices: dict[int, _Choice] = {}
        self._unfinished = 0
        self._saw_done = False

    # -- streaming --------------------------------------------------------

    def parse(self, event: ServerSentEvent) -> Any:
        """Parse one event's data; ``None`` for ``[DONE]``.

        An ``event: error`` block whose data is not a JSON object is not a
        parse failure: it becomes ``{"error": {"message": <data>}}``.
        """
        if event.event == "error":
            try:
                return super().parse(event)
            except InvalidEventData:
                self.last_payload = {"error": {"message": event.data}}
                return self.last_payload
        return super().parse(event)

    def apply(self, payload: Any, event: ServerSentEvent) -> list[Delta]:
        """Fold one parsed chunk (``None`` for ``[DONE]``) into the turn; return its deltas."""
        if payload is None:
            return self._on_done()
        deltas: list[Delta] = []
        turn = self.turn
        if turn.response_id is None or turn.model is None:
            self._meta(payload, event)

        choices = payload.get("choices")
        if choices:
            if type(choices) is not list:
                raise self._bad(event, f"choices is {_kind(choices)}, not a list")
            # The per-choice work is inlined: it runs once per chunk of the stream.
            states = self._choices
            for pos, choice in enumerate(choices):
                if type(choice) is not dict:
                    raise self._bad(event, f"choices[{pos}] is {_kind(choice)}, not an object")
                idx = choice.get("index", pos)
                if type(idx) is not int:
                    raise self._bad(event, f"choices[{pos}].index is {_kind(idx)}, not an integer")
                st = states.get(idx)
                if st is None:
                    st = self._new_choice(idx)
                delta = choice.get("delta")
                if delta:
                    if type(delta) is not dict:
                        raise self._bad(
                            event, f"choices[{pos}].delta is {_kind(delta)}, not an object"
                        )
                    content = delta.get("content")
                    if content:
                        if type(content) is not str:
                            raise self._bad(event, self._wrong(pos, "content", content))
                        st.text.append(content)
                        deltas.append(Delta("text", content, _CHUNK, None, idx))
                    elif content is not None and type(content) is not str:
                        raise self._bad(event, self._wrong(pos, "content", content))
                    if len(delta) > 1 or content is None:
                        self._rare_delta(delta, st, pos, event, deltas)
                elif delta is not None and type(delta) is not dict:
                    raise self._bad(event, f"choices[{pos}].delta is {_kind(delta)}, not an object")
                reason = choice.get("finish_reason")
                if reason is not None:
                    self._finish_choice(st, reason, pos, event, deltas)
        elif choices is None:
            if not (
                "usage" in payload
                or "error" in payload
                or payload.get("object") == _CHUNK
                or event.event == "error"
            ):
                turn.unknown_events.append(payload)
                deltas.append(Delta("unknown", "", event.event))
                return deltas
        elif type(choices) is not list:
            raise self._bad(event, f"choices is {_kind(choices)}, not a list")

        usage = payload.get("usage")
        if usage is not None:
            if type(usage) is not dict:
                raise self._bad(event, f"usage is {_kind(usage)}, not an object")
            turn.usage = usage

        if event.event == "error" or payload.get("error") is not None:
            self._error(payload, event, deltas)
        return deltas

    @staticmethod
    def _wrong(pos: int, field: str, value: object) -> str:
        return f"choices[{pos}].delta.{field} is {_kind(value)}, not a string"

    def _meta(self, payload: dict[str, Any], event: ServerSentEvent) -> None:
        turn = self.turn
        rid = payload.get("id")
        if rid is not None and type(rid) is not str:
            raise self._bad(event, f"id is {_kind(rid)}, not a string")
        if rid and turn.response_id is None:
            turn.response_id = rid
        model = payload.get("model")
        if model is not None and type(model) is not str:
            raise self._bad(event, f"model is {_kind(model)}, not a string")
        if model and turn.model is None:
            turn.model = model

    def _new_choice(self, idx: int) -> _Choice:
        st = self._choices[idx] = _Choice(idx)
        self._unfinished += 1
        if not self._saw_done:
            self.done = False
        return st

    def _rare_delta(
        self,
        delta: dict[str, Any],
        st: _Choice,
        pos: int,
        event: ServerSentEvent,
        deltas: list[Delta],
    ) -> None:
        """The delta fields other than ``content``: reasoning, refusal, tool calls, audio."""
        idx = st.index
        reasoning = delta.get("reasoning_content")
        field = "reasoning_content"
        if not reasoning:
            reasoning = delta.get("reasoning")
            field = "reasoning"
        if reasoning:
            if type(reasoning) is not str:
                raise self._bad(event, self._wrong(pos, field, reasoning))
            st.reasoning.append(reasoning)
            deltas.append(Delta("reasoning", reasoning, _CHUNK, None, idx))
        refusal = delta.get("refusal")
        if refusal:
            if type(refusal) is not str:
                raise self._bad(event, self._wrong(pos, "refusal", refusal))
            st.refusal.append(refusal)
            deltas.append(Delta("refusal", refusal, _CHUNK, None, idx))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            self._tool_calls(tool_calls, st, pos, event, deltas)
        if st.audio_id is None and "audio" in delta:
            audio = delta["audio"]
            if type(audio) is dict and type(audio.get("id")) is str:
                st.audio_id = audio["id"]

    def _finish_choice(
        self, st: _Choice, reason: Any, pos: int, event: ServerSentEvent, deltas: list[Delta]
    ) -> None:
        if type(reason) is not str:
            raise self._bad(event, f"choices[{pos}].finish_reason is {_kind(reason)}, not a string")
        if st.finish_reason is None:
            self._unfinished -= 1
            if self._unfinished == 0:
                self.done = True
            self._emit_calls(st, deltas)
        st.finish_reason = reason

    def _tool_calls(
        self,
        tool_calls: Any,
        st: _Choice,
        pos: int,
        event: ServerSentEvent,
        deltas: list[Delta],
    ) -> None:
        if type(tool_calls) is not list:
            raise self._bad(
                event, f"choices[{pos}].delta.tool_calls is {_kind(tool_calls)}, not a list"
            )
        idx = st.index
        for j, frag in enumerate(tool_calls):
            where = f"choices[{pos}].delta.tool_calls[{j}]"
            if type(frag) is not dict:
                raise self._bad(event, f"{where} is {_kind(frag)}, not an object")
            fn = frag.get("function")
            if fn is None:
                fn = {}
            elif type(fn) is not dict:
                raise self._bad(event, f"{where}.function is {_kind(fn)}, not an object")
            cid = frag.get("id")
            if cid is not None and type(cid) is not str:
                raise self._bad(event, f"{where}.id is {_kind(cid)}, not a string")
            name = fn.get("name")
            if name is not None and type(name) is not str:
                raise self._bad(event, f"{where}.function.name is {_kind(name)}, not a string")
            args = fn.get("arguments")
            if args is not None and type(args) is not str:
                raise self._bad(event, f"{where}.function.arguments is {_kind(args)}, not a string")

            key = frag.get("index")
            if type(key) is int:
                call = st.by_index.get(key)
                if call is None or (cid and call.id and cid != call.id):
                    # New call; or the server reused this index for a second call.
                    call = st.by_index[key] = _Call()
                    st.calls.append(call)
            elif key is None:
                call = self._unindexed(st, cid)
            else:
                raise self._bad(event, f"{where}.index is {_kind(key)}, not an integer")

            if cid and call.id is None:
                call.id = cid
            if name and call.name is None:
                call.name = name
            if args:
                call.parts.append(args)
                deltas.append(Delta("arguments", args, _CHUNK, None, idx, call.id, call.name))

    @staticmethod
    def _unindexed(st: _Choice, cid: str | None) -> _Call:
        """The call a fragment without ``index`` belongs to: by id, else the latest."""
        if cid:
            for call in st.calls:
                if call.id == cid:
                    return call
        elif st.calls:
            return st.calls[-1]
        call = _Call()
        st.calls.append(call)
        return call

    def _emit_calls(self, st: _Choice, deltas: list[Delta]) -> None:
        for call in st.calls:
            if not call.emitted:
                call.emitted = True
                deltas.append(
                    Delta("call", call.arguments(), _CHUNK, None, st.index, call.id, call.name)
                )

    def _on_done(self) -> list[Delta]:
        self.done = True
        self._saw_done = True
        deltas: list[Delta] = []
        for st in self._choices.values():
            self._emit_calls(st, deltas)
        deltas.append(Delta("lifecycle", "", "[DONE]"))
        return deltas

    def _error(self, payload: dict[str, Any], event: ServerSentEvent, deltas: list[Delta]) -> None:
        error = payload.get("error")
        if error is None:
            error = payload
        elif type(error) is str:
            error = {"message": error}
        elif type(error) is not dict:
            raise self._bad(event, f"error is {_kind(error)}, not an object")
        self.errored = True
        self.turn.error = error
        message = error.get("message")
        deltas.append(
            Delta(
                "error",
                message if type(message) is str else "",
                "error" if event.event == "error" else _CHUNK,
            )
        )

    # -- the end ----------------------------------------------------------

    def finish(self) -> Turn:
        """The finished turn (see the class docstring for when it raises)."""
        if self.done and not self._saw_done and not self.errored:
            self._warn(_NO_DONE_WARNING)
        return super().finish()

    def _finalize(self) -> None:
        turn = self.turn
        states = [self._choices[i] for i in sorted(self._choices)]
        first = self._choices.get(0)
        if first is None:
            first = _Choice(0)
        self._fill(turn, first)
        if len(states) > 1:
            turn.choices = [
                self._fill(
                    Turn(dialect=self.dialect, response_id=turn.response_id, model=turn.model), st
                )
                for st in states
            ]
        else:
            turn.choices = []

    def _fill(self, turn: Turn, st: _Choice) -> Turn:
        """Write one choice's state into ``turn``; idempotent."""
        text = "".join(st.text)
        turn.text = text
        turn.reasoning = "".join(st.reasoning)
        turn.refusal = "".join(st.refusal)
        turn.finish_reason = st.finish_reason
        calls: list[FunctionCall] = []
        for call in st.calls:
            if call.id is None:
                self._warn(f"a tool call of choice {st.index} has no id")
            if call.name is None:
                self._warn(f"a tool call of choice {st.index} has no name")
            calls.append(FunctionCall(call.id or "", call.name or "", call.arguments()))
        turn.calls = calls

        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if turn.refusal:
            message["refusal"] = turn.refusal
        if st.audio_id is not None:
            message["audio"] = {"id": st.audio_id}
        if calls:
            message["tool_calls"] = [
                {
                    "id": c.call_id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in calls
            ]
        turn.output = [message]

        if self.errored:
            turn.status = "failed"
            turn.error = self.turn.error
        elif st.finish_reason == "length":
            turn.status = "incomplete"
        elif self.done or st.finish_reason is not None:
            turn.status = "completed"
        else:
            turn.status = "in_progress"
        return turn

    def _warn(self, warning: str) -> None:
        if warning not in self.turn.warnings:
            self.turn.warnings.append(warning)
