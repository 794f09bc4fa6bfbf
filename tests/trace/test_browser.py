"""``rawloop show --html`` and ``diff --html`` pages, loaded from disk in a real headless chromium.

The pages are written by the CLI, opened from ``file://`` and checked over the
DevTools protocol (``browser.py``): nothing is fetched, nothing is logged as
an error, the whole run is in the DOM, planted markup stays text, the search
filter and j/k work, the first difference of a diff is focused, and a
screenshot has something on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from rawloop.cli.main import main

from .browser import CHROMIUM, Browser, BrowserError, png_pixels

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)"
)

TRACES = Path(__file__).parents[2] / "traces"
PLANTED = (
    "<script>document.title = 'pwned by script'</script>"
    "<img src=x onerror=\"document.title = 'pwned by img'\">"
    "</pre></details><script>document.title = 'pwned by breakout'</script>"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    try:
        chromium = Browser(CHROMIUM)
    except BrowserError as exc:  # installed but unable to start here: say so, do not fail
        pytest.skip(f"chromium is installed but did not start: {exc}")
    yield chromium
    chromium.close()


def hostile_trace(tmp_path: Path) -> tuple[Path, str]:
    """The bundled tool round trip, its tool output replaced by planted markup and 30k chars."""
    long_output = PLANTED + "".join(f"line {n:05d} of a long tool output\n" for n in range(900))
    long_output += "THE-VERY-END"
    lines = []
    for line in (TRACES / "tool-roundtrip.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        if record["kind"] == "result":
            record["output"] = long_output
        if record["kind"] == "chunk" and record["iteration"] == 1 and "text" in record:
            # the raw SSE travels as JSON in a <script> element: try to break out of it
            record["text"] += "</script><!--\u2028" + PLANTED
        lines.append(orjson.dumps(record))
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, long_output


def page_of(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "page.html"
    assert main([*args, "--html", "-o", str(out)]) in (0, 1)
    return out


def test_the_page_loads_from_disk_with_no_request_and_no_error(
    browser: Browser, tmp_path: Path
) -> None:
    path, long_output = hostile_trace(tmp_path)
    html = page_of(tmp_path, "show", str(path))
    page = browser.page(html.as_uri())
    try:
        assert page.evaluate("document.documentElement.getAttribute('data-ready')") == "1"
        assert page.requests() == [html.as_uri()]  # the file itself, nothing else
        assert page.problems() == []
        # the planted markup is text: no script of it ran, and it is on the page as written
        assert page.evaluate("document.title") == f"rawloop: {path}"
        assert page.evaluate("document.querySelectorAll('script').length") == 2  # ours
        assert page.evaluate("document.querySelectorAll('img').length") == 0
        outputs = page.evaluate(
            "Array.from(document.querySelectorAll('pre.tool-output')).map(p => p.textContent)"
        )
        assert outputs == [long_output]  # in full, to its last character
        # ...and so is the raw SSE, built from the embedded JSON when asked for
        page.evaluate("document.querySelectorAll('details[data-raw]')[1].open = true")
        sse = page.wait_until("document.querySelectorAll('pre.sse')[1].textContent")
        assert sse.count(PLANTED) == 30 and "</script><!--\u2028" in sse
        assert page.evaluate("document.title") == f"rawloop: {path}"
        iterations = page.evaluate(
            "Array.from(document.querySelectorAll('[data-iteration]'))"
            ".map(s => s.getAttribute('data-iteration'))"
        )
        assert iterations == ["0", "1"]
    finally:
        page.close()


@pytest.mark.parametrize("name", ["parallel-tools", "retry-after-cut", "chat-run"])
def test_every_iteration_of_the_bundled_traces_is_on_the_page(
    browser: Browser, tmp_path: Path, name: str
) -> None:
    path = TRACES / f"{name}.jsonl"
    expected = sorted(
        {
            r["iteration"]
            for r in map(orjson.loads, path.read_bytes().splitlines())
            if "iteration" in r
        }
    )
    page = browser.page(page_of(tmp_path, "show", str(path)).as_uri())
    try:
        found = page.evaluate(
            "Array.from(document.querySelectorAll('details.iter')).map(s => +s.dataset.iteration)"
        )
        assert found == expected
        assert page.problems() == []
        if name == "retry-after-cut":  # the failed attempt and its retry are both shown
            assert page.evaluate("document.querySelectorAll('.attempt').length") >= 2
            assert page.evaluate("document.querySelectorAll('.wf-retry, .wf-failed').length") >= 1
    finally:
        page.close()


def test_search_filters_iterations_and_j_k_move_between_them(
    browser: Browser, tmp_path: Path
) -> None:
    page = browser.page(page_of(tmp_path, "show", str(TRACES / "tool-roundtrip.jsonl")).as_uri())
    hidden = "Array.from(document.querySelectorAll('details.iter')).map(s => s.hidden)"
    try:
        assert page.evaluate(hidden) == [False, False]
        # "2,869,461" is only in iteration 1's answer
        page.evaluate(
            "var s = document.getElementById('search'); s.value = '2,869,461';"
            "s.dispatchEvent(new Event('input'))"
        )
        assert page.evaluate(hidden) == [True, False]
        assert page.evaluate("document.getElementById('match-count').textContent") == "1 of 2 match"
        page.evaluate(
            "var s = document.getElementById('search'); s.value = ''; s.blur();"
            "s.dispatchEvent(new Event('input'))"
        )
        assert page.evaluate(hidden) == [False, False]
        current = "Array.from(document.querySelectorAll('details.iter.current')).map(s => s.id)"
        page.key("j")
        assert page.evaluate(current) == ["run0-iter0"]
        page.key("j")
        assert page.evaluate(current) == ["run0-iter1"]
        page.key("k")
        assert page.evaluate(current) == ["run0-iter0"]
        # the raw SSE of an attempt is built on demand, one span per recorded chunk
        page.evaluate("document.querySelector('details[data-raw]').open = true")
        spans = page.wait_until("document.querySelectorAll('pre.sse span.chunk').length")
        assert spans == 25
        text = page.evaluate("document.querySelector('pre.sse').textContent")
        assert text.startswith("event: response.created\ndata: {")
        assert page.problems() == []
    finally:
        page.close()


def test_a_screenshot_is_not_blank(browser: Browser, tmp_path: Path) -> None:
    page = browser.page(page_of(tmp_path, "show", str(TRACES / "tool-roundtrip.jsonl")).as_uri())
    try:
        width, height, rows = png_pixels(page.screenshot(scale=0.25))
    finally:
        page.close()
    assert (width, height) == (320, 225)
    assert len(set(rows)) > 20  # many different rows: text, bars, boxes
    assert len({row[i : i + 3] for row in rows for i in range(0, len(row), 4)}) > 10


def test_diff_page_aligns_iterations_and_focuses_the_first_difference(
    browser: Browser, tmp_path: Path
) -> None:
    html = page_of(
        tmp_path,
        "diff",
        str(TRACES / "tool-roundtrip.jsonl"),
        str(TRACES / "breakpoint-edit.jsonl"),
    )
    page = browser.page(html.as_uri())
    try:
        rows = page.evaluate(
            "Array.from(document.querySelectorAll('section.diffrow'))"
            ".map(s => [s.dataset.iteration, s.classList.contains('differs')])"
        )
        assert rows == [["0", False], ["1", True]]
        assert page.evaluate("document.querySelector('.diffrow.current').dataset.iteration") == "1"
        changed = page.evaluate(
            "Array.from(document.querySelectorAll('.line.changed .label')).map(l => l.textContent)"
        )
        assert "edit 0" in changed and "input #2" in changed
        assert page.problems() == []
    finally:
        page.close()
