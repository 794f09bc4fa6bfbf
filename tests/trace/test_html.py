"""The HTML pages without a browser: escaping, embedded JSON, secrets, prices, the CLI flags.

(``test_browser.py`` loads the same pages in chromium.)
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawloop.cli.main import main
from rawloop.core.errors import ConfigurationError
from rawloop.trace.format import Trace
from rawloop.trace.html_assets import SCRIPT
from rawloop.trace.html_kit import chunk_texts, cost, json_for_script, load_prices
from rawloop.trace.html_page import show_page

TRACES = Path(__file__).parents[2] / "traces"
KEY = "sk-" + "proj" + "A1b2C3d4E5f6G7h8I9j0"  # built at run time: no key-shaped literal


@given(st.text())
def test_embedded_json_cannot_close_its_script_and_parses_back(text: str) -> None:
    value = {"s": text + "</script><!--\u2028\u2029", "n": [text]}
    encoded = json_for_script(value)
    assert "<" not in encoded and ">" not in encoded and "&" not in encoded
    assert "\u2028" not in encoded and "\u2029" not in encoded
    assert orjson.loads(encoded) == value


@given(st.binary(max_size=200), st.lists(st.integers(0, 240), max_size=6))
def test_chunk_texts_keep_the_whole_text_at_any_split(data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    texts = chunk_texts(chunks)
    assert len(texts) == len(chunks)
    if b"sk-" not in data and b"Bearer" not in data:
        assert "".join(texts) == data.decode(errors="replace")


def test_a_key_split_across_chunks_is_redacted_in_the_chunk_it_starts() -> None:
    body = f'data: {{"echo": "{KEY}"}}\n\n'.encode()
    at = body.index(KEY.encode()) + 6
    texts = chunk_texts([body[:at], body[at:]])
    assert KEY not in "".join(texts) and KEY[6:] not in "".join(texts)
    assert "[REDACTED:" in texts[0] and texts[1] == '"}\n\n'


def test_the_inline_script_is_allowed_by_its_hash_and_nothing_else_is() -> None:
    page = show_page(Trace.load(TRACES / "tool-roundtrip.jsonl"))
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy is not None
    assert f"script-src 'sha256-{digest}'" in policy.group(1)
    assert "default-src 'none'" in policy.group(1)
    assert f"<script>{SCRIPT}</script>" in page
    assert not re.search(r"https?://(?!api\.openai\.com)", page)  # no link but the trace's URL


def test_a_planted_script_and_a_secret_are_text_in_the_page(tmp_path: Path) -> None:
    lines = []
    for line in (TRACES / "tool-roundtrip.jsonl").read_bytes().splitlines():
        record = orjson.loads(line)
        if record["kind"] == "result":
            record["output"] = f"<script>alert(1)</script> key {KEY}"
        lines.append(orjson.dumps(record))
    trace = Trace.parse(b"\n".join(lines), "planted.jsonl")
    page = show_page(trace)
    assert "<script>alert(1)</script>" not in page
    assert html.escape("<script>alert(1)</script>") in page
    assert KEY not in page and "Bearer [REDACTED" not in page
    assert page.count("<script") == 2  # the JSON data block and our script


def test_every_part_of_an_iteration_is_in_the_page() -> None:
    page = show_page(Trace.load(TRACES / "breakpoint-edit.jsonl"))
    for text in (
        "What is 1231 * 2331? Use the multiply tool.",  # the user's message in full
        "function_call_output (call_sVidsfFJ6zlzRpelrPkTPlpd)",
        "calls 1 tool: multiply",
        "&quot;a&quot;: 1231,",  # pretty JSON arguments
        "replace /results/0/output",
        "2869461 (checked by a human)",  # the edit's after
        "1231 × 2331 = **2,869,461**",  # noqa: RUF001 - the model's text
        'stream</span><span class="mono">true',
        'authorization</span><span class="mono">[redacted]',
    ):
        assert text in page, text
    # the edit's "before" is the previous iteration's result
    before = page.index("before</div><pre>")
    assert page[before:].startswith("before</div><pre>2869461</pre>")


def test_prices_give_a_cost_and_bad_prices_are_named(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_bytes(orjson.dumps({"gpt-5.5": {"input": 1.25, "output": 10}}))
    loaded = load_prices(prices)
    # the dated model the server answered with is priced as its family
    dollars, unpriced = cost([("gpt-5.5-2026-04-23", 152, 41), ("other", 1, 1)], loaded)
    assert dollars == pytest.approx(152 * 1.25 / 1e6 + 41 * 10 / 1e6)
    assert unpriced == ["other"]
    page = show_page(Trace.load(TRACES / "tool-roundtrip.jsonl"), prices=loaded)
    assert "cost <b>$0.000600</b>" in page
    for bad, words in (
        (b"[1]", "expected an object"),
        (b'{"m": {"input": "1"}}', "'m' must be"),
        (b"{", "is not JSON"),
    ):
        prices.write_bytes(bad)
        with pytest.raises(ConfigurationError, match=words):
            load_prices(prices)


def test_cli_show_html_and_diff_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = str(TRACES / "tool-roundtrip.jsonl")
    assert main(["show", trace, "--html"]) == 0
    assert capsys.readouterr().out.startswith("<!doctype html>")
    out = tmp_path / "run.html"
    assert main(["show", trace, "--html", "-o", str(out)]) == 0
    assert out.read_text().count('class="iter"') == 2
    assert f"wrote {out}" in capsys.readouterr().err
    assert main(["show", trace, "-o", str(out)]) == 2
    assert "go with --html" in capsys.readouterr().err
    missing = str(tmp_path / "nope.json")
    assert main(["show", trace, "--html", "--prices", missing]) == 2
    assert f"cannot read prices file {missing}" in capsys.readouterr().err
    other = str(TRACES / "breakpoint-edit.jsonl")
    assert main(["diff", trace, other, "--html", "-o", str(out)]) == 1
    assert " data-first-difference>" in out.read_text()
    assert main(["diff", trace, trace, "--html", "-o", str(out)]) == 0
    assert " data-first-difference>" not in out.read_text()
