"""What the importers share: the interaction model, their errors and small readers.

``importers`` reads a file and dispatches to ``import_vcr`` or ``import_har``,
which turn each recorded exchange into an ``Interaction``; ``import_build``
makes the trace.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..core.errors import StreamError, TraceError
from ..core.turn import Turn

__all__ = ["CassetteError", "CassetteImportWarning", "Interaction"]


class CassetteError(TraceError):
    """A recording could not be read or holds nothing importable (the message says what and where)."""


class CassetteImportWarning(UserWarning):
    """Interactions were skipped, or the imported trace will not replay as recorded."""


@dataclass
class Interaction:
    """One recorded HTTP exchange, whatever file it came from.

    ``request_body`` is the raw bytes, or already-parsed JSON when the
    recording stored it parsed (pydantic-ai's ``parsed_body``). ``elapsed``
    and ``ttfb`` are seconds when the recording has timings (HAR), else None.
    """

    index: int
    method: str
    url: str
    request_headers: dict[str, str]
    request_body: Any
    status: int
    response_headers: dict[str, str]
    response_body: bytes
    elapsed: float | None = None
    ttfb: float | None = None

    @property
    def label(self) -> str:
        return f"#{self.index} {self.method} {_strip_query(self.url)}"


@dataclass
class _Call:
    """An interaction kept for the trace, with what was made of it."""

    interaction: Interaction
    body: dict[str, Any]
    iteration: int = 0
    attempt: int = 0
    turn: Turn | None = None
    error: StreamError | None = None
    results: list[dict[str, Any]] = field(default_factory=list)


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _as_bytes(value: Any, where: str) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):  # YAML !!binary
        return value
    if isinstance(value, str):
        return value.encode()
    raise CassetteError(f"{where} is {_kind(value)}, expected a string")


def _decoded(body: bytes, headers: dict[str, str]) -> bytes:
    """Undo a content-encoding the recorder left in place (VCR without decode_compressed_response)."""
    encoding = headers.get("content-encoding", "").strip().lower()
    try:
        if body[:2] == b"\x1f\x8b":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError):
        return body
    return body


def _need(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    expected = {dict: "a mapping", list: "a list", str: "a string", int: "an integer"}[kind]
    missing = "missing" if value is None else f"{_kind(value)}"
    raise CassetteError(f"{where} is {missing}, expected {expected}")


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bytes: "binary data"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    return f"a {type(value).__name__}"
