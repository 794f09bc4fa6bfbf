"""Wire traces: a versioned JSON Lines format, a crash-safe recorder, and a reader.

A trace is one header line and then one record per line, in the order things
happened (see ``docs/trace-format.md``). The recorder is a hook: it writes and
flushes each record as it happens, so a process killed mid-run leaves a file
whose complete lines are a valid prefix. Chunks are stored exactly as they
arrived (as text when the chunk alone is valid UTF-8, else base64), so a
replay hands the client the same bytes with the same boundaries.

Secrets are removed at the seam, before anything reaches the disk: headers
(``rawloop.redact``), then the user's rules, then a last scan that refuses to
write a record that still looks like an API key.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import io
import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from ._version import __version__
from .errors import SecretInTraceError, TraceError, TraceFormatError, TraceVersionError
from .hooks import (
    ChunkInfo,
    DecisionInfo,
    EditInfo,
    EndInfo,
    ErrorInfo,
    HandoffInfo,
    RequestInfo,
    ResponseInfo,
    ResultInfo,
)
from .patch import parse_pointer
from .redact import SECRET_PATTERN, placeholder, redact_headers
from .state import LoopState

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Exchange",
    "Record",
    "Redactor",
    "Trace",
    "TraceRecorder",
    "chunk_bytes",
    "encode_chunk",
]

FORMAT = "rawloop-trace"
#: The major version this module writes and the newest it reads.
FORMAT_VERSION = 1

#: Record kinds this version writes; others found in a version-1 file are kept as they are.
_DERIVED_KINDS = frozenset({"decision", "result", "edit", "handoff", "error", "end"})

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


# -- redaction --------------------------------------------------------------------


@dataclass
class Redactor:
    """What to remove before a record is written.

    Args:
        headers: more header names to redact (the defaults are always redacted).
        json_paths: JSON Pointers into request bodies to redact; ``*`` matches
            any key or index (``/input/*/content``).
        patterns: regexes replaced in request bodies' strings and chunk text.
            A match that spans two chunks cannot be seen in either: redact such
            data with ``json_paths`` or at its source.
        allow_secrets: write records that still look like API keys (never do
            this with traces that leave your machine).
    """

    headers: Sequence[str] = ()
    json_paths: Sequence[str] = ()
    patterns: Sequence[str | re.Pattern[str]] = ()
    allow_secrets: bool = False
    _compiled: list[re.Pattern[str]] = field(init=False, repr=False)
    _paths: list[list[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._compiled = [re.compile(p) if isinstance(p, str) else p for p in self.patterns]
        self._paths = [parse_pointer(p) for p in self.json_paths]

    def headers_of(self, headers: dict[str, str]) -> dict[str, str]:
        """Headers with the defaults and the extra names redacted (idempotent)."""
        return redact_headers(headers, self.headers)

    def body(self, body: Any) -> Any:
        if not self._paths and not self._compiled:
            return body
        body = orjson.loads(orjson.dumps(body))  # never touch the caller's objects
        for tokens in self._paths:
            body = _redact_path(body, tokens)
        return self.strings(body) if self._compiled else body

    def text(self, text: str) -> str:
        for pattern in self._compiled:
            text = pattern.sub(lambda m: placeholder(m.group(0)), text)
        return text

    def strings(self, value: Any) -> Any:
        """A copy of ``value`` with the patterns replaced in every string."""
        if not self._compiled:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.strings(v) for v in value]
        if isinstance(value, dict):
            return {k: self.strings(v) for k, v in value.items()}
        return value


def _redact_path(value: Any, tokens: list[str]) -> Any:
    if not tokens:
        return placeholder(orjson.dumps(value).decode())
    head, rest = tokens[0], tokens[1:]
    if isinstance(value, dict):
        for key in list(value) if head == "*" else [head]:
            if key in value:
                value[key] = _redact_path(value[key], rest)
    elif isinstance(value, list):
        indexes = range(len(value)) if head == "*" else [int(head)] if head.isdigit() else []
        for i in indexes:
            if i < len(value):
                value[i] = _redact_path(value[i], rest)
    return value


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


# -- the recorder ---------------------------------------------------------------------


class TraceRecorder:
    """A hook that writes a trace of the run to ``path`` (``.jsonl`` or ``.jsonl.gz``).

    Each record is written and flushed as it happens. ``redact`` is a
    ``Redactor`` (the defaults already remove credentials from headers).
    ``metadata`` goes into the header. Use it as ``Loop(hooks=[TraceRecorder(p)])``,
    or ``await loop.run(x, trace=p)``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        redact: Redactor | None = None,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = True,
    ) -> None:
        self.path = Path(path)
        self.redactor = redact or Redactor()
        self.metadata = dict(metadata or {})
        self.records_written = 0
        self.records_refused = 0
        self._file: IO[bytes] | None = None
        self._mode = "wb" if overwrite else "ab"
        self._header_written = False

    # The header needs the loop's dialect and model: the first breakpoint has them.
    def on_breakpoint(self, state: LoopState) -> None:
        if not self._header_written:
            self.write_header(state.dialect, state.model, state.base_url)

    def write_header(self, dialect: str, model: str, base_url: str) -> None:
        """Write the header line (the recorder does this itself at the first breakpoint)."""
        if self._header_written:
            return
        self._header_written = True
        self._write(
            {
                "kind": "header",
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "rawloop": __version__,
                "dialect": dialect,
                "base_url": base_url,
                "model": model,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "metadata": self.metadata,
            }
        )

    def on_edit(self, info: EditInfo) -> None:
        self._write({"kind": "edit", "iteration": info.iteration, "patch": info.patch})

    def on_handoff(self, info: HandoffInfo) -> None:
        self._write(
            {
                "kind": "handoff",
                "iteration": info.iteration,
                "from_model": info.from_model,
                "to_model": info.to_model,
                "reason": info.reason,
            }
        )

    def on_request(self, info: RequestInfo) -> None:
        self._write(
            {
                "kind": "request",
                "iteration": info.iteration,
                "attempt": info.attempt,
                "method": info.method,
                "url": info.url,
                "headers": self.redactor.headers_of(info.headers),
                "body": self.redactor.body(info.json),
            }
        )

    def on_response(self, info: ResponseInfo) -> None:
        self._write(
            {
                "kind": "response",
                "iteration": info.iteration,
                "attempt": info.attempt,
                "status": info.status,
                "headers": self.redactor.headers_of(info.headers),
                "request_id": info.request_id,
                "t": round(info.elapsed, 6),
            }
        )

    def on_chunk(self, info: ChunkInfo) -> None:
        encoded: dict[str, Any] = encode_chunk(info.data)
        if "text" in encoded:
            text = self.redactor.text(encoded["text"])
            if text != encoded["text"]:
                # Say so: these bytes are no longer the ones that crossed the wire.
                encoded["text"], encoded["redacted"] = text, True
        self._write(
            {
                "kind": "chunk",
                "iteration": info.iteration,
                "attempt": info.attempt,
                "t": round(info.elapsed, 6),
                **encoded,
            }
        )

    def on_decision(self, info: DecisionInfo) -> None:
        self._write({"kind": "decision", "iteration": info.iteration, "turn": info.turn.to_dict()})

    def on_result(self, info: ResultInfo) -> None:
        r = info.result
        self._write(
            {
                "kind": "result",
                "iteration": info.iteration,
                "call_id": r.call_id,
                "name": r.name,
                "arguments": r.arguments,
                "output": r.output,
                "error": r.error,
                "duration": round(r.duration, 6),
            }
        )

    def on_error(self, info: ErrorInfo) -> None:
        self._write(
            {
                "kind": "error",
                "iteration": info.iteration,
                "attempt": info.attempt,
                "where": info.where,
                "type": type(info.error).__name__,
                "message": str(info.error),
                "will_retry": info.will_retry,
                "delay": info.delay,
            }
        )

    def on_end(self, info: EndInfo) -> None:
        self._write(
            {
                "kind": "end",
                "stop_reason": info.stop_reason,
                "iterations": info.iterations,
                "usage": info.usage,
                "duration": round(info.duration, 6),
                "error": None
                if info.error is None
                else f"{type(info.error).__name__}: {info.error}",
            }
        )
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[bytes]
        if self.path.suffix == ".gz":
            handle = cast(IO[bytes], gzip.GzipFile(self.path, self._mode))
        else:
            handle = open(self.path, self._mode)  # noqa: SIM115 - lives across calls
        self._file = handle
        self._mode = "ab"
        return handle

    def _write(self, record: dict[str, Any]) -> None:
        if record["kind"] in _DERIVED_KINDS:
            # Turns, results and edits repeat what the wire carried: same rules.
            record = self.redactor.strings(record)
        line = orjson.dumps(record)
        # The regex is slow on big chunks; a key cannot be there without one of these.
        if not self.redactor.allow_secrets and (b"sk-" in line or b"Bearer" in line):
            match = SECRET_PATTERN.search(line.decode(errors="replace"))
            if match:
                self.records_refused += 1
                # Say where, never what: the message must not carry the secret.
                raise SecretInTraceError(
                    f"a {record['kind']} record (iteration {record.get('iteration', '-')}) still "
                    f"matches an API-key pattern after redaction; it was not written to {self.path}. "
                    "Add a Redactor rule for it (or allow_secrets=True for a local-only trace)."
                )
        handle = self._file if self._file is not None else self._open()
        handle.write(line + b"\n")
        handle.flush()
        self.records_written += 1
