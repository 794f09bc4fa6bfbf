"""Fuzzing: mutated streams and traces meet only rawloop's typed errors.

Three targets, each fed mutations of the real inputs bundled with the project:

* ``parse_stream`` (both dialects) on corpus streams with bytes flipped, cut,
  inserted or deleted, and event fields given other JSON types: a Turn or a
  ``StreamError``, and the same result under any chunking;
* the trace reader on bundled traces with fields of other types, keys dropped,
  bytes flipped, lines cut (plain and gzipped): a ``Trace`` whose accessors work,
  or a ``TraceError``;
* the CLI (``show``, ``show --json``, ``diff``, ``to-test``, ``replay``) run in
  process on those traces: exit 0, 1 or 2, never a traceback and never the
  last-resort "internal error" line (that line is a bug report waiting to happen).

Bounded for CI (a few seconds each); ``RAWLOOP_FUZZ_LONG=1`` runs many more examples.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawloop.cli.main import main
from rawloop.core.errors import RawloopError, StreamError, TraceError
from rawloop.core.parse import StreamParser
from rawloop.trace.format import Trace, chunk_bytes

ROOT = Path(__file__).parent
CORPUS = sorted((ROOT / "corpus").glob("*.sse"))
TRACES = sorted((ROOT.parent / "traces").glob("*.jsonl"))

LONG = os.environ.get("RAWLOOP_FUZZ_LONG") == "1"

# A cut last line is read with a RuntimeWarning (a defined recovery, not an error).
pytestmark = pytest.mark.filterwarnings("ignore:.*cut short:RuntimeWarning")


def budget(ci: int, long: int = 0) -> Any:
    """Hypothesis settings: ``ci`` examples in CI, ``long`` (default 40x) with RAWLOOP_FUZZ_LONG=1."""
    return settings(
        max_examples=(long or ci * 40) if LONG else ci,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not LONG,  # CI runs the same examples every time
    )


# -- mutations ---------------------------------------------------------------------------------

#: Values of every JSON type, and the edge cases of each, to put where a field was.
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**53,
    1.5,
    "",
    "x\ny",
    "\x1b[31m",
    '"""',
    [],
    [None],
    {},
    {"a": []},
]

#: Bytes that mean something to an event stream or to JSON.
TOKENS = [b"\n", b"\r", b"\r\n", b"\n\n", b"data: ", b"event: ", b":", b'"', b"{", b"}", b"\xff"]
TOKENS += [b"\xc3", b"[DONE]", b"id: ", b"retry: 1", b"\x00", b"\xef\xbb\xbf"]

# One mutation: (what, where, a seed or a value index).
Mutation = tuple[str, int, int]
mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert", "delete", "json"]),
        st.integers(min_value=0),
        st.integers(min_value=0, max_value=2**16),
    ),
    min_size=1,
    max_size=4,
)


def _walk_and_replace(value: Any, rng: random.Random) -> Any:
    """``value`` with one nested field given another JSON type, or dropped."""
    path: list[Any] = []
    node = value
    while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        if not isinstance(node[key], (dict, list)) or not node[key]:
            break
        path.append(key)
        node = node[key]
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        if rng.random() < 0.25:
            del node[key]
        else:
            node[key] = rng.choice(ODD_VALUES)
    elif isinstance(node, list) and node:
        node[rng.randrange(len(node))] = rng.choice(ODD_VALUES)
    return value


def mutate_json_line(line: bytes, rng: random.Random) -> bytes:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    return json.dumps(_walk_and_replace(value, rng)).encode()


def mutate(data: bytes, steps: list[Mutation], *, json_prefix: bytes = b"") -> bytes:
    """Apply ``steps`` to ``data``. ``json`` steps change a line that holds JSON
    (after ``json_prefix``, e.g. ``data: `` in a stream)."""
    for what, where, seed in steps:
        if what == "json":
            lines = data.split(b"\n")
            candidates = [i for i, line in enumerate(lines) if line.startswith(json_prefix + b"{")]
            if candidates:
                i = candidates[where % len(candidates)]
                body = mutate_json_line(lines[i][len(json_prefix) :], random.Random(seed))
                lines[i] = json_prefix + body
                data = b"\n".join(lines)
            continue
        at = where % (len(data) + 1)
        if what == "flip" and data:
            at %= len(data)
            data = data[:at] + bytes([data[at] ^ (1 << seed % 8)]) + data[at + 1 :]
        elif what == "cut":
            data = data[:at]
        elif what == "insert":
            data = data[:at] + TOKENS[seed % len(TOKENS)] + data[at:]
        elif what == "delete":
            data = data[:at] + data[at + 1 + seed % 64 :]
    return data


def split(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *marks], [*marks, len(data)])]


# -- parse_stream ------------------------------------------------------------------------------


def parse_outcome(chunks: list[bytes], dialect: str) -> Any:
    parser = StreamParser(dialect)
    try:
        for chunk in chunks:
            parser.feed(chunk)
        return ("turn", parser.close().to_dict())
    except StreamError as exc:
        assert exc.partial is not None, f"{type(exc).__name__} without its partial turn"
        return ("error", type(exc).__name__, exc.offset, getattr(exc, "event_index", None))


@budget(100)
@given(
    st.sampled_from(CORPUS),
    mutations,
    st.lists(st.integers(min_value=0), max_size=16),
)
def test_parse_stream_on_mutated_streams_is_typed_and_chunking_blind(
    path: Path, steps: list[Mutation], points: list[int]
) -> None:
    dialect = "chat" if path.name.startswith("chat-") else "responses"
    data = mutate(path.read_bytes(), steps, json_prefix=b"data: ")
    whole = parse_outcome([data], dialect)
    assert parse_outcome(split(data, points), dialect) == whole
    if len(data) < 4096:
        assert parse_outcome([data[i : i + 1] for i in range(len(data))], dialect) == whole


@budget(150)
@given(st.sampled_from(["responses", "chat"]), st.binary(max_size=400), st.lists(st.integers(0)))
def test_parse_stream_on_arbitrary_bytes(dialect: str, data: bytes, points: list[int]) -> None:
    whole = parse_outcome([data], dialect)
    assert parse_outcome(split(data, points), dialect) == whole


# -- the trace reader --------------------------------------------------------------------------


def use(trace: Trace) -> None:
    """Everything a tool reads from a loaded trace."""
    for exchange in trace.exchanges():
        exchange.body  # noqa: B018  # decodes every chunk
    for record in trace.records:
        assert record.iteration >= 0 and record.attempt >= 0
        if record.kind == "chunk":
            chunk_bytes(record.data)
    trace.results()
    trace.edits()
    trace.end()
    Trace.parse(trace.dump())


@budget(150)
@given(st.sampled_from(TRACES), mutations)
def test_the_trace_reader_on_mutated_traces(path: Path, steps: list[Mutation]) -> None:
    data = mutate(path.read_bytes(), steps)
    with contextlib.suppress(TraceError):
        use(Trace.parse(data, path.name))


@budget(60)
@given(st.sampled_from(TRACES), mutations, st.lists(st.integers(min_value=0), max_size=3))
def test_the_trace_reader_on_mutated_gzip(
    path: Path, steps: list[Mutation], flips: list[int]
) -> None:
    packed = bytearray(gzip.compress(mutate(path.read_bytes(), steps)))
    for flip in flips:
        packed[flip % len(packed)] ^= 1 << flip % 8
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "t.jsonl.gz"
        target.write_bytes(bytes(packed))
        with contextlib.suppress(TraceError):
            use(Trace.load(target))


# -- the command line --------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        status = main(argv)
    return status, err.getvalue()


@budget(30)
@given(st.sampled_from(TRACES), mutations)
def test_the_cli_on_mutated_traces(path: Path, steps: list[Mutation]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        mutated = Path(folder) / "mutated.jsonl"
        mutated.write_bytes(mutate(path.read_bytes(), steps))
        for argv in (
            ["show", str(mutated)],
            ["show", "--json", str(mutated)],
            ["diff", str(path), str(mutated)],
            ["to-test", str(mutated), "-o", str(Path(folder) / "test_it.py")],
            ["replay", "-q", str(mutated)],
        ):
            try:
                status, err = run_cli(argv)
            except RawloopError as exc:  # pragma: no cover - main() must not let one out
                pytest.fail(f"{argv[0]} let {exc!r} out of main()")
            assert status in (0, 1, 2), (argv[0], status)
            assert "internal error" not in err, (argv[0], err)
            assert "Traceback" not in err, (argv[0], err)
