"""``rawloop to-test``, ``import`` and ``record``: from captures to traces to tests."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_commands"]


def _cmd_to_test(args: argparse.Namespace) -> int:
    from ..capture.to_test import command

    return command(args.trace, args.output, line_length=args.line_length, tools=args.tools)


def _cmd_import(args: argparse.Namespace) -> int:
    from ..capture.importers import command

    return command(args.file, args.output, check=args.check)


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to ``sub`` (an argparse subparsers object)."""
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
    p.add_argument(
        "--tools",
        action="append",
        default=[],
        metavar="FILE.py",
        help="run these @rawloop.tool functions live in the test and assert their outputs "
        "against the ones the run sent (a result corrected in `rawloop step` is expected)",
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
