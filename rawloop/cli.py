"""The ``rawloop`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from ._version import __version__
from .errors import RawloopError
from .parse import DIALECTS, parse_stream

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawloop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rawloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("parse", help="parse a raw SSE response body and print its turn")
    p.add_argument("file", help="a file holding a streamed response body")
    p.add_argument("--dialect", choices=DIALECTS, default="responses")
    p.add_argument("--json", action="store_true", help="print the turn as JSON")
    p.set_defaults(func=_cmd_parse)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 divergence, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (RawloopError, OSError) as exc:
        sys.stderr.write(f"rawloop: error: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
