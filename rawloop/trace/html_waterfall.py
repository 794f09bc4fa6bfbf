"""The waterfall of ``rawloop show --html``: attempts, retry waits and tool runs on one time axis.

A trace records times relative to each request (``response.t``, ``chunk.t``)
and each tool's duration, not wall-clock instants, so the bars are laid end to
end in the order things happened: attempt, retry wait, next attempt, tool
runs, next iteration. Edits and handoffs are markers at the start of their
iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .html_kit import esc
from .runs import Run, secs, status_of, timing

__all__ = ["num", "waterfall"]


# -- the waterfall ------------------------------------------------------------------------------


@dataclass
class _Bar:
    label: str
    anchor: str
    start: float
    spans: list[tuple[float, float, str, str]]  # (from, to, css class, title)
    markers: list[tuple[float, str]]
    took: float


def _bars(run: Run, number: int) -> list[_Bar]:
    """Attempts, retry waits and tool runs laid end to end (see the module docstring)."""
    bars: list[_Bar] = []
    clock = 0.0
    for iteration in run.iterations:
        anchor = f"run{number}-iter{iteration.number}"
        markers = [(clock, f"edit: {op.get('op')} {op.get('path')}") for op in iteration.edits]
        markers += [(clock, "handoff") for r in iteration.notes if r.kind == "handoff"]
        for exchange in iteration.exchanges:
            headers_at = num((exchange.response or {}).get("t"))
            first, last = timing(exchange)
            end = max(x for x in (headers_at, first, last, 0.0) if x is not None)
            failed = (
                exchange.error is not None or (exchange.response or {}).get("status", 200) >= 300
            )
            spans = [(clock, clock + (headers_at or 0.0), "wf-headers", "waiting for headers")]
            if first is not None and last is not None:
                spans.append(
                    (clock + (headers_at or 0.0), clock + first, "wf-wait", "to first byte")
                )
                spans.append((clock + first, clock + last, "wf-body", "streaming body"))
            if failed:
                spans.append((clock, clock + max(end, 0.0), "wf-failed", "failed"))
            label = f"iter {iteration.number} attempt {exchange.attempt} → {status_of(exchange)}"
            bars.append(_Bar(label, anchor, clock, spans, markers, end))
            markers = []
            clock += end
            delay = num((exchange.error or {}).get("delay"))
            if exchange.error is not None and exchange.error.get("will_retry") and delay:
                bars.append(
                    _Bar(
                        "  retry wait",
                        anchor,
                        clock,
                        [(clock, clock + delay, "wf-retry", "retry wait")],
                        [],
                        delay,
                    )
                )
                clock += delay
        for result in iteration.results:
            took = num(result.get("duration")) or 0.0
            css = "wf-failed" if result.get("error") else "wf-tool"
            label = f"  tool {result.get('name')}"
            bars.append(
                _Bar(label, anchor, clock, [(clock, clock + took, css, "tool run")], markers, took)
            )
            markers = []
            clock += took
    return bars


def num(value: Any) -> float | None:
    """A JSON number as a float, else None (a bool is no number)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def waterfall(run: Run, number: int) -> str:
    """The waterfall of one run as HTML (empty when it made no request)."""
    bars = _bars(run, number)
    if not bars:
        return ""
    total = max(max(b.start + b.took for b in bars), num((run.end or {}).get("duration")) or 0.0)
    scale = 100.0 / total if total > 0 else 0.0
    rows = []
    for bar in bars:
        spans = "".join(
            f'<span class="wf-bar {css}" title="{esc(title)} {esc(secs(max(b - a, 0.0)))}" '
            f'style="left:{a * scale:.3f}%;width:{max(b - a, 0.0) * scale:.3f}%"></span>'
            for a, b, css, title in bar.spans
        )
        spans += "".join(
            f'<span class="wf-marker" title="{esc(title)}" style="left:{at * scale:.3f}%"></span>'
            for at, title in bar.markers
        )
        rows.append(
            f'<div class="wf-row"><span class="wf-label"><a href="#{bar.anchor}">{esc(bar.label)}'
            f'</a></span><span class="wf-track">{spans}</span>'
            f'<span class="wf-time">{esc(secs(bar.took))}</span></div>'
        )
    legend = "".join(
        f'<span><i class="{css}"></i>{name}</span>'
        for css, name in (
            ("wf-headers", "to headers"),
            ("wf-wait", "to first byte"),
            ("wf-body", "streaming"),
            ("wf-tool", "tool run"),
            ("wf-retry", "retry wait"),
            ("wf-failed", "failed"),
            ("wf-legend-marker", "edit / handoff"),
        )
    )
    return (
        f'<div class="waterfall" id="waterfall-{number}"><h2>waterfall '
        f'<span class="hint">(attempts and tool runs end to end, {esc(secs(total))})</span></h2>'
        f'{"".join(rows)}<div class="legend">{legend}</div></div>'
    )
