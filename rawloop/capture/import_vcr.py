"""VCR.py and pytest-recording cassettes (YAML, or pydantic-ai's parsed JSON bodies) as interactions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .import_common import CassetteError, Interaction, _as_bytes, _decoded, _need

__all__ = ["vcr_interaction", "yaml_module"]


def yaml_module(path: Path) -> Any:
    """PyYAML, or a ``CassetteError`` saying how to install it."""
    try:
        import yaml
    except ModuleNotFoundError:
        raise CassetteError(
            f"{path}: reading YAML cassettes needs PyYAML: pip install 'rawloop[import]' "
            "(or pip install pyyaml)"
        ) from None
    return yaml


def vcr_interaction(index: int, item: Any, where: str) -> Interaction:
    """One cassette interaction; ``CassetteError`` naming the field (``where``) when malformed."""
    item = _need(item, dict, where)
    request = _need(item.get("request"), dict, f"{where}.request")
    response = _need(item.get("response"), dict, f"{where}.response")
    method = _need(request.get("method"), str, f"{where}.request.method")
    uri = _need(request.get("uri", request.get("url")), str, f"{where}.request.uri")
    if "parsed_body" in request:  # pydantic-ai's serializer keeps JSON bodies parsed
        request_body: Any = request["parsed_body"]
    else:
        request_body = request.get("body")
        if isinstance(request_body, dict) and "string" in request_body:
            request_body = request_body["string"]
    status = response.get("status")
    code = status.get("code") if isinstance(status, dict) else status
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    code = _need(code, int, f"{where}.response.status.code")
    headers = _vcr_headers(response.get("headers"), f"{where}.response.headers")
    body = response.get("body")
    if isinstance(body, dict):
        if "string" in body:
            body = body["string"]
        elif "parsed_body" in body:
            body = json.dumps(body["parsed_body"])
        else:
            raise CassetteError(f"{where}.response.body has neither 'string' nor 'parsed_body'")
    return Interaction(
        index,
        method.upper(),
        uri,
        _vcr_headers(request.get("headers"), f"{where}.request.headers"),
        request_body,
        code,
        headers,
        _decoded(_as_bytes(body, f"{where}.response.body"), headers),
    )


def _vcr_headers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    out: dict[str, str] = {}
    for name, values in _need(value, dict, where).items():
        if isinstance(values, list):
            if values:  # a header sent twice keeps its last value, as traces store it
                out[str(name).lower()] = str(values[-1])
        elif values is not None:
            out[str(name).lower()] = str(values)
    return out
