"""Lines for a terminal, each with one style: escaped, wrapped and coloured at the end.

The timeline (``rawloop show``) adds its lines here and turns them into text once.
"""

from __future__ import annotations

import textwrap

from .runs import safe

__all__ = ["StyledLines"]

_CODES = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "red": "\x1b[31m",
    "green": "\x1b[32m",
    "yellow": "\x1b[33m",
    "magenta": "\x1b[35m",
    "cyan": "\x1b[36m",
}
_RESET = "\x1b[0m"


class StyledLines:
    """Lines of text, each with one style; escaped, wrapped and coloured at the end.

    ``full`` turns off every cut (outputs, edits, messages, error bodies);
    ``width`` wraps long lines, keeping their indent (None: no wrapping).
    """

    def __init__(self, *, full: bool = False, width: int | None = None) -> None:
        self.lines: list[tuple[int, str, str]] = []
        self.full = full
        self.width = width

    def clip(self, text: str, limit: int) -> str:
        """``text`` cut to ``limit`` characters unless ``full``, saying how to see the rest."""
        if self.full or len(text) <= limit:
            return text
        return f"{text[:limit]}... ({len(text) - limit} more chars; --full shows all)"

    def add(self, depth: int, text: str, style: str = "") -> None:
        self.lines.append((depth, text, style))

    def block(self, depth: int, text: str, style: str = "") -> None:
        """A multi-line text, one indented line per line (an empty text gives one empty line)."""
        for line in text.splitlines() or [""]:
            self.add(depth, line, style)

    def text(self, color: bool) -> str:
        out = []
        for depth, text, style in self.lines:
            indent = "  " * depth
            for line in self._wrap(indent, safe(text)):
                if color and style:
                    line = "".join(_CODES[s] for s in style.split()) + line + _RESET
                out.append(line)
        return "\n".join(out) + "\n"

    def _wrap(self, indent: str, text: str) -> list[str]:
        # Escaped first, so an escape sequence is never cut and a wrapped line keeps its indent
        # (plus two spaces: a continuation reads as one).
        room = (self.width or 0) - len(indent)
        if self.width is None or len(text) <= room:
            return [indent + text]
        room = max(room, 20)
        lines = textwrap.wrap(
            text,
            room,
            subsequent_indent="  ",
            break_on_hyphens=False,
            replace_whitespace=False,
            drop_whitespace=True,
        )
        return [indent + line for line in lines] or [indent]
