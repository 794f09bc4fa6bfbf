"""Concurrent streaming clients against ``rawloop serve`` on loopback.

The server runs in its own process (as ``rawloop serve`` would); the clients are
plain sockets in one anyio event loop, each sending the recorded first request
of a bundled trace and reading the chunked SSE answer to its end. Reported per
concurrency level: completed streams, errors, events/s across all clients, and
time to first byte (p50/p99). Nothing is asserted: run it and read the table.

    python bench/bench_server.py                 # 50, 200, 500 clients
    python bench/bench_server.py --clients 1000 --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from _common import END_OF_BODY, TRACE, first_request, free_port, start_server


async def one_stream(port: int, request: bytes) -> tuple[float, float, int]:
    """(time to first body byte, total time, events) for one streamed request."""
    start = time.perf_counter()
    stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await stream.send(request)
        received = bytearray()
        first = 0.0
        while not received.endswith(END_OF_BODY):
            chunk = await stream.receive(65536)
            if not first and b"\r\n\r\n" in received + chunk:
                first = time.perf_counter() - start
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
    return first, time.perf_counter() - start, body.count(b"\n\n")


async def level(port: int, clients: int, request: bytes) -> dict[str, Any]:
    results: list[tuple[float, float, int]] = []
    errors: list[str] = []

    async def client() -> None:
        try:
            with anyio.fail_after(120):
                results.append(await one_stream(port, request))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(clients):
            group.start_soon(client)
    wall = time.perf_counter() - start
    ttfb = sorted(r[0] for r in results)
    events = sum(r[2] for r in results)
    return {
        "clients": clients,
        "completed": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "events": events,
        "wall_s": wall,
        "events_per_s": events / wall if wall else 0.0,
        "ttfb_p50_ms": 1000 * statistics.median(ttfb) if ttfb else float("nan"),
        "ttfb_p99_ms": 1000 * ttfb[min(len(ttfb) - 1, int(len(ttfb) * 0.99))]
        if ttfb
        else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[50, 200, 500])
    parser.add_argument("--rounds", type=int, default=1, help="repeat each level, keep the best")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args()

    body = first_request(TRACE)
    port = free_port()
    request = (
        f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body
    server = start_server(port)
    rows: list[dict[str, Any]] = []
    try:
        anyio.run(level, port, 5, request)  # warm-up
        for clients in args.clients:
            runs = [anyio.run(level, port, clients, request) for _ in range(args.rounds)]
            rows.append(max(runs, key=lambda r: (r["completed"], r["events_per_s"])))
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores; trace {TRACE.name} (iteration 0)"
    )
    print()
    print("| clients | completed | errors | events/s | wall (s) | TTFB p50 (ms) | TTFB p99 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['completed']} | {r['errors']} | {r['events_per_s']:,.0f} | "
            f"{r['wall_s']:.2f} | {r['ttfb_p50_ms']:.1f} | {r['ttfb_p99_ms']:.1f} |"
        )
        if r["first_error"]:
            print(f"  first error: {r['first_error']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
