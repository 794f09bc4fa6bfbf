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
    r"sk-[A-Za-z0-9_\-]{16,}|Bearer\s+(?!\[REDACTED)[A-Za-z0-9._~+/\-]{16,}"
)

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
        if key in sensitive:
            scheme, _, token = value.partition(" ")
            # Keep the scheme so a reader can tell "Bearer" from "Basic".
            value = f"{scheme} {placeholder(token)}" if token else placeholder(value)
        out[key] = value
    return out


def redact_text(text: str) -> str:
    """Replace anything shaped like an API key or bearer token in free text."""
    return SECRET_PATTERN.sub(lambda m: placeholder(m.group(0)), text)
