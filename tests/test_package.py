"""The package surface: every exported name resolves, and importing rawloop stays light."""

from __future__ import annotations

import subprocess
import sys

import rawloop


def test_every_name_in_all_resolves() -> None:
    missing = [name for name in rawloop.__all__ if not hasattr(rawloop, name)]
    assert missing == []
    assert len(set(rawloop.__all__)) == len(rawloop.__all__)


def test_importing_rawloop_does_not_load_the_servers_or_integrations() -> None:
    code = (
        "import sys, rawloop\n"
        "heavy = [m for m in ('rawloop.replay.server', 'rawloop.capture.proxy', 'rawloop.serve.app', 'rawloop.serve.otel',"
        " 'h11', 'opentelemetry') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert rawloop.ReplayServer.__module__ == "rawloop.replay.server"  # loads on first use


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    try:
        rawloop.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
