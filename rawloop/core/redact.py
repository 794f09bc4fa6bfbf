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
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

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

# A cheap first look: no key can be there without one of these.
_QUICK = re.compile(r"sk-|(?i:bearer)")
_QUICK_BYTES = re.compile(rb"sk-|(?i:bearer)")


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
    if not _QUICK.search(text):
        return text
    return SECRET_PATTERN.sub(_replace_text, text)


def redact_bytes(data: bytes) -> bytes:
    """``redact_text`` for bytes, valid UTF-8 or not (a whole body: keys split by chunks are seen)."""
    if not _QUICK_BYTES.search(data):
        return data
    return SECRET_PATTERN_BYTES.sub(_replace_bytes, data)


def has_secret(text: str) -> bool:
    """Whether ``text`` holds anything shaped like an API key or bearer token."""
    return SECRET_PATTERN.search(text) is not None


def may_hold_secret(data: bytes | str) -> bool:
    """A cheap first look: false means nothing in ``data`` can be a key (true may be wrong)."""
    if isinstance(data, str):
        return _QUICK.search(data) is not None
    return _QUICK_BYTES.search(data) is not None


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
        if not _QUICK.search(value):
            return value
        new = SECRET_PATTERN.sub(_replace_text, value)
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
    """Redacts keys in a stream of byte chunks, including a key split across chunks.

    ``feed(chunk)`` returns the chunks now safe to release, in order, each
    redacted; a chunk whose end could be the start of a key is held (with the
    ones after it) until a later chunk settles it. ``flush()`` releases the
    rest at the end of the stream. Released chunks keep their boundaries: a
    key split across chunks becomes its placeholder in the chunk where it
    starts, and its other pieces are removed from the chunks after. Each
    released chunk corresponds to one fed chunk, in order.

    A key is looked for in at most ``window`` bytes before the end of what has
    arrived: a run of key characters longer than that is not held back.
    """

    #: Released bytes kept so that an escape just before a chunk boundary still starts a word.
    CONTEXT = 16

    def __init__(self, *, window: int = 4096) -> None:
        self.window = window
        self._pending: list[bytes] = []
        self._context = b""

    @property
    def held(self) -> int:
        """How many fed chunks are waiting for the next one."""
        return len(self._pending)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take one chunk; return the chunks (this one or earlier) that can go out now."""
        self._pending.append(bytes(chunk))
        return self._release(final=False)

    def flush(self) -> list[bytes]:
        """The end of the stream: release every held chunk (redacted)."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[bytes]:
        if not self._pending:
            return []
        scan = self._context + b"".join(self._pending)
        base = len(self._context)
        hold = len(scan) if final else self._open_key_start(scan, base)
        matches = [m for m in SECRET_PATTERN_BYTES.finditer(scan, base) if m.start() < hold]
        # A key that runs into the held part is held with it.
        while matches and matches[-1].end() > hold:
            hold = matches.pop().start()
        # Release whole chunks only, and never cut through a key.
        ends, end = [], base
        for piece in self._pending:
            end += len(piece)
            ends.append(end)
        count = 0
        for index, end in enumerate(ends):
            if end > hold:
                break
            if not any(m.start() < end < m.end() for m in matches):
                count = index + 1
        if count == 0:
            return []
        cut = ends[count - 1]
        released = _split_replaced(scan, base, ends[:count], [m for m in matches if m.end() <= cut])
        del self._pending[:count]
        self._context = scan[max(0, cut - self.CONTEXT) : cut]
        return released

    def _open_key_start(self, scan: bytes, base: int) -> int:
        start = max(base, len(scan) - self.window)
        match = _OPEN_AT_END.search(scan, start)
        return match.start() if match else len(scan)


def _split_replaced(
    scan: bytes, start: int, ends: list[int], matches: list[re.Match[bytes]]
) -> list[bytes]:
    """The pieces ``scan[start:ends[0]]``, ``scan[ends[0]:ends[1]]``... with matches replaced.

    A match's replacement goes into the piece where it starts; its bytes in
    later pieces are dropped.
    """
    out = []
    for end in ends:
        piece = bytearray()
        pos = start
        for match in matches:
            if match.end() <= start or match.start() >= end:
                continue
            piece += scan[pos : max(match.start(), start)]
            if match.start() >= start:
                piece += _replace_bytes(match)
            pos = min(match.end(), end)
        piece += scan[pos:end]
        out.append(bytes(piece))
        start = end
    return out
