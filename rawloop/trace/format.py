"""The trace format: a versioned JSON Lines file, its records, and a tolerant reader.

A trace is one header line and then one record per line, in the order things
happened (see ``docs/trace-format.md``). Chunks are stored exactly as they
arrived (as text when the chunk alone is valid UTF-8, else base64), so a
replay hands the client the same bytes with the same boundaries. The writer
is ``rawloop.trace.recorder``.
"""

from __future__ import annotations

import base64
import re
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .._version import __version__
from ..core.errors import TraceError, TraceFormatError, TraceVersionError
from .fields import record_problem

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Exchange",
    "Record",
    "Trace",
    "chunk_bytes",
    "encode_chunk",
    "expansion_limit",
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
    def load(cls, path: str | Path, *, max_expanded: int | None = None) -> Trace:
        """Read a trace (``.jsonl`` or ``.jsonl.gz``).

        Raises ``TraceFormatError`` naming the line for a bad record (a field
        of the wrong type included) and ``TraceVersionError`` for a newer
        format. A cut last line, what a crash leaves, is dropped with a warning.
        A ``.jsonl.gz`` may expand to at most ``max_expanded`` bytes (default:
        ``expansion_limit`` of its size); past that it is refused with a
        ``TraceFormatError`` before more is decompressed.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from None
        if raw[:2] == b"\x1f\x8b":
            limit = expansion_limit(len(raw)) if max_expanded is None else max_expanded
            raw = _gunzip_tolerant(raw, limit, str(path))
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: bytes, path: str = "<trace>") -> Trace:
        """Parse the bytes of a trace file (see ``load``)."""
        load_warnings: list[str] = []
        records: list[Record] = []
        for number, line, last in _lines(raw):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if last:
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
        _check_record(records[0], path)
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


def _check_record(record: Record, path: str) -> None:
    problem = record_problem(record.kind, record.data)
    if problem is not None:
        raise TraceFormatError(f"{path}: {problem}", line=record.line)


#: What any ``.jsonl.gz`` may expand to, and how far past it a small file may go.
_EXPAND_FLOOR = 64 * 1024 * 1024
_EXPAND_RATIO = 100
_EXPAND_CEILING = 1024 * 1024 * 1024


def expansion_limit(compressed_size: int) -> int:
    """The default cap on a ``.jsonl.gz`` trace's decompressed size.

    64 MiB, or 100 times the compressed size when that is more, and never over
    1 GiB: JSON traces compress about 10 to 20 times, so only a file built to
    expand (a "zip bomb") meets it.
    """
    return min(_EXPAND_CEILING, max(_EXPAND_FLOOR, _EXPAND_RATIO * compressed_size))


def _gunzip_tolerant(raw: bytes, limit: int, path: str) -> bytes:
    """Decompress what a killed writer left: everything up to the last flush.

    Decompresses a bounded piece at a time and refuses with ``TraceFormatError``
    as soon as the output would pass ``limit`` bytes.
    """
    out = bytearray()
    data = raw
    while data:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while data and not decompressor.eof:
                room = limit - len(out)
                out += decompressor.decompress(data, min(room + 1, 1 << 20))
                if len(out) > limit:
                    raise TraceFormatError(
                        f"{path}: expands to more than {limit} bytes when decompressed; "
                        "refused (pass a larger max_expanded to read it)"
                    )
                data = decompressor.unconsumed_tail
        except zlib.error:
            break
        if not decompressor.eof:
            break  # truncated member: keep what came out
        data = decompressor.unused_data
    return bytes(out)


_NON_BLANK = re.compile(rb"[^\n]+")


def _lines(raw: bytes) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, is it the last line without a newline) for each non-empty line.

    Runs of empty lines cost nothing: a file of only newlines makes no objects.
    """
    number, pos = 1, 0
    for match in _NON_BLANK.finditer(raw):
        number += raw.count(b"\n", pos, match.start())
        pos = match.start()
        yield number, match.group(), match.end() == len(raw)
