"""Conditional breakpoints: stop when a tool was called, at an iteration, on text, on an error.

A spec (``"tool=refund_order"``, ``"text REGEX"``...) is checked once by
``parse_condition``, which refuses a bad one with a ``StepError`` that says
what would do, and becomes a numbered ``Condition``. At each breakpoint the
debugger asks every condition whether it fires, given the state and the
failures of the iteration just done; a condition only reads the state, so
asking changes nothing in the run. ``hits`` counts the pauses a condition
caused: the debugger keeps that count, since a check alone (as at the end of
the run) is not a pause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..loop.state import LoopState
from .errors import StepError

__all__ = ["CONDITION_KINDS", "Condition", "parse_condition"]

#: Kinds of conditional breakpoint.
CONDITION_KINDS = ("tool", "iteration", "text", "error")

_ALIASES = {"iter": "iteration", "i": "iteration", "errors": "error"}
_NEEDS = {"tool": "a tool name", "iteration": "an iteration number", "text": "a regex"}
_EXAMPLES = {"tool": "refund_order", "iteration": "2", "text": "'refund(ed)?'"}


@dataclass
class Condition:
    """A conditional breakpoint, checked at each breakpoint against the last iteration.

    ``tool NAME``: the last turn called NAME (its result is about to be sent);
    ``iteration N``: the breakpoint before request N (0-based); ``text REGEX``:
    the last turn's text matches; ``error``: a request attempt or a tool failed
    in the last iteration.
    """

    number: int
    kind: str
    arg: str = ""
    hits: int = 0
    pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pattern is None and self.kind == "text":
            self.pattern = re.compile(self.arg)

    def __str__(self) -> str:
        return f"{self.kind} {self.arg}".strip()

    def check(self, state: LoopState, errors: Sequence[str]) -> str | None:
        """Why this breakpoint fires at ``state`` (None when it does not)."""
        turn = state.last_turn
        if self.kind == "iteration":
            return f"iteration {state.iteration}" if state.iteration == int(self.arg) else None
        if self.kind == "error":
            return errors[0] if errors else None
        if turn is None:
            return None
        if self.kind == "tool":
            ids = [c.call_id for c in turn.calls if c.name == self.arg]
            return f"{self.arg} was called ({', '.join(ids)})" if ids else None
        assert self.pattern is not None
        match = self.pattern.search(turn.text or "")
        return f"the text matches {self.arg!r} ({match.group(0)!r})" if match else None

    def hit(self, state: LoopState, errors: Sequence[str]) -> str | None:
        """``check`` as the debugger reports it: ``breakpoint 2 (tool X): why``."""
        why = self.check(state, errors)
        return f"breakpoint {self.number} ({self}): {why}" if why else None


def parse_condition(spec: str) -> tuple[str, str]:
    """``"tool=refund_order"``, ``"tool refund_order"``, ``"iteration=2"``, ``"text=REGEX"``, ``"error"``."""
    text = spec.strip()
    kind, _, arg = text.partition("=") if "=" in text.split(" ", 1)[0] else text.partition(" ")
    kind, arg = kind.strip().lower(), arg.strip()
    kind = _ALIASES.get(kind, kind)
    if kind not in CONDITION_KINDS:
        raise StepError(
            f"unknown breakpoint {text!r}; use tool NAME, iteration N, text REGEX or error"
        )
    if kind == "error":
        if arg:
            raise StepError(f"'error' takes no argument, got {arg!r}")
        return kind, ""
    if not arg:
        raise StepError(f"'{kind}' needs {_NEEDS[kind]}, e.g. {kind} {_EXAMPLES[kind]}")
    if kind == "iteration" and not (arg.isascii() and arg.isdigit()):
        raise StepError(f"'iteration' needs a number (0 is the first request), not {arg!r}")
    if kind == "text":
        try:
            re.compile(arg)
        except re.error as exc:
            raise StepError(f"bad regex {arg!r}: {exc}") from None
    return kind, arg
