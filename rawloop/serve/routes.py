"""Which route an HTTP request asks for: the path and method table of ``AgentApp``."""

from __future__ import annotations

from typing import NamedTuple

from .asgi import HTTPProblem

__all__ = ["DEFAULT_AGENT", "Route", "match_route"]

DEFAULT_AGENT = "default"


class Route(NamedTuple):
    """A matched route: its name, the agent, the conversation id (``None`` for none)."""

    name: str
    agent: str
    conversation: str | None


def match_route(path: str, method: object) -> Route:
    """The route of ``method path``: 404 for an unknown path, 405 for the wrong method.

    Names and ids are taken as written; ``path_name`` checks them afterwards.
    """
    parts = path.split("/")
    expected = "GET" if parts[1:2] == ["dispatches"] else "POST"
    if path in ("/dispatch", "/chat"):
        route = Route(path[1:], DEFAULT_AGENT, None)
    elif len(parts) == 4 and parts[:2] == ["", "agents"] and parts[2] and parts[3]:
        route = Route("agent", parts[2], parts[3])
    elif len(parts) == 5 and parts[:2] == ["", "agents"] and parts[4] == "dispatch":
        route = Route("agent_dispatch", parts[2], parts[3])
    elif len(parts) == 3 and parts[1] == "dispatches" and parts[2]:
        route = Route("status", DEFAULT_AGENT, None)
    else:
        raise HTTPProblem(404, f"no route {path}", type="not_found")
    if method != expected:
        raise HTTPProblem(
            405,
            f"{path} answers {expected}, not {method}",
            type="method_not_allowed",
            headers=[(b"allow", expected.encode())],
        )
    return route
