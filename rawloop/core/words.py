"""Counting in words for messages people read: ``1 request``, ``2 requests``."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str) -> str:
    """``1 chunk``, ``2 chunks`` (nouns that take an ``s``)."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
