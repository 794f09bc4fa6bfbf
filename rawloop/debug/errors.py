"""``StepError``: the one error of ``rawloop step`` and its debugger.

It lives on its own so the debugger's modules (``breakpoints``,
``debug_edits``, ``debugger``) can all raise it without importing each other.
Its message is written for the person at the prompt: the shell prints it after
``***`` and carries on.
"""

from __future__ import annotations

from ..core.errors import RawloopError

__all__ = ["StepError"]


class StepError(RawloopError):
    """A debugger command that cannot be done as asked (the message says why)."""
