"""``AgentClient``: a Python client of ``rawloop serve-agent``, over HTTP and WebSocket.

::

    from rawloop.client import AgentClient

    async with AgentClient("http://127.0.0.1:8000") as client:
        async with client.agents.connect("support", "cust-42") as conn:
            reply = await conn.prompt("Where is my refund?", session="billing")
            print(reply.text)
        answer = await client.prompt("support", "cust-42", "And now?")   # HTTP, JSON
        async for event, data in client.chat("Hello"):                   # SSE
            ...
        receipt = await client.dispatch("support", "cust-42", {"event": "refund"})
        done = await client.wait(receipt["dispatch_id"])

The WebSocket side is ``wsproto`` (sans-IO) over an anyio TCP stream;
``ws://`` only (put a TLS-terminating proxy in front for ``wss://``). Event
streams are read with rawloop's own SSE decoder. Errors: ``AgentClientError``
with the server's status and error document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import anyio.abc
import httpx
import orjson

from ..core.errors import RawloopError
from ..core.sse import SSEDecoder

__all__ = ["AgentClient", "AgentClientError", "AgentConnection", "Reply"]


class AgentClientError(RawloopError):
    """The agent server refused a request or the connection failed (``status``, ``error``)."""

    def __init__(
        self, message: str, *, status: int | None = None, error: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = dict(error or {})


@dataclass
class Reply:
    """One turn's answer over the WebSocket: the final text and every event, in order."""

    text: str
    done: dict[str, Any]
    events: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def session(self) -> dict[str, Any]:
        return dict(self.done.get("session") or {})


def _error_of(response: httpx.Response) -> AgentClientError:
    try:
        error = orjson.loads(response.content).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {"message": response.text[:500]}
    return AgentClientError(
        f"{response.request.method} {response.request.url.path} answered HTTP "
        f"{response.status_code}: {error.get('message', '')}",
        status=response.status_code,
        error=error,
    )


class AgentConnection:
    """A WebSocket to ``/agents/{name}/{id}``: ``await conn.prompt(text, session=...)``."""

    def __init__(self, stream: anyio.abc.ByteStream, connection: Any) -> None:
        self._stream = stream
        self._ws = connection
        self._pending: list[Any] = []
        self._closed = False

    async def _send(self, event: Any) -> None:
        await self._stream.send(self._ws.send(event))

    async def _next_event(self) -> Any:
        from wsproto.events import Ping

        while not self._pending:
            try:
                data = await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                data = b""
            if not data:
                self._closed = True
                raise AgentClientError("the server closed the connection")
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, Ping):
                    await self._send(event.response())
                else:
                    self._pending.append(event)
        return self._pending.pop(0)

    async def events(
        self, text: str, *, session: str | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """Send one turn and yield its events ``(name, data)`` until ``done`` or ``error``."""
        from wsproto.events import CloseConnection, Message, TextMessage

        frame: dict[str, Any] = {"message": text}
        if session is not None:
            frame["session"] = session
        await self._send(Message(data=orjson.dumps(frame).decode()))
        buffer = ""
        while True:
            event = await self._next_event()
            if isinstance(event, CloseConnection):
                self._closed = True
                raise AgentClientError(f"the server closed the connection ({event.code})")
            if not isinstance(event, TextMessage):
                continue
            buffer += event.data
            if not event.message_finished:
                continue
            parsed = orjson.loads(buffer)
            buffer = ""
            name, data = parsed.get("event"), parsed.get("data")
            yield name, data
            if name in ("done", "error"):
                return

    async def prompt(self, text: str, *, session: str | None = None) -> Reply:
        """One turn; its ``Reply``. Raises ``AgentClientError`` on an ``error`` event."""
        events: list[tuple[str, Any]] = []
        async for name, data in self.events(text, session=session):
            events.append((name, data))
            if name == "error":
                raise AgentClientError(
                    f"the turn failed: {data.get('type')}: {data.get('message')}", error=data
                )
        done = events[-1][1] if events else {}
        return Reply(text=str(done.get("text") or ""), done=done, events=events)

    async def aclose(self) -> None:
        """Close the WebSocket (the server cancels a turn still running)."""
        from wsproto.events import CloseConnection

        if not self._closed:
            self._closed = True
            with anyio.move_on_after(2, shield=True):
                with suppress(Exception):
                    await self._send(CloseConnection(code=1000))
        await self._stream.aclose()


class _Agents:
    def __init__(self, client: AgentClient) -> None:
        self._client = client

    @asynccontextmanager
    async def connect(self, name: str, id: str) -> AsyncIterator[AgentConnection]:
        """A WebSocket to agent ``name``'s instance ``id``, closed when the block ends."""
        connection = await self._client._open_websocket(_agent_path(name, id))
        try:
            yield connection
        finally:
            await connection.aclose()


def _agent_path(name: str, id: str) -> str:
    return f"/agents/{quote(name, safe='')}/{quote(id, safe='')}"


class AgentClient:
    """A client of one agent server at ``base_url`` (``http://host:port``).

    Args:
        base_url: the server's root URL.
        headers: sent with every request (``Authorization``, the pipelines headers...).
        timeout: seconds for each HTTP request (a run included).
        http_client: an ``httpx.AsyncClient`` to use (left open).
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._own_http = http_client is None
        self.agents = _Agents(self)

    def __repr__(self) -> str:
        return f"AgentClient({self.base_url!r})"

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def _post(
        self, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        try:
            response = await self._http.post(
                self.base_url + path,
                content=orjson.dumps(body),
                headers={"content-type": "application/json", **self.headers, **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise AgentClientError(f"POST {path} failed: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    async def prompt(
        self, name: str, id: str, text: str, *, session: str | None = None
    ) -> dict[str, Any]:
        """One turn over HTTP: ``{"final_response", "messages", "metadata", "session"}``."""
        body: dict[str, Any] = {"message": text}
        if session is not None:
            body["session"] = session
        response = await self._post(_agent_path(name, id), body)
        return dict(orjson.loads(response.content))

    async def run(self, instruction: str, **body: Any) -> dict[str, Any]:
        """``POST /dispatch``: one run, answered when done (the pipelines envelope)."""
        response = await self._post(
            "/dispatch", {"input": {"user_instruction": instruction}, **body}
        )
        return dict(orjson.loads(response.content))

    async def chat(self, text: str) -> AsyncIterator[tuple[str, Any]]:
        """``POST /chat``: the run's events ``(name, data)`` as they come."""
        async for event in self._events("/chat", {"message": text}):
            yield event

    async def stream(
        self, name: str, id: str, text: str, *, session: str | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """One turn of a session over SSE: its events ``(name, data)``."""
        body: dict[str, Any] = {"message": text}
        if session is not None:
            body["session"] = session
        async for event in self._events(_agent_path(name, id), body):
            yield event

    async def _events(self, path: str, body: Any) -> AsyncIterator[tuple[str, Any]]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        request = self._http.build_request(
            "POST",
            self.base_url + path,
            content=orjson.dumps(body),
            headers={**self.headers, **headers},
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise AgentClientError(f"POST {path} failed: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _error_of(response)
            decoder = SSEDecoder()
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    yield event.event, orjson.loads(event.data) if event.data else None
            for event in decoder.close():
                yield event.event, orjson.loads(event.data) if event.data else None
        finally:
            await response.aclose()

    async def dispatch(
        self,
        name: str,
        id: str,
        input: Any,
        *,
        session: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``POST /agents/{name}/{id}/dispatch``: the receipt ``{"dispatch_id", "accepted_at"}``."""
        body: dict[str, Any] = {"input": input}
        if session is not None:
            body["session"] = session
        extra = dict(headers or {})
        if idempotency_key is not None:
            extra["idempotency-key"] = idempotency_key
        response = await self._post(_agent_path(name, id) + "/dispatch", body, extra)
        return dict(orjson.loads(response.content))

    async def status(self, dispatch_id: str) -> dict[str, Any]:
        """``GET /dispatches/{dispatch_id}``."""
        try:
            response = await self._http.get(
                f"{self.base_url}/dispatches/{quote(dispatch_id, safe='')}", headers=self.headers
            )
        except httpx.HTTPError as exc:
            raise AgentClientError(f"GET /dispatches failed: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise _error_of(response)
        return dict(orjson.loads(response.content))

    async def wait(
        self, dispatch_id: str, *, timeout: float = 60.0, interval: float = 0.1
    ) -> dict[str, Any]:
        """Poll ``status`` until the dispatch is done or failed (``TimeoutError`` past ``timeout``)."""
        with anyio.fail_after(timeout):
            while True:
                status = await self.status(dispatch_id)
                if status["status"] in ("done", "failed"):
                    return status
                await anyio.sleep(interval)

    async def _open_websocket(self, path: str) -> AgentConnection:
        try:
            from wsproto import WSConnection
            from wsproto.connection import ConnectionType
            from wsproto.events import AcceptConnection, RejectConnection, Request
        except ImportError:
            raise AgentClientError(
                "the WebSocket client needs wsproto: pip install 'rawloop[serve]'"
            ) from None
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "ws"):
            raise AgentClientError(f"{self.base_url}: only http:// (ws://) servers are supported")
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        try:
            stream = await anyio.connect_tcp(host, port)
        except OSError as exc:
            raise AgentClientError(f"cannot connect to {host}:{port}: {exc}") from None
        ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        await stream.send(
            ws.send(
                Request(
                    host=f"{host}:{port}",
                    target=(parts.path.rstrip("/") + path),
                    extra_headers=extra,
                    subprotocols=[],
                )
            )
        )
        connection = AgentConnection(stream, ws)
        try:
            with anyio.fail_after(30):
                event = await connection._next_event()
        except BaseException:
            await stream.aclose()
            raise
        if isinstance(event, AcceptConnection):
            return connection
        await stream.aclose()
        status = event.status_code if isinstance(event, RejectConnection) else None
        raise AgentClientError(
            f"the server refused the WebSocket to {path} (HTTP {status})", status=status
        )
