"""rawloop: replay, record, inspect and debug OpenAI tool-loop wire traces."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .._version import __version__
from ..core.errors import RawloopError
from ..core.parse import DIALECTS, parse_stream
from ..trace.format import Trace

__all__ = ["main"]


def _cmd_parse(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    turn = parse_stream(data, args.dialect)
    if args.json:
        sys.stdout.write(orjson.dumps(turn.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out = sys.stdout
    out.write(f"{turn.dialect} response {turn.response_id} ({turn.model}): {turn.status}\n")
    if turn.reasoning:
        out.write(f"reasoning: {len(turn.reasoning)} chars\n")
    if turn.text:
        out.write(f"text: {turn.text}\n")
    for call in turn.calls:
        out.write(f"call {call.name}({call.arguments}) id={call.call_id}\n")
    if turn.usage:
        out.write(f"usage: {orjson.dumps(turn.usage).decode()}\n")
    for warning in turn.warnings:
        out.write(f"warning: {warning}\n")
    out.write(f"{turn.event_count} events\n")
    return 0


def _load(path: str) -> Trace:
    # A cut last line is kept in trace.warnings (and shown); not a Python warning here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Trace.load(path)


def _warn(trace: Trace) -> None:
    for warning in trace.warnings:
        sys.stderr.write(f"rawloop: warning: {warning}\n")


def _use_color() -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _cmd_show(args: argparse.Namespace) -> int:
    from ..trace.show import as_json, raw, render

    trace = _load(args.trace)
    if args.raw:
        _warn(trace)
        sys.stdout.flush()
        sys.stdout.buffer.write(raw(trace))
        sys.stdout.buffer.flush()
    elif args.json:
        _warn(trace)
        text = orjson.dumps(as_json(trace), option=orjson.OPT_INDENT_2).decode()
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(render(trace, color=_use_color()))
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from ..trace.diff import DEFAULT_IGNORE, diff

    a, b = _load(args.a), _load(args.b)
    ignore = () if args.no_default_ignore else DEFAULT_IGNORE
    result = diff(a, b, ignore=(*ignore, *args.ignore), strict_chunks=args.strict_chunks)
    sys.stdout.write(f"A: {a.path}\nB: {b.path}\n{result}\n")
    return 0 if result.equal else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    import tempfile

    import anyio

    from ..loop.tool_files import load_module, tools_in
    from ..replay.chunking import CHUNKINGS
    from ..replay.replayer import loop_from_trace, replay
    from ..trace.recorder import TraceRecorder
    from ..trace.show import render

    if args.chunking not in CHUNKINGS:
        raise RawloopError(
            f"unknown chunking {args.chunking!r}; choose from {', '.join(CHUNKINGS)}"
        )
    if args.live_tools and not args.tools:
        raise RawloopError("--live-tools needs --tools FILE.py with the real tool functions")
    trace = _load(args.trace)
    _warn(trace)
    hooks = [load_module(path) for path in args.hook]
    tools = [t for path in args.tools for t in tools_in(load_module(path))]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.save) if args.save else Path(tmp) / "replay.jsonl"
        recorder = TraceRecorder(out, metadata={"replay_of": str(args.trace)})

        async def go() -> Any:
            loop = loop_from_trace(trace, rate=args.rate, tools=tools) if tools else None
            common: dict[str, Any] = {
                "rate": args.rate,
                "chunking": args.chunking,
                "seed": args.seed,
                "faults": args.fault,
                "live_tools": args.live_tools,
                "hooks": [recorder, *hooks],
            }
            if args.server:
                from ..replay.server import replay_over_http

                return await replay_over_http(trace, loop, **common)
            return await replay(trace, loop, on_divergence=args.on_divergence, **common)

        report = anyio.run(go)
        recorder.close()
        if not args.quiet and out.exists():
            replayed = _load(str(out))
            replayed.path = f"replay of {args.trace}"
            sys.stdout.write(render(replayed, color=_use_color()))
    for difference in report.tool_differences:
        sys.stdout.write(
            f"tool output changed: {difference['name']} {difference['call_id']}: "
            f"recorded {difference['recorded']!r}, now {difference['actual']!r}\n"
        )
    sys.stdout.write(f"replay of {args.trace}: {report}\n")
    if args.save:
        sys.stdout.write(f"replayed run saved to {args.save}\n")
    return {"identical": 0, "diverged": 1}.get(report.verdict, 2)


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
    )


def _cmd_to_test(args: argparse.Namespace) -> int:
    from ..capture.to_test import command

    return command(args.trace, args.output, line_length=args.line_length)


def _cmd_import(args: argparse.Namespace) -> int:
    from ..capture.importers import command

    return command(args.file, args.output, check=args.check)


def _cmd_step(args: argparse.Namespace) -> int:
    from ..debug.console import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawloop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rawloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("parse", help="parse a raw SSE response body and print its turn")
    p.add_argument("file", help="a file holding a streamed response body")
    p.add_argument("--dialect", choices=DIALECTS, default="responses")
    p.add_argument("--json", action="store_true", help="print the turn as JSON")
    p.set_defaults(func=_cmd_parse)

    p = sub.add_parser("show", help="print a wire trace as a timeline (or its raw bytes, or JSON)")
    p.add_argument("trace", help="a trace file (.jsonl or .jsonl.gz)")
    form = p.add_mutually_exclusive_group()
    form.add_argument(
        "--raw", action="store_true", help="write every response body exactly as received"
    )
    form.add_argument("--json", action="store_true", help="print the trace grouped, as JSON")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "diff", help="where two traces first differ (exit 0 equal, 1 different, 2 bad input)"
    )
    p.add_argument("a", help="the first trace")
    p.add_argument("b", help="the second trace")
    p.add_argument(
        "--strict-chunks",
        action="store_true",
        help="count different chunk boundaries (same bytes) as a difference",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also skip paths matching this pattern (e.g. 'decision.turn.response_id'); repeatable",
    )
    p.add_argument(
        "--no-default-ignore",
        action="store_true",
        help="compare timings, dates, request ids and versions too",
    )
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser(
        "replay",
        help="replay a trace through the loop against a fake server and compare",
        description="Replay TRACE through a real rawloop loop, answered from the trace, "
        "and say whether every request matched the recording. Exit 0 identical, "
        "1 diverged, 2 bad input or an error during the run.",
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
    p.add_argument("-q", "--quiet", action="store_true", help="print only the verdict")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser(
        "serve",
        help="serve traces (or a script of turns) on a loopback OpenAI-compatible HTTP server",
        description="Answer POST /v1/responses and /v1/chat/completions from recorded traces, "
        "streaming or not, so any client (the official SDKs, curl) can be pointed at a "
        "recording. Stops cleanly on SIGINT/SIGTERM.",
    )
    p.add_argument("traces", nargs="*", metavar="TRACE", help="trace files to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    p.add_argument("--script", metavar="FILE", help="a JSON script of turns to serve instead")
    p.add_argument("--chunking", default="recorded", help="recorded | events | bytes | hostile")
    p.add_argument("--seed", type=int, default=0, help="seed for hostile chunking")
    p.add_argument("--rate", type=float, default=0.0, help="pace chunks at R x the recorded gaps")
    p.add_argument("--fault", action="append", default=[], metavar="SPEC", help="a fault to inject")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "step",
        help="step through a run at its breakpoints: a debugger for tool loops",
        description="Stop at the breakpoint before each request, look at the state and the "
        "raw wire, change them, and go on. TRACE replays a trace; --live runs PROMPT against "
        "a real endpoint. Commands come from a terminal, --commands FILE, or stdin (the end "
        "of the input runs the loop to its end). Exit 0, 1 if a command was refused, 2 if "
        "the run failed.",
    )
    p.add_argument(
        "target", nargs="?", metavar="TRACE|PROMPT", help="a trace, or with --live the prompt"
    )
    p.add_argument("--live", action="store_true", help="run PROMPT against a real endpoint")
    p.add_argument("--model", help="the model (--live)")
    p.add_argument("--instructions", help="system instructions (--live)")
    p.add_argument("--dialect", choices=DIALECTS, help="responses (default) or chat (--live)")
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="API root: the endpoint of a --live run, or where a replay goes on after an edit",
    )
    p.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="FILE",
        help="a module of @rawloop.tool functions (--live, or a replay gone live); repeatable",
    )
    p.add_argument(
        "--hook", action="append", default=[], metavar="FILE", help="a hook module (repeatable)"
    )
    p.add_argument(
        "--break",
        dest="breakpoints",
        action="append",
        default=[],
        metavar="SPEC",
        help="a conditional breakpoint: tool=NAME, iteration=N, text=REGEX or error; repeatable",
    )
    p.add_argument("--commands", metavar="FILE", help="read the commands from FILE")
    p.add_argument(
        "--after-edit",
        choices=("stop", "live", "ignore"),
        help="when an edit takes a replay off its recording: end the run there (stop, the "
        "default), go on against --base-url (live, the default with --base-url), or go on "
        "with the recorded responses (ignore)",
    )
    p.add_argument(
        "--max-iterations",
        type=int,
        metavar="N",
        help="the most requests of a --live run, or of a replay once it went live (default 10)",
    )
    p.set_defaults(func=_cmd_step)
    p = sub.add_parser(
        "to-test", help="write a pytest file that replays a trace and asserts its decisions"
    )
    p.add_argument("trace", help="a trace file (.jsonl or .jsonl.gz)")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the test to FILE (default: print it)"
    )
    p.add_argument(
        "--line-length", type=int, default=88, metavar="N", help="wrap at N columns (default 88)"
    )
    p.set_defaults(func=_cmd_to_test)

    p = sub.add_parser(
        "import", help="convert a VCR.py / pytest-recording cassette or a HAR file into a trace"
    )
    p.add_argument("file", help="a YAML cassette or a HAR (JSON) file")
    p.add_argument(
        "-o", "--output", metavar="TRACE", help="write the trace to TRACE (default: print it)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="replay the imported trace and print the verdict (exit 1 if it diverges)",
    )
    p.set_defaults(func=_cmd_import)

    from ..capture.proxy import add_record_command

    add_record_command(sub)

    from ..serve.app import add_serve_agent_command
    from .tools_command import add_parser as add_tools_parser

    add_serve_agent_command(sub)
    add_tools_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 divergence, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return status
    except BrokenPipeError:
        # `rawloop show x | head`: the reader left; that is not an error of ours.
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (RawloopError, OSError) as exc:
        sys.stderr.write(f"rawloop: error: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
