"""What a request to the agent app carries: its context for tools, and its checked fields.

``RequestContext`` is what tools see through ``current_request``; the helpers
below turn a request body's fields into values or an ``HTTPProblem`` naming
the field (400 for a bad name or a body that is not JSON, 422 for a field of
the wrong shape).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..core.redact import redact_headers
from ..loop.validate import json_type
from .asgi import HTTPProblem, Receive, Scope, read_body
from .sessions import check_name

__all__ = [
    "Authorize",
    "RequestContext",
    "current_request",
    "field_of",
    "json_body",
    "path_name",
    "proxy_url_of",
    "request_context",
    "session_name",
    "spoken_type",
    "string_field",
]


@dataclass(frozen=True)
class RequestContext:
    """The HTTP request a run serves, as tools see it through ``current_request``.

    ``route`` is ``dispatch``, ``chat`` or ``agent``. ``headers`` are lower-cased
    with credentials (``authorization``, cookies, ``x-run-token``...) redacted;
    the run token itself is ``run_token``, left out of ``repr``.
    """

    method: str
    path: str
    route: str
    agent: str
    conversation_id: str | None = None
    session: str | None = None
    proxy_url: str | None = None
    run_token: str | None = field(default=None, repr=False)
    client: tuple[str, int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    scope: Scope = field(default_factory=dict, repr=False, compare=False)


#: The request the current run serves (``None`` outside one).
current_request: ContextVar[RequestContext | None] = ContextVar(
    "rawloop.http.current_request", default=None
)

Authorize = Callable[[RequestContext, str, str | None], bool | Awaitable[bool]]


# Never shown to tools as plain headers: they get run_token instead.
_SECRET_HEADERS = ("x-run-token", "x-pipelines-run-token")
# The pipelines envelope's names first, then the generic ones.
_PROXY_HEADERS = ("x-pipelines-odyssey-proxy-url", "x-tool-proxy-url")
_TOKEN_HEADERS = ("x-pipelines-run-token", "x-run-token")
_PROXY_FIELDS = ("odyssey_proxy_url", "proxy_url")


def request_context(
    scope: Scope, path: str, route: str, agent: str, conversation: str | None
) -> RequestContext:
    headers: dict[str, str] = {}
    for key, value in scope.get("headers") or ():
        headers[bytes(key).decode("latin-1").lower()] = bytes(value).decode("latin-1")
    client = scope.get("client")
    return RequestContext(
        method=str(scope.get("method", "")),
        path=path,
        route=route,
        agent=agent,
        conversation_id=conversation,
        proxy_url=next((headers[h] for h in _PROXY_HEADERS if headers.get(h)), None),
        run_token=next((headers[h] for h in _TOKEN_HEADERS if headers.get(h)), None),
        client=(str(client[0]), int(client[1])) if client else None,
        headers=redact_headers(headers, _SECRET_HEADERS),
        scope=scope,
    )


def path_name(value: object, field: str) -> str:
    try:
        return check_name(value, field)
    except ValueError as exc:
        raise HTTPProblem(400, str(exc), field=field, type="invalid_name") from None


def session_name(body: Mapping[str, Any]) -> str | None:
    """The body's optional ``session`` name, checked (400 when it is not a name)."""
    session = body.get("session")
    return path_name(session, "session") if session is not None else None


def field_of(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        expected = "an object" if kind is dict else kind.__name__
        raise HTTPProblem(
            422,
            f"{name} must be {expected}, not {spoken_type(value)}"
            if name in body
            else f"{name} is missing",
            field=name,
            type="invalid_field",
        )
    return value


def string_field(value: object, field: str) -> str:
    if isinstance(value, str) and value.strip():
        return value
    problem = (
        "is missing"
        if value is None
        else (
            "is empty" if isinstance(value, str) else f"must be a string, not {spoken_type(value)}"
        )
    )
    raise HTTPProblem(422, f"{field} {problem}", field=field, type="invalid_field")


def proxy_url_of(body: dict[str, Any], context: RequestContext) -> str | None:
    """The tool proxy URL: the body's ``odyssey_proxy_url`` or ``proxy_url``, else the header's."""
    for name in _PROXY_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise HTTPProblem(
                422,
                f"{name} must be an http(s) URL string, not {spoken_type(value)}"
                if not isinstance(value, str)
                else f"{name} must be an http(s) URL",
                field=name,
                type="invalid_field",
            )
        return value
    return context.proxy_url


# How error messages name a JSON value's type ("must be a string, not a number").
_SPOKEN_TYPES = {
    "null": "null",
    "boolean": "a boolean",
    "integer": "a number",
    "number": "a number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
}


def spoken_type(value: object) -> str:
    name = json_type(value)
    return _SPOKEN_TYPES.get(name, name)


async def json_body(scope: Scope, receive: Receive, limit: int) -> dict[str, Any]:
    """The request body as a JSON object (400 when it is empty or not JSON, 422 when not an object)."""
    raw = await read_body(scope, receive, limit)
    if not raw.strip():
        raise HTTPProblem(400, "the request body is empty: send a JSON object", type="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(
            400, f"the request body is not JSON: {exc}", type="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise HTTPProblem(
            422,
            f"the request body must be a JSON object, not {spoken_type(body)}",
            type="invalid_field",
        )
    return body
