"""``rawloop step``: a pdb for tool loops.

The run stops at the breakpoint of each iteration, before each request, and
gives a prompt: look at the state, change it, look at the raw wire, go on.
``rawloop step TRACE`` replays a trace (the loop rebuilt from it, tool
results from it); ``rawloop step --live --model M --tools FILE.py PROMPT``
talks to a real endpoint (or ``--base-url`` of a fake one). The shell here is
a ``cmd.Cmd`` (``rawloop.debug.shell.StepShell``) around
``rawloop.debug.debugger.Debugger``, which runs the loop in a worker thread
and hands control back at each breakpoint. This module turns the command
line into a debugger and a shell and runs them.

Commands (``help COMMAND`` in the shell says more)::

    where (w), state          iteration, model, last decision, pending results, usage
    p PATH, print PATH        part of the state as JSON: input[3].output, /input/3/output
    set PATH JSON             change the state          del PATH   remove from it
    append PATH JSON          add to a list             model NAME switch model
    result CALL_ID OUTPUT     replace a tool result's output before it is sent
    raw [request|response|chunks]   the next request body, the last raw SSE
    next (n), continue (c), until N  go on
    break [tool NAME | iteration N | text REGEX | error], clear [N] (no N: asks first)
    after-edit [stop|live|ignore]  what a replay does once an edit leaves the recording
    save FILE                 the run so far as a trace that replays identically (mid-run:
                              a fork, ended with stop reason ``saved-fork``)
    quit (q)                  end the run here

Input that is not a terminal (``--commands FILE``, or a pipe on stdin) is
read as a script: each command is echoed after the prompt, output stays plain
text, and the end of the input (like Ctrl-D at a terminal) lets the run go on
to its end, without stopping, before leaving. Exit status: 0, or 1 when a
command was refused (bad path, bad JSON, unknown command), or 2 when the run
itself failed or could not start.

Driving a breakpoint from Python needs none of this: give ``Loop.iter()`` (or
``run()``) a hook with an ``on_breakpoint(state)`` method and change the
``LoopState`` there::

    class Review:
        def on_breakpoint(self, state):            # before every request
            for result in state.results:           # tool results not yet sent
                if result.name == "refund_order":
                    result.output = '{"status": "refused by a human"}'
            state.request_params["temperature"] = 0

    async with loop.iter("Refund order 1234", hooks=[Review()]) as run:
        async for step in run:                     # one Step per model call
            print(step.iteration, step.turn.text, [c.name for c in step.turn.calls])

Changes made in the hook are reported to ``on_edit`` as RFC 6902 patches
and recorded in traces, so the run replays; the same changes made in the
``async for`` body also reach the wire but bypass ``on_edit``, and a replay of
that trace diverges. ``rawloop.debug.debugger.Debugger`` is the blocking,
pdb-like driver this shell uses.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path
from typing import IO

from ..loop.loop import Loop
from ..loop.tool_files import load_module, tools_in
from ..trace.format import Trace
from .breakpoints import parse_condition
from .debugger import Debugger
from .errors import StepError
from .shell import StepShell as StepShell  # importable from here, as before the split

__all__ = ["StepShell", "run_cli", "trace_tools"]


# -- the command line ----------------------------------------------------------------------


def run_cli(args: argparse.Namespace) -> int:
    """``rawloop step`` with parsed arguments (see ``rawloop.cli.main``); returns the exit status."""
    if args.live:
        if args.after_edit:
            raise StepError("--after-edit is for replays; a --live run has no recording to leave")
        if not args.model:
            raise StepError("--live needs --model NAME")
        if not args.target:
            raise StepError('--live needs a prompt: rawloop step --live --model M "prompt"')
    else:
        if not args.target:
            raise StepError('give a trace to step through, or --live --model M "prompt"')
        given = [f"--{n}" for n in ("model", "instructions") if getattr(args, n)]
        if args.dialect:
            given.append("--dialect")
        if given:
            raise StepError(
                f"{', '.join(given)} only go with --live; a replay takes them from the trace"
            )
        if not Path(args.target).exists():
            raise StepError(_no_trace(args.target))
    hooks = [load_module(path) for path in args.hook]
    handlers = [t for path in args.tools for t in tools_in(load_module(path))]
    conditions = list(args.breakpoints)
    for spec in conditions:
        parse_condition(spec)  # bad specs fail here, before anything runs
    if args.live:
        loop = Loop(
            args.model,
            args.instructions,
            tools=handlers,
            dialect=args.dialect or "responses",
            base_url=args.base_url,
            max_iterations=args.max_iterations or 10,
        )
        debugger = Debugger(loop, args.target, hooks=hooks, conditions=conditions)
        title = f"live, {loop.dialect.name} at {loop.base_url}"
        _warn_unknown_tools(debugger, [t.name for t in handlers], "--tools")
    else:
        after_edit = args.after_edit or ("live" if args.base_url else "stop")
        debugger = Debugger.for_trace(
            args.target,
            after_edit=after_edit,
            live_base_url=args.base_url,
            handlers=handlers,
            hooks=hooks,
            conditions=conditions,
            live_max_iterations=args.max_iterations or 10,
        )
        assert debugger.trace is not None
        title = f"replay of {args.target}"
        for warning in debugger.trace.warnings:
            sys.stderr.write(f"rawloop: warning: {warning}\n")
        _warn_unknown_tools(debugger, trace_tools(debugger.trace), "the trace")
    with contextlib.ExitStack() as stack:
        stack.callback(debugger.close)
        if args.commands:
            stdin: IO[str] = stack.enter_context(open(args.commands, encoding="utf-8"))
            interactive = False
        else:
            stdin = sys.stdin
            interactive = sys.stdin.isatty()
        if interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401 - history and editing for input(), as pdb has
        shell = StepShell(
            debugger, stdin=stdin, stdout=sys.stdout, interactive=interactive, title=title
        )
        shell.begin()
        while True:
            try:
                shell.cmdloop()
                break
            except KeyboardInterrupt:
                shell.say("\n(quit ends the run here; c runs it to the end)")
        if debugger.error is not None:
            return 2
        return 1 if shell.failures else 0


def trace_tools(trace: Trace) -> list[str]:
    """Names of the tools a trace's requests offered and its results ran, in first-seen order."""
    names: dict[str, None] = {}
    for exchange in trace.exchanges():
        body = exchange.request.get("body")
        tools = body.get("tools") if isinstance(body, dict) else None
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue
            function = tool.get("function")
            name = tool.get("name") or (
                function.get("name") if isinstance(function, dict) else None
            )
            if isinstance(name, str):
                names[name] = None
    for result in trace.results().values():
        if isinstance(result.get("name"), str):
            names[result["name"]] = None
    return list(names)


def _warn_unknown_tools(debugger: Debugger, known: list[str], where: str) -> None:
    """Say so when ``--break tool=NAME`` names no tool there: it would never fire."""
    for condition in debugger.conditions:
        if condition.kind == "tool" and condition.arg not in known:
            listed = ", ".join(repr(n) for n in known) or "none"
            sys.stderr.write(
                f"rawloop: warning: --break tool={condition.arg}: no tool of that name in "
                f"{where} (tools: {listed}); the breakpoint will not fire\n"
            )


def _no_trace(target: str) -> str:
    """The error for a TRACE that is not a file, with ``--live`` when it reads as a prompt."""
    message = f"no trace file {target!r}"
    looks_like_a_path = "/" in target or Path(target).suffix in (".jsonl", ".gz", ".json")
    if looks_like_a_path:
        return message
    return (
        f"{message}; to send it as a prompt, run it live: "
        f"rawloop step --live --model MODEL {shlex.quote(target)}"
    )
