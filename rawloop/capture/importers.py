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
  records and a ``decision`` (the body parsed by ``rawloop.core.parse.StreamParser``),
  iterations numbered in order; a non-2xx answer is a failed attempt of the
  same iteration (``error`` record), as the loop's retries would record it;
* tool results are inferred from the next request (its ``function_call_output``
  items or ``role: tool`` messages) and written as ``result`` records, which is
  where a replay's tool runner looks for them;
* other interactions (other endpoints, non-streaming calls, another dialect)
  are skipped, with one ``CassetteImportWarning`` listing them.

Credentials never reach the trace: headers go through
``rawloop.core.redact.redact_headers`` and every record is scanned for anything
shaped like an API key; if one remains (in a body, a URL) the import is refused
with ``SecretInTraceError`` naming the interaction, never the key.

An imported trace replays identically when the recording is a tool loop as
rawloop runs it: each request is the previous one plus the model's output items
exactly as streamed and one tool output per call. Clients that rebuild the
history differently (dropping item ids, splitting the assistant message) make
a replay diverge at that request; the importer says so in ``Trace.warnings``.
"""

from __future__ import annotations

import gzip
import json
import sys
import warnings
from pathlib import Path
from typing import IO, Any

from ..trace.format import Trace
from .import_build import to_trace
from .import_common import CassetteError, CassetteImportWarning, Interaction, _kind
from .import_har import har_entry
from .import_vcr import vcr_interaction, yaml_module

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
        kind, parse_one = "har", har_entry
    elif isinstance(document, dict) and "interactions" in document:
        if not isinstance(document["interactions"], list):
            raise CassetteError(
                f"{path}: not a VCR cassette: 'interactions' is {_kind(document['interactions'])},"
                " not a list"
            )
        items = document["interactions"]
        kind, parse_one = "vcr", vcr_interaction
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
    yaml = yaml_module(path)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # a safe loader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CassetteError(f"{path}: not valid YAML or JSON ({where}{problem})") from None


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
            f"wrote {output}: {_calls(len(trace.exchanges()), trace.dialect)} from "
            f"{path} (interactions {', '.join(map(str, kept))}), one chunk each\n"
        )
    if not check:
        return 0
    import anyio

    from ..replay.replayer import replay

    report = anyio.run(replay, trace)
    (out if output is not None else err).write(f"replay of the imported trace: {report}\n")
    return {"identical": 0, "diverged": 1}.get(report.verdict, 2)


def _calls(count: int, dialect: str) -> str:
    return f"{count} {dialect} call" + ("" if count == 1 else "s")


def write(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` as JSON Lines to ``path`` (gzip-compressed when it ends in ``.gz``)."""
    path = Path(path)
    data = trace.dump()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path
