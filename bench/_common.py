"""What bench_server.py and bench_proxy.py share: a free port, a trace's first request, a
``rawloop serve`` subprocess.

Both scripts are run as ``python bench/NAME.py``, which puts this directory on
``sys.path``: they import this module as ``_common``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "tool-roundtrip.jsonl"
END_OF_BODY = b"\r\n0\r\n\r\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def first_request(trace: Path) -> bytes:
    for line in trace.read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "request":
            return json.dumps(record["body"]).encode()
    raise SystemExit(f"{trace}: no request record")


def start(code: str, port: int) -> subprocess.Popen[bytes]:
    """A Python subprocess running ``code``, once ``port`` accepts connections."""
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"nothing listens on {port}: the subprocess did not start")


def start_server(port: int) -> subprocess.Popen[bytes]:
    """``rawloop serve`` of ``TRACE`` on 127.0.0.1:``port``, its logging off."""
    code = (
        "import sys, logging; logging.disable(logging.CRITICAL)\n"
        "from rawloop.replay.server import run_server\n"
        f"sys.exit(run_server([{str(TRACE)!r}], '127.0.0.1', {port}))\n"
    )
    return start(code, port)
