"""RFC 6902 JSON patches: what a breakpoint changed, recorded so a replay can redo it.

``diff(a, b)`` gives operations that turn ``a`` into ``b``; ``apply(doc, ops)``
performs them on a copy. Only ``add``, ``remove`` and ``replace`` are produced;
``apply`` also accepts ``move``, ``copy`` and ``test``. Lists are compared
position by position and grown or shrunk at the end: not the shortest patch
for an insertion in the middle, but always a correct one.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import RawloopError

__all__ = ["PatchError", "apply", "diff", "escape", "parse_pointer"]


class PatchError(RawloopError):
    """A patch does not apply to the document (names the operation and path)."""


def escape(token: str | int) -> str:
    """One JSON Pointer reference token (RFC 6901: ``~`` -> ``~0``, ``/`` -> ``~1``)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def parse_pointer(pointer: str) -> list[str]:
    """A JSON Pointer split into unescaped tokens; ``""`` is the whole document."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def diff(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """Operations that turn ``a`` into ``b``."""
    if type(a) is not type(b):
        return [{"op": "replace", "path": path, "value": copy.deepcopy(b)}]
    if isinstance(a, dict):
        ops: list[dict[str, Any]] = []
        for key in a:
            if key not in b:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
            else:
                ops.extend(diff(a[key], b[key], f"{path}/{escape(key)}"))
        for key in b:
            if key not in a:
                ops.append(
                    {"op": "add", "path": f"{path}/{escape(key)}", "value": copy.deepcopy(b[key])}
                )
        return ops
    if isinstance(a, list):
        ops = []
        for i in range(min(len(a), len(b))):
            ops.extend(diff(a[i], b[i], f"{path}/{i}"))
        for i in range(len(a), len(b)):
            ops.append({"op": "add", "path": f"{path}/-", "value": copy.deepcopy(b[i])})
        # Remove from the end so earlier indexes stay valid.
        for i in range(len(a) - 1, len(b) - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}"})
        return ops
    if a != b:
        return [{"op": "replace", "path": path, "value": copy.deepcopy(b)}]
    return []


def apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """A copy of ``doc`` with ``ops`` applied; raises ``PatchError`` naming the failing op."""
    doc = copy.deepcopy(doc)
    for number, op in enumerate(ops):
        try:
            if not isinstance(op, dict):
                raise PatchError(f"{type(op).__name__} is not an object")
            doc = _apply_one(doc, op)
        except PatchError as exc:
            where = f"{op.get('op')} {op.get('path')!r}" if isinstance(op, dict) else repr(op)
            raise PatchError(f"operation {number} ({where}): {exc}") from None
    return doc


def _member(op: dict[str, Any], name: str) -> Any:
    if name not in op:
        raise PatchError(f"missing {name!r}")
    return op[name]


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: a boolean is never a number (Python says True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return bool(a == b)


def _apply_one(doc: Any, op: dict[str, Any]) -> Any:
    kind = op.get("op")
    path = op.get("path")
    if not isinstance(path, str):
        raise PatchError("missing 'path'")
    if kind == "add":
        return _add(doc, path, copy.deepcopy(_member(op, "value")))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        value = copy.deepcopy(_member(op, "value"))
        doc = _remove(doc, path)[0] if path else doc
        return _add(doc, path, value)
    if kind == "move":
        doc, value = _remove(doc, _member(op, "from"))
        return _add(doc, path, value)
    if kind == "copy":
        return _add(doc, path, copy.deepcopy(_get(doc, _member(op, "from"))))
    if kind == "test":
        if not _json_equal(_get(doc, path), _member(op, "value")):
            raise PatchError("test failed")
        return doc
    raise PatchError(f"unknown op {kind!r}")


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    tokens = parse_pointer(path)
    if not tokens:
        raise PatchError("the path is the whole document")
    return _walk(doc, tokens[:-1]), tokens[-1]


def _walk(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise PatchError(f"no key {token!r}")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, allow_end=False)]
        else:
            raise PatchError(f"cannot step into {type(doc).__name__} with {token!r}")
    return doc


def _get(doc: Any, path: str) -> Any:
    return _walk(doc, parse_pointer(path))


def _index(target: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(target)
    if not (token.isascii() and token.isdigit()) or (token != "0" and token.startswith("0")):
        raise PatchError(f"{token!r} is not a list index")
    index = int(token)
    if index > len(target) or (index == len(target) and not allow_end):
        raise PatchError(f"index {index} is out of range (length {len(target)})")
    return index


def _add(doc: Any, path: str, value: Any) -> Any:
    if path == "":
        return value
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        raise PatchError(f"cannot add to {type(parent).__name__}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parent, token = _parent(doc, path)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"no key {token!r}")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, allow_end=False))
    raise PatchError(f"cannot remove from {type(parent).__name__}")
