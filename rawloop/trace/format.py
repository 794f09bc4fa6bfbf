"""The trace format: a versioned JSON Lines file, its records, and a tolerant reader.

A trace is one header line and then one record per line, in the order things
happened (see ``docs/trace-format.md``). Chunks are stored exactly as they
arrived (as text when the chunk alone is valid UTF-8, else base64), so a
replay hands the client the same bytes with the same boundaries. The writer
is ``rawloop.trace.recorder``.
"""

from __future__ import annotations

import base64
import io
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .._version import __version__
from ..core.errors import TraceError, TraceFormatError, TraceVersionError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Exchange",
    "Record",
    "Trace",
    "chunk_bytes",
    "encode_chunk",
]

FORMAT = "rawloop-trace"
#: The major version this module writes and the newest it reads.
FORMAT_VERSION = 1

#: Records the loop derives from the wire (turns, results, edits): redacted by the same rules.
DERIVED_KINDS = frozenset({"decision", "result", "edit", "handoff", "error", "end"})

#: Record kinds this version writes; others found in a version-1 file are kept as they are.
KINDS = (
    "header",
    "request",
    "response",
    "chunk",
    "decision",
    "result",
    "edit",
    "handoff",
    "error",
    "end",
)


# -- chunks -------------------------------------------------------------------


def encode_chunk(data: bytes) -> dict[str, str]:
    """``{"text": ...}`` when the chunk alone is valid UTF-8, else ``{"b64": ...}``."""
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode()}


def chunk_bytes(record: dict[str, Any]) -> bytes:
    """The exact bytes of a chunk record."""
    if "text" in record:
        return str(record["text"]).encode()
    return base64.b64decode(record["b64"])


# -- records ------------------------------------------------------------------------


@dataclass
class Record:
    """One line of a trace: its ``kind``, its 1-based ``line`` number and its fields."""

    kind: str
    line: int
    data: dict[str, Any]

    @property
    def iteration(self) -> int:
        return int(self.data.get("iteration", 0))

    @property
    def attempt(self) -> int:
        return int(self.data.get("attempt", 0))


@dataclass
class Exchange:
    """One HTTP attempt: its request, response, chunks (and error, if it failed)."""

    iteration: int
    attempt: int
    request: dict[str, Any]
    response: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def body(self) -> bytes:
        """The whole response body, exactly as received."""
        return b"".join(chunk_bytes(c) for c in self.chunks)


@dataclass
class Trace:
    """A loaded trace: the header, every record in order, and load warnings."""

    header: dict[str, Any]
    records: list[Record]
    path: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return str(self.header.get("dialect", "responses"))

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """Read a trace (``.jsonl`` or ``.jsonl.gz``).

        Raises ``TraceFormatError`` naming the line for a bad record and
        ``TraceVersionError`` for a newer format. A cut last line, what a
        crash leaves, is dropped with a warning.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
        if raw[:2] == b"\x1f\x8b":
            raw = _gunzip_tolerant(raw)
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: bytes, path: str = "<trace>") -> Trace:
        """Parse the bytes of a trace file (see ``load``)."""
        lines = raw.split(b"\n")
        trailing_cut = bool(lines and lines[-1].strip())
        load_warnings: list[str] = []
        records: list[Record] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if trailing_cut and number == len(lines):
                    message = f"{path}: line {number} is cut short (a crash mid-write?); ignored"
                    load_warnings.append(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=3)
                    break
                raise TraceFormatError(f"{path}: not valid JSON ({exc.msg})", line=number) from None
            if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
                raise TraceFormatError(
                    f"{path}: a record must be an object with a 'kind'", line=number
                )
            records.append(Record(data["kind"], number, data))
        if not records and not load_warnings:
            raise TraceFormatError(f"{path}: the file is empty (a trace starts with a header line)")
        if not records or records[0].kind != "header":
            raise TraceFormatError(f"{path}: the first record must be the header", line=1)
        header = records.pop(0).data
        if header.get("format") != FORMAT:
            raise TraceFormatError(
                f"{path}: not a rawloop trace (format {header.get('format')!r})", line=1
            )
        version = header.get("version")
        if not isinstance(version, int) or version < 1:
            raise TraceFormatError(f"{path}: bad format version {version!r}", line=1)
        if version > FORMAT_VERSION:
            raise TraceVersionError(
                f"{path} is trace format version {version}; this rawloop {__version__} reads "
                f"up to version {FORMAT_VERSION}: upgrade rawloop to read it"
            )
        for record in records:
            _check_record(record, path)
        return cls(header, records, path, load_warnings)

    def of_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    def exchanges(self) -> list[Exchange]:
        """Every HTTP attempt, in order, with its response and chunks."""
        out: list[Exchange] = []
        current: dict[tuple[int, int], Exchange] = {}
        for record in self.records:
            key = (record.iteration, record.attempt)
            if record.kind == "request":
                exchange = Exchange(record.iteration, record.attempt, record.data)
                current[key] = exchange
                out.append(exchange)
            elif record.kind in ("response", "chunk", "error") and key in current:
                exchange = current[key]
                if record.kind == "response":
                    exchange.response = record.data
                elif record.kind == "chunk":
                    exchange.chunks.append(record.data)
                elif record.data.get("where") == "request":
                    exchange.error = record.data
        return out

    def results(self) -> dict[str, dict[str, Any]]:
        """Recorded tool results by call_id."""
        return {r.data["call_id"]: r.data for r in self.of_kind("result")}

    def edits(self) -> dict[int, list[dict[str, Any]]]:
        """Recorded breakpoint patches by iteration."""
        out: dict[int, list[dict[str, Any]]] = {}
        for record in self.of_kind("edit"):
            out.setdefault(record.iteration, []).extend(record.data["patch"])
        return out

    def end(self) -> dict[str, Any] | None:
        ends = self.of_kind("end")
        return ends[-1].data if ends else None

    def dump(self) -> bytes:
        """The trace serialised again (chunk data untouched)."""
        lines = [orjson.dumps(self.header)] + [orjson.dumps(r.data) for r in self.records]
        return b"\n".join(lines) + b"\n"


_REQUIRED = {
    "request": ("iteration", "attempt", "body"),
    "response": ("iteration", "attempt", "status"),
    "chunk": ("iteration", "attempt"),
    "decision": ("iteration", "turn"),
    "result": ("iteration", "call_id", "output"),
    "edit": ("iteration", "patch"),
    "end": ("stop_reason",),
}


def _check_record(record: Record, path: str) -> None:
    for name in _REQUIRED.get(record.kind, ()):
        if name not in record.data:
            raise TraceFormatError(
                f"{path}: {record.kind} record has no {name!r}", line=record.line
            )
    if record.kind == "chunk":
        if "text" not in record.data and "b64" not in record.data:
            raise TraceFormatError(
                f"{path}: chunk record has neither 'text' nor 'b64'", line=record.line
            )
        if "b64" in record.data:
            try:
                base64.b64decode(record.data["b64"], validate=True)
            except ValueError:
                raise TraceFormatError(
                    f"{path}: chunk 'b64' is not base64", line=record.line
                ) from None


def _gunzip_tolerant(raw: bytes) -> bytes:
    """Decompress what a killed writer left: everything up to the last flush."""
    out = io.BytesIO()
    data = raw
    while data:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out.write(decompressor.decompress(data))
        except zlib.error:
            break
        if not decompressor.eof:
            break  # truncated member: keep what came out
        data = decompressor.unused_data
    return out.getvalue()
