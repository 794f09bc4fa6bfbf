"""``TraceForwarder``: post a run's trace events to the tool proxy as they happen.

The pipelines envelope gives a run a tool proxy URL and a run token. Besides
the tool calls (``RemoteTool``), the proxy gets the run's progress: one event
per assistant turn and one per tool result, each a JSON ``POST`` to
``{proxy_url}/trace`` with ``Authorization: Bearer {token}``::

    {"type": "assistant_turn", "iteration": 0, "model": "gpt-5.5",
     "text": "...", "tool_calls": [{"call_id", "name", "arguments"}],
     "usage": {...}, "stop_reason": "tool_calls" | "completed" | ...}
    {"type": "tool_result", "iteration": 0, "call_id": "...", "name": "...",
     "output": "...", "error": null | {"type", "message"}}

Forwarding never breaks a run: a proxy that fails or is slow is logged (never
with the token) and the run goes on. The token is not in ``repr()``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from ..loop.hooks import DecisionInfo, ResultInfo
from .remote_tools import remote_session

__all__ = ["TraceForwarder", "proxied_run"]

logger = logging.getLogger("rawloop.http")


class TraceForwarder:
    """A hook posting each assistant turn and tool result to ``{proxy_url}/trace``.

    Args:
        proxy_url: the tool proxy's root URL.
        token: the run token, sent as a bearer token (never logged).
        timeout: seconds one post may take.
        http_client: a client to post with (left open); one per post otherwise.
    """

    def __init__(
        self,
        proxy_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = proxy_url.rstrip("/") + "/trace"
        self._token = token
        self.timeout = timeout
        self.http_client = http_client
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"TraceForwarder({self.url!r})"

    async def on_decision(self, info: DecisionInfo) -> None:
        turn = info.turn
        await self._post(
            {
                "type": "assistant_turn",
                "iteration": info.iteration,
                "model": turn.model,
                "text": turn.text,
                "tool_calls": [
                    {"call_id": c.call_id, "name": c.name, "arguments": c.arguments}
                    for c in turn.calls
                ],
                "usage": turn.usage,
                "stop_reason": turn.finish_reason or turn.status,
            }
        )

    async def on_result(self, info: ResultInfo) -> None:
        result = info.result
        await self._post(
            {
                "type": "tool_result",
                "iteration": info.iteration,
                "call_id": result.call_id,
                "name": result.name,
                "output": result.output,
                "error": result.error,
            }
        )

    async def _post(self, event: dict[str, Any]) -> None:
        headers = {"content-type": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        content = orjson.dumps(event, default=str)
        try:
            if self.http_client is not None:
                response = await self.http_client.post(
                    self.url, content=content, headers=headers, timeout=self.timeout
                )
            else:
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.post(self.url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            self.failed += 1
            # The exception's text names the URL, never the headers.
            logger.warning(
                "rawloop.http: trace event to %s failed: %s", self.url, type(exc).__name__
            )
            return
        if response.status_code >= 400:
            self.failed += 1
            logger.warning(
                "rawloop.http: trace event to %s answered HTTP %d", self.url, response.status_code
            )
            return
        self.sent += 1


@contextlib.contextmanager
def proxied_run(
    proxy_url: str | None, token: str | None, *, forward_trace: bool = True
) -> Iterator[list[Any]]:
    """What a run with a tool proxy needs: ``RemoteTool``s call it within the block.

    Yields the hooks the run adds: a ``TraceForwarder`` to the proxy when there
    is one and ``forward_trace`` is true, else none.
    """
    if not proxy_url:
        yield []
        return
    with remote_session(proxy_url, token):
        yield [TraceForwarder(proxy_url, token)] if forward_trace else []
