"""Where two JSON documents first differ, as a readable path (``input[2].output``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["MISSING", "Difference", "first_difference", "format_path"]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: Stands for "no value here" on the side of a difference that lacks a key or index.
MISSING: Any = _Missing()


@dataclass(frozen=True)
class Difference:
    """The first place where ``a`` and ``b`` differ, and the value on each side."""

    path: str
    a: Any
    b: Any

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {_short(self.a)} != {_short(self.b)}"


def format_path(tokens: list[str | int]) -> str:
    """``["input", 2, "output"]`` -> ``input[2].output``."""
    out = ""
    for token in tokens:
        if isinstance(token, int):
            out += f"[{token}]"
        elif token.isidentifier():
            out += f".{token}" if out else token
        else:
            out += f"[{token!r}]"
    return out


def first_difference(a: Any, b: Any, ignore: Collection[str] = ()) -> Difference | None:
    """The first difference between two JSON values, or None when they are equal.

    Dict key order is ignored; list order is not. ``ignore`` holds key names
    skipped at any depth (volatile fields such as ``created_at``).
    """
    return _walk(a, b, [], frozenset(ignore))


def _walk(a: Any, b: Any, path: list[str | int], ignore: frozenset[str]) -> Difference | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if key in ignore:
                continue
            found = _walk(a.get(key, MISSING), b.get(key, MISSING), [*path, key], ignore)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            left = a[i] if i < len(a) else MISSING
            right = b[i] if i < len(b) else MISSING
            found = _walk(left, right, [*path, i], ignore)
            if found:
                return found
        return None
    # bool is an int in Python; in JSON they are different values.
    if a != b or (type(a) is not type(b) and (isinstance(a, bool) or isinstance(b, bool))):
        return Difference(format_path(path), a, b)
    return None


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
