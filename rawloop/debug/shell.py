"""The ``rawloop step`` prompt: a ``cmd.Cmd`` around a ``Debugger``.

Each command is a ``do_*`` method that calls the debugger and prints what it
did; what the run looks like is worded in ``rawloop.debug.views``. A command
that cannot be done prints ``*** why`` (pdb style), counts as a failure for
the exit status, and the session goes on. ``rawloop.debug.console`` builds the
debugger from the command line and runs this shell.
"""

from __future__ import annotations

import cmd
import inspect
from typing import IO, Any

import orjson

from ..core import jsonpath
from ..core.errors import RawloopError
from ..core.words import plural
from .breakpoints import parse_condition
from .debugger import Debugger, Pause
from .errors import StepError
from .views import (
    departure_note,
    end_lines,
    raw_lines,
    result_lines,
    where_lines,
)
from .wording import describe_op, shorten

__all__ = ["StepShell"]

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
  clear [N]                remove conditional breakpoint N, or all of them (asks first)
  after-edit [stop|live|ignore]  what a replay does once an edit takes it off the recording
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
        if stripped.startswith("#"):
            return ""
        name, sep, rest = stripped.partition(" ")
        # cmd.Cmd reads a command name as identifier characters only.
        return f"after_edit{sep}{rest}" if name == "after-edit" else stripped

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
        method = getattr(self, f"do_{name.replace('-', '_')}", None)
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
        for line in raw_lines(self.debugger, what):
            self.say(line)
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
                self.say(f"{c.number}: {c} (hit {plural(c.hits, 'time')})")
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
        """clear [N]: remove conditional breakpoint N; no N removes all of them, after asking.

        The answer (y or yes) is read from the terminal, or in a script from
        the next line; anything else, or the end of the input, keeps them.
        """
        text = arg.strip()
        if text and not (text.isascii() and text.isdigit()):
            raise StepError(f"clear takes a breakpoint number, not {text!r}")
        if not text:
            have = len(self.debugger.conditions)
            if not have:
                self.say("no conditional breakpoints")
                return False
            if not self._confirm(f"Clear all {plural(have, 'breakpoint')}? (y/n) "):
                self.say("kept them")
                return False
        removed = self.debugger.clear_conditions(int(text) if text else None)
        self.say(f"cleared {plural(len(removed), 'breakpoint')}")
        return False

    do_cl = do_clear

    def do_save(self, arg: str) -> bool:
        """save FILE: write the run so far as a trace, edits included (.jsonl, or .jsonl.gz).

        The file replays identically: rawloop replay FILE. Saved before the
        run ended, it is a fork: it ends at this breakpoint with stop reason
        saved-fork (a replay stops there too), not cut short like a crash.
        """
        path = arg.strip()
        if not path:
            raise StepError("save needs a file name, e.g. save run.jsonl")
        dbg = self.debugger
        fork = not dbg.ended
        records = dbg.save(path)
        what = f"a fork at iteration {dbg.state.iteration}, " if fork else ""
        self.say(f"saved {records} records to {path} ({what}replay it: rawloop replay {path})")
        return False

    def do_after_edit(self, arg: str) -> bool:
        """after-edit [stop|live|ignore]: what a replay does once an edit leaves the recording.

        stop: the run ends before sending the edited request. live: it goes on
        against --base-url (given when the session started). ignore: it goes on
        with the recorded responses. No argument shows the current mode. It can
        change until the run has left the recording.
        """
        mode = arg.strip()
        dbg = self.debugger
        if mode:
            dbg.set_after_edit(mode)
        elif not dbg.replaying:
            raise StepError("after-edit is for replays; a live run has no recording to leave")
        self.say(f"after-edit {dbg.after_edit}")
        note = departure_note(dbg) if mode and dbg.paused else None
        if note:
            self.say(note)
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
        for line in end_lines(self.debugger, pause):
            self.say(line)

    def _where(self) -> None:
        for line in where_lines(self.debugger, self.title):
            self.say(line)

    def _results(self, results: list[Any], *, start: int = 0, full: bool = False) -> None:
        for line in result_lines(results, start=start, full=full):
            self.say(line)

    def _changed(self, ops: list[dict[str, Any]]) -> None:
        self.say(f"changed: {', '.join(describe_op(o) for o in ops)}")
        note = departure_note(self.debugger)
        if note:
            self.say(note)

    def _confirm(self, question: str) -> bool:
        """Ask a yes/no question on the session's own input (as pdb's ``clear`` does)."""
        if self.interactive:
            try:
                answer = input(question)
            except EOFError:
                answer = ""
        else:
            answer = self.stdin.readline()
            self.stdout.write(question + answer + ("" if answer.endswith("\n") else "\n"))
        return answer.strip().lower() in ("y", "yes")

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
