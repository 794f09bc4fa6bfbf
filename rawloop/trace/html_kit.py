"""What the HTML pages share: escaping, the page shell, embedded JSON, prices.

Strategy: the pages are built server-side as strings, every value from the
trace going through ``esc`` (secret-shaped text redacted, then
``html.escape``), so the whole run is in the DOM before any script runs and a
``<script>`` in a tool output is text. The one inline script is a constant
(``html_assets.SCRIPT``) allowed by its SHA-256 in a Content-Security-Policy
that also forbids every fetch: even a mistake in escaping could neither run a
script nor load anything from the network.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import ConfigurationError
from ..core.redact import redact_text
from ..core.redact_stream import ChunkRedactor
from .html_assets import CSS, SCRIPT
from .runs import pretty

__all__ = [
    "Price",
    "chunk_texts",
    "cost",
    "document",
    "esc",
    "json_for_script",
    "load_prices",
    "pretty",
]

#: Dollars per million input and output tokens.
Price = tuple[float, float]

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
)


def esc(value: Any) -> str:
    """Text (or JSON for anything else) from a trace, secrets redacted, made safe for HTML."""
    text = value if isinstance(value, str) else pretty(value)
    return html.escape(redact_text(text), quote=True)


def json_for_script(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``.

    ``<`` becomes ``\\u003c`` (so neither ``</script>`` nor ``<!--`` can end or
    change the element), ``>`` and ``&`` likewise, and U+2028/U+2029 are escaped
    for older JavaScript parsers. The value stays the same JSON.
    """
    text = orjson.dumps(value).decode()
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, code)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def document(title: str, body: str, data: Any) -> str:
    """A whole self-contained page: inline CSS and script, ``data`` embedded as JSON."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP.format(digest=digest)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="referrer" content="no-referrer">\n<title>{esc(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n"
        f'<script type="application/json" id="raw-data">{json_for_script(data)}</script>\n'
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def chunk_texts(chunks: list[bytes]) -> list[str]:
    """Each chunk's text, secrets redacted even when split across chunks or delta events.

    A character cut between two chunks is given to the chunk that completes
    it. A secret spanning chunks becomes one placeholder in the chunk where it
    starts (``ChunkRedactor``, as the recorder uses it), and its rest is
    dropped from the chunks after.
    """
    redactor = ChunkRedactor()
    released = [out for chunk in chunks for out in redactor.feed(chunk)]
    released += redactor.flush()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(c) for c in released]
    tail = decoder.decode(b"", final=True)
    if tail and pieces:
        pieces[-1] += tail
    return pieces


# -- prices ---------------------------------------------------------------------------------


def load_prices(path: str | Path) -> dict[str, Price]:
    """Read ``{"model": {"input": $, "output": $}}`` (dollars per million tokens).

    Raises ``ConfigurationError`` naming the file and the model whose entry is wrong.
    """
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read prices file {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"prices file {path} is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"prices file {path}: expected an object of model -> prices")
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        numbers = [entry.get("input"), entry.get("output")] if isinstance(entry, dict) else []
        if len(numbers) != 2 or not all(
            isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers
        ):
            raise ConfigurationError(
                f"prices file {path}: {model!r} must be "
                '{"input": <$ per 1M tokens>, "output": <$ per 1M tokens>}'
            )
        prices[model] = (float(numbers[0] or 0), float(numbers[1] or 0))
    return prices


def _price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    # "gpt-5.5-2026-04-23" is priced as "gpt-5.5": the longest name it starts with.
    if model in prices:
        return prices[model]
    names = [n for n in prices if model.startswith(n)]
    return prices[max(names, key=len)] if names else None


_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def cost(usage: list[tuple[str, int, int]], prices: Mapping[str, Price]) -> tuple[float, list[str]]:
    """Dollars for ``(model, input tokens, output tokens)`` rows, and the unpriced models."""
    total, unpriced = 0.0, []
    for model, tokens_in, tokens_out in usage:
        price = _price_for(model, prices) or _price_for(_DATED.sub("", model), prices)
        if price is None:
            if model not in unpriced:
                unpriced.append(model)
            continue
        total += tokens_in * price[0] / 1e6 + tokens_out * price[1] / 1e6
    return total, unpriced
