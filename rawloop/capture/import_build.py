"""Building a rawloop trace from interactions: which calls, their turns, results and records.

See ``rawloop.capture.importers`` for what an imported trace holds.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import orjson

from .._version import __version__
from ..core.conversation import conversation, tool_outputs
from ..core.dialect import api_root, dialect_of_path
from ..core.errors import SecretInTraceError, StreamError
from ..core.jsondiff import first_difference
from ..core.parse import parse_stream
from ..core.redact import has_secret, redact_headers
from ..loop.state import add_usage
from ..replay.replayer import DEFAULT_VOLATILE
from ..trace.format import FORMAT, FORMAT_VERSION, Record, Trace, encode_chunk
from .import_common import CassetteError, Interaction, _Call

__all__ = ["to_trace"]


def to_trace(
    interactions: Iterable[Interaction], *, source: str = "<recording>", kind: str = "vcr"
) -> Trace:
    """Build a trace from interactions (see ``import_file``)."""
    notes: list[str] = []
    calls, skipped = _select(list(interactions))
    if skipped:
        notes.append(
            f"skipped {len(skipped)} interaction{'' if len(skipped) == 1 else 's'} "
            "that are not OpenAI streaming calls: " + "; ".join(skipped)
        )
    if not calls:
        raise CassetteError(
            f"{source}: no OpenAI streaming call to import (a POST to .../responses or "
            ".../chat/completions answered with text/event-stream)"
            + (f"; skipped: {'; '.join(skipped)}" if skipped else "")
        )
    dialect = dialect_of_path(calls[0].interaction.url) or "responses"
    _parse_turns(calls, dialect, notes)
    _infer_results(calls, dialect, notes)
    _check_chain(calls, dialect, notes)
    first = calls[0]
    header: dict[str, Any] = {
        "kind": "header",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "rawloop": __version__,
        "dialect": dialect,
        "base_url": api_root(first.interaction.url),
        "model": str(first.body.get("model", "")),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "metadata": {
            "imported_from": source,
            "source_format": kind,
            "chunk_boundaries": "lost",
            "interactions": [c.interaction.index for c in calls],
        },
    }
    if notes:  # kept with the trace: whoever replays it later should know
        header["metadata"]["import_warnings"] = list(notes)
    records = _records(calls)
    _scan_secrets([header, *records], calls, source)
    return Trace(
        header,
        [Record(r["kind"], line, r) for line, r in enumerate(records, start=2)],
        source,
        notes,
    )


def _select(interactions: list[Interaction]) -> tuple[list[_Call], list[str]]:
    calls: list[_Call] = []
    skipped: list[str] = []
    dialect: str | None = None
    for item in interactions:
        reason, body = _why_not(item)
        this = dialect_of_path(item.url)
        if reason is None and dialect is not None and this != dialect:
            reason = f"a {this} call in a {dialect} recording"
        if reason is not None:
            skipped.append(f"{item.label} ({reason})")
            continue
        dialect = dialect or this
        assert body is not None
        calls.append(_Call(item, body))
    return calls, skipped


def _why_not(item: Interaction) -> tuple[str | None, dict[str, Any] | None]:
    if item.method != "POST":
        return "not a POST", None
    if dialect_of_path(item.url) is None:
        return "not /responses or /chat/completions", None
    body = item.request_body
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return "the request body is not JSON", None
    if not isinstance(body, dict):
        return "no JSON object request body", None
    if item.status < 300:
        if not item.response_body.strip():
            # Browsers often leave streamed bodies out of the HAR files they save.
            return "the response body was not recorded", None
        content_type = item.response_headers.get("content-type", "")
        if not (content_type.startswith("text/event-stream") or _looks_like_sse(item)):
            return f"not streamed: the response is {content_type or 'not text/event-stream'}", None
    elif body.get("stream") is not True:
        return f"a non-streaming request answered {item.status}", None
    return None, body


def _looks_like_sse(item: Interaction) -> bool:
    head = item.response_body.lstrip()[:6]
    return head.startswith((b"data:", b"event:", b":"))


def _parse_turns(calls: list[_Call], dialect: str, notes: list[str]) -> None:
    iteration = attempt = 0
    for number, call in enumerate(calls):
        call.iteration, call.attempt = iteration, attempt
        if call.interaction.status >= 300:
            attempt += 1  # the next call retries this iteration
            continue
        try:
            call.turn = parse_stream(call.interaction.response_body, dialect)
        except StreamError as exc:
            call.error = exc
            rest = calls[number + 1 :]
            if rest:
                notes.append(
                    f"{call.interaction.label}: the stream does not parse ({exc}); the run ends "
                    f"there and the {len(rest)} later call(s) are left out"
                )
                del calls[number + 1 :]
            return
        iteration, attempt = iteration + 1, 0


def _infer_results(calls: list[_Call], dialect: str, notes: list[str]) -> None:
    for call, following in zip(calls, [*calls[1:], None]):
        turn = call.turn
        if turn is None or not turn.calls:
            continue
        if following is None:
            notes.append(
                f"{call.interaction.label}: the model called "
                f"{', '.join(c.name for c in turn.calls)} and the recording ends there: no tool "
                "output to import, so a replay stops with a divergence at that tool call"
            )
            continue
        outputs = tool_outputs(dialect, conversation(dialect, following.body))
        missing = []
        for fc in turn.calls:
            if fc.call_id not in outputs:
                missing.append(fc.call_id)
                continue
            call.results.append(
                {
                    "kind": "result",
                    "iteration": call.iteration,
                    "call_id": fc.call_id,
                    "name": fc.name,
                    "arguments": fc.arguments,
                    "output": outputs[fc.call_id],
                    "error": None,
                    "duration": 0.0,
                }
            )
        if missing:
            notes.append(
                f"{following.interaction.label}: the request carries no tool output for call(s) "
                f"{', '.join(missing)}; a replay cannot answer them"
            )


def _check_chain(calls: list[_Call], dialect: str, notes: list[str]) -> None:
    """Say where a replay will part from the recording: requests rawloop would not send."""
    key = "messages" if dialect == "chat" else "input"
    if dialect == "chat" and "stream_options" not in calls[0].body:
        notes.append(
            f"{calls[0].interaction.label}: the request has no stream_options; rawloop sends "
            '{"include_usage": true}, so a replay diverges at iteration 0 (stream_options)'
        )
    for call, following in pairwise(calls):
        turn = call.turn
        if turn is None:
            continue  # a failed attempt: the next one repeats the request
        if not turn.calls:
            notes.append(
                f"{following.interaction.label}: sent after a turn that called no tool; a "
                "replay ends at that turn, so this and later calls are reported unconsumed"
            )
            return
        expected = dict(call.body)
        recorded = expected.get(key)
        history: list[Any] = recorded if isinstance(recorded, list) else []
        outputs = {r["call_id"]: r["output"] for r in call.results}
        answers = [
            {"role": "tool", "tool_call_id": c.call_id, "content": outputs.get(c.call_id)}
            if dialect == "chat"
            else {
                "type": "function_call_output",
                "call_id": c.call_id,
                "output": outputs.get(c.call_id),
            }
            for c in turn.calls
        ]
        expected[key] = [*history, *turn.output, *answers]
        # Recorded first, as a replay compares them, so the path is the one it will report.
        found = first_difference(following.body, expected, DEFAULT_VOLATILE)
        if found is not None:
            notes.append(
                f"{following.interaction.label}: the request is not the one rawloop's loop "
                f"sends after the previous turn (recorded != rawloop at {found}); a replay "
                f"diverges at iteration {following.iteration}"
            )


def _records(calls: list[_Call]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    usage: dict[str, int] = {}
    duration = 0.0
    iterations = 0
    last: _Call | None = None
    for number, call in enumerate(calls):
        item, where = call.interaction, {"iteration": call.iteration, "attempt": call.attempt}
        records.append(
            {
                "kind": "request",
                **where,
                "method": item.method,
                "url": item.url,
                "headers": redact_headers(item.request_headers),
                "body": call.body,
            }
        )
        ttfb = round(item.ttfb, 6) if item.ttfb is not None else 0.0
        elapsed = round(item.elapsed, 6) if item.elapsed is not None else ttfb
        duration += item.elapsed or 0.0
        records.append(
            {
                "kind": "response",
                **where,
                "status": item.status,
                "headers": redact_headers(item.response_headers),
                "request_id": item.response_headers.get("x-request-id"),
                "t": ttfb,
            }
        )
        if item.status >= 300:
            snippet = item.response_body[:300].decode(errors="replace")
            records.append(
                {
                    "kind": "error",
                    **where,
                    "where": "request",
                    "type": "APIStatusError",
                    "message": f"HTTP {item.status}: {snippet}".strip(),
                    "will_retry": number + 1 < len(calls),
                    "delay": 0.0,
                }
            )
            continue
        if item.response_body:
            records.append(
                {"kind": "chunk", **where, "t": elapsed, **encode_chunk(item.response_body)}
            )
        if call.error is not None:
            records.append(
                {
                    "kind": "error",
                    **where,
                    "where": "request",
                    "type": type(call.error).__name__,
                    "message": str(call.error),
                    "will_retry": False,
                    "delay": 0.0,
                }
            )
            continue
        assert call.turn is not None
        records.append(
            {"kind": "decision", "iteration": call.iteration, "turn": call.turn.to_dict()}
        )
        records.extend(call.results)
        iterations += 1
        last = call
        add_usage(usage, call.turn.usage)
    records.append(
        {
            "kind": "end",
            "stop_reason": _stop_reason(calls, last),
            "iterations": iterations,
            "usage": usage,
            "duration": round(duration, 6),
            "error": _end_error(calls),
        }
    )
    return records


def _stop_reason(calls: list[_Call], last: _Call | None) -> str:
    final = calls[-1]
    if final.error is not None or final.turn is None or last is None:
        return "error"
    if final.turn.calls:
        return "max_iterations"
    return "incomplete" if final.turn.status == "incomplete" else "completed"


def _end_error(calls: list[_Call]) -> str | None:
    final = calls[-1]
    if final.error is not None:
        return f"{type(final.error).__name__}: {final.error}"
    if final.turn is None:
        return f"APIStatusError: HTTP {final.interaction.status}"
    return None


def _scan_secrets(records: list[dict[str, Any]], calls: list[_Call], source: str) -> None:
    """Refuse the import when anything shaped like an API key would reach the trace."""
    labels = {(c.iteration, c.attempt): c.interaction.label for c in calls}
    for record in records:
        line = orjson.dumps(record).decode(errors="replace")
        if has_secret(line):
            key = (int(record.get("iteration", 0)), int(record.get("attempt", 0)))
            where = (
                "the header"
                if record["kind"] == "header"
                else f"interaction {labels.get(key, '?')} ({record['kind']} record)"
            )
            # Say where, never what: the message must not carry the secret.
            raise SecretInTraceError(
                f"{source}: {where} still holds something shaped like an API key after header "
                "redaction; nothing was imported. Remove or replace it in the recording first."
            )
