"""The attributes of a ``chat`` span that come from the request: server, parameters, conversation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["request_attributes"]

#: Request body keys recorded as request attributes, by attribute name.
_REQUEST_PARAMS = {
    "gen_ai.request.max_tokens": ("max_output_tokens", "max_completion_tokens", "max_tokens"),
    "gen_ai.request.temperature": ("temperature",),
    "gen_ai.request.top_p": ("top_p",),
    "gen_ai.request.frequency_penalty": ("frequency_penalty",),
    "gen_ai.request.presence_penalty": ("presence_penalty",),
    "gen_ai.request.seed": ("seed",),
    "openai.request.service_tier": ("service_tier",),
}


def request_attributes(url: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``server.*``, the request parameters, stop sequences, choice count and conversation id."""
    attributes: dict[str, Any] = {}
    parts = urlsplit(url)
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        if port is not None:
            attributes["server.port"] = port
    for name, keys in _REQUEST_PARAMS.items():
        for key in keys:
            value = body.get(key)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                attributes[name] = value
                break
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = stop
    choices = body.get("n")
    if isinstance(choices, int) and not isinstance(choices, bool) and choices != 1:
        attributes["gen_ai.request.choice.count"] = choices
    conversation = body.get("conversation")
    if isinstance(conversation, Mapping):
        conversation = conversation.get("id")
    if isinstance(conversation, str):
        attributes["gen_ai.conversation.id"] = conversation
    return attributes
