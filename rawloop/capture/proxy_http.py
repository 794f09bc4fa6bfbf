"""The HTTP messages the recording proxy forwards: the target, which headers cross, the client.

``rawloop.capture.proxy`` sends each request on with ``upstream_client()``; the
client's headers pass through ``forward_headers`` (less the hop-by-hop ones,
``host`` and ``accept-encoding``: the proxy asks for ``identity``) and the
answer's through ``answer_headers`` (less hop-by-hop and framing ones, which h11
sets for the client itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import h11
import httpx

__all__ = ["answer_headers", "forward_headers", "request_target", "upstream_client"]

# Not forwarded either way: they describe one connection, not the message.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Request headers the proxy sets itself (httpx: host, content-length; identity encoding).
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "content-length", "expect", "accept-encoding"}
# Answer headers about the upstream's framing: h11 frames the answer to the client itself.
_NOT_ANSWERED = _HOP_BY_HOP | {"content-length", "content-encoding"}


def upstream_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The proxy's own client upstream: no redirects followed, none of httpx's default headers."""
    client = httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
    )
    for name in ("accept", "accept-encoding", "user-agent", "connection"):
        del client.headers[name]  # httpx's defaults: the client's own headers go through
    return client


def request_target(request: h11.Request) -> str:
    """The path and query the client asked for (absolute-form targets lose scheme and host)."""
    target = request.target.decode("ascii", "replace")
    if "://" in target:
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return target if target.startswith("/") else "/" + target


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    """Headers named in ``Connection``: hop-by-hop too (RFC 9110 7.6.1)."""
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    return tokens


def forward_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's request headers as they go upstream."""
    dropped = _NOT_FORWARDED | _connection_tokens(headers)
    out = [(k, v) for k, v in headers if k.decode("latin-1").lower() not in dropped]
    out.append((b"accept-encoding", b"identity"))  # so that the chunks are the server's bytes
    return out


def answer_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's answer headers as they go back to the client."""
    dropped = _NOT_ANSWERED | _connection_tokens(headers)
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in dropped]
