"""Turn recorded HTTP traffic into rawloop traces: VCR.py cassettes and HAR files.

Many projects already keep recordings of their OpenAI calls: VCR.py and
pytest-recording cassettes (YAML), or HAR 1.2 files saved from a browser or a
proxy (JSON). ``import_file`` reads one and writes the streaming calls it holds
as a rawloop trace, so ``rawloop replay`` / ``rawloop.replay`` can feed them
through the real loop:

* the header takes the dialect from the URL path (``/responses`` or
  ``/chat/completions``), the model from the first request body, and the API
  root from the URL; its metadata says where the trace came from and that
  **chunk boundaries are lost** (cassettes store the body whole, so each
  response is one ``chunk`` record: use ``chunking="hostile"`` to test splits);
* each OpenAI streaming call becomes ``request`` / ``response`` / ``chunk``
  records and a ``decision`` (the body parsed by ``rawloop.parse.StreamParser``),
  iterations numbered in order; a non-2xx answer is a failed attempt of the
  same iteration (``error`` record), as the loop's retries would record it;
* tool results are inferred from the next request (its ``function_call_output``
  items or ``role: tool`` messages) and written as ``result`` records, which is
  where a replay's tool runner looks for them;
* other interactions (other endpoints, non-streaming calls, another dialect)
  are skipped, with one ``CassetteImportWarning`` listing them.

Credentials never reach the trace: headers go through
``rawloop.redact.redact_headers`` and every record is scanned for anything
shaped like an API key; if one remains (in a body, a URL) the import is refused
with ``SecretInTraceError`` naming the interaction, never the key.

An imported trace replays identically when the recording is a tool loop as
rawloop runs it: each request is the previous one plus the model's output items
exactly as streamed and one tool output per call. Clients that rebuild the
history differently (dropping item ids, splitting the assistant message) make
a replay diverge at that request; the importer says so in ``Trace.warnings``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import gzip
import json
import sys
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from .._version import __version__
from ..core.conversation import conversation, tool_outputs
from ..core.dialect import api_root, dialect_of_path
from ..core.errors import SecretInTraceError, StreamError, TraceError
from ..core.jsondiff import first_difference
from ..core.parse import StreamParser
from ..core.redact import SECRET_PATTERN, redact_headers
from ..core.turn import Turn
from ..loop.state import add_usage
from ..replay.replayer import DEFAULT_VOLATILE
from ..trace.format import FORMAT, FORMAT_VERSION, Record, Trace, encode_chunk

__all__ = [
    "CassetteError",
    "CassetteImportWarning",
    "Interaction",
    "command",
    "import_file",
    "read_interactions",
    "to_trace",
    "write",
]


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


# -- reading the file ------------------------------------------------------------------


def read_interactions(path: str | Path) -> tuple[str, list[Interaction]]:
    """The file's kind (``"vcr"`` or ``"har"``) and every interaction in it, in order.

    Raises ``CassetteError`` for a file that is not YAML or JSON, is neither a
    VCR cassette nor a HAR file, holds no interactions, or has one of the
    wrong shape (the message names the file and the interaction's field).
    """
    path = Path(path)
    document = _load_document(path)
    if isinstance(document, dict) and "log" in document:
        log = document["log"]
        if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
            raise CassetteError(f"{path}: not a HAR file: 'log.entries' is not a list")
        items = log["entries"]
        kind, parse_one = "har", _har_entry
    elif isinstance(document, dict) and "interactions" in document:
        if not isinstance(document["interactions"], list):
            raise CassetteError(
                f"{path}: not a VCR cassette: 'interactions' is {_kind(document['interactions'])},"
                " not a list"
            )
        items = document["interactions"]
        kind, parse_one = "vcr", _vcr_interaction
    else:
        found = (
            f"top-level keys {sorted(map(str, document))[:8]}"
            if isinstance(document, dict)
            else _kind(document)
        )
        raise CassetteError(
            f"{path}: neither a VCR cassette (a top-level 'interactions' list) nor a HAR file "
            f"('log.entries'): found {found}"
        )
    if not items:
        raise CassetteError(f"{path}: the {_KIND_NAMES[kind]} holds no interactions")
    where = "log.entries" if kind == "har" else "interactions"
    return kind, [parse_one(i, item, f"{path}: {where}[{i}]") for i, item in enumerate(items)]


_KIND_NAMES = {"vcr": "VCR cassette", "har": "HAR file"}


def _load_document(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CassetteError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CassetteError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); "
            "expected a YAML cassette or a HAR (JSON) file"
        ) from None
    if not text.strip():
        raise CassetteError(f"{path}: the file is empty")
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CassetteError(
                f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
    yaml = _yaml(path)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # a safe loader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CassetteError(f"{path}: not valid YAML or JSON ({where}{problem})") from None


def _yaml(path: Path) -> Any:
    try:
        import yaml
    except ModuleNotFoundError:
        raise CassetteError(
            f"{path}: reading YAML cassettes needs PyYAML: pip install 'rawloop[import]' "
            "(or pip install pyyaml)"
        ) from None
    return yaml


def _vcr_interaction(index: int, item: Any, where: str) -> Interaction:
    item = _need(item, dict, where)
    request = _need(item.get("request"), dict, f"{where}.request")
    response = _need(item.get("response"), dict, f"{where}.response")
    method = _need(request.get("method"), str, f"{where}.request.method")
    uri = _need(request.get("uri", request.get("url")), str, f"{where}.request.uri")
    if "parsed_body" in request:  # pydantic-ai's serializer keeps JSON bodies parsed
        request_body: Any = request["parsed_body"]
    else:
        request_body = request.get("body")
        if isinstance(request_body, dict) and "string" in request_body:
            request_body = request_body["string"]
    status = response.get("status")
    code = status.get("code") if isinstance(status, dict) else status
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    code = _need(code, int, f"{where}.response.status.code")
    headers = _vcr_headers(response.get("headers"), f"{where}.response.headers")
    body = response.get("body")
    if isinstance(body, dict):
        if "string" in body:
            body = body["string"]
        elif "parsed_body" in body:
            body = json.dumps(body["parsed_body"])
        else:
            raise CassetteError(f"{where}.response.body has neither 'string' nor 'parsed_body'")
    return Interaction(
        index,
        method.upper(),
        uri,
        _vcr_headers(request.get("headers"), f"{where}.request.headers"),
        request_body,
        code,
        headers,
        _decoded(_as_bytes(body, f"{where}.response.body"), headers),
    )


def _vcr_headers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    out: dict[str, str] = {}
    for name, values in _need(value, dict, where).items():
        if isinstance(values, list):
            if values:  # a header sent twice keeps its last value, as traces store it
                out[str(name).lower()] = str(values[-1])
        elif values is not None:
            out[str(name).lower()] = str(values)
    return out


def _har_entry(index: int, item: Any, where: str) -> Interaction:
    item = _need(item, dict, where)
    request = _need(item.get("request"), dict, f"{where}.request")
    response = _need(item.get("response"), dict, f"{where}.response")
    method = _need(request.get("method"), str, f"{where}.request.method")
    url = _need(request.get("url"), str, f"{where}.request.url")
    post = request.get("postData")
    request_body: Any = None
    if isinstance(post, dict) and post.get("text") is not None:
        request_body = _har_text(post, f"{where}.request.postData")
    code = _need(response.get("status"), int, f"{where}.response.status")
    content = _need(response.get("content", {}), dict, f"{where}.response.content")
    body = _har_text(content, f"{where}.response.content") if "text" in content else b""
    headers = _har_headers(response.get("headers"), f"{where}.response.headers")
    timings = item.get("timings") if isinstance(item.get("timings"), dict) else {}
    ttfb = sum(float(timings.get(k) or 0) for k in ("send", "wait") if (timings.get(k) or 0) > 0)
    total = item.get("time")
    return Interaction(
        index,
        method.upper(),
        url,
        _har_headers(request.get("headers"), f"{where}.request.headers"),
        request_body,
        code,
        headers,
        body,  # HAR content.text is already decoded from any content-encoding
        elapsed=float(total) / 1000 if isinstance(total, (int, float)) and total >= 0 else None,
        ttfb=ttfb / 1000 if timings else None,
    )


def _har_text(part: dict[str, Any], where: str) -> bytes:
    text: str = _need(part.get("text"), str, f"{where}.text")
    if part.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CassetteError(f"{where}.text says base64 but is not valid base64") from None
    return text.encode()


def _har_headers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    out: dict[str, str] = {}
    for i, header in enumerate(_need(value, list, where)):
        header = _need(header, dict, f"{where}[{i}]")
        name = _need(header.get("name"), str, f"{where}[{i}].name")
        if not name.startswith(":"):  # HTTP/2 pseudo-headers are not headers
            out[name.lower()] = str(header.get("value", ""))
    return out


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


# -- building the trace ----------------------------------------------------------------


def import_file(path: str | Path) -> Trace:
    """Read a VCR.py / pytest-recording cassette or a HAR 1.2 file as a rawloop trace.

    The trace is in memory (``Trace.path`` names the source); save it with
    ``write``. Skipped interactions and anything that will make a replay
    diverge are listed in ``Trace.warnings`` and emitted as one
    ``CassetteImportWarning``. Raises ``CassetteError`` for an unreadable or
    malformed file or one without an OpenAI streaming call, and
    ``SecretInTraceError`` when an API key would reach the trace.
    """
    kind, interactions = read_interactions(path)
    trace = to_trace(interactions, source=str(path), kind=kind)
    if trace.warnings:
        warnings.warn(
            f"importing {path}:\n  " + "\n  ".join(trace.warnings),
            CassetteImportWarning,
            stacklevel=2,
        )
    return trace


def command(
    path: str | Path,
    output: str | Path | None = None,
    *,
    check: bool = False,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """``rawloop import FILE [-o TRACE] [--check]``: import a recording, write or print the trace.

    Without ``output`` the trace goes to standard output. Warnings go to
    ``err``. ``check`` replays the imported trace at once and reports the
    verdict. Returns the exit status: 0, or 1 when the check diverged (2 for
    any other replay failure).
    """
    out, err = out or sys.stdout, err or sys.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CassetteImportWarning)
        trace = import_file(path)
    for note in trace.warnings:
        err.write(f"rawloop: warning: {note}\n")
    if output is None:
        out.write(trace.dump().decode())
    else:
        write(trace, output)
        trace.path = str(output)
        kept = trace.header["metadata"]["interactions"]
        out.write(
            f"wrote {output}: {len(trace.exchanges())} {trace.dialect} call(s) from "
            f"{path} (interactions {', '.join(map(str, kept))}), one chunk each\n"
        )
    if not check:
        return 0
    import anyio

    from ..replay.replayer import replay

    report = anyio.run(replay, trace)
    (out if output is not None else err).write(f"replay of the imported trace: {report}\n")
    return {"identical": 0, "diverged": 1}.get(report.verdict, 2)


def write(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as JSON Lines to ``path`` (gzip-compressed when it ends in ``.gz``)."""
    path = Path(path)
    data = trace.dump()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def to_trace(
    interactions: Iterable[Interaction], *, source: str = "<recording>", kind: str = "vcr"
) -> Trace:
    """Build a trace from interactions (see ``import_file``)."""
    notes: list[str] = []
    calls, skipped = _select(list(interactions))
    if skipped:
        notes.append(
            f"skipped {len(skipped)} interaction(s) that are not OpenAI streaming calls: "
            + "; ".join(skipped)
        )
    if not calls:
        raise CassetteError(
            f"{source}: no OpenAI streaming call to import (a POST to .../responses or "
            ".../chat/completions answered with text/event-stream)"
            + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
        )
    dialect = dialect_of_path(calls[0].interaction.url) or "responses"
    _parse_turns(calls, dialect, notes)
    _infer_results(calls, dialect, notes)
    _check_chain(calls, dialect, notes)
    first = calls[0]
    header: dict[str, Any] = {
        "kind": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "rawloop": __version__,
        "dialect": dialect,
        "base_url": api_root(first.interaction.url),
        "model": str(first.body.get("model", "")),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "metadata": {
            "imported_from": source,
            "source_format": kind,
            "chunk_boundaries": "lost",
            "interactions": [c.interaction.index for c in calls],
        },
    }
    if notes:  # kept with the trace: whoever replays it later should know
        header["metadata"]["import_warnings"] = list(notes)
    records = _records(calls)
    _scan_secrets([header, *records], calls, source)
    return Trace(
        header,
        [Record(r["kind"], line, r) for line, r in enumerate(records, start=2)],
        source,
        notes,
    )


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _select(interactions: list[Interaction]) -> tuple[list[_Call], list[str]]:
    calls: list[_Call] = []
    skipped: list[str] = []
    dialect: str | None = None
    for item in interactions:
        reason, body = _why_not(item)
        this = dialect_of_path(item.url)
        if reason is None and dialect is not None and this != dialect:
            reason = f"a {this} call in a {dialect} recording"
        if reason is not None:
            skipped.append(f"{item.label} ({reason})")
            continue
        dialect = dialect or this
        assert body is not None
        calls.append(_Call(item, body))
    return calls, skipped


def _why_not(item: Interaction) -> tuple[str | None, dict[str, Any] | None]:
    if item.method != "POST":
        return "not a POST", None
    if dialect_of_path(item.url) is None:
        return "not /responses or /chat/completions", None
    body = item.request_body
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return "the request body is not JSON", None
    if not isinstance(body, dict):
        return "no JSON object request body", None
    if item.status < 300:
        if not item.response_body.strip():
            # Browsers often leave streamed bodies out of the HAR files they save.
            return "the response body was not recorded", None
        content_type = item.response_headers.get("content-type", "")
        if not (content_type.startswith("text/event-stream") or _looks_like_sse(item)):
            return f"not streamed: the response is {content_type or 'not text/event-stream'}", None
    elif body.get("stream") is not True:
        return f"a non-streaming request answered {item.status}", None
    return None, body


def _looks_like_sse(item: Interaction) -> bool:
    head = item.response_body.lstrip()[:6]
    return head.startswith((b"data:", b"event:", b":"))


def _parse_turns(calls: list[_Call], dialect: str, notes: list[str]) -> None:
    iteration = attempt = 0
    for number, call in enumerate(calls):
        call.iteration, call.attempt = iteration, attempt
        if call.interaction.status >= 300:
            attempt += 1  # the next call retries this iteration
            continue
        parser = StreamParser(dialect)
        try:
            parser.feed(call.interaction.response_body)
            call.turn = parser.close()
        except StreamError as exc:
            call.error = exc
            rest = calls[number + 1 :]
            if rest:
                notes.append(
                    f"{call.interaction.label}: the stream does not parse ({exc}); the run ends "
                    f"there and the {len(rest)} later call(s) are left out"
                )
                del calls[number + 1 :]
            return
        iteration, attempt = iteration + 1, 0


def _infer_results(calls: list[_Call], dialect: str, notes: list[str]) -> None:
    for call, following in zip(calls, [*calls[1:], None]):
        turn = call.turn
        if turn is None or not turn.calls:
            continue
        if following is None:
            notes.append(
                f"{call.interaction.label}: the model called "
                f"{', '.join(c.name for c in turn.calls)} and the recording ends there: no tool "
                "output to import, so a replay stops with a divergence at that tool call"
            )
            continue
        outputs = tool_outputs(dialect, conversation(dialect, following.body))
        missing = []
        for fc in turn.calls:
            if fc.call_id not in outputs:
                missing.append(fc.call_id)
                continue
            call.results.append(
                {
                    "kind": "result",
                    "iteration": call.iteration,
                    "call_id": fc.call_id,
                    "name": fc.name,
                    "arguments": fc.arguments,
                    "output": outputs[fc.call_id],
                    "error": None,
                    "duration": 0.0,
                }
            )
        if missing:
            notes.append(
                f"{following.interaction.label}: the request carries no tool output for call(s) "
                f"{', '.join(missing)}; a replay cannot answer them"
            )


def _check_chain(calls: list[_Call], dialect: str, notes: list[str]) -> None:
    """Say where a replay will part from the recording: requests rawloop would not send."""
    key = "messages" if dialect == "chat" else "input"
    if dialect == "chat" and "stream_options" not in calls[0].body:
        notes.append(
            f"{calls[0].interaction.label}: the request has no stream_options; rawloop sends "
            '{"include_usage": true}, so a replay diverges at iteration 0 (stream_options)'
        )
    for call, following in pairwise(calls):
        turn = call.turn
        if turn is None:
            continue  # a failed attempt: the next one repeats the request
        if not turn.calls:
            notes.append(
                f"{following.interaction.label}: sent after a turn that called no tool; a "
                "replay ends at that turn, so this and later calls are reported unconsumed"
            )
            return
        expected = dict(call.body)
        recorded = expected.get(key)
        history: list[Any] = recorded if isinstance(recorded, list) else []
        outputs = {r["call_id"]: r["output"] for r in call.results}
        answers = [
            {"role": "tool", "tool_call_id": c.call_id, "content": outputs.get(c.call_id)}
            if dialect == "chat"
            else {
                "type": "function_call_output",
                "call_id": c.call_id,
                "output": outputs.get(c.call_id),
            }
            for c in turn.calls
        ]
        expected[key] = [*history, *turn.output, *answers]
        # Recorded first, as a replay compares them, so the path is the one it will report.
        found = first_difference(following.body, expected, DEFAULT_VOLATILE)
        if found is not None:
            notes.append(
                f"{following.interaction.label}: the request is not the one rawloop's loop "
                f"sends after the previous turn (recorded != rawloop at {found}); a replay "
                f"diverges at iteration {following.iteration}"
            )


def _records(calls: list[_Call]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    usage: dict[str, int] = {}
    duration = 0.0
    iterations = 0
    last: _Call | None = None
    for number, call in enumerate(calls):
        item, where = call.interaction, {"iteration": call.iteration, "attempt": call.attempt}
        records.append(
            {
                "kind": "request",
                **where,
                "method": item.method,
                "url": item.url,
                "headers": redact_headers(item.request_headers),
                "body": call.body,
            }
        )
        ttfb = round(item.ttfb, 6) if item.ttfb is not None else 0.0
        elapsed = round(item.elapsed, 6) if item.elapsed is not None else ttfb
        duration += item.elapsed or 0.0
        records.append(
            {
                "kind": "response",
                **where,
                "status": item.status,
                "headers": redact_headers(item.response_headers),
                "request_id": item.response_headers.get("x-request-id"),
                "t": ttfb,
            }
        )
        if item.status >= 300:
            snippet = item.response_body[:300].decode(errors="replace")
            records.append(
                {
                    "kind": "error",
                    **where,
                    "where": "request",
                    "type": "APIStatusError",
                    "message": f"HTTP {item.status}: {snippet}".strip(),
                    "will_retry": number + 1 < len(calls),
                    "delay": 0.0,
                }
            )
            continue
        if item.response_body:
            records.append(
                {"kind": "chunk", **where, "t": elapsed, **encode_chunk(item.response_body)}
            )
        if call.error is not None:
            records.append(
                {
                    "kind": "error",
                    **where,
                    "where": "request",
                    "type": type(call.error).__name__,
                    "message": str(call.error),
                    "will_retry": False,
                    "delay": 0.0,
                }
            )
            continue
        assert call.turn is not None
        records.append(
            {"kind": "decision", "iteration": call.iteration, "turn": call.turn.to_dict()}
        )
        records.extend(call.results)
        iterations += 1
        last = call
        add_usage(usage, call.turn.usage)
    records.append(
        {
            "kind": "end",
            "stop_reason": _stop_reason(calls, last),
            "iterations": iterations,
            "usage": usage,
            "duration": round(duration, 6),
            "error": _end_error(calls),
        }
    )
    return records


def _stop_reason(calls: list[_Call], last: _Call | None) -> str:
    final = calls[-1]
    if final.error is not None or final.turn is None or last is None:
        return "error"
    if final.turn.calls:
        return "max_iterations"
    return "incomplete" if final.turn.status == "incomplete" else "completed"


def _end_error(calls: list[_Call]) -> str | None:
    final = calls[-1]
    if final.error is not None:
        return f"{type(final.error).__name__}: {final.error}"
    if final.turn is None:
        return f"APIStatusError: HTTP {final.interaction.status}"
    return None


def _scan_secrets(records: list[dict[str, Any]], calls: list[_Call], source: str) -> None:
    """Refuse the import when anything shaped like an API key would reach the trace."""
    labels = {(c.iteration, c.attempt): c.interaction.label for c in calls}
    for record in records:
        line = orjson.dumps(record).decode(errors="replace")
        if SECRET_PATTERN.search(line):
            key = (int(record.get("iteration", 0)), int(record.get("attempt", 0)))
            where = (
                "the header"
                if record["kind"] == "header"
                else f"interaction {labels.get(key, '?')} ({record['kind']} record)"
            )
            # Say where, never what: the message must not carry the secret.
            raise SecretInTraceError(
                f"{source}: {where} still holds something shaped like an API key after header "
                "redaction; nothing was imported. Remove or replace it in the recording first."
            )
