"""A live timeline: each run's requests, streamed text, calls, results and end, as they happen.

``LiveTimeline`` is a hook (``Loop(..., hooks=[LiveTimeline(sys.stdout)])``)
and, through ``watch(label, point, info)``, the printer behind ``rawloop
record --tail``, where many runs go through one proxy at once: every line
then starts with the run's trace file name, and a run's streamed text is cut
by a line break when another run has something to say.

The assistant's text is printed as its deltas arrive (parsed from the raw
chunks with ``StreamParser``), so a slow answer can be watched while it
streams. Everything from the wire is shown with control characters escaped:
what a model or a server sends cannot drive the terminal.
"""

from __future__ import annotations

from typing import Any, TextIO

from ..core.dialect import dialect_of_path
from ..core.errors import RawloopError
from ..core.parse import StreamParser
from .runs import clip, plural, safe, secs

__all__ = ["LiveTimeline"]

#: How much of a tool output or an error a line shows.
LIMIT = 200


class LiveTimeline:
    """Print runs as they happen to ``out`` (a text stream, flushed after each write)."""

    def __init__(self, out: TextIO, *, label: str = "") -> None:
        self.out = out
        self.label = label
        self._parsers: dict[str, StreamParser | None] = {}
        self._open: str | None = None  # the run whose text line is still open

    # -- many runs (rawloop record --tail) --------------------------------------------------

    def watch(self, label: str, point: str, info: Any) -> None:
        """What a recorder was told at hook ``point`` (``on_request``...) for run ``label``."""
        method = getattr(self, f"_{point}", None)
        if method is not None:
            method(label, info)

    # -- one run (as a hook) -----------------------------------------------------------------

    def on_request(self, info: Any) -> None:
        self._on_request(self.label, info)

    def on_response(self, info: Any) -> None:
        self._on_response(self.label, info)

    def on_chunk(self, info: Any) -> None:
        self._on_chunk(self.label, info)

    def on_decision(self, info: Any) -> None:
        self._on_decision(self.label, info)

    def on_result(self, info: Any) -> None:
        self._on_result(self.label, info)

    def on_error(self, info: Any) -> None:
        self._on_error(self.label, info)

    def on_end(self, info: Any) -> None:
        self._on_end(self.label, info)

    # -- lines ---------------------------------------------------------------------------------

    def _line(self, label: str, text: str) -> None:
        self._close_text()
        prefix = f"[{safe(label)}] " if label else ""
        self.out.write(f"{prefix}{safe(text)}\n")
        self.out.flush()

    def _close_text(self) -> None:
        if self._open is not None:
            self.out.write("\n")
            self._open = None

    def _text(self, label: str, text: str) -> None:
        if self._open != label:
            self._close_text()
            prefix = f"[{safe(label)}] " if label else ""
            self.out.write(f"{prefix}text: ")
            self._open = label
        # Newlines stay (the text is read as text); every other control character is escaped.
        self.out.write("\n".join(safe(part) for part in text.split("\n")))
        self.out.flush()

    # -- hook points -------------------------------------------------------------------------

    def _on_request(self, label: str, info: Any) -> None:
        dialect = dialect_of_path(str(info.url)) or "responses"
        self._parsers[label] = StreamParser(dialect)
        self._line(
            label,
            f"iteration {info.iteration} attempt {info.attempt}: {info.method} {info.url} "
            f"(model {info.model})",
        )

    def _on_response(self, label: str, info: Any) -> None:
        self._line(label, f"response {info.status} after {secs(info.elapsed)}")
        if info.status >= 300:
            self._parsers[label] = None  # an error body is no stream

    def _on_chunk(self, label: str, info: Any) -> None:
        parser = self._parsers.get(label)
        if parser is None:
            return
        try:
            deltas = parser.feed(info.data)
        except RawloopError:
            self._parsers[label] = None  # the decision or the error will say what went wrong
            return
        text = "".join(d.text for d in deltas if d.kind == "text")
        if text:
            self._text(label, text)

    def _on_decision(self, label: str, info: Any) -> None:
        turn = info.turn
        self._parsers.pop(label, None)
        calls = list(turn.calls)
        if calls:
            self._line(label, f"calls {plural(len(calls), 'tool')}:")
            for call in calls:
                self._line(label, f"  {call.name}({clip(call.arguments, LIMIT)}) id={call.call_id}")
        else:
            self._line(label, f"turn {turn.status}, {len(turn.text)} chars of text")

    def _on_result(self, label: str, info: Any) -> None:
        result = info.result
        failed = " (failed)" if result.error else ""
        self._line(
            label,
            f"result {result.name}{failed} in {secs(result.duration)}: "
            f"{clip(str(result.output), LIMIT)}",
        )

    def _on_error(self, label: str, info: Any) -> None:
        retry = f"; retrying in {secs(info.delay)}" if info.will_retry else ""
        error = f"{type(info.error).__name__}: {info.error}"
        self._line(label, f"error ({info.where}): {clip(error, LIMIT)}{retry}")

    def _on_end(self, label: str, info: Any) -> None:
        self._parsers.pop(label, None)
        tokens = info.usage.get("total_tokens") if isinstance(info.usage, dict) else None
        used = f", {tokens} tokens" if tokens is not None else ""
        self._line(
            label,
            f"end: {info.stop_reason}, {plural(info.iterations, 'iteration')}, "
            f"{secs(info.duration)}{used}",
        )
