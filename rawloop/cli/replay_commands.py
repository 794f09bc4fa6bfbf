"""``rawloop replay`` and ``serve``: a trace against the loop, or served on a port."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from ..core.errors import RawloopError
from ..core.words import plural
from .common import load_trace, use_color, warn_about

__all__ = ["add_commands"]


def _cmd_replay(args: argparse.Namespace) -> int:
    import tempfile

    from ..loop.tool_files import load_module, tools_in
    from ..replay.capture_replay import is_capture
    from ..replay.chunking import CHUNKINGS
    from ..trace.recorder import TraceRecorder
    from ..trace.show import render

    if args.chunking not in CHUNKINGS:
        raise RawloopError(
            f"unknown chunking {args.chunking!r}; choose from {', '.join(CHUNKINGS)}"
        )
    if args.live_tools and not args.tools:
        raise RawloopError("--live-tools needs --tools FILE.py with the real tool functions")
    trace = load_trace(args.trace)
    warn_about(trace)
    tools = [t for path in args.tools for t in tools_in(load_module(path))]
    if not (args.loop or args.hook) and is_capture(trace):
        return _replay_as_sent(args, trace, tools)
    hooks = [load_module(path) for path in args.hook]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.save) if args.save else Path(tmp) / "replay.jsonl"
        recorder = TraceRecorder(out, metadata={"replay_of": str(args.trace)})
        report = _run(args, trace, tools=tools, hooks=[recorder, *hooks])
        recorder.close()
        if not args.quiet and out.exists():
            replayed = load_trace(str(out))
            replayed.path = f"replay of {args.trace}"
            sys.stdout.write(render(replayed, color=use_color()))
    _verdict(args, report)
    if args.save:
        sys.stdout.write(f"replayed run saved to {args.save}\n")
    return {"identical": 0, "diverged": 1}.get(report.verdict, 2)


def _run(args: argparse.Namespace, trace: Any, **options: Any) -> Any:
    """Replay ``trace`` as the command line asks: in process, or over a loopback server."""
    import anyio

    from ..replay.replayer import replay

    options.update(
        rate=args.rate,
        chunking=args.chunking,
        seed=args.seed,
        faults=args.fault,
        live_tools=args.live_tools,
    )

    async def go() -> Any:
        if args.server:
            from ..replay.server import replay_over_http

            return await replay_over_http(trace, **options)
        return await replay(trace, on_divergence=args.on_divergence, **options)

    return anyio.run(go)


def _verdict(args: argparse.Namespace, report: Any) -> None:
    """The tool outputs that changed, then the report's one-line verdict."""
    for difference in report.tool_differences:
        sys.stdout.write(
            f"tool output changed: {difference['name']} {difference['call_id']}: "
            f"recorded {difference['recorded']!r}, now {difference['actual']!r}\n"
        )
    sys.stdout.write(f"replay of {args.trace}: {report}\n")


def _replay_as_sent(args: argparse.Namespace, trace: Any, tools: list[Any]) -> int:
    """A capture of another client: its recorded requests, as sent, against the responder."""
    if args.save:
        raise RawloopError(
            "--save writes a loop's run: add --loop to re-drive the capture through rawloop's loop"
        )
    count = len(trace.exchanges())
    if not args.quiet:
        sys.stdout.write(
            f"{args.trace} is a capture (rawloop record): replaying its "
            f"{plural(count, 'request')} as the client sent them (--loop re-drives it through rawloop's loop)\n"
        )
    report = _run(args, trace, as_sent=True, tools=tools)
    if not args.quiet and report.result is not None:
        _replayed_turns(report.result)
    _verdict(args, report)
    return {"identical": 0, "diverged": 1}.get(report.verdict, 2)


def _replayed_turns(result: Any) -> None:
    """One line per replayed answer: the calls it made, or the start of its text (made safe)."""
    from ..trace.runs import safe

    for number, turn in enumerate(result.turns):
        if turn.calls:
            made = ", ".join(f"{call.name}({call.arguments})" for call in turn.calls)
            line = f"calls {made}"
        else:
            text = turn.text if len(turn.text) <= 100 else turn.text[:100] + "..."
            line = f"answers {text!r}"
        sys.stdout.write(f"  answer {number}: {safe(line)}\n")
    for r in result.results:
        shown = r.output if len(r.output) <= 100 else r.output[:100] + "..."
        sys.stdout.write(f"  sent back: {safe(f'{r.name} {r.call_id} -> {shown!r}')}\n")


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..replay.server import run_server

    return run_server(
        list(args.traces),
        args.host,
        args.port,
        script=args.script,
        chunking=args.chunking,
        rate=args.rate,
        faults=args.fault,
        seed=args.seed,
        strict=args.strict,
    )


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to ``sub`` (an argparse subparsers object)."""
    from ..replay.script import SCRIPT_HELP

    p = sub.add_parser(
        "replay",
        help="replay a trace against a fake server and compare",
        description="Replay TRACE through a real rawloop loop, answered from the trace, "
        "and say whether every request matched the recording. A capture made by "
        "`rawloop record` (another client's run) is replayed as the client sent it: its "
        "recorded requests, judged by the conversation's meaning; --loop re-drives it "
        "through rawloop's loop instead. Exit 0 identical, 1 diverged, 2 bad input or an "
        "error during the run.",
    )
    p.add_argument("trace", help="a trace file (.jsonl or .jsonl.gz)")
    p.add_argument(
        "--rate", type=float, default=0.0, help="pace chunks at R x the recorded gaps (0: at once)"
    )
    p.add_argument("--chunking", default="recorded", help="recorded | events | bytes | hostile")
    p.add_argument("--seed", type=int, default=0, help="seed for hostile chunking")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help='e.g. "iter=1,attempt=0:status=429,retry-after=1"',
    )
    p.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="FILE",
        help="a hook module to load (repeatable)",
    )
    p.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="FILE",
        help="a module of @rawloop.tool functions",
    )
    p.add_argument(
        "--live-tools",
        action="store_true",
        help="run the real tools instead of the recorded results",
    )
    p.add_argument(
        "--on-divergence",
        choices=("raise", "warn"),
        default="raise",
        help="stop at the first divergence, or warn and go on",
    )
    p.add_argument("--save", metavar="FILE", help="write the replayed run as a trace")
    p.add_argument(
        "--server",
        action="store_true",
        help="replay over a real loopback HTTP server instead of in process",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        help="re-drive a capture (rawloop record) through rawloop's loop instead of sending "
        "its requests as the client sent them (--hook implies it; --live-tools runs the tools "
        "either way)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the verdict")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser(
        "serve",
        help="serve traces (or a script of turns) on a loopback OpenAI-compatible HTTP server",
        description=textwrap.fill(
            "Answer POST /v1/responses and /v1/chat/completions from recorded traces "
            "(or a script), each request in the form it asks for: a stream, or one JSON "
            "object. Any client (the official SDKs, agent frameworks, curl) can be pointed at "
            "a recording. A request that differs from the recording gets the nearest answer "
            "and an x-rawloop-divergence header naming the first difference; --strict answers "
            "it 409. Stops cleanly on SIGINT/SIGTERM.",
            88,
        )
        + "\n\n"
        + SCRIPT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("traces", nargs="*", metavar="TRACE", help="trace files to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    p.add_argument("--script", metavar="FILE", help="a JSON script of turns to serve instead")
    p.add_argument("--chunking", default="recorded", help="recorded | events | bytes | hostile")
    p.add_argument("--seed", type=int, default=0, help="seed for hostile chunking")
    p.add_argument("--rate", type=float, default=0.0, help="pace chunks at R x the recorded gaps")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help="a fault to inject")
    p.add_argument(
        "--strict",
        action="store_true",
        help="answer a request that differs from the recording with 409 (replay_divergence)",
    )
    p.set_defaults(func=_cmd_serve)
