"""``rawloop step``: a pdb for tool loops.

The run stops at the breakpoint of each iteration, before each request, and
gives a prompt: look at the state, change it, look at the raw wire, go on.
``rawloop step TRACE`` replays a trace (the loop rebuilt from it, tool
results from it); ``rawloop step --live --model M --tools FILE.py PROMPT``
talks to a real endpoint (or ``--base-url`` of a fake one). The shell here is
a ``cmd.Cmd`` around ``rawloop.debugger.Debugger``, which runs the loop in a
worker thread and hands control back at each breakpoint.

Commands (``help COMMAND`` in the shell says more)::

    where (w), state          iteration, model, last decision, pending results, usage
    p PATH, print PATH        part of the state as JSON: input[3].output, /input/3/output
    set PATH JSON             change the state          del PATH   remove from it
    append PATH JSON          add to a list             model NAME switch model
    result CALL_ID OUTPUT     replace a tool result's output before it is sent
    raw [request|response|chunks]   the next request body, the last raw SSE
    next (n), continue (c), until N  go on
    break [tool NAME | iteration N | text REGEX | error], clear [N]
    save FILE                 the run so far as a trace that replays identically
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
that trace diverges. ``rawloop.debugger.Debugger`` is the blocking,
pdb-like driver this shell uses.
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import inspect
import sys
from typing import IO, Any

import orjson

from ..core import jsonpath
from ..core.errors import RawloopError
from ..loop.loop import Loop
from ..loop.tool_files import load_module, tools_in
from .breakpoints import parse_condition
from .debugger import Debugger, Pause
from .errors import StepError
from .wording import describe_difference, describe_op, describe_turn, shorten

__all__ = ["StepShell", "run_cli"]

_HELP = """\
Commands (help COMMAND for more):
  where (w), state         where the run is: iteration, model, last decision, pending results, usage
  p PATH, print PATH       part of the state as JSON: input[3].output, request_params, /input/3/output
  set PATH JSON            change the state: set request_params.temperature 0.2
  del PATH                 remove from the state: del input[1]
  append PATH JSON         add to a list: append input {"role": "user", "content": "go on"}
  model NAME               send the next requests to another model
  result CALL_ID OUTPUT    replace a pending tool result's output (JSON or plain text)
  raw [request|response|chunks]  the next request body and the last raw SSE, exactly
  next (n)                 go on to the next breakpoint
  continue (c)             go on to the end, or to the next conditional breakpoint
  until N                  go on to the breakpoint of iteration N
  break (b) [tool NAME | iteration N | text REGEX | error]  add a conditional breakpoint, or list them
  clear [N]                remove conditional breakpoint N, or all of them
  save FILE                write the run so far as a trace (it replays identically)
  quit (q)                 end the run here and leave
At the end of the input (Ctrl-D, or the end of a script) the run goes on to its end.
"""

_STEPPING = frozenset({"n", "next"})


class StepShell(cmd.Cmd):
    """The ``rawloop step`` prompt around a ``Debugger``.

    Args:
        debugger: the debugger, not started yet.
        stdin: where commands come from.
        stdout: where everything is written.
        interactive: a terminal (``input()`` with readline) rather than a script.
        title: what is being stepped through, for the banner.
    """

    def __init__(
        self,
        debugger: Debugger,
        *,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        interactive: bool = False,
        title: str = "",
    ) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        self.debugger = debugger
        self.interactive = interactive
        self.use_rawinput = interactive
        self.title = title
        self.failures = 0
        self.prompt = "(rawloop) "
        debugger.progress = self.say

    # -- output ------------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        """Write one line (or lines) of output."""
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def fail(self, message: str) -> None:
        """Report a refused command, pdb style."""
        self.failures += 1
        self.say(f"*** {message}")

    # -- the cmd.Cmd machinery -------------------------------------------------------------

    def begin(self) -> None:
        """Start the run and show where it stopped."""
        self.say(f"rawloop step: {self.title}")
        self.say("type help for the commands; at the end of the input the run goes on to its end")
        self._show(self.debugger.start())

    def precmd(self, line: str) -> str:
        if not self.interactive:
            self.stdout.write(line + "\n")  # a script's transcript reads like a session
        stripped = line.strip()
        return "" if stripped.startswith("#") else stripped

    def emptyline(self) -> bool:
        # Repeat only a step (as pdb's Enter does), and only at a terminal: never an edit.
        if self.interactive and self.lastcmd.split(" ", 1)[0] in _STEPPING:
            return self.onecmd(self.lastcmd)
        return False

    def onecmd(self, line: str) -> bool:
        try:
            return bool(super().onecmd(line))
        except (RawloopError, OSError) as exc:
            self.fail(str(exc))
        except Exception as exc:  # a bug of ours: say so, keep the session
            self.fail(f"internal error in rawloop step: {type(exc).__name__}: {exc}")
        return False

    def default(self, line: str) -> None:
        name = line.split(" ", 1)[0]
        self.fail(f"unknown command {name!r}; type help for the list")

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [n for n in super().completenames(text, *ignored) if n != "EOF"]

    # -- help --------------------------------------------------------------------------------

    def do_help(self, arg: str) -> bool:
        """help [COMMAND]: the list of commands, or what one does."""
        name = arg.strip()
        if not name:
            self.stdout.write(_HELP)
            return False
        method = getattr(self, f"do_{name}", None)
        if method is None or name == "EOF":
            self.fail(f"no command {name!r}; type help for the list")
            return False
        self.say(inspect.cleandoc(method.__doc__ or name))
        return False

    do_h = do_help

    # -- looking -----------------------------------------------------------------------------

    def do_where(self, arg: str) -> bool:
        """where (w), state: where the run is.

        The iteration (the breakpoint before request N, counting from 0), the
        model, the last decision (its text and calls), the tool results about
        to be sent, usage so far, and what was changed at this breakpoint.
        """
        self._where()
        return False

    do_w = do_where
    do_state = do_where

    def do_p(self, arg: str) -> bool:
        """p PATH, print PATH: print part of the state as JSON.

        PATH is dotted (input[3].output, request_params.temperature, input[-1],
        tools[0]["name"]) or a JSON Pointer (/input/3/output); no PATH prints the
        whole state. Besides the editable fields (model, instructions, input,
        tools, request_params, results) there are last_turn, usage, dialect,
        base_url and stop_reason.
        """
        where, value = self.debugger.get(arg)
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
        self.say(text if where == "<root>" else f"{where} = {text}")
        return False

    do_print = do_p

    def do_raw(self, arg: str) -> bool:
        """raw [request|response|chunks]: the wire, exactly.

        request: the body about to be sent, byte for byte as the loop will send
        it (built by the dialect from the state, with the pending results).
        response: the last iteration's response body, every attempt, exactly as
        received. chunks: the same with the chunk boundaries (as Python bytes).
        No argument: request and response.
        """
        what = arg.strip() or "all"
        if what not in ("all", "request", "response", "chunks"):
            self.fail(f"raw takes request, response or chunks, not {what!r}")
            return False
        dbg = self.debugger
        if what in ("all", "request"):
            if dbg.ended:
                self.say("request: none pending (the run has ended)")
            else:
                url, body = dbg.next_request()
                self.say(
                    f"request (iteration {dbg.state.iteration}, not sent yet): "
                    f"POST {url}, {len(body)} bytes"
                )
                self.say(body.decode(errors="replace"))
        if what == "request":
            return False
        attempts = dbg.last_attempts()
        if not attempts:
            self.say("response: none yet (no request has been sent)")
        for a in attempts:
            status = f"HTTP {a.status}" if a.status is not None else "no answer"
            self.say(
                f"response (iteration {a.iteration}, attempt {a.attempt}): {status}, "
                f"{len(a.response)} bytes in {len(a.chunks)} chunks"
                + (f", then {a.error}" if a.error else "")
            )
            if what == "chunks":
                offset = 0
                for number, chunk in enumerate(a.chunks):
                    self.say(f"--- chunk {number}: {len(chunk)} bytes at offset {offset}")
                    self.say(repr(chunk))
                    offset += len(chunk)
            else:
                text = a.response.decode(errors="replace")
                self.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return False

    # -- changing ----------------------------------------------------------------------------

    def do_set(self, arg: str) -> bool:
        """set PATH JSON: put a JSON value at PATH.

        set request_params.temperature 0.2     set input[0].content "Be brief."
        set model "gpt-5.5"                     set results[0].output "42"
        A missing last key is added; list items are replaced (use append to add).
        Strings need their quotes: the value is JSON.
        """
        path, value = self._path_and_json(arg, "set")
        self._changed(self.debugger.set(path, value))
        return False

    def do_del(self, arg: str) -> bool:
        """del PATH: remove a key or a list item from the state (del input[1], del request_params.top_p)."""
        if not arg.strip():
            raise StepError("del needs a path, e.g. del request_params.temperature")
        self._changed(self.debugger.delete(arg.strip()))
        return False

    def do_append(self, arg: str) -> bool:
        """append PATH JSON: add a JSON value at the end of the list at PATH.

        append input {"role": "user", "content": "Check the total again."}
        """
        path, value = self._path_and_json(arg, "append")
        self._changed(self.debugger.append(path, value))
        return False

    def do_model(self, arg: str) -> bool:
        """model NAME: send the next request (and those after it) to model NAME; no NAME shows it."""
        if not arg.strip():
            self.say(f"model: {self.debugger.state.model}")
            return False
        self._changed(self.debugger.set_model(arg))
        return False

    def do_result(self, arg: str) -> bool:
        """result CALL_ID OUTPUT: replace a pending tool result's output before it is sent.

        CALL_ID is the call id, a unique start of it, or the result's index.
        OUTPUT is JSON or plain text: a JSON string is sent without its quotes,
        other JSON (an object, a number) as written, anything else as typed.
        No OUTPUT shows that result; no arguments lists the pending results.
        """
        ref, _, text = arg.strip().partition(" ")
        dbg = self.debugger
        if not ref:
            self._results(dbg.state.results)
            return False
        index = dbg.find_result(ref)
        if not text.strip():
            self._results([dbg.state.results[index]], start=index, full=True)
            return False
        self._changed(dbg.set_result(ref, _output_text(text.strip())))
        return False

    # -- going on ----------------------------------------------------------------------------

    def do_next(self, arg: str) -> bool:
        """next (n): go on to the next breakpoint (the next request)."""
        self._go(self.debugger.next)
        return False

    do_n = do_next

    def do_continue(self, arg: str) -> bool:
        """continue (c): go on to the end, or to the next conditional breakpoint that fires."""
        self._go(self.debugger.cont)
        return False

    do_c = do_continue
    do_cont = do_continue

    def do_until(self, arg: str) -> bool:
        """until N: go on to the breakpoint of iteration N (conditional breakpoints still fire)."""
        text = arg.strip()
        if not (text.isascii() and text.isdigit()):
            raise StepError(f"until needs an iteration number, not {text!r}")
        self._go(lambda: self.debugger.until(int(text)))
        return False

    do_unt = do_until

    def do_break(self, arg: str) -> bool:
        """break [tool NAME | iteration N | text REGEX | error]: add a conditional breakpoint.

        tool NAME: stop after the model called NAME, before its result is sent.
        iteration N: stop before request N (0 is the first).
        text REGEX: stop when the last turn's text matches.
        error: stop after an iteration where a request attempt or a tool failed.
        continue (c) runs until one of them fires. No argument lists them.
        """
        dbg = self.debugger
        if not arg.strip():
            if not dbg.conditions:
                self.say("no conditional breakpoints")
            for c in dbg.conditions:
                self.say(f"{c.number}: {c} (hit {_count(c.hits, 'time')})")
            return False
        condition = dbg.add_condition(*parse_condition(arg))
        self.say(f"breakpoint {condition.number}: {condition}")
        if condition.kind == "tool" and not dbg.ended:
            known = dbg.known_tools()
            if condition.arg not in known:
                self.say(
                    f"note: the model is told of no tool named {condition.arg!r} "
                    f"(tools: {', '.join(known) or 'none'})"
                )
        return False

    do_b = do_break

    def do_clear(self, arg: str) -> bool:
        """clear [N]: remove conditional breakpoint N, or all of them."""
        text = arg.strip()
        if text and not (text.isascii() and text.isdigit()):
            raise StepError(f"clear takes a breakpoint number, not {text!r}")
        removed = self.debugger.clear_conditions(int(text) if text else None)
        self.say(f"cleared {_count(len(removed), 'breakpoint')}")
        return False

    do_cl = do_clear

    def do_save(self, arg: str) -> bool:
        """save FILE: write the run so far as a trace, edits included (.jsonl, or .jsonl.gz).

        The file replays identically: rawloop replay FILE.
        """
        path = arg.strip()
        if not path:
            raise StepError("save needs a file name, e.g. save run.jsonl")
        records = self.debugger.save(path)
        self.say(f"saved {records} records to {path} (replay it: rawloop replay {path})")
        return False

    def do_quit(self, arg: str) -> bool:
        """quit (q): end the run here (nothing more is sent) and leave."""
        if not self.debugger.ended:
            self._show(self.debugger.quit())
        return True

    do_q = do_quit
    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        """The end of the input: the run goes on to its end, then the session ends."""
        if self.interactive:
            self.stdout.write("\n")
        if not self.debugger.ended:
            self.say("end of input: going on to the end of the run")
            self._show(self.debugger.finish())
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _go(self, step: Any) -> None:
        dbg = self.debugger
        if dbg.ended:
            raise StepError(f"the run has ended ({dbg.end_reason}); look around, save it, or quit")
        self._show(step())

    def _show(self, pause: Pause) -> None:
        if pause.ended:
            self.prompt = "(rawloop end) "
            self._end(pause)
            return
        self.prompt = f"(rawloop {pause.iteration}) "
        why = [r for r in pause.reasons if r != "step"]
        self.say(
            f"> paused at iteration {pause.iteration}" + (f": {'; '.join(why)}" if why else "")
        )
        self._where()

    def _end(self, pause: Pause) -> None:
        dbg = self.debugger
        result = pause.result
        if pause.error is not None:
            self.say(f"the run failed: {type(pause.error).__name__}: {pause.error}")
        if result is not None:
            self.say(
                f"the run ended: {result.stop_reason} after "
                f"{_count(result.iterations, 'iteration')} ({_usage(result.usage)})"
            )
            if result.turns and result.turns[-1].text:
                self.say(f"  final text: {shorten(result.turns[-1].text, 200)}")
        if dbg.replaying:
            departure = dbg.departure
            if departure is not None:
                line = (
                    f"  replay: left the recording at iteration {departure.iteration} "
                    f"({departure.difference.path}), --after-edit {departure.mode}"
                )
                ignored = dbg.divergences_ignored()
                if ignored:
                    line += (
                        f": {_count(ignored, 'request')} off the recording answered from it anyway"
                    )
                self.say(line)
            elif pause.error is None:
                self.say("  replay: every request matched the recording")
        for hit in dbg.end_hits():
            self.say(f"  {hit} (in the last turn)")

    def _where(self) -> None:
        dbg = self.debugger
        state = dbg.state
        if dbg.ended:
            self.say(f"the run has ended: {dbg.end_reason} | model {state.model} | {state.dialect}")
        else:
            self.say(
                f"iteration {state.iteration} (request {state.iteration + 1} of at most "
                f"{dbg.loop.max_iterations}) | model {state.model} | {state.dialect} | {self.title}"
            )
        turn = state.last_turn
        if turn is None:
            self.say("  last decision: none yet (the first request is next)")
        else:
            self.say(f"  last decision (iteration {state.iteration - 1}): {describe_turn(turn)}")
            for call in turn.calls:
                self.say(f"    call {call.name} {call.call_id} {shorten(call.arguments, 120)}")
        if state.results:
            self.say("  pending results (sent with the next request):")
            self._results(state.results, indent="    ")
        items = state.input
        if items:
            self.say(f"  input: {_count(len(items), 'item')}, the last: {_item(items[-1])}")
        self.say(f"  usage so far: {_usage(state.usage)}")
        edits = dbg.pending_edits()
        if edits:
            self.say(f"  changed here: {', '.join(describe_op(o) for o in edits)}")
        self._departure_note()
        if dbg.departure is not None:
            self.say(f"  off the recording since iteration {dbg.departure.iteration}")

    def _results(
        self, results: list[Any], *, start: int = 0, indent: str = "", full: bool = False
    ) -> None:
        if not results:
            self.say(f"{indent}no pending results")
        for i, r in enumerate(results, start=start):
            output = orjson.dumps(r.output).decode()
            flag = f" (error: {r.error.get('type')})" if r.error else ""
            self.say(
                f"{indent}[{i}] {r.name} {r.call_id} -> {output if full else shorten(output)}{flag}"
            )

    def _changed(self, ops: list[dict[str, Any]]) -> None:
        self.say(f"changed: {', '.join(describe_op(o) for o in ops)}")
        self._departure_note()

    def _departure_note(self) -> None:
        dbg = self.debugger
        found = dbg.difference_from_recording()
        if found is None:
            return
        effect = {
            "stop": "going on ends the run here (--after-edit stop)",
            "live": f"going on sends it to {dbg.live_base_url} (--after-edit live)",
            "ignore": "going on answers it with the recorded response anyway (--after-edit ignore)",
        }[dbg.after_edit]
        self.say(
            f"  the next request differs from the recorded one at {describe_difference(found)}: "
            f"{effect}"
        )

    def _path_and_json(self, arg: str, command: str) -> tuple[str, Any]:
        path, text = jsonpath.split_path(arg)
        if not path or not text:
            raise StepError(f"{command} needs a path and a JSON value: {command} PATH JSON")
        try:
            return path, orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            hint = ""
            if text[:1] not in "\"'{[-0123456789" and text not in ("true", "false", "null"):
                hint = f' (a string needs double quotes: "{shorten(text, 40)}")'
            elif text[:1] == "'":
                hint = " (JSON strings use double quotes)"
            raise StepError(f"bad JSON {shorten(text, 60)!r}: {exc}{hint}") from None


def _output_text(text: str) -> str:
    """A tool output typed at the prompt: a JSON string unquoted, anything else as typed."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str) else text


def _item(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "function_call":
        return f"function_call {item.get('name')}({shorten(str(item.get('arguments')), 60)})"
    if kind == "function_call_output":
        return (
            f"function_call_output {item.get('call_id')} -> {shorten(str(item.get('output')), 60)}"
        )
    if "role" in item:
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
        calls = item.get("tool_calls") or []
        if calls and not content:
            names = [c.get("function", {}).get("name") for c in calls if isinstance(c, dict)]
            return f"{item['role']}: calls {', '.join(str(n) for n in names)}"
        return f"{item['role']}: {shorten(str(content or ''), 80)}"
    return str(kind or "item")


def _count(n: int, noun: str) -> str:
    """``1 item``, ``3 items``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _usage(usage: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in usage.items()) or "no requests yet"


# -- the command line ----------------------------------------------------------------------


def run_cli(args: argparse.Namespace) -> int:
    """``rawloop step`` with parsed arguments (see ``rawloop.cli``); returns the exit status."""
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
