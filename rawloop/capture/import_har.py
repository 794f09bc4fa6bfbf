"""HAR 1.2 entries (saved from a browser, a proxy, or ``rawloop export --har``) as interactions."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .import_common import CassetteError, Interaction, _need

__all__ = ["har_entry"]


def har_entry(index: int, item: Any, where: str) -> Interaction:
    """One HAR entry; ``CassetteError`` naming the field (``where``) when malformed."""
    item = _need(item, dict, where)
    request = _need(item.get("request"), dict, f"{where}.request")
    response = _need(item.get("response"), dict, f"{where}.response")
    method = _need(request.get("method"), str, f"{where}.request.method")
    url = _need(request.get("url"), str, f"{where}.request.url")
    post = request.get("postData")
    request_body: Any = None
    if isinstance(post, dict) and post.get("text") is not None:
        request_body = _har_text(post, f"{where}.request.postData")
    code = _need(response.get("status"), int, f"{where}.response.status")
    content = _need(response.get("content", {}), dict, f"{where}.response.content")
    body = _har_text(content, f"{where}.response.content") if "text" in content else b""
    headers = _har_headers(response.get("headers"), f"{where}.response.headers")
    timings = item.get("timings") if isinstance(item.get("timings"), dict) else {}
    ttfb = sum(float(timings.get(k) or 0) for k in ("send", "wait") if (timings.get(k) or 0) > 0)
    total = item.get("time")
    return Interaction(
        index,
        method.upper(),
        url,
        _har_headers(request.get("headers"), f"{where}.request.headers"),
        request_body,
        code,
        headers,
        body,  # HAR content.text is already decoded from any content-encoding
        elapsed=float(total) / 1000 if isinstance(total, (int, float)) and total >= 0 else None,
        ttfb=ttfb / 1000 if timings else None,
    )


def _har_text(part: dict[str, Any], where: str) -> bytes:
    text: str = _need(part.get("text"), str, f"{where}.text")
    if part.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CassetteError(f"{where}.text says base64 but is not valid base64") from None
    return text.encode()


def _har_headers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    out: dict[str, str] = {}
    for i, header in enumerate(_need(value, list, where)):
        header = _need(header, dict, f"{where}[{i}]")
        name = _need(header.get("name"), str, f"{where}[{i}].name")
        if not name.startswith(":"):  # HTTP/2 pseudo-headers are not headers
            out[name.lower()] = str(header.get("value", ""))
    return out
