"""Request helpers shared by the handlers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from wxpush.errors import BadRequest, PayloadTooLarge, RequestTimeout


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a Starlette request; see :func:`read_asgi_body`."""
    timeout = request.state.settings.body_timeout
    body = await read_asgi_body(request.scope, request.receive, limit, timeout)
    if body is None:
        raise ClientDisconnect()
    return body


async def read_asgi_body(
    scope: Scope, receive: Receive, limit: int, seconds: float
) -> bytes | None:
    """The body, refusing more than ``limit`` bytes without reading them all (413) and a body
    that has not all arrived within ``seconds`` (408: a client that stalls mid-body would
    otherwise hold its connection and this task forever); ``None`` when the client went away
    first."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise BadRequest("Content-Length is not a number.", code="bad_content_length")
            if int(value) > limit:
                raise _too_large(limit)
    try:
        async with asyncio.timeout(seconds):
            return await _receive_body(receive, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {seconds:g} s.", code="body_timeout"
        ) from None


async def _receive_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
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
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than Python's
        raise BadRequest("The body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_json")
    return data


def text_field(
    data: dict[str, Any], name: str, *, optional: bool = False, max_length: int = 256
) -> str | None:
    """A string field of a JSON body: 400 when missing (unless optional), ``null``, not a
    string, too long, or not text that can be stored (a lone surrogate such as ``"\\ud800"``
    is valid JSON but no Unicode string)."""
    if name not in data:
        if optional:
            return None
        raise BadRequest(f"The field {name!r} is required.", code="missing_field")
    value = data[name]
    if not isinstance(value, str) or len(value) > max_length or not _is_text(value):
        raise BadRequest(f"The field {name!r} must be a short string.", code="invalid_field")
    return value


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def client_ip(request: Request) -> str:
    """The caller's address, the one every per-IP limit counts (see :func:`client_host`)."""
    return client_host(request.scope)


def client_host(scope: Scope) -> str:
    """The address of the connection's client: the peer's own, or, when the peer is one of
    ``WXPUSH_TRUSTED_PROXIES``, the client it forwards (``X-Forwarded-For``, resolved by
    uvicorn's proxy headers, which ``wxpush serve`` turns on for those proxies only)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
