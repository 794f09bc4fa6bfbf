"""What ``rawloop record`` adds to a streamed request: the same requests direct and through it.

Two processes, as in real use: ``rawloop serve`` (a ``ReplayServer`` serving
``traces/tool-roundtrip.jsonl``, no pacing) and ``rawloop record`` in front
of it (writing a trace per run to a temporary directory). The clients are
raw sockets in one anyio event loop in this process, each sending the
recorded first request of the trace (a 27-chunk, 10 KB SSE answer) and
reading the chunked answer to its end:

* **sequential**: one keep-alive connection, N requests one after another;
* **concurrent**: N connections at once, one request each.

Each request is timed from sending it to the first byte of the answer's body
(time to first byte) and to its last byte (total). Reported per mode: p50
and p99 of both, direct and through the proxy, and the difference (what the
proxy adds); and, where ``/proc`` exists, the CPU time the server and the
proxy processes spent per request. Nothing is asserted: run it and read the
table.

    python bench/bench_proxy.py                       # 200 sequential, 50 concurrent
    python bench/bench_proxy.py -n 500 -c 200 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from _common import END_OF_BODY, TRACE, first_request, free_port, start, start_server

END_OF_HEAD = b"\r\n\r\n"
KEY = (
    "sk-bench-" + "0123456789abcdefghijklmnop"
)  # built at run time: no key-shaped literal  # sent as Authorization; redacted in the traces


def start_proxy(port: int, upstream: int, out: str) -> subprocess.Popen[bytes]:
    code = (
        "import sys, logging; logging.disable(logging.CRITICAL)\n"
        "from rawloop.capture.proxy import run_proxy\n"
        f"sys.exit(run_proxy('http://127.0.0.1:{upstream}', {out!r}, '127.0.0.1', {port}))\n"
    )
    return start(code, port)


def request_bytes(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\naccept: text/event-stream\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def one(stream: anyio.abc.SocketStream, request: bytes) -> tuple[float, float]:
    """(time to first body byte, total time) of one request on an open connection."""
    start_time = time.perf_counter()
    await stream.send(request)
    received = bytearray()
    first = 0.0
    while not received.endswith(END_OF_BODY):
        received += await stream.receive(65536)
        if not first:
            head_end = received.find(END_OF_HEAD)
            if head_end >= 0 and len(received) > head_end + len(END_OF_HEAD):
                first = time.perf_counter() - start_time
    total = time.perf_counter() - start_time
    if not received.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(bytes(received.split(b"\r\n", 1)[0]).decode())
    return first, total


async def sequential(port: int, request: bytes, n: int) -> list[tuple[float, float]]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        return [await one(stream, request) for _ in range(n)]


async def concurrent(port: int, request: bytes, n: int) -> list[tuple[float, float]]:
    results: list[tuple[float, float]] = []

    async def client() -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            results.append(await one(stream, request))

    async with anyio.create_task_group() as group:
        for _ in range(n):
            group.start_soon(client)
    return results


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    first = [s[0] for s in samples]
    total = [s[1] for s in samples]
    return {
        "ttfb_p50_ms": 1000 * statistics.median(first),
        "ttfb_p99_ms": 1000 * percentile(first, 0.99),
        "total_p50_ms": 1000 * statistics.median(total),
        "total_p99_ms": 1000 * percentile(total, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--sequential", type=int, default=200, help="sequential requests")
    parser.add_argument("-c", "--concurrent", type=int, default=50, help="concurrent requests")
    parser.add_argument("--rounds", type=int, default=3, help="repeat both modes, pool samples")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args()

    body = first_request(TRACE)
    server_port, proxy_port = free_port(), free_port()
    targets = {"direct": server_port, "proxy": proxy_port}
    requests = {name: request_bytes(port, body) for name, port in targets.items()}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {
        (mode, name): [] for mode in ("sequential", "concurrent") for name in targets
    }
    cpu: dict[tuple[str, str, str], float] = {}  # (mode, path, process) -> CPU seconds
    with tempfile.TemporaryDirectory() as out:
        server = start_server(server_port)
        proxy = start_proxy(proxy_port, server_port, out)
        try:
            for name, port in targets.items():  # warm-up: imports, pools, first files
                anyio.run(sequential, port, requests[name], 20)
            processes = {"server": server.pid, "proxy": proxy.pid}
            for round_number in range(args.rounds):
                print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr)
                for mode, run, n in (
                    ("sequential", sequential, args.sequential),
                    ("concurrent", concurrent, args.concurrent),
                ):
                    for name, port in targets.items():  # interleaved: drift hits both alike
                        before = {k: cpu_seconds(pid) for k, pid in processes.items()}
                        samples[mode, name] += anyio.run(run, port, requests[name], n)
                        for k, pid in processes.items():
                            spent = cpu_seconds(pid) - before[k]
                            cpu[mode, name, k] = cpu.get((mode, name, k), 0.0) + spent
        finally:
            for proc in (proxy, server):
                proc.terminate()
                proc.wait(timeout=20)
        traces = len(list(Path(out).glob("run-*.jsonl")))

    rows: list[dict[str, Any]] = []
    print(
        f"rawloop record overhead: {TRACE.name} first request, {args.rounds} round(s); "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {traces} traces written\n"
    )
    print("| mode | path | requests | TTFB p50 | TTFB p99 | total p50 | total p99 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode in ("sequential", "concurrent"):
        direct, proxied = summary(samples[mode, "direct"]), summary(samples[mode, "proxy"])
        added = {k: proxied[k] - direct[k] for k in direct}
        for name, numbers in (("direct", direct), ("proxy", proxied), ("added", added)):
            count = len(samples[mode, "proxy" if name == "added" else name])
            rows.append({"mode": mode, "path": name, "requests": count, **numbers})
            sign = "+" if name == "added" else ""
            cells = " | ".join(
                f"{sign if v >= 0 else ''}{v:.2f} ms"
                for v in (numbers[k] for k in ("ttfb_p50_ms", "ttfb_p99_ms"))
            )
            totals = " | ".join(
                f"{sign if v >= 0 else ''}{v:.2f} ms"
                for v in (numbers[k] for k in ("total_p50_ms", "total_p99_ms"))
            )
            print(f"| {mode} | {name} | {count} | {cells} | {totals} |")
    print("\nCPU time per request (ms), from /proc:\n")
    print("| mode | path | server process | proxy process |")
    print("|---|---|---:|---:|")
    for mode in ("sequential", "concurrent"):
        for name in targets:
            count = len(samples[mode, name])
            server_ms = 1000 * cpu.get((mode, name, "server"), float("nan")) / count
            proxy_ms = 1000 * cpu.get((mode, name, "proxy"), float("nan")) / count
            rows.append(
                {"mode": mode, "path": name, "cpu_server_ms": server_ms, "cpu_proxy_ms": proxy_ms}
            )
            print(f"| {mode} | {name} | {server_ms:.2f} | {proxy_ms:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "traces": traces}, indent=2))


if __name__ == "__main__":
    main()
