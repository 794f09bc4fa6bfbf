"""Tool and hook files load as ``python FILE.py`` would run them: modules beside them import."""

from __future__ import annotations

import io
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawloop.cli.main import main
from rawloop.core.errors import ConfigurationError
from rawloop.loop.tool_files import load_module, tools_in

ROUNDTRIP = str(Path(__file__).parents[2] / "traces" / "tool-roundtrip.jsonl")


@pytest.fixture
def tools_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder with ``tools.py`` importing a helper module beside it (a fresh name each time)."""
    helper = f"refund_helpers_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "customer"
    folder.mkdir()
    (folder / f"{helper}.py").write_text("def times(a, b):\n    return a * b + 1\n")
    (folder / "tools.py").write_text(
        "from rawloop import tool\n"
        f"from {helper} import times\n\n"
        "@tool\n"
        "def multiply(a: int, b: int) -> int:\n"
        '    """Multiply two numbers."""\n'
        "    return times(a, b)\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # what load_module adds goes after the test
    monkeypatch.chdir(tmp_path)  # the folder is not the working directory's
    yield folder, helper
    sys.modules.pop(helper, None)


def test_a_tools_file_imports_the_module_beside_it(tools_dir: tuple[Path, str]) -> None:
    folder, helper = tools_dir
    (multiply,) = tools_in(load_module(folder / "tools.py"))
    assert sys.path[0] == str(folder.resolve())  # first, as python FILE.py puts it
    assert sys.modules[helper].__file__ == str(folder / f"{helper}.py")
    assert multiply(a=2, b=3) == 7  # the helper's answer, not a stand-in


def test_loading_twice_adds_the_folder_once(tools_dir: tuple[Path, str]) -> None:
    folder, _ = tools_dir
    load_module(folder / "tools.py")
    load_module(folder / "tools.py")
    assert sys.path.count(str(folder.resolve())) == 1


def test_a_missing_helper_is_still_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_helper_module_here\n")
    with pytest.raises(ConfigurationError, match="No module named 'no_such_helper_module_here'"):
        load_module(broken)


def test_rawloop_replay_live_tools_runs_the_helper(
    tools_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["replay", ROUNDTRIP, "--live-tools", "--tools", "customer/tools.py"])
    out = capsys.readouterr()
    assert "importing it failed" not in out.err
    # The helper answered 1231 * 2331 + 1: the replay sees the tool output change.
    assert "recorded '2869461', now '2869462'" in out.out
    assert code == 1  # diverged, because the tool's output did


def test_rawloop_step_loads_a_tools_file_with_a_helper(
    tools_dir: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("c\n"))
    code = main(["step", ROUNDTRIP, "--tools", "customer/tools.py"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "importing it failed" not in out.out + out.err
    assert "the run ended: completed after 2 iterations" in out.out
