"""The trace recorder: a hook that writes each record as it happens, and its redaction.

The recorder writes and flushes each record as it happens, so a process
killed mid-run leaves a file whose complete lines are a valid prefix.

Secrets are removed at the seam, before anything reaches the disk: headers
(``rawloop.core.redact``), then the user's rules, then a last scan for anything
still shaped like an API key. The scan reads decoded strings (an escape such as
``\\n`` before a key hides nothing) and the chunks as one stream (a key split
across two chunks is found: a chunk whose end could start a key is written
when the next one arrives). What it finds is replaced by a placeholder and the
record says where (``withheld``): a record is never dropped.
"""

from __future__ import annotations

import datetime
import gzip
import logging
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from .._version import __version__
from ..core.patch import parse_pointer
from ..core.redact import (
    may_hold_secret,
    placeholder,
    redact_headers,
    redact_json,
)
from ..core.redact_stream import ChunkRedactor
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

logger = logging.getLogger("rawloop.trace")

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
        allow_secrets: turn the last key scan off: write what still looks like
            an API key (never do this with traces that leave your machine).
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
        #: Records written with a key-shaped string replaced by a placeholder.
        self.records_withheld = 0
        self._file: IO[bytes] | None = None
        self._mode = "wb" if overwrite else "ab"
        self._header_written = False
        # Chunks waiting for the next one to show whether their end starts a key.
        self._chunks = ChunkRedactor()
        self._chunk_key: tuple[int, int] | None = None
        self._held: deque[tuple[dict[str, Any], bytes]] = deque()

    @property
    def records_refused(self) -> int:
        """The former name of ``records_withheld`` (no record is refused any more)."""
        return self.records_withheld

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
        key = (info.iteration, info.attempt)
        if key != self._chunk_key:
            self._flush_chunks()
            self._chunk_key = key
        record = {
            "kind": "chunk",
            "iteration": info.iteration,
            "attempt": info.attempt,
            "t": round(info.elapsed, 6),
        }
        if self.redactor.allow_secrets:
            self._write_chunk(record, info.data, info.data)
            return
        self._held.append((record, info.data))
        for data in self._chunks.feed(info.data):
            self._write_chunk(*self._held.popleft(), data)

    def _flush_chunks(self) -> None:
        """Write the chunks held back (the stream ended, or something else happened)."""
        for data in self._chunks.flush():
            self._write_chunk(*self._held.popleft(), data)
        self._chunk_key = None

    def _write_chunk(self, record: dict[str, Any], wire: bytes, data: bytes) -> None:
        encoded: dict[str, Any] = encode_chunk(data)
        if data != wire:
            # The secret scan changed these bytes: say so, and where.
            where = [f"/{next(iter(encoded))}"]  # /text or /b64
            self.records_withheld += 1
            self._warn(record, where)
            encoded["redacted"] = True
            encoded["withheld"] = where
        if "text" in encoded:
            text = self.redactor.text(encoded["text"])
            if text != encoded["text"]:
                # Say so: these bytes are no longer the ones that crossed the wire.
                encoded["text"], encoded["redacted"] = text, True
        self._write({**record, **encoded})

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
        """Write what is held back and close the file (the next record reopens it)."""
        self._flush_chunks()
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
        if record["kind"] != "chunk" and self._held:
            self._flush_chunks()  # records stay in the order things happened
        if record["kind"] in DERIVED_KINDS:
            # Turns, results and edits repeat what the wire carried: same rules.
            record = self.redactor.strings(record)
        line = orjson.dumps(record)
        if (
            not self.redactor.allow_secrets
            and record["kind"] != "chunk"  # chunks went through the stream scan
            and may_hold_secret(line)
        ):
            # The last scan reads decoded strings: in the serialized line an escape
            # ("\\n", "\\t") right before a key would hide where the key starts.
            redacted, where = redact_json(record)
            if where:
                self.records_withheld += 1
                self._warn(record, where)
                line = orjson.dumps({**redacted, "withheld": where})
        handle = self._file if self._file is not None else self._open()
        handle.write(line + b"\n")
        handle.flush()
        self.records_written += 1

    def _warn(self, record: dict[str, Any], where: list[str]) -> None:
        # Say where, never what: the pointers are built from redacted keys.
        logger.warning(
            "a %s record (iteration %s) held something shaped like an API key at %s; it was "
            "written to %s with a placeholder there. Add a Redactor rule for it at its source "
            "(or allow_secrets=True for a local-only trace).",
            record["kind"],
            record.get("iteration", "-"),
            ", ".join(where),
            self.path,
        )
