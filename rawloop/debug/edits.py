"""Changing a paused run's state: a path edit becomes an RFC 6902 patch, checked, then applied.

The debugger never assigns to ``LoopState`` attributes one by one. It reads
the state as one plain JSON document (``state_document``), turns ``set``,
``del`` or ``append`` at a path into patch operations (``path_patch``),
applies them to a copy, refuses a result the loop could not send
(``check_document``, naming the part that is wrong) and only then hands the
whole document to ``LoopState.update_from`` (``apply_patch``). A refused edit
leaves the state as it was, and the operations returned are exactly what the
loop will report to ``on_edit`` and the trace will record.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core import jsonpath, patch
from ..loop.state import EDITABLE, LoopState
from .errors import StepError

__all__ = ["apply_patch", "check_document", "path_patch", "plain_json", "state_document"]

# Shown by ``Debugger.view`` but not part of the editable document.
_VIEW_ONLY = ("last_turn", "usage", "dialect", "base_url", "stop_reason")
_RESULT_KEYS = frozenset({"call_id", "name", "arguments", "output", "error", "duration"})


def plain_json(data: Any) -> Any:
    """A deep copy of ``data`` as JSON types only (tuples become lists, and so on)."""
    return orjson.loads(orjson.dumps(data))


def state_document(state: LoopState) -> dict[str, Any]:
    """The editable state as plain JSON: what patches apply to and are diffed against."""
    doc: dict[str, Any] = plain_json(state.to_dict())
    return doc


def path_patch(
    doc: dict[str, Any], kind: str, path: str, value: Any = None
) -> list[dict[str, Any]]:
    """The operations that ``set``, ``del`` or ``append`` ``value`` at ``path`` in ``doc``.

    ``set`` adds a missing last key and replaces anything else; ``del`` removes;
    ``append`` adds to the end of a list. Only the editable fields can change.
    """
    tokens = jsonpath.parse(path)
    if not tokens:
        raise StepError(
            f"{kind} needs a path into the state (e.g. input[0].content): "
            "the whole state cannot be replaced"
        )
    head = str(tokens[0])
    if head not in EDITABLE:
        editable = ", ".join(EDITABLE)
        if head in (*_VIEW_ONLY, "iteration"):
            raise StepError(f"{head} is read-only; what you can change: {editable}")
        raise StepError(f"the state has no {head!r}; what you can change: {editable}")
    if kind == "set":
        concrete, _, exists = jsonpath.locate(doc, tokens, missing_ok=True, root="the state")
        op = "replace" if exists else "add"
        return [{"op": op, "path": jsonpath.pointer(concrete), "value": value}]
    if kind == "del":
        if len(tokens) == 1:
            raise StepError(f"{head} cannot be deleted; set it instead (set {head} JSON)")
        concrete, _, _ = jsonpath.locate(doc, tokens, root="the state")
        return [{"op": "remove", "path": jsonpath.pointer(concrete)}]
    concrete, target, _ = jsonpath.locate(doc, tokens, root="the state")
    if not isinstance(target, list):
        raise StepError(
            f"{jsonpath.display(concrete)} is {jsonpath.describe(target)}, not a list: "
            "append adds to a list (use set for anything else)"
        )
    return [{"op": "add", "path": jsonpath.pointer(concrete) + "/-", "value": value}]


def apply_patch(state: LoopState, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply ``ops`` to ``state`` if the result is a state the loop can send; returns ``ops``."""
    new = patch.apply(state_document(state), ops)
    check_document(new)
    state.update_from(new)
    return ops


def check_document(doc: dict[str, Any]) -> None:
    """Refuse an edited state the loop could not send, saying which part is wrong."""
    if not isinstance(doc["model"], str) or not doc["model"]:
        raise StepError(f"model must be a non-empty string, not {jsonpath.describe(doc['model'])}")
    if doc["instructions"] is not None and not isinstance(doc["instructions"], str):
        raise StepError("instructions must be a string or null")
    for name in ("input", "tools"):
        if not isinstance(doc[name], list):
            raise StepError(f"{name} must be a list, not {jsonpath.describe(doc[name])}")
        for i, item in enumerate(doc[name]):
            if not isinstance(item, dict):
                raise StepError(f"{name}[{i}] must be an object, not {jsonpath.describe(item)}")
    if not isinstance(doc["request_params"], dict):
        raise StepError("request_params must be an object")
    if not isinstance(doc["results"], list):
        raise StepError("results must be a list")
    for i, result in enumerate(doc["results"]):
        _check_result(i, result)


def _check_result(i: int, result: Any) -> None:
    if not isinstance(result, dict):
        raise StepError(f"results[{i}] must be an object, not {jsonpath.describe(result)}")
    missing = [k for k in ("call_id", "name", "arguments", "output") if k not in result]
    if missing:
        raise StepError(f"results[{i}] needs {', '.join(missing)}")
    extra = sorted(set(result) - _RESULT_KEYS)
    if extra:
        raise StepError(
            f"results[{i}] has unknown keys {', '.join(extra)} "
            f"(a result has: {', '.join(sorted(_RESULT_KEYS))})"
        )
    if not isinstance(result["output"], (str, list)):
        raise StepError(
            f"results[{i}].output must be a string (what the model reads), not "
            f"{jsonpath.describe(result['output'])}: quote JSON as a string, or use "
            "result CALL_ID JSON"
        )
    if not isinstance(result["call_id"], str):
        raise StepError(f"results[{i}].call_id must be a string")
