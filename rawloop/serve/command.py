"""``rawloop serve-agent``: load a target and serve it with uvicorn."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from ..core.errors import ConfigurationError
from ..loop.tool_files import load_module
from .app import MAX_BODY_SIZE, app

__all__ = ["add_serve_agent_command", "load_target", "serve_agent"]

# -- serving ----------------------------------------------------------------------------

_APP_OPTIONS = ("sessions_dir", "authorize", "heartbeat", "max_body_size")


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


def serve_agent(target: str, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> int:
    """Serve the loop or factory ``target`` (``module:attr``) with uvicorn; returns 0.

    ``sessions_dir``, ``authorize`` (a callable or a ``module:attr`` string),
    ``heartbeat`` and ``max_body_size`` go to ``app()``; any other option to
    ``uvicorn.run`` (``log_level="info"``...). Raises ``ConfigurationError``
    when uvicorn is missing or the target cannot be loaded.
    """
    try:
        uvicorn = importlib.import_module("uvicorn")
    except ImportError:
        raise ConfigurationError(
            "serving needs uvicorn, which is not installed: pip install 'rawloop[serve]'"
        ) from None
    app_options = {name: options.pop(name) for name in _APP_OPTIONS if name in options}
    if isinstance(app_options.get("authorize"), str):
        app_options["authorize"] = load_target(app_options["authorize"])
    agent = load_target(target)
    asgi = app(agent, **app_options)
    uvicorn.run(asgi, host=host, port=port, **options)
    return 0


def _cmd_serve_agent(args: argparse.Namespace) -> int:
    return serve_agent(
        args.target,
        host=args.host,
        port=args.port,
        sessions_dir=args.sessions_dir,
        authorize=args.authorize,
        heartbeat=args.heartbeat,
        max_body_size=args.max_body_size,
        log_level=args.log_level,
    )


def add_serve_agent_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve-agent`` to the ``rawloop`` command line's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-agent",
        help="serve a Loop over HTTP (/dispatch, /chat, /agents/NAME/ID) with uvicorn",
        description="Serve TARGET, a rawloop Loop or a factory(agent_name) -> Loop named as "
        "MODULE:ATTR or FILE.py:ATTR, as an ASGI app with uvicorn "
        "(pip install 'rawloop[serve]').",
    )
    p.add_argument("target", help="MODULE:ATTR or FILE.py:ATTR naming a Loop or a factory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--sessions-dir", metavar="DIR", help="keep /agents/NAME/ID conversations here")
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
    p.add_argument("--log-level", default="info", help="uvicorn's log level (default info)")
    p.set_defaults(func=_cmd_serve_agent)
    return p
