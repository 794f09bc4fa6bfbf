"""Secrets never leave the process: header redaction, key scans, stable placeholders.

A redacted value becomes ``[REDACTED:xxxxxxxx]`` where the suffix is an HMAC
of the value under a key made once per process: the same secret gives the same
placeholder everywhere in a run (so replay matching still works), and the
placeholder reveals nothing about the secret.

Theory of operation of the key scan. A key is found by its shape
(``SECRET_PATTERN``), in three kinds of text:

- decoded strings (``redact_text``, ``redact_json``): a request body, a turn;
- escaped text (the same functions, or ``redact_bytes`` on the wire bytes): JSON
  inside an SSE chunk, a ``repr``. Here ``"a\\nsk-..."`` puts the letter ``n``
  right before the key, which a plain "not after a word character" rule would
  take for the middle of a word; so an escape (``\\n``, ``\\t``, ``\\u00e9``,
  ``\\x01``...) also counts as the start of a word;
- a stream of chunks (``ChunkRedactor``): a key may be split across two chunks,
  invisible in either. The redactor holds back a chunk whose end could be the
  start of a key until the next chunk shows whether it is one, and keeps the
  last bytes it released as look-behind context.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any, AnyStr, TypeVar, cast

__all__ = [
    "SECRET_PATTERN",
    "SECRET_PATTERN_BYTES",
    "SENSITIVE_HEADERS",
    "ChunkRedactor",
    "has_secret",
    "may_hold_secret",
    "placeholder",
    "redact_bytes",
    "redact_headers",
    "redact_json",
    "redact_stream",
    "redact_text",
]

#: Header names (lower case) whose values are always replaced.
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "openai-organization",
        "openai-project",
        "cookie",
        "set-cookie",
    }
)

# -- the shapes of a key ------------------------------------------------------------------

_KEY_CHAR = r"[A-Za-z0-9_\-]"
_TOKEN_CHAR = r"(?:[A-Za-z0-9._~+/\-]|\\/)"  # ``\/``: a JSON writer may escape the slash
# The start of a word: no key character before, or an escape sequence right before.
_WORD_START = (
    r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[A-Za-z])|(?<=\\x[0-9A-Fa-f]{2})"
    r"|(?<=\\u[0-9A-Fa-f]{4})|(?<=\\U[0-9A-Fa-f]{8}))"
)
# Prefixes no ordinary word has: matched even glued to a word ("apikeysk-proj-...").
_VENDOR_PREFIXES = ("sk-proj-", "sk-ant-", "sk-svcacct-", "sk-admin-", "sk-or-")
_SPACE = r"(?:\s|\\[nrt])"  # "Bearer\ntoken" as a decoded or as an escaped string

_SOURCE = (
    rf"(?:{'|'.join(re.escape(p) for p in _VENDOR_PREFIXES)}){_KEY_CHAR}{{12,}}"
    rf"|{_WORD_START}sk-{_KEY_CHAR}{{16,}}"
    rf"|(?P<scheme>(?i:bearer){_SPACE}+)(?!\[REDACTED)(?P<token>{_TOKEN_CHAR}{{16,}}=*)"
)

#: What an API key or bearer token looks like: ``sk-`` and 16 or more key
#: characters starting a word (an escape counts as a word boundary), a vendor
#: prefix (``sk-proj-``, ``sk-ant-``...) anywhere, or ``Bearer`` and a token.
SECRET_PATTERN = re.compile(_SOURCE)
#: ``SECRET_PATTERN`` for bytes (keys are ASCII, so it also finds them in invalid UTF-8).
SECRET_PATTERN_BYTES = re.compile(_SOURCE.encode())


def _maybe(data: str | bytes) -> bool:
    """A cheap first look (``find`` runs far faster than the pattern): a key needs one of these."""
    if isinstance(data, str):
        return "sk-" in data or "bearer" in data.lower()
    return b"sk-" in data or b"bearer" in data.lower()


_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr]")
_BEARER_BYTES = re.compile(rb"[Bb][Ee][Aa][Rr][Ee][Rr]")


def _find_keys(
    data: AnyStr, pattern: re.Pattern[AnyStr], sk: AnyStr, bearer: re.Pattern[AnyStr], start: int
) -> list[re.Match[AnyStr]]:
    # ``pattern.finditer``, but the pattern is only tried where a key can start: its
    # look-behinds make the regex engine crawl, ``find`` does not.
    found: list[re.Match[AnyStr]] = []
    pos = start
    while True:
        at_sk = data.find(sk, pos)
        scheme = bearer.search(data, pos)
        candidates = [c for c in (at_sk, scheme.start() if scheme else -1) if c >= 0]
        if not candidates:
            return found
        at = min(candidates)
        match = pattern.match(data, at)  # its look-behind still sees before ``at``
        if match:
            found.append(match)
            pos = match.end()
        else:
            pos = at + 1


def _keys_in(data: bytes, start: int = 0) -> list[re.Match[bytes]]:
    """``SECRET_PATTERN_BYTES.finditer(data, start)``, faster."""
    return _find_keys(data, SECRET_PATTERN_BYTES, b"sk-", _BEARER_BYTES, start)


def _sub_text(text: str) -> str:
    """``SECRET_PATTERN.sub(_replace_text, text)``, faster."""
    parts, pos = [], 0
    for match in _find_keys(text, SECRET_PATTERN, "sk-", _BEARER, 0):
        parts += [text[pos : match.start()], _replace_text(match)]
        pos = match.end()
    return "".join([*parts, text[pos:]]) if parts else text


# What an open key at the very end can be made of: its start lies in the last run of these.
_TAIL_BYTES = (string.ascii_letters + string.digits + "._~+/=-\\ \t\r\n\f\v").encode()


def _partial(word: str, tail: str, *, ignore_case: bool = False) -> str:
    """A regex for any non-empty prefix of ``word`` followed, once whole, by ``tail``."""
    out = tail
    for char in reversed(word):
        char = re.escape(char)
        if ignore_case and char.isalpha():
            char = f"[{char.lower()}{char.upper()}]"
        out = f"{char}(?:{out})?"
    return out


# Where a key could be starting at the very end of what has arrived so far.
_OPEN_AT_END = re.compile(
    (
        "(?:"
        + "|".join(_partial(p, f"{_KEY_CHAR}*") for p in _VENDOR_PREFIXES)
        + f"|{_WORD_START}{_partial('sk-', f'{_KEY_CHAR}*')}"
        + "|"
        + _partial("bearer", r"(?:\s|\\[nrt/]|[A-Za-z0-9._~+/=\-])*\\?", ignore_case=True)
        + r")\Z"
    ).encode()
)

_KEY = os.urandom(32)
_T = TypeVar("_T")


def placeholder(secret: str) -> str:
    """The stable placeholder for one secret value."""
    digest = hmac.new(_KEY, secret.encode(), hashlib.sha256).hexdigest()[:8]
    return f"[REDACTED:{digest}]"


# -- headers --------------------------------------------------------------------------------

#: Headers whose value is "Scheme credentials": the scheme is kept, the rest redacted.
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~\-]*")


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    extra: Iterable[str] = (),
) -> dict[str, str]:
    """A copy of ``headers`` with sensitive values replaced (names lower-cased)."""
    sensitive = SENSITIVE_HEADERS | {name.lower() for name in extra}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if key in sensitive and not _already_redacted(value):
            scheme, _, token = value.partition(" ")
            # Keep the scheme so a reader can tell "Bearer" from "Basic"; only for
            # Authorization-style headers (a cookie's first pair is no scheme).
            if key in _AUTH_HEADERS and token and _SCHEME.fullmatch(scheme):
                value = f"{scheme} {placeholder(token)}"
            else:
                value = placeholder(value)
        else:
            value = redact_text(value)  # a key in any other header is still a key
        out[key] = value
    return out


def _already_redacted(value: str) -> bool:
    # Redacting twice must give the same placeholder, not a hash of the placeholder.
    return value.startswith("[REDACTED:") or value.partition(" ")[2].startswith("[REDACTED:")


# -- text, bytes and JSON ---------------------------------------------------------------------


def _replace_text(match: re.Match[str]) -> str:
    if match.group("token") is not None:  # keep "Bearer ", as redact_headers does
        return match.group("scheme") + placeholder(match.group("token"))
    return placeholder(match.group(0))


def _replace_bytes(match: re.Match[bytes]) -> bytes:
    token = match.group("token")
    if token is not None:
        return match.group("scheme") + placeholder(token.decode("ascii")).encode()
    return placeholder(match.group(0).decode("ascii")).encode()


def redact_text(text: str) -> str:
    """Replace anything shaped like an API key or bearer token in free or escaped text."""
    if not _maybe(text):
        return text
    return _sub_text(text)


def redact_bytes(data: bytes) -> bytes:
    """``redact_text`` for bytes, valid UTF-8 or not (a whole body: keys split by chunks are seen)."""
    if not _maybe(data):
        return data
    parts, pos = [], 0
    for match in _keys_in(data):
        parts += [data[pos : match.start()], _replace_bytes(match)]
        pos = match.end()
    return b"".join([*parts, data[pos:]]) if parts else data


def redact_stream(body: bytes) -> bytes:
    """A whole response body as ``ChunkRedactor`` redacts it: keys split across deltas too."""
    redactor = ChunkRedactor()
    return b"".join(redactor.feed(body) + redactor.flush())


def has_secret(text: str) -> bool:
    """Whether ``text`` holds anything shaped like an API key or bearer token."""
    return _maybe(text) and bool(_find_keys(text, SECRET_PATTERN, "sk-", _BEARER, 0))


def may_hold_secret(data: bytes | str) -> bool:
    """A cheap first look: false means nothing in ``data`` can be a key (true may be wrong)."""
    return _maybe(data)


def redact_json(value: _T, *, limit: int = 20) -> tuple[_T, list[str]]:
    """``value`` with keys redacted in every string (object keys too), and where.

    Returns the new value (``value`` itself when nothing was found) and the
    JSON Pointers (RFC 6901) of the strings changed, at most ``limit`` of them.
    The pointers are built from redacted keys: they never carry a secret.
    """
    found: list[str] = []
    out = _redact_json(value, "", found, limit)
    return cast(_T, out), found


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _redact_json(value: Any, path: str, found: list[str], limit: int) -> Any:
    if isinstance(value, str):
        if not _maybe(value):
            return value
        new = _sub_text(value)
        if new != value and len(found) < limit:
            found.append(path)
        return new
    if isinstance(value, list):
        items = [_redact_json(v, f"{path}/{i}", found, limit) for i, v in enumerate(value)]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = redact_text(key) if isinstance(key, str) else key
            if new_key != key and len(found) < limit:
                found.append(f"{path}/{_pointer_token(new_key)}")
            new_item = _redact_json(item, f"{path}/{_pointer_token(str(new_key))}", found, limit)
            changed = changed or new_key != key or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    return value


# -- streams ----------------------------------------------------------------------------------


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
