"""The sans-IO responder: which recorded answer a request gets, and in what shape.

``Responder`` answers in three steps: choose the recorded exchange (a cursor
through the trace), compare the request with the recorded one, and ``shape``
the ``Answer`` (status, headers, chunks, delays) with faults, re-chunking and
pacing. No I/O. The HTTP server (``rawloop.replay.server``) chooses by
itself, from the request, and calls ``shape`` only; the httpx transport
(``rawloop.replay.transport``) serves the Answers in process.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..core.conversation import conversation, item_key
from ..core.errors import ConfigurationError, ReplayDivergence
from ..core.jsondiff import first_difference
from ..trace.format import Exchange, Trace, chunk_bytes
from .chunking import rechunk, split_events
from .faults import EVENT_FAULTS, Fault, apply_to_events, parse_fault

__all__ = [
    "DEFAULT_VOLATILE",
    "Answer",
    "Responder",
    "answer_headers",
    "comparable_turn",
    "meaning_of",
]

#: Request-body keys ignored when comparing with the recording: they change
#: between runs without changing what the model is asked.
DEFAULT_VOLATILE = ("prompt_cache_key", "safety_identifier")

# Hop-by-hop and framing headers describe the recorded connection, not the answer.
_DROPPED_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
)


@dataclass
class Answer:
    """What to send back for one request.

    ``delays[i]`` is the wait before ``chunks[i]``. ``fail``: ``"drop"``
    (close before any byte) or ``"cut"`` (reset after the chunks).
    ``injected``: a fault answered instead of the recording, which the next
    attempt still gets.
    """

    status: int
    headers: dict[str, str]
    chunks: list[bytes]
    delays: list[float]
    iteration: int
    attempt: int
    fail: str | None = None
    injected: bool = False


class Responder:
    """Chooses, checks and shapes the recorded answer for each request (sans-IO).

    ``answer(body)`` serves the exchanges in recorded order: a fault that
    replaces an answer does not use up the exchange, so the client's retry
    gets it. ``shape`` is the last step alone, for callers that choose the
    exchange themselves.

    Args:
        trace: the trace to answer from.
        chunking: ``recorded``, ``events``, ``bytes`` or ``hostile`` (``rawloop.replay.chunking``).
        seed: seeds ``hostile`` chunking.
        rate: multiplies the recorded gaps between chunks (0: no waiting).
        faults: ``Fault`` objects or their string specs (``rawloop.replay.faults``).
        ignore: request-body keys left out of the comparison.
        on_divergence: ``"raise"`` (``ReplayDivergence``) or ``"warn"`` (record,
            warn, and answer with the recording anyway).
        compare: ``"exact"`` (the bodies as JSON) or ``"meaning"`` (the
            conversation's items by their identity keys: ``meaning_of``), for
            captures of clients that render items their own way.
    """

    def __init__(
        self,
        trace: Trace,
        *,
        chunking: str = "recorded",
        seed: int = 0,
        rate: float = 0.0,
        faults: Iterable[Fault | str] = (),
        ignore: Sequence[str] = DEFAULT_VOLATILE,
        on_divergence: str = "raise",
        compare: str = "exact",
    ) -> None:
        if on_divergence not in ("raise", "warn"):
            raise ConfigurationError(
                f"on_divergence must be 'raise' or 'warn', not {on_divergence!r}"
            )
        if compare not in ("exact", "meaning"):
            raise ConfigurationError(f"compare must be 'exact' or 'meaning', not {compare!r}")
        rechunk([], chunking)  # fail now on an unknown mode, not mid-run
        self.trace = trace
        self.exchanges = trace.exchanges()
        self.chunking = chunking
        self.seed = seed
        self.rate = rate
        self.faults = [f if isinstance(f, Fault) else parse_fault(f) for f in faults]
        self.ignore = tuple(ignore)
        self.on_divergence = on_divergence
        self.compare = compare
        self.divergences: list[ReplayDivergence] = []
        self.served = 0  # requests answered, faults included
        self._cursor = 0
        self._attempts: dict[int, int] = {}
        # Each exchange's 1-based place in the trace seeds its re-chunking. The
        # exchanges live as long as the responder, so their ids are stable.
        self._places = {id(e): i for i, e in enumerate(self.exchanges, 1)}

    def unconsumed(self) -> list[Exchange]:
        """Recorded exchanges no request has used yet."""
        return self.exchanges[self._cursor :]

    def answer(self, body: Any) -> Answer:
        """The answer to the next request, whose JSON body is ``body``: choose, compare, shape."""
        exchange = self._choose(body)
        attempt = self._attempts.get(exchange.iteration, 0)
        self._attempts[exchange.iteration] = attempt + 1
        self._compare(exchange, body)
        answer = self.shape(exchange, exchange.iteration, attempt)
        if not answer.injected:  # an injected fault leaves the recording to the retry
            self._cursor += 1
        return answer

    def shape(
        self,
        exchange: Exchange,
        iteration: int,
        attempt: int,
        *,
        faults: Sequence[Fault] | None = None,
    ) -> Answer:
        """What ``exchange`` sends back as request ``attempt`` (0-based) of ``iteration``.

        The first fault matching (iteration, attempt) applies: one that
        replaces the answer is served instead (``Answer.injected``; its
        ``used`` count goes up), the others change the recorded bytes or
        pacing. A recorded attempt that got no response is a dropped
        connection; a recorded connection failure is its bytes, then a cut.
        Chunks are re-chunked as configured (``hostile`` seeded by ``seed``
        plus the exchange's 1-based place in the trace) and paced by ``rate``.

        Nothing is chosen or compared and no counter moves: the caller says
        which exchange and which attempt (the HTTP server keeps a counter per
        request body). ``faults`` replaces the responder's own list, so that
        a caller can keep separate ``used`` counts.
        """
        candidates = self.faults if faults is None else faults
        fault = next((f for f in candidates if f.matches(iteration, attempt)), None)
        if fault is not None and fault.replaces_answer:
            fault.used += 1
            answer = self._fault_answer(fault, exchange, iteration, attempt)
            answer.injected = True
            return answer
        if exchange.response is None:  # the recorded attempt never got an answer
            return Answer(0, {}, [], [], iteration, attempt, fail="drop")
        raw = [chunk_bytes(c) for c in exchange.chunks]
        # A recorded connection failure is served as one: same bytes, then a reset.
        broke = exchange.error is not None and exchange.error.get("type") == "APIConnectionError"
        if fault is not None and fault.action in EVENT_FAULTS:
            raw = [apply_to_events(b"".join(raw), fault)]
        place = self._places.get(id(exchange), 0)
        chunks = rechunk(raw, self.chunking, seed=self.seed + place)
        delays = self._delays(exchange, len(chunks))
        if fault is not None and fault.action == "stall":
            delays = [d + fault.value for d in delays]
        return Answer(
            int(exchange.response["status"]),
            answer_headers(exchange.response.get("headers") or {}),
            chunks,
            delays,
            iteration,
            attempt,
            fail="cut" if broke else None,
        )

    def _choose(self, body: Any) -> Exchange:
        """The recorded exchange at the cursor; a divergence once the trace is used up."""
        self.served += 1
        if self._cursor >= len(self.exchanges):
            last = self.exchanges[-1].iteration if self.exchanges else 0
            raise ReplayDivergence(
                f"request #{self.served} has no recorded answer: the trace holds "
                f"{len(self.exchanges)} requests (the run went past iteration {last})",
                iteration=last + 1,
                path="<request>",
                actual=body,
            )
        return self.exchanges[self._cursor]

    def _compare(self, exchange: Exchange, body: Any) -> None:
        recorded = exchange.request.get("body")
        if self.compare == "meaning":
            recorded = meaning_of(self.trace.dialect, recorded)
            body = meaning_of(self.trace.dialect, body)
        found = first_difference(recorded, body, self.ignore)
        if found is None:
            return
        divergence = ReplayDivergence(
            f"iteration {exchange.iteration}: the request differs from the recording at {found}",
            iteration=exchange.iteration,
            path=found.path,
            recorded=found.a,
            actual=found.b,
        )
        if self.on_divergence == "raise":
            raise divergence
        self.divergences.append(divergence)
        warnings.warn(f"rawloop replay: {divergence}", RuntimeWarning, stacklevel=2)

    def _fault_answer(
        self, fault: Fault, exchange: Exchange, iteration: int, attempt: int
    ) -> Answer:
        if fault.action == "drop":
            return Answer(0, {}, [], [], iteration, attempt, fail="drop")
        if fault.action == "status":
            headers = {"content-type": "application/json"}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            message = {
                "error": {
                    "message": f"injected fault: HTTP {fault.value:g}",
                    "type": "rawloop_fault",
                }
            }
            return Answer(
                int(fault.value), headers, [orjson.dumps(message)], [0.0], iteration, attempt
            )
        body = b"".join(chunk_bytes(c) for c in exchange.chunks)
        if fault.action == "cut-after-bytes":
            body = body[: int(fault.value)]
        else:  # cut-after-events
            body = b"".join(split_events(body)[: int(fault.value)])
        status = int(exchange.response["status"]) if exchange.response else 200
        headers = (
            answer_headers(exchange.response.get("headers") or {}) if exchange.response else {}
        )
        chunks = rechunk([body], self.chunking, seed=self.seed) if body else []
        return Answer(status, headers, chunks, [0.0] * len(chunks), iteration, attempt, fail="cut")

    def _delays(self, exchange: Exchange, count: int) -> list[float]:
        if not self.rate:
            return [0.0] * count
        times = [float(c.get("t", 0.0)) for c in exchange.chunks]
        start = float(exchange.response.get("t", 0.0)) if exchange.response else 0.0
        if self.chunking != "recorded" or len(times) != count:
            # Re-chunked: keep the time to first byte, then spread the rest evenly.
            first = max(times[0] - start, 0.0) if times else 0.0
            rest = max(times[-1] - times[0], 0.0) / max(count - 1, 1) if times else 0.0
            return [first * self.rate] + [rest * self.rate] * (count - 1)
        gaps = [max(b - a, 0.0) for a, b in zip([start, *times], times)]
        return [g * self.rate for g in gaps]


def meaning_of(dialect: str, body: Any) -> Any:
    """``body`` with each conversation item replaced by what identifies it (``item_key``).

    Two renderings of the same conversation (null fields dropped, content
    parts for a string, ``parsed_arguments`` added) give equal values; a
    difference still has a JSON path naming the item (``input[2]``).
    """
    if not isinstance(body, dict):
        return body
    key = "messages" if dialect == "chat" else "input"
    if key not in body:
        return body
    keys = [orjson.loads(item_key(item)) for item in conversation(dialect, body)]
    return {**body, key: keys}


def answer_headers(recorded: dict[str, str]) -> dict[str, str]:
    """The recorded response headers without the hop-by-hop and framing ones."""
    return {k: v for k, v in recorded.items() if k.lower() not in _DROPPED_HEADERS}


# Re-chunking may drop the final blank line on purpose; that warning says nothing
# about the decision. Every other warning (a sequence gap, text that disagrees
# with its done event) does.
_CHUNKING_WARNING = "stream ended without a blank line after the last event"


def comparable_turn(turn: dict[str, Any]) -> dict[str, Any]:
    """A recorded or replayed turn as the judges compare it: no event count, no chunking warning."""
    out = {k: v for k, v in turn.items() if k != "event_count"}
    out["warnings"] = [w for w in turn.get("warnings", ()) if w != _CHUNKING_WARNING]
    return out
