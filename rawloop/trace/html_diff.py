"""``rawloop diff A B --html``: two runs side by side, aligned by iteration, differences marked.

Each iteration becomes a list of labelled lines per side (the edits, the
request's model, input items, tools and params, the attempts, the model's
text, reasoning and calls, the tool results, the errors). Lines are aligned by
label; a line whose text differs is marked, and the first iteration that
differs is focused when the page opens. The semantic difference ``diff``
found is shown above, as ``rawloop diff`` prints it.
"""

from __future__ import annotations

from .diff import TraceDiff
from .format import Trace
from .html_kit import document, esc
from .runs import Iteration, Run, group_runs, item_text, plural, pretty, request_items

__all__ = ["diff_page", "iteration_lines"]

_SKIP_PARAMS = frozenset({"model", "input", "messages", "tools", "instructions"})


def iteration_lines(iteration: Iteration | None) -> dict[str, str]:
    """What one iteration did, as ``label -> text`` in reading order (empty for None)."""
    if iteration is None:
        return {}
    lines: dict[str, str] = {}
    for number, op in enumerate(iteration.edits):
        value = pretty(op["value"]) if "value" in op else ""
        lines[f"edit {number}"] = f"{op.get('op')} {op.get('path')}\n{value}".strip()
    request = iteration.exchanges[-1].request if iteration.exchanges else {}
    body = request.get("body") if request else None
    if isinstance(body, dict):
        lines["model"] = str(body.get("model"))
        if body.get("instructions") is not None:
            lines["instructions"] = str(body["instructions"])
        for number, item in enumerate(request_items(body)):
            head, text = item_text(item)
            lines[f"input #{number}"] = f"{head}: {text}"
        if body.get("tools"):
            lines["tools"] = pretty(body["tools"])
        params = {k: v for k, v in body.items() if k not in _SKIP_PARAMS}
        lines["params"] = pretty(params)
    statuses = [
        str(e.response.get("status")) if e.response else "no response" for e in iteration.exchanges
    ]
    lines["attempts"] = f"{plural(len(statuses), 'attempt')}: {', '.join(statuses)}"
    for turn in iteration.decisions[-1:]:
        lines["status"] = str(turn.get("status"))
        for key in ("text", "reasoning", "refusal"):
            if turn.get(key):
                lines[key] = str(turn[key])
        for number, call in enumerate(turn.get("calls") or ()):
            if isinstance(call, dict):
                arguments = pretty(call.get("arguments", ""))
                lines[f"call {number}"] = f"{call.get('name')}\n{arguments}"
        if turn.get("error"):
            lines["stream error"] = pretty(turn["error"])
    for number, result in enumerate(iteration.results):
        output = result.get("output")
        text = output if isinstance(output, str) else pretty(output)
        error = f"\nerror: {pretty(result['error'])}" if result.get("error") else ""
        lines[f"result {number}"] = f"{result.get('name')}\n{text}{error}"
    for number, record in enumerate(r for r in iteration.notes if r.kind == "error"):
        lines[f"error {number}"] = pretty({k: v for k, v in record.data.items() if k != "kind"})
    return lines


def _by_number(run: Run) -> dict[int, Iteration]:
    return {iteration.number: iteration for iteration in run.iterations}


def diff_page(a: Trace, b: Trace, result: TraceDiff) -> str:
    """The HTML page comparing two traces (their first runs), with ``result`` on top."""
    run_a, run_b = group_runs(a)[0], group_runs(b)[0]
    left, right = _by_number(run_a), _by_number(run_b)
    numbers = sorted(set(left) | set(right))
    verdict = "traces are equal" if result.equal else "traces differ"
    rows: list[str] = []
    first_marked = False
    for number in numbers:
        lines_a, lines_b = iteration_lines(left.get(number)), iteration_lines(right.get(number))
        labels = [*lines_a, *(k for k in lines_b if k not in lines_a)]
        changed = {k for k in labels if lines_a.get(k) != lines_b.get(k)}
        if number not in left or number not in right:
            changed.add("(iteration)")
        focus = ""
        if changed and not first_marked:
            focus, first_marked = " data-first-difference", True
        cells = []
        for lines, name in ((lines_a, "A"), (lines_b, "B")):
            if not lines:
                cells.append(
                    f'<div class="cell"><i class="hint">no iteration {number} in {name}</i></div>'
                )
                continue
            cell = "".join(
                f'<div class="line{" changed" if k in changed else ""}"><div class="label">'
                f"{esc(k)}</div><pre>{esc(lines[k]) if k in lines else '<i>(absent)</i>'}</pre></div>"
                for k in labels
            )
            cells.append(f'<div class="cell">{cell}</div>')
        state = f"differs: {', '.join(sorted(changed))}" if changed else "same"
        rows.append(
            f'<section class="diffrow{" differs" if changed else ""}" data-section '
            f'data-iteration="{number}" id="iter-{number}"{focus}>'
            f'<div class="rowhead">iteration {number} · {esc(state)}</div>'
            f'<div class="grid2">{"".join(cells)}</div></section>'
        )
    ends = "".join(
        f"<div><b>{name}</b> end: {esc(str((run.end or {}).get('stop_reason', 'none (cut short)')))}</div>"
        for name, run in (("A", run_a), ("B", run_b))
    )
    body = (
        f'<header class="top"><h1>{esc(verdict)}</h1><div class="facts">'
        f"<span>A <b>{esc(a.path)}</b></span><span>B <b>{esc(b.path)}</b></span></div>"
        '<div class="tools"><input id="search" type="search" placeholder="filter iterations" '
        'aria-label="filter iterations"><span id="match-count" class="hint"></span>'
        '<span class="hint">j / k: next / previous iteration, /: search</span></div></header>'
        f'<main><pre id="diff-text">{esc(str(result))}</pre>'
        f'<div class="grid2"><h2>A: {esc(a.path)}</h2><h2>B: {esc(b.path)}</h2></div>'
        f'{"".join(rows)}<div class="grid2">{ends}</div></main>'
    )
    return document(f"rawloop diff: {a.path} vs {b.path}", body, {})
