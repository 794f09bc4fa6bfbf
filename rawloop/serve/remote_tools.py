"""Remote tools: a tool the model calls here and a tool proxy runs elsewhere.

``RemoteTool(name, schema)`` is a ``rawloop.loop.tools.Tool`` like any ``@tool``:
put it in ``Loop(tools=[...])`` and the model sees ``name``, ``description``
and ``schema``. Its handler does not run the tool; it sends the call to a
tool proxy::

    POST {proxy_url}/tools/{name}
    Authorization: Bearer {token}
    Content-Type: application/json

    {...the arguments..., "call_id": "call_..."}

and the proxy answers ``{"response": ...}``; that value is the tool's output
(a string as is, anything else as JSON, like any handler's return). The
arguments are checked against ``schema`` before anything is sent.

Where the proxy is: the explicit ``proxy_url=`` and ``token=`` win; otherwise
they come, at run time, from ``remote_context``, a context variable an HTTP
front end sets for the request it is serving (``remote_session()`` does it
for a block). A token from the context is only ever sent to the context's
proxy URL: a tool built with its own ``proxy_url`` and no ``token`` sends no
token at all, so the front end's credential cannot leak to another host.

Failures (an HTTP error status, no connection, a timeout, an answer that is
not JSON or has no ``response``) raise ``RemoteToolError`` from the handler,
which ``run_tool`` turns into an error result the model reads. The token is
scrubbed from every message, including text echoed back by the proxy, and
never appears in ``repr()``.

``call_id``: sent when the tool machinery publishes the id of the call being
run, as ``rawloop.loop.tools.current_call_id`` (a ``ContextVar``); an argument that
is itself named ``call_id`` is never overwritten.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from ..core.errors import ConfigurationError, RawloopError
from ..loop import tools as _tools
from ..loop.tools import Tool

__all__ = [
    "RemoteContext",
    "RemoteTool",
    "RemoteToolError",
    "remote_context",
    "remote_session",
]

#: What replaces the token wherever it would have appeared.
_REDACTED = "[REDACTED]"
#: At most this much of a proxy's error body is quoted to the model.
_MAX_BODY = 500


@dataclass(frozen=True)
class RemoteContext:
    """Where remote tools send their calls during one request of an HTTP front end.

    Attributes:
        proxy_url: the tool proxy's root URL (``POST {proxy_url}/tools/{name}``).
        token: the bearer token for that proxy, or ``None`` to send none.
            Never shown by ``repr()``.
    """

    proxy_url: str
    token: str | None = field(default=None, repr=False)


#: Set by an HTTP front end for the request it serves; read by ``RemoteTool`` at call time.
remote_context: ContextVar[RemoteContext | None] = ContextVar(
    "rawloop_remote_context", default=None
)


@contextlib.contextmanager
def remote_session(proxy_url: str, token: str | None = None) -> Iterator[RemoteContext]:
    """Set ``remote_context`` for the duration of a ``with`` block, then restore it.

    Tasks started inside the block (the loop's tool calls included) inherit it.
    """
    context = RemoteContext(proxy_url, token)
    reset = remote_context.set(context)
    try:
        yield context
    finally:
        remote_context.reset(reset)


class RemoteToolError(RawloopError):
    """A remote tool call failed: the proxy was unreachable, slow, or answered an error.

    The message never holds the token. ``status`` is the HTTP status when the
    proxy answered one.
    """

    def __init__(self, message: str, *, tool: str, status: int | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.status = status


class RemoteTool(Tool[..., Any]):
    """A tool whose calls are run by a tool proxy over HTTP.

    Args:
        name: the tool's name, for the model and in the proxy URL.
        schema: the JSON schema (type object) of the arguments.
        proxy_url: the proxy's root URL; else ``remote_context``'s at call time.
        token: the bearer token; else ``remote_context``'s, and only when the
            URL came from there too.
        description: what the tool does, for the model.
        timeout: seconds one call to the proxy may take (connect, send and read).
        http_client: an ``httpx.AsyncClient`` to send with (tests, connection
            reuse); it is not closed. By default each call opens its own.
        strict: ask for OpenAI's strict mode (the schema must be strict-compatible).

    Raises:
        ConfigurationError: the name or the schema cannot be used.
    """

    def __init__(
        self,
        name: str,
        schema: Mapping[str, Any],
        *,
        proxy_url: str | None = None,
        token: str | None = None,
        description: str = "",
        timeout: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        strict: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ConfigurationError(
                f"remote tool {name!r}: timeout must be positive, not {timeout}"
            )
        self.proxy_url: str | None = proxy_url
        self.timeout: float = timeout
        self.http_client: httpx.AsyncClient | None = http_client
        self._token = token
        super().__init__(
            self._call, name=name, description=description, schema=schema, strict=strict
        )
        # Tool copied these from the bound method; name the tool, not the method.
        self.__name__ = self.__qualname__ = self.name
        self.__doc__ = self.description or None

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any], **options: Any) -> RemoteTool:
        """A remote tool from a function definition as a tool registry stores it.

        Takes the Responses shape (``{"type": "function", "name", "description",
        "parameters", "strict"}``) or the Chat Completions one (the same inside
        ``"function"``); ``options`` are the keyword arguments of ``RemoteTool``.
        """
        function = definition.get("function", definition)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ConfigurationError(f"not a function tool definition: {definition!r}")
        options.setdefault("description", function.get("description") or "")
        options.setdefault("strict", bool(function.get("strict", False)))
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        return cls(function["name"], parameters, **options)

    def __repr__(self) -> str:
        where = self.proxy_url if self.proxy_url is not None else "remote_context"
        return f"<RemoteTool {self.name!r} via {where}>"

    def endpoint(self) -> tuple[str, str | None]:
        """The URL a call goes to now and the token sent with it.

        Raises:
            RemoteToolError: no proxy URL, neither given nor in ``remote_context``.
        """
        context = remote_context.get()
        if self.proxy_url is not None:
            base, token = self.proxy_url, self._token
            # The context's token belongs to the context's proxy, nowhere else.
            if token is None and context is not None and _same_root(context.proxy_url, base):
                token = context.token
        elif context is not None:
            base = context.proxy_url
            token = self._token if self._token is not None else context.token
        else:
            raise RemoteToolError(
                f"remote tool {self.name!r}: no tool proxy to call; pass proxy_url= "
                "or set rawloop.serve.remote_tools.remote_context",
                tool=self.name,
            )
        return f"{base.rstrip('/')}/tools/{self.name}", token

    async def _call(self, **arguments: Any) -> Any:
        """Send one call to the proxy and return its ``response``."""
        url, token = self.endpoint()
        body = dict(arguments)
        call_id = _current_call_id()
        if call_id is not None and "call_id" not in body:
            body["call_id"] = call_id
        headers = {"content-type": "application/json", "accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
        try:
            if self.http_client is not None:
                response = await self._send(self.http_client, url, headers, content)
            else:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await self._send(client, url, headers, content)
        except httpx.TimeoutException:
            raise self._error(
                f"the tool proxy at {url} did not answer within {self.timeout:g} s", token
            ) from None
        except httpx.HTTPError as exc:
            # from None: the httpx exception holds the request, headers and all.
            raise self._error(
                f"could not reach the tool proxy at {url}: {type(exc).__name__}: {exc}", token
            ) from None
        return self._output(response, url, token)

    async def _send(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str], content: bytes
    ) -> httpx.Response:
        return await client.post(url, headers=headers, content=content, timeout=self.timeout)

    def _output(self, response: httpx.Response, url: str, token: str | None) -> Any:
        status = response.status_code
        if status >= 400:
            detail = _error_detail(response.content)
            raise self._error(
                f"the tool proxy at {url} answered HTTP {status}"
                + (f": {detail}" if detail else ""),
                token,
                status,
            )
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self._error(
                f"the tool proxy at {url} answered HTTP {status} with a body that is not "
                f"JSON: {_snippet(response.content)!r}",
                token,
                status,
            ) from None
        if not isinstance(data, dict) or "response" not in data:
            detail = _error_detail(response.content) if isinstance(data, dict) else ""
            raise self._error(
                f"the tool proxy at {url} answered HTTP {status} without a 'response' field"
                + (f": {detail}" if detail else f": {_snippet(response.content)!r}"),
                token,
                status,
            )
        return data["response"]

    def _error(self, message: str, token: str | None, status: int | None = None) -> RemoteToolError:
        return RemoteToolError(
            f"remote tool {self.name!r}: {_scrub(message, token)}", tool=self.name, status=status
        )


def _current_call_id() -> str | None:
    """The id of the function call being run, if ``rawloop.loop.tools`` publishes it."""
    var = getattr(_tools, "current_call_id", None)
    if isinstance(var, ContextVar):
        value = var.get(None)
        return value if isinstance(value, str) else None
    return None


def _same_root(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _scrub(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` replaced."""
    if token:
        text = text.replace(token, _REDACTED)
    return text


def _snippet(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return text if len(text) <= _MAX_BODY else text[:_MAX_BODY] + "..."


def _error_detail(data: bytes) -> str:
    """What a proxy's error body says: its ``error`` (message) if JSON, else its text."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _snippet(data)
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed.get("detail", parsed.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            text = error if isinstance(error, str) else orjson.dumps(error).decode()
            return _snippet(text.encode())
    return _snippet(data)
