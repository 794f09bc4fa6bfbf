"""``rawloop step``: the stepping debugger's command line."""

from __future__ import annotations

import argparse
from typing import Any

from ..core.parse import DIALECTS

__all__ = ["add_commands"]


def _cmd_step(args: argparse.Namespace) -> int:
    from ..debug.console import run_cli

    return run_cli(args)


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to ``sub`` (an argparse subparsers object)."""
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
        help="a module of @rawloop.tool functions (--live, or a replay gone live); it can import "
        "the modules beside it; repeatable",
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
        help="a conditional breakpoint: tool=NAME (a warning when the trace has no such tool), "
        "iteration=N, text=REGEX or error; repeatable",
    )
    p.add_argument("--commands", metavar="FILE", help="read the commands from FILE")
    p.add_argument(
        "--after-edit",
        choices=("stop", "live", "ignore"),
        help="when an edit takes a replay off its recording: end the run there (stop, the "
        "default), go on against --base-url (live, the default with --base-url), or go on "
        "with the recorded responses (ignore); the prompt's after-edit MODE changes it",
    )
    p.add_argument(
        "--max-iterations",
        type=int,
        metavar="N",
        help="the most requests of a --live run, or of a replay once it went live (default 10)",
    )
    p.set_defaults(func=_cmd_step)
