"""Writing the replay server's answers: a recorded stream, or one JSON object.

``send_stream`` sends the recorded status, headers and chunks as they are;
``send_assembled`` the JSON object a non-streaming request gets.
"""

from __future__ import annotations

import anyio
import orjson

from ..core.assemble import assemble
from ..core.errors import StreamError
from .loopback import Connection, clean_headers, error_body, json_headers
from .replayer import Answer

__all__ = ["send_assembled", "send_stream"]


async def send_stream(conn: Connection, answer: Answer) -> None:
    """The recorded status, headers and chunks; a cut answer ends without the last chunk."""
    headers = clean_headers(answer.headers)
    if answer.status < 300 and all(k != "content-type" for k, _ in headers):
        headers.append(("content-type", "text/event-stream"))
    await conn.send_head(answer.status, headers)
    for delay, chunk in zip(answer.delays, answer.chunks):
        if delay > 0:
            await anyio.sleep(delay)
        await conn.send_data(chunk)
    if answer.fail == "cut":
        conn.abort()  # a reset connection: no end of the chunked body
    else:
        await conn.end()


async def send_assembled(conn: Connection, answer: Answer, dialect: str) -> int:
    """The JSON object a non-streaming request gets, after the whole pacing; returns its status."""
    raw = b"".join(answer.chunks)
    delay = sum(answer.delays)
    if delay > 0:
        await anyio.sleep(delay)
    headers = clean_headers(answer.headers)  # the content type becomes JSON's
    if answer.status >= 300:  # an error answer is JSON already
        await conn.send_bytes(answer.status, raw, headers)
        return answer.status
    try:
        status, payload = assemble(raw, dialect)
    except StreamError as exc:
        message = f"the recorded stream could not be assembled into one object: {exc}"
        status, payload = 502, error_body(message, "server_error", "bad_recording")
    data = orjson.dumps(payload)
    if answer.fail == "cut":
        # The recorded connection broke: so does this one, halfway through the body.
        await conn.send_head(status, json_headers(data, headers))
        await conn.send_data(data[: len(data) // 2])
        conn.abort()
    else:
        await conn.send_bytes(status, data, headers)
    return status
