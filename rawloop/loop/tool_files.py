"""Loading user files by path: hook modules (``--hook``) and tool modules (``--tools``).

A file is imported as ``python FILE.py`` would run it: its folder goes first
on ``sys.path``, so it can import the modules beside it (a helpers module, a
client for the customer's API). The folder stays there, since a tool may
import lazily, when it is called.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core.errors import ConfigurationError
from .tools import Tool

__all__ = ["load_module", "tools_in"]


def load_module(path: str | Path) -> ModuleType:
    """Import a Python file by path, its folder on ``sys.path``; ``ConfigurationError`` if it fails."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"rawloop_user_{path.stem}_{abs(hash(path.resolve())) % 10**8}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigurationError(
            f"{path}: importing it failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def tools_in(module: ModuleType) -> list[Tool[..., Any]]:
    """Every ``@tool`` defined at the top level of ``module``, in definition order."""
    found = [value for value in vars(module).values() if isinstance(value, Tool)]
    if not found:
        raise ConfigurationError(f"{module.__file__}: no @rawloop.tool functions in it")
    return found
