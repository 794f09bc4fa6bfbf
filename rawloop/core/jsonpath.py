"""Paths into a JSON document, as people type them: ``input[3].output`` or ``/input/3/output``.

``rawloop step`` uses these to print and change the loop state. Two spellings:

* dotted, as the readable paths elsewhere in rawloop print them
  (``rawloop.core.jsondiff.format_path``): ``request_params.temperature``,
  ``input[3].output``, ``input[-1]`` (from the end), ``tools[0]["name"]``
  (a quoted key, for keys with dots or spaces), ``input.3.output`` (a number
  as a key indexes a list); a leading ``$`` or ``.`` is allowed;
* a JSON Pointer (RFC 6901) when it starts with ``/``: ``/input/3/output``.

``""``, ``.``, ``$`` and ``/`` all mean the whole document. Every mistake is a
``PathError`` that says which part of the path is wrong and what is there.
"""

from __future__ import annotations

import ast
import re
import warnings
from typing import Any

from .errors import RawloopError
from .jsondiff import format_path
from .patch import PatchError, escape, parse_pointer

__all__ = ["PathError", "Token", "describe", "display", "locate", "parse", "pointer", "split_path"]

#: One step of a path: a key, or an index (a number written in brackets).
Token = str | int

_ROOT = frozenset({"", ".", "$", "/"})
_INDEX = re.compile(r"-?[0-9]+")


class PathError(RawloopError):
    """A path that cannot be parsed, or that does not lead anywhere in the document."""


def parse(path: str) -> list[Token]:
    """The tokens of ``path`` (dotted or JSON Pointer); ``[]`` for the whole document."""
    text = path.lstrip()
    if not text.startswith("/"):  # in a pointer, spaces belong to the keys
        text = text.rstrip()
    if text in _ROOT:
        return []
    if text.startswith("/"):
        try:
            return list(parse_pointer(text))
        except PatchError as exc:  # pragma: no cover - a leading "/" always parses
            raise PathError(f"bad JSON pointer {text!r}: {exc}") from None
    return _parse_dotted(text)


def _parse_dotted(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    if text.startswith("$"):
        i = 1
    # After a name or a bracket only "." or "[" may follow; at the start a name may.
    need_separator = False
    while i < n:
        char = text[i]
        if char == "[":
            close, token = _bracket(text, i)
            tokens.append(token)
            i, need_separator = close + 1, True
        elif char == ".":
            if i + 1 >= n or text[i + 1] == ".":
                raise PathError(f"bad path {text!r}: a name must follow the '.' at column {i + 1}")
            i, need_separator = i + 1, False
            if text[i] == "[":
                continue
            i = _name(text, i, tokens)
            need_separator = True
        elif char == "]":
            raise PathError(f"bad path {text!r}: ']' at column {i + 1} closes nothing")
        else:
            if need_separator:
                raise PathError(
                    f"bad path {text!r}: expected '.' or '[' at column {i + 1}, found {char!r}"
                )
            i = _name(text, i, tokens)
            need_separator = True
    return tokens


def _name(text: str, start: int, tokens: list[Token]) -> int:
    end = start
    while end < len(text) and text[end] not in ".[]":
        end += 1
    name = text[start:end]
    if any(c.isspace() for c in name):
        raise PathError(
            f"bad path {text!r}: {name!r} has a space; quote such a key: [{_quote(name.strip())}]"
        )
    tokens.append(name)
    return end


def _bracket(text: str, start: int) -> tuple[int, Token]:
    """The index of the closing ``]`` and the token inside ``[...]`` at ``start``."""
    i = start + 1
    if i < len(text) and text[i] in "\"'":
        quote, opening = text[i], i
        i += 1
        while i < len(text) and text[i] != quote:
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise PathError(
                f"bad path {text!r}: the key quoted at column {start + 2} is not closed"
            )
        if i + 1 >= len(text) or text[i + 1] != "]":
            raise PathError(f"bad path {text!r}: expected ']' after the quoted key")
        return i + 1, _unquote(text, text[opening : i + 1])
    close = text.find("]", i)
    if close < 0:
        raise PathError(f"bad path {text!r}: the '[' at column {start + 1} has no ']'")
    inner = text[i:close].strip()
    if not _INDEX.fullmatch(inner):
        hint = f".{inner}" if inner.isidentifier() else ""
        raise PathError(
            f"bad path {text!r}: [{inner}] is not a list index; write a key as "
            f"{hint + ' or ' if hint else ''}[{_quote(inner)}]"
        )
    return close, int(inner)


def _unquote(path: str, literal: str) -> str:
    """A quoted key with its escapes (JSON's, or Python's as ``format_path`` writes them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unknown escape stays as it was written
            value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        raise PathError(f"bad path {path!r}: {literal} is not a quoted key") from None
    if not isinstance(value, str):  # pragma: no cover - a quoted literal is a string
        raise PathError(f"bad path {path!r}: {literal} is not a quoted key")
    return value


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_path(line: str) -> tuple[str, str]:
    """Split ``"PATH REST"`` at the first space outside brackets and quotes."""
    line = line.strip()
    depth, quote = 0, ""
    for i, char in enumerate(line):
        if quote:
            if char == "\\":
                continue
            if char == quote:
                quote = ""
        elif char in "\"'" and depth:
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth = max(depth - 1, 0)
        elif char.isspace() and not depth:
            return line[:i], line[i:].strip()
    return line, ""


def display(tokens: list[Token]) -> str:
    """The readable form of concrete tokens: ``input[3].output`` (``<root>`` for none)."""
    return format_path(list(tokens)) or "<root>"


def pointer(tokens: list[Token]) -> str:
    """The JSON Pointer for concrete tokens: ``/input/3/output``."""
    return "".join(f"/{escape(t)}" for t in tokens)


def describe(value: Any) -> str:
    """What kind of JSON value this is, for messages: ``a list of 4``, ``a string``..."""
    if isinstance(value, dict):
        return f"an object with {len(value)} key{'s' if len(value) != 1 else ''}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else type(value).__name__


def locate(
    doc: Any, tokens: list[Token], *, missing_ok: bool = False, root: str = "the document"
) -> tuple[list[Token], Any, bool]:
    """Follow ``tokens`` into ``doc``.

    Returns the concrete tokens (list indexes as non-negative ints, keys as
    strings), the value there, and whether it exists. With ``missing_ok``, a
    last key absent from its object is not an error (``set`` adds it); the
    value is then ``None`` and ``exists`` is False. ``root`` names the
    document in messages.
    """
    concrete: list[Token] = []
    node = doc
    for position, token in enumerate(tokens):
        last = position == len(tokens) - 1
        here = format_path(list(concrete)) or root
        if isinstance(node, dict):
            key = str(token)
            if key not in node:
                if last and missing_ok:
                    concrete.append(key)
                    return concrete, None, False
                raise PathError(f"{here} has no key {key!r}{_keys(node)}")
            concrete.append(key)
            node = node[key]
        elif isinstance(node, list):
            index = _index(node, token, here)
            concrete.append(index)
            node = node[index]
        else:
            raise PathError(
                f"{here} is {describe(node)}, not an object or a list: it has no {token!r}"
            )
    return concrete, node, True


def _index(node: list[Any], token: Token, here: str) -> int:
    if isinstance(token, int):
        index = token
    elif _INDEX.fullmatch(token):
        index = int(token)
    else:
        raise PathError(f"{here} is {describe(node)}: {token!r} is not an index")
    if not -len(node) <= index < len(node):
        span = f"0..{len(node) - 1}" if node else "none"
        raise PathError(
            f"{here} has {len(node)} item{'s' if len(node) != 1 else ''}: "
            f"index {index} is out of range (valid: {span})"
        )
    return index % len(node)


def _keys(node: dict[str, Any]) -> str:
    if not node:
        return " (it is empty)"
    names = list(node)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f" (keys: {shown})"
