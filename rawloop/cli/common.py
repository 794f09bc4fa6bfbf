"""What the subcommands share: loading a trace for the terminal, warnings, colour."""

from __future__ import annotations

import os
import sys
import warnings

from ..trace.format import Trace

__all__ = ["load_trace", "use_color", "warn_about"]


def load_trace(path: str) -> Trace:
    # A cut last line is kept in trace.warnings (and shown); not a Python warning here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Trace.load(path)


def warn_about(trace: Trace) -> None:
    for warning in trace.warnings:
        sys.stderr.write(f"rawloop: warning: {warning}\n")


def use_color() -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
