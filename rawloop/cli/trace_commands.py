"""``rawloop parse``, ``show`` and ``diff``: reading streams and traces."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import ConfigurationError, StreamError
from ..core.parse import DIALECTS, StreamParser
from ..core.redact import redact_text
from ..core.turn import Turn
from ..trace.runs import safe
from .common import load_trace, use_color, warn_about

__all__ = ["add_commands"]


#: How much of a response body ``parse`` reads at a time.
BLOCK = 64 * 1024


def _parse_file(path: str, dialect: str) -> Turn:
    """Feed a response body to the parser block by block, never holding the whole file."""
    parser = StreamParser(dialect)
    try:
        with open(path, "rb") as file:
            first = file.read(BLOCK)
            head = first.lstrip()
            if head[:2] == b"\x1f\x8b" or (
                head[:1] == b"{" and b'"rawloop-trace"' in head.split(b"\n", 1)[0]
            ):
                raise ConfigurationError(
                    f"{path} is a rawloop trace (or gzip), not a response body: "
                    f"read it with `rawloop show {path}`"
                )
            block = first
            while block:
                parser.feed(block)
                block = file.read(BLOCK)
        return parser.close()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    except StreamError as exc:
        # The same error, typed as it was, naming the file it is about.
        exc.args = (f"{path}: {exc.args[0] if exc.args else exc}", *exc.args[1:])
        raise


def _cmd_parse(args: argparse.Namespace) -> int:
    turn = _parse_file(args.file, args.dialect)
    if args.json:
        sys.stdout.write(orjson.dumps(turn.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    lines = [f"{turn.dialect} response {turn.response_id} ({turn.model}): {turn.status}"]
    if turn.reasoning:
        lines.append(f"reasoning: {len(turn.reasoning)} chars")
    if turn.text:
        lines.append(f"text: {turn.text}")
    lines += [f"call {c.name}({c.arguments}) id={c.call_id}" for c in turn.calls]
    if turn.usage:
        lines.append(f"usage: {orjson.dumps(turn.usage).decode()}")
    lines += [f"warning: {warning}" for warning in turn.warnings]
    lines.append(f"{turn.event_count} events")
    # The body is untrusted: its text must not drive the terminal.
    sys.stdout.write("".join(safe(line) + "\n" for line in lines))
    return 0


def _write_page(page: str, output: str | None) -> None:
    """An HTML page to ``output`` (named on stderr), or to stdout without one."""
    if output is None:
        sys.stdout.write(page)
        return
    Path(output).write_text(page, encoding="utf-8")
    sys.stderr.write(f"rawloop: wrote {output}\n")


def _cmd_show(args: argparse.Namespace) -> int:
    from ..trace.show import as_json, raw, render

    if (args.output or args.prices) and not args.html:
        raise ConfigurationError("-o/--output and --prices go with --html")
    trace = load_trace(args.trace)
    if args.html:
        from ..trace.html_kit import load_prices
        from ..trace.html_page import show_page

        prices = load_prices(args.prices) if args.prices else None
        warn_about(trace)
        _write_page(show_page(trace, prices=prices), args.output)
    elif args.raw:
        warn_about(trace)
        sys.stdout.flush()
        sys.stdout.buffer.write(raw(trace))
        sys.stdout.buffer.flush()
    elif args.json:
        warn_about(trace)
        text = orjson.dumps(as_json(trace), option=orjson.OPT_INDENT_2).decode()
        sys.stdout.write(text + "\n")
    else:
        terminal = sys.stdout.isatty()
        text = render(
            trace,
            color=use_color(),
            full=args.full,
            iteration=args.iteration,
            tool=args.tool,
            width=shutil.get_terminal_size().columns if terminal else None,
        )
        if not (terminal and not args.no_pager and _long(text) and _page(text)):
            sys.stdout.write(text)
    return 0


def _long(text: str) -> bool:
    return text.count("\n") >= shutil.get_terminal_size().lines


def _page(text: str) -> bool:
    """Show ``text`` through ``$PAGER`` (default ``less -FRX``); False when there is none."""
    try:
        argv = shlex.split(os.environ.get("PAGER") or "less -FRX")
    except ValueError:
        return False
    if not argv:
        return False
    sys.stdout.flush()
    try:
        pager = subprocess.Popen(argv, stdin=subprocess.PIPE)
    except OSError:
        return False
    assert pager.stdin is not None
    try:
        pager.stdin.write(text.encode())
        pager.stdin.close()
    except BrokenPipeError:  # the reader quit the pager before the end
        pass
    pager.wait()
    return True


def _cmd_diff(args: argparse.Namespace) -> int:
    from ..trace.diff import DEFAULT_IGNORE, WIRE_IGNORE, diff

    a, b = load_trace(args.a), load_trace(args.b)
    ignore = () if args.no_default_ignore else WIRE_IGNORE if args.wire else DEFAULT_IGNORE
    result = diff(
        a,
        b,
        ignore=(*ignore, *args.ignore),
        strict_chunks=args.strict_chunks,
        wire=args.wire,
        every=args.all,
    )
    if args.html:
        from ..trace.html_diff import diff_page

        _write_page(diff_page(a, b, result), args.output)
    else:
        # The differences quote the traces, which are untrusted: no key gets printed.
        sys.stdout.write(redact_text(f"A: {a.path}\nB: {b.path}\n{result}\n"))
    return 0 if result.equal else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from ..trace.export import to_har, to_otlp

    if not (args.har or args.otlp):
        raise ConfigurationError("export: say where: --har OUT.har and/or --otlp OUT.json")
    trace = load_trace(args.trace)
    warn_about(trace)
    if args.har:
        Path(args.har).write_bytes(orjson.dumps(to_har(trace), option=orjson.OPT_INDENT_2))
        sys.stderr.write(f"rawloop: wrote {args.har}\n")
    if args.otlp:
        document = to_otlp(trace, content=args.content)
        Path(args.otlp).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        sys.stderr.write(f"rawloop: wrote {args.otlp}\n")
    return 0


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to ``sub`` (an argparse subparsers object)."""
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
    form.add_argument(
        "--html",
        action="store_true",
        help="write one self-contained HTML page of the run (to stdout, or -o FILE)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="where --html writes the page")
    p.add_argument(
        "--full",
        action="store_true",
        help="show every text whole: messages, tool outputs, edits, error bodies",
    )
    p.add_argument("--iteration", type=int, metavar="N", help="show only iteration N")
    p.add_argument(
        "--tool", metavar="NAME", help="show only the iterations that call or answer tool NAME"
    )
    p.add_argument(
        "--no-pager",
        action="store_true",
        help="never page a long timeline (default: page on a terminal)",
    )
    p.add_argument(
        "--prices",
        metavar="FILE.json",
        help='with --html: add a cost, from {"model": {"input": $, "output": $}} per 1M tokens',
    )
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "diff",
        help="where two runs differ in meaning (exit 0 equal, 1 different, 2 bad input)",
        description="Compare two traces record by record. By default only what the runs asked "
        "and got counts: timing, dates, request ids, header metadata and base URL, the host of "
        "request URLs, transport headers and chunk boundaries are ignored (--wire compares them).",
    )
    p.add_argument("a", help="the first trace")
    p.add_argument("b", help="the second trace")
    p.add_argument(
        "--wire",
        action="store_true",
        help="compare as bytes on the wire: hosts, transport headers, timing, chunk boundaries",
    )
    p.add_argument("--all", action="store_true", help="list every difference, not just the first")
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
    p.add_argument(
        "--html", action="store_true", help="write the two runs side by side as an HTML page"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="where --html writes the page")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser(
        "export", help="write a trace as HAR 1.2 (DevTools, HAR viewers) or OTLP JSON spans"
    )
    p.add_argument("trace", help="a trace file (.jsonl or .jsonl.gz)")
    p.add_argument(
        "--har", metavar="OUT.har", help="one HAR entry per HTTP attempt, SSE body whole"
    )
    p.add_argument(
        "--otlp",
        metavar="OUT.json",
        help="OTLP JSON: invoke_agent / chat / execute_tool spans with GenAI attributes",
    )
    p.add_argument(
        "--content",
        action="store_true",
        help="with --otlp: include messages, tool arguments and results (left out by default)",
    )
    p.set_defaults(func=_cmd_export)
