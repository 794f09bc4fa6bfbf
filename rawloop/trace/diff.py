"""Where two wire traces differ, compared for meaning rather than bytes on disk.

Records are walked side by side in order. By default the comparison is
semantic: what a run asked and got, not how it travelled. Volatile fields
(timings, dates, request ids, the writing rawloop's version...), the header's
metadata and base URL, the host of request URLs and transport headers are
skipped: see ``DEFAULT_IGNORE``; ``wire=True`` compares them too (only
``WIRE_IGNORE`` is skipped then), and chunk boundaries with them. So a run
captured through ``rawloop record`` diffs equal to the run it replays. Request bodies and other records are compared as JSON
(key order ignored, ``1 == 1.0``, ``true != 1``), and redaction placeholders
(``[REDACTED:1a2b3c4d]``, keyed per process) all count as equal. The chunks
of one HTTP attempt are compared as one joined body: different chunk
boundaries are a note, not a difference, unless ``strict_chunks=True``.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from ..core.words import plural
from .format import Trace, chunk_bytes
from .runs import to_json

__all__ = ["DEFAULT_IGNORE", "MISSING", "WIRE_IGNORE", "Difference", "TraceDiff", "diff"]

#: Paths skipped by default, as ``fnmatch`` patterns over the paths ``Difference`` reports.
#: A pattern that matches a dict or list skips all of it.
DEFAULT_IGNORE: tuple[str, ...] = (
    "header.created",
    "header.rawloop",
    "header.metadata",  # who recorded it (rawloop record, replay --save, import)
    "header.base_url",  # where it went: a proxy or a fake server is another address
    "request.headers.host",
    "request.headers.connection",
    "request.headers.date",
    "request.headers.transfer-encoding",
    "request.headers.keep-alive",
    "request.headers.x-request-id",
    "request.headers.x-stainless-retry-count",
    "response.headers.connection",
    "response.headers.keep-alive",
    "response.headers.transfer-encoding",
    "response.headers.content-length",
    "response.headers.server",
    "response.t",
    "response.request_id",
    "response.headers.date",
    "response.headers.x-request-id",
    "response.headers.openai-processing-ms",
    "response.headers.cf-ray",
    "response.headers.x-envoy-upstream-service-time",
    "response.headers.x-ratelimit-remaining-*",
    "response.headers.x-ratelimit-reset-*",
    "response.headers.set-cookie",
    "request.headers.content-length",  # follows the body, which is compared as JSON
    "request.headers.user-agent",  # carries library versions
    "chunk.t",
    "result.duration",
    "end.duration",
)

#: What ``wire=True`` still skips: facts about the file, never on the wire.
WIRE_IGNORE: tuple[str, ...] = ("header.created", "header.rawloop")

#: How many differences ``every=True`` lists at most.
MAX_DIFFERENCES = 200


#: The order the summary lists record kinds in.
_KIND_ORDER = ("request", "response", "chunk", "error", "decision", "result", "edit", "end")


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


#: The value on the side of a difference that has no such record, key or index.
MISSING: Any = _Missing()

_PLACEHOLDER = re.compile(r"\[REDACTED:[0-9a-f]+\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class Difference:
    """The first place two traces differ.

    ``index`` counts compared records from the header (0), an HTTP attempt's
    chunks counting as one; ``line_a``/``line_b`` are the line numbers in
    each file (None on the side that has no such record). ``path`` is like
    ``request.body.input[2].output``; ``a`` and ``b`` are the values there
    (``MISSING`` where one side has none).
    """

    iteration: int | None
    index: int
    kind: str
    path: str
    a: Any
    b: Any
    line_a: int | None = None
    line_b: int | None = None
    attempt: int | None = None
    note: str = ""
    #: The RFC 6902 ops of an edit record on either side (None: that side has no edit here).
    patch_a: list[Any] | None = None
    patch_b: list[Any] | None = None

    def __str__(self) -> str:
        return self.describe("first difference")

    def describe(self, title: str) -> str:
        """The difference as lines of text, headed ``title``."""
        where = [f"record {self.index} ({self.kind}"]
        where.append(f"line {self.line_a} of A" if self.line_a else "not in A")
        where.append(f"line {self.line_b} of B)" if self.line_b else "not in B)")
        place = "" if self.iteration is None else f"iteration {self.iteration}"
        if place and self.attempt is not None and self.kind in ("request", "response", "chunk"):
            place += f" attempt {self.attempt}"
        head = ", ".join([p for p in (place, where[0]) if p]) + ", " + ", ".join(where[1:])
        lines = [f"{title}: {head}", f"  at {self.path}"]
        lines.append(f"  A: {_show(self.a)}")
        lines.append(f"  B: {_show(self.b)}")
        if self.note:
            lines.append(f"  ({self.note})")
        for side, patch in (("A", self.patch_a), ("B", self.patch_b)):
            if patch is not None:
                lines.append(f"  {side}'s edit ({len(patch)} op{'' if len(patch) == 1 else 's'}):")
                lines.extend(f"    {_describe_op(op)}" for op in patch)
        return "\n".join(lines)


@dataclass
class TraceDiff:
    """The outcome of ``diff``: ``equal``, the ``first`` difference, a summary and notes.

    ``differences`` holds every difference when ``diff(..., every=True)``
    (up to ``MAX_DIFFERENCES``), else just the first.
    """

    equal: bool
    first: Difference | None
    summary: list[str]
    notes: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    more: int = 0  # differences beyond MAX_DIFFERENCES, not listed

    def __str__(self) -> str:
        lines = ["traces are equal" if self.equal else "traces differ"]
        if len(self.differences) > 1:
            total = len(self.differences)
            for number, difference in enumerate(self.differences, start=1):
                lines.append(difference.describe(f"difference {number} of {total}"))
            if self.more:
                lines.append(f"... and {self.more} more differences not listed")
        elif self.first is not None:
            lines.append(str(self.first))
        lines.append("summary:")
        lines.extend(f"  {line}" for line in self.summary)
        if self.notes:
            lines.append("notes:")
            lines.extend(f"  {line}" for line in self.notes)
        return "\n".join(lines)


@dataclass
class _Unit:
    """One compared record: a record as it is, or all the chunks of one attempt."""

    kind: str
    line: int
    data: dict[str, Any]
    iteration: int | None
    attempt: int | None
    body: bytearray = field(default_factory=bytearray)
    sizes: list[int] = field(default_factory=list)


def _units(trace: Trace, wire: bool) -> list[_Unit]:
    units = [_Unit("header", 1, trace.header, None, None)]
    run = 0
    open_bodies: dict[tuple[int, int, int], _Unit] = {}
    for record in trace.records:
        data = record.data
        iteration = record.iteration if "iteration" in data else None
        attempt = record.attempt if "attempt" in data else None
        if record.kind == "header":
            run += 1
        if record.kind != "chunk":
            if record.kind == "request" and not wire and isinstance(data.get("url"), str):
                data = {**data, "url": _without_host(data["url"])}
            units.append(_Unit(record.kind, record.line, data, iteration, attempt))
            continue
        key = (run, record.iteration, record.attempt)
        unit = open_bodies.get(key)
        if unit is None:
            unit = open_bodies[key] = _Unit("chunk", record.line, {}, iteration, attempt)
            units.append(unit)
        piece = chunk_bytes(data)
        unit.body += piece
        unit.sizes.append(len(piece))
    return units


def diff(
    a: Trace,
    b: Trace,
    *,
    ignore: Collection[str] | None = None,
    strict_chunks: bool = False,
    wire: bool = False,
    every: bool = False,
) -> TraceDiff:
    """Compare two traces; the first difference (in record order) and a summary.

    ``ignore`` holds ``fnmatch`` patterns over difference paths (default
    ``DEFAULT_IGNORE``: timings, dates, request ids, versions, metadata,
    base URL, transport headers; ``WIRE_IGNORE`` with ``wire``). Unless
    ``wire``, request URLs are compared without their scheme and host.
    ``strict_chunks`` (implied by ``wire``) makes different chunk boundaries
    (same bytes) a difference. ``every`` lists every difference, not just the first.
    """
    if ignore is None:
        ignore = WIRE_IGNORE if wire else DEFAULT_IGNORE
    patterns = tuple(ignore)
    strict_chunks = strict_chunks or wire
    units_a, units_b = _units(a, wire), _units(b, wire)
    notes: list[str] = [f"A: {w}" for w in a.warnings] + [f"B: {w}" for w in b.warnings]
    found: list[Difference] = []
    more = 0
    for index in range(max(len(units_a), len(units_b))):
        left = units_a[index] if index < len(units_a) else None
        right = units_b[index] if index < len(units_b) else None
        for difference in _compare(index, left, right, a, b, patterns, strict_chunks, notes):
            if len(found) < MAX_DIFFERENCES:
                found.append(difference)
            else:
                more += 1
            if not every:
                break
        if found and not every:
            break
    first = found[0] if found else None
    return TraceDiff(first is None, first, _summary(a, b), notes, found, more)


def _without_host(url: str) -> str:
    """``https://api.openai.com/v1/responses`` -> ``/v1/responses``: where, not which server."""
    parts = urlsplit(url)
    return urlunsplit(("", "", parts.path, parts.query, parts.fragment)) if parts.netloc else url


def _patch(unit: _Unit | None) -> list[Any] | None:
    if unit is None or unit.kind != "edit":
        return None
    patch = unit.data.get("patch")
    return patch if isinstance(patch, list) else []


def _compare(
    index: int,
    left: _Unit | None,
    right: _Unit | None,
    a: Trace,
    b: Trace,
    ignore: tuple[str, ...],
    strict_chunks: bool,
    notes: list[str],
) -> Iterator[Difference]:
    """The differences between two compared records (a missing one is one difference)."""
    if left is None or right is None:
        present = left or right
        assert present is not None
        short, cut = ("A", a) if left is None else ("B", b)
        ending = "it has no end record: cut short?" if cut.end() is None else "it has fewer records"
        yield Difference(
            present.iteration,
            index,
            present.kind,
            present.kind,
            _unit_value(left),
            _unit_value(right),
            left.line if left else None,
            right.line if right else None,
            present.attempt,
            note=f"{short} ends after {plural(index, 'record')}; {ending}",
            patch_a=_patch(left),
            patch_b=_patch(right),
        )
        return

    def found(path: str, va: Any, vb: Any, note: str = "") -> Difference:
        return Difference(
            left.iteration if left.iteration is not None else right.iteration,
            index,
            left.kind,
            path,
            va,
            vb,
            left.line,
            right.line,
            left.attempt if left.attempt is not None else right.attempt,
            note,
            _patch(left),
            _patch(right),
        )

    if left.kind != right.kind:
        yield found(
            "kind",
            left.kind,
            right.kind,
            f"A has {_a(left.kind)} record where B has {_a(right.kind)}",
        )
        return
    if left.kind != "chunk":
        for hit in _walk(left.data, right.data, left.kind, ignore):
            yield found(*hit)
        return
    body_a, body_b = bytes(left.body), bytes(right.body)
    attempt = f"iteration {left.iteration} attempt {left.attempt}"
    if body_a != body_b:
        at = _first_byte(body_a, body_b)
        yield found(
            "chunk.body",
            _excerpt(body_a, at),
            _excerpt(body_b, at),
            f"the response bodies of {attempt} differ from byte {at} "
            f"(A {len(body_a)} bytes, B {len(body_b)} bytes)",
        )
        return
    if left.sizes != right.sizes:
        message = (
            f"the same {len(body_a)} body bytes of {attempt} came in different chunks "
            f"(A {len(left.sizes)}, B {len(right.sizes)})"
        )
        if strict_chunks:
            yield found("chunk.boundaries", _bounds(left.sizes), _bounds(right.sizes), message)
            return
        notes.append(message)


def _walk(a: Any, b: Any, path: str, ignore: tuple[str, ...]) -> Iterator[tuple[str, Any, Any]]:
    """Each (path, a, b) where two JSON values differ, in order, skipping ignored paths."""
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in ignore):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [*a, *(k for k in b if k not in a)]
        # Headers after everything else: a body difference explains a header one.
        keys.sort(key=lambda k: k == "headers")
        for key in keys:
            yield from _walk(a.get(key, MISSING), b.get(key, MISSING), _join(path, key), ignore)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            va = a[i] if i < len(a) else MISSING
            vb = b[i] if i < len(b) else MISSING
            yield from _walk(va, vb, f"{path}[{i}]", ignore)
        return
    if not _same(a, b):
        yield (path, a, b)


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):  # JSON true is not 1
        return type(a) is type(b) and a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b or _PLACEHOLDER.sub("[REDACTED]", a) == _PLACEHOLDER.sub("[REDACTED]", b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if _NAME.fullmatch(key) else f"{path}[{orjson.dumps(key).decode()}]"


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _first_byte(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _excerpt(body: bytes, at: int, before: int = 20, after: int = 60) -> str:
    if at >= len(body):
        return f"<end of body at byte {len(body)}>"
    start = max(0, at - before)
    text = body[start : at + after].decode(errors="replace")
    return ("..." if start else "") + text + ("..." if at + after < len(body) else "")


def _bounds(sizes: list[int], limit: int = 20) -> list[int]:
    return sizes if len(sizes) <= limit else [*sizes[:limit], -1]


def _unit_value(unit: _Unit | None) -> Any:
    if unit is None:
        return MISSING
    if unit.kind == "chunk":
        return f"<{len(unit.sizes)} chunks, {len(unit.body)} bytes>"
    return unit.data


def _describe_op(op: Any) -> str:
    if not isinstance(op, dict):
        return _show(op)
    text = f"{op.get('op', '?')} {op.get('path', '')}"
    if "from" in op:
        text += f" from {op['from']}"
    if "value" in op:
        text += f" = {_show(op['value'])}"
    return text


def _show(value: Any, limit: int = 300) -> str:
    return "<absent>" if value is MISSING else to_json(value, limit)


# -- the summary ---------------------------------------------------------------------------------


def _summary(a: Trace, b: Trace) -> list[str]:
    count_a = Counter(r.kind for r in a.records)
    count_b = Counter(r.kind for r in b.records)
    kinds = [k for k in _KIND_ORDER if k in count_a or k in count_b]
    kinds += sorted((set(count_a) | set(count_b)) - set(kinds))
    per_kind = ", ".join(f"{k} {count_a[k]}/{count_b[k]}" for k in kinds)
    lines = [
        f"records (A/B): {len(a.records)}/{len(b.records)}" + (f": {per_kind}" if per_kind else ""),
        f"iterations (A/B): {_iterations(a)}/{_iterations(b)}",
        f"stop reason: A {_stop(a)}, B {_stop(b)}",
    ]
    text_a, text_b = _texts(a), _texts(b)
    size_a, size_b = sum(map(len, text_a)), sum(map(len, text_b))
    if text_a == text_b:
        lines.append(f"text: equal ({size_a} chars)")
    else:
        lines.append(f"text: differs (A {size_a} chars, B {size_b} chars)")
    return lines


def _iterations(trace: Trace) -> int:
    return len({r.iteration for r in trace.records if "iteration" in r.data})


def _stop(trace: Trace) -> str:
    end = trace.end()
    if end is None:
        return "none (no end record: cut short)"
    return str(end.get("stop_reason"))


def _texts(trace: Trace) -> list[str]:
    """The assistant text of each decision, in order."""
    return [str(r.data["turn"].get("text") or "") for r in trace.of_kind("decision")]
