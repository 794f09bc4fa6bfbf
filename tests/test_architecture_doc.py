"""docs/architecture.md names only what exists: modules, functions, hook points, layers."""

from __future__ import annotations

import re
from pathlib import Path

from rawloop.loop.hooks import HOOK_POINTS

ROOT = Path(__file__).parents[1]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "rawloop").rglob("*.py"))
LAYERS = ("core", "loop", "trace", "replay", "debug", "capture", "serve", "cli")
IN_A_LAYER = "|".join(LAYERS)
#: httpx calls the page quotes: not rawloop's to define.
THIRD_PARTY = {"client.send", "response.aiter_bytes"}


def test_every_module_named_exists() -> None:
    named = set(re.findall(rf"`((?:rawloop/)?(?:{IN_A_LAYER})/[\w*]+\.py)`", PAGE))
    assert len(named) > 15
    for path in named:
        relative = path.removeprefix("rawloop/")
        found = list((ROOT / "rawloop").glob(relative))
        assert found, f"docs/architecture.md names {path}, which does not exist"


def test_every_function_named_is_defined() -> None:
    called = set(re.findall(r"`([A-Za-z_][\w.]*)\(", PAGE))
    assert len(called) > 20
    for dotted in called - THIRD_PARTY:
        name = dotted.rsplit(".", 1)[-1]
        assert re.search(rf"(def|class) {re.escape(name)}\b", SOURCE), (
            f"docs/architecture.md names {dotted}(), which rawloop does not define"
        )


def test_every_hook_point_has_its_place() -> None:
    rows = {
        m.group(1): m.group(2) for m in re.finditer(r"^\| `(on_\w+)` \| ([^|]+) \|", PAGE, re.M)
    }
    assert set(rows) == set(HOOK_POINTS)
    for point, where in rows.items():
        for module in re.findall(rf"`((?:{IN_A_LAYER})/\w+\.py)`", where):
            text = (ROOT / "rawloop" / module).read_text(encoding="utf-8")
            assert point in text or (point == "on_breakpoint" and "breakpoint" in text), (
                f"{point}: {module} never names it"
            )


def test_the_diagram_and_the_layout_test_agree() -> None:
    layout = (ROOT / "tests" / "test_layout.py").read_text(encoding="utf-8")
    diagram = PAGE.split("```", 2)[1]
    for layer in LAYERS:
        assert f'"{layer}"' in layout and re.search(rf"\s{layer}\s", diagram), layer


def test_readme_links_the_page_near_the_top() -> None:
    top = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "(docs/architecture.md)" in top
