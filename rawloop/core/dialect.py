"""The two wire dialects behind one interface, so the loop never branches on which."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import chat, chat_request, responses, responses_request
from .accumulator import Accumulator
from .errors import ConfigurationError

__all__ = ["DIALECTS", "Dialect", "api_root", "dialect_of_path", "get_dialect"]


@dataclass(frozen=True)
class Dialect:
    """What the loop needs to know about one API: where to POST and how to shape bodies."""

    name: str
    path: str
    accumulator: Callable[[], Accumulator]
    normalize_input: Callable[[Any], list[dict[str, Any]]]
    build_request: Callable[..., dict[str, Any]]
    tool_outputs: Callable[[list[tuple[str, str]]], list[dict[str, Any]]]
    tool_schema: Callable[[str, str, dict[str, Any]], dict[str, Any]]


_DIALECTS = {
    "responses": Dialect(
        "responses",
        "/responses",
        responses.ResponsesAccumulator,
        responses_request.normalize_input,
        responses_request.build_request,
        responses_request.tool_result_items,
        responses_request.tool_schema,
    ),
    "chat": Dialect(
        "chat",
        "/chat/completions",
        chat.ChatAccumulator,
        chat_request.normalize_input,
        chat_request.build_request,
        chat_request.tool_result_messages,
        chat_request.tool_schema,
    ),
}

DIALECTS = tuple(_DIALECTS)


def get_dialect(name: str) -> Dialect:
    """The dialect called ``name`` (``"responses"`` or ``"chat"``)."""
    try:
        return _DIALECTS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown dialect {name!r}; expected one of {', '.join(DIALECTS)}"
        ) from None


def dialect_of_path(path: str) -> str | None:
    """The dialect whose endpoint ``path`` (or a full URL) ends with, or None."""
    path = urlsplit(path).path.rstrip("/")
    # /chat/completions first: it does not end with /responses, but keep the order explicit.
    for dialect in (_DIALECTS["chat"], _DIALECTS["responses"]):
        if path.endswith(dialect.path):
            return dialect.name
    return None


def api_root(url: str) -> str:
    """``url`` without its endpoint path and query: the base URL a trace header names."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for dialect in _DIALECTS.values():
        if path.endswith(dialect.path):
            path = path[: -len(dialect.path)]
            break
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
