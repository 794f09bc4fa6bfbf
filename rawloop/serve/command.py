"""``rawloop serve-agent``: load agents and serve them with uvicorn.

TARGET is ``MODULE:ATTR`` or ``FILE.py:ATTR`` (a Loop, a Profile, a factory, a
mapping of them) or a folder: every ``*.py`` module of ``agents/`` is an agent
named after its file (``rawloop.serve.agents.load_agents_dir``).

Before binding, the command refuses to start when a served agent has no API
key for a non-loopback endpoint (naming the variable), and warns loudly when
it listens on a non-loopback address without ``--authorize``: anyone who can
reach it could then run the agents, on your API key.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from ..core.addresses import is_loopback_host
from ..core.errors import ConfigurationError
from ..loop.tool_files import load_module
from .agents import Agents, load_agents_dir, missing_api_keys
from .asgi import MAX_BODY_SIZE
from .store import DEFAULT_LEASE, SessionLimits
from .store_sqlite import default_store_path

__all__ = ["add_serve_agent_command", "load_target", "serve_agent"]

# -- serving ----------------------------------------------------------------------------

_APP_OPTIONS = (
    "store",
    "sessions_dir",
    "authorize",
    "heartbeat",
    "max_body_size",
    "session_limits",
    "dispatch_workers",
    "dispatch_lease",
    "forward_trace",
)


def load_target(target: str) -> Any:
    """The object ``module:attr`` (or ``path/to/file.py:attr``) names.

    ``attr`` may be dotted (``agents:registry.get``). The current directory
    is importable, as with uvicorn.
    """
    source, colon, attr = target.rpartition(":")
    if not colon or not source or not attr:
        raise ConfigurationError(
            f"{target!r}: expected MODULE:ATTR, e.g. myagent:loop or agents/main.py:make_loop"
        )
    if source.endswith(".py") or "/" in source or os.sep in source:
        module: Any = load_module(source)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            raise ConfigurationError(f"{target!r}: cannot import {source}: {exc}") from exc
    value = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"{target!r}: {source} has no attribute {attr}") from None
    return value


def load_agents(target: str) -> Agents:
    """The agents ``target`` names: a folder of agent modules, or ``MODULE:ATTR``."""
    if ":" not in target and Path(target).is_dir():
        return Agents(load_agents_dir(target))
    value = load_target(target)
    return value if isinstance(value, Agents) else Agents(value)


def check_before_serving(
    agents: Agents, host: str, authorize: object, *, check_keys: bool = True
) -> list[str]:
    """The warnings to print before binding; ``ConfigurationError`` for a missing API key."""
    if check_keys:
        problems = missing_api_keys(agents)
        if problems:
            raise ConfigurationError(
                "refusing to serve: " + "; ".join(problems) + " (set it, or point the agent "
                "at a loopback base_url)"
            )
    if not is_loopback_host(host) and authorize is None:
        return [
            f"listening on {host}, not loopback, without --authorize: anyone who can reach it "
            "can run the agents on your API key and read their sessions"
        ]
    return []


def serve_agent(target: str, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> int:
    """Serve ``target`` (``module:attr`` or a folder of agent modules) with uvicorn; returns 0.

    ``store``, ``sessions_dir``, ``authorize`` (a callable or a ``module:attr``
    string), ``heartbeat``, ``max_body_size``, ``session_limits``,
    ``dispatch_workers``, ``dispatch_lease`` and ``forward_trace`` go to
    ``app()``; ``check_keys=False`` skips the API key check; any other option
    to ``uvicorn.run`` (``log_level="info"``...). Raises
    ``ConfigurationError`` when uvicorn is missing, the target cannot be
    loaded or an agent has no API key.
    """
    try:
        uvicorn = importlib.import_module("uvicorn")
    except ImportError:
        raise ConfigurationError(
            "serving needs uvicorn, which is not installed: pip install 'rawloop[serve]'"
        ) from None
    check_keys = bool(options.pop("check_keys", True))
    app_options = {name: options.pop(name) for name in _APP_OPTIONS if name in options}
    if isinstance(app_options.get("authorize"), str):
        app_options["authorize"] = load_target(app_options["authorize"])
    agents = load_agents(target)
    for warning in check_before_serving(
        agents, host, app_options.get("authorize"), check_keys=check_keys
    ):
        sys.stderr.write(f"rawloop serve-agent: warning: {warning}\n")
    from .app import app  # the server stack loads only when serving, not for `rawloop --help`

    asgi = app(agents, **app_options)
    if "ws" not in options and importlib.util.find_spec("wsproto") is not None:
        options["ws"] = "wsproto"
    uvicorn.run(asgi, host=host, port=port, **options)
    return 0


def _cmd_serve_agent(args: argparse.Namespace) -> int:
    limits = SessionLimits(
        **{
            name: value
            for name, value in (
                ("max_turns", args.max_session_turns),
                ("max_bytes", args.max_session_bytes),
            )
            if value is not None
        }
    )
    return serve_agent(
        args.target,
        host=args.host,
        port=args.port,
        store=args.store,
        sessions_dir=args.sessions_dir,
        authorize=args.authorize,
        heartbeat=args.heartbeat,
        max_body_size=args.max_body_size,
        session_limits=limits,
        dispatch_workers=args.dispatch_workers,
        dispatch_lease=args.dispatch_lease,
        log_level=args.log_level,
    )


def add_serve_agent_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve-agent`` to the ``rawloop`` command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-agent",
        help="serve agents over HTTP and WebSocket (/dispatch, /chat, /agents/NAME/ID) with uvicorn",
        description="Serve TARGET, a folder of agent modules (each FILE.py is the agent FILE) or "
        "MODULE:ATTR / FILE.py:ATTR naming a Loop, a Profile or a factory(context) -> Loop, "
        "as an ASGI app with uvicorn (pip install 'rawloop[serve]'). Sessions are kept in "
        f"a SQLite file, by default {default_store_path()} ($RAWLOOP_HOME/sessions.db).",
    )
    p.add_argument("target", help="agents/ (a folder), MODULE:ATTR or FILE.py:ATTR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--store",
        metavar="FILE|URL",
        help="the session store: a SQLite file (default above) or postgresql://... for several "
        "hosts (pip install 'rawloop[postgres]'); default $RAWLOOP_STORE when set",
    )
    p.add_argument(
        "--sessions-dir",
        metavar="DIR",
        help="session files of an older rawloop: imported into DIR/sessions.db",
    )
    p.add_argument(
        "--authorize",
        metavar="MODULE:ATTR",
        help="a function (request, agent, id) -> bool deciding access",
    )
    p.add_argument(
        "--heartbeat", type=float, default=15.0, help="seconds between SSE heartbeats (0: none)"
    )
    p.add_argument(
        "--max-body-size", type=int, default=MAX_BODY_SIZE, help="largest request body in bytes"
    )
    p.add_argument("--max-session-turns", type=int, help="turns a session may hold")
    p.add_argument("--max-session-bytes", type=int, help="bytes a session may hold")
    p.add_argument(
        "--dispatch-workers", type=int, default=1, help="background dispatch workers (default 1)"
    )
    p.add_argument(
        "--dispatch-lease",
        type=float,
        default=DEFAULT_LEASE,
        help="seconds before the dispatches and session locks of a process that died are "
        f"taken over (default {DEFAULT_LEASE:g})",
    )
    p.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")
    p.set_defaults(func=_cmd_serve_agent)
    return p
