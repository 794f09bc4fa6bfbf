"""Which recording answers a request: the replay server's choice, from the request alone.

No sockets here. ``Loaded`` is one trace with what matching needs
precomputed; ``Matcher.choose`` picks the recorded iteration that answers a
request body, or gives the ``Refusal`` (an OpenAI-shaped error) saying why
none does; ``parse_body`` reads the request's JSON. The rules, in order, are
in ``rawloop.replay.server``'s docs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import StreamError
from ..core.jsondiff import Difference, first_difference
from ..core.parse import StreamParser
from ..trace.format import Exchange, Trace
from .faults import Fault
from .replayer import Responder

__all__ = [
    "Counter",
    "Loaded",
    "Match",
    "Matcher",
    "Refusal",
    "framing_free",
    "parse_body",
    "strip",
    "succeeded",
]

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
    bodies: list[Any]  # each exchange's request body without the framing keys
    scripted: bool
    response_ids: dict[str, int] = field(default_factory=dict)  # scripted: id -> iteration

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


@dataclass
class Match:
    loaded: Loaded
    iteration: int
    group: list[Exchange]  # the recorded attempts that answer this request, in order
    difference: Difference | None = None


@dataclass
class Counter:
    """Where one (trace, iteration, request body) is in its recorded attempts."""

    faults: list[Fault]  # its own copies: a fault's ``count`` is per request body
    next: int = 0  # the recorded attempt to serve next (past the end: the fallback)
    attempts: int = 0  # requests answered, injected faults included


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

    def models(self) -> list[str]:
        """The models the loaded traces name, in load order."""
        return list(dict.fromkeys(m for loaded in self.loaded for m in loaded.models()))

    def choose(self, dialect: str, body: dict[str, Any]) -> Match | Refusal:
        """Which recorded iteration answers ``body``; or why none does."""
        candidates = [t for t in self.loaded if t.dialect == dialect]
        if not candidates:
            served = ", ".join(sorted({t.dialect for t in self.loaded}))
            return Refusal(
                404,
                f"no loaded trace speaks the {dialect} dialect (this server replays: {served})",
                "unknown_url",
            )
        normalized = framing_free(body)
        recorded = [t for t in candidates if not t.scripted]
        # 1. the same request as a recorded one
        for loaded in recorded:
            for exchange, known in zip(loaded.exchanges, loaded.bodies):
                if first_difference(known, normalized, self.ignore) is None:
                    return self.group(loaded, exchange.iteration, known)
        # 2. a script: the iteration is how many model turns the request already holds
        for loaded in candidates:
            if loaded.scripted:
                return script_match(loaded, body)
        # 3. the recorded request of the same model with the longest common history
        model = body.get("model")
        wanted = history(normalized)
        best: tuple[tuple[int, int], Loaded, Exchange, Any] | None = None
        for loaded in recorded:
            for exchange, known in zip(loaded.exchanges, loaded.bodies):
                if not isinstance(known, dict) or known.get("model") != model:
                    continue
                theirs = history(known)
                score = (
                    common_prefix(theirs, wanted, self.ignore),
                    -abs(len(theirs) - len(wanted)),
                )
                if best is None or score > best[0]:
                    best = (score, loaded, exchange, known)
        if best is None:
            return Refusal(
                404,
                f"The model `{model}` does not exist in the loaded traces "
                f"(they hold: {', '.join(self.models())})",
                "model_not_found",
                "model",
            )
        _, loaded, exchange, known = best
        match = self.group(loaded, exchange.iteration, known)
        match.difference = first_difference(known, normalized, self.ignore)
        return match

    def group(self, loaded: Loaded, iteration: int, known: Any) -> Match:
        """The match for recorded body ``known``: every attempt of its iteration with that body."""
        group = [
            e
            for e, b in zip(loaded.exchanges, loaded.bodies)
            if e.iteration == iteration and first_difference(b, known, self.ignore) is None
        ]
        return Match(loaded, iteration, group)


def load(index: int, source: Trace | str | Path, **responder: Any) -> Loaded:
    """``source`` loaded for matching; ``responder`` holds the ``Responder``'s options."""
    trace = source if isinstance(source, Trace) else Trace.load(source)
    # Faults are not the Responder's: every counter passes its own copies.
    shaper = Responder(trace, **responder)
    scripted = bool((trace.header.get("metadata") or {}).get("script"))
    name = Path(trace.path).stem if trace.path and not trace.path.startswith("<") else ""
    loaded = Loaded(
        index,
        name or f"trace{index}",
        shaper,
        [framing_free(e.request.get("body")) for e in shaper.exchanges],
        scripted,
    )
    if scripted:  # a follow-up may name the answer it follows: previous_response_id
        for exchange in loaded.exchanges:
            if exchange.response and int(exchange.response["status"]) < 300:
                try:
                    parser = StreamParser(trace.dialect)
                    parser.feed(exchange.body)
                    rid = parser.close().response_id
                except StreamError:
                    continue
                if rid:
                    loaded.response_ids[rid] = exchange.iteration
    return loaded


# -- matching helpers --------------------------------------------------------------------------


def script_match(loaded: Loaded, body: dict[str, Any]) -> Match | Refusal:
    """A script's answer: the iteration is the model turns the request holds (or follows)."""
    iteration = model_turns(loaded.dialect, body)
    previous = body.get("previous_response_id")
    if isinstance(previous, str) and previous in loaded.response_ids:
        iteration += loaded.response_ids[previous] + 1
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


def framing_free(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    return {k: v for k, v in body.items() if k not in _FRAMING_KEYS}


def strip(value: Any, ignore: Sequence[str]) -> Any:
    if isinstance(value, dict):
        return {k: strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [strip(v, ignore) for v in value]
    return value


def history(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        return []
    items = body.get("input", body.get("messages"))
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return list(items) if isinstance(items, list) else []


def common_prefix(a: list[Any], b: list[Any], ignore: Sequence[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if first_difference(x, y, ignore) is not None:
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
    return (
        exchange.response is not None
        and int(exchange.response["status"]) < 300
        and exchange.error is None
    )
