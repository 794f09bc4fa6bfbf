"""Request parameters: which keyword arguments of ``Loop`` are meant for the model.

``Loop(..., **request_params)`` sends its extra keywords in every request
body. A misspelt option (``Loop(..., read_timout=5)``) would then reach the
API as a body field and surface, if at all, as a 400 in the middle of a run.
So each extra keyword is checked against the dialect's create parameters
and anything else is warned about, with the closest known name. A parameter
the list does not know yet (a newer API, a compatible server's own) goes in
``extra_body={...}``, which is sent as is and never checked.

The names are those of the openai SDK's ``responses.create`` and
``chat.completions.create`` (openai 3.57), copied here as literals so that
the check needs no SDK at run time; the ones the loop sets itself (model,
input or messages, tools, instructions, stream) are not request parameters.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from ..core.errors import ConfigurationError

__all__ = [
    "CHAT_PARAMS",
    "RESPONSES_PARAMS",
    "UnknownParameterWarning",
    "check_request_params",
]

#: ``responses.create`` keywords, less those the loop sets itself.
RESPONSES_PARAMS = frozenset(
    {
        "access_programs", "background", "background_options", "context_management",
        "conversation", "image", "include", "max_output_tokens", "max_tool_calls", "metadata",
        "moderation", "parallel_tool_calls", "previous_response_id", "prompt",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning",
        "safety_identifier", "service_tier", "store", "stream_options", "temperature", "text",
        "tool_choice", "top_logprobs", "top_p", "truncation", "user",
    }
)  # fmt: skip

#: ``chat.completions.create`` keywords, less those the loop sets itself.
CHAT_PARAMS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "prompt_cache_options", "prompt_cache_retention", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "stream_options",
        "temperature", "tool_choice", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)  # fmt: skip

_KNOWN = {"responses": RESPONSES_PARAMS, "chat": CHAT_PARAMS}
# Body fields the loop writes itself: a keyword would silently replace them.
_OWNED = {
    "input": "the input is what run() or iter() is given",
    "messages": "the messages are what run() or iter() is given",
    "stream": "the loop always streams",
}


class UnknownParameterWarning(UserWarning):
    """A keyword argument of ``Loop`` is not a request parameter of its dialect."""


def check_request_params(
    dialect: str,
    params: Mapping[str, Any],
    extra_body: Mapping[str, Any] | None,
    options: Iterable[str] = (),
) -> dict[str, Any]:
    """The body fields to send: ``params`` checked, then ``extra_body`` as is.

    Warns (``UnknownParameterWarning``, naming the closest request parameter
    or ``Loop`` option) for each keyword the dialect does not know; it is
    still sent. Raises ``ConfigurationError`` for a field the loop writes itself.
    """
    known = _KNOWN[dialect]
    for name, value in params.items():
        if name in _OWNED and not (name == "stream" and value is True):
            raise ConfigurationError(f"Loop(..., {name}=...) cannot be set: {_OWNED[name]}")
        if name in known or name in _OWNED:
            continue
        close = difflib.get_close_matches(name, [*known, *options], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        warnings.warn(
            f"rawloop: Loop(..., {name}=...) is not a {dialect} request parameter; {hint}"
            f"it is sent in the request body as is (pass extra_body={{{name!r}: ...}} "
            "to send an unlisted parameter on purpose)",
            UnknownParameterWarning,
            stacklevel=3,
        )
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise ConfigurationError(
            f"extra_body must be a mapping of body fields, not {type(extra_body).__name__}"
        )
    return {**params, **(extra_body or {})}
