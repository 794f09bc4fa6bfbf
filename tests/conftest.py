"""Shared fixtures: the corpus, and a scripted stand-in for the model API."""

from __future__ import annotations

from pathlib import Path

import pytest

from rawloop.replay.scripted import Reply, ScriptedAPI

__all__ = ["CORPUS", "Reply", "ScriptedAPI", "chunks_of", "corpus"]

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def chunks_of(data: bytes, size: int = 512) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
