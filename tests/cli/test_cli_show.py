"""``rawloop show`` on a real terminal (a pty: pager, wrapping) and ``rawloop parse``'s input."""

from __future__ import annotations

import fcntl
import gzip
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import orjson
import pytest

from rawloop.cli.main import main
from rawloop.core.parse import parse_stream
from rawloop.trace.format import Trace
from rawloop.trace.timeline import render

from ..conftest import CORPUS

TRACES = Path(__file__).parents[2] / "traces"
TRACE = str(TRACES / "tool-roundtrip.jsonl")


def on_a_terminal(args: list[str], env: dict[str, str], rows: int = 10, cols: int = 70) -> str:
    """Run ``rawloop ARGS`` with stdout on a pty of ``rows`` x ``cols``; what reached the screen."""
    # COLUMNS/LINES would win over the terminal's own size (shutil.get_terminal_size)
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "rawloop.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env={**base, "NO_COLOR": "1", **env},
    )
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other side closed: everything was read
                break
            if not data:
                break
            screen += data
        elif process.poll() is not None:
            break
    os.close(master)
    assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    return screen.decode().replace("\r\n", "\n")


def test_a_long_timeline_goes_through_the_pager_on_a_terminal(tmp_path: Path) -> None:
    paged = tmp_path / "paged.txt"
    # A "pager" that keeps what it was given: the timeline must reach it, not the screen.
    pager = f"{sys.executable} -c \"import sys; open({str(paged)!r}, 'w').write(sys.stdin.read())\""
    screen = on_a_terminal(["show", TRACE], {"PAGER": pager})
    assert "iteration 1" not in screen
    text = paged.read_text()
    assert text.startswith("trace ") and "end: completed, 2 iterations" in text
    # ...and it was wrapped to the terminal's 70 columns
    assert max(len(line) for line in text.splitlines()) <= 70
    # --no-pager writes to the terminal itself
    screen = on_a_terminal(["show", TRACE, "--no-pager"], {"PAGER": pager})
    assert "end: completed, 2 iterations" in screen
    assert max(len(line) for line in screen.splitlines()) <= 70


def test_a_short_timeline_or_no_terminal_needs_no_pager(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paged = tmp_path / "paged.txt"
    pager = f"{sys.executable} -c \"open({str(paged)!r}, 'w').write('ran')\""
    screen = on_a_terminal(["show", TRACE, "--iteration", "9"], {"PAGER": pager}, rows=40)
    assert "no iteration matches iteration 9" in screen and not paged.exists()
    # not a terminal: no pager, no wrapping
    assert main(["show", TRACE]) == 0
    out = capsys.readouterr().out
    assert out == render(Trace.load(TRACE))
    assert not paged.exists()


def test_show_filters_and_full_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", TRACE, "--tool", "multiply"]) == 0
    out = capsys.readouterr().out
    assert "iteration 0 (81 tokens)" in out and "iteration 1" not in out
    assert main(["show", TRACE, "--iteration", "1", "--full"]) == 0
    assert "iteration 0" not in capsys.readouterr().out


def test_parse_says_a_trace_is_for_show_and_names_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["parse", TRACE]) == 2
    assert f"{TRACE} is a rawloop trace (or gzip), not a response body: read it with" in (
        capsys.readouterr().err
    )
    packed = tmp_path / "run.jsonl.gz"
    packed.write_bytes(gzip.compress(Path(TRACE).read_bytes()))
    assert main(["parse", str(packed)]) == 2
    assert f"read it with `rawloop show {packed}`" in capsys.readouterr().err
    missing = tmp_path / "gone.sse"
    assert main(["parse", str(missing)]) == 2
    assert f"cannot read {missing}: No such file or directory" in capsys.readouterr().err
    empty = tmp_path / "empty.sse"
    empty.write_bytes(b"")
    assert main(["parse", str(empty)]) == 2
    assert f"rawloop: error: {empty}: stream ended after 0 events" in capsys.readouterr().err


def test_parse_reads_a_large_body_in_blocks_with_the_same_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (CORPUS / "responses-large-text-1.sse").read_bytes()
    assert len(body) > 64 * 1024  # more than one block
    assert main(["parse", str(CORPUS / "responses-large-text-1.sse"), "--json"]) == 0

    assert orjson.loads(capsys.readouterr().out) == parse_stream(body).to_dict()


def test_parse_output_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (CORPUS / "responses-text-minimal-1.sse").read_bytes()
    text = parse_stream(body).text
    hostile = body.replace(text.encode(), b"\\u001b[2Jgotcha")
    path = tmp_path / "hostile.sse"
    path.write_bytes(hostile)
    assert main(["parse", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "text: \\x1b[2Jgotcha" in out
