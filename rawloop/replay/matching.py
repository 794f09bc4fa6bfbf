"""Which recording answers a request: the replay server's choice, from the request alone.

No sockets here. ``Loaded`` is one trace with what matching needs
precomputed; ``Matcher.choose`` picks the recorded iteration that answers a
request body, or gives the ``Refusal`` (an OpenAI-shaped error) saying why
none does; ``parse_body`` reads the request's JSON. The rules, in order, are
in ``rawloop.replay.server``'s docs.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..core.conversation import comparable_body, conversation, tool_outputs, turn_from_json
from ..core.errors import StreamError
from ..core.jsondiff import Difference, first_difference
from ..core.parse import StreamParser
from ..core.turn import Turn
from ..trace.format import Exchange, Trace
from .faults import Fault
from .replayer import Responder

__all__ = [
    "Loaded",
    "Match",
    "Matcher",
    "Refusal",
    "answer_turn",
    "comparable",
    "framing_free",
    "is_json_answer",
    "load",
    "parse_body",
    "plan_attempt",
    "strip",
    "succeeded",
    "unknown_model",
]

_MAX_CONVERSATIONS = 4096  # conversations followed; the least recently answered go
# Request keys that choose the framing of the answer, not what the model is asked.
_FRAMING_KEYS = ("stream", "stream_options")
# Responses input items that the model produced (they repeat a previous answer).
_MODEL_ITEM_TYPES = frozenset(
    {
        "function_call",
        "reasoning",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "custom_tool_call",
    }
)


# -- what is loaded ----------------------------------------------------------------------


@dataclass
class Loaded:
    """One trace, with what matching needs precomputed, and the Responder shaping its answers."""

    index: int
    name: str
    responder: Responder
    bodies: list[Any]  # each exchange's request body as compared (``comparable``)
    scripted: bool
    response_ids: dict[str, int] = field(default_factory=dict)  # answer id -> its iteration
    call_ids: dict[str, int] = field(default_factory=dict)  # call id -> the iteration making it

    @property
    def trace(self) -> Trace:
        return self.responder.trace

    @property
    def exchanges(self) -> list[Exchange]:
        return self.responder.exchanges

    @property
    def dialect(self) -> str:
        return self.trace.dialect

    def models(self) -> list[str]:
        found = [self.trace.header.get("model")]
        found += [b.get("model") for b in self.bodies if isinstance(b, dict)]
        return [m for m in dict.fromkeys(found) if isinstance(m, str) and m]

    def follows(self, body: dict[str, Any]) -> int | None:
        """The iteration after the latest recorded answer ``body`` names, if it names one.

        A follow-up may hold only what is new (``previous_response_id`` or a
        ``conversation`` keeps the rest on the server): the answer it names
        by id, or the calls whose outputs it carries back, say where it is.
        """
        after: list[int] = []
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous in self.response_ids:
            after.append(self.response_ids[previous])
        items = conversation(self.dialect, body)
        for call_id in tool_outputs(self.dialect, items):
            if call_id in self.call_ids:
                after.append(self.call_ids[call_id])
        return max(after) + 1 if after else None


@dataclass
class Match:
    loaded: Loaded
    iteration: int
    group: list[Exchange]  # the recorded attempts that answer this request, in order
    difference: Difference | None = None
    recorded: Any = None  # the recorded request body compared with (``comparable``)


@dataclass
class Refusal:
    """Why no recording answers a request: an OpenAI-shaped error."""

    status: int
    message: str
    code: str
    param: str | None = None


class Matcher:
    """Chooses which loaded trace and iteration answer a request (see ``choose``)."""

    def __init__(self, loaded: list[Loaded], ignore: Sequence[str]) -> None:
        self.loaded = loaded
        self.ignore = tuple(ignore)
        # (trace, conversation id) -> the iteration its next request is at, least recent first
        self.conversations: OrderedDict[tuple[int, str], int] = OrderedDict()

    def answered(self, match: Match, body: dict[str, Any]) -> None:
        """Note a success: the request's ``conversation``, if it names one, moves on past it."""
        name = conversation_id(body)
        if name is None:
            return
        key = (match.loaded.index, name)
        self.conversations[key] = match.iteration + 1
        self.conversations.move_to_end(key)
        if len(self.conversations) > _MAX_CONVERSATIONS:
            self.conversations.popitem(last=False)

    def after(self, loaded: Loaded, body: dict[str, Any]) -> int | None:
        """The iteration ``body`` is at by what it follows (``Loaded.follows``, its conversation)."""
        found = [loaded.follows(body)]
        name = conversation_id(body)
        if name is not None:
            found.append(self.conversations.get((loaded.index, name)))
        known = [n for n in found if n is not None]
        return max(known) if known else None

    def models(self) -> list[str]:
        """The models the loaded traces name, in load order."""
        return list(dict.fromkeys(m for loaded in self.loaded for m in loaded.models()))

    def choose(self, dialect: str, body: dict[str, Any]) -> Match | Refusal:
        """Which recorded iteration answers ``body``; or why none does.

        1. a recorded request that means the same (``comparable``) answers;
        2. else a script, at the iteration the request's conversation is at;
        3. else the recorded iteration the request follows (an answer id, a
           call id), of the same model, with the difference;
        4. else the recorded request of the same model with the longest
           common history, with the difference.
        """
        candidates = [t for t in self.loaded if t.dialect == dialect]
        if not candidates:
            served = ", ".join(sorted({t.dialect for t in self.loaded}))
            return Refusal(
                404,
                f"no loaded trace speaks the {dialect} dialect (this server replays: {served})",
                "unknown_url",
            )
        normalized = comparable(dialect, body, self.ignore)
        recorded = [t for t in candidates if not t.scripted]
        for loaded in recorded:
            for exchange, known in zip(loaded.exchanges, loaded.bodies):
                if first_difference(known, normalized) is None:
                    return self.group(loaded, exchange.iteration, known)
        for loaded in candidates:
            if loaded.scripted:
                return script_match(loaded, body, self.after(loaded, body))
        model = body.get("model")
        same_model = [
            (loaded, exchange, known)
            for loaded in recorded
            for exchange, known in zip(loaded.exchanges, loaded.bodies)
            if isinstance(known, dict) and known.get("model") == model
        ]
        if not same_model:
            return unknown_model(dialect, str(model), self.models())
        wanted = history(dialect, normalized)
        best: tuple[tuple[int, int, int], Loaded, Exchange, Any] | None = None
        for loaded, exchange, known in same_model:
            theirs = history(dialect, known)
            after = self.after(loaded, body)
            score = (
                int(after is not None and exchange.iteration == after),
                common_prefix(theirs, wanted),
                -abs(len(theirs) - len(wanted)),
            )
            if best is None or score > best[0]:
                best = (score, loaded, exchange, known)
        assert best is not None
        _, loaded, exchange, known = best
        match = self.group(loaded, exchange.iteration, known)
        match.difference = first_difference(known, normalized)
        return match

    def group(self, loaded: Loaded, iteration: int, known: Any) -> Match:
        """The match for recorded body ``known``: every attempt of its iteration with that body."""
        group = [
            e
            for e, b in zip(loaded.exchanges, loaded.bodies)
            if e.iteration == iteration and first_difference(b, known) is None
        ]
        return Match(loaded, iteration, group, recorded=known)


def unknown_model(dialect: str, model: str, known: list[str]) -> Refusal:
    """The API's own answer to a model it does not serve, in the dialect's shape."""
    held = f" (the loaded traces hold: {', '.join(known)})"
    if dialect == "chat":  # Chat Completions: 404, no param
        message = f"The model `{model}` does not exist or you do not have access to it.{held}"
        return Refusal(404, message, "model_not_found")
    return Refusal(
        400, f"The requested model '{model}' does not exist.{held}", "model_not_found", "model"
    )


def load(index: int, source: Trace | str | Path, **responder: Any) -> Loaded:
    """``source`` loaded for matching; ``responder`` holds the ``Responder``'s options."""
    trace = source if isinstance(source, Trace) else Trace.load(source)
    # Faults are not the Responder's: the server passes copies of its own.
    shaper = Responder(trace, **responder)
    ignore = tuple(responder.get("ignore", ()))
    scripted = bool((trace.header.get("metadata") or {}).get("script"))
    name = Path(trace.path).stem if trace.path and not trace.path.startswith("<") else ""
    loaded = Loaded(
        index,
        name or f"trace{index}",
        shaper,
        [comparable(trace.dialect, e.request.get("body"), ignore) for e in shaper.exchanges],
        scripted,
    )
    # A follow-up may name the answer it follows (previous_response_id) or carry
    # back the outputs of its calls: both say which iteration it is at.
    for exchange in loaded.exchanges:
        if not succeeded(exchange):
            continue
        turn = answer_turn(exchange, trace.dialect)
        if turn is None:
            continue
        if turn.response_id:
            loaded.response_ids.setdefault(turn.response_id, exchange.iteration)
        for call in turn.calls:
            loaded.call_ids.setdefault(call.call_id, exchange.iteration)
    return loaded


def answer_turn(exchange: Exchange, dialect: str) -> Turn | None:
    """The turn a recorded answer (a stream or one JSON object) holds; None if it holds none."""
    try:
        if is_json_answer(exchange):
            return turn_from_json(dialect, orjson.loads(exchange.body))
        parser = StreamParser(dialect)
        parser.feed(exchange.body)
        return parser.close()
    except (StreamError, orjson.JSONDecodeError):
        return None


def is_json_answer(exchange: Exchange) -> bool:
    """Whether the recorded answer is one JSON object (a request made without ``stream``)."""
    headers = (exchange.response or {}).get("headers") or {}
    kind = next((str(v).lower() for k, v in headers.items() if k.lower() == "content-type"), "")
    if "event-stream" in kind:
        return False
    if "json" in kind:
        return True
    return exchange.body.lstrip()[:1] == b"{"


# -- matching helpers --------------------------------------------------------------------------


def script_match(loaded: Loaded, body: dict[str, Any], after: int | None = None) -> Match | Refusal:
    """A script's answer: the iteration is the model turns the request holds (or follows)."""
    iteration = model_turns(loaded.dialect, body)
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous in loaded.response_ids:
        iteration += loaded.response_ids[previous] + 1
    iteration = max(iteration, after or 0)
    group = [e for e in loaded.exchanges if e.iteration == iteration]
    if not group:
        last = max(e.iteration for e in loaded.exchanges)
        return Refusal(
            400,
            f"the script {loaded.name} answers {last + 1} model turn(s); this request "
            f"already holds {iteration}, so it asks for turn {iteration + 1}",
            "script_exhausted",
        )
    return Match(loaded, iteration, group)


def parse_body(raw: bytes) -> dict[str, Any] | Refusal:
    """The request's JSON object, naming a model; or why it is not one."""
    if not raw.strip():
        return Refusal(400, "the request body is empty: expected a JSON object", "invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Refusal(
            400,
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            "invalid_json",
        )
    if not isinstance(body, dict):
        message = f"the request body is JSON {type(body).__name__}, expected an object"
        return Refusal(400, message, "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        message = "you must provide a model parameter (a string)"
        return Refusal(400, message, "missing_required_parameter", "model")
    return body


def conversation_id(body: dict[str, Any]) -> str | None:
    """The Responses ``conversation`` the request belongs to (an id, or an object with one)."""
    value = body.get("conversation")
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def framing_free(body: Any) -> Any:
    """``body`` without the keys that choose the answer's framing (``stream``, ``stream_options``)."""
    if not isinstance(body, dict):
        return body
    return {k: v for k, v in body.items() if k not in _FRAMING_KEYS}


def strip(value: Any, ignore: Sequence[str]) -> Any:
    """``value`` without the keys ``ignore`` names, at any depth."""
    if isinstance(value, dict):
        return {k: strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [strip(v, ignore) for v in value]
    return value


def comparable(dialect: str, body: Any, ignore: Sequence[str]) -> Any:
    """What is compared of a request: its meaning, not its rendering or framing.

    The framing keys and the volatile ones (``ignore``) are left out, and
    the conversation's items are in their canonical form
    (``rawloop.core.conversation.canonical_item``), so a client that sends
    a call back without its ``status``, or with ``parsed_arguments``, asks
    the same as the recording.
    """
    return comparable_body(dialect, strip(framing_free(body), ignore))


def history(dialect: str, body: Any) -> list[Any]:
    """The (comparable) request's conversation items."""
    return conversation(dialect, body) if isinstance(body, dict) else []


def common_prefix(a: list[Any], b: list[Any]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if first_difference(x, y) is not None:
            break
        n += 1
    return n


def model_turns(dialect: str, body: dict[str, Any]) -> int:
    """How many model answers the request's conversation already holds."""
    if dialect == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    items = body.get("input")
    if not isinstance(items, list):
        return 0
    turns, inside = 0, False
    for item in items:
        produced = isinstance(item, dict) and (
            item.get("role") == "assistant" or item.get("type") in _MODEL_ITEM_TYPES
        )
        if produced and not inside:
            turns += 1
        inside = produced
    return turns


def succeeded(exchange: Exchange) -> bool:
    """Whether the recorded attempt was answered with a success, whole."""
    return (
        exchange.response is not None
        and int(exchange.response["status"]) < 300
        and exchange.error is None
    )


def plan_attempt(
    match: Match, faults: Sequence[Fault], attempt: int
) -> tuple[Exchange, list[Fault]]:
    """The recorded exchange that answers ``attempt`` (0-based) at the match, and the faults' state.

    Attempt ``n`` always gets the same answer, whoever asks: the faults are
    fresh copies run through attempts ``0 .. n-1`` (an answer a fault
    replaced does not use up its recorded attempt, so the retry gets it),
    and once the recorded attempts are used up the last success answers.
    """
    copies = [dataclasses.replace(f, used=0) for f in faults]
    recorded = 0
    for earlier in range(attempt):
        fault = next((f for f in copies if f.matches(match.iteration, earlier)), None)
        if fault is not None and fault.replaces_answer:
            fault.used += 1
        else:
            recorded += 1
    group = match.group
    if recorded < len(group):
        return group[recorded], copies
    return next((e for e in reversed(group) if succeeded(e)), group[-1]), copies
