"""A script that uses ``Debugger`` exits on its own: with ``close()``, ``with``, or neither."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rawloop.trace.format import Trace

ROOT = Path(__file__).parents[2]

# The README's recipe, as a user would paste it: no close() anywhere.
RECIPE = """
from rawloop.debug.debugger import Debugger

dbg = Debugger.for_trace("traces/tool-roundtrip.jsonl", after_edit="ignore")
dbg.start()
dbg.next()
dbg.set_result("call_sV", "42")
pause = dbg.cont()
dbg.save(OUT)
print("ended:", pause.result.stop_reason)
"""

WITH = """
from rawloop.debug.debugger import Debugger

with Debugger.for_trace("traces/tool-roundtrip.jsonl", after_edit="ignore") as dbg:
    dbg.start()
    dbg.next()
    dbg.set_result("call_sV", "42")
    pause = dbg.cont()
    dbg.save(OUT)
    print("ended:", pause.result.stop_reason)
"""

# Left paused at a breakpoint: the run is still waiting when the script ends.
ABANDONED = """
from rawloop.debug.debugger import Debugger

dbg = Debugger.for_trace("traces/tool-roundtrip.jsonl")
dbg.start()
dbg.next()
dbg.save(OUT)
print("ended: paused at", dbg.state.iteration)
"""


def _readme_recipe() -> str:
    """The README's Debugger example, saving to OUT rather than into the checkout."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"```python\n(from rawloop.debug.debugger import Debugger\n.*?)```", readme, re.S
    )
    assert found, "README.md has no Debugger example"
    assert '"edited.jsonl"' in found.group(1)
    return found.group(1).replace('"edited.jsonl"', "OUT")


def _run(script: str, out: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    code = f"OUT = {str(out)!r}\n" + textwrap.dedent(script)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test instead of the suite
        env={"PATH": "", "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    ("script", "said"),
    [
        (RECIPE, "ended: completed"),
        (WITH, "ended: completed"),
        (ABANDONED, "ended: paused at 1"),
        (_readme_recipe(), "completed"),
    ],
    ids=["no-close", "with", "left-paused", "readme"],
)
def test_a_debugger_script_exits_by_itself(script: str, said: str, tmp_path: Path) -> None:
    sessions = tmp_path / "tmp"
    sessions.mkdir()
    out = tmp_path / "saved.jsonl"
    done = _run(script, out, sessions)
    assert done.returncode == 0, done.stderr
    assert said in done.stdout
    assert "Traceback" not in done.stderr
    assert Trace.load(out).exchanges()  # what was saved is a readable trace
    assert list(sessions.iterdir()) == []  # the session's own files are gone too
