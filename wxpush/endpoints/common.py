"""Request helpers shared by the handlers."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from wxpush.errors import BadRequest, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes without reading them all (413)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number.", code="bad_content_length")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit // 1024} KiB.")


JSON_LIMIT = 16 * 1024


async def read_json(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object (``{}`` when empty and not ``required``), else 400."""
    body = await read_body(request, JSON_LIMIT)
    if not body.strip():
        if required:
            raise BadRequest("A JSON object body is required.", code="invalid_json")
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadRequest("The body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_json")
    return data


def text_field(data: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    """A string field of a JSON body: 400 when missing (unless optional) or not a string."""
    value = data.get(name)
    if value is None:
        if optional:
            return None
        raise BadRequest(f"The field {name!r} is required.", code="missing_field")
    if not isinstance(value, str) or len(value) > 256:
        raise BadRequest(f"The field {name!r} must be a short string.", code="invalid_field")
    return value


def client_ip(request: Request) -> str:
    """The caller's address (uvicorn resolves X-Forwarded-For from trusted proxies)."""
    return request.client.host if request.client else "unknown"
