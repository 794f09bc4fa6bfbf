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
