"""The trace recorder: a hook that writes each record as it happens, and its redaction.

The recorder writes and flushes each record as it happens, so a process
killed mid-run leaves a file whose complete lines are a valid prefix.

Secrets are removed at the seam, before anything reaches the disk: headers
(``rawloop.core.redact``), then the user's rules, then a last scan that refuses
to write a record that still looks like an API key.
"""

from __future__ import annotations

import datetime
import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from .._version import __version__
from ..core.errors import SecretInTraceError
from ..core.patch import parse_pointer
from ..core.redact import SECRET_PATTERN, placeholder, redact_headers
from ..loop.hooks import (
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
from ..loop.state import LoopState
from .format import DERIVED_KINDS, FORMAT, FORMAT_VERSION, encode_chunk

__all__ = ["Redactor", "TraceRecorder"]

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
        if record["kind"] in DERIVED_KINDS:
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
