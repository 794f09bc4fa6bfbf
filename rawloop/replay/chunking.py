"""Re-chunking a recorded body: the same bytes, cut the way another network would cut them.

Pure functions, seeded and deterministic. ``hostile`` is the one that finds
parser bugs: it cuts inside multi-byte UTF-8 sequences and between CR and LF,
switches to bare CR line ends and slips keep-alive comments between events —
every one of them legal SSE, every one of them a real server's habit that has
broken a real client. It keeps the final blank line: by the SSE spec a last
event without one is discarded, so dropping it is a fault, not a chunking
(``drop-final-blank-line`` in ``rawloop.replay.faults``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from itertools import pairwise

__all__ = ["CHUNKINGS", "hostile_body", "rechunk", "split_events"]

CHUNKINGS = ("recorded", "events", "bytes", "hostile")

_BLANK_LINE = re.compile(rb"(?:\r\n|\r|\n)(?:\r\n|\r|\n)")


def rechunk(chunks: Sequence[bytes], mode: str = "recorded", *, seed: int = 0) -> list[bytes]:
    """The recorded ``chunks`` cut again according to ``mode`` (see ``CHUNKINGS``).

    Every mode but ``hostile`` keeps the bytes identical; ``hostile`` also
    changes line ends and inserts comments, which no conforming parser sees.
    """
    if mode == "recorded":
        return list(chunks)
    body = b"".join(chunks)
    if mode == "bytes":
        return [body[i : i + 1] for i in range(len(body))]
    if mode == "events":
        return split_events(body)
    if mode == "hostile":
        rng = random.Random(seed)
        body = hostile_body(body, rng)
        return _cut(body, _hostile_cuts(body, rng))
    raise ValueError(f"unknown chunking {mode!r}; expected one of {', '.join(CHUNKINGS)}")


def split_events(body: bytes) -> list[bytes]:
    """The body cut after each blank line: one piece per event (plus any tail)."""
    points = [0, *(m.end() for m in _BLANK_LINE.finditer(body))]
    if points[-1] < len(body):
        points.append(len(body))
    return [body[a:b] for a, b in pairwise(points)]


def hostile_body(body: bytes, rng: random.Random) -> bytes:
    """The body with bare CR line ends (half the time) and keep-alives between events.

    Every event keeps its terminating blank line, the last one included.
    """
    newline = b"\r" if rng.random() < 0.5 else b"\r\n"
    lines = re.split(rb"\r\n|\r|\n", body)
    out: list[bytes] = []
    for position, line in enumerate(lines):
        out.append(line)
        # A keep-alive comment after a blank line, never past the last event.
        if line == b"" and position < len(lines) - 2 and rng.random() < 0.2:
            out.append(b": keep-alive")
            out.append(b"")
    return newline.join(out)


def _hostile_cuts(body: bytes, rng: random.Random) -> list[int]:
    cuts = set()
    for i in range(1, len(body)):
        byte = body[i]
        inside_utf8 = byte & 0xC0 == 0x80  # a continuation byte: cutting here splits a character
        inside_crlf = body[i - 1] == 0x0D and byte == 0x0A
        # Cut often where it hurts, now and then anywhere.
        if rng.random() < (0.5 if inside_utf8 or inside_crlf else 0.02):
            cuts.add(i)
    return sorted(cuts)


def _cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *cuts, len(body)]
    return [body[a:b] for a, b in pairwise(points) if b > a]
