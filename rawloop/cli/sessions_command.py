"""``rawloop sessions list|show|export``: the sessions ``serve-agent`` keeps, as traces."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from ..core.errors import ConfigurationError
from .common import use_color

__all__ = ["add_commands"]


def _store(args: argparse.Namespace) -> Any:
    from ..serve.harness import open_store

    store = open_store(args.store)
    path = getattr(store, "path", None)  # a SQLite store is a file, which must exist
    if isinstance(path, Path) and not path.exists():
        raise ConfigurationError(f"no session store at {path} (pass --store FILE)")
    return store


def _key(args: argparse.Namespace) -> Any:
    from ..serve.store import SessionKey

    try:
        return SessionKey(args.agent, args.id, args.session)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _trace_bytes(args: argparse.Namespace) -> bytes:
    async def export() -> bytes:
        async with _store(args) as store:
            return bytes(await store.export(_key(args), args.turn))

    return anyio.run(export)


def _cmd_list(args: argparse.Namespace) -> int:
    async def listing() -> list[Any]:
        async with _store(args) as store:
            return list(await store.sessions(agent=args.agent, id=args.id))

    for info in anyio.run(listing):
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.updated_at))
        sys.stdout.write(
            f"{info.key.agent}\t{info.key.id}\t{info.key.name}\t{info.turns} turns\t"
            f"{info.size} bytes\t{updated}Z\n"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from ..trace.format import Trace
    from ..trace.show import render

    trace = Trace.parse(_trace_bytes(args), f"session {_key(args)}")
    terminal = sys.stdout.isatty()
    sys.stdout.write(
        render(
            trace,
            color=use_color(),
            full=args.full,
            width=shutil.get_terminal_size().columns if terminal else None,
        )
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    data = _trace_bytes(args)
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def add_commands(sub: Any) -> None:
    """Add ``sessions`` and its subcommands to ``sub`` (an argparse subparsers object)."""
    parser = sub.add_parser(
        "sessions",
        help="list, show and export the sessions serve-agent keeps",
        description="The sessions of serve-agent's store (default $RAWLOOP_HOME/sessions.db, "
        "else ~/.local/share/rawloop/sessions.db). An exported turn replays on its own "
        "(rawloop replay); a whole session exports as one run per turn.",
    )
    commands = parser.add_subparsers(dest="sessions_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", metavar="FILE|URL", help="the session store (default: see above)")

    p = commands.add_parser("list", help="one line per session: agent, id, name, turns, size")
    common(p)
    p.add_argument("--agent", help="only this agent's sessions")
    p.add_argument("--id", help="only this instance's sessions")
    p.set_defaults(func=_cmd_list)

    for name, func, help in (
        ("show", _cmd_show, "print a session as a timeline"),
        ("export", _cmd_export, "write a session (or one turn) as a rawloop trace"),
    ):
        p = commands.add_parser(name, help=help)
        common(p)
        p.add_argument("agent", help="the agent name")
        p.add_argument("id", help="the instance id")
        p.add_argument("session", nargs="?", default="default", help="the session (default)")
        p.add_argument(
            "--turn",
            type=int,
            metavar="K",
            help="only turn K (0 first, -1 last): a trace that replays on its own",
        )
        if name == "show":
            p.add_argument("--full", action="store_true", help="show every text whole")
        else:
            p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default stdout)")
        p.set_defaults(func=func)
