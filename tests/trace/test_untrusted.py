"""A trace is untrusted input: odd field values give a typed error or a rendering, never a traceback.

Every reader of this package (timeline, JSON, raw, HTML page and diff page,
diff, HAR and OTLP export) is fed bundled traces with fields replaced by
values of the wrong type, markup and escape sequences.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawloop.core.errors import RawloopError
from rawloop.trace.diff import diff
from rawloop.trace.export import to_har, to_otlp
from rawloop.trace.format import Trace
from rawloop.trace.html_diff import diff_page
from rawloop.trace.html_page import show_page
from rawloop.trace.show import as_json, raw
from rawloop.trace.timeline import render

TRACES = Path(__file__).parents[2] / "traces"
BASE = [
    orjson.loads(line)
    for name in ("retry-after-cut.jsonl", "breakpoint-edit.jsonl")
    for line in (TRACES / name).read_bytes().splitlines()
]
BASE = [BASE[0], *(r for r in BASE[1:] if r["kind"] != "header")]
FIELDS = (
    "status", "t", "turn", "output", "headers", "body", "error", "usage", "patch", "delay",
    "will_retry", "name", "duration", "url", "method", "iteration", "stop_reason", "arguments",
)  # fmt: skip
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False),
    st.sampled_from(["", "<script>x</script>", "\x1b[2J", "sk-", "</pre>"]),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    st.dictionaries(st.sampled_from(["a", "op", "path", "value", "calls"]), st.none(), max_size=2),
)
MUTATION = st.tuples(st.integers(1, len(BASE) - 1), st.sampled_from(FIELDS), ODD, st.booleans())


def mutated(changes: list[tuple[int, str, Any, bool]]) -> bytes:
    records = [dict(r) for r in BASE]
    for index, name, value, into_turn in changes:
        record = records[index]
        if into_turn and isinstance(record.get("turn"), dict):
            record["turn"] = {**record["turn"], name: value}
        else:
            record[name] = value
    return b"\n".join(orjson.dumps(r) for r in records)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_every_reader_survives_odd_fields(changes: list[tuple[int, str, Any, bool]]) -> None:
    try:
        trace = Trace.parse(mutated(changes), "odd.jsonl")
    except RawloopError:
        return  # refused, naming the line: fine
    other = Trace.load(TRACES / "tool-roundtrip.jsonl")
    readers = (
        lambda: render(trace, full=True, width=40),
        lambda: as_json(trace),
        lambda: raw(trace),
        lambda: show_page(trace, prices={"gpt-5.5": (1.0, 2.0)}),
        lambda: diff_page(trace, other, diff(trace, other, every=True)),
        lambda: to_har(trace),
        lambda: to_otlp(trace, content=True),
    )
    for read in readers:
        with contextlib.suppress(RawloopError):
            read()
    page = show_page(trace)
    assert "<script>x</script>" not in page and "\x1b" not in render(trace)
