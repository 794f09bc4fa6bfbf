"""The ``--script`` format of ``rawloop serve``: a fake model's turns, in order.

``SCRIPT_HELP`` documents it (``rawloop serve --help`` prints it; the JSON
Schema is ``docs/script.schema.json``). ``load_script`` reads a file and
``validate_script`` checks a parsed script; every error names the turn and
the key, and an unknown key is answered with the keys that are valid there.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import ConfigurationError

__all__ = ["SCRIPT_HELP", "check_turn", "load_script", "validate_script"]

SCRIPT_HELP = """\
A script (--script FILE) is a JSON object:

  {"dialect": "responses", "model": "gpt-5.5",
   "turns": [
     {"status": 429, "retry_after": 0},
     {"calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
     {"text": "6 * 7 = 42", "usage": {"input_tokens": 30, "output_tokens": 8}}
   ]}

  dialect      "responses" (default) or "chat"
  model        the model the answers name (default "gpt-5.5")
  turns        the fake model's answers, in order; each one of:
    text         the assistant's text, streamed in token-sized deltas
    calls        function calls: {"name", "arguments" (object or JSON string), "call_id"}
    usage        the usage object to report (default: estimated)
    error        an error object: in the stream (with no status), or the HTTP error's body
    status       an HTTP status; 300 and up answers with a JSON error instead of a stream
    retry_after  seconds, sent as the retry-after header

A turn that fails (a status of 300 or more, or an error) is answered to one attempt, and
the client's retry gets the next turn. Which turn answers a request comes from the request
itself: how many model turns its conversation holds, or which answer it follows
(previous_response_id, the call ids of the tool outputs it carries back).
The JSON Schema is docs/script.schema.json.
"""

_DIALECTS = ("responses", "chat")
SCRIPT_KEYS = ("dialect", "model", "turns")
TURN_KEYS = ("text", "calls", "usage", "error", "status", "retry_after")
CALL_KEYS = ("name", "arguments", "call_id")


def _unknown(where: str, given: Collection[str], valid: tuple[str, ...]) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(unknown)} (valid keys: {', '.join(valid)})"
        )


def load_script(path: str | Path) -> dict[str, Any]:
    """Read and validate a script file (see the module docs)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read script {path}: {exc.strerror or exc}") from None
    try:
        script = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid JSON ({exc})") from None
    return validate_script(script, str(path))


def validate_script(script: Any, where: str = "script") -> dict[str, Any]:
    """Check a script's shape; returns it with defaults filled in. Errors name the turn and key."""
    if not isinstance(script, dict):
        raise ConfigurationError(f"{where}: a script is a JSON object with 'turns'")
    _unknown(where, script, SCRIPT_KEYS)
    dialect = script.get("dialect", "responses")
    if dialect not in _DIALECTS:
        raise ConfigurationError(f"{where}: dialect must be 'responses' or 'chat', not {dialect!r}")
    model = script.get("model", "gpt-5.5")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"{where}: model must be a non-empty string")
    turns = script.get("turns")
    if not isinstance(turns, list) or not turns:
        raise ConfigurationError(f"{where}: 'turns' must be a non-empty list")
    for index, turn in enumerate(turns):
        check_turn(turn, f"{where}: turns[{index}]")
    return {"dialect": dialect, "model": model, "turns": turns}


def check_turn(turn: Any, where: str) -> None:
    """Check one turn of a script; errors name ``where`` and the key."""
    if not isinstance(turn, dict):
        raise ConfigurationError(f"{where} must be an object")
    _unknown(where, turn, TURN_KEYS)
    text = turn.get("text", "")
    if not isinstance(text, str):
        raise ConfigurationError(f"{where}.text must be a string")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ConfigurationError(f"{where}.text is not valid Unicode (a lone surrogate?)") from None
    calls = turn.get("calls", [])
    if not isinstance(calls, list):
        raise ConfigurationError(f"{where}.calls must be a list")
    for j, call in enumerate(calls):
        at = f"{where}.calls[{j}]"
        if not isinstance(call, dict):
            raise ConfigurationError(f"{at} must be an object")
        _unknown(at, call, CALL_KEYS)
        if not isinstance(call.get("name"), str) or not call["name"]:
            raise ConfigurationError(f"{at}.name must be a non-empty string")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, (dict, str)):
            raise ConfigurationError(f"{at}.arguments must be an object or a JSON string")
        if "call_id" in call and not isinstance(call["call_id"], str):
            raise ConfigurationError(f"{at}.call_id must be a string")
    for key in ("usage", "error"):
        if key in turn and not isinstance(turn[key], dict):
            raise ConfigurationError(f"{where}.{key} must be an object")
    status = turn.get("status")
    if status is not None and (
        not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599
    ):
        raise ConfigurationError(f"{where}.status must be an HTTP status (200-599)")
    retry_after = turn.get("retry_after")
    if retry_after is not None and (
        not isinstance(retry_after, (int, float))
        or isinstance(retry_after, bool)
        or retry_after < 0
    ):
        raise ConfigurationError(f"{where}.retry_after must be a number of seconds")
