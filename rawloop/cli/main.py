"""rawloop: replay, record, inspect and debug OpenAI tool-loop wire traces."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ..core.errors import RawloopError
from ..core.redact import redact_text
from . import capture_commands, replay_commands, sessions_command, step_command, trace_commands

__all__ = ["build_parser", "main"]

#: The exit status of bad input, and of anything else that stops a command: never
#: 1, which says "the replay diverged" to scripts and CI.
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rawloop", description=__doc__)
    parser.add_argument("--version", action="version", version=f"rawloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    trace_commands.add_commands(sub)
    replay_commands.add_commands(sub)
    step_command.add_commands(sub)
    capture_commands.add_commands(sub)
    sessions_command.add_commands(sub)

    from ..serve.command import add_serve_agent_command
    from .tools_command import add_parser as add_tools_parser

    add_serve_agent_command(sub)
    add_tools_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 divergence, 2 bad input).

    An unexpected exception (a bug of ours) prints one line asking for a bug
    report, with no traceback and no secret, and exits 2.
    """
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
        sys.stderr.write(f"rawloop: error: {_one_line(str(exc))}\n")
        return EXIT_ERROR
    except Exception as exc:  # the last resort: what no command foresaw
        sys.stderr.write(
            f"rawloop: internal error: {type(exc).__name__}: {_one_line(str(exc))[:500]}; "
            f"this is a bug in rawloop {__version__}, please report it with the command "
            "you ran (and the trace, if you can share it)\n"
        )
        return EXIT_ERROR


def _one_line(text: str) -> str:
    """``text`` fit for one terminal line: no key, no control character, no line break.

    Messages can quote a trace, which is untrusted: an escape sequence in one
    must not reach the terminal as such.
    """
    text = redact_text(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
