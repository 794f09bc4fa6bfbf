"""Faults to inject into a replay, scripted per iteration and attempt.

A fault is written ``"iter=1,attempt=0:status=429,retry-after=1"`` or
``"iter=0:cut-after-events=5"``: a selector (``iter``, ``attempt``, both
optional: any) and one action with its options. Actions:

``status=N`` (``retry-after=S``, ``count=K``)  answer N instead, for K attempts
``drop``                                       drop the connection before the first byte
``cut-after-events=N`` / ``cut-after-bytes=N``  end the body early, as a reset connection
``stall=T``                                    wait T seconds before each chunk
``malformed=N``                                put a broken event after event N
``duplicate-event=N`` / ``drop-event=N``       repeat or lose event N (0-based)
``drop-final-blank-line``                      end the body without the blank line that
                                               ends its last event (which a conforming
                                               client then discards)

Faults that answer instead of the recording (``status``, ``drop``, the cuts)
do not use up the recorded exchange: the client's retry gets it. The others
change the recorded answer itself. Everything is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ConfigurationError
from .chunking import split_events

__all__ = [
    "EVENT_FAULTS",
    "Fault",
    "apply_to_events",
    "drop_final_blank_line",
    "parse_fault",
    "trim_to",
]

_ACTIONS = {
    "status",
    "drop",
    "cut-after-events",
    "cut-after-bytes",
    "stall",
    "malformed",
    "duplicate-event",
    "drop-event",
    "drop-final-blank-line",
}
#: Actions that change the recorded bytes (``apply_to_events``), not the whole answer.
EVENT_FAULTS = frozenset({"malformed", "duplicate-event", "drop-event", "drop-final-blank-line"})
_INT_OPTIONS = {
    "status",
    "cut-after-events",
    "cut-after-bytes",
    "malformed",
    "duplicate-event",
    "drop-event",
    "count",
}


@dataclass
class Fault:
    """One scripted fault. ``iteration``/``attempt`` None match any."""

    action: str
    value: float = 0
    iteration: int | None = None
    attempt: int | None = None
    retry_after: float | None = None
    count: int = 1
    used: int = field(default=0, compare=False)

    def matches(self, iteration: int, attempt: int) -> bool:
        return (
            (self.iteration is None or self.iteration == iteration)
            and (self.attempt is None or self.attempt == attempt)
            and (self.action != "status" or self.used < self.count)
        )

    @property
    def replaces_answer(self) -> bool:
        """True for faults served instead of the recorded exchange."""
        return self.action in ("status", "drop", "cut-after-events", "cut-after-bytes")


def parse_fault(spec: str) -> Fault:
    """Parse ``"iter=1,attempt=0:status=429,retry-after=1"`` (see the module docs)."""
    selector, colon, action_part = spec.partition(":")
    if not colon:
        selector, action_part = "", spec
    options = _pairs(action_part, spec)
    where = _pairs(selector, spec) if selector else {}
    for key in where:
        if key not in ("iter", "iteration", "attempt"):
            raise ConfigurationError(
                f"fault {spec!r}: unknown selector {key!r} (use iter=, attempt=)"
            )
    actions = [k for k in options if k in _ACTIONS]
    if len(actions) != 1:
        raise ConfigurationError(
            f"fault {spec!r}: give exactly one action of {', '.join(sorted(_ACTIONS))}"
        )
    action = actions[0]
    extra = set(options) - {action, "retry-after", "count"}
    if extra:
        raise ConfigurationError(f"fault {spec!r}: unknown option(s) {', '.join(sorted(extra))}")
    try:
        iteration = where.get("iter", where.get("iteration"))
        return Fault(
            action=action,
            value=float(options[action] or 0),
            iteration=int(iteration) if iteration is not None else None,
            attempt=int(where["attempt"]) if "attempt" in where else None,
            retry_after=float(options["retry-after"]) if "retry-after" in options else None,
            count=int(options.get("count") or 1),
        )
    except ValueError as exc:
        raise ConfigurationError(f"fault {spec!r}: {exc}") from None


def _pairs(text: str, spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key in _INT_OPTIONS and not value.strip().lstrip("-").replace(".", "", 1).isdigit():
            raise ConfigurationError(f"fault {spec!r}: {key} needs a number")
        out[key] = value.strip()
    return out


def drop_final_blank_line(body: bytes) -> bytes:
    """``body`` without the blank line that ends its last event (a body without one: as is)."""
    last = _line_end(body)
    if not last:
        return body
    rest = body[:-last]
    return rest if _line_end(rest) else body  # only an empty last line is dropped


def _line_end(text: bytes) -> int:
    """The length of the line end ``text`` ends with (CRLF is one line end), or 0."""
    if text.endswith(b"\r\n"):
        return 2
    return 1 if text.endswith((b"\r", b"\n")) else 0


def apply_to_events(body: bytes, fault: Fault) -> bytes:
    """The body with an event-level fault applied (malformed, duplicate, drop, final blank line)."""
    if fault.action == "drop-final-blank-line":
        return drop_final_blank_line(body)
    events = split_events(body)
    index = int(fault.value)
    if fault.action == "malformed":
        position = min(index + 1, len(events))
        events.insert(position, b'data: {"type": "response.output_text.delta", "delta": \n\n')
    elif fault.action == "duplicate-event" and index < len(events):
        events.insert(index + 1, events[index])
    elif fault.action == "drop-event" and index < len(events):
        del events[index]
    return b"".join(events)


def trim_to(chunks: list[bytes], length: int) -> list[bytes]:
    """The first ``length`` bytes of the joined ``chunks``, keeping their boundaries."""
    out: list[bytes] = []
    for chunk in chunks:
        if length <= 0:
            break
        out.append(chunk[:length])
        length -= len(chunk)
    return [c for c in out if c]
