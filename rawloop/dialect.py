"""The two wire dialects behind one interface, so the loop never branches on which."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import chat, responses
from .accumulator import Accumulator
from .errors import ConfigurationError

__all__ = ["DIALECTS", "Dialect", "get_dialect"]


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
        responses.normalize_input,
        responses.build_request,
        responses.tool_result_items,
        responses.tool_schema,
    ),
    "chat": Dialect(
        "chat",
        "/chat/completions",
        chat.ChatAccumulator,
        chat.normalize_input,
        chat.build_request,
        chat.tool_result_messages,
        chat.tool_schema,
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
