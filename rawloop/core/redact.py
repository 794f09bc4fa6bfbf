"""Secrets never leave the process: header redaction with stable placeholders.

A redacted value becomes ``[REDACTED:xxxxxxxx]`` where the suffix is an HMAC
of the value under a key made once per process: the same secret gives the same
placeholder everywhere in a run (so replay matching still works), and the
placeholder reveals nothing about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "SECRET_PATTERN",
    "SENSITIVE_HEADERS",
    "placeholder",
    "redact_headers",
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

#: What an API key or bearer token looks like; used as a last scan before writing.
SECRET_PATTERN = re.compile(
    r"(?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{16,}"
    r"|(?P<scheme>Bearer\s+)(?!\[REDACTED)(?P<token>[A-Za-z0-9._~+/\-]{16,})"
)

#: Headers whose value is "Scheme credentials": the scheme is kept, the rest redacted.
_AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~\-]*")

_KEY = os.urandom(32)


def placeholder(secret: str) -> str:
    """The stable placeholder for one secret value."""
    digest = hmac.new(_KEY, secret.encode(), hashlib.sha256).hexdigest()[:8]
    return f"[REDACTED:{digest}]"


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
        out[key] = value
    return out


def _already_redacted(value: str) -> bool:
    # Redacting twice must give the same placeholder, not a hash of the placeholder.
    return value.startswith("[REDACTED:") or value.partition(" ")[2].startswith("[REDACTED:")


def redact_text(text: str) -> str:
    """Replace anything shaped like an API key or bearer token in free text."""

    def replace(match: re.Match[str]) -> str:
        if match.group("token") is not None:  # keep "Bearer ", as redact_headers does
            return match.group("scheme") + placeholder(match.group("token"))
        return placeholder(match.group(0))

    return SECRET_PATTERN.sub(replace, text)
