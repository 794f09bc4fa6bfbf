"""The README's fault example: ``attempt=0`` cuts one attempt, the loop retries, the replay is identical."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rawloop.cli.main import main

ROOT = Path(__file__).parents[2]


def _readme_fault() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r'--fault "(iter=1,attempt=0:[^"]+)"', readme)
    assert found, "README.md no longer shows the attempt=0 fault example"
    return found.group(1)


def test_the_readme_fault_is_retried_and_the_replay_is_identical(
    capsys: pytest.CaptureFixture[str],
) -> None:
    trace = str(ROOT / "traces" / "tool-roundtrip.jsonl")
    code = main(["replay", trace, "--fault", _readme_fault()])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(rawloop replay fault); retrying in" in out
    assert "attempt 1: POST" in out
    assert out.rstrip().endswith(
        "identical: 2 iterations replayed, every request matched the recording"
    )


def test_without_attempt_every_attempt_is_cut(capsys: pytest.CaptureFixture[str]) -> None:
    """What the README warns of: the same fault on every attempt ends the run in error."""
    trace = str(ROOT / "traces" / "tool-roundtrip.jsonl")
    code = main(["replay", trace, "--fault", _readme_fault().replace(",attempt=0", "")])
    out = capsys.readouterr().out
    assert code == 2
    assert "end: error" in out
