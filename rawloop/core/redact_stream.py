"""Redacting keys in a stream of chunks, as they arrive: the recorder's and the viewers' scan.

``ChunkRedactor`` holds back a chunk that may end inside a key until the
next one settles it, and reads the strings of streamed delta events joined,
so a key split across chunks, or streamed one delta at a time, is caught.
The key shapes and the one-shot functions are ``rawloop.core.redact``.
"""

from __future__ import annotations

import re

from .redact import _OPEN_AT_END, _TAIL_BYTES, _keys_in, _maybe, _replace_bytes

__all__ = ["ChunkRedactor", "redact_stream"]


def redact_stream(body: bytes) -> bytes:
    """A whole response body as ``ChunkRedactor`` redacts it: keys split across deltas too."""
    redactor = ChunkRedactor()
    return b"".join(redactor.feed(body) + redactor.flush())


class ChunkRedactor:
    """Redacts keys in a stream of byte chunks, including a key split across chunks or deltas.

    ``feed(chunk)`` returns the chunks now safe to release, in order, each
    redacted; a chunk whose end could be the start of a key is held (with the
    ones after it) until a later chunk settles it. ``flush()`` releases the
    rest at the end of the stream. Released chunks keep their boundaries: a
    key split across chunks becomes its placeholder in the chunk where it
    starts, and its other pieces are removed from the chunks after. Each
    released chunk corresponds to one fed chunk, in order.

    With ``deltas`` (the default) the redactor also reads the strings of the
    stream's delta fields (``"delta"``, ``"content"``, ``"arguments"``...) joined
    in order: a key the model streams in pieces, one event each, is found there
    and its pieces are replaced in each event (the placeholder in the first).

    A key is looked for in at most ``window`` bytes before the end of what has
    arrived: a run of key characters longer than that is not held back.
    """

    #: Released bytes kept so that an escape just before a chunk boundary still starts a word.
    CONTEXT = 16

    def __init__(self, *, window: int = 4096, deltas: bool = True) -> None:
        self.window = window
        self._pending: list[bytes] = []
        self._context = b""
        self._offset = 0  # stream offset of the first pending byte
        self._view = _DeltaView() if deltas else None

    @property
    def held(self) -> int:
        """How many fed chunks are waiting for the next one."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take one chunk; return the chunks (this one or earlier) that can go out now."""
        data = bytes(chunk)
        if self._view is not None:
            self._view.feed(data)
        if not self._pending and self._settled(data):
            # The common case: nothing held, no key here, none starting at the end.
            self._context = (self._context + data)[-self.CONTEXT :]
            self._offset += len(data)
            if self._view is not None:
                self._view.release(self._offset)
            return [data]
        self._pending.append(data)
        return self._release(final=False)

    def _settled(self, data: bytes) -> bool:
        if _maybe(data):
            return False
        scan = self._context + data
        if _open_at_end(scan, len(self._context), self.window) < len(scan):
            return False
        if self._view is None:
            return True
        keys, open_at = self._view.keys(self._offset, self.window)
        return not keys and open_at is None

    def flush(self) -> list[bytes]:
        """The end of the stream: release every held chunk (redacted)."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[bytes]:
        if not self._pending:
            return []
        scan = self._context + b"".join(self._pending)
        base = len(self._context)
        shift = base - self._offset  # stream offset -> position in scan
        hold = len(scan) if final else self._open_key_start(scan, base)
        keys = [_Key([(m.start(), m.end())], _replace_bytes(m)) for m in _keys_in(scan, base)]
        if self._view is not None:
            found, open_at = self._view.keys(self._offset, self.window)
            keys = _merge(keys, [key.shifted(shift) for key in found])
            if open_at is not None and not final:
                hold = min(hold, max(base, open_at + shift))
        keys = [key for key in keys if key.start < hold]
        # A key that runs into the held part is held with it.
        while keys and keys[-1].end > hold:
            hold = keys.pop().start
        # Release whole chunks only, and never cut through a key.
        ends, end = [], base
        for piece in self._pending:
            end += len(piece)
            ends.append(end)
        count = 0
        for index, end in enumerate(ends):
            if end > hold:
                break
            if not any(key.start < end < key.end for key in keys):
                count = index + 1
        if count == 0:
            return []
        cut = ends[count - 1]
        released = _split_replaced(scan, base, ends[:count], [k for k in keys if k.end <= cut])
        del self._pending[:count]
        self._context = scan[max(0, cut - self.CONTEXT) : cut]
        self._offset += cut - base
        if self._view is not None:
            self._view.release(self._offset)
        return released

    def _open_key_start(self, scan: bytes, base: int) -> int:
        return _open_at_end(scan, base, self.window)


def _open_at_end(data: bytes, start: int, window: int) -> int:
    """Where a key could be starting at the end of ``data`` (``len(data)`` if nowhere)."""
    tail = len(data.rstrip(_TAIL_BYTES))
    match = _OPEN_AT_END.search(data, max(start, tail, len(data) - window))
    return match.start() if match else len(data)


class _Key:
    """A key found: the byte ranges it covers and what replaces it (in the first range)."""

    __slots__ = ("replacement", "spans")

    def __init__(self, spans: list[tuple[int, int]], replacement: bytes) -> None:
        self.spans = spans
        self.replacement = replacement

    @property
    def start(self) -> int:
        return self.spans[0][0]

    @property
    def end(self) -> int:
        return self.spans[-1][1]

    def shifted(self, by: int) -> _Key:
        return _Key([(a + by, b + by) for a, b in self.spans], self.replacement)


def _merge(raw: list[_Key], joined: list[_Key]) -> list[_Key]:
    """Keys sorted by start, overlapping ones made one (the earliest one's replacement)."""
    out: list[_Key] = []
    for key in sorted(raw + joined, key=lambda k: (k.start, -len(k.spans))):
        if out and key.start < out[-1].end:
            last = out[-1]
            spans = sorted(last.spans + key.spans)
            union = [spans[0]]
            for a, b in spans[1:]:
                if a <= union[-1][1]:
                    union[-1] = (union[-1][0], max(union[-1][1], b))
                else:
                    union.append((a, b))
            out[-1] = _Key(union, last.replacement)
        else:
            out.append(key)
    return out


def _split_replaced(scan: bytes, start: int, ends: list[int], keys: list[_Key]) -> list[bytes]:
    """The pieces ``scan[start:ends[0]]``, ``scan[ends[0]:ends[1]]``... with keys replaced.

    A key's replacement goes where its first range starts; the rest of its
    bytes, in that piece or later ones, are dropped.
    """
    out = []
    for end in ends:
        piece = bytearray()
        pos = start
        for key in keys:
            for index, (a, b) in enumerate(key.spans):
                if b <= start or a >= end:
                    continue
                piece += scan[pos : max(a, start)]
                if index == 0 and a >= start:
                    piece += key.replacement
                pos = min(b, end)
        piece += scan[pos:end]
        out.append(bytes(piece))
        start = end
    return out


# A JSON string field that carries a piece of streamed text or arguments (SSE data is one
# line, so a field never spans a newline); its content may still be open at the end.
_FRAGMENT = re.compile(
    rb'"(?:delta|content|arguments|reasoning_content|reasoning|refusal)"\s*:\s*"'
    rb'((?:[^"\\\n]|\\.)*)'
)


class _DeltaView:
    """The contents of a stream's delta strings joined, each mapped back to its stream offset."""

    def __init__(self) -> None:
        self._buffer = bytearray()  # the bytes not parsed for good yet
        self._buffer_at = 0  # their stream offset
        self._closed: list[tuple[int, bytes]] = []  # (stream offset, content), in order
        self._open: tuple[int, bytes] | None = None  # a string still open at the end
        self._context = b""  # the last joined bytes of fragments already released

    def feed(self, chunk: bytes) -> None:
        buffer = self._buffer
        buffer += chunk
        self._open = None
        resume = max(0, len(buffer) - 40)  # a field name may be arriving
        for match in _FRAGMENT.finditer(buffer):
            fragment = (self._buffer_at + match.start(1), match.group(1))
            stop = match.end(1)  # a closing quote, a newline (bad JSON), or the end so far
            if stop == len(buffer) or (stop == len(buffer) - 1 and buffer[stop] == 0x5C):
                self._open, resume = fragment, match.start()  # may grow: parse it again
                break
            self._closed.append(fragment)
            resume = max(resume, match.end(1))
        del buffer[:resume]
        self._buffer_at += resume

    def release(self, upto: int) -> None:
        """Forget fragments that end before stream offset ``upto`` (all released)."""
        count = 0
        for at, content in self._closed:
            if at + len(content) > upto:
                break
            count += 1
        if count:
            self._context = (self._context + b"".join(c for _, c in self._closed[:count]))[-16:]
            del self._closed[:count]

    def keys(self, since: int, window: int) -> tuple[list[_Key], int | None]:
        """Keys across two or more fragments after stream offset ``since``, and where
        (a stream offset) a key could be starting at the end of the joined text."""
        fragments = self._closed + ([self._open] if self._open else [])
        if not fragments:
            return [], None
        joined = self._context + b"".join(c for _, c in fragments)
        starts, pos = [], len(self._context)  # where each fragment begins in ``joined``
        for _, content in fragments:
            starts.append(pos)
            pos += len(content)
        begin = len(joined)
        for (at, content), first in zip(fragments, starts, strict=True):
            if at + len(content) > since:
                begin = first + max(0, since - at)
                break

        def spans(a: int, b: int) -> list[tuple[int, int]]:
            out = []
            for (at, content), first in zip(fragments, starts, strict=True):
                lo, hi = max(a, first), min(b, first + len(content))
                if lo < hi:
                    out.append((at + lo - first, at + hi - first))
            return out

        keys = []
        for match in _keys_in(joined, begin):
            covered = spans(*match.span())
            if len(covered) > 1:  # a key inside one string is found in the raw bytes too
                keys.append(_Key(covered, _replace_bytes(match)))
        opening = _open_at_end(joined, begin, window)
        open_at = spans(opening, len(joined))[0][0] if opening < len(joined) else None
        return keys, open_at
